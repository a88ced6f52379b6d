"""A pre-trained model for a dataset and configuration: trained once, then reused by config hash."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from .checkpoint import load_checkpoint
from .datasets import DermDataset
from .evaluation import evaluate
from .model import ModelConfig
from .report import paper_table
from .training import TrainConfig, pretrain, pretrain_key

__all__ = ["DEFAULT_RUNS_DIR", "default_pretrain_dir", "ensure_pretrained", "run_pretrain"]

DEFAULT_RUNS_DIR = Path("fairprune_runs")


def default_pretrain_dir(dataset: DermDataset, model_config: ModelConfig, train_config: TrainConfig) -> Path:
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
    out = out or default_pretrain_dir(dataset, model_config, train_config)
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
                title=f"{split} split, 95% bootstrap intervals in brackets",
            )
        )
    log(f"best checkpoint: {result.best_path}")
    return result.best_path
