"""The sweep's front, as pure functions over finished trials (no store, no framework)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..pareto import hypervolume, pareto_front

__all__ = [
    "ALIASES",
    "TRIAL_COLUMNS",
    "front_of",
    "front_picks",
    "front_summary",
    "front_tags",
    "is_feasible",
    "knee",
    "mark_duplicates",
    "pareto_of",
    "trials_frame",
]

# registry aliases of the front's picks, each chosen on validation (see front_picks)
ALIASES = ("best-f1", "fairest-feasible", "knee")

# the columns of a trials table, in order (as the store's finished runs carry them)
TRIAL_COLUMNS = (
    "run_id",
    "optuna_trial",
    "beta",
    "step_ratio",
    "final_ratio",
    "achieved_ratio",
    "val_avg_f1",
    "val_avg_f1_ci_low",
    "val_avg_f1_ci_high",
    "val_eopp1",
    "val_eopp1_ci_low",
    "val_eopp1_ci_high",
    "test_avg_f1",
    "test_eopp1",
    "model_bytes",
    "feasible",
    "aborted",
    "collapsed",
    "val_eopp1_null_q95",
    "val_eopp1_null_p",
    "eopp1_change_vs_vanilla",
    "model_uri",
    "model_id",
    "predicts_like_vanilla",
)


def is_feasible(f1: float, floor: float, *, aborted: bool, collapsed: bool = False) -> bool:
    """The sweep's rule: validation F1 at or above the floor, pruning not aborted for falling below
    it, and the model not collapsed to (almost) one class. Stopping because the fairness target
    was reached is success, not an abort."""
    return bool(f1 >= floor) and not aborted and not collapsed


def trials_frame(runs: pd.DataFrame, floor: float) -> pd.DataFrame:
    """One row per finished trial run (plain column names), feasibility and Pareto flags added."""
    if runs.empty:
        return runs
    if "role" in runs:  # the report's ablation runs are FairPrune runs too, but not trials
        runs = runs[runs["role"] == "trial"]
    trials = runs[[c for c in TRIAL_COLUMNS if c in runs.columns]].rename(columns={"optuna_trial": "trial"})
    trials["trial"] = trials["trial"].astype(int)
    for c in ("beta", "step_ratio", "final_ratio"):
        trials[c] = trials[c].astype(float)
    false = pd.Series(False, index=trials.index)
    aborted = trials["aborted"].eq("true") if "aborted" in trials else false
    collapsed = trials["collapsed"].eq("true") if "collapsed" in trials else false
    trials["feasible"] = [
        is_feasible(f, floor, aborted=a, collapsed=c) and ok == "true"
        for f, a, c, ok in zip(trials["val_avg_f1"], aborted, collapsed, trials["feasible"], strict=True)
    ]
    trials["pareto_optimal"] = pareto_of(trials)
    return mark_duplicates(trials.sort_values("trial").reset_index(drop=True))


def mark_duplicates(trials: pd.DataFrame) -> pd.DataFrame:
    """Ties on the front (the same validation F1 and Eopp1) resolved: the sparsest model of each
    point represents it (then the lowest trial number); the others get ``pareto_duplicate`` and
    ``duplicate_of`` (the representative's trial number, else -1); ``ties`` counts each point's trials."""
    trials = trials.copy()
    trials["pareto_duplicate"], trials["duplicate_of"], trials["ties"] = False, -1, 0
    front = trials[trials["pareto_optimal"]]
    if front.empty:
        return trials
    ratio = front["achieved_ratio"] if "achieved_ratio" in front else pd.Series(0.0, index=front.index)
    keys = list(zip(front["val_avg_f1"].round(12), front["val_eopp1"].round(12), strict=True))
    for key in dict.fromkeys(keys):
        idx = [i for i, k in zip(front.index, keys, strict=True) if k == key]
        rep = min(idx, key=lambda i: (-float(ratio[i]), int(trials.at[i, "trial"])))
        trials.loc[idx, "ties"] = len(idx)
        others = [i for i in idx if i != rep]
        trials.loc[others, "pareto_duplicate"] = True
        trials.loc[others, "duplicate_of"] = int(trials.at[rep, "trial"])
    return trials


def pareto_of(trials: pd.DataFrame) -> list[bool]:
    return list(pareto_front(trials["val_avg_f1"], trials["val_eopp1"], trials["feasible"]))


def front_of(trials: pd.DataFrame) -> pd.DataFrame:
    """The distinct points of the front (one representative each, see :func:`mark_duplicates`),
    best F1 first."""
    if trials.empty:
        return trials
    front = trials[_representatives(trials)]
    return front.sort_values(["val_avg_f1", "trial"], ascending=[False, True]).reset_index(drop=True)


def _representatives(trials: pd.DataFrame) -> pd.Series:
    """Pareto-optimal and not a duplicate of another front trial."""
    duplicate = trials["pareto_duplicate"] if "pareto_duplicate" in trials else pd.Series(False, index=trials.index)
    return trials["pareto_optimal"] & ~duplicate.astype(bool)


def knee(front: pd.DataFrame) -> pd.Series | None:
    """The front point nearest the ideal (max F1, min Eopp1), both scaled to [0, 1] over the front."""
    if front.empty:
        return None
    f, e = front["val_avg_f1"].to_numpy(float), front["val_eopp1"].to_numpy(float)

    def scaled(v: np.ndarray) -> np.ndarray:
        span = v.max() - v.min()
        return (v - v.min()) / span if span > 0 else np.zeros_like(v)

    dist = np.hypot(1 - scaled(f), scaled(e))
    return front.iloc[int(np.argmin(dist))]


def front_picks(front: pd.DataFrame) -> dict[str, pd.Series]:
    """alias -> front point: ``best-f1`` (highest validation F1), ``fairest-feasible`` (lowest
    validation Eopp1; every front point is feasible) and ``knee``. Empty for an empty front."""
    if front.empty:
        return {}
    picks = (front.loc[front["val_avg_f1"].idxmax()], front.loc[front["val_eopp1"].idxmin()], knee(front))
    return dict(zip(ALIASES, picks, strict=True))


def front_summary(trials: pd.DataFrame, floor: float) -> dict[str, float]:
    """Size (distinct points, and trials on them), counts and hypervolume (reference: the floor,
    Eopp1 = 1) of a sweep's front."""
    return {
        "pareto_size": int(_representatives(trials).sum()),
        "pareto_trials": int(trials["pareto_optimal"].sum()),
        "trials_finished": int(trials.shape[0]),
        "trials_feasible": int(trials["feasible"].sum()),
        "hypervolume": hypervolume(
            trials["val_avg_f1"], trials["val_eopp1"], reference=(floor, 1.0), feasible=trials["feasible"]
        ),
    }


def front_tags(trials: pd.DataFrame) -> dict[str, dict[str, str]]:
    """run id -> the front's tags for that trial run (and its model): ``pareto_optimal`` (a distinct
    point's representative), ``pareto_duplicate`` and ``duplicate_of`` (``trial-NNN`` or "")."""

    def word(flag: object) -> str:
        return "true" if bool(flag) else "false"

    out = {}
    for _, r in trials.iterrows():
        duplicate = bool(r.get("pareto_duplicate", False))
        out[r["run_id"]] = {
            "pareto_optimal": word(r["pareto_optimal"] and not duplicate),
            "pareto_duplicate": word(duplicate),
            "duplicate_of": f"trial-{int(r['duplicate_of']):03d}" if duplicate else "",
        }
    return out
