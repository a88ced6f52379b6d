"""The statistics against cases with a known answer."""

from __future__ import annotations

import numpy as np
import pytest

from fairprune_core.metrics import bootstrap_intervals, fairness_metrics
from fairprune_core.stats import bca_intervals, best_constant_f1, compare, permutation_null, sanity


def _simulate(rng, tpr: dict[tuple[int, int], float], n: int = 120):
    """Two groups x two classes, n images per cell; P(correct | group, class) = tpr[(g, c)]."""
    y, g, p = [], [], []
    for (grp, cls), rate in tpr.items():
        correct = rng.random(n) < rate
        y.append(np.full(n, cls))
        g.append(np.full(n, grp))
        p.append(np.where(correct, cls, 1 - cls))
    return np.concatenate(y), np.concatenate(p), np.concatenate(g)


def _true_eopp1(tpr):
    return np.mean([abs(tpr[(1, c)] - tpr[(0, c)]) for c in (0, 1)])


def test_bca_covers_a_known_eopp1_and_always_contains_its_estimate():
    tpr = {(0, 0): 0.80, (0, 1): 0.70, (1, 0): 0.90, (1, 1): 0.85}
    truth = _true_eopp1(tpr)  # 0.125
    rng = np.random.default_rng(0)
    covered, contains = 0, 0
    reps = 150
    for r in range(reps):
        y, p, g = _simulate(rng, tpr)
        est = fairness_metrics(y, p, g, num_classes=2)["eopp1"]
        lo, hi = bca_intervals(y, p, g, num_classes=2, n_boot=400, seed=r)["eopp1"]
        covered += lo <= truth <= hi
        contains += lo <= est <= hi
    assert contains == reps
    assert 0.88 <= covered / reps <= 0.99, covered / reps


def test_at_a_zero_gap_bca_contains_the_estimate_where_percentile_intervals_miss_it():
    tpr = {(0, 0): 0.8, (0, 1): 0.7, (1, 0): 0.8, (1, 1): 0.7}  # no gap: Eopp1 = 0
    rng = np.random.default_rng(1)
    misses_percentile, misses_bca = 0, 0
    for r in range(60):
        y, p, g = _simulate(rng, tpr)
        est = fairness_metrics(y, p, g, num_classes=2)["eopp1"]
        lo, hi = bootstrap_intervals(y, p, g, num_classes=2, n_boot=400, seed=r)["eopp1"]
        misses_percentile += not lo <= est <= hi
        blo, bhi = bca_intervals(y, p, g, num_classes=2, n_boot=400, seed=r)["eopp1"]
        misses_bca += not blo <= est <= bhi
        assert blo >= 0
    assert misses_percentile > 0  # the bias the issue reported is real here
    assert misses_bca == 0


def test_permutation_null_rejects_at_its_level_without_a_group_effect_and_finds_a_real_one():
    rng = np.random.default_rng(2)
    same = {(0, 0): 0.8, (0, 1): 0.7, (1, 0): 0.8, (1, 1): 0.7}
    p_values = [
        permutation_null(*_simulate(rng, same, n=60), num_classes=2, n_perm=200, seed=i)["p_value"] for i in range(100)
    ]
    assert 0.0 <= np.mean(np.array(p_values) < 0.05) <= 0.11
    gap = {(0, 0): 0.6, (0, 1): 0.5, (1, 0): 0.95, (1, 1): 0.9}
    res = permutation_null(*_simulate(rng, gap, n=60), num_classes=2, n_perm=200)
    assert res["p_value"] < 0.01 and res["observed"] > res["null_q95"]


def test_a_constant_predictor_is_collapsed_and_near_chance():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 4, 400)
    g = rng.integers(0, 2, 400)
    const = np.zeros(400, dtype=int)
    f1 = fairness_metrics(y, const, g, num_classes=4)["avg"]["f1"]
    s = sanity(y, const, g, num_classes=4, avg_f1=f1, floor=None)
    assert s.collapsed and s.near_chance and not s.ok and "100% of predictions are one class" in s.reason
    assert best_constant_f1(y, g, 4) == pytest.approx(
        max(fairness_metrics(y, np.full(400, c), g, num_classes=4)["avg"]["f1"] for c in range(4))
    )
    good = np.where(rng.random(400) < 0.9, y, (y + 1) % 4)
    gf1 = fairness_metrics(y, good, g, num_classes=4)["avg"]["f1"]
    assert sanity(y, good, g, num_classes=4, avg_f1=gf1, floor=0.8).ok
    assert sanity(y, good, g, num_classes=4, avg_f1=gf1, floor=0.95).collapsed  # below the floor


def test_identical_predictions_say_no_prediction_changed():
    rng = np.random.default_rng(4)
    y, g = rng.integers(0, 3, 200), rng.integers(0, 2, 200)
    p = rng.integers(0, 3, 200)
    same = compare(y, p, p.copy(), g, num_classes=3, n_boot=100)
    assert {r["verdict"] for r in same.values()} == {"no prediction changed"}
    other = compare(y, p, (p + 1) % 3, g, num_classes=3, n_boot=100)
    assert other["avg_f1"]["verdict"] in ("larger than sampling noise", "inside sampling noise")
