"""Honest statistics for the fairness comparisons: intervals that contain their estimate, a
permutation null for Eopp1, paired verdicts that know when nothing changed, and model sanity.

* :func:`bca_intervals` - bias-corrected and accelerated (BCa) bootstrap intervals (Efron 1987)
  for every flat metric, resampling within groups; the acceleration comes from an exact
  jackknife computed on the confusion tensor. Eopp/Eodd are means of ABSOLUTE differences,
  biased upward under resampling: a percentile interval can miss its own estimate. BCa corrects
  for that bias; where the bootstrap distribution lies entirely on one side of the estimate (a
  metric at its boundary, e.g. a gap near 0) the interval is widened to include the estimate,
  which only makes it more conservative. Outputs name the method ("BCa").
* :func:`permutation_null` - what a group-BLIND model shows at these counts: the same
  predictions with the group labels shuffled within each true class. An observed Eopp1 inside
  that null is no evidence of a group gap.
* :func:`compare` - a paired bootstrap of the change from model A to model B, which says
  "no prediction changed" when the predictions are identical.
* :func:`sanity` - ``collapsed`` (almost a single predicted class, or avg F1 below the floor) and
  ``near_chance`` (avg F1 below 1.5 x that of the best constant predictor).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

import numpy as np

from .metrics import _check_inputs, bootstrap_samples, group_confusion, metrics_from_confusion, paired_bootstrap

__all__ = [
    "INTERVAL_METHOD",
    "Sanity",
    "bca_intervals",
    "best_constant_f1",
    "compare",
    "permutation_null",
    "sanity",
]

INTERVAL_METHOD = "BCa"
SINGLE_CLASS_SHARE = 0.95  # (almost) one predicted class: collapsed
CHANCE_FACTOR = 1.5  # vanilla avg F1 below this x the best constant predictor's: near chance


_NORMAL = NormalDist()


def _norm_ppf(p: np.ndarray) -> np.ndarray:
    return np.vectorize(_NORMAL.inv_cdf)(p)


def _norm_cdf(x: np.ndarray) -> np.ndarray:
    return np.vectorize(_NORMAL.cdf)(x)


def _jackknife(conf: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Leave-one-out metrics for every distinct (group, true, predicted) cell, and the cell counts.

    Removing one sample changes one cell of the confusion tensor, so the N leave-one-out values
    are the values of at most 2 K^2 distinct tensors, weighted by their cells' counts."""
    cells = np.argwhere(conf > 0)  # (C, 3)
    counts = conf[tuple(cells.T)].astype(float)
    loo = np.repeat(conf[None], len(cells), axis=0)
    loo[np.arange(len(cells)), cells[:, 0], cells[:, 1], cells[:, 2]] -= 1
    return metrics_from_confusion(loo), counts


def _acceleration(values: np.ndarray, counts: np.ndarray) -> float:
    ok = ~np.isnan(values)
    v, w = values[ok], counts[ok]
    if w.sum() == 0:
        return 0.0
    d = (w * v).sum() / w.sum() - v
    den = 6.0 * ((w * d**2).sum()) ** 1.5
    return float((w * d**3).sum() / den) if den > 0 else 0.0


def _bca_one(theta: float, boot: np.ndarray, accel: float, level: float) -> tuple[float, float]:
    boot = boot[~np.isnan(boot)]
    if boot.size == 0 or math.isnan(theta):
        return float("nan"), float("nan")
    below = (np.sum(boot < theta) + 0.5 * np.sum(boot == theta)) / boot.size
    below = min(max(below, 0.5 / boot.size), 1 - 0.5 / boot.size)
    z0 = float(_norm_ppf(np.array(below)))
    z = _norm_ppf(np.array([(1 - level) / 2, (1 + level) / 2]))
    adj = _norm_cdf(z0 + (z0 + z) / (1 - accel * (z0 + z)))
    lo, hi = (float(q) for q in np.quantile(boot, np.clip(adj, 0, 1)))
    return min(lo, theta), max(hi, theta)  # widened to the estimate at a boundary (conservative)


def bca_intervals(
    y_true: Sequence[int] | np.ndarray,
    y_pred: Sequence[int] | np.ndarray,
    groups: Sequence[int] | np.ndarray,
    *,
    num_classes: int | None = None,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, tuple[float, float]]:
    """BCa intervals for every flat metric (keys of :func:`metrics_from_confusion`); each
    contains its point estimate."""
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if n_boot < 10:
        raise ValueError(f"n_boot must be >= 10, got {n_boot}")
    y_true, y_pred, groups, k = _check_inputs(y_true, y_pred, groups, num_classes)
    conf = group_confusion(y_true, y_pred, groups, k)
    point = metrics_from_confusion(conf)
    boot = bootstrap_samples(y_true, y_pred, groups, k, n_boot=n_boot, seed=seed)
    loo, counts = _jackknife(conf)
    return {
        key: _bca_one(float(point[key]), vals, _acceleration(loo[key], counts), level) for key, vals in boot.items()
    }


def permutation_null(
    y_true: Sequence[int] | np.ndarray,
    y_pred: Sequence[int] | np.ndarray,
    groups: Sequence[int] | np.ndarray,
    *,
    num_classes: int | None = None,
    metric: str = "eopp1",
    n_perm: int = 1000,
    seed: int = 0,
) -> dict[str, float]:
    """Null distribution of ``metric`` for a group-blind model at these counts.

    The group labels are shuffled within each true class (so each group keeps its class mix),
    the predictions kept. Returns the observed value, the null's mean and 95th percentile, and
    the one-sided p-value ``(1 + #{null >= observed}) / (1 + n_perm)``."""
    y_true, y_pred, groups, k = _check_inputs(y_true, y_pred, groups, num_classes)
    observed = float(metrics_from_confusion(group_confusion(y_true, y_pred, groups, k))[metric])
    rng = np.random.default_rng(seed)
    shuffled = np.broadcast_to(groups, (n_perm, len(groups))).copy()  # (n_perm, N)
    for c in range(k):
        ix = np.flatnonzero(y_true == c)
        if len(ix) > 1:  # a random permutation of the class's group labels, per row
            order = np.argsort(rng.random((n_perm, len(ix))), axis=1)
            shuffled[:, ix] = groups[ix][order]
    offsets = (np.arange(n_perm) * 2 * k * k)[:, None]
    flat = (shuffled * k + y_true[None]) * k + y_pred[None] + offsets
    conf = np.bincount(flat.ravel(), minlength=n_perm * 2 * k * k).reshape(n_perm, 2, k, k)
    null = metrics_from_confusion(conf)[metric]
    null = null[~np.isnan(null)]
    return {
        "observed": observed,
        "null_mean": float(null.mean()) if null.size else float("nan"),
        "null_q95": float(np.quantile(null, 0.95)) if null.size else float("nan"),
        "p_value": float((1 + np.sum(null >= observed - 1e-12)) / (1 + null.size)),
    }


def compare(
    y_true: np.ndarray,
    pred_a: np.ndarray,
    pred_b: np.ndarray,
    groups: np.ndarray,
    *,
    num_classes: int,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict[str, dict[str, Any]]:
    """Paired change from A to B per metric (:func:`~fairprune_core.metrics.paired_bootstrap`),
    each with a ``verdict``: "no prediction changed", "larger than sampling noise" or "inside
    sampling noise"."""
    same = bool(np.array_equal(np.asarray(pred_a), np.asarray(pred_b)))
    out = paired_bootstrap(y_true, pred_a, pred_b, groups, num_classes=num_classes, n_boot=n_boot, seed=seed)
    for r in out.values():
        r["identical"] = same
        if same:
            r["verdict"] = "no prediction changed"
        else:
            r["verdict"] = "larger than sampling noise" if r["significant"] else "inside sampling noise"
    return out


def best_constant_f1(y_true: np.ndarray, groups: np.ndarray, num_classes: int) -> float:
    """The avg F1 of the best model that predicts one class for every image."""
    from .metrics import fairness_metrics

    best = 0.0
    for c in range(num_classes):
        pred = np.full_like(np.asarray(y_true), c)
        best = max(best, fairness_metrics(y_true, pred, groups, num_classes=num_classes)["avg"]["f1"])
    return best


@dataclass(frozen=True)
class Sanity:
    """Whether a model's fairness numbers mean anything."""

    collapsed: bool  # (almost) one predicted class, or avg F1 below the floor
    near_chance: bool  # avg F1 below CHANCE_FACTOR x the best constant predictor's
    top_class_share: float
    reason: str

    @property
    def ok(self) -> bool:
        return not (self.collapsed or self.near_chance)


def sanity(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    groups: np.ndarray,
    *,
    num_classes: int,
    avg_f1: float,
    floor: float | None,
    constant_f1: float | None = None,
) -> Sanity:
    """``collapsed`` and ``near_chance`` for one model's predictions (see the module docstring).

    ``floor`` is the absolute avg-F1 floor (the sweep's rule: 0.9 x vanilla); None for vanilla.
    ``constant_f1`` is :func:`best_constant_f1` of the split (computed here when not given)."""
    counts = np.bincount(np.asarray(y_pred), minlength=num_classes)
    share = float(counts.max() / max(counts.sum(), 1))
    reasons = []
    if share >= SINGLE_CLASS_SHARE:
        reasons.append(f"{share:.0%} of predictions are one class")
    if floor is not None and avg_f1 < floor:
        reasons.append(f"avg F1 {avg_f1:.3f} below the floor {floor:.3f}")
    constant = constant_f1 if constant_f1 is not None else best_constant_f1(y_true, groups, num_classes)
    near = avg_f1 < CHANCE_FACTOR * constant
    if near:
        reasons.append(f"avg F1 {avg_f1:.3f} below {CHANCE_FACTOR} x the best constant predictor's {constant:.3f}")
    return Sanity(
        bool(share >= SINGLE_CLASS_SHARE or (floor is not None and avg_f1 < floor)), near, share, "; ".join(reasons)
    )
