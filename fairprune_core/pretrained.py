"""A pre-trained model for a dataset and configuration: trained once, then reused by config hash."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from .checkpoint import load_checkpoint
from .datasets import DermDataset
from .evaluation import evaluate
from .model import ModelConfig
from .report import paper_table
from .stats import INTERVAL_METHOD
from .training import TrainConfig, TrainingMode, pretrain, pretrain_key

__all__ = ["DEFAULT_RUNS_DIR", "default_pretrain_dir", "ensure_pretrained", "run_pretrain"]

DEFAULT_RUNS_DIR = Path("fairprune_runs")


def default_pretrain_dir(
    dataset: DermDataset, model_config: ModelConfig, train_config: TrainConfig, mode: TrainingMode | None = None
) -> Path:
    key = pretrain_key(dataset, model_config, train_config, mode)
    prefix = dataset.name if mode is None or mode.name == "vanilla" else f"{dataset.name}-{mode.name}"
    return DEFAULT_RUNS_DIR / "pretrain" / f"{prefix}-{key}"


def ensure_pretrained(
    dataset: DermDataset,
    model_config: ModelConfig,
    train_config: TrainConfig,
    *,
    out: Path | None = None,
    mode: TrainingMode | None = None,
    log: Callable[[str], None] = print,
) -> Path:
    """Path of a finished pre-training for this exact config (and training mode), training (or
    resuming) if needed."""
    out = out or default_pretrain_dir(dataset, model_config, train_config, mode)
    best = out / "best.pt"
    what = "pre-trained model" if mode is None or mode.name == "vanilla" else f"{mode.name} model"
    if best.is_file() and (out / "done").is_file():
        log(f"reusing {what} {best} (same data and configuration)")
        return best
    verb = "pre-training" if mode is None or mode.name == "vanilla" else f"training the {mode.name} baseline:"
    log(
        f"{verb} VGG-11 (width {model_config.width}, {model_config.image_size}px, "
        f"{train_config.epochs} epochs) -> {out}"
    )
    pretrain(dataset, model_config, train_config, out, resume=True, log=log, mode=mode)
    (out / "done").write_text("finished\n")
    return best


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
    """Pre-train, then print the best checkpoint's val/test table with BCa bootstrap intervals."""
    log(dataset.describe())
    out = out or default_pretrain_dir(dataset, model_config, train_config)
    if preset:
        log(f"preset: {preset}; model {model_config}; training {train_config}")
    result = pretrain(dataset, model_config, train_config, out, resume=resume, log=log)
    (out / "done").write_text("finished\n")
    ckpt = load_checkpoint(result.best_path, dataset=dataset)
    for split in ("val", "test"):
        m = evaluate(ckpt.model, dataset.split(split), num_classes=dataset.num_classes, intervals=True)
        log(
            paper_table(
                {f"Vanilla (epoch {result.best_epoch})": m},
                dataset.group_names,
                title=f"{split} split, 95% {INTERVAL_METHOD} bootstrap intervals in brackets",
            )
        )
    log(f"best checkpoint: {result.best_path}")
    return result.best_path
