"""Training batches made on the training device: the uint8 split copied there once, each batch
augmented there with per-sample random parameters (kornia), the CPU path's transforms on a GPU.

The CPU path (:class:`~fairprune_core.datasets.transforms.AugmentedImages` in a DataLoader)
augments image by image in the main process; on a GPU that starves the accelerator. Here one
batch is one gather, one batched augmentation and one normalisation, all on the device.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import torch
from torch import nn

from ..models import normalise
from ._base import SplitArrays

__all__ = ["DeviceBatches", "device_augmentation"]


def device_augmentation(
    kind: str = "paper", *, rotation: float = 30.0, scale: tuple[float, float] = (0.9, 1.1)
) -> nn.Module | None:
    """The batched equivalent of :func:`~fairprune_core.datasets.transforms.train_augmentation`:
    each image of a batch gets its own flips, rotation/scaling and AutoAugment sub-policy.
    Works on float images in [0, 1] ``(N, 3, H, W)`` on any device."""
    import kornia.augmentation as K
    from kornia.augmentation.auto import AutoAugment

    if kind == "none":
        return None
    flips: list[nn.Module] = [K.RandomHorizontalFlip(p=0.5), K.RandomVerticalFlip(p=0.5)]
    if kind == "flips":
        return nn.Sequential(*flips)
    if kind != "paper":
        raise ValueError(f"unknown augmentation {kind!r}; choose paper, flips or none")
    return nn.Sequential(*flips, K.RandomAffine(degrees=rotation, scale=scale, p=1.0), AutoAugment(policy="imagenet"))


class DeviceBatches:
    """Shuffled training batches ``(x, y, g)`` of one split, produced on ``device``.

    The order comes from the global torch RNG (as the DataLoader's shuffle does), so a seeded
    and resumed training run draws the same batches.
    """

    def __init__(self, data: SplitArrays, *, batch_size: int, device: torch.device, augment: str = "paper") -> None:
        self.device = torch.device(device)
        self.images = torch.from_numpy(np.ascontiguousarray(data.images)).to(self.device).permute(0, 3, 1, 2)
        self.labels = torch.from_numpy(data.labels.astype(np.int64)).to(self.device)
        self.groups = torch.from_numpy(data.groups.astype(np.int64)).to(self.device)
        self.batch_size = batch_size
        self.augment = device_augmentation(augment)

    def __len__(self) -> int:
        return math.ceil(len(self.labels) / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        order = torch.randperm(len(self.labels)).to(self.device)
        for start in range(0, len(order), self.batch_size):
            index = order[start : start + self.batch_size]
            x = self.images[index].float().div_(255.0)
            if self.augment is not None:
                with torch.no_grad():
                    x = self.augment(x).clamp_(0.0, 1.0)
            yield normalise(x), self.labels[index], self.groups[index]
