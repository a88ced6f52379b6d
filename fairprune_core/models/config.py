"""What rebuilds a network: its architecture's name and the settings that shape it (stored in
every checkpoint and pruned-model file), and the checks on a file's record of it."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

__all__ = ["BUILTIN", "ModelConfig", "ModelFileError", "config_from_file"]

from .names import BUILTIN, check_arch


class ModelFileError(ValueError):
    """A model file (checkpoint, weights, safetensors) whose configuration or tensors do not make the model."""


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild the network (stored in every checkpoint).

    ``arch`` is ``"fairprune_vgg11"`` (the built-in VGG-11, the default) or the name of any
    torchvision classification model (``torchvision.models.list_models(module=torchvision.models)``:
    ``resnet18``, ``densenet121``, ``efficientnet_b0``, ``vit_b_16``, ...), built with
    ``num_classes`` outputs and never with downloaded weights. ``width``, ``batch_norm`` and
    ``dropout`` shape the built-in VGG-11 only.
    """

    num_classes: int
    image_size: int = 128  # square input side in pixels (the built-in VGG-11: a multiple of 32)
    width: float = 1.0  # built-in VGG-11: channel multiplier; 1.0 is the full VGG-11
    batch_norm: bool = False  # built-in VGG-11: the VGG-11-BN variant (curvature needs eval mode)
    dropout: float = 0.5  # built-in VGG-11: classifier dropout, as in torchvision
    arch: str = BUILTIN  # the architecture's registry name

    def __post_init__(self) -> None:
        if self.num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {self.num_classes}")
        if self.image_size < 16:
            raise ValueError(f"image_size must be >= 16 pixels, got {self.image_size}")
        if self.arch == BUILTIN:
            self._check_builtin()
            return
        check_arch(self.arch)
        defaults = ModelConfig(num_classes=2)
        changed = [n for n in _VGG_ONLY if getattr(self, n) != getattr(defaults, n)]
        if changed:
            verb = "shapes" if len(changed) == 1 else "shape"
            raise ValueError(
                f"{', '.join(changed)} {verb} the built-in VGG-11 only; {self.arch} is torchvision's architecture as "
                f"it is: leave {'/'.join('--' + c.replace('_', '-') for c in changed)} unset"
            )

    def _check_builtin(self) -> None:
        if self.image_size < 32 or self.image_size % 32:
            raise ValueError(
                f"image_size must be a positive multiple of 32 (VGG-11 halves it five times), "
                f"got {self.image_size}; try 32, 64, 128 or 224"
            )
        if not 0 < self.width <= 4:
            raise ValueError(f"width must be in (0, 4], got {self.width}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")

    @property
    def builtin(self) -> bool:
        return self.arch == BUILTIN

    def to_dict(self) -> dict:
        """The fields as plain data; ``arch`` only when it is not the built-in VGG-11, so a VGG-11's
        record (and the pre-training cache key made from it) reads as before architectures were named."""
        values = asdict(self)
        if self.builtin:
            values.pop("arch")
        return values

    def describe(self) -> str:
        """One line for logs: ``VGG-11 (width 0.125, 32px)`` or ``resnet18 (64px)``."""
        if self.builtin:
            bn = "-BN" if self.batch_norm else ""
            return f"VGG-11{bn} (width {self.width}, {self.image_size}px)"
        return f"{self.arch} ({self.image_size}px)"

    @property
    def feature_side(self) -> int:
        return self.image_size // 32

    def channels(self, base: int) -> int:
        return max(1, round(base * self.width))


_VGG_ONLY = ("width", "batch_norm", "dropout")


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
    if "arch" in values and not isinstance(values["arch"], str):
        raise ModelFileError(f"{where}: its model_config's arch is not a name ({values['arch']!r})")
    try:
        return ModelConfig(**values)
    except (TypeError, ValueError) as exc:
        raise ModelFileError(f"{where}: its model_config is not a valid model ({exc})") from None
