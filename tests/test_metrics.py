"""Every metric against scikit-learn computed on each subgroup, on data with absent classes."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

from fairprune_core.metrics import (
    bootstrap_intervals,
    fairness_metrics,
    flatten_metrics,
    group_confusion,
    paired_bootstrap,
)


def _random_case(seed: int, n: int = 400, k: int = 7):
    rng = np.random.default_rng(seed)
    groups = (rng.random(n) < 0.35).astype(int)
    y_true = rng.integers(k, size=n)
    # class 5 never occurs in group 1's labels, class 6 never in anyone's labels
    y_true[(groups == 1) & (y_true == 5)] = 0
    y_true[y_true == 6] = 1
    noisy = rng.random(n) < 0.4
    y_pred = np.where(noisy, rng.integers(k, size=n), y_true)
    return y_true, y_pred, groups, k


def _reference_rates(y_true, y_pred, labels):
    """One-vs-rest TPR/TNR/FPR per class from scikit-learn's confusion matrix (NaN if undefined)."""
    cm = confusion_matrix(y_true, y_pred, labels=labels)
    out = {}
    for i, k in enumerate(labels):
        tp = cm[i, i]
        fn = cm[i].sum() - tp
        fp = cm[:, i].sum() - tp
        tn = cm.sum() - tp - fn - fp
        out[k] = (
            tp / (tp + fn) if tp + fn else np.nan,
            tn / (tn + fp) if tn + fp else np.nan,
            fp / (tn + fp) if tn + fp else np.nan,
        )
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_per_group_scores_match_sklearn(seed):
    y_true, y_pred, groups, k = _random_case(seed)
    m = fairness_metrics(y_true, y_pred, groups, num_classes=k)
    for g in (0, 1):
        sel = groups == g
        p, r, f, _ = precision_recall_fscore_support(y_true[sel], y_pred[sel], average="macro", zero_division=0)
        assert m["groups"][g]["precision"] == pytest.approx(p, abs=1e-12)
        assert m["groups"][g]["recall"] == pytest.approx(r, abs=1e-12)
        assert m["groups"][g]["f1"] == pytest.approx(f, abs=1e-12)
        assert m["groups"][g]["accuracy"] == pytest.approx(accuracy_score(y_true[sel], y_pred[sel]))
    for key in ("precision", "recall", "f1", "accuracy"):
        a, b = m["groups"][0][key], m["groups"][1][key]
        assert m["avg"][key] == pytest.approx((a + b) / 2)
        assert m["diff"][key] == pytest.approx(abs(a - b))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fairness_gaps_match_class_mean_convention(seed):
    y_true, y_pred, groups, k = _random_case(seed)
    m = fairness_metrics(y_true, y_pred, groups, num_classes=k)
    labels = list(range(k))
    r0 = _reference_rates(y_true[groups == 0], y_pred[groups == 0], labels)
    r1 = _reference_rates(y_true[groups == 1], y_pred[groups == 1], labels)
    d_tpr = [abs(r1[c][0] - r0[c][0]) for c in labels]
    d_tnr = [abs(r1[c][1] - r0[c][1]) for c in labels]
    d_odd = [abs((r1[c][0] - r0[c][0]) + (r1[c][2] - r0[c][2])) / 2 for c in labels]
    # class 5 has no positives in group 1 and class 6 none at all: TPR undefined, left out
    assert np.isnan(d_tpr[5]) and np.isnan(d_tpr[6])
    assert m["eopp1"] == pytest.approx(np.nanmean(d_tpr), abs=1e-12)
    assert m["eopp0"] == pytest.approx(np.nanmean(d_tnr), abs=1e-12)
    assert m["eodd"] == pytest.approx(np.nanmean(d_odd), abs=1e-12)


def test_perfect_and_swapped_predictions():
    y = np.array([0, 1, 2, 0, 1, 2])
    g = np.array([0, 0, 0, 1, 1, 1])
    m = fairness_metrics(y, y, g)
    assert m["eopp1"] == 0 and m["eopp0"] == 0 and m["eodd"] == 0
    assert m["avg"]["f1"] == 1.0
    # group 1 entirely wrong: every class's TPR gap is 1
    pred = y.copy()
    pred[3:] = (y[3:] + 1) % 3
    assert fairness_metrics(y, pred, g)["eopp1"] == pytest.approx(1.0)


def test_group_confusion_counts():
    y_true = np.array([0, 1, 1, 2, 0])
    y_pred = np.array([0, 1, 0, 2, 2])
    groups = np.array([0, 0, 1, 1, 1])
    conf = group_confusion(y_true, y_pred, groups, num_classes=3)
    assert conf.shape == (2, 3, 3)
    np.testing.assert_array_equal(conf[0], confusion_matrix(y_true[:2], y_pred[:2], labels=[0, 1, 2]))
    np.testing.assert_array_equal(conf[1], confusion_matrix(y_true[2:], y_pred[2:], labels=[0, 1, 2]))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(y_true=[0, 1], y_pred=[0], groups=[0, 1]), "one length"),
        (dict(y_true=[0, 1], y_pred=[0, 1], groups=[0, 0]), "group 1 has no samples"),
        (dict(y_true=[0, 1], y_pred=[0, 1], groups=[0, 2]), "binary"),
        (dict(y_true=[0.5, 1], y_pred=[0, 1], groups=[0, 1]), "integer"),
        (dict(y_true=[], y_pred=[], groups=[]), "zero samples"),
    ],
)
def test_bad_inputs_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        fairness_metrics(np.asarray(kwargs["y_true"]), np.asarray(kwargs["y_pred"]), np.asarray(kwargs["groups"]))


def test_bootstrap_is_seeded_and_brackets_the_estimate():
    y_true, y_pred, groups, k = _random_case(3, n=600)
    point = flatten_metrics(fairness_metrics(y_true, y_pred, groups, num_classes=k))
    a = bootstrap_intervals(y_true, y_pred, groups, num_classes=k, n_boot=300, seed=7)
    b = bootstrap_intervals(y_true, y_pred, groups, num_classes=k, n_boot=300, seed=7)
    c = bootstrap_intervals(y_true, y_pred, groups, num_classes=k, n_boot=300, seed=8)
    assert a == b and a != c
    assert a["eopp1"][0] < point["eopp1"] + 0.05 and a["eopp1"][1] > point["eopp1"] - 0.05
    lo, hi = a["avg_f1"]
    assert lo <= point["avg_f1"] <= hi and hi - lo > 0.01
    # more data -> a narrower interval
    big = [np.tile(x, 8) for x in (y_true, y_pred, groups)]
    lo2, hi2 = bootstrap_intervals(*big, num_classes=k, n_boot=300, seed=7)["avg_f1"]
    assert hi2 - lo2 < (hi - lo) * 0.6


def test_bootstrap_matches_a_naive_resampling_loop():
    """The vectorised resampler equals a plain loop over sklearn-checked metrics."""
    y_true, y_pred, groups, k = _random_case(4, n=200)
    rng = np.random.default_rng(11)
    idx0, idx1 = np.flatnonzero(groups == 0), np.flatnonzero(groups == 1)
    draws0 = idx0[rng.integers(len(idx0), size=(50, len(idx0)))]
    draws1 = idx1[rng.integers(len(idx1), size=(50, len(idx1)))]
    naive = []
    for d0, d1 in zip(draws0, draws1, strict=True):
        sel = np.concatenate([d0, d1])
        naive.append(fairness_metrics(y_true[sel], y_pred[sel], groups[sel], num_classes=k)["eopp1"])
    lo, hi = bootstrap_intervals(y_true, y_pred, groups, num_classes=k, n_boot=50, seed=11, level=0.9)["eopp1"]
    assert lo == pytest.approx(np.quantile(naive, 0.05))
    assert hi == pytest.approx(np.quantile(naive, 0.95))


def test_paired_bootstrap_detects_real_changes_only():
    y_true, y_pred, groups, k = _random_case(5, n=800)
    same = paired_bootstrap(y_true, y_pred, y_pred, groups, num_classes=k, n_boot=200)
    assert same["eopp1"]["delta"] == 0 and not same["eopp1"]["significant"]
    better = y_pred.copy()
    fix = (groups == 1) & (np.random.default_rng(0).random(len(y_true)) < 0.8)
    better[fix] = y_true[fix]
    res = paired_bootstrap(y_true, y_pred, better, groups, num_classes=k, n_boot=200)
    assert res["1_accuracy"]["delta"] > 0 and res["1_accuracy"]["significant"]
    assert res["1_accuracy"]["low"] <= res["1_accuracy"]["delta"] <= res["1_accuracy"]["high"]
