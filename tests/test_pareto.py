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


def _trials():
    import pandas as pd

    from fairprune_core.sweep.front import mark_duplicates

    # trials 0-2 tie at one point (2 is the sparsest), 3 is another front point, 4 is dominated,
    # 5 is infeasible with the best objectives
    t = pd.DataFrame(
        {
            "run_id": [f"r{i}" for i in range(6)],
            "trial": range(6),
            "beta": [0.0] * 6,
            "step_ratio": [0.01] * 6,
            "final_ratio": [0.05] * 6,
            "achieved_ratio": [0.05, 0.10, 0.20, 0.3, 0.3, 0.5],
            "val_avg_f1": [0.9, 0.9, 0.9, 0.8, 0.7, 0.95],
            "val_eopp1": [0.10, 0.10, 0.10, 0.05, 0.2, 0.0],
            "feasible": [True, True, True, True, True, False],
            "collapsed": ["false"] * 5 + ["true"],
        }
    )
    t["pareto_optimal"] = pareto_front(t["val_avg_f1"], t["val_eopp1"], t["feasible"])
    return mark_duplicates(t)


def test_ties_on_the_front_have_one_representative_the_sparsest():
    from fairprune_core.sweep.front import front_of, front_picks, front_tags

    t = _trials()
    assert list(t["pareto_duplicate"]) == [True, True, False, False, False, False]
    assert list(t["duplicate_of"])[:2] == [2, 2] and t.loc[2, "ties"] == 3
    assert list(front_of(t)["trial"]) == [2, 3]  # distinct points, best F1 first
    tags = front_tags(t)
    assert [tags[f"r{i}"]["pareto_optimal"] for i in range(6)] == ["false", "false", "true", "true", "false", "false"]
    assert tags["r0"]["duplicate_of"] == "trial-002" and tags["r2"]["duplicate_of"] == ""
    picks = front_picks(front_of(t))
    assert int(picks["best-f1"]["trial"]) == 2 and int(picks["fairest-feasible"]["trial"]) == 3
    assert int(picks["knee"]["trial"]) in (2, 3)


def test_the_html_front_links_every_point_to_its_run_and_the_figure_is_png_and_svg(tmp_path):
    from fairprune_core.plots import front_figure, front_html

    t = _trials()
    for c in ("val_avg_f1", "val_eopp1"):
        t[f"{c}_ci_low"], t[f"{c}_ci_high"] = t[c] - 0.01, t[c] + 0.01
    base = {
        name: {"val_avg_f1": 0.9, "val_eopp1": 0.1, "val_avg_f1_ci_low": 0.88, "val_avg_f1_ci_high": 0.92,
               "val_eopp1_ci_low": 0.05, "val_eopp1_ci_high": 0.15}
        for name in ("vanilla", "obd")
    }  # fmt: skip
    page = front_html(t, base, 0.8, tmp_path / "f.html", lambda r: f"http://ui/#/experiments/7/runs/{r}").read_text()
    for i in range(6):
        assert f'href="http://ui/#/experiments/7/runs/r{i}"' in page
    assert 'class="collapsed"' in page and 'class="duplicate"' in page
    paths = front_figure(t, base, 0.8, tmp_path / "front")
    assert [p.suffix for p in paths] == [".png", ".svg"] and all(p.stat().st_size > 1000 for p in paths)
    assert "Vanilla = OBD" in paths[1].read_text()  # coinciding baselines are named together
