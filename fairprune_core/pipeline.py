"""The stages the entry points run: pre-train (or reuse), evaluate, report."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .checkpoint import Checkpoint, load_checkpoint
from .datasets import DermDataset, SplitArrays
from .evaluation import evaluate
from .hessian import CurvatureConfig, DiagSums
from .metrics import paired_bootstrap
from .model import ModelConfig
from .pruning import (
    CurvatureBackend,
    GroupSampler,
    LocalCurvature,
    PruneResult,
    PruneSchedule,
    detect_privileged,
    fairprune,
    obd,
    save_pruned,
)
from .report import paper_table
from .training import TrainConfig, pretrain, pretrain_key

__all__ = [
    "DEFAULT_RUNS_DIR",
    "PruneConfig",
    "curvature_data",
    "ensure_pretrained",
    "evaluate_splits",
    "run_comparison",
    "run_method",
    "run_pretrain",
]

DEFAULT_RUNS_DIR = Path("fairprune_runs")


def _default_out(dataset: DermDataset, model_config: ModelConfig, train_config: TrainConfig) -> Path:
    return DEFAULT_RUNS_DIR / "pretrain" / f"{dataset.name}-{pretrain_key(dataset, model_config, train_config)}"


def ensure_pretrained(
    dataset: DermDataset,
    model_config: ModelConfig,
    train_config: TrainConfig,
    *,
    out: Path | None = None,
    log: Callable[[str], None] = print,
) -> Path:
    """Path of a finished pre-training for this exact config, training (or resuming) if needed."""
    out = out or _default_out(dataset, model_config, train_config)
    best = out / "best.pt"
    if best.is_file() and (out / "done").is_file():
        log(f"reusing pre-trained model {best} (same data and configuration)")
        return best
    log(
        f"pre-training VGG-11 (width {model_config.width}, {model_config.image_size}px, "
        f"{train_config.epochs} epochs) -> {out}"
    )
    pretrain(dataset, model_config, train_config, out, resume=True, log=log)
    (out / "done").write_text("finished\n")
    return best


def evaluate_splits(
    checkpoint: Checkpoint,
    dataset: DermDataset,
    splits: tuple[str, ...] = ("val", "test"),
    *,
    intervals: bool = True,
    seed: int = 0,
) -> dict[str, dict[str, Any]]:
    return {
        s: evaluate(checkpoint.model, dataset.split(s), num_classes=dataset.num_classes, intervals=intervals, seed=seed)
        for s in splits
    }


def run_pretrain(
    dataset: DermDataset,
    model_config: ModelConfig,
    train_config: TrainConfig,
    *,
    out: Path | None = None,
    resume: bool = True,
    preset: str = "",
    log: Callable[[str], None] = print,
) -> Path:
    """Pre-train, then print the best checkpoint's val/test table with bootstrap intervals."""
    log(dataset.describe())
    out = out or _default_out(dataset, model_config, train_config)
    if preset:
        log(f"preset: {preset}; model {model_config}; training {train_config}")
    result = pretrain(dataset, model_config, train_config, out, resume=resume, log=log)
    (out / "done").write_text("finished\n")
    ckpt = load_checkpoint(result.best_path, dataset=dataset)
    for split, m in evaluate_splits(ckpt, dataset).items():
        log(
            paper_table(
                {f"Vanilla (epoch {result.best_epoch})": m},
                dataset.group_names,
                title=f"{split} split, 95% bootstrap intervals in brackets",
            )
        )
    log(f"best checkpoint: {result.best_path}")
    return result.best_path


# -- pruning -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class PruneConfig:
    """One FairPrune/OBD run. Curvature batch defaults depend on the dataset (see ``for_dataset``)."""

    beta: float = 0.33
    step_ratio: float = 0.05
    final_ratio: float = 0.35
    estimator: str = "exact"  # exact | mc | fisher
    mc_samples: int = 1
    batch_size: int = 32  # curvature mini-batch size per group
    num_batches: int = 8  # curvature mini-batches per group per pruning step
    max_sub_batch: int | None = None
    seed: int = 0
    privileged: int | None = None  # None: the group the vanilla model is more accurate on
    stop_eopp1: float | None = None  # stop once validation Eopp1 <= this

    def __post_init__(self) -> None:
        PruneSchedule(self.step_ratio, self.final_ratio)  # validates the ranges
        CurvatureConfig(estimator=self.estimator, mc_samples=self.mc_samples)  # type: ignore[arg-type]
        if not (math.isfinite(self.beta) and self.beta >= 0):
            raise ValueError(f"beta must be a finite number >= 0, got {self.beta}")
        if self.batch_size < 1 or self.num_batches < 1:
            raise ValueError("curvature batch_size and num_batches must be >= 1")
        if self.privileged not in (None, 0, 1):
            raise ValueError(f"privileged must be 0, 1 or None (auto), got {self.privileged}")

    @staticmethod
    def curvature_defaults(dataset_name: str) -> dict[str, Any]:
        """The paper's curvature sampling per dataset (Sec. 4, "Pruning Details")."""
        return {
            "isic2019": dict(batch_size=64, num_batches=200),
            "fitzpatrick17k": dict(batch_size=2, num_batches=500, estimator="mc"),
        }.get(dataset_name, dict(batch_size=32, num_batches=8))

    def curvature_config(self) -> CurvatureConfig:
        return CurvatureConfig(
            estimator=self.estimator,  # type: ignore[arg-type]
            mc_samples=self.mc_samples,
            max_sub_batch=self.max_sub_batch,
            seed=self.seed,
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class CurvatureData:
    """The seeded curvature samplers of one pruning problem."""

    unprivileged: GroupSampler
    privileged: GroupSampler
    all: GroupSampler
    privileged_group: int


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
    checkpoint: Checkpoint, dataset: DermDataset, config: PruneConfig, log: Callable[[str], None] = print
) -> int:
    detected, acc = detect_privileged(checkpoint.model, dataset.split("val"), num_classes=dataset.num_classes)
    names = dataset.group_names
    accs = ", ".join(f"{names[g]} {acc[g]:.3f}" for g in (0, 1))
    if config.privileged is None:
        log(f"privileged group: {names[detected]} (vanilla validation accuracy {accs})")
        return detected
    note = "" if config.privileged == detected else f"; the vanilla model is more accurate on {names[detected]}"
    log(f"privileged group: {names[config.privileged]} (given{note}; validation accuracy {accs})")
    return config.privileged


def run_method(
    method: str,
    checkpoint: Checkpoint,
    dataset: DermDataset,
    config: PruneConfig,
    data: CurvatureData,
    *,
    curvature: CurvatureBackend | None = None,
    initial_curvature: dict[str, DiagSums] | None = None,
    log: Callable[[str], None] | None = print,
    on_step: Callable[[dict[str, float]], None] | None = None,
) -> PruneResult:
    """Run FairPrune or OBD from ``checkpoint`` with ``config`` (validation metrics per step)."""
    backend = curvature or LocalCurvature(config.curvature_config())
    common = dict(
        step_ratio=config.step_ratio,
        final_ratio=config.final_ratio,
        curvature=backend,
        validation=dataset.split("val"),
        num_classes=dataset.num_classes,
        initial_curvature=initial_curvature,
        log=log,
        on_step=on_step,
    )
    if method == "obd":
        return obd(checkpoint.model, data.all, **common)
    if method != "fairprune":
        raise ValueError(f"unknown method {method!r}; choose fairprune or obd")
    stop = {"eopp1": config.stop_eopp1} if config.stop_eopp1 is not None else None
    return fairprune(checkpoint.model, data.unprivileged, data.privileged, beta=config.beta, stop_at=stop, **common)


def significance_lines(
    name: str, base: dict[str, Any], other: dict[str, Any], data: SplitArrays, num_classes: int, split: str
) -> list[str]:
    """Paired-bootstrap verdicts: is the change from ``base`` larger than sampling noise?"""
    res = paired_bootstrap(
        data.labels, base["predictions"], other["predictions"], data.groups, num_classes=num_classes, n_boot=1000
    )
    lines = []
    for key, label in (("eopp1", "Eopp1"), ("eodd", "Eodd"), ("avg_f1", "avg F1"), ("diff_f1", "F1 diff")):
        r = res[key]
        verdict = "larger than sampling noise" if r["significant"] else "INSIDE sampling noise (CI contains 0)"
        lines.append(
            f"  {name} vs Vanilla ({split}): d{label} {r['delta']:+.4f} "
            f"[{r['low']:+.4f}, {r['high']:+.4f}] -> {verdict}"
        )
    return lines


def run_comparison(
    checkpoint: Checkpoint,
    dataset: DermDataset,
    config: PruneConfig,
    *,
    methods: tuple[str, ...] = ("obd", "fairprune"),
    curvature: CurvatureBackend | None = None,
    out: Path | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Vanilla -> OBD -> FairPrune with one config; print the paper's tables on val and test."""
    checkpoint.check_dataset(dataset)
    privileged = resolve_privileged(checkpoint, dataset, config, log)
    data = curvature_data(dataset, config, privileged)
    backend = curvature or LocalCurvature(config.curvature_config())
    results: dict[str, PruneResult] = {}
    for method in methods:
        label = "OBD" if method == "obd" else f"FairPrune (beta={config.beta})"
        log(
            f"{label}: step {config.step_ratio:.0%} up to {config.final_ratio:.0%}, {config.estimator} curvature "
            f"from {config.num_batches} x {config.batch_size} samples per group per step"
        )
        results[method] = run_method(method, checkpoint, dataset, config, data, curvature=backend, log=log)
        if out is not None:
            path = save_pruned(
                out / f"{method}.pt",
                results[method],
                dataset=dataset,
                extra={"prune_config": config.to_dict(), "privileged": privileged},
            )
            log(f"saved {path}")
    tables: dict[str, dict[str, Any]] = {}
    for split in ("val", "test"):
        arrays = dataset.split(split)  # type: ignore[arg-type]
        rows = {"Vanilla": evaluate(checkpoint.model, arrays, num_classes=dataset.num_classes, intervals=True)}
        for method, res in results.items():
            name = (
                f"OBD (pr={res.achieved_ratio:.0%})"
                if method == "obd"
                else f"FairPrune (pr={res.achieved_ratio:.0%}, b={config.beta})"
            )
            rows[name] = evaluate(res.model, arrays, num_classes=dataset.num_classes, intervals=True)
        tables[split] = rows
        names = [
            f"{n} ({'privileged' if g == privileged else 'unprivileged'})" for g, n in enumerate(dataset.group_names)
        ]
        log(paper_table(rows, names, title=f"\n{dataset.name}, {split} split (95% bootstrap intervals)"))
        base = rows["Vanilla"]
        for name, m in list(rows.items())[1:]:
            for line in significance_lines(name.split(" (")[0], base, m, arrays, dataset.num_classes, split):
                log(line)
    return {"results": results, "tables": tables, "privileged": privileged}
