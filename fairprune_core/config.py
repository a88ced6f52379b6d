"""Typed configuration from the edge: presets, one pruning run, one sweep.

This module imports nothing heavy (no torch, ray, mlflow or optuna), so the entry points can
build their parsers from it and answer ``--help`` at once. Every config is a frozen dataclass
validated on construction; the CLI only maps flags onto these fields.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal

__all__ = [
    "ALL_BASELINES",
    "DATASET_NAMES",
    "DEMO_BASELINES",
    "ESTIMATORS",
    "PAPER_GRID",
    "PAPER_SETTINGS",
    "PRESETS",
    "SAMPLERS",
    "SYNTHETIC_BIASES",
    "Preset",
    "PruneConfig",
    "SearchSpace",
    "SweepConfig",
    "default_baselines",
    "sweep_name",
]

DATASET_NAMES: tuple[str, ...] = ("synthetic", "fitzpatrick17k", "isic2019")
SYNTHETIC_BIASES: tuple[str, ...] = ("default", "strong", "none")  # demo bias; positive control; negative control
ESTIMATORS: tuple[str, ...] = ("exact", "ggn", "mc", "fisher", "hutchinson")
SAMPLERS: tuple[str, ...] = ("nsga2", "tpe", "gp", "random", "grid")
Sampler = Literal["nsga2", "tpe", "gp", "random", "grid"]
# The paper's own protocol (``--sampler grid``): a grid search of beta x final ratio x step.
PAPER_GRID: dict[str, tuple[float, ...]] = {
    "beta": (0.1, 0.2, 0.33, 0.5),
    "final_ratio": (0.2, 0.35, 0.5, 0.65),
    "step_ratio": (0.05, 0.1),
}

# The paper's own settings (Sec. 4): Fitzpatrick17k and ISIC 2019. A sweep evaluates them first.
PAPER_SETTINGS: tuple[dict[str, float], ...] = (
    {"beta": 0.33, "step_ratio": 0.05, "final_ratio": 0.35},
    {"beta": 0.2, "step_ratio": 0.1, "final_ratio": 0.5},
)


@dataclass(frozen=True)
class Preset:
    """Model and pre-training defaults for flags the user leaves unset."""

    image_size: int
    width: float  # VGG-11 channel multiplier (1.0 = full)
    epochs: int
    batch_size: int
    lr: float  # Adam
    lr_milestones: tuple[int, ...]  # epochs at which the lr is multiplied by 0.1
    augment: Literal["paper", "flips", "none"]

    def with_overrides(self, **values: Any) -> Preset:
        """This preset with every non-None value of ``values`` that names one of its fields."""
        names = {f.name for f in fields(self)}
        given = {k: v for k, v in values.items() if k in names and v is not None}
        if "lr_milestones" in given:
            given["lr_milestones"] = tuple(int(m) for m in given["lr_milestones"])
        return replace(self, **given)


PRESETS: dict[str, Preset] = {
    # a small VGG-11 that trains in well under a minute on a 2-core CPU
    "demo": Preset(image_size=32, width=0.125, epochs=30, batch_size=64, lr=1e-3, lr_milestones=(24,), augment="flips"),
    # Sec. 4 of the paper
    "paper": Preset(
        image_size=128, width=1.0, epochs=200, batch_size=256, lr=1e-4, lr_milestones=(160,), augment="paper"
    ),
}


def check_ratio_pair(
    step_ratio: float, final_ratio: float, flags: tuple[str, str] = ("--step-ratio", "--final-ratio")
) -> None:
    """A per-step fraction and a final pruned fraction that make a schedule; errors name ``flags``."""
    step_flag, final_flag = flags
    if not 0 < step_ratio <= 1:
        raise ValueError(f"step_ratio ({step_flag}) must be in (0, 1], got {step_ratio}")
    if not 0 < final_ratio < 1:
        raise ValueError(f"final_ratio ({final_flag}) must be in (0, 1), got {final_ratio}")
    if final_ratio < step_ratio:
        raise ValueError(
            f"final_ratio ({final_flag} {final_ratio}) must be >= step_ratio ({step_flag} {step_ratio}): the first "
            f"step alone would overshoot it"
        )


@dataclass(frozen=True)
class PruneConfig:
    """The settings of one comparison of methods (FairPrune/OBD pruning, the training-time
    baselines' hyper-parameters). Curvature batch defaults depend on the dataset (see
    ``curvature_defaults``)."""

    beta: float = 0.33
    step_ratio: float = 0.05
    final_ratio: float = 0.35
    estimator: str = "exact"  # exact | ggn | mc | fisher | hutchinson
    mc_samples: int = 1
    probes: int = 16  # Rademacher probes per curvature sub-batch for estimator "hutchinson"
    batch_size: int = 32  # curvature mini-batch size per group
    num_batches: int = 8  # curvature mini-batches per group per pruning step
    max_sub_batch: int | None = None
    seed: int = 0
    privileged: int | None = None  # None: the group the vanilla model is more accurate on
    stop_eopp1: float | None = None  # stop once validation Eopp1 <= this (the paper's fairness target)
    adv_weight: float = 1.0  # AdvConf: weight of the confusion loss
    adv_alpha: float = 0.1  # AdvRev: alpha of the projected update

    def __post_init__(self) -> None:
        check_ratio_pair(self.step_ratio, self.final_ratio)
        if not (self.adv_weight >= 0 and self.adv_alpha >= 0):
            raise ValueError(f"--adv-weight and --adv-alpha must be >= 0, got {self.adv_weight}, {self.adv_alpha}")
        if self.estimator not in ESTIMATORS:
            raise ValueError(f"unknown estimator {self.estimator!r}; choose one of {', '.join(ESTIMATORS)}")
        if self.mc_samples < 1:
            raise ValueError(f"mc_samples (--mc-samples) must be >= 1, got {self.mc_samples}")
        if not 1 <= self.probes <= 10_000:
            raise ValueError(f"probes (--probes) must be in [1, 10000], got {self.probes}")
        if not (math.isfinite(self.beta) and 0 <= self.beta <= MAX_BETA):
            raise ValueError(f"beta (--beta) must be a number in [0, {MAX_BETA:g}], got {self.beta}")
        if self.batch_size < 1 or self.num_batches < 1:
            raise ValueError(
                f"--curvature-batch-size and --curvature-batches must be >= 1, got {self.batch_size} and "
                f"{self.num_batches}"
            )
        if self.privileged not in (None, 0, 1):
            raise ValueError(f"privileged must be 0, 1 or None (auto), got {self.privileged}")
        if self.stop_eopp1 is not None and not 0 <= self.stop_eopp1 <= 1:
            raise ValueError(f"stop_eopp1 (--stop-eopp1) is an Eopp1 target in [0, 1], got {self.stop_eopp1}")
        if self.max_sub_batch is not None and self.max_sub_batch < 1:
            raise ValueError(f"max_sub_batch (--max-sub-batch) must be >= 1, got {self.max_sub_batch}")

    @staticmethod
    def curvature_defaults(dataset_name: str) -> dict[str, Any]:
        """The paper's curvature sampling per dataset (Sec. 4, "Pruning Details")."""
        return {
            "isic2019": dict(batch_size=64, num_batches=200),
            "fitzpatrick17k": dict(batch_size=2, num_batches=500, estimator="mc"),
        }.get(dataset_name, dict(batch_size=32, num_batches=8))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


MAX_BETA = 100.0  # beyond it the privileged group's curvature is all that counts: a typo, not a search
# sizes beyond these are typos (1e23 trials), refused before anything starts
LIMITS = {"num_trials": 100_000, "concurrency": 10_000, "workers_per_trial": 4_096, "n_boot": 1_000_000}

_RANGE_FLAGS = {"beta": "--beta-range", "step_ratio": "--step-range", "final_ratio": "--final-range"}


@dataclass(frozen=True)
class SearchSpace:
    """Ranges searched. A suggested step larger than the final ratio is run with step = final; one
    smaller than ``final / max_steps`` runs with step = final / max_steps, so that no trial runs
    more than ``max_steps`` pruning steps (a trial's cost grows with its steps; the paper's grid
    needs at most 13: 5% steps to 65%). None: no cap."""

    beta: tuple[float, float] = (0.0, 1.0)
    step_ratio: tuple[float, float] = (0.01, 0.2)
    final_ratio: tuple[float, float] = (0.05, 0.8)
    max_steps: int | None = 14

    def effective_step(self, step_ratio: float, final_ratio: float) -> float:
        """The step a trial runs with (see the class docstring)."""
        step = min(step_ratio, final_ratio)
        if self.max_steps is not None and final_ratio / step > self.max_steps:
            step = final_ratio / self.max_steps
        return step

    def __post_init__(self) -> None:
        for name, (lo, hi) in self.ranges().items():
            if not lo < hi:
                raise ValueError(f"{_RANGE_FLAGS[name]} must have LOW < HIGH, got {lo} {hi}")
        if not (self.beta[0] >= 0 and self.beta[1] <= MAX_BETA):
            raise ValueError(
                f"--beta-range must lie inside [0, {MAX_BETA:g}] (Eq. 4 weighs the privileged group's curvature by "
                f"beta; the paper searched 0.1-0.5), got {self.beta[0]} {self.beta[1]}"
            )
        for name in ("step_ratio", "final_ratio"):
            lo, hi = getattr(self, name)
            if not (lo > 0 and hi < 1):
                raise ValueError(f"{_RANGE_FLAGS[name]} must lie inside (0, 1), got {lo} {hi}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"--max-steps must be >= 1 (or 0 for no cap), got {self.max_steps}")

    def ranges(self) -> dict[str, tuple[float, float]]:
        return {"beta": self.beta, "step_ratio": self.step_ratio, "final_ratio": self.final_ratio}

    def contains(self, point: dict[str, float]) -> bool:
        return all(lo <= point[k] <= hi for k, (lo, hi) in self.ranges().items())

    def contains_value(self, name: str, value: float) -> bool:
        lo, hi = self.ranges()[name]
        return lo <= value <= hi


_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def sweep_name(value: str) -> str:
    """A sweep's name (``--name``): one folder below ``--storage``, never a path that leaves it."""
    if not _NAME.fullmatch(value) or ".." in value:
        raise ValueError(
            f"--name {value!r} must be a name, not a path: letters, digits, '.', '_' and '-' (at most 128, "
            f"starting with a letter or digit, no '..'); the sweep is kept in --storage/<name>"
        )
    return value


DEMO_BASELINES: tuple[str, ...] = ("vanilla", "obd")  # the synthetic demo stays short
ALL_BASELINES: tuple[str, ...] = ("vanilla", "obd", "advconf", "advrev", "domainindep")  # the paper's Tables 1-2


def default_baselines(dataset_name: str) -> tuple[str, ...]:
    """The baselines a sweep logs unless told: all of the paper's on real data, two on the demo."""
    return DEMO_BASELINES if dataset_name == "synthetic" else ALL_BASELINES


# Fields a resumed sweep may change: how it runs, not what it searches or measures.
RESUMABLE_FIELDS = frozenset(
    {
        "num_trials",
        "concurrency",
        "workers_per_trial",
        "cpus_per_trial",
        "cpus_per_worker",
        "gpus_per_worker",
        "gpus_per_trial",
        "device",
        "address",
        "tracking_uri",
        "prepare_suggestions",
        "safetensors_only",
        "allow_chance_model",
        "trial_retries",
    }
)
PREPARE = ("auto", "always", "never")  # suggestions asked ahead while trials run (sweep.tune.StudySearcher)


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
    baselines: tuple[str, ...] = DEMO_BASELINES  # logged before the trials; vanilla first
    concurrency: int = 2  # trials at a time
    workers_per_trial: int = 0  # Ray curvature workers per trial (0: in the trial process)
    cpus_per_trial: float = 1
    cpus_per_worker: float = 1
    gpus_per_worker: float | None = None  # None: 1 when the Ray cluster has GPUs, else 0
    gpus_per_trial: float = 0  # GPUs of a trial that computes its curvature itself (fractions share one)
    device: str = "auto"  # the driver's: baselines, the shared step-0 curvature, the report
    n_boot: int = 500  # bootstrap resamples for intervals
    tracking_uri: str | None = None  # default: MLflow's own (sqlite:///<cwd>/mlflow.db)
    experiment: str | None = None  # default: fairprune-<dataset>
    address: str | None = None  # Ray address (default: $RAY_ADDRESS, else local)
    prepare_suggestions: str = "auto"  # auto: when the sampler costs > 2% of a trial (sweep.tune.StudySearcher)
    safetensors_only: bool = False  # models logged as safetensors only: no PyTorch flavour (pickle), half the bytes
    allow_chance_model: bool = False  # sweep a vanilla model that is near chance or predicts one class (refused)
    trial_retries: int = 2  # a trial whose worker died or whose tracking store failed runs again up to this often

    def __post_init__(self) -> None:
        sweep_name(self.name)
        if self.prepare_suggestions not in PREPARE:
            raise ValueError(
                f"--prepare-suggestions must be one of {', '.join(PREPARE)}, got {self.prepare_suggestions!r}"
            )
        if self.sampler not in SAMPLERS:
            raise ValueError(f"unknown sampler {self.sampler!r}; choose one of {', '.join(SAMPLERS)}")
        if self.num_trials < 1:
            raise ValueError(f"num_trials (--trials) must be >= 1, got {self.num_trials}")
        if not 0 <= self.f1_floor <= 1:
            raise ValueError(
                f"f1_floor (--f1-floor) is relative to the vanilla F1 and must be in [0, 1], got {self.f1_floor}"
            )
        if self.concurrency < 1 or self.workers_per_trial < 0:
            raise ValueError(
                f"--concurrency must be >= 1 and --workers-per-trial >= 0, got {self.concurrency} and "
                f"{self.workers_per_trial}"
            )
        for name, flag in (
            ("num_trials", "--trials"),
            ("concurrency", "--concurrency"),
            ("workers_per_trial", "--workers-per-trial"),
            ("n_boot", "--bootstrap"),
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value > LIMITS[name]:
                raise ValueError(f"{name} ({flag}) must be an integer of at most {LIMITS[name]:,}, got {value!r}")
        if not 0 <= self.trial_retries <= 100:
            raise ValueError(f"trial_retries (--max-retries) must be in 0..100, got {self.trial_retries}")
        if self.n_boot < 100:
            raise ValueError(f"n_boot (--bootstrap) must be >= 100 resamples for a 95% interval, got {self.n_boot}")
        if not (self.cpus_per_trial > 0 and self.cpus_per_worker > 0):
            raise ValueError(
                f"cpus per trial and per worker (--cpus-per-worker) must be > 0, got {self.cpus_per_trial}, "
                f"{self.cpus_per_worker}"
            )
        if self.gpus_per_worker is not None and not self.gpus_per_worker >= 0:
            raise ValueError(f"gpus_per_worker (--gpus-per-worker) must be >= 0, got {self.gpus_per_worker}")
        if not self.gpus_per_trial >= 0:
            raise ValueError(
                f"gpus_per_trial (--gpus-per-trial) must be >= 0 (fractions share a GPU), got {self.gpus_per_trial}"
            )
        check_ratio_pair(self.obd_step, self.obd_final, ("--obd-step", "--obd-final"))
        if self.sampler == "grid":
            outside = [
                f"{k}={v}" for k, vals in PAPER_GRID.items() for v in vals if not self.space.contains_value(k, v)
            ]
            if outside:
                raise ValueError(f"--sampler grid: grid values {', '.join(outside)} lie outside the search space")
        from .methods import METHOD_NAMES  # names only: imports nothing heavy

        object.__setattr__(self, "baselines", tuple(self.baselines))
        unknown = [b for b in self.baselines if b not in METHOD_NAMES or b == "fairprune"]
        if unknown or not self.baselines or self.baselines[0] != "vanilla":
            raise ValueError(
                f"--baselines must start with vanilla (the reference of every comparison) and name methods among "
                f"{', '.join(m for m in METHOD_NAMES if m != 'fairprune')}; got {', '.join(self.baselines)}"
            )

    @property
    def directory(self) -> Path:
        return self.storage / self.name

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SweepConfig:
        """Rebuild a config saved with :meth:`to_dict`."""
        d = dict(d)
        d["storage"] = Path(d["storage"])
        space = {k: tuple(v) if isinstance(v, list | tuple) else v for k, v in d["space"].items()}
        space.setdefault("max_steps", None)  # a sweep stored before the cap existed ran without one
        d["space"] = SearchSpace(**space)
        d["prune"] = PruneConfig(**d["prune"])
        return cls(**d)

    def resumed(self, **changes: Any) -> SweepConfig:
        """This config with the changes a resumed sweep may make; anything else is refused."""
        refused = sorted(set(changes) - RESUMABLE_FIELDS)
        if refused:
            raise ValueError(
                f"a resumed sweep cannot change {', '.join(refused)}: that would change the study; "
                f"start a new sweep (another --name) instead"
            )
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["storage"] = str(self.storage)
        return d
