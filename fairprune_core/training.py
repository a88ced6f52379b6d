"""Vanilla pre-training (Sec. 4, "Pre-training Details"), resumable, keeping the best epoch."""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import torch
from torch import nn
from torch.utils.data import DataLoader

from .checkpoint import save_checkpoint
from .datasets import DermDataset, SplitArrays
from .datasets.device_batches import DeviceBatches
from .datasets.transforms import AugmentedImages, collate_to_input, train_augmentation
from .evaluation import evaluate, resolve_device
from .models import ModelConfig, ModelFileError, build_model, initial_state

__all__ = ["TrainConfig", "TrainResult", "TrainingMode", "VanillaMode", "pretrain", "pretrain_key"]


@dataclass(frozen=True)
class TrainConfig:
    """Pre-training settings; the defaults are the paper's."""

    epochs: int = 200
    batch_size: int = 256
    lr: float = 1e-4  # Adam
    lr_milestones: tuple[int, ...] = (160,)  # epochs at which the lr is multiplied by lr_gamma
    lr_gamma: float = 0.1
    weight_decay: float = 0.0
    augment: Literal["paper", "flips", "none"] = "paper"  # paper: flips, rotation, scaling, AutoAugment
    seed: int = 0
    select_metric: Literal["avg_f1", "accuracy"] = "avg_f1"  # best-checkpoint criterion (val)
    num_workers: int = 0  # DataLoader workers for augmentation
    device: str = "auto"
    init_weights: str | None = None  # start from this weights file (fine-tuning); None: random initialisation

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.augment not in ("paper", "flips", "none"):
            raise ValueError(f"augment must be 'paper', 'flips' or 'none', got {self.augment!r}")
        if self.select_metric not in ("avg_f1", "accuracy"):
            raise ValueError(f"select_metric must be 'avg_f1' or 'accuracy', got {self.select_metric!r}")
        object.__setattr__(self, "lr_milestones", tuple(int(m) for m in self.lr_milestones))
        if self.init_weights is not None and not Path(self.init_weights).is_file():
            raise ValueError(f"--weights {self.init_weights}: no such file")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TrainResult:
    best_path: Path
    last_path: Path
    best_epoch: int
    best_metrics: dict[str, float]
    history: list[dict[str, float]] = field(default_factory=list)


class TrainingMode(Protocol):
    """What one training step optimises: vanilla cross-entropy, or a debiasing objective.

    The loop (data, augmentation, schedule, checkpoints, resume, best-epoch selection) is the
    same for every mode; a mode supplies the network to train, the step, and the model that is
    evaluated and saved (the plain architecture with one output per class).
    """

    name: str

    def params(self) -> dict[str, Any]:
        """Hyper-parameters (part of the cache key)."""
        ...

    def build(self, model_config: ModelConfig, *, seed: int, device: torch.device, lr: float) -> nn.Module: ...

    def step(self, model: nn.Module, optimizer: Any, x: torch.Tensor, y: torch.Tensor, g: torch.Tensor) -> float:
        """One update on a mini-batch; returns the task (classification) loss."""
        ...

    def trained_model(self, model: nn.Module) -> nn.Module: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class VanillaMode:
    """Plain cross-entropy on the labels (the paper's vanilla pre-training)."""

    name = "vanilla"

    def params(self) -> dict[str, Any]:
        return {}

    def build(self, model_config: ModelConfig, *, seed: int, device: torch.device, lr: float) -> nn.Module:
        return build_model(model_config, seed=seed).to(device)

    def step(self, model: nn.Module, optimizer: Any, x: torch.Tensor, y: torch.Tensor, g: torch.Tensor) -> float:
        optimizer.zero_grad(set_to_none=True)
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        return float(loss.item())

    def trained_model(self, model: nn.Module) -> nn.Module:
        return model

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


def pretrain_key(
    dataset: DermDataset, model_config: ModelConfig, train_config: TrainConfig, mode: TrainingMode | None = None
) -> str:
    """A short hash of everything that determines a pre-trained model (for reuse by config).

    A vanilla model's key is what it always was; another mode adds its name and parameters."""
    cfg = {k: v for k, v in train_config.to_dict().items() if k not in ("num_workers", "device", "init_weights")}
    if train_config.init_weights is not None:  # the file's content, not its name (absent: the key as before)
        cfg["init_weights_sha256"] = hashlib.sha256(Path(train_config.init_weights).read_bytes()).hexdigest()
    spec = {
        "dataset": dataset.name,
        "manifest": dataset.manifest_fingerprint,
        "classes": dataset.class_names,
        "model": model_config.to_dict(),
        "train": cfg,
    }
    if mode is not None and mode.name != "vanilla":
        spec["mode"] = {"name": mode.name, **mode.params()}
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]


def _val_score(metrics: dict[str, Any], select: str) -> float:
    if select == "accuracy":
        n = metrics["support"]
        acc = metrics["groups"]
        return (acc[0]["accuracy"] * n[0] + acc[1]["accuracy"] * n[1]) / (n[0] + n[1])
    return metrics["avg"]["f1"]


@dataclass
class _Progress:
    """Where a pre-training run stands (what ``last.pt`` keeps besides the optimizer)."""

    start_epoch: int = 0
    best_score: float = -math.inf
    best_epoch: int = -1
    best_metrics: dict[str, float] = field(default_factory=dict)
    history: list[dict[str, float]] = field(default_factory=list)


def _check_fits(dataset: DermDataset, model_config: ModelConfig) -> None:
    if model_config.num_classes != dataset.num_classes:
        raise ValueError(f"model has {model_config.num_classes} classes but {dataset.name} has {dataset.num_classes}")
    if model_config.image_size != dataset.image_size:
        raise ValueError(
            f"model input is {model_config.image_size}px but the data was cached at "
            f"{dataset.image_size}px; load the dataset with image_size={model_config.image_size}"
        )


def _restore(
    last_path: Path, key: str, model: nn.Module, optimizer: Any, scheduler: Any, mode: TrainingMode, device: Any
) -> _Progress:
    """Continue from ``last.pt`` (tensors and plain values only: nothing is unpickled). A file that
    cannot be resumed from is a :class:`~fairprune_core.models.ModelFileError` naming it, before the
    model, optimizer or RNG are touched."""
    fix = "it is damaged or was edited: delete it (training starts over) or pass --no-resume"
    try:
        state = torch.load(last_path, map_location=device, weights_only=True)
    except Exception as exc:  # UnpicklingError (objects beyond tensors), a truncated file, ...
        reason = str(exc).strip().splitlines()[0][:120] if str(exc).strip() else type(exc).__name__
        raise ModelFileError(f"cannot resume from {last_path} ({reason}); {fix}") from None
    if not isinstance(state, dict):
        raise ModelFileError(f"cannot resume from {last_path} (not a FairPrune training state); {fix}")
    if state.get("key") != key:
        raise ModelFileError(
            f"{last_path} was written by a run with another configuration or dataset; "
            f"use a new output folder or resume=False to start over"
        )
    try:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        mode.load_state_dict(state.get("mode", {}))
        torch.set_rng_state(state["rng"])
        return _Progress(
            int(state["epoch"]) + 1, state["best_score"], state["best_epoch"], state["best_metrics"], state["history"]
        )
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as exc:
        reason = f"{type(exc).__name__}: {exc}".splitlines()[0][:160]
        raise ModelFileError(f"cannot resume from {last_path} ({reason}); {fix}") from None


def _save_last(
    last_path: Path,
    key: str,
    model: nn.Module,
    optimizer: Any,
    scheduler: Any,
    mode: TrainingMode,
    p: _Progress,
    epoch: int,
) -> None:
    tmp = last_path.with_suffix(".tmp")
    state = {
        "key": key,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "mode": mode.state_dict(),
        "rng": torch.get_rng_state(),
        "epoch": epoch,
        "best_score": p.best_score,
        "best_epoch": p.best_epoch,
        "best_metrics": p.best_metrics,
        "history": p.history,
    }
    try:
        torch.save(state, tmp)
        tmp.replace(last_path)
    finally:
        tmp.unlink(missing_ok=True)  # a failed write (a full disk) leaves no temporary file


def _train_epoch(
    model: nn.Module,
    mode: TrainingMode,
    loader: Iterable[tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
    optimizer: Any,
    device: Any,
    epoch: int,
    log: Callable[[str], None],
) -> float:
    """One pass over the training data; the mean task loss (progress printed every 15 s)."""
    model.train()
    total, seen = 0.0, 0
    last_report = time.monotonic()
    cuda = torch.device(device).type == "cuda"
    # batch norm in training mode cannot normalise one sample: a last batch of one is skipped
    batch_norm = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    for b, (x, y, g) in enumerate(loader):
        if batch_norm and len(y) < 2:
            continue
        x, y, g = (t.to(device, non_blocking=True) for t in (x, y, g))
        if cuda:
            x = x.contiguous(memory_format=torch.channels_last)
        # bf16 autocast on a GPU (training only; curvature and evaluation stay float32)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
            loss = mode.step(model, optimizer, x, y, g)
        total += loss * len(y)
        seen += len(y)
        if time.monotonic() - last_report > 15:
            last_report = time.monotonic()
            log(f"  epoch {epoch + 1}: batch {b + 1}/{len(loader)}, loss {total / seen:.4f}")
    return total / max(seen, 1)


def _initialise(model: nn.Module, path: str, log: Callable[[str], None]) -> None:
    """Start from the weights in ``path`` (a head for other classes stays freshly initialised)."""
    state = initial_state(path, model.config, note=log)
    model.load_state_dict({**model.state_dict(), **state})
    log(f"initialised {model.config.describe()} from {path} ({len(state)} tensors)")


def _loader(train: SplitArrays, config: TrainConfig, device: torch.device) -> Any:
    """On a GPU, batches made and augmented there (per-sample, batched); on a CPU, a DataLoader."""
    if device.type == "cuda":
        return DeviceBatches(train, batch_size=config.batch_size, device=device, augment=config.augment)
    return DataLoader(
        AugmentedImages(train, train_augmentation(config.augment)),
        batch_size=config.batch_size,
        shuffle=True,
        num_workers=config.num_workers,
        collate_fn=collate_to_input,
        drop_last=False,
    )


def pretrain(
    dataset: DermDataset,
    model_config: ModelConfig,
    config: TrainConfig,
    out_dir: str | Path,
    *,
    resume: bool = True,
    log: Callable[[str], None] = print,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
    mode: TrainingMode | None = None,
) -> TrainResult:
    """Train the model ``model_config`` describes (any architecture) on ``dataset``'s train split,
    selecting the best epoch on validation.

    ``mode`` is the objective of each step (default: vanilla cross-entropy; the training-time
    debiasing baselines in :mod:`fairprune_core.methods` are modes of this same loop).

    ``out_dir`` receives ``best.pt`` (a :mod:`fairprune_core.checkpoint` checkpoint) and
    ``last.pt`` (optimizer, scheduler and RNG state as well). With ``resume``, a ``last.pt``
    written with the same configuration is continued from its next epoch; one written with
    another configuration is an error (use another ``out_dir``).
    """
    _check_fits(dataset, model_config)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    best_path, last_path = out_dir / "best.pt", out_dir / "last.pt"
    device = resolve_device(config.device)
    mode = mode or VanillaMode()
    key = pretrain_key(dataset, model_config, config, mode)

    torch.manual_seed(config.seed)
    model = mode.build(model_config, seed=config.seed, device=device, lr=config.lr)
    if config.init_weights is not None:
        _initialise(model, config.init_weights, log)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(
        optimizer, milestones=list(config.lr_milestones), gamma=config.lr_gamma
    )
    p = _Progress()
    if resume and last_path.is_file():
        p = _restore(last_path, key, model, optimizer, scheduler, mode, device)
        log(f"resuming from {last_path} at epoch {p.start_epoch + 1}/{config.epochs}")

    train, val = dataset.split("train"), dataset.split("val")
    loader = _loader(train, config, device)
    for epoch in range(p.start_epoch, config.epochs):
        t0 = time.monotonic()
        train_loss = _train_epoch(model, mode, loader, optimizer, device, epoch, log)
        scheduler.step()
        metrics = evaluate(
            mode.trained_model(model), val, num_classes=dataset.num_classes, batch_size=max(config.batch_size, 256)
        )
        score = _val_score(metrics, config.select_metric)
        row = {
            "epoch": epoch + 1,
            "train_loss": train_loss,
            "val_score": score,
            "val_avg_f1": metrics["avg"]["f1"],
            "val_eopp1": metrics["eopp1"],
            "lr": optimizer.param_groups[0]["lr"],
            "seconds": time.monotonic() - t0,
        }
        p.history.append(row)
        improved = score > p.best_score
        if improved:
            p.best_score, p.best_epoch = score, epoch + 1
            p.best_metrics = {k: v for k, v in row.items() if k != "seconds"}
            extra = {
                "train_config": config.to_dict(),
                "training_mode": {"name": mode.name, **mode.params()},
                "epoch": epoch + 1,
                "val": p.best_metrics,
                "pretrain_key": key,
            }
            save_checkpoint(best_path, mode.trained_model(model), dataset=dataset, extra=extra)
        _save_last(last_path, key, model, optimizer, scheduler, mode, p, epoch)
        log(
            f"epoch {epoch + 1}/{config.epochs}  loss {train_loss:.4f}  "
            f"val {config.select_metric} {score:.4f}  val Eopp1 {row['val_eopp1']:.4f}  "
            f"{row['seconds']:.1f}s" + ("  (best)" if improved else "")
        )
        if on_epoch is not None:
            on_epoch(epoch + 1, row)
    return TrainResult(best_path, last_path, p.best_epoch, p.best_metrics, p.history)
