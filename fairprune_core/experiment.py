"""The one experiment runner: run methods on one pruning problem, evaluate, compare, track.

A :class:`Problem` is everything a method run needs (the pre-trained weights, the curvature
samplers of each group, the validation and test splits), picklable so that a sweep ships it
to its trials once. An :class:`Experiment` runs :mod:`~fairprune_core.methods` on it; each run
is evaluated on validation and test with bootstrap intervals and a paired bootstrap against
the vanilla model, becomes a typed :class:`MethodRecord`, and is handed to a
:class:`~fairprune_core.tracking.Tracker` (the null tracker unless one is given).
``sweeps/prune.py``, the sweep's baselines and trials and the benchmarks all run methods here.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from torch import nn

from .checkpoint import Checkpoint
from .config import PruneConfig
from .curvature.hessian import CurvatureConfig
from .datasets import DermDataset, SplitArrays
from .evaluation import evaluate, predict, resolve_device
from .methods.base import CurvatureData, Method, MethodContext, MethodOutput, TrainingSetup
from .metrics import fairness_metrics, flatten_metrics
from .models import ModelConfig, build_model
from .pruning import CurvatureBackend, GroupSampler, LocalCurvature, detect_privileged
from .stats import Sanity, best_constant_f1, compare, permutation_null, sanity
from .throttle import Throttle
from .tracking import NullTracker, Tracker

__all__ = [
    "Experiment",
    "MethodRecord",
    "Problem",
    "Reference",
    "build_problem",
    "curvature_data",
    "group_params",
    "resolve_privileged",
    "training_setup",
]

STEP_METRICS = ("ratio", "val_avg_f1", "val_eopp1", "val_eodd", "val_eopp0")  # logged per pruning step
CURVE_PREFIX = "curve/"  # per-step metrics are logged as curve/<name>: never mixed with the final values
SPLITS = ("val", "test")


def curvature_data(dataset: DermDataset, config: PruneConfig, privileged: int) -> CurvatureData:
    """Per-group samplers over the TRAIN split; OBD's sampler draws as many samples in total."""
    train = dataset.split("train")
    samplers = {}
    for g in (0, 1):
        sel = train.groups == g
        samplers[g] = GroupSampler(
            train.images[sel],
            train.labels[sel],
            batch_size=config.batch_size,
            num_batches=config.num_batches,
            seed=config.seed * 1000 + g,
            name=f"{dataset.group_names[g]} (train)",
        )
    everyone = GroupSampler(
        train.images,
        train.labels,
        batch_size=config.batch_size,
        num_batches=2 * config.num_batches,
        seed=config.seed * 1000 + 2,
        name="all (train)",
    )
    return CurvatureData(samplers[1 - privileged], samplers[privileged], everyone, privileged)


def resolve_privileged(
    model: nn.Module, dataset: DermDataset, given: int | None, log: Callable[[str], None] = print
) -> int:
    """``given``, else the group the vanilla model is more accurate on (validation); printed."""
    detected, acc = detect_privileged(model, dataset.split("val"), num_classes=dataset.num_classes)
    names = dataset.group_names
    accs = ", ".join(f"{names[g]} {acc[g]:.3f}" for g in (0, 1))
    if given is None:
        log(f"privileged group: {names[detected]} (vanilla validation accuracy {accs})")
        return detected
    note = "" if given == detected else f"; the vanilla model is more accurate on {names[detected]}"
    log(f"privileged group: {names[given]} (given{note}; validation accuracy {accs})")
    return given


@dataclass
class Problem:
    """One pruning problem, picklable (shipped once to every sweep trial)."""

    dataset_name: str
    group_names: list[str]
    num_classes: int
    model_config: dict[str, Any]
    state: dict[str, np.ndarray]  # the pre-trained weights
    privileged: int
    data: CurvatureData
    val: SplitArrays
    test: SplitArrays
    curvature: CurvatureConfig

    def build_model(self) -> nn.Module:
        import torch

        model = build_model(ModelConfig(**self.model_config))
        model.load_state_dict({k: torch.from_numpy(v) for k, v in self.state.items()})
        return model.eval()

    def split(self, name: str) -> SplitArrays:
        return {"val": self.val, "test": self.test}[name]


@dataclass
class Reference:
    """What every run on one problem is compared with, computed once (a sweep ships it to its
    trials): the vanilla model's predictions and the best constant predictor's F1 per split, and
    the vanilla model's validation metrics (step 0 of every pruning run, ``val_*``). Computed on
    ``device``: an experiment on another kind of device computes its own (float results, hence an
    argmax at a tie, may differ between devices; a model "predicts like vanilla" on one)."""

    predictions: dict[str, np.ndarray]
    constant_f1: dict[str, float]
    validation: dict[str, float]
    device: str = "cpu"


def build_problem(
    dataset: DermDataset,
    checkpoint: Checkpoint,
    config: PruneConfig,
    *,
    privileged: int | None = None,
    log: Callable[[str], None] = print,
) -> Problem:
    """The problem of pruning ``checkpoint`` on ``dataset`` (privileged group detected unless given)."""
    checkpoint.check_dataset(dataset)
    if privileged is None:
        privileged = resolve_privileged(checkpoint.model, dataset, config.privileged, log)
    _note_curvature(checkpoint, config.estimator, log)
    return Problem(
        dataset_name=dataset.name,
        group_names=list(dataset.group_names),
        num_classes=dataset.num_classes,
        model_config=checkpoint.model_config.to_dict(),
        state={k: v.detach().cpu().numpy() for k, v in checkpoint.model.state_dict().items()},
        privileged=privileged,
        data=curvature_data(dataset, config, privileged),
        val=dataset.split("val"),
        test=dataset.split("test"),
        curvature=CurvatureConfig.of(config),
    )


def _note_curvature(checkpoint: Checkpoint, estimator: str, log: Callable[[str], None]) -> None:
    """Say where the GGN the estimator computes is not the Hessian of Eq. (1) (smooth layers)."""
    from .curvature.hessian import smooth_layers

    smooth = smooth_layers(checkpoint.model)
    if smooth and estimator in ("exact", "ggn", "mc"):
        log(
            f"note: {checkpoint.model_config.arch} has {', '.join(smooth)} layers, whose own curvature the "
            f"Gauss-Newton matrix leaves out: --estimator {estimator} gives the GGN diagonal there, not the exact "
            f"Hessian diagonal of Eq. (1); --estimator hutchinson estimates the Hessian's"
        )


def training_setup(dataset: DermDataset, checkpoint: Checkpoint) -> TrainingSetup | None:
    """How ``checkpoint`` was trained (model and training config), for training-time methods to
    train theirs alike; None for a checkpoint that does not record it."""
    from .training import TrainConfig

    train = checkpoint.meta.get("train_config")
    if train is None:
        return None
    return TrainingSetup(dataset, checkpoint.model_config, TrainConfig(**train))


@dataclass
class MethodRecord:
    """One evaluated method run: what was run, what it produced, how it measures."""

    method: str
    label: str
    role: str
    params: dict[str, Any]
    output: MethodOutput
    metrics: dict[str, dict[str, Any]]  # split -> fairness_metrics (+ BCa intervals, predictions)
    vs_vanilla: dict[str, dict[str, dict[str, Any]]]  # split -> stats.compare (empty for vanilla)
    seconds: float
    null: dict[str, dict[str, float]] = field(default_factory=dict)  # split -> Eopp1 permutation null
    sanity: dict[str, Sanity] = field(default_factory=dict)  # split -> collapsed / near chance
    run_id: str = ""
    model_id: str = ""
    model_uri: str = ""
    model_bytes: int = -1
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def achieved_ratio(self) -> float:
        return self.output.achieved_ratio

    def flat(self) -> dict[str, float]:
        """``val_*`` and ``test_*`` metrics with their ``_ci_low``/``_ci_high`` (what is logged)."""
        out: dict[str, float] = {}
        for split, m in self.metrics.items():
            prefix = f"{split}_"
            out.update(flatten_metrics(m, prefix=prefix))
            for key, (lo, hi) in m.get("intervals", {}).items():
                name = key if key[0] not in "01" else f"g{key}"
                out[f"{prefix}{name}_ci_low"], out[f"{prefix}{name}_ci_high"] = lo, hi
            if split in self.null:
                out[f"{prefix}eopp1_null_q95"] = self.null[split]["null_q95"]
                out[f"{prefix}eopp1_null_p"] = self.null[split]["p_value"]
        return out

    def delta(self, split: str = "val", metric: str = "eopp1") -> dict[str, Any] | None:
        return self.vs_vanilla.get(split, {}).get(metric)

    @property
    def final_step(self) -> int:
        """The pruning step the model is at (0 for a method that does not prune)."""
        return int(self.output.history[-1]["step"]) if self.output.history else 0

    @property
    def predicts_like_vanilla(self) -> bool:
        """Its predictions equal the vanilla model's on every split evaluated (vanilla: trivially)."""
        if self.method == "vanilla":
            return True
        return bool(self.vs_vanilla) and all(d["eopp1"]["identical"] for d in self.vs_vanilla.values())

    @property
    def collapsed(self) -> bool:
        """Collapsed on validation (where selection happens): never to be called fairer."""
        s = self.sanity.get("val")
        return bool(s and s.collapsed)

    @property
    def collapse_reason(self) -> str:
        """Why it collapsed on validation ("avg F1 0.311 below the floor 0.348", "100% of
        predictions are one class; ..."); "" when it did not."""
        return self.sanity["val"].reason if self.collapsed else ""


class Experiment:
    """Runs methods on one :class:`Problem` and hands each evaluated run to a tracker."""

    def __init__(
        self,
        problem: Problem,
        *,
        curvature: CurvatureBackend | None = None,
        tracker: Tracker | None = None,
        n_boot: int = 1000,
        f1_floor: float = 0.9,
        splits: Sequence[str] = SPLITS,
        training: TrainingSetup | None = None,
        log: Callable[[str], None] | None = print,
        device: str | torch.device = "auto",
        reference: Reference | None = None,
        progress_every_s: float = 0.0,
    ) -> None:
        self.problem = problem
        self.training = training
        self.device = resolve_device(device)
        self.model = problem.build_model().to(self.device)  # methods, curvature and evaluation follow it
        self.curvature = curvature or LocalCurvature(problem.curvature, log=log)  # follows the model's device
        self.tracker = tracker or NullTracker()
        self.n_boot = n_boot
        self.f1_floor = f1_floor  # relative to vanilla: below it a model is collapsed (the sweep's rule)
        self.splits = tuple(splits)
        self.log = log
        self.progress_every_s = progress_every_s  # per-step curves reach the tracker at most this often
        if reference is not None and reference.device != self.device.type:
            reference = None  # computed on another kind of device: this experiment computes its own
        self._vanilla_pred: dict[str, np.ndarray] = dict(reference.predictions) if reference else {}
        self._constant_f1: dict[str, float] = dict(reference.constant_f1) if reference else {}
        self._initial_validation = dict(reference.validation) if reference else None

    def reference(self) -> Reference:
        """The vanilla model's predictions, constant-F1 and validation metrics, for other
        experiments on the same problem (``Experiment(problem, reference=...)``)."""
        p = self.problem
        val = p.split("val")
        m = fairness_metrics(val.labels, self.vanilla_predictions("val"), val.groups, num_classes=p.num_classes)
        return Reference(
            {s: self.vanilla_predictions(s) for s in self.splits},
            {s: self.constant_f1(s) for s in self.splits},
            flatten_metrics(m, prefix="val_"),
            self.device.type,
        )

    def constant_f1(self, split: str) -> float:
        """The best constant predictor's average F1 on ``split`` (depends on the split only)."""
        if split not in self._constant_f1:
            data = self.problem.split(split)
            self._constant_f1[split] = best_constant_f1(data.labels, data.groups, self.problem.num_classes)
        return self._constant_f1[split]

    def context(self, **overrides: Any) -> MethodContext:
        p = self.problem
        ctx = MethodContext(
            self.model,
            p.num_classes,
            p.group_names,
            p.data,
            p.val,
            self.curvature,
            initial_validation=self._initial_validation,
            log=self.log,
            training=self.training,
        )
        return replace(ctx, **overrides)

    def vanilla_predictions(self, split: str) -> np.ndarray:
        if split not in self._vanilla_pred:
            self._vanilla_pred[split] = predict(self.model, self.problem.split(split).images).argmax(axis=1)
        return self._vanilla_pred[split]

    def vanilla_sanity(self, split: str) -> Sanity:
        """Whether the vanilla model's own numbers mean anything on ``split`` (near chance, one class)."""
        data = self.problem.split(split)
        pred = self.vanilla_predictions(split)
        f1 = self.vanilla_f1(split)
        return sanity(
            data.labels,
            pred,
            data.groups,
            num_classes=self.problem.num_classes,
            avg_f1=f1,
            floor=None,
            constant_f1=self.constant_f1(split),
        )

    def vanilla_f1(self, split: str) -> float:
        data = self.problem.split(split)
        pred = self.vanilla_predictions(split)
        return fairness_metrics(data.labels, pred, data.groups, num_classes=self.problem.num_classes)["avg"]["f1"]

    def evaluate(self, method: Method, output: MethodOutput, seconds: float) -> MethodRecord:
        """Metrics with BCa intervals on every split, the Eopp1 permutation null, the paired change
        against vanilla, and whether the model collapsed (below ``f1_floor`` x vanilla's F1, or one class)."""
        p = self.problem
        metrics, deltas, nulls, sanities = {}, {}, {}, {}
        for split in self.splits:
            data = p.split(split)
            logits = output.val_logits if split == "val" else None  # the last pruning step's pass, if any
            m = evaluate(
                output.model, data, num_classes=p.num_classes, intervals=True, n_boot=self.n_boot, logits=logits
            )
            metrics[split] = m
            nulls[split] = permutation_null(
                data.labels, m["predictions"], data.groups, num_classes=p.num_classes, n_perm=self.n_boot
            )
            floor = None if method.name == "vanilla" else self.f1_floor * self.vanilla_f1(split)
            sanities[split] = sanity(
                data.labels,
                m["predictions"],
                data.groups,
                num_classes=p.num_classes,
                avg_f1=m["avg"]["f1"],
                floor=floor,
                constant_f1=self.constant_f1(split),
            )
            if method.name != "vanilla":
                base = self.vanilla_predictions(split)
                deltas[split] = compare(
                    data.labels, base, m["predictions"], data.groups, num_classes=p.num_classes, n_boot=self.n_boot
                )
        return MethodRecord(
            method.name,
            method.label(),
            method.role,
            method.hyperparameters(),
            output,
            metrics,
            deltas,
            seconds,
            null=nulls,
            sanity=sanities,
        )

    def paired(self, split: str, a: MethodRecord, b: MethodRecord) -> dict[str, dict[str, Any]]:
        """The paired change from ``a`` to ``b`` on ``split`` (:func:`fairprune_core.stats.compare`)."""
        data = self.problem.split(split)
        pa, pb = a.metrics[split]["predictions"], b.metrics[split]["predictions"]
        return compare(data.labels, pa, pb, data.groups, num_classes=self.problem.num_classes, n_boot=self.n_boot)

    def run_method(
        self,
        method: Method,
        *,
        run_name: str | None = None,
        tags: Mapping[str, str] | None = None,
        params: Mapping[str, Any] | None = None,
        metrics: Mapping[str, float] | None = None,
        finish: Callable[[MethodRecord], None] | None = None,
        **context: Any,
    ) -> MethodRecord:
        """Run, evaluate and track one method. ``metrics`` are logged with the final ones;
        ``finish(record)`` runs while its tracked run is open (to add tags or report the record
        elsewhere); ``context`` overrides :class:`MethodContext` fields. Per-step curves reach the
        tracker at most every ``progress_every_s`` seconds, all of them by the end."""
        tags = {"method": method.name, "role": method.role, **(tags or {})}
        with self.tracker.run(run_name or method.name, tags=tags) as run_id:
            self.tracker.log_params({**method.hyperparameters(), **(params or {}), **group_params(self.problem)})
            progress = _Progress(self.tracker, self.progress_every_s, context.pop("on_step", None))
            other_split = "validation" in context  # neither the shared step-0 metrics nor its logits apply
            if other_split:
                context.setdefault("initial_validation", None)
            t0 = time.perf_counter()
            output = method.run(self.context(on_step=progress.on_step, **context))
            progress.flush()
            t1 = time.perf_counter()
            if other_split:
                output.val_logits = None
            record = self.evaluate(method, output, t1 - t0 - progress.seconds)
            record.run_id = run_id
            record.extra["timing"] = _timing(output, final_evaluation=time.perf_counter() - t1)
            record.extra["timing"]["progress_s"] = progress.seconds
            self._track(record, run_name or method.name, tags, metrics or {})
            if finish is not None:
                finish(record)
        return record

    def run(self, methods: Sequence[Method], **kwargs: Any) -> list[MethodRecord]:
        return [self.run_method(m, **kwargs) for m in methods]

    def _track(self, record: MethodRecord, name: str, tags: Mapping[str, str], extra: Mapping[str, float]) -> None:
        """Final metrics, the model (named ``name``) and its tags. Everything is logged at the
        model's pruning step, where MLflow's model page reads a run's metrics: once per name."""
        if not self.tracker.enabled:
            return
        step = record.final_step
        metrics = {**record.flat(), "achieved_ratio": record.achieved_ratio, "pruning_seconds": record.seconds}
        delta = record.delta("val", "eopp1")
        if delta is not None:
            metrics.update(
                val_eopp1_delta_vs_vanilla=delta["delta"],
                val_eopp1_delta_ci_low=delta["low"],
                val_eopp1_delta_ci_high=delta["high"],
            )
        # the model first (MLflow links the few curve values at its step), then the final metrics
        # linked to it by id: its page shows each once, without MLflow re-reading every metric's history
        logged = self.tracker.log_model(record.output.model, record.output.masks, name=name, tags=tags, step=step)
        record.model_id, record.model_uri, record.model_bytes = logged.model_id, logged.model_uri, logged.bytes
        timing = {f"timing/{k}": v for k, v in record.extra.get("timing", {}).items()}
        self.tracker.log_metrics(
            {**metrics, "model_bytes": logged.bytes, **timing, **extra}, step=step, model_id=logged.model_id
        )
        # the in-memory model's validation logits, to check that the logged model predicts the same
        self.tracker.log_array(record.metrics["val"]["logits"], "predictions/val_logits.npy")
        self.tracker.set_tags(
            {
                "model_uri": logged.model_uri,
                "model_id": logged.model_id,
                "collapsed": str(record.collapsed).lower(),
                **({"collapse_reason": record.collapse_reason} if record.collapsed else {}),
                "predicts_like_vanilla": str(record.predicts_like_vanilla).lower(),
                "interval_method": "BCa",
            }
        )


class _Progress:
    """A run's per-step rows: handed on at once (``on_step``), logged as ``curve/*`` metrics in
    batches when the throttle says so; ``seconds`` is the time this took (timing/progress_s)."""

    def __init__(self, tracker: Tracker, every_s: float, then: Callable[[dict[str, float]], None] | None) -> None:
        self.tracker = tracker
        self.throttle = Throttle(every_s)
        self.then = then
        self.rows: list[tuple[int, dict[str, float], float]] = []
        self.seconds = 0.0

    def on_step(self, row: dict[str, float]) -> None:
        t0 = time.perf_counter()
        curve = {f"{CURVE_PREFIX}{k}": row[k] for k in STEP_METRICS if k in row}
        self.rows.append((int(row["step"]), curve, time.time()))
        if self.throttle.due():
            self._flush()
        if self.then is not None:
            self.then(row)
        self.seconds += time.perf_counter() - t0

    def flush(self) -> None:
        t0 = time.perf_counter()
        self._flush()
        self.seconds += time.perf_counter() - t0

    def _flush(self) -> None:
        if self.rows and self.tracker.enabled:
            self.tracker.log_curves(self.rows)
        self.rows = []


def _timing(output: MethodOutput, *, final_evaluation: float) -> dict[str, float]:
    """Seconds spent pruning (curvature + selection), validating each step, and evaluating at the end."""
    rows = output.history[1:]  # step 0 is the unpruned model
    return {
        "steps": float(len(rows)),
        "pruning_s": float(sum(r.get("seconds", 0.0) for r in rows)),
        "step_validation_s": float(sum(r.get("eval_seconds", 0.0) for r in output.history)),
        "final_evaluation_s": final_evaluation,
    }


def group_params(problem: Problem) -> dict[str, str]:
    """What ``g0``/``g1`` in metric names stand for (logged on every run): ``group_g0 = light``..."""
    names = problem.group_names
    return {
        "group_g0": names[0],
        "group_g1": names[1],
        "privileged_group": names[problem.privileged],
        "unprivileged_group": names[1 - problem.privileged],
    }
