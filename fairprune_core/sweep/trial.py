"""The body of one sweep trial: settings + context -> a :class:`TrialRecord`.

A pure function of its inputs apart from the tracker and the ``report`` callback it is given:
no Ray, no MLflow, no Optuna here (:mod:`~fairprune_core.sweep.tune` wraps it for Ray Tune
with an MLflow tracker; tests call it directly with the null tracker).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from ..config import SearchSpace
from ..curvature.hessian import DiagSums
from ..experiment import Experiment, MethodRecord, Problem, Reference
from ..methods.fairprune import FairPrune
from ..pruning import CurvatureBackend
from ..throttle import Throttle
from ..tracking import NullTracker, Tracker
from .front import is_feasible

__all__ = ["TrialContext", "TrialRecord", "TrialSettings", "run_trial"]


@dataclass
class TrialContext:
    """Everything a trial needs, shipped once to the trial processes."""

    problem: Problem
    initial: dict[str, DiagSums]  # the unpruned model's per-group curvature (step 0), shared
    f1_floor: float  # absolute (on validation)
    reference: Reference | None = None  # vanilla's predictions and validation metrics, computed once
    f1_floor_rel: float = 0.9  # the same floor relative to vanilla's F1 (the collapse rule on every split)
    max_steps: int | None = None  # the search space's cap on pruning steps per trial
    abort_infeasible: bool = True
    n_boot: int = 500
    progress_every_s: float = 10.0  # per-step progress (Tune reports, MLflow curves) at most this often
    stop_eopp1: float | None = None  # the paper's "until the target fairness metric is achieved"
    sweep_id: str = ""
    tracking_uri: str = ""
    experiment_id: str = ""
    parent_run_id: str = ""
    pickle_models: bool = True  # False: models as safetensors only (--safetensors-only)
    workers: int = 0
    cpus_per_trial: float = 1
    cpus_per_worker: float = 1
    gpus_per_worker: float = 0
    gpus_per_trial: float = 0  # the trial's own GPUs (Ray makes exactly those visible to it)


@dataclass(frozen=True)
class TrialSettings:
    """One point of the search space, and the step it runs with (:meth:`SearchSpace.effective_step`:
    at most the final ratio, at least final / max_steps)."""

    number: int
    beta: float
    step_ratio: float  # as suggested
    final_ratio: float
    max_steps: int | None = None

    @property
    def step(self) -> float:
        return SearchSpace(max_steps=self.max_steps).effective_step(self.step_ratio, self.final_ratio)


@dataclass
class TrialRecord:
    """What a finished trial measured, and where its run and model are."""

    number: int
    beta: float
    step_ratio: float
    final_ratio: float
    val_avg_f1: float
    val_eopp1: float
    test_avg_f1: float
    test_eopp1: float
    achieved_ratio: float
    feasible: bool
    aborted: bool  # stopped because validation F1 fell below the floor
    reached_target: bool  # stopped because the fairness target was met
    collapsed: bool  # (almost) one predicted class, or below the floor: never called fairer
    stop_reason: str
    eopp1_change_vs_vanilla: str
    run_id: str = ""
    model_id: str = ""
    model_uri: str = ""
    model_bytes: int = -1
    collapse_reason: str = ""  # which rule made it collapsed, with its numbers
    extra: dict[str, Any] = field(default_factory=dict)

    def final_report(self) -> dict[str, Any]:
        """The trial's last report to the scheduler: the objectives, feasibility and ids."""
        out = {k: v for k, v in asdict(self).items() if k != "extra"}
        out.update(trial_number=self.number, mlflow_run_id=self.run_id, final=True)
        return out


def _floor_rule(ctx: TrialContext) -> Callable[[dict[str, float]], str | None] | None:
    if not ctx.abort_infeasible:
        return None

    def below_floor(row: dict[str, float]) -> str | None:
        if row.get("val_avg_f1", 1.0) < ctx.f1_floor:
            return f"val F1 {row['val_avg_f1']:.4f} fell below the floor {ctx.f1_floor:.4f} (infeasible)"
        return None

    return below_floor


def _step_report(report: Callable[[dict[str, Any]], None], every_s: float) -> Callable[[dict[str, float]], None]:
    """Per-step progress to the scheduler, at most every ``every_s`` seconds: a Tune report waits
    for the driver to take it, a round trip a fast pruning step should not pay each time."""
    throttle = Throttle(every_s)

    def on_step(row: dict[str, float]) -> None:
        if not throttle.due():
            return
        # progress only: other keys than the objectives, so that an interrupted trial's last
        # report can never be mistaken for its final objectives
        report(
            {
                "pruning_step": int(row["step"]),
                "ratio": row["ratio"],
                "step_val_f1": row.get("val_avg_f1", math.nan),
                "step_val_eopp1": row.get("val_eopp1", math.nan),
                "final": False,
            }
        )

    return on_step


def _record(settings: TrialSettings, rec: MethodRecord, floor: float) -> TrialRecord:
    val, test = rec.metrics["val"], rec.metrics["test"]
    delta = rec.delta("val", "eopp1") or {"verdict": "inside sampling noise"}
    f1 = float(val["avg"]["f1"])
    out = rec.output
    return TrialRecord(
        number=settings.number,
        beta=settings.beta,
        step_ratio=settings.step,
        final_ratio=settings.final_ratio,
        val_avg_f1=f1,
        val_eopp1=float(val["eopp1"]),
        test_avg_f1=float(test["avg"]["f1"]),
        test_eopp1=float(test["eopp1"]),
        achieved_ratio=rec.achieved_ratio,
        feasible=is_feasible(f1, floor, aborted=out.aborted, collapsed=rec.collapsed),
        aborted=out.aborted,
        reached_target=out.stop_kind == "target",
        collapsed=rec.collapsed,
        stop_reason=out.stop_reason or "",
        eopp1_change_vs_vanilla="collapsed" if rec.collapsed else delta["verdict"],
        run_id=rec.run_id,
        model_id=rec.model_id,
        model_uri=rec.model_uri,
        model_bytes=rec.model_bytes,
        collapse_reason=rec.collapse_reason,
    )


def _times(**unix: float | None) -> dict[str, float] | None:
    return {f"timing/{k}_unix": v for k, v in unix.items() if v is not None} or None


def run_trial(
    settings: TrialSettings,
    ctx: TrialContext,
    *,
    tracker: Tracker | None = None,
    report: Callable[[dict[str, Any]], None] | None = None,
    curvature: CurvatureBackend | None = None,
    tags: dict[str, str] | None = None,
    device: str = "cpu",
    entered: float | None = None,
    worker: tuple[float | None, float | None] = (None, None),
) -> TrialRecord:
    """FairPrune with ``settings`` from the shared context (step-0 curvature and the vanilla
    reference included), stopped early once validation F1 falls below the floor (the trial is
    infeasible then) or, with ``stop_eopp1``, once the fairness target is met (a success).
    ``report`` receives progress dicts (per pruning step, at most every ``ctx.progress_every_s``
    seconds) and then the final one, while the trial's run is open.
    ``entered`` (unix time the trial process started the trial) is logged as ``timing/entered_unix``,
    ``worker``: when its worker began and ended importing the trial's modules ahead (None: it did
    not), as ``timing/worker_started_unix`` and ``timing/worker_preloaded_unix``."""
    report = report or (lambda _: None)
    experiment = Experiment(
        ctx.problem,
        curvature=curvature,
        tracker=tracker or NullTracker(),
        n_boot=ctx.n_boot,
        f1_floor=ctx.f1_floor_rel,
        log=None,
        device=device,
        reference=ctx.reference,
        progress_every_s=ctx.progress_every_s,
    )
    method = FairPrune(
        beta=settings.beta, step_ratio=settings.step, final_ratio=settings.final_ratio, stop_eopp1=ctx.stop_eopp1
    )
    p = ctx.problem
    result: list[TrialRecord] = []

    def finish(rec: MethodRecord) -> None:
        trial = _record(settings, rec, ctx.f1_floor)
        experiment.tracker.set_tags(
            {
                "feasible": str(trial.feasible).lower(),
                "aborted": str(trial.aborted).lower(),
                "reached_target": str(trial.reached_target).lower(),
                "collapsed": str(trial.collapsed).lower(),
                "stop_reason": trial.stop_reason,
                "pareto_optimal": "false",
                "eopp1_change_vs_vanilla": trial.eopp1_change_vs_vanilla,
            }
        )
        # reported while the run is still open: if the sweep is interrupted after this, the
        # resumed sweep finds the run RUNNING but the trial complete, and marks the run FINISHED
        report({**trial.final_report(), "constraint": [ctx.f1_floor - trial.val_avg_f1]})
        result.append(trial)

    experiment.run_method(
        method,
        run_name=f"trial-{settings.number:03d}",
        tags={"sweep_id": ctx.sweep_id, "optuna_trial": str(settings.number), "role": "trial", **(tags or {})},
        params={
            "step_ratio_suggested": settings.step_ratio,
            "estimator": p.curvature.estimator,
        },
        # unix times the trial's code and its worker's preloading started (benchmarks/sweep_overhead.py)
        metrics=_times(entered=entered, worker_started=worker[0], worker_preloaded=worker[1]),
        finish=finish,
        initial_curvature=ctx.initial,
        stop_when=_floor_rule(ctx),
        on_step=_step_report(report, ctx.progress_every_s),
    )
    return result[0]
