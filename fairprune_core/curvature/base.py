"""What every curvature engine shares: its settings, its sums, its seeds and its memory budget.

Kept apart from the engines (:mod:`~fairprune_core.curvature.hessian`'s BackPACK engine,
:mod:`~fairprune_core.curvature.per_sample`'s per-sample gradients) so that either can use them;
:mod:`~fairprune_core.curvature.hessian` re-exports them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import nn

from ..config import ESTIMATORS, PruneConfig

__all__ = [
    "CPU_MEMORY_BUDGET",
    "ChunkedEngine",
    "CurvatureConfig",
    "DiagSums",
    "Estimator",
    "activation_elements",
    "batch_seed",
    "default_memory_budget",
]

Estimator = Literal["exact", "ggn", "mc", "fisher", "hutchinson"]


@dataclass(frozen=True)
class CurvatureConfig:
    """How curvature is estimated.

    ``max_sub_batch`` bounds how many samples go through one BackPACK pass (memory); ``None``
    sizes the passes to a memory budget (:func:`sub_batch_for_budget`): half the free memory of
    a GPU, 1 GiB on a CPU.
    """

    estimator: Estimator = "exact"
    mc_samples: int = 1  # sampled labels per input for "mc"
    probes: int = 16  # Rademacher probes per sub-batch for "hutchinson"
    max_sub_batch: int | None = None
    seed: int = 0  # base seed of the "mc" label sampling

    def __post_init__(self) -> None:
        if self.estimator not in ESTIMATORS:
            raise ValueError(f"unknown estimator {self.estimator!r}; choose one of {', '.join(ESTIMATORS)}")
        if self.mc_samples < 1:
            raise ValueError(f"mc_samples must be >= 1, got {self.mc_samples}")
        if self.probes < 1:
            raise ValueError(f"probes must be >= 1, got {self.probes}")
        if self.max_sub_batch is not None and self.max_sub_batch < 1:
            raise ValueError(f"max_sub_batch must be >= 1 or None, got {self.max_sub_batch}")

    @classmethod
    def of(cls, prune: PruneConfig) -> CurvatureConfig:
        """The curvature settings of one pruning run."""
        return cls(
            estimator=prune.estimator,  # type: ignore[arg-type]
            mc_samples=prune.mc_samples,
            probes=prune.probes,
            max_sub_batch=prune.max_sub_batch,
            seed=prune.seed,
        )


@dataclass
class DiagSums:
    """Per-parameter sums over samples of a per-sample curvature diagonal, and the count."""

    sums: dict[str, torch.Tensor]  # float64, each of its parameter's shape
    count: int

    def __add__(self, other: DiagSums) -> DiagSums:
        if self.count == 0:
            return other
        if other.count == 0:
            return self
        return DiagSums({k: v + other.sums[k] for k, v in self.sums.items()}, self.count + other.count)

    def mean(self, dtype: torch.dtype | None = torch.float32) -> dict[str, torch.Tensor]:
        """The diagonal of the Hessian of the MEAN loss over all counted samples.

        Returned in ``dtype`` (float32 by default; None keeps the float64 sums' precision).
        """
        if self.count == 0:
            raise ValueError("no samples were given: the curvature of an empty set is undefined")
        return {k: (v / self.count).to(dtype or v.dtype) for k, v in self.sums.items()}

    @staticmethod
    def zero() -> DiagSums:
        return DiagSums({}, 0)


def batch_seed(base: int, *keys: int | str) -> int:
    """A 63-bit seed for one mini-batch, independent of which worker computes it."""
    digest = hashlib.blake2b(repr((base, *keys)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


CPU_MEMORY_BUDGET = 1 << 30


def default_memory_budget(device: torch.device) -> int:
    """Bytes one curvature pass may use: half the free memory of a GPU, 1 GiB on a CPU."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free // 2)
    return CPU_MEMORY_BUDGET


def activation_elements(model: nn.Module, sample_shape: tuple[int, ...]) -> int:
    """Elements of every leaf module's output (and the input) for ONE sample of ``sample_shape``."""
    total = [int(np.prod(sample_shape))]
    hooks = [
        m.register_forward_hook(lambda _m, _i, out: total.append(out.numel()))  # a batch of one
        for m in model.modules()
        if not list(m.children())
    ]
    try:
        with torch.no_grad():
            p = next(model.parameters())
            model(torch.zeros((1, *sample_shape), dtype=p.dtype, device=p.device))
    finally:
        for h in hooks:
            h.remove()
    return sum(total)


class ChunkedEngine:
    """What every engine does the same way around its own pass: a mini-batch split into sub-batches
    of ``sub_batch(sample_shape)`` samples (each seeded from the batch's seed), and many mini-batches
    summed. An engine supplies ``config``, ``sub_batch`` and ``_pass(x, y, seed) -> DiagSums``."""

    config: CurvatureConfig
    model: torch.nn.Module  # the engine's private copy of the caller's model

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        """New weights (a pruning step's, or those a remote worker is sent), by name."""
        self.model.load_state_dict({k: torch.as_tensor(v) for k, v in state.items()})

    def sub_batch(self, sample_shape: tuple[int, ...]) -> int:
        raise NotImplementedError

    def _pass(self, x: torch.Tensor, y: torch.Tensor, seed: int) -> DiagSums:
        raise NotImplementedError

    def batch_sums(self, x: torch.Tensor, y: torch.Tensor, *, seed: int = 0) -> DiagSums:
        """Curvature sums of one mini-batch (split into sub-batches as memory requires)."""
        n = int(y.shape[0])
        if n == 0:
            return DiagSums.zero()
        chunk = self.sub_batch(tuple(x.shape[1:]))
        total = DiagSums.zero()
        for i, start in enumerate(range(0, n, chunk)):
            total = total + self._pass(x[start : start + chunk], y[start : start + chunk], batch_seed(seed, i))
        return total

    def sums(
        self, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], *, seeds: Iterable[int] | None = None
    ) -> DiagSums:
        """Curvature sums over mini-batches; ``seeds`` (one per batch) seed ``mc`` sampling."""
        total = DiagSums.zero()
        seed_iter = iter(seeds) if seeds is not None else None
        for i, (x, y) in enumerate(batches):
            s = next(seed_iter) if seed_iter is not None else batch_seed(self.config.seed, i)
            total = total + self.batch_sums(x, y, seed=s)
        return total
