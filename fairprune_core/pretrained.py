"""A pre-trained model for a dataset and configuration: trained once, then reused by config hash;
or the user's own trained weights (``--weights``), imported once into a checkpoint of ours."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

from .checkpoint import load_checkpoint, save_checkpoint
from .datasets import DermDataset
from .evaluation import evaluate
from .models import ModelConfig, build_model, read_weights
from .report import paper_table
from .stats import INTERVAL_METHOD
from .training import TrainConfig, TrainingMode, pretrain, pretrain_key

__all__ = ["DEFAULT_RUNS_DIR", "default_pretrain_dir", "ensure_pretrained", "import_weights", "run_pretrain"]

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
    log(f"{verb} {model_config.describe()}, {train_config.epochs} epochs -> {out}")
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
        log(f"preset: {preset}; model {model_config.describe()}; training {train_config}")
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


def import_weights(
    dataset: DermDataset, model_config: ModelConfig, weights: Path, *, log: Callable[[str], None] = print
) -> Path:
    """A FairPrune checkpoint of the user's trained ``weights`` (:func:`~fairprune_core.models.read_weights`:
    checked name by name and shape by shape, nothing unpickled) for ``dataset``, written once to
    ``fairprune_runs/imported/<dataset>-<arch>-<hash>/best.pt`` and reused while the file, the model
    and the data are the same. The file records no training split, so the user's word stands for it."""
    digest = hashlib.sha256(Path(weights).read_bytes()).hexdigest()
    spec = {
        "weights": digest,
        "dataset": dataset.name,
        "manifest": dataset.manifest_fingerprint,
        "classes": dataset.class_names,
        "model": model_config.to_dict(),
    }
    key = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]
    best = DEFAULT_RUNS_DIR / "imported" / f"{dataset.name}-{model_config.arch}-{key}" / "best.pt"
    if best.is_file():
        log(f"reusing imported {model_config.describe()} from {weights}: {best}")
        return best
    state = read_weights(weights, model_config, note=log)
    model = build_model(model_config)
    model.load_state_dict({**model.state_dict(), **state})  # BatchNorm counters a file may lack
    save_checkpoint(
        best,
        model.eval(),
        dataset=dataset,
        extra={"weights_file": str(Path(weights).resolve()), "weights_sha256": digest},
    )
    log(
        f"imported {weights} as {model_config.describe()} with {model_config.num_classes} classes -> {best}. The "
        f"file records no training split: its validation and test figures are honest only if it never saw this "
        f"split's validation or test images (--split-seed, --manifest)"
    )
    return best
