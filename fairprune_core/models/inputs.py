"""The input every architecture sees: uint8 RGB images -> (x / 255 - mean) / std with ImageNet
statistics (torchvision's convention, so a user's ImageNet-initialised weights see what they expect)."""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["INPUT_MEAN", "INPUT_STD", "normalise", "to_model_input"]

# Inputs are uint8 RGB images; the model sees (x / 255 - mean) / std (ImageNet statistics).
INPUT_MEAN = (0.485, 0.456, 0.406)
INPUT_STD = (0.229, 0.224, 0.225)


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
