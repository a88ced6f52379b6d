"""Training augmentation (the paper's) and the plain evaluation path, on uint8 images."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision.transforms import v2

from ..models import to_model_input
from ._base import SplitArrays

__all__ = ["AugmentedImages", "train_augmentation"]


def train_augmentation(
    kind: str = "paper", *, rotation: float = 30.0, scale: tuple[float, float] = (0.9, 1.1)
) -> v2.Compose | None:
    """Training augmentation.

    ``"paper"``: random horizontal and vertical flips, rotation, scaling and AutoAugment
    (Sec. 4). ``"flips"``: the two flips only (cheap; for short CPU demos). ``"none"``.
    """
    if kind == "none":
        return None
    flips: list = [v2.RandomHorizontalFlip(), v2.RandomVerticalFlip()]
    if kind == "flips":
        return v2.Compose(flips)
    if kind != "paper":
        raise ValueError(f"unknown augmentation {kind!r}; choose paper, flips or none")
    return v2.Compose(
        [
            *flips,
            v2.RandomAffine(degrees=rotation, scale=scale),
            v2.AutoAugment(v2.AutoAugmentPolicy.IMAGENET),
        ]
    )


class AugmentedImages(Dataset):
    """A split as a torch dataset: augmented uint8 CHW tensors (or plain ones), labels and groups.

    Evaluation and curvature passes never use this; they read :class:`SplitArrays` directly.
    """

    def __init__(self, data: SplitArrays, transform: v2.Compose | None = None) -> None:
        self.images = torch.from_numpy(np.ascontiguousarray(data.images)).permute(0, 3, 1, 2)
        self.labels = torch.from_numpy(data.labels)
        self.groups = torch.from_numpy(data.groups.astype(np.int64))
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        img = self.images[i]
        if self.transform is not None:
            img = self.transform(img)
        return img, self.labels[i], self.groups[i]


def collate_to_input(
    batch: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Normalised inputs ``(N, 3, H, W)``, labels ``(N,)`` and groups ``(N,)``."""
    images = torch.stack([b[0] for b in batch])
    return to_model_input(images), torch.stack([b[1] for b in batch]), torch.stack([b[2] for b in batch])
