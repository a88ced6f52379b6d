"""Fairness and per-group accuracy metrics (Sec. 4 of the paper), with bootstrap intervals.

Everything goes through one engine, :func:`group_confusion`, which counts a
``(groups, classes, classes)`` confusion tensor (rows: true class, columns: predicted class).
Every metric below is a function of that tensor, so bootstrap resamples are just other tensors.

Conventions (see FACTS.md):

* Per class ``k`` and group ``c``, one-vs-rest counts give
  ``TPR_k^c = TP/(TP+FN)``, ``TNR_k^c = TN/(TN+FP)``, ``FPR_k^c = FP/(TN+FP)``.
* The paper writes Eq. (5)-(6) as sums over classes,
  ``Eopp0 = sum_k |TNR_k^1 - TNR_k^0|``, ``Eopp1 = sum_k |TPR_k^1 - TPR_k^0|``,
  ``Eodd = sum_k |TPR_k^1 - TPR_k^0 + FPR_k^1 - FPR_k^0|``, but its Table 1 values are only
  possible as MEANS over classes, which is what the authors' code computes. We use means:
  ``Eopp0 = mean_k |TNR_k^1 - TNR_k^0|``, ``Eopp1 = mean_k |TPR_k^1 - TPR_k^0|``,
  ``Eodd = mean_k |(TPR_k^1 - TPR_k^0) + (FPR_k^1 - FPR_k^0)| / 2``.
* A rate is undefined in a group where its denominator is zero (a class with no positives, or
  no negatives, in that group). Such a class is left out of that metric's mean; if no class is
  left the metric is NaN.
* Per-group precision, recall and F1 are macro averages over the classes that occur in that
  group's labels or predictions, with 0 for a zero denominator (scikit-learn's
  ``average="macro"``, ``zero_division=0``). Accuracy is the fraction correct.
* ``avg`` is the mean of the two groups, ``diff`` the absolute difference (the paper's rows).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = [
    "FAIRNESS_KEYS",
    "GROUP_KEYS",
    "bootstrap_intervals",
    "bootstrap_samples",
    "fairness_metrics",
    "flatten_metrics",
    "group_confusion",
    "metrics_from_confusion",
    "paired_bootstrap",
]

GROUP_KEYS = ("precision", "recall", "f1", "accuracy")
FAIRNESS_KEYS = ("eopp0", "eopp1", "eodd")


def _check_inputs(
    y_true: Sequence[int] | np.ndarray,
    y_pred: Sequence[int] | np.ndarray,
    groups: Sequence[int] | np.ndarray,
    num_classes: int | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred)
    groups = np.asarray(groups)
    if not (y_true.shape == y_pred.shape == groups.shape) or y_true.ndim != 1:
        raise ValueError(
            f"y_true, y_pred and groups must be 1-D of one length; got shapes "
            f"{y_true.shape}, {y_pred.shape}, {groups.shape}"
        )
    if y_true.size == 0:
        raise ValueError("cannot compute metrics on zero samples")
    for name, arr in (("y_true", y_true), ("y_pred", y_pred), ("groups", groups)):
        if not np.issubdtype(arr.dtype, np.integer):
            raise ValueError(f"{name} must hold integer ids, got dtype {arr.dtype}")
        if arr.min() < 0:
            raise ValueError(f"{name} holds negative ids (min {arr.min()})")
    bad_groups = sorted(set(np.unique(groups).tolist()) - {0, 1})
    if bad_groups:
        raise ValueError(f"groups must be binary ids 0/1; found {bad_groups}")
    for g in (0, 1):
        if not (groups == g).any():
            raise ValueError(f"group {g} has no samples; fairness metrics need both groups")
    k = int(max(y_true.max(), y_pred.max())) + 1
    if num_classes is not None:
        if k > num_classes:
            raise ValueError(f"labels go up to {k - 1} but num_classes={num_classes}")
        k = num_classes
    return y_true.astype(np.int64), y_pred.astype(np.int64), groups.astype(np.int64), k


def group_confusion(
    y_true: np.ndarray, y_pred: np.ndarray, groups: np.ndarray, num_classes: int | None = None
) -> np.ndarray:
    """Confusion counts per group: ``(2, K, K)`` int64, ``[g, true, pred]``."""
    y_true, y_pred, groups, k = _check_inputs(y_true, y_pred, groups, num_classes)
    flat = (groups * k + y_true) * k + y_pred
    return np.bincount(flat, minlength=2 * k * k).reshape(2, k, k)


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    out = np.full(np.broadcast(num, den).shape, np.nan)
    np.divide(num, den, out=out, where=den > 0)
    return out


def _nanmean(x: np.ndarray, axis: int) -> np.ndarray:
    valid = ~np.isnan(x)
    n = valid.sum(axis=axis)
    s = np.where(valid, x, 0.0).sum(axis=axis)
    return _safe_div(s, n.astype(float))


def metrics_from_confusion(conf: np.ndarray) -> dict[str, np.ndarray]:
    """All metrics from confusion tensors ``(..., 2, K, K)``; each value has shape ``(...)``.

    Returns flat keys: ``eopp0``, ``eopp1``, ``eodd``, ``{g}_{metric}`` for g in 0/1 and
    ``avg_``/``diff_`` for precision, recall, f1, accuracy.
    """
    conf = conf.astype(np.float64)
    tp = np.diagonal(conf, axis1=-2, axis2=-1)  # (..., 2, K)
    pos = conf.sum(axis=-1)  # true count per class
    pred = conf.sum(axis=-2)  # predicted count per class
    total = conf.sum(axis=(-2, -1))[..., None]  # (..., 2, 1)
    fn, fp = pos - tp, pred - tp
    tn = total - tp - fn - fp
    neg = total - pos

    tpr = _safe_div(tp, pos)
    tnr = _safe_div(tn, neg)
    fpr = _safe_div(fp, neg)
    d_tpr = tpr[..., 1, :] - tpr[..., 0, :]
    d_tnr = tnr[..., 1, :] - tnr[..., 0, :]
    d_fpr = fpr[..., 1, :] - fpr[..., 0, :]
    out: dict[str, np.ndarray] = {
        "eopp0": _nanmean(np.abs(d_tnr), axis=-1),
        "eopp1": _nanmean(np.abs(d_tpr), axis=-1),
        "eodd": _nanmean(np.abs(d_tpr + d_fpr) / 2, axis=-1),
    }

    # macro P/R/F1 over classes present in the group's labels or predictions (sklearn default)
    present = (pos + pred) > 0  # (..., 2, K)
    prec = np.where(pred > 0, _safe_div(tp, pred), 0.0)
    rec = np.where(pos > 0, _safe_div(tp, pos), 0.0)
    f1 = np.where(2 * tp + fp + fn > 0, _safe_div(2 * tp, 2 * tp + fp + fn), 0.0)
    n_present = present.sum(axis=-1)
    per_group = {
        "precision": _safe_div((prec * present).sum(-1), n_present),
        "recall": _safe_div((rec * present).sum(-1), n_present),
        "f1": _safe_div((f1 * present).sum(-1), n_present),
        "accuracy": _safe_div(tp.sum(-1), total[..., 0]),
    }
    for key, val in per_group.items():
        out[f"0_{key}"] = val[..., 0]
        out[f"1_{key}"] = val[..., 1]
        out[f"avg_{key}"] = (val[..., 0] + val[..., 1]) / 2
        out[f"diff_{key}"] = np.abs(val[..., 0] - val[..., 1])
    return out


def fairness_metrics(
    y_true: Sequence[int] | np.ndarray,
    y_pred: Sequence[int] | np.ndarray,
    groups: Sequence[int] | np.ndarray,
    *,
    num_classes: int | None = None,
) -> dict[str, Any]:
    """Eopp0, Eopp1, Eodd and per-group precision/recall/F1/accuracy (see module docstring).

    Returns ``{"eopp0", "eopp1", "eodd": float, "groups": {0: {...}, 1: {...}},
    "avg": {...}, "diff": {...}, "support": {0: n0, 1: n1}}``.
    """
    conf = group_confusion(np.asarray(y_true), np.asarray(y_pred), np.asarray(groups), num_classes)
    flat = {k: float(v) for k, v in metrics_from_confusion(conf).items()}
    return {
        **{k: flat[k] for k in FAIRNESS_KEYS},
        "groups": {g: {k: flat[f"{g}_{k}"] for k in GROUP_KEYS} for g in (0, 1)},
        "avg": {k: flat[f"avg_{k}"] for k in GROUP_KEYS},
        "diff": {k: flat[f"diff_{k}"] for k in GROUP_KEYS},
        "support": {g: int(conf[g].sum()) for g in (0, 1)},
    }


def flatten_metrics(metrics: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """``fairness_metrics`` output -> flat ``{name: value}`` (for logging and tables)."""
    flat = {f"{prefix}{k}": float(metrics[k]) for k in FAIRNESS_KEYS}
    for g, vals in metrics["groups"].items():
        flat.update({f"{prefix}g{g}_{k}": float(v) for k, v in vals.items()})
    for row in ("avg", "diff"):
        flat.update({f"{prefix}{row}_{k}": float(v) for k, v in metrics[row].items()})
    return flat


def _resampled_confusions(
    y_true: np.ndarray,
    preds: list[np.ndarray],
    groups: np.ndarray,
    k: int,
    rng: np.random.Generator,
    n: int,
) -> list[np.ndarray]:
    """``n`` bootstrap confusion tensors per prediction vector, resampling within each group.

    Resampling within groups keeps each group's size fixed, as in the evaluation set.
    """
    idx_by_group = [np.flatnonzero(groups == g) for g in (0, 1)]
    draws = np.concatenate([ix[rng.integers(len(ix), size=(n, len(ix)))] for ix in idx_by_group], axis=1)  # (n, N)
    out = []
    offsets = (np.arange(n) * 2 * k * k)[:, None]
    for pred in preds:
        flat = (groups[draws] * k + y_true[draws]) * k + pred[draws] + offsets
        out.append(np.bincount(flat.ravel(), minlength=n * 2 * k * k).reshape(n, 2, k, k))
    return out


def bootstrap_samples(
    y_true: np.ndarray, y_pred: np.ndarray, groups: np.ndarray, k: int, *, n_boot: int, seed: int
) -> dict[str, np.ndarray]:
    """``n_boot`` seeded bootstrap values of every flat metric (resampling within groups)."""
    rng = np.random.default_rng(seed)
    chunks: dict[str, list[np.ndarray]] = {}
    for start in range(0, n_boot, 200):
        (conf,) = _resampled_confusions(y_true, [y_pred], groups, k, rng, min(200, n_boot - start))
        for key, val in metrics_from_confusion(conf).items():
            chunks.setdefault(key, []).append(val)
    return {key: np.concatenate(vals) for key, vals in chunks.items()}


def bootstrap_intervals(
    y_true: Sequence[int] | np.ndarray,
    y_pred: Sequence[int] | np.ndarray,
    groups: Sequence[int] | np.ndarray,
    *,
    num_classes: int | None = None,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, tuple[float, float]]:
    """Seeded percentile bootstrap intervals for every flat metric (resampling within groups).

    Returns ``{metric: (low, high)}`` with the keys of :func:`metrics_from_confusion`.
    """
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if n_boot < 10:
        raise ValueError(f"n_boot must be >= 10, got {n_boot}")
    y_true, y_pred, groups, k = _check_inputs(y_true, y_pred, groups, num_classes)
    samples = bootstrap_samples(y_true, y_pred, groups, k, n_boot=n_boot, seed=seed)
    alpha = (1 - level) / 2
    out = {}
    for key, vals in samples.items():
        vals = vals[~np.isnan(vals)]
        out[key] = (
            (float(np.quantile(vals, alpha)), float(np.quantile(vals, 1 - alpha)))
            if vals.size
            else (float("nan"), float("nan"))
        )
    return out


def paired_bootstrap(
    y_true: Sequence[int] | np.ndarray,
    y_pred_a: Sequence[int] | np.ndarray,
    y_pred_b: Sequence[int] | np.ndarray,
    groups: Sequence[int] | np.ndarray,
    *,
    num_classes: int | None = None,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, dict[str, float | bool]]:
    """Is model B's change from model A larger than sampling noise? (paired bootstrap)

    Both models are evaluated on the same resampled sets, so the interval of the difference
    ``metric(B) - metric(A)`` accounts for the correlation between them. ``significant`` is
    True when that interval excludes zero. Returns ``{metric: {"delta", "low", "high",
    "significant"}}``.
    """
    y_true, y_pred_a, groups, k = _check_inputs(y_true, y_pred_a, groups, num_classes)
    _, y_pred_b, _, k_b = _check_inputs(y_true, y_pred_b, groups, num_classes)
    k = max(k, k_b)
    point_a = metrics_from_confusion(group_confusion(y_true, y_pred_a, groups, k))
    point_b = metrics_from_confusion(group_confusion(y_true, y_pred_b, groups, k))
    rng = np.random.default_rng(seed)
    deltas: dict[str, list[np.ndarray]] = {}
    for start in range(0, n_boot, 200):
        ca, cb = _resampled_confusions(y_true, [y_pred_a, y_pred_b], groups, k, rng, min(200, n_boot - start))
        ma, mb = metrics_from_confusion(ca), metrics_from_confusion(cb)
        for key in ma:
            deltas.setdefault(key, []).append(mb[key] - ma[key])
    alpha = (1 - level) / 2
    out: dict[str, dict[str, float | bool]] = {}
    for key, chunks in deltas.items():
        vals = np.concatenate(chunks)
        vals = vals[~np.isnan(vals)]
        lo, hi = (
            (float(np.quantile(vals, alpha)), float(np.quantile(vals, 1 - alpha)))
            if vals.size
            else (float("nan"), float("nan"))
        )
        out[key] = {
            "delta": float(point_b[key] - point_a[key]),
            "low": lo,
            "high": hi,
            "significant": bool(lo > 0 or hi < 0),
        }
    return out
