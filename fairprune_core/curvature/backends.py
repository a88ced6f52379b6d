"""Curvature backends: who computes a pruning step's curvature sums (this process, or a pool).

:class:`fairprune_core.curvature.distributed.CurvaturePool` is the Ray implementation of the same protocol.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import torch
from torch import nn

from .batches import BatchSource
from .hessian import CurvatureConfig, DiagSums, batch_seed, make_engine

__all__ = ["CurvatureBackend", "LocalCurvature", "Progress", "Request"]

Request = tuple[str, BatchSource]  # (tag, source): "unprivileged", "privileged" or "all"


class CurvatureBackend(Protocol):
    """Computes curvature sums of ``model`` on the mini-batches of step ``step`` of each source.

    All of one step's requests come in one call, so a distributed backend ships the weights
    once per step and balances every group's mini-batches over its workers.
    """

    config: CurvatureConfig

    def compute(self, model: nn.Module, requests: Sequence[Request], step: int) -> dict[str, DiagSums]: ...


class Progress:
    """A progress line inside one curvature step: batches done/total, samples/s, time left.

    Prints after the first ``first`` batches (to give an early throughput) and then at most
    every ``every_s`` seconds; silent for steps that finish before ``every_s``.
    """

    def __init__(
        self, log: Callable[[str], None], total: int | None, *, label: str = "", every_s: float = 10.0, first: int = 2
    ) -> None:
        self.log, self.total, self.label, self.every_s, self.first = log, total, label, every_s, first
        self.t0 = self.last = time.perf_counter()
        self.batches = self.samples = 0

    def update(self, samples: int) -> None:
        self.batches += 1
        self.samples += samples
        now = time.perf_counter()
        if now - self.t0 < self.every_s or (self.batches > self.first and now - self.last < self.every_s):
            return
        self.last = now
        self.log(self.line(now))

    def line(self, now: float | None = None) -> str:
        elapsed = max((now or time.perf_counter()) - self.t0, 1e-9)
        rate = self.samples / elapsed
        done = f"{self.batches}/{self.total}" if self.total else f"{self.batches}"
        msg = f"  curvature{self.label}: {done} mini-batches, {rate:.0f} samples/s"
        if self.total and self.batches < self.total:
            left = (self.total - self.batches) * elapsed / self.batches
            msg += f", ~{_duration(left)} left in this step"
        return msg


def _duration(seconds: float) -> str:
    m, s = divmod(round(seconds), 60)
    return f"{m}m{s:02d}s" if m else f"{s}s"


class LocalCurvature:
    """The single-process backend: one extended replica, reloaded with the current weights.

    Mini-batch ``i`` of step ``t`` for group ``tag`` is seeded with
    ``batch_seed(config.seed, tag, t, i)``, whichever backend computes it, so a pool of workers
    gives the same result. The replica lives on ``device`` when given, else on the device of
    the model it is first asked about (a model on the GPU gets its curvature on the GPU).
    With ``log``, a long step prints its progress (:class:`Progress`).
    """

    def __init__(
        self,
        config: CurvatureConfig,
        *,
        device: str | torch.device | None = None,
        log: Callable[[str], None] | None = None,
        progress_every_s: float = 10.0,
    ) -> None:
        self.config = config
        self.log = log
        self.progress_every_s = progress_every_s
        self.device = torch.device(device) if device is not None else None
        self._engine: Any = None  # CurvatureEngine (BackPACK) or FuncCurvatureEngine
        self.stats = {"batches": 0, "samples": 0, "seconds": 0.0}

    def engine_device(self, model: nn.Module) -> torch.device:
        """Where the curvature of ``model`` is computed."""
        return self.device if self.device is not None else next(model.parameters()).device

    def compute(self, model: nn.Module, requests: Sequence[Request], step: int) -> dict[str, DiagSums]:
        t0 = time.perf_counter()
        if self._engine is None:
            self._engine = make_engine(model, self.config, device=self.engine_device(model))
        else:
            self._engine.load_state_dict(model.state_dict())
        out = {}
        planned = [getattr(source, "num_batches", None) for _, source in requests]
        batches = sum(planned) if all(planned) else None
        progress = (
            Progress(self.log, batches, label=f" step {step}", every_s=self.progress_every_s) if self.log else None
        )
        for tag, source in requests:
            total = DiagSums.zero()
            for i, (x, y) in enumerate(source.batches(step)):
                total = total + self._engine.batch_sums(x, y, seed=batch_seed(self.config.seed, tag, step, i))
                self.stats["batches"] += 1
                if progress is not None:
                    progress.update(int(y.shape[0]))
            self.stats["samples"] += total.count
            out[tag] = total
        self.stats["seconds"] += time.perf_counter() - t0
        return out
