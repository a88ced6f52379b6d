"""Curvature backends: who computes a pruning step's curvature sums (this process, or a pool).

:class:`fairprune_core.distributed.CurvaturePool` is the Ray implementation of the same protocol.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Protocol

import torch
from torch import nn

from .batches import BatchSource
from .hessian import CurvatureConfig, CurvatureEngine, DiagSums, batch_seed

__all__ = ["CurvatureBackend", "LocalCurvature", "Request"]

Request = tuple[str, BatchSource]  # (tag, source): "unprivileged", "privileged" or "all"


class CurvatureBackend(Protocol):
    """Computes curvature sums of ``model`` on the mini-batches of step ``step`` of each source.

    All of one step's requests come in one call, so a distributed backend ships the weights
    once per step and balances every group's mini-batches over its workers.
    """

    config: CurvatureConfig

    def compute(self, model: nn.Module, requests: Sequence[Request], step: int) -> dict[str, DiagSums]: ...


class LocalCurvature:
    """The single-process backend: one extended replica, reloaded with the current weights.

    Mini-batch ``i`` of step ``t`` for group ``tag`` is seeded with
    ``batch_seed(config.seed, tag, t, i)``, whichever backend computes it, so a pool of workers
    gives the same result. The replica lives on ``device`` when given, else on the device of
    the model it is first asked about (a model on the GPU gets its curvature on the GPU).
    """

    def __init__(self, config: CurvatureConfig, *, device: str | torch.device | None = None) -> None:
        self.config = config
        self.device = torch.device(device) if device is not None else None
        self._engine: CurvatureEngine | None = None
        self.stats = {"batches": 0, "samples": 0, "seconds": 0.0}

    def engine_device(self, model: nn.Module) -> torch.device:
        """Where the curvature of ``model`` is computed."""
        return self.device if self.device is not None else next(model.parameters()).device

    def compute(self, model: nn.Module, requests: Sequence[Request], step: int) -> dict[str, DiagSums]:
        t0 = time.perf_counter()
        if self._engine is None:
            self._engine = CurvatureEngine(model, self.config, device=self.engine_device(model))
        else:
            self._engine.load_state_dict(model.state_dict())
        out = {}
        for tag, source in requests:
            total = DiagSums.zero()
            for i, (x, y) in enumerate(source.batches(step)):
                total = total + self._engine.batch_sums(x, y, seed=batch_seed(self.config.seed, tag, step, i))
                self.stats["batches"] += 1
            self.stats["samples"] += total.count
            out[tag] = total
        self.stats["seconds"] += time.perf_counter() - t0
        return out
