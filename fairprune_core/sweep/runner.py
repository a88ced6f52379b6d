"""Run (or resume) a sweep: the one function that ties the sweep's modules together.

Layout of one sweep (``<storage>/<name>/``): ``sweep.json`` (:class:`~.state.SweepState`),
``optuna.journal`` (the study), ``initial_curvature.pt`` (the unpruned model's per-group
curvature, shared by every trial), ``tune/`` (Ray Tune results), the front's figures.

Resuming continues the same study and the same parent run: finished trials are kept and never
re-run; a trial that was running when the sweep stopped runs again from scratch (its half-logged
run is marked KILLED, so nothing is logged twice).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from ..checkpoint import Checkpoint
from ..comparison import refuse_a_chance_model, warn_if_near_chance
from ..config import SweepConfig
from ..curvature.hessian import DiagSums
from ..datasets import DermDataset
from ..experiment import Experiment, Problem, build_problem, training_setup
from ..methods import make_method, method_from_config
from ..throttle import throttled
from ..tracking import MlflowTracker, Tracker, TrackingError
from ..tracking.mlflow_store import resolve_tracking_uri, store_failure
from .front import front_of, front_picks, front_summary, front_tags, trials_frame
from .lock import sweep_lock
from .state import SweepState
from .study import SweepStudy
from .trial import TrialContext

__all__ = ["SweepOutcome", "run_sweep"]


@dataclass
class SweepOutcome:
    directory: Path
    parent_run_id: str
    experiment_id: str
    tracking_uri: str
    front: pd.DataFrame
    trials: pd.DataFrame
    baselines: dict[str, dict[str, float]]  # method -> flat val/test metrics
    interrupted: bool
    wall_s: float
    registry: str = ""  # the registered model holding the front's models
    aliases: dict[str, int] = field(default_factory=dict)  # registry alias -> trial number
    knee_pickled: bool = True  # the @knee model has MLflow's PyTorch flavour (not --safetensors-only)
    shortfall: str = ""  # why fewer trials completed than asked for ("" when all did)


def _check_start(
    cfg: SweepConfig, dataset: DermDataset, checkpoint: Checkpoint, resume: bool
) -> tuple[SweepState | None, dict[str, DiagSums] | None]:
    """The stored state when resuming, and its step-0 curvature if saved (checked before Ray or any
    run changes; read once); clear errors for a sweep that exists or does not."""
    exists = SweepState.exists(cfg.directory)
    if exists and not resume:
        raise FileExistsError(
            f"sweep {cfg.name!r} already exists in {cfg.directory}; pass --resume to continue it "
            f"or --name to start another"
        )
    if not resume:
        return None, None
    state = SweepState.load(cfg.directory)
    if state.manifest_fingerprint != dataset.manifest_fingerprint:
        raise ValueError(f"sweep {cfg.name!r} was run on another split of the data; resume it with the same data")
    path = cfg.directory / "initial_curvature.pt"
    return state, (load_initial_curvature(path, checkpoint.model) if path.is_file() else None)


def _connect(cfg: SweepConfig, dataset: DermDataset, state: SweepState | None) -> tuple[SweepConfig, MlflowTracker]:
    """Ray and the tracking store, checked; the config with its automatic GPU count resolved."""
    from ..curvature.distributed import auto_gpus_per_worker, check_resources, cluster_node_count, ensure_ray

    # a resumed sweep keeps logging where it started, wherever it is resumed from
    uri = state.tracking_uri if state is not None and not cfg.tracking_uri else cfg.tracking_uri
    MlflowTracker.check(uri)  # a bad or unreachable store fails before Ray starts
    if state is not None:  # ... and so does a store that is not the sweep's
        MlflowTracker(resolve_tracking_uri(uri), state.experiment_id).check_run(state.parent_run_id, state.tracking_uri)
    ensure_ray(cfg.address, preload=_preload(cfg))
    if cfg.gpus_per_worker is None:
        cfg = replace(cfg, gpus_per_worker=auto_gpus_per_worker())
    tracker = MlflowTracker.connect(
        uri,
        cfg.experiment or f"fairprune-{dataset.name}",
        multi_node=cluster_node_count() > 1,
        pickle_models=not cfg.safetensors_only,
    )
    if cfg.workers_per_trial:
        check_resources(cfg.workers_per_trial, cfg.cpus_per_worker, cfg.gpus_per_worker)
    return cfg, tracker


PRELOAD_AT_MOST = 4  # a private Ray starts one idle worker per CPU: preload them only on a few CPUs


def _preload(cfg: SweepConfig) -> tuple[str, ...]:
    """What the idle workers of a private local Ray import while the driver runs the preamble
    (:mod:`.warm`): the trial slots' first trials then start in those warm workers. Only without
    curvature workers (a pool's actors would import MLflow and Ray Tune for nothing) and when Ray
    starts few idle workers (one per CPU; ~0.7 GB resident each once they import torch and MLflow)."""
    cpus = os.cpu_count() or 1
    if cfg.workers_per_trial or cpus > max(PRELOAD_AT_MOST, 2 * cfg.concurrency):
        return ()
    return ("fairprune_core.sweep.warm",)


def _log_setup(
    tracker: Tracker, cfg: SweepConfig, dataset: DermDataset, checkpoint: Checkpoint, problem: Problem
) -> None:
    flat_cfg = pd.json_normalize(cfg.to_dict(), sep=".").iloc[0].to_dict()
    tracker.log_params(flat_cfg)
    tracker.log_params(
        {
            "dataset": dataset.name,
            "privileged_group": dataset.group_names[problem.privileged],
            "model_config": json.dumps(checkpoint.model_config.to_dict()),
        }
    )
    tracker.log_dict(cfg.to_dict(), "config.json")
    tracker.log_dict(dataset.summary(), "dataset_summary.json")
    tracker.log_file(dataset.save_manifest(cfg.directory / "split_manifest.csv"))
    if checkpoint.meta.get("path"):
        tracker.log_file(checkpoint.meta["path"], "pretrained")


def _baseline(cfg: SweepConfig, name: str) -> Any:
    if name == "obd":
        return make_method("obd", step_ratio=cfg.obd_step, final_ratio=cfg.obd_final)
    return method_from_config(name, cfg.prune)


def _run_baselines(cfg: SweepConfig, experiment: Experiment, sweep_id: str, log: Callable[[str], None]) -> dict:
    """Each requested baseline, a child run tagged role=baseline; returns their flat metrics."""
    out = {}
    for method in (_baseline(cfg, name) for name in cfg.baselines):
        extra = f" (step {cfg.obd_step:.0%} up to {cfg.obd_final:.0%})" if method.name == "obd" else ""
        log(f"baseline: {method.label()}{extra}")
        record = experiment.run_method(method, run_name=method.name, tags={"sweep_id": sweep_id, "role": "baseline"})
        if method.name == "vanilla":
            warn_if_near_chance(record, log)
        out[method.name] = record.flat()
    return out


CURVATURE_SIDES = ("unprivileged", "privileged")


def load_initial_curvature(path: Path, model: torch.nn.Module) -> dict[str, DiagSums]:
    """The saved step-0 curvature, checked against ``model`` (each side a sum per parameter of the
    parameter's shape and a positive count): a damaged file is one line naming it, never unpickled."""
    fix = f"delete {path} and resume: the sweep computes it again (the same for every trial)"
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)  # tensors and ints: nothing unpickled
    except Exception as exc:  # UnpicklingError (objects beyond tensors), a truncated file, ...
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:120]
        raise ValueError(f"the sweep's curvature cache {path} cannot be read ({reason}); {fix}") from None
    shapes = {n: tuple(p.shape) for n, p in model.named_parameters()}
    if not isinstance(saved, dict) or set(saved) != set(CURVATURE_SIDES):
        raise ValueError(f"the sweep's curvature cache {path} is not one FairPrune wrote; {fix}")
    for side, entry in saved.items():
        sums, count = (entry.get("sums"), entry.get("count")) if isinstance(entry, dict) else (None, None)
        if not (isinstance(sums, dict) and isinstance(count, int) and count > 0):
            raise ValueError(f"the sweep's curvature cache {path} ({side}) is not one FairPrune wrote; {fix}")
        bad = [
            n
            for n, t in sums.items()
            if n not in shapes or not isinstance(t, torch.Tensor) or tuple(t.shape) != shapes[n]
        ]
        if bad or set(sums) != set(shapes):
            which = ", ".join(bad[:3]) or "missing parameters"
            raise ValueError(f"the sweep's curvature cache {path} does not fit the model ({side}: {which}); {fix}")
    return {k: DiagSums(v["sums"], v["count"]) for k, v in saved.items()}


def initial_curvature(cfg: SweepConfig, experiment: Experiment, log: Callable[[str], None]) -> dict[str, DiagSums]:
    """The unpruned model's per-group curvature: the same for every trial, so computed once."""
    path = cfg.directory / "initial_curvature.pt"
    if path.is_file():
        return load_initial_curvature(path, experiment.model)
    t0 = time.perf_counter()
    data = experiment.problem.data
    sums = experiment.curvature.compute(
        experiment.model, [("unprivileged", data.unprivileged), ("privileged", data.privileged)], 0
    )
    # on the CPU: shipped to every trial process, whatever device each one computes on
    sums = {k: DiagSums({n: t.cpu() for n, t in v.sums.items()}, v.count) for k, v in sums.items()}
    torch.save({k: {"sums": v.sums, "count": v.count} for k, v in sums.items()}, path)
    log(f"shared step-0 curvature of the unpruned model computed once ({time.perf_counter() - t0:.1f}s)")
    return sums


def _open_study(
    cfg: SweepConfig, state: SweepState, tracker: Tracker, new: bool, log: Callable[[str], None]
) -> SweepStudy:
    study = SweepStudy(
        cfg.directory, cfg.name, space=cfg.space, sampler=cfg.sampler, seed=cfg.seed, num_trials=cfg.num_trials, log=log
    )
    # the paper's settings first in a study without trials: a new sweep, or one whose first
    # invocation stopped before its trials (its state saved after the baselines, its study not)
    if cfg.paper_settings_first and study.is_empty():
        study.enqueue_paper_settings()
    running = study.running_numbers()
    if running:  # the driver stopped while they ran: finished ones stay complete, the rest run again
        recovered = tracker.completed_trials(state.sweep_id, running)
        for number, result in sorted(recovered.items()):
            study.recover(number, floor=state.f1_floor_abs, **result)
        if recovered:
            log(
                f"trial(s) {', '.join(map(str, sorted(recovered)))} finished before the sweep stopped (their MLflow "
                f"runs hold the results): kept as complete"
            )
    if not new:
        study.requeue_errored()
    study.requeue_interrupted()
    if not new:
        finished, killed = tracker.close_unfinished(
            state.sweep_id, study.completed_run_ids(), study.interrupted_numbers()
        )
        if finished or killed:
            log(
                f"runs left open by the interrupted sweep: {finished} of completed trials marked FINISHED, "
                f"{killed} of unfinished trials marked KILLED (their trials are queued above)"
            )
    return study


def _close_after_trials(
    cfg: SweepConfig, state: SweepState, study: SweepStudy, tracker: Tracker, log: Callable[[str], None]
) -> str:
    """Once no trial runs: runs their dead attempts left open are closed, and a sweep short of the
    trials asked for says why. Returns that note ("" when every trial asked for completed)."""
    tracker.close_unfinished(state.sweep_id, study.completed_run_ids(), study.interrupted_numbers())
    failed = study.failed_count()
    if not failed:
        return ""
    retries = f"{cfg.trial_retries} retr{'y' if cfg.trial_retries == 1 else 'ies'}"
    note = (
        f"{failed} trial(s) failed with an error after {retries} "
        f"each (the Tune log under {cfg.directory / 'tune'} has their tracebacks): {study.completed_count()} of "
        f"{cfg.num_trials} trials completed. `python sweeps/pareto.py --resume --name {cfg.name}` runs the failed "
        f"ones again"
    )
    log(note)
    return note


def _trial_context(
    cfg: SweepConfig, state: SweepState, experiment: Experiment, initial: dict[str, DiagSums]
) -> TrialContext:
    return TrialContext(
        problem=experiment.problem,
        initial=initial,
        reference=experiment.reference(),
        f1_floor=state.f1_floor_abs,
        f1_floor_rel=cfg.f1_floor,
        max_steps=cfg.space.max_steps,
        abort_infeasible=cfg.abort_infeasible,
        n_boot=cfg.n_boot,
        stop_eopp1=cfg.prune.stop_eopp1,
        sweep_id=state.sweep_id,
        tracking_uri=state.tracking_uri,
        experiment_id=state.experiment_id,
        parent_run_id=state.parent_run_id,
        pickle_models=not cfg.safetensors_only,
        workers=cfg.workers_per_trial,
        cpus_per_trial=cfg.cpus_per_trial,
        cpus_per_worker=cfg.cpus_per_worker,
        gpus_per_worker=cfg.gpus_per_worker,
        gpus_per_trial=cfg.gpus_per_trial,
    )


def _publish_front(
    tracker: Tracker, state: SweepState, directory: Path, registry: str
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, int]]:
    """Recompute the front from every finished trial run; tag runs and models; register the
    front's models under ``registry`` with the picks' aliases; log tables and figures. Returns
    (trials, front, alias -> trial number)."""
    from ..plots import front_figure, front_html

    trials = trials_frame(tracker.finished_runs(state.sweep_id, method="fairprune"), state.f1_floor_abs)
    if trials.empty:
        return trials, trials, {}
    model_ids = dict(zip(trials["run_id"], trials.get("model_id", pd.Series(None, index=trials.index)), strict=True))
    tracker.set_front_tags(front_tags(trials), model_ids)
    front = front_of(trials)
    picks = front_picks(front)
    aliases = _register(tracker, registry, state, front, picks)
    tracker.log_frame(front, "pareto_front")
    tracker.log_frame(trials, "trials")
    for path in front_figure(trials, state.baselines, state.f1_floor_abs, directory / "pareto_front"):
        tracker.log_file(path)
    link = _run_link(state)
    tracker.log_file(front_html(trials, state.baselines, state.f1_floor_abs, directory / "pareto_front.html", link))
    tracker.log_metrics(front_summary(trials, state.f1_floor_abs))
    return trials, front, aliases


def _register(
    tracker: Tracker, registry: str, state: SweepState, front: pd.DataFrame, picks: dict[str, pd.Series]
) -> dict[str, int]:
    """The front's models as versions of ``registry``, the picks as its aliases (alias -> trial)."""
    if "model_id" not in front or front["model_id"].isna().any():
        return {}
    members = {}
    for _, r in front.iterrows():
        why = [alias for alias, p in picks.items() if p["trial"] == r["trial"]]
        members[r["model_id"]] = {
            "sweep_id": state.sweep_id,
            "trial": f"trial-{int(r['trial']):03d}",
            "val_avg_f1": f"{r['val_avg_f1']:.4f}",
            "val_eopp1": f"{r['val_eopp1']:.4f}",
            "predicts_like_vanilla": str(r.get("predicts_like_vanilla", "false")),
            "description": (
                f"trial-{int(r['trial']):03d} of sweep {state.sweep_id}: beta {r['beta']:.3f}, "
                f"{r['achieved_ratio']:.1%} pruned; val F1 {r['val_avg_f1']:.4f} "
                f"[{r['val_avg_f1_ci_low']:.3f}, {r['val_avg_f1_ci_high']:.3f}], val Eopp1 {r['val_eopp1']:.4f} "
                f"[{r['val_eopp1_ci_low']:.3f}, {r['val_eopp1_ci_high']:.3f}]; Eopp1 change vs vanilla: "
                f"{r.get('eopp1_change_vs_vanilla', '')}" + (f"; alias {', '.join(why)}" if why else "")
            ),
        }
    tracker.register_front(registry, members, {alias: p["model_id"] for alias, p in picks.items()})
    return {alias: int(p["trial"]) for alias, p in picks.items()}


def _run_link(state: SweepState) -> Callable[[str], str]:
    """run id -> its page in the MLflow UI (the tracking server, else `mlflow ui`'s default address)."""
    uri = state.tracking_uri
    base = uri.rstrip("/") if uri.startswith(("http://", "https://")) else "http://127.0.0.1:5000"
    return lambda run_id: f"{base}/#/experiments/{state.experiment_id}/runs/{run_id}"


def _new_state(
    cfg: SweepConfig,
    dataset: DermDataset,
    checkpoint: Checkpoint,
    tracker: MlflowTracker,
    problem: Problem,
    floor: float,
) -> SweepState:
    return SweepState(
        sweep_id=f"{cfg.name}-{int(time.time())}",
        parent_run_id="",
        experiment_id=tracker.experiment_id,
        tracking_uri=tracker.uri,
        privileged=problem.privileged,
        f1_floor_abs=floor,
        manifest_fingerprint=dataset.manifest_fingerprint,
        config=cfg.to_dict(),
        dataset_spec=dataset.spec(),
        checkpoint=str(Path(checkpoint.meta["path"]).resolve()),
    )


def run_sweep(
    cfg: SweepConfig,
    dataset: DermDataset,
    checkpoint: Checkpoint,
    *,
    resume: bool = False,
    flags: dict[str, Any] | None = None,
    log: Callable[[str], None] = print,
) -> SweepOutcome:
    """Run (or resume) a sweep; returns the Pareto front and every finished trial.

    ``flags`` (the command line's values) are stored with a new sweep, so that a resume can
    tell a repetition of the same command from a change of study.
    """
    t_start = time.monotonic()
    checkpoint.check_dataset(dataset)
    stored, initial = _check_start(cfg, dataset, checkpoint, resume)
    with sweep_lock(cfg.directory, log):
        try:
            return _run_locked(cfg, dataset, checkpoint, stored, initial, flags, log, t_start)
        except Exception as exc:
            reason = store_failure(exc)
            if reason is None:
                raise
            raise TrackingError(_store_failed(cfg, reason)) from exc


def _store_failed(cfg: SweepConfig, reason: str) -> str:
    """What a tracking store that failed under the sweep (a full disk, a server away) means."""
    where = cfg.tracking_uri or "the MLflow store"
    if SweepState.exists(cfg.directory):
        resume = f"python sweeps/pareto.py --resume --name {cfg.name}"
        then = f"then `{resume}` finishes the sweep (finished trials are kept)"
    else:
        then = "then run the same command again (nothing of this sweep was saved yet)"
    return f"the MLflow tracking store {where} failed ({reason}). Free space or restart the tracking server, {then}"


PROGRESS_EVERY_S = 20.0  # the driver's own long work (baselines, step-0 curvature): one line at most this often


def driver_experiment(
    cfg: SweepConfig, dataset: DermDataset, checkpoint: Checkpoint, problem: Problem, log: Callable[[str], None]
) -> Experiment:
    """The driver's experiment (baselines, the shared step-0 curvature): its methods' and curvature's
    progress reaches ``log`` at most every ``PROGRESS_EVERY_S`` seconds, so that hours of baseline
    training on real data show they are moving while the demo's seconds print nothing."""
    return Experiment(
        problem,
        n_boot=cfg.n_boot,
        f1_floor=cfg.f1_floor,
        training=training_setup(dataset, checkpoint),
        log=throttled(log, PROGRESS_EVERY_S),
        device=cfg.device,
    )


def _run_locked(
    cfg: SweepConfig,
    dataset: DermDataset,
    checkpoint: Checkpoint,
    stored: SweepState | None,
    initial: dict[str, DiagSums] | None,
    flags: dict[str, Any] | None,
    log: Callable[[str], None],
    t_start: float,
) -> SweepOutcome:
    from .tune import run_trials

    problem = build_problem(dataset, checkpoint, cfg.prune, privileged=stored.privileged if stored else None, log=log)
    experiment = driver_experiment(cfg, dataset, checkpoint, problem, log)
    if stored is None and not cfg.allow_chance_model:
        refuse_a_chance_model(experiment, "a sweep of it")  # before Ray, the store, or any run
    cfg, tracker = _connect(cfg, dataset, stored)
    experiment.tracker = tracker  # connected after the check: a refused sweep has started nothing
    experiment_name = cfg.experiment or f"fairprune-{dataset.name}"
    log(f"sweep {cfg.name}: MLflow {tracker.uri}, experiment {experiment_name} ({tracker.experiment_id})")
    floor = cfg.f1_floor * experiment.vanilla_f1("val")
    state = stored or _new_state(cfg, dataset, checkpoint, tracker, problem, floor)
    state.tracking_uri = tracker.uri  # where the trials log (a resume may reach the same store anew)
    parent_tags = {"sweep_id": state.sweep_id, "method": "sweep", "role": "parent"}
    with tracker.run(cfg.name, tags=parent_tags, run_id=stored.parent_run_id if stored else None) as parent:
        if stored is None:
            state.parent_run_id, state.flags = parent, dict(flags or {})
            _log_setup(tracker, cfg, dataset, checkpoint, problem)
            tracker.log_params({"f1_floor_abs": floor})
            state.baselines = _run_baselines(cfg, experiment, state.sweep_id, log)
            state.save(cfg.directory)
        initial = initial or initial_curvature(cfg, experiment, log)
        study = _open_study(cfg, state, tracker, new=stored is None, log=log)
        already = study.finished_count()
        interrupted, shortfall = False, ""
        if cfg.num_trials > already:
            state.invocations += 1
            state.config = cfg.to_dict()
            state.save(cfg.directory)
            log(
                f"{already} trials finished, running {cfg.num_trials - already} more ({cfg.sampler} sampler, "
                f"{cfg.concurrency} at a time, {cfg.workers_per_trial} curvature workers per trial)"
            )
            ctx = _trial_context(cfg, state, experiment, initial)
            # when the trials could begin (benchmarks/sweep_overhead.py: the slots' time starts here)
            tracker.log_metrics({"timing/trials_begin_unix": time.time()}, step=state.invocations)
            interrupted = run_trials(cfg, ctx, study, already=already, invocation=state.invocations, log=log)
        shortfall = _close_after_trials(cfg, state, study, tracker, log)
        trials, front, aliases = _publish_front(tracker, state, cfg.directory, experiment_name)
    if interrupted:
        tracker.mark_killed(state.parent_run_id)  # visibly unfinished until the sweep is resumed
    return SweepOutcome(
        cfg.directory,
        state.parent_run_id,
        state.experiment_id,
        state.tracking_uri,
        front,
        trials,
        state.baselines,
        interrupted,
        time.monotonic() - t_start,
        experiment_name,
        aliases,
        _knee_pickled(tracker, front, aliases),
        shortfall,
    )


def _knee_pickled(tracker: MlflowTracker, front: pd.DataFrame, aliases: dict[str, int]) -> bool:
    """Whether the @knee model loads with MLflow's PyTorch loader: asked of the model itself, since
    a resumed sweep may log with and without ``--safetensors-only`` (False when there is no knee)."""
    if "knee" not in aliases:
        return False
    row = front[front["trial"] == aliases["knee"]].iloc[0]
    return tracker.has_pytorch_flavour(str(row["model_id"]))
