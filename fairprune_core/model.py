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
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = [
    "INPUT_MEAN",
    "INPUT_STD",
    "VGG",
    "ModelConfig",
    "ModelFileError",
    "build_model",
    "check_state_shapes",
    "config_from_file",
    "normalise",
    "to_model_input",
]


class ModelFileError(ValueError):
    """A model file (checkpoint, safetensors) whose configuration or tensors do not make the model."""


# VGG-11 ("A") in torchvision's notation: numbers are conv output channels, "M" a 2x2 max-pool.
_VGG11_LAYOUT: tuple[int | str, ...] = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")

# Inputs are uint8 RGB images; the model sees (x / 255 - mean) / std (ImageNet statistics).
INPUT_MEAN = (0.485, 0.456, 0.406)
INPUT_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild the network (stored in every checkpoint)."""

    num_classes: int
    image_size: int = 128  # square input side in pixels; must be a multiple of 32
    width: float = 1.0  # channel multiplier; 1.0 is the full VGG-11
    batch_norm: bool = False  # VGG-11-BN variant (curvature needs eval mode)
    dropout: float = 0.5  # classifier dropout, as in torchvision

    def __post_init__(self) -> None:
        if self.num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {self.num_classes}")
        if self.image_size < 32 or self.image_size % 32:
            raise ValueError(
                f"image_size must be a positive multiple of 32 (VGG-11 halves it five times), "
                f"got {self.image_size}; try 32, 64, 128 or 224"
            )
        if not 0 < self.width <= 4:
            raise ValueError(f"width must be in (0, 4], got {self.width}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def feature_side(self) -> int:
        return self.image_size // 32

    def channels(self, base: int) -> int:
        return max(1, round(base * self.width))


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


def build_model(config: ModelConfig, *, seed: int | None = None) -> VGG:
    """Build a freshly initialised VGG-11; ``seed`` makes the initialisation reproducible."""
    if seed is None:
        return VGG(config)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return VGG(config)


def to_model_input(
    images: torch.Tensor | np.ndarray, *, memory_format: torch.memory_format = torch.contiguous_format
) -> torch.Tensor:
    """uint8 images ``(N, H, W, 3)`` or ``(N, 3, H, W)`` (a tensor on any device, or a numpy
    array) -> normalised float32 ``(N, 3, H, W)`` on the same device, in ``memory_format``
    (``torch.channels_last`` keeps ``(N, H, W, 3)`` images' own layout: no copy to NCHW)."""
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(np.ascontiguousarray(images))
    if images.dtype != torch.uint8:
        raise TypeError(f"expected uint8 images, got {images.dtype}")
    if images.ndim != 4:
        raise ValueError(f"expected a batch of images (4 dims), got shape {tuple(images.shape)}")
    if images.shape[-1] == 3 and images.shape[1] != 3:
        images = images.permute(0, 3, 1, 2)
    return normalise(images.float().div_(255.0), memory_format=memory_format)


def normalise(x: torch.Tensor, *, memory_format: torch.memory_format = torch.contiguous_format) -> torch.Tensor:
    """Float images in [0, 1] ``(N, 3, H, W)`` -> the model's normalised input (in place), in
    ``memory_format``."""
    mean = torch.tensor(INPUT_MEAN, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(INPUT_STD, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return x.sub_(mean).div_(std).contiguous(memory_format=memory_format)


def config_from_file(values: Any, where: str) -> ModelConfig:
    """The :class:`ModelConfig` a file records, checked: unknown keys, wrong types and values out of
    range are a :class:`ModelFileError` naming the file (``where``), before any model is built."""
    known = {f.name for f in fields(ModelConfig)}
    if not isinstance(values, dict):
        raise ModelFileError(f"{where}: its model_config is not a mapping ({type(values).__name__})")
    unknown = sorted(set(values) - known)
    if unknown:
        raise ModelFileError(
            f"{where}: unknown model_config keys {unknown} (known: {', '.join(sorted(known))}); the file was not "
            f"written by this FairPrune, or was edited"
        )
    try:
        return ModelConfig(**values)
    except (TypeError, ValueError) as exc:
        raise ModelFileError(f"{where}: its model_config is not a valid model ({exc})") from None


def check_state_shapes(config: ModelConfig, shapes: dict[str, tuple[int, ...]], where: str) -> None:
    """The tensors a file holds (name -> shape) are exactly the model's: a :class:`ModelFileError`
    naming the first mismatches otherwise. The model is built on the meta device: no memory used."""
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in VGG(config).state_dict().items()}
    problems = [f"{k} missing" for k in expected if k not in shapes]
    problems += [f"{k} unexpected" for k in shapes if k not in expected]
    problems += [
        f"{k} has shape {list(shapes[k])}, the model needs {list(v)}"
        for k, v in expected.items()
        if k in shapes and tuple(shapes[k]) != v
    ]
    if problems:
        more = f" (+{len(problems) - 3} more)" if len(problems) > 3 else ""
        raise ModelFileError(
            f"{where}: its tensors do not fit the model it records ({'; '.join(problems[:3])}{more}); the file "
            f"is damaged or was edited: re-create it"
        )
