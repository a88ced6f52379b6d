"""Curvature mini-batches: where each pruning step's samples come from, seeded per step."""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch

from ..models import to_model_input

__all__ = ["Batch", "BatchSource", "GroupSampler", "as_batch_source"]

Batch = tuple[torch.Tensor, torch.Tensor]


class BatchSource(Protocol):
    """Something that yields the curvature mini-batches of pruning step ``step``."""

    def batches(self, step: int) -> Iterable[Batch]: ...


@dataclass(frozen=True)
class GroupSampler:
    """Seeded mini-batches from one group's images (uint8 ``(N, H, W, 3)``) and labels.

    Step ``t`` draws ``num_batches`` mini-batches of ``batch_size``: consecutive slices of
    random permutations of the group (a new permutation whenever one is used up), seeded by
    ``(seed, t)``. The paper: 500 x 2 per group on Fitzpatrick17k, 200 x 64 on ISIC 2019.
    """

    images: np.ndarray
    labels: np.ndarray
    batch_size: int
    num_batches: int
    seed: int = 0
    name: str = "group"

    def __post_init__(self) -> None:
        if len(self.labels) == 0:
            raise ValueError(f"{self.name}: no samples to draw curvature mini-batches from (empty group)")
        if len(self.images) != len(self.labels):
            raise ValueError(f"{self.name}: {len(self.images)} images but {len(self.labels)} labels")
        if self.batch_size < 1 or self.num_batches < 1:
            raise ValueError(
                f"{self.name}: batch_size and num_batches must be >= 1, got {self.batch_size}, {self.num_batches}"
            )

    def plan(self, step: int) -> list[np.ndarray]:
        """Index arrays of the mini-batches of ``step`` (what workers receive instead of pixels)."""
        rng = np.random.default_rng([self.seed, step])
        need = self.batch_size * self.num_batches
        n = len(self.labels)
        order = np.concatenate([rng.permutation(n) for _ in range(math.ceil(need / n))])[:need]
        return [order[i * self.batch_size : (i + 1) * self.batch_size] for i in range(self.num_batches)]

    def make_batch(self, index: np.ndarray) -> Batch:
        x = to_model_input(torch.from_numpy(np.ascontiguousarray(self.images[index])))
        return x, torch.from_numpy(self.labels[index].astype(np.int64))

    def batches(self, step: int) -> Iterator[Batch]:
        for index in self.plan(step):
            yield self.make_batch(index)


class _FixedBatches:
    """Any re-iterable of mini-batches: the same batches at every step."""

    def __init__(self, batches: Iterable[Batch]) -> None:
        self._batches = batches

    def batches(self, step: int) -> Iterable[Batch]:
        return self._batches


def as_batch_source(obj: Any) -> BatchSource:
    if hasattr(obj, "batches") and callable(obj.batches):
        return obj
    if callable(obj):
        fn = obj

        class _Callable:
            def batches(self, step: int) -> Iterable[Batch]:
                return fn(step)

        return _Callable()
    if isinstance(obj, Iterator):
        raise TypeError(
            "a one-shot iterator cannot be re-read at every pruning step; pass a list of "
            "mini-batches, a GroupSampler or a function step -> mini-batches"
        )
    return _FixedBatches(obj)
