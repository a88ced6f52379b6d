"""FairPrune (Eq. 3-4, recipe of Sec. 3.3) and the OBD baseline, sharing one pruning loop.

FairPrune's saliency of weight i is ``s_i = 1/2 theta_i^2 (h0_ii - beta * h1_ii)`` with ``h0``
the Hessian diagonal on the UNPRIVILEGED group and ``h1`` on the PRIVILEGED group. Pruning a
weight with small (possibly negative) ``s_i`` raises the unprivileged group's loss little and
the privileged group's loss much, narrowing the gap. OBD (LeCun et al. 1989) uses
``s_i = 1/2 theta_i^2 h_ii`` with ``h`` from all training data.

Each step recomputes curvature on the current (pruned) model from freshly sampled mini-batches,
ranks every prunable weight that is still alive by its SIGNED saliency (ranking by absolute
value would be wrong: negative saliencies are the most prunable; ties are ordered by a
secondary key, see :func:`fairprune_saliency`), and zeroes the smallest ones
until ``step_ratio`` of all prunable weights has been pruned in total per step; the last step is
clipped so that the final ratio is ``final_ratio`` exactly (to one weight). Pruned weights are
exactly zero from then on, and are never selected again.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from .config import check_ratio_pair
from .curvature.backends import CurvatureBackend, LocalCurvature, Request
from .curvature.batches import GroupSampler, as_batch_source
from .curvature.hessian import CurvatureConfig, DiagSums, Estimator
from .datasets import SplitArrays
from .evaluation import evaluate
from .masks import apply_masks, prunable_parameters, pruned_fraction
from .metrics import flatten_metrics

__all__ = [
    "CurvatureBackend",
    "GroupSampler",
    "LocalCurvature",
    "PruneResult",
    "PruneSchedule",
    "apply_masks",
    "detect_privileged",
    "fairprune",
    "fairprune_saliency",
    "obd",
    "obd_saliency",
    "prunable_parameters",
    "prune_iteratively",
    "select_smallest",
]


# -- masks and selection ----------------------------------------------------------------------
def select_smallest(
    saliency: torch.Tensor, alive: torch.Tensor, k: int, tiebreak: tuple[torch.Tensor, ...] = ()
) -> torch.Tensor:
    """Indices of the ``k`` alive entries with the smallest saliency, on the saliency's device.

    Dead (already pruned) entries are never selected. Entries tied with the k-th smallest value
    are ordered by the ``tiebreak`` keys (ascending, first key first), then by index. One
    ``torch.kthvalue`` over all weights, plus a stable sort of the ties only.
    """
    n_alive = int(alive.sum())
    if k > n_alive:
        raise ValueError(f"asked to prune {k} weights but only {n_alive} are left")
    if k <= 0:
        return torch.zeros(0, dtype=torch.int64, device=saliency.device)
    values = torch.where(alive, saliency, torch.full_like(saliency, math.inf))
    if bool(torch.isnan(values).any()):
        raise FloatingPointError("saliency has NaN entries: the curvature pass diverged (check the data and model)")
    threshold = torch.kthvalue(values, k).values
    below = torch.nonzero(values < threshold).flatten()
    ties = torch.nonzero(values == threshold).flatten()
    if len(ties) > k - len(below):
        for key in reversed(tiebreak):  # stable sorts, last key first: the first key decides
            ties = ties[torch.sort(key[ties], stable=True).indices]
    return torch.cat([below, ties[: k - len(below)]])


@dataclass(frozen=True)
class PruneSchedule:
    """Prune ``step_ratio`` of the prunable weights per step until ``final_ratio``."""

    step_ratio: float
    final_ratio: float

    def __post_init__(self) -> None:
        check_ratio_pair(self.step_ratio, self.final_ratio)

    def targets(self, total: int) -> list[int]:
        """Cumulative number of pruned weights after each step (the last one clipped)."""
        final = round(self.final_ratio * total)
        targets: list[int] = []
        k = 1
        while not targets or targets[-1] < final:
            # cumulative rounding: 10% steps to 50% are exactly five steps, whatever the total
            targets.append(min(max(round(k * self.step_ratio * total), k), final))
            k += 1
        return targets


# -- saliencies -------------------------------------------------------------------------------
CurvatureFn = Callable[[nn.Module, Sequence[Request], int], dict[str, DiagSums]]


@dataclass
class Saliency:
    """Per-parameter saliency (float64) and the key that orders its ties."""

    value: dict[str, torch.Tensor]
    tiebreak: dict[str, torch.Tensor]


SaliencyFn = Callable[[nn.Module, int, CurvatureFn], Saliency]


def fairprune_saliency(beta: float, unprivileged: Any, privileged: Any) -> SaliencyFn:
    """Eq. (4): ``s = 1/2 theta^2 (h0 - beta h1)``, h0 unprivileged, h1 privileged (float64).

    Ties (chiefly ``s == 0`` where a unit is inactive for the curvature samples) are broken by
    the groups' total OBD saliency ``1/2 theta^2 (h0 + h1)``: weights that matter to neither
    group go first. Ordering such ties by position instead would prune whole early layers.
    Note what Eq. (4) implies for any ``beta > 0``: a weight used only by the privileged group
    (``h0 == 0 < h1``) has negative saliency and is among the first pruned, however small beta.
    """
    if not math.isfinite(beta) or beta < 0:
        raise ValueError(f"beta must be a finite number >= 0, got {beta}")
    src0, src1 = as_batch_source(unprivileged), as_batch_source(privileged)

    def saliency(model: nn.Module, step: int, curvature: CurvatureFn) -> dict[str, torch.Tensor]:
        sums = curvature(model, [("unprivileged", src0), ("privileged", src1)], step)
        h0, h1 = sums["unprivileged"].mean(dtype=None), sums["privileged"].mean(dtype=None)
        value, total = {}, {}
        for n, p in model.named_parameters():
            half_sq = 0.5 * p.detach().double() ** 2  # on the model's device, like the ranking
            c0, c1 = h0[n].to(p.device), h1[n].to(p.device)
            value[n] = half_sq * (c0 - beta * c1)
            total[n] = half_sq * (c0 + c1)
        return Saliency(value, total)

    return saliency


def obd_saliency(data: Any) -> SaliencyFn:
    """Optimal Brain Damage: ``s = 1/2 theta^2 h`` from all training data, groups ignored.

    Ties (``s == 0``) go to the smaller magnitude ``|theta|`` first.
    """
    src = as_batch_source(data)

    def saliency(model: nn.Module, step: int, curvature: CurvatureFn) -> dict[str, torch.Tensor]:
        h = curvature(model, [("all", src)], step)["all"].mean(dtype=None)
        value = {n: 0.5 * p.detach().double() ** 2 * h[n].to(p.device) for n, p in model.named_parameters()}
        return Saliency(value, {})

    return saliency


# -- the loop ----------------------------------------------------------------------------------
StopKind = Literal["target", "abort"]


@dataclass
class PruneResult:
    model: nn.Module
    masks: dict[str, torch.Tensor]  # True = kept
    history: list[dict[str, float]] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    val_logits: np.ndarray | None = None  # the pruned model's logits on the validation split (its last step's pass)

    @property
    def achieved_ratio(self) -> float:
        return pruned_fraction(self.masks)

    @property
    def stopped_early(self) -> bool:
        """Stopped before the final ratio, for either reason."""
        return bool(self.config.get("stopped_early"))

    @property
    def reached_target(self) -> bool:
        """Stopped because the fairness target (``stop_at``) was met: a success."""
        return self.config.get("stop_kind") == "target"

    @property
    def aborted(self) -> bool:
        """Stopped by ``stop_when`` (e.g. validation F1 fell below the floor): a failure."""
        return self.config.get("stop_kind") == "abort"


def _stop_decision(
    row: dict[str, float],
    stop_at: Mapping[str, float] | None,
    stop_when: Callable[[dict[str, float]], str | None] | None,
) -> tuple[StopKind, str] | None:
    """Why to stop after this step, if at all: the fairness target reached, or an abort rule."""
    if stop_at and all(row.get(f"val_{k}", math.inf) <= v for k, v in stop_at.items()):
        return "target", f"fairness target {dict(stop_at)} reached on validation"
    reason = stop_when(row) if stop_when is not None else None
    return ("abort", reason) if reason else None


class _Layout:
    """The prunable weights of a model as one flat vector on the model's device."""

    def __init__(self, model: nn.Module, names: list[str]) -> None:
        self.names = names
        self.params = dict(model.named_parameters())
        self.sizes = [self.params[n].numel() for n in names]
        self.total = sum(self.sizes)
        self.device = self.params[names[0]].device

    def flat(self, tensors: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return torch.cat([tensors[n].detach().reshape(-1).to(self.device) for n in self.names])

    def apply(self, alive: torch.Tensor) -> None:
        with torch.no_grad():
            for name, local in zip(self.names, torch.split(alive, self.sizes), strict=True):
                p = self.params[name]
                p.mul_(local.view_as(p).to(p.dtype))

    def masks(self, alive: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-parameter masks on the CPU (what checkpoints and trackers store)."""
        return {
            name: local.view(self.params[name].shape).cpu().clone()
            for name, local in zip(self.names, torch.split(alive, self.sizes), strict=True)
        }


def _with_initial(curvature: CurvatureBackend, initial: Mapping[str, DiagSums] | None) -> CurvatureFn:
    """The backend, except that step 0 reuses curvature sums computed once for many runs."""
    shared = dict(initial or {})

    def curvature_fn(m: nn.Module, requests: Sequence[Request], step: int) -> dict[str, DiagSums]:
        known = {tag: shared[tag] for tag, _ in requests if step == 0 and tag in shared}
        todo = [(tag, src) for tag, src in requests if tag not in known]
        return {**known, **(curvature.compute(m, todo, step) if todo else {})}

    return curvature_fn


def _step_message(row: dict[str, float], steps: int) -> str:
    msg = f"step {int(row['step'])}/{steps}: pruned {row['ratio']:.2%}"
    if "val_avg_f1" in row:
        msg += f", val F1 {row['val_avg_f1']:.4f}, val Eopp1 {row['val_eopp1']:.4f}"
    return msg + f" ({row['seconds']:.1f}s)"


def prune_iteratively(
    model: nn.Module,
    saliency: SaliencyFn,
    *,
    schedule: PruneSchedule,
    curvature: CurvatureBackend,
    validation: SplitArrays | None = None,
    num_classes: int | None = None,
    stop_at: Mapping[str, float] | None = None,
    stop_when: Callable[[dict[str, float]], str | None] | None = None,
    prune_biases: bool = False,
    initial_curvature: Mapping[str, DiagSums] | None = None,
    initial_validation: Mapping[str, float] | None = None,
    inplace: bool = False,
    log: Callable[[str], None] | None = None,
    on_step: Callable[[dict[str, float]], None] | None = None,
) -> PruneResult:
    """The pruning loop FairPrune and OBD share (see the module docstring).

    ``initial_curvature`` maps a group tag ("unprivileged", "privileged", "all") to curvature
    sums of the UNPRUNED model at step 0, computed once and shared by many runs (a sweep);
    ``initial_validation`` likewise holds its validation metrics (``val_*``, as recorded at step 0).
    ``stop_at`` (e.g. ``{"eopp1": 0.05}``) stops after the first step whose validation metric
    is at or below the target (a success: ``result.reached_target``). ``stop_when(record)`` may
    return a reason to stop after any step (e.g. validation F1 fell below a floor; a failure:
    ``result.aborted``). ``on_step`` receives each step's record.
    """
    if stop_at and validation is None:
        raise ValueError("stop_at needs a validation split to measure the fairness target on")
    if not inplace:
        model = copy.deepcopy(model)
    model.eval()
    layout = _Layout(model, prunable_parameters(model, include_biases=prune_biases))
    alive = torch.ones(layout.total, dtype=torch.bool, device=layout.device)
    if num_classes is None:
        num_classes = getattr(getattr(model, "config", None), "num_classes", None)
    if validation is not None and num_classes is None:
        raise ValueError("num_classes is needed to evaluate on the validation split")
    curvature_fn = _with_initial(curvature, initial_curvature)
    history: list[dict[str, float]] = []
    last_logits: list[np.ndarray] = []  # the latest validation pass: the final evaluation reuses it

    def record(step: int, extra: dict[str, float]) -> dict[str, float]:
        pruned = layout.total - int(alive.sum())
        row = {"step": step, "pruned": float(pruned), "ratio": pruned / layout.total, **extra}
        if validation is not None and step == 0 and initial_validation is not None:
            row.update({k: float(v) for k, v in initial_validation.items()}, eval_seconds=0.0)
        elif validation is not None:
            t0 = time.perf_counter()
            m = evaluate(model, validation, num_classes=num_classes)
            last_logits[:] = [m["logits"]]
            row.update(flatten_metrics(m, prefix="val_"))
            row["eval_seconds"] = time.perf_counter() - t0
        history.append(row)
        if on_step is not None:
            on_step(row)
        return row

    record(0, {"seconds": 0.0})
    stop: tuple[StopKind, str] | None = None
    targets = schedule.targets(layout.total)
    for step, target in enumerate(targets):
        t0 = time.perf_counter()
        sal = saliency(model, step, curvature_fn)
        keys = [layout.flat(sal.tiebreak)] if sal.tiebreak else []
        magnitude = layout.flat(layout.params).abs()
        chosen = select_smallest(
            layout.flat(sal.value), alive, target - (layout.total - int(alive.sum())), (*keys, magnitude)
        )
        alive[chosen] = False
        layout.apply(alive)
        row = record(step + 1, {"seconds": time.perf_counter() - t0})
        if log is not None:
            log(_step_message(row, len(targets)))
        stop = _stop_decision(row, stop_at, stop_when)
        if stop:
            if log is not None and step + 1 < len(targets):
                log(f"{stop[1]}; stopping at {row['ratio']:.2%}")
            break
    early = bool(stop) and len(history) - 1 < len(targets)
    info = {
        "stopped_early": early,
        "stop_kind": stop[0] if stop else None,
        "stop_reason": stop[1] if stop else None,
        "prunable": layout.total,
    }
    final_logits = last_logits[0] if last_logits and len(history) > 1 else None
    return PruneResult(model, layout.masks(alive), history, info, val_logits=final_logits)


def _backend(
    curvature: CurvatureBackend | None,
    estimator: Estimator,
    mc_samples: int,
    seed: int,
    max_sub_batch: int | None,
    model: nn.Module,
) -> CurvatureBackend:
    if curvature is not None:
        return curvature
    config = CurvatureConfig(estimator=estimator, mc_samples=mc_samples, seed=seed, max_sub_batch=max_sub_batch)
    return LocalCurvature(config)  # follows the model's device


def fairprune(
    model: nn.Module,
    unprivileged: Any,
    privileged: Any,
    *,
    beta: float,
    step_ratio: float,
    final_ratio: float,
    estimator: Estimator = "exact",
    mc_samples: int = 1,
    max_sub_batch: int | None = None,
    seed: int = 0,
    curvature: CurvatureBackend | None = None,
    validation: SplitArrays | None = None,
    num_classes: int | None = None,
    stop_at: Mapping[str, float] | None = None,
    stop_when: Callable[[dict[str, float]], str | None] | None = None,
    prune_biases: bool = False,
    initial_curvature: Mapping[str, DiagSums] | None = None,
    initial_validation: Mapping[str, float] | None = None,
    inplace: bool = False,
    log: Callable[[str], None] | None = None,
    on_step: Callable[[dict[str, float]], None] | None = None,
) -> PruneResult:
    """Prune ``model`` for fairness (FairPrune, Eq. 3-4 and Sec. 3.3).

    ``unprivileged`` and ``privileged`` yield each group's curvature mini-batches
    ``(inputs, labels)``: a :class:`GroupSampler` (fresh seeded samples every step), a function
    ``step -> mini-batches``, or a list reused at every step. ``curvature`` picks the backend
    (default: this process; :class:`fairprune_core.curvature.distributed.CurvaturePool` for Ray workers),
    otherwise ``estimator``/``mc_samples``/``seed`` configure a local one. Returns the pruned
    copy (or ``model`` itself with ``inplace``), its masks and a per-step history.
    """
    schedule = PruneSchedule(step_ratio, final_ratio)
    result = prune_iteratively(
        model,
        fairprune_saliency(beta, unprivileged, privileged),
        schedule=schedule,
        curvature=_backend(curvature, estimator, mc_samples, seed, max_sub_batch, model),
        validation=validation,
        num_classes=num_classes,
        stop_at=stop_at,
        stop_when=stop_when,
        prune_biases=prune_biases,
        initial_curvature=initial_curvature,
        initial_validation=initial_validation,
        inplace=inplace,
        log=log,
        on_step=on_step,
    )
    result.config.update(method="fairprune", beta=beta, step_ratio=step_ratio, final_ratio=final_ratio)
    return result


def obd(
    model: nn.Module,
    data: Any,
    *,
    step_ratio: float,
    final_ratio: float,
    estimator: Estimator = "exact",
    mc_samples: int = 1,
    max_sub_batch: int | None = None,
    seed: int = 0,
    curvature: CurvatureBackend | None = None,
    validation: SplitArrays | None = None,
    num_classes: int | None = None,
    prune_biases: bool = False,
    initial_curvature: Mapping[str, DiagSums] | None = None,
    initial_validation: Mapping[str, float] | None = None,
    inplace: bool = False,
    log: Callable[[str], None] | None = None,
    on_step: Callable[[dict[str, float]], None] | None = None,
    stop_when: Callable[[dict[str, float]], str | None] | None = None,
) -> PruneResult:
    """The OBD baseline: same schedule, saliency ``1/2 theta^2 h`` on all training data."""
    result = prune_iteratively(
        model,
        obd_saliency(data),
        schedule=PruneSchedule(step_ratio, final_ratio),
        curvature=_backend(curvature, estimator, mc_samples, seed, max_sub_batch, model),
        validation=validation,
        num_classes=num_classes,
        stop_when=stop_when,
        prune_biases=prune_biases,
        initial_curvature=initial_curvature,
        initial_validation=initial_validation,
        inplace=inplace,
        log=log,
        on_step=on_step,
    )
    result.config.update(method="obd", step_ratio=step_ratio, final_ratio=final_ratio)
    return result


def detect_privileged(model: nn.Module, validation: SplitArrays, *, num_classes: int) -> tuple[int, dict[int, float]]:
    """The group on which ``model`` is more accurate on validation (the paper's definition)."""
    m = evaluate(model, validation, num_classes=num_classes)
    acc = {g: m["groups"][g]["accuracy"] for g in (0, 1)}
    return (1 if acc[1] > acc[0] else 0), acc
