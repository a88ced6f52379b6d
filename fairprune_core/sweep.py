"""The Pareto sweep: Optuna multi-objective search of FairPrune settings on Ray Tune, in MLflow.

Searches beta, the per-step prune fraction and the final ratio for the Pareto front of
validation F1 (maximised) vs validation Eopp1 (minimised). Test metrics are logged beside them
and never used for selection. A trial whose validation F1 falls below the accuracy floor is
infeasible: Optuna's ``constraints_func`` sees it, and it is never tagged Pareto-optimal.

Layout of one sweep (``<storage>/<name>/``): ``sweep.json`` (configuration, MLflow ids, vanilla
metrics), ``optuna.journal`` (the Optuna study, persistent), ``initial_curvature.pt`` (the
unpruned model's per-group curvature, shared by every trial), ``tune/`` (Ray Tune results).

Resuming (``resume=True``) continues the same Optuna study and MLflow parent run: finished trials
are kept and never re-run; a trial that was running when the sweep stopped is run again from
scratch (its half-logged MLflow run is marked KILLED, so nothing is logged twice).
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch

from . import tracking
from .checkpoint import Checkpoint
from .datasets import DermDataset, SplitArrays
from .evaluation import evaluate, predict
from .hessian import CurvatureConfig, DiagSums
from .metrics import flatten_metrics, paired_bootstrap
from .model import ModelConfig, build_model
from .pareto import hypervolume, pareto_front
from .pipeline import CurvatureData, PruneConfig, curvature_data, resolve_privileged
from .pruning import GroupSampler, LocalCurvature, fairprune, obd

__all__ = [
    "PAPER_SETTINGS",
    "SAMPLERS",
    "SearchSpace",
    "SweepConfig",
    "SweepOutcome",
    "make_sampler",
    "run_sweep",
]

SAMPLERS = ("nsga2", "tpe", "gp", "random")
Sampler = Literal["nsga2", "tpe", "gp", "random"]
OBJECTIVES = ("val_avg_f1", "val_eopp1")
# The paper's own settings (Sec. 4): Fitzpatrick17k and ISIC 2019. Evaluated first.
PAPER_SETTINGS: tuple[dict[str, float], ...] = (
    {"beta": 0.33, "step_ratio": 0.05, "final_ratio": 0.35},
    {"beta": 0.2, "step_ratio": 0.1, "final_ratio": 0.5},
)


@dataclass(frozen=True)
class SearchSpace:
    """Ranges searched. A suggested step larger than the final ratio is run with step = final."""

    beta: tuple[float, float] = (0.0, 1.0)
    step_ratio: tuple[float, float] = (0.01, 0.2)
    final_ratio: tuple[float, float] = (0.05, 0.8)

    def __post_init__(self) -> None:
        for name, (lo, hi) in (("beta", self.beta), ("step_ratio", self.step_ratio), ("final_ratio", self.final_ratio)):
            if not lo < hi:
                raise ValueError(f"{name} range must have low < high, got [{lo}, {hi}]")
        if self.beta[0] < 0:
            raise ValueError(f"beta must be >= 0, got range {self.beta}")
        for name, (lo, hi) in (("step_ratio", self.step_ratio), ("final_ratio", self.final_ratio)):
            if not (lo > 0 and hi < 1):
                raise ValueError(f"{name} range must lie inside (0, 1), got [{lo}, {hi}]")

    def contains(self, point: dict[str, float]) -> bool:
        return all(lo <= point[k] <= hi for k, (lo, hi) in asdict(self).items())


@dataclass(frozen=True)
class SweepConfig:
    """One sweep. ``prune`` supplies the curvature settings (its beta/step/final are unused)."""

    name: str
    storage: Path = Path("fairprune_runs/sweeps")
    num_trials: int = 30  # total trials in the study, the paper's two settings included
    sampler: Sampler = "gp"  # chosen by benchmarks/sampler_hypervolume.py (hypervolume after 30 trials)
    seed: int = 0
    space: SearchSpace = field(default_factory=SearchSpace)
    paper_settings_first: bool = True
    prune: PruneConfig = field(default_factory=PruneConfig)
    f1_floor: float = 0.9  # feasible: val avg F1 >= f1_floor x vanilla val avg F1
    abort_infeasible: bool = True  # stop a trial's pruning once val F1 drops below the floor
    obd_step: float = 0.05
    obd_final: float = 0.35
    concurrency: int = 2  # trials at a time
    workers_per_trial: int = 0  # Ray curvature workers per trial (0: in the trial process)
    cpus_per_trial: float = 1
    cpus_per_worker: float = 1
    gpus_per_worker: float = 0
    n_boot: int = 500  # bootstrap resamples for intervals
    tracking_uri: str | None = None  # default: MLflow's own (sqlite:///<cwd>/mlflow.db)
    experiment: str | None = None  # default: fairprune-<dataset>
    address: str | None = None  # Ray address (default: $RAY_ADDRESS, else local)

    def __post_init__(self) -> None:
        if self.sampler not in SAMPLERS:
            raise ValueError(f"unknown sampler {self.sampler!r}; choose one of {', '.join(SAMPLERS)}")
        if self.num_trials < 1:
            raise ValueError(f"num_trials must be >= 1, got {self.num_trials}")
        if not 0 <= self.f1_floor <= 1:
            raise ValueError(f"f1_floor is relative to the vanilla F1 and must be in [0, 1], got {self.f1_floor}")
        if self.concurrency < 1 or self.workers_per_trial < 0:
            raise ValueError("concurrency must be >= 1 and workers_per_trial >= 0")

    @property
    def directory(self) -> Path:
        return self.storage / self.name

    @classmethod
    def from_dict(cls, d: dict[str, Any], **overrides: Any) -> SweepConfig:
        """Rebuild a config saved with :meth:`to_dict` (``None`` overrides are ignored)."""
        d = dict(d)
        d["storage"] = Path(d["storage"])
        d["space"] = SearchSpace(**{k: tuple(v) for k, v in d["space"].items()})
        d["prune"] = PruneConfig(**d["prune"])
        d.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["storage"] = str(self.storage)
        return d


# -- what trials receive -------------------------------------------------------------------
@dataclass
class TrialContext:
    """Everything a trial needs, shipped once through the object store (tune.with_parameters)."""

    model_config: dict
    state: dict[str, np.ndarray]
    num_classes: int
    group_names: list[str]
    privileged: int
    unprivileged: GroupSampler
    privileged_data: GroupSampler
    val: SplitArrays
    test: SplitArrays
    vanilla_val_pred: np.ndarray
    initial: dict[str, DiagSums]
    curvature: CurvatureConfig
    f1_floor: float  # absolute
    abort_infeasible: bool
    n_boot: int
    tracking_uri: str
    experiment_id: str
    parent_run_id: str
    sweep_id: str
    workers: int
    cpus_per_trial: float
    cpus_per_worker: float
    gpus_per_worker: float
    stop_eopp1: float | None = None  # the paper's "until the target fairness metric is achieved"


def _evaluate_full(model: torch.nn.Module, data: SplitArrays, num_classes: int, n_boot: int, prefix: str) -> dict:
    m = evaluate(model, data, num_classes=num_classes, intervals=True, n_boot=n_boot)
    flat = flatten_metrics(m, prefix=prefix)
    for key, (lo, hi) in m["intervals"].items():
        name = key if key[0] not in "01" else f"g{key}"
        flat[f"{prefix}{name}_ci_low"], flat[f"{prefix}{name}_ci_high"] = lo, hi
    return {"flat": flat, "predictions": m["predictions"]}


def _model_bytes(model_info: Any) -> int:
    try:
        return tracking.logged_model_bytes(model_info.model_id)
    except Exception:  # an artifact store that cannot list sizes: report unknown, do not fail the trial
        return -1


def prune_setting(
    ctx: TrialContext,
    beta: float,
    step_ratio: float,
    final_ratio: float,
    *,
    backend: Any = None,
    on_step: Callable[[dict[str, float]], None] | None = None,
) -> Any:
    """What every trial computes: FairPrune from the shared context (step-0 curvature included),
    stopped early once validation F1 falls below the floor (the trial is infeasible then)."""

    def below_floor(row: dict[str, float]) -> str | None:
        if ctx.abort_infeasible and row.get("val_avg_f1", 1.0) < ctx.f1_floor:
            return f"val F1 {row['val_avg_f1']:.4f} fell below the floor {ctx.f1_floor:.4f} (infeasible)"
        return None

    model = build_model(ModelConfig(**ctx.model_config))
    model.load_state_dict({k: torch.from_numpy(v) for k, v in ctx.state.items()})
    model.eval()
    return fairprune(
        model,
        ctx.unprivileged,
        ctx.privileged_data,
        beta=beta,
        step_ratio=min(step_ratio, final_ratio),
        final_ratio=final_ratio,
        curvature=backend or LocalCurvature(ctx.curvature),
        validation=ctx.val,
        num_classes=ctx.num_classes,
        initial_curvature=ctx.initial,
        stop_at={"eopp1": ctx.stop_eopp1} if ctx.stop_eopp1 is not None else None,
        stop_when=below_floor,
        on_step=on_step,
    )


def make_trial_context(
    cfg: SweepConfig,
    dataset: DermDataset,
    checkpoint: Checkpoint,
    *,
    data: CurvatureData,
    initial: dict[str, DiagSums],
    f1_floor: float,
    vanilla_val_pred: np.ndarray,
    tracking_uri: str = "",
    experiment_id: str = "",
    parent_run_id: str = "",
    sweep_id: str = "",
) -> TrialContext:
    return TrialContext(
        model_config=checkpoint.model_config.to_dict(),
        state={k: v.numpy() for k, v in checkpoint.model.state_dict().items()},
        num_classes=dataset.num_classes,
        group_names=dataset.group_names,
        privileged=data.privileged_group,
        unprivileged=data.unprivileged,
        privileged_data=data.privileged,
        val=dataset.split("val"),
        test=dataset.split("test"),
        vanilla_val_pred=vanilla_val_pred,
        initial=initial,
        curvature=cfg.prune.curvature_config(),
        f1_floor=f1_floor,
        abort_infeasible=cfg.abort_infeasible,
        n_boot=cfg.n_boot,
        tracking_uri=tracking_uri,
        experiment_id=experiment_id,
        parent_run_id=parent_run_id,
        sweep_id=sweep_id,
        workers=cfg.workers_per_trial,
        cpus_per_trial=cfg.cpus_per_trial,
        cpus_per_worker=cfg.cpus_per_worker,
        gpus_per_worker=cfg.gpus_per_worker,
        stop_eopp1=cfg.prune.stop_eopp1,
    )


def fairprune_trial(config: dict[str, Any], ctx: TrialContext) -> None:
    """One Tune trial: FairPrune with the suggested settings, logged as an MLflow child run."""
    import mlflow
    from ray import tune

    torch.set_num_threads(max(1, int(ctx.cpus_per_trial)))
    beta = float(config["beta"])
    final = float(config["final_ratio"])
    suggested_step = float(config["step_ratio"])
    step = min(suggested_step, final)
    number = int(config.get("trial_number", -1))
    if ctx.workers:
        from .distributed import CurvaturePool

        backend: Any = CurvaturePool(
            ModelConfig(**ctx.model_config),
            ctx.curvature,
            num_workers=ctx.workers,
            cpus_per_worker=ctx.cpus_per_worker,
            gpus_per_worker=ctx.gpus_per_worker,
        )
    else:
        backend = LocalCurvature(ctx.curvature)

    tags = {"sweep_id": ctx.sweep_id, "method": "fairprune", "optuna_trial": str(number), "role": "trial"}
    try:
        with tracking.run(
            ctx.tracking_uri,
            ctx.experiment_id,
            run_name=f"trial-{number:03d}",
            parent_run_id=ctx.parent_run_id,
            tags=tags,
        ) as active:
            if ctx.workers:  # where this trial's curvature workers run (one per bundle of its placement group)
                mlflow.set_tag("curvature_nodes", ",".join(sorted(i["node_id"] for i in backend.worker_info)))
            mlflow.log_params(
                {
                    "beta": beta,
                    "step_ratio": step,
                    "final_ratio": final,
                    "step_ratio_suggested": suggested_step,
                    "estimator": ctx.curvature.estimator,
                    "privileged_group": ctx.group_names[ctx.privileged],
                }
            )

            def on_step(row: dict[str, float]) -> None:
                keep = {k: row[k] for k in ("ratio", "val_avg_f1", "val_eopp1", "val_eodd", "val_eopp0") if k in row}
                mlflow.log_metrics(keep, step=int(row["step"]))
                # progress only: other keys than the objectives, so that an interrupted trial's last
                # report can never be mistaken for its final objectives
                tune.report(
                    {
                        "pruning_step": int(row["step"]),
                        "ratio": row["ratio"],
                        "step_val_f1": row.get("val_avg_f1", math.nan),
                        "step_val_eopp1": row.get("val_eopp1", math.nan),
                        "final": False,
                    }
                )

            t0 = time.perf_counter()
            result = prune_setting(ctx, beta, step, final, backend=backend, on_step=on_step)
            seconds = time.perf_counter() - t0
            val = _evaluate_full(result.model, ctx.val, ctx.num_classes, ctx.n_boot, "val_")
            test = _evaluate_full(result.model, ctx.test, ctx.num_classes, ctx.n_boot, "test_")
            f1, eopp1 = val["flat"]["val_avg_f1"], val["flat"]["val_eopp1"]
            feasible = bool(f1 >= ctx.f1_floor) and not result.stopped_early
            delta = paired_bootstrap(
                ctx.val.labels,
                ctx.vanilla_val_pred,
                val["predictions"],
                ctx.val.groups,
                num_classes=ctx.num_classes,
                n_boot=ctx.n_boot,
            )["eopp1"]
            mlflow.log_metrics(
                {
                    **val["flat"],
                    **test["flat"],
                    "achieved_ratio": result.achieved_ratio,
                    "pruning_seconds": seconds,
                    "val_eopp1_delta_vs_vanilla": delta["delta"],
                    "val_eopp1_delta_ci_low": delta["low"],
                    "val_eopp1_delta_ci_high": delta["high"],
                }
            )
            info = tracking.log_pruned_model(result.model, result.masks, tags={**tags, "pareto_optimal": "false"})
            # the in-memory model's validation logits, to check that the logged model predicts the same
            tracking.log_array(predict(result.model, ctx.val.images), "predictions/val_logits.npy")
            model_bytes = _model_bytes(info)
            mlflow.log_metric("model_bytes", model_bytes)
            mlflow.set_tags(
                {
                    "feasible": str(feasible).lower(),
                    "aborted": str(result.stopped_early).lower(),
                    "stop_reason": result.config.get("stop_reason") or "",
                    "pareto_optimal": "false",
                    "model_id": info.model_id,
                    "model_uri": info.model_uri,
                    "eopp1_change_vs_vanilla": "significant" if delta["significant"] else "inside sampling noise",
                }
            )
            # reported while the run is still open: if the sweep is interrupted after this, the
            # resumed sweep finds the run RUNNING but the trial complete, and marks the run FINISHED
            tune.report(
                {
                    "val_avg_f1": f1,
                    "val_eopp1": eopp1,
                    "test_avg_f1": test["flat"]["test_avg_f1"],
                    "test_eopp1": test["flat"]["test_eopp1"],
                    "constraint": [ctx.f1_floor - f1],
                    "feasible": feasible,
                    "achieved_ratio": result.achieved_ratio,
                    "mlflow_run_id": active.info.run_id,
                    "trial_number": number,
                    "model_bytes": model_bytes,
                    "final": True,
                }
            )
    finally:
        if ctx.workers:
            backend.shutdown()


# -- Optuna --------------------------------------------------------------------------------
def _constraints(trial: Any) -> list[float]:
    """Optuna constraints_func: <= 0 is feasible; a trial without a value counts as infeasible."""
    return list(trial.user_attrs.get("constraint", [1.0]))


def make_sampler(kind: Sampler, *, seed: int, num_trials: int, constrained: bool = True) -> Any:
    """An Optuna sampler for the 2-objective search, with the F1-floor constraint where supported."""
    import optuna

    # Optuna >= 5 reads constraints that trials set (Trial.set_constraint); older needs constraints_func
    cons = _constraints if constrained and not hasattr(optuna.trial.Trial, "set_constraint") else None
    startup = max(4, min(10, num_trials // 3))
    if kind == "nsga2":
        return optuna.samplers.NSGAIISampler(
            seed=seed, population_size=max(4, min(20, num_trials // 4)), constraints_func=cons
        )
    if kind == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup, multivariate=True, constraints_func=cons)
    if kind == "gp":
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=startup, constraints_func=cons)
    if kind == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    raise ValueError(f"unknown sampler {kind!r}; choose one of {', '.join(SAMPLERS)}")


def _open_study(cfg: SweepConfig, *, new: bool, log: Callable[[str], None]) -> Any:
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend
    from optuna.trial import TrialState

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = JournalStorage(JournalFileBackend(str(cfg.directory / "optuna.journal")))
    study = optuna.create_study(
        storage=storage,
        study_name=cfg.name,
        directions=["maximize", "minimize"],
        load_if_exists=True,
        sampler=make_sampler(cfg.sampler, seed=cfg.seed, num_trials=cfg.num_trials),
    )
    if new and cfg.paper_settings_first:
        for point in PAPER_SETTINGS:
            if cfg.space.contains(point):
                study.enqueue_trial(point)
            else:
                log(f"note: the paper's setting {point} lies outside the search space; not enqueued")
    # trials an interrupted sweep left RUNNING (process gone) or PRUNED (stopped by Tune before
    # their final report; the sweep never prunes otherwise): queue their settings again, once
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.PRUNED)):
        if t.user_attrs.get("interrupted"):
            continue
        storage.set_trial_user_attr(t._trial_id, "interrupted", True)
        if t.state == TrialState.RUNNING:
            storage.set_trial_state_values(t._trial_id, state=TrialState.FAIL)
        study.enqueue_trial({k: t.params[k] for k in ("beta", "step_ratio", "final_ratio") if k in t.params})
        log(f"trial {t.number} was interrupted; its settings are queued to run again")
    return study, storage


def _completed_run_ids(study: Any) -> set[str]:
    from optuna.trial import TrialState

    return {
        t.user_attrs.get("mlflow_run_id", "") for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    }


def _finished_count(study: Any) -> int:
    from optuna.trial import TrialState

    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    # trials that errored used budget; interrupted ones are queued again and do not count
    failed = [
        t for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,)) if not t.user_attrs.get("interrupted")
    ]
    return len(done) + len(failed)


# -- the sweep -----------------------------------------------------------------------------
@dataclass
class SweepOutcome:
    directory: Path
    parent_run_id: str
    experiment_id: str
    tracking_uri: str
    front: pd.DataFrame
    trials: pd.DataFrame
    vanilla: dict[str, float]
    obd: dict[str, float]
    interrupted: bool
    wall_s: float


def _state_path(cfg: SweepConfig) -> Path:
    return cfg.directory / "sweep.json"


def _log_baseline(
    name: str,
    model: torch.nn.Module,
    masks: dict | None,
    dataset: DermDataset,
    ctx: dict,
    n_boot: int,
    history: list[dict] | None = None,
    params: dict | None = None,
) -> dict[str, float]:
    import mlflow

    tags = {"sweep_id": ctx["sweep_id"], "method": name, "role": "baseline"}
    with tracking.run(ctx["uri"], ctx["experiment_id"], run_name=name, parent_run_id=ctx["parent"], tags=tags):
        if params:
            mlflow.log_params(params)
        for row in history or []:
            keep = {k: row[k] for k in ("ratio", "val_avg_f1", "val_eopp1", "val_eodd", "val_eopp0") if k in row}
            mlflow.log_metrics(keep, step=int(row["step"]))
        val = _evaluate_full(model, dataset.split("val"), dataset.num_classes, n_boot, "val_")["flat"]
        test = _evaluate_full(model, dataset.split("test"), dataset.num_classes, n_boot, "test_")["flat"]
        mlflow.log_metrics({**val, **test})
        info = tracking.log_pruned_model(model, masks, tags=tags)
        mlflow.set_tags({"model_uri": info.model_uri, "model_id": info.model_id})
    return {**val, **test}


def _initial_curvature(
    cfg: SweepConfig, checkpoint: Checkpoint, data: CurvatureData, log: Callable[[str], None]
) -> dict[str, DiagSums]:
    """The unpruned model's per-group curvature: the same for every trial, so computed once."""
    path = cfg.directory / "initial_curvature.pt"
    if path.is_file():
        saved = torch.load(path, weights_only=False)
        return {k: DiagSums(v["sums"], v["count"]) for k, v in saved.items()}
    t0 = time.perf_counter()
    backend = LocalCurvature(cfg.prune.curvature_config())
    sums = backend.compute(checkpoint.model, [("unprivileged", data.unprivileged), ("privileged", data.privileged)], 0)
    torch.save({k: {"sums": v.sums, "count": v.count} for k, v in sums.items()}, path)
    log(f"shared step-0 curvature of the unpruned model computed once ({time.perf_counter() - t0:.1f}s)")
    return sums


def run_sweep(
    cfg: SweepConfig,
    dataset: DermDataset,
    checkpoint: Checkpoint,
    *,
    resume: bool = False,
    log: Callable[[str], None] = print,
) -> SweepOutcome:
    """Run (or resume) a sweep; returns the Pareto front and every finished trial."""
    import ray
    from ray import tune

    from ._tune import ConstrainedOptunaSearch, ProgressTable, SearchSpaceFn
    from .distributed import check_resources, ensure_ray, worker_bundles

    t_start = time.monotonic()
    checkpoint.check_dataset(dataset)
    state_file = _state_path(cfg)
    if state_file.is_file() and not resume:
        raise FileExistsError(
            f"sweep {cfg.name!r} already exists in {cfg.directory}; pass --resume to continue it "
            f"or --name to start another"
        )
    if resume and not state_file.is_file():
        raise FileNotFoundError(f"no sweep to resume in {cfg.directory} (no sweep.json); start it without --resume")
    state: dict[str, Any] = json.loads(state_file.read_text()) if resume else {}
    if resume and state.get("manifest_fingerprint") != dataset.manifest_fingerprint:
        raise ValueError(f"sweep {cfg.name!r} was run on another split of the data; resume it with the same data")
    cfg.directory.mkdir(parents=True, exist_ok=True)

    ensure_ray(cfg.address)
    alive = [n for n in ray.nodes() if n.get("Alive")]
    # a resumed sweep keeps logging where it started, wherever it is resumed from
    uri = (
        state.get("tracking_uri")
        if resume and not cfg.tracking_uri
        else tracking.resolve_tracking_uri(cfg.tracking_uri)
    )
    tracking.check_tracking_uri(uri, multi_node=len(alive) > 1)
    if cfg.workers_per_trial:
        check_resources(cfg.workers_per_trial, cfg.cpus_per_worker, cfg.gpus_per_worker)
    exp_id = tracking.experiment_id(uri, cfg.experiment or f"fairprune-{dataset.name}")
    sweep_id = state.get("sweep_id") or f"{cfg.name}-{int(time.time())}"
    log(f"sweep {cfg.name}: MLflow {uri}, experiment {cfg.experiment or f'fairprune-{dataset.name}'} ({exp_id})")

    privileged = state["privileged"] if resume else resolve_privileged(checkpoint, dataset, cfg.prune, log)
    data = curvature_data(dataset, cfg.prune, privileged)
    val = dataset.split("val")
    vanilla_val = evaluate(checkpoint.model, val, num_classes=dataset.num_classes)
    floor = cfg.f1_floor * vanilla_val["avg"]["f1"]

    import mlflow

    with tracking.run(
        uri,
        exp_id,
        run_name=cfg.name,
        run_id=state.get("parent_run_id"),
        tags={"sweep_id": sweep_id, "method": "sweep", "role": "parent"},
    ) as parent:
        ctx = {"uri": uri, "experiment_id": exp_id, "parent": parent.info.run_id, "sweep_id": sweep_id}
        if not resume:
            flat_cfg = pd.json_normalize(cfg.to_dict(), sep=".").iloc[0].to_dict()
            mlflow.log_params({k: str(v)[:500] for k, v in flat_cfg.items()})
            mlflow.log_params(
                {
                    "dataset": dataset.name,
                    "privileged_group": dataset.group_names[privileged],
                    "f1_floor_abs": floor,
                    "model_config": json.dumps(checkpoint.model_config.to_dict()),
                }
            )
            tracking.log_dict(cfg.to_dict(), "config.json")
            tracking.log_dict(dataset.summary(), "dataset_summary.json")
            tracking.log_file(dataset.save_manifest(cfg.directory / "split_manifest.csv"))
            ckpt_path = checkpoint.meta.get("path")
            if ckpt_path:
                tracking.log_file(ckpt_path, "pretrained")
            log("baseline: vanilla")
            state["vanilla"] = _log_baseline("vanilla", checkpoint.model, None, dataset, ctx, cfg.n_boot)
            log(f"baseline: OBD (step {cfg.obd_step:.0%} up to {cfg.obd_final:.0%})")
            res = obd(
                checkpoint.model,
                data.all,
                step_ratio=cfg.obd_step,
                final_ratio=cfg.obd_final,
                curvature=LocalCurvature(cfg.prune.curvature_config()),
                validation=val,
                num_classes=dataset.num_classes,
            )
            state["obd"] = _log_baseline(
                "obd",
                res.model,
                res.masks,
                dataset,
                ctx,
                cfg.n_boot,
                res.history,
                {"step_ratio": cfg.obd_step, "final_ratio": cfg.obd_final},
            )
            state.update(
                sweep_id=sweep_id,
                parent_run_id=parent.info.run_id,
                experiment_id=exp_id,
                tracking_uri=uri,
                privileged=privileged,
                f1_floor_abs=floor,
                invocations=0,
                manifest_fingerprint=dataset.manifest_fingerprint,
                config=cfg.to_dict(),
                dataset_spec=dataset.spec(),
                checkpoint=str(Path(checkpoint.meta["path"]).resolve()),
            )
            state_file.write_text(json.dumps(state, indent=1, default=str))
        initial = _initial_curvature(cfg, checkpoint, data, log)
        study, storage = _open_study(cfg, new=not resume, log=log)
        if resume:
            finished, killed = tracking.mark_unfinished_children(uri, exp_id, sweep_id, _completed_run_ids(study))
            if finished or killed:
                log(
                    f"MLflow runs left open by the interrupted sweep: {finished} completed trial(s) marked "
                    f"FINISHED, {killed} unfinished one(s) marked KILLED (those are run again)"
                )
        already = _finished_count(study)
        remaining = cfg.num_trials - already
        interrupted = False
        if remaining > 0:
            trial_ctx = make_trial_context(
                cfg,
                dataset,
                checkpoint,
                data=data,
                initial=initial,
                f1_floor=floor,
                vanilla_val_pred=vanilla_val["predictions"],
                tracking_uri=uri,
                experiment_id=exp_id,
                parent_run_id=parent.info.run_id,
                sweep_id=sweep_id,
            )
            if cfg.workers_per_trial:
                resources: Any = tune.PlacementGroupFactory(
                    [
                        {"CPU": cfg.cpus_per_trial},
                        *worker_bundles(
                            cfg.workers_per_trial,
                            cpus_per_worker=cfg.cpus_per_worker,
                            gpus_per_worker=cfg.gpus_per_worker,
                        ),
                    ],
                    strategy="SPREAD",
                )
            else:
                resources = {"cpu": cfg.cpus_per_trial}
            search = ConstrainedOptunaSearch(
                space=SearchSpaceFn(cfg.space),
                metric=list(OBJECTIVES),
                mode=["max", "min"],
                sampler=make_sampler(cfg.sampler, seed=cfg.seed + already, num_trials=cfg.num_trials),
                storage=storage,
                study_name=cfg.name,
            )
            state["invocations"] = int(state.get("invocations", 0)) + 1
            state["config"] = cfg.to_dict()
            # per-step progress reports deliberately lack the objectives (see fairprune_trial)
            os.environ["TUNE_DISABLE_STRICT_METRIC_CHECKING"] = "1"
            state_file.write_text(json.dumps(state, indent=1, default=str))
            log(
                f"{already} trials finished, running {remaining} more ({cfg.sampler} sampler, "
                f"{cfg.concurrency} at a time, {cfg.workers_per_trial} curvature workers per trial)"
            )
            tuner = tune.Tuner(
                tune.with_resources(tune.with_parameters(fairprune_trial, ctx=trial_ctx), resources),
                tune_config=tune.TuneConfig(
                    search_alg=search, num_samples=remaining, max_concurrent_trials=cfg.concurrency
                ),
                run_config=tune.RunConfig(
                    storage_path=str((cfg.directory / "tune").resolve()),
                    name=f"run-{state['invocations']}",
                    verbose=0,
                    callbacks=[ProgressTable(cfg.num_trials, already, log)],
                ),
            )
            try:
                results = tuner.fit()  # a first Ctrl-C makes Tune stop gracefully and return
                interrupted = results.num_terminated + results.num_errors < remaining
            except KeyboardInterrupt:
                interrupted = True
        trials, front = _tag_front(uri, exp_id, sweep_id, floor)
        _log_front(front, trials, state, floor, cfg.directory)
    outcome = SweepOutcome(
        cfg.directory,
        state["parent_run_id"],
        exp_id,
        uri,
        front,
        trials,
        state["vanilla"],
        state["obd"],
        interrupted,
        time.monotonic() - t_start,
    )
    return outcome


def _tag_front(uri: str, exp_id: str, sweep_id: str, floor: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Recompute the front from every FINISHED trial run of the sweep and tag runs and models."""
    runs = tracking.finished_child_runs(uri, exp_id, sweep_id, method="fairprune")
    if runs.empty:
        return runs, runs
    col = {
        "run_id": "run_id",
        "tags.optuna_trial": "trial",
        "params.beta": "beta",
        "params.step_ratio": "step_ratio",
        "params.final_ratio": "final_ratio",
        "metrics.achieved_ratio": "achieved_ratio",
        "metrics.val_avg_f1": "val_avg_f1",
        "metrics.val_avg_f1_ci_low": "val_avg_f1_ci_low",
        "metrics.val_avg_f1_ci_high": "val_avg_f1_ci_high",
        "metrics.val_eopp1": "val_eopp1",
        "metrics.val_eopp1_ci_low": "val_eopp1_ci_low",
        "metrics.val_eopp1_ci_high": "val_eopp1_ci_high",
        "metrics.test_avg_f1": "test_avg_f1",
        "metrics.test_eopp1": "test_eopp1",
        "metrics.model_bytes": "model_bytes",
        "tags.feasible": "feasible",
        "tags.eopp1_change_vs_vanilla": "eopp1_change_vs_vanilla",
        "tags.model_uri": "model_uri",
        "tags.model_id": "model_id",
    }
    trials = runs[[c for c in col if c in runs.columns]].rename(columns=col)
    for c in ("trial",):
        trials[c] = trials[c].astype(int)
    for c in ("beta", "step_ratio", "final_ratio"):
        trials[c] = trials[c].astype(float)
    trials["feasible"] = (trials["feasible"] == "true") & (trials["val_avg_f1"] >= floor)
    trials["pareto_optimal"] = pareto_front(trials["val_avg_f1"], trials["val_eopp1"], trials["feasible"])
    trials = trials.sort_values("trial").reset_index(drop=True)
    tracking.set_pareto_tags(
        uri,
        dict(zip(trials["run_id"], trials["pareto_optimal"], strict=True)),
        dict(zip(trials["run_id"], trials.get("model_id", [None] * len(trials)), strict=True)),
    )
    front = trials[trials["pareto_optimal"]].sort_values("val_avg_f1", ascending=False).reset_index(drop=True)
    return trials, front


def _log_front(front: pd.DataFrame, trials: pd.DataFrame, state: dict, floor: float, directory: Path) -> None:
    """Front table (Parquet/CSV), plot (PNG) and interactive HTML on the parent run."""
    import mlflow

    from .plots import front_html, front_png

    if trials.empty:
        return
    tracking.log_frame(front, "pareto_front")
    tracking.log_frame(trials, "trials")
    png = front_png(trials, state["vanilla"], state["obd"], floor, directory / "pareto_front.png")
    html = front_html(trials, state["vanilla"], state["obd"], floor, directory / "pareto_front.html")
    tracking.log_file(png)
    tracking.log_file(html)
    ref = (floor, 1.0)
    mlflow.log_metrics(
        {
            "pareto_size": int(front.shape[0]),
            "trials_finished": int(trials.shape[0]),
            "trials_feasible": int(trials["feasible"].sum()),
            "hypervolume": hypervolume(
                trials["val_avg_f1"], trials["val_eopp1"], reference=ref, feasible=trials["feasible"]
            ),
        }
    )


def format_front(outcome: SweepOutcome) -> str:
    """The Pareto table, with the baselines, as printed at the end of a sweep."""
    v, o = outcome.vanilla, outcome.obd
    lines = [
        f"{'':>9} {'beta':>6} {'step':>6} {'final':>6} {'val F1':>22} {'val Eopp1':>22} "
        f"{'test F1':>8} {'test Eopp1':>10}  Eopp1 change vs vanilla",
        f"{'vanilla':>9} {'':>6} {'':>6} {'':>6} {v['val_avg_f1']:7.4f} [{v['val_avg_f1_ci_low']:.3f}, "
        f"{v['val_avg_f1_ci_high']:.3f}] {v['val_eopp1']:7.4f} [{v['val_eopp1_ci_low']:.3f}, "
        f"{v['val_eopp1_ci_high']:.3f}] {v['test_avg_f1']:8.4f} {v['test_eopp1']:10.4f}",
        f"{'OBD':>9} {'':>6} {'':>6} {'':>6} {o['val_avg_f1']:7.4f} [{o['val_avg_f1_ci_low']:.3f}, "
        f"{o['val_avg_f1_ci_high']:.3f}] {o['val_eopp1']:7.4f} [{o['val_eopp1_ci_low']:.3f}, "
        f"{o['val_eopp1_ci_high']:.3f}] {o['test_avg_f1']:8.4f} {o['test_eopp1']:10.4f}",
    ]
    for _, r in outcome.front.iterrows():
        lines.append(
            f"{'trial ' + str(r['trial']):>9} {r['beta']:6.3f} {r['step_ratio']:6.3f} {r['final_ratio']:6.3f} "
            f"{r['val_avg_f1']:7.4f} [{r['val_avg_f1_ci_low']:.3f}, {r['val_avg_f1_ci_high']:.3f}] "
            f"{r['val_eopp1']:7.4f} [{r['val_eopp1_ci_low']:.3f}, {r['val_eopp1_ci_high']:.3f}] "
            f"{r['test_avg_f1']:8.4f} {r['test_eopp1']:10.4f}  {r.get('eopp1_change_vs_vanilla', '')}"
        )
    return "\n".join(lines)
