"""VGG-11, the paper's backbone, built so that BackPACK can differentiate it.

The layer layout is torchvision's VGG-11 (configuration "A": eight 3x3 convolutions, five 2x2
max-pools, three fully connected layers), with three changes:

* ReLUs are not in-place (BackPACK's backward hooks fail on in-place views).
* torchvision ends the feature extractor with ``AdaptiveAvgPool2d((7, 7))`` and a
  ``512*7*7 -> 4096`` layer. BackPACK only supports adaptive pooling when the input is a multiple
  of the output (backpack#313), which is not the case at 128x128 (the feature map is 4x4).
  We chose to drop the pooling and flatten the ``s x s`` feature map directly
  (``s = image_size / 32``), so the first classifier layer is ``512*s*s -> 4096``. At 224 px this
  is exactly torchvision's shape (7x7); at the paper's 128 px it is ``8192 -> 4096``.
* Flattening is an ``nn.Flatten`` module (BackPACK does not see ``torch.flatten`` in ``forward``).

Channels (and the classifier's hidden width) are scaled by ``width`` so tests and CPU demos are
fast; ``width=1`` is the full VGG-11. Parameter names follow torchvision (``features.0.weight``,
``classifier.6.bias``), so the convolutional part of a torchvision state dict loads unchanged.
"""

from __future__ import annotations

from collections import OrderedDict

from torch import nn

from .config import ModelConfig
from .names import BUILTIN, register_model

__all__ = ["VGG"]

# VGG-11 ("A") in torchvision's notation: numbers are conv output channels, "M" a 2x2 max-pool.
_VGG11_LAYOUT: tuple[int | str, ...] = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")


class VGG(nn.Sequential):
    """torchvision-layout VGG-11 as an ``nn.Sequential`` of named children.

    BackPACK extends every module including the root, and only knows containers that are
    ``nn.Sequential``; the children are named ``features``, ``flatten`` and ``classifier``.
    """

    def __init__(self, config: ModelConfig) -> None:
        layers: list[nn.Module] = []
        in_ch = 3
        for item in _VGG11_LAYOUT:
            if item == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
                continue
            out_ch = config.channels(int(item))
            layers.append(nn.Conv2d(in_ch, out_ch, kernel_size=3, padding=1))
            if config.batch_norm:
                layers.append(nn.BatchNorm2d(out_ch))
            layers.append(nn.ReLU(inplace=False))
            in_ch = out_ch
        hidden = config.channels(4096)
        flat = in_ch * config.feature_side**2
        classifier = nn.Sequential(
            nn.Linear(flat, hidden),
            nn.ReLU(inplace=False),
            nn.Dropout(p=config.dropout),
            nn.Linear(hidden, hidden),
            nn.ReLU(inplace=False),
            nn.Dropout(p=config.dropout),
            nn.Linear(hidden, config.num_classes),
        )
        super().__init__(OrderedDict(features=nn.Sequential(*layers), flatten=nn.Flatten(), classifier=classifier))
        self.config = config
        self._init_weights()

    def _init_weights(self) -> None:
        # torchvision's VGG initialisation
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)


@register_model(BUILTIN)
def _build_vgg(config: ModelConfig) -> VGG:
    return VGG(config)
