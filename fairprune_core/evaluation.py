"""Inference over uint8 image arrays, and the evaluation every stage shares."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from .datasets import SplitArrays
from .metrics import fairness_metrics
from .model import to_model_input

__all__ = ["evaluate", "predict", "resolve_device"]


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``"auto"`` (or None) picks CUDA when present, else the CPU."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


@torch.no_grad()
def predict(
    model: nn.Module,
    images: np.ndarray,
    *,
    batch_size: int = 256,
    device: str | torch.device | None = None,
) -> np.ndarray:
    """Logits ``(N, K)`` float32 for uint8 images ``(N, H, W, 3)``, in eval mode.

    The model's mode is restored afterwards.
    """
    device = next(model.parameters()).device if device is None else resolve_device(device)
    was_training = model.training
    model.eval()
    out = []
    try:
        for start in range(0, len(images), batch_size):
            x = to_model_input(torch.from_numpy(np.ascontiguousarray(images[start : start + batch_size])))
            out.append(model(x.to(device)).float().cpu())
    finally:
        model.train(was_training)
    return torch.cat(out).numpy() if out else np.zeros((0, 0), np.float32)


def evaluate(
    model: nn.Module,
    data: SplitArrays,
    *,
    num_classes: int,
    batch_size: int = 256,
    intervals: bool = False,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Fairness and per-group accuracy metrics of ``model`` on one split.

    With ``intervals`` the result also holds ``"intervals"``: 95% BCa bootstrap intervals per
    metric (:func:`fairprune_core.stats.bca_intervals`; each contains its estimate), and the
    result always holds ``"predictions"``.
    """
    from .stats import bca_intervals

    logits = predict(model, data.images, batch_size=batch_size)
    pred = logits.argmax(axis=1)
    result = fairness_metrics(data.labels, pred, data.groups, num_classes=num_classes)
    result["predictions"] = pred
    if intervals:
        result["intervals"] = bca_intervals(
            data.labels, pred, data.groups, num_classes=num_classes, n_boot=n_boot, seed=seed
        )
    return result
