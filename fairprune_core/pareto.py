"""Pareto front and hypervolume for (F1 up, Eopp1 down): pure functions over plain numbers."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["hypervolume", "pareto_front"]


def pareto_front(f1: Sequence[float], eopp1: Sequence[float], feasible: Sequence[bool] | None = None) -> np.ndarray:
    """Boolean mask of the points no other feasible point dominates (F1 maximised, Eopp1 minimised).

    ``b`` dominates ``a`` when ``f1[b] >= f1[a]`` and ``eopp1[b] <= eopp1[a]`` with one strict.
    Infeasible points and points with a NaN objective are never on the front (and dominate
    nothing). Exact duplicates are all kept.
    """
    f = np.asarray(f1, dtype=float)
    e = np.asarray(eopp1, dtype=float)
    if f.shape != e.shape or f.ndim != 1:
        raise ValueError(f"f1 and eopp1 must be 1-D of one length, got {f.shape} and {e.shape}")
    ok = ~(np.isnan(f) | np.isnan(e))
    if feasible is not None:
        ok &= np.asarray(feasible, dtype=bool)
    front = np.zeros(len(f), dtype=bool)
    idx = np.flatnonzero(ok)
    for i in idx:
        better_eq = (f[idx] >= f[i]) & (e[idx] <= e[i])
        strictly = (f[idx] > f[i]) | (e[idx] < e[i])
        front[i] = not np.any(better_eq & strictly)
    return front


def hypervolume(
    f1: Sequence[float],
    eopp1: Sequence[float],
    *,
    reference: tuple[float, float],
    feasible: Sequence[bool] | None = None,
) -> float:
    """Area dominated by the feasible points and bounded by ``reference = (f1_ref, eopp1_ref)``.

    Only points better than the reference in both objectives (``f1 > f1_ref``,
    ``eopp1 < eopp1_ref``) contribute. Larger is better.
    """
    f_ref, e_ref = reference
    mask = pareto_front(f1, eopp1, feasible)
    f = np.asarray(f1, dtype=float)[mask]
    e = np.asarray(eopp1, dtype=float)[mask]
    keep = (f > f_ref) & (e < e_ref)
    f, e = f[keep], e[keep]
    if f.size == 0:
        return 0.0
    order = np.argsort(-f)  # best F1 first; along the front Eopp1 then decreases
    f, e = f[order], e[order]
    area, prev_e = 0.0, e_ref
    for fi, ei in zip(f, e, strict=True):
        if ei < prev_e:
            area += (fi - f_ref) * (prev_e - ei)
            prev_e = ei
    return float(area)
