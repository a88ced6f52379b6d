"""Checkpoints that know what they were trained on, so a later stage can refuse a mismatch."""

from __future__ import annotations

import io
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .datasets import DermDataset
from .masks import apply_masks
from .models import ModelConfig, build_model, check_state_shapes, config_from_file

__all__ = [
    "Checkpoint",
    "CheckpointMismatch",
    "check_overwritable",
    "load_checkpoint",
    "save_checkpoint",
    "save_pruned",
]

FORMAT_VERSION = 1


class CheckpointMismatch(ValueError):
    """The checkpoint was trained on other classes, groups or another split of the data."""


@dataclass
class Checkpoint:
    model: nn.Module
    model_config: ModelConfig
    class_names: list[str]
    group_names: list[str]
    dataset_name: str
    manifest_fingerprint: str
    meta: dict[str, Any]

    @property
    def masks(self) -> dict[str, torch.Tensor] | None:
        """Pruning masks (True = kept) when this is a pruned model, else None."""
        return self.meta.get("masks")

    def check_dataset(self, dataset: DermDataset) -> None:
        """Raise :class:`CheckpointMismatch` unless ``dataset`` is the one trained on."""
        problems = []
        if dataset.class_names != self.class_names:
            problems.append(
                f"classes differ (checkpoint: {len(self.class_names)} classes "
                f"{self.class_names[:5]}..., data: {len(dataset.class_names)} {dataset.class_names[:5]}...)"
            )
        if dataset.group_names != self.group_names:
            problems.append(f"groups differ ({self.group_names} vs {dataset.group_names})")
        if dataset.manifest_fingerprint != self.manifest_fingerprint:
            problems.append(
                f"the split differs (manifest {self.manifest_fingerprint[:12]} vs "
                f"{dataset.manifest_fingerprint[:12]}): pruning or evaluating on another split "
                f"would leak training images into validation/test"
            )
        if dataset.image_size != self.model_config.image_size:
            problems.append(f"image size differs (model {self.model_config.image_size}px, data {dataset.image_size}px)")
        if problems:
            raise CheckpointMismatch(
                f"checkpoint for {self.dataset_name!r} does not match dataset {dataset.name!r}: "
                + "; ".join(problems)
                + ". Load the data with the options the checkpoint was trained with "
                "(same --image-size, --split-seed and files), or pre-train on this data."
            )


def _check_plain(payload: dict[str, Any]) -> None:
    """Every checkpoint written must load without unpickling objects (see :func:`load_checkpoint`):
    its metadata (everything but the tensors) is round-tripped in memory before anything is written."""
    buffer = io.BytesIO()
    torch.save({k: v for k, v in payload.items() if k not in ("state_dict", "masks")}, buffer)
    buffer.seek(0)
    try:
        torch.load(buffer, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise TypeError(
            f"checkpoint metadata must be tensors and plain data (str, numbers, lists, dicts): {exc}"
        ) from exc


def _ours(path: Path, keys: tuple[str, ...]) -> bool:
    """Whether ``path`` is a file FairPrune wrote: a torch file of plain data holding ``keys``."""
    try:
        payload = torch.load(path, map_location="meta", weights_only=True)
    except Exception:
        return False
    return isinstance(payload, dict) and all(k in payload for k in keys)


def check_overwritable(paths: list[Path], flag: str) -> None:
    """Refuse (before any work) to overwrite a file FairPrune did not write: each of ``paths`` must be
    absent, or a checkpoint, training state or marker of ours."""
    for path in paths:
        if not path.exists() and not path.is_symlink():
            continue
        kind = {"last.pt": ("key", "model", "optimizer"), "done": None}.get(path.name, ("format_version", "state_dict"))
        ours = path.is_file() and not path.is_symlink()
        if ours and kind is None:
            ours = path.read_bytes()[:64] == b"finished\n"
        elif ours:
            ours = _ours(path, kind)
        if not ours:
            raise FileExistsError(
                f"{flag} {path.parent}: {path} exists and was not written by FairPrune; nothing was changed. "
                f"Pass another {flag}, or move that file away"
            )


def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    *,
    dataset: DermDataset,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Atomically write model weights plus the dataset facts a later stage checks."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format_version": FORMAT_VERSION,
        "model_config": model.config.to_dict(),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "class_names": list(dataset.class_names),
        "group_names": list(dataset.group_names),
        "dataset_name": dataset.name,
        "dataset_spec": dataset.spec(),
        "manifest_fingerprint": dataset.manifest_fingerprint,
        **(extra or {}),
    }
    _check_plain(payload)
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)  # a failed write (a full disk) leaves no temporary file
    return path


_REQUIRED = ("model_config", "state_dict", "class_names", "group_names", "dataset_name", "manifest_fingerprint")


def load_checkpoint(path: str | Path, *, dataset: DermDataset | None = None, map_location: str = "cpu") -> Checkpoint:
    """Load a checkpoint written by :func:`save_checkpoint`; with ``dataset``, check it matches."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        # weights_only: tensors and plain data; a pickled object (which could run code) is refused
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise ValueError(
            f"{path} is not a FairPrune checkpoint: it holds Python objects beyond tensors and plain data, which "
            f"FairPrune never unpickles (unpickling can run code). Re-create it with sweeps/pretrain.py"
        ) from exc
    except Exception as exc:  # torch raises several types for a truncated or corrupt file
        raise ValueError(f"cannot read checkpoint {path} (truncated or not a torch file?): {exc}") from exc
    if not isinstance(payload, dict) or payload.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path} is not a FairPrune checkpoint (format {FORMAT_VERSION})")
    missing = [k for k in _REQUIRED if k not in payload]
    if missing:
        raise ValueError(f"{path} is not a whole FairPrune checkpoint: it lacks {', '.join(missing)}; re-create it")
    config = config_from_file(payload["model_config"], f"checkpoint {path}")
    state = payload["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"checkpoint {path}: its state_dict is not a mapping of tensors; re-create it")
    check_state_shapes(config, {k: tuple(v.shape) for k, v in state.items()}, f"checkpoint {path}")
    masks = payload.get("masks")
    if masks is not None:
        if not isinstance(masks, dict) or not all(isinstance(v, torch.Tensor) for v in masks.values()):
            raise ValueError(f"checkpoint {path}: its masks are not a mapping of tensors; re-create it")
        bad = [k for k, m in masks.items() if k not in state or tuple(m.shape) != tuple(state[k].shape)]
        if bad:
            raise ValueError(f"checkpoint {path}: masks that fit no weight ({', '.join(bad[:3])}); re-create it")
    model = build_model(config)
    model.load_state_dict(state)
    if payload.get("masks") is not None:
        apply_masks(model, payload["masks"])  # pruned weights are exactly zero, whatever was stored
    model.eval()
    known = {
        "format_version",
        "model_config",
        "state_dict",
        "class_names",
        "group_names",
        "dataset_name",
        "manifest_fingerprint",
    }
    ckpt = Checkpoint(
        model=model,
        model_config=config,
        class_names=list(payload["class_names"]),
        group_names=list(payload["group_names"]),
        dataset_name=payload["dataset_name"],
        manifest_fingerprint=payload["manifest_fingerprint"],
        meta={**{k: v for k, v in payload.items() if k not in known}, "path": str(path)},
    )
    if dataset is not None:
        ckpt.check_dataset(dataset)
    return ckpt


def save_pruned(
    path: str | Path,
    model: nn.Module,
    masks: dict[str, torch.Tensor],
    *,
    dataset: DermDataset,
    extra: dict[str, Any] | None = None,
) -> Path:
    """A checkpoint of a pruned model that also stores its masks (and whatever ``extra`` holds)."""
    return save_checkpoint(path, model, dataset=dataset, extra={"masks": masks, **(extra or {})})
