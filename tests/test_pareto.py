"""Pareto front and hypervolume against brute-force references."""

from __future__ import annotations

import numpy as np
import pytest

from fairprune_core.pareto import hypervolume, pareto_front


def _brute_front(f, e, feasible):
    out = []
    for i in range(len(f)):
        if not feasible[i] or np.isnan(f[i]) or np.isnan(e[i]):
            out.append(False)
            continue
        dominated = any(
            feasible[j] and f[j] >= f[i] and e[j] <= e[i] and (f[j] > f[i] or e[j] < e[i])
            for j in range(len(f))
            if j != i and not (np.isnan(f[j]) or np.isnan(e[j]))
        )
        out.append(not dominated)
    return np.array(out)


@pytest.mark.parametrize("seed", range(5))
def test_front_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    f, e = rng.random(40).round(2), rng.random(40).round(2)  # rounding makes ties and duplicates
    f[3] = np.nan
    feasible = rng.random(40) > 0.2
    np.testing.assert_array_equal(pareto_front(f, e, feasible), _brute_front(f, e, feasible))


def test_infeasible_points_never_on_the_front_even_if_best():
    f, e = [0.99, 0.5, 0.4], [0.0, 0.2, 0.1]
    np.testing.assert_array_equal(pareto_front(f, e, [False, True, True]), [False, True, True])


def test_hypervolume_known_cases_and_grid_estimate():
    assert hypervolume([0.8], [0.2], reference=(0.5, 1.0)) == pytest.approx(0.3 * 0.8)
    # two points: union of rectangles
    hv = hypervolume([0.8, 0.6], [0.4, 0.1], reference=(0.5, 1.0))
    assert hv == pytest.approx(0.3 * 0.6 + 0.1 * 0.3)
    rng = np.random.default_rng(0)
    f, e = rng.random(15), rng.random(15)
    ref = (0.2, 0.9)
    xs = np.linspace(ref[0], 1, 801)
    ys = np.linspace(0, ref[1], 801)
    gx, gy = np.meshgrid(xs, ys)
    covered = np.zeros_like(gx, dtype=bool)
    for fi, ei in zip(f, e, strict=True):
        covered |= (gx <= fi) & (gy >= ei)
    est = covered.mean() * (1 - ref[0]) * ref[1]
    assert hypervolume(f, e, reference=ref) == pytest.approx(est, abs=5e-3)
    assert hypervolume(f, e, reference=ref, feasible=np.zeros(15, bool)) == 0.0
