"""Every torchvision classification architecture, by its torchvision name, with ``num_classes``
outputs and randomly initialised: weights come from the user's file or from pre-training, never
from a download."""

from __future__ import annotations

from typing import Any

from torch import nn

from .config import ModelConfig

__all__ = ["build_torchvision"]


def _size_arguments(name: str, image_size: int) -> dict[str, Any]:
    """Builder arguments an architecture needs to take ``image_size`` px inputs, or to return logits."""
    if name.startswith("vit_"):
        return {"image_size": image_size}  # position embeddings are sized for the input
    if name.startswith("maxvit_"):
        return {"input_size": (image_size, image_size)}
    if name in ("inception_v3", "googlenet"):
        return {"aux_logits": False, "init_weights": True}  # logits, not a tuple with auxiliary ones
    return {}


def build_torchvision(config: ModelConfig) -> nn.Module:
    from torchvision.models import get_model

    try:
        return get_model(
            config.arch, weights=None, num_classes=config.num_classes, **_size_arguments(config.arch, config.image_size)
        )
    except (AssertionError, ValueError) as exc:  # e.g. a ViT's patch size that does not divide the input
        raise ValueError(
            f"{config.arch} cannot be built for {config.image_size}px images ({exc or type(exc).__name__}); pass "
            f"another --image-size"
        ) from None
