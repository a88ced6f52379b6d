"""Inference over uint8 image arrays, and the evaluation every stage shares."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from .datasets import SplitArrays
from .metrics import fairness_metrics
from .models import to_model_input

__all__ = ["evaluate", "on_device", "predict", "resolve_device"]


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``"auto"`` (or None) picks CUDA when present, else the CPU."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


_ON_DEVICE: dict[tuple[int, tuple[int, ...], str], tuple[np.ndarray, torch.Tensor]] = {}


def on_device(images: np.ndarray, device: torch.device) -> torch.Tensor:
    """uint8 images as a tensor on ``device``: zero-copy on the CPU; copied to an accelerator once
    per array and kept there (a split evaluated after every pruning step crosses the bus once)."""
    if device.type == "cpu":
        return torch.from_numpy(np.ascontiguousarray(images))
    key = (id(images), images.shape, str(device))
    hit = _ON_DEVICE.get(key)
    if hit is None or hit[0] is not images:
        if len(_ON_DEVICE) >= 8:  # a few splits at a time; the oldest goes
            _ON_DEVICE.pop(next(iter(_ON_DEVICE)))
        hit = _ON_DEVICE[key] = (images, torch.from_numpy(np.ascontiguousarray(images)).to(device))
    return hit[1]


def predict(
    model: nn.Module,
    images: np.ndarray,
    *,
    batch_size: int = 256,
    device: str | torch.device | None = None,
) -> np.ndarray:
    """Logits ``(N, K)`` float32 for uint8 images ``(N, H, W, 3)``, in eval mode, on the model's
    device (or ``device``). The model's mode is restored afterwards.

    On the CPU the batches go in channels-last (the images' own layout, not copied to NCHW):
    oneDNN's convolutions take it 1.5-2x faster (``benchmarks/inference_layout.py``); the
    logits differ from an NCHW pass by float rounding only (about 1e-6, tested)."""
    device = next(model.parameters()).device if device is None else resolve_device(device)
    layout = torch.channels_last if device.type == "cpu" else torch.contiguous_format
    was_training = model.training
    model.eval()
    pixels = on_device(images, device)
    out = []
    try:
        with torch.no_grad():
            for start in range(0, len(images), batch_size):
                out.append(model(to_model_input(pixels[start : start + batch_size], memory_format=layout)).float())
    finally:
        model.train(was_training)
    return torch.cat(out).cpu().numpy() if out else np.zeros((0, 0), np.float32)


def evaluate(
    model: nn.Module,
    data: SplitArrays,
    *,
    num_classes: int,
    batch_size: int = 256,
    intervals: bool = False,
    n_boot: int = 1000,
    seed: int = 0,
    logits: np.ndarray | None = None,
) -> dict[str, Any]:
    """Fairness and per-group accuracy metrics of ``model`` on one split.

    With ``intervals`` the result also holds ``"intervals"``: 95% BCa bootstrap intervals per
    metric (:func:`fairprune_core.stats.bca_intervals`; each contains its estimate), and the
    result always holds ``"predictions"`` and ``"logits"``. ``logits``: the model's logits on this
    split, already computed (the last pruning step's validation pass): not computed again.
    """
    from .stats import bca_intervals

    if logits is None:
        logits = predict(model, data.images, batch_size=batch_size)
    elif logits.shape != (len(data.labels), num_classes):
        raise ValueError(
            f"logits of shape {logits.shape} for a split of {len(data.labels)} images and {num_classes} classes"
        )
    pred = logits.argmax(axis=1)
    result = fairness_metrics(data.labels, pred, data.groups, num_classes=num_classes)
    result["predictions"] = pred
    result["logits"] = logits
    if intervals:
        result["intervals"] = bca_intervals(
            data.labels, pred, data.groups, num_classes=num_classes, n_boot=n_boot, seed=seed
        )
    return result
