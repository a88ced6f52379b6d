"""The sweep's front, as pure functions over finished trials (no store, no framework)."""

from __future__ import annotations

import pandas as pd

from ..pareto import hypervolume, pareto_front

__all__ = ["TRIAL_COLUMNS", "front_of", "front_summary", "is_feasible", "pareto_of", "trials_frame"]

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
    return trials.sort_values("trial").reset_index(drop=True)


def pareto_of(trials: pd.DataFrame) -> list[bool]:
    return list(pareto_front(trials["val_avg_f1"], trials["val_eopp1"], trials["feasible"]))


def front_of(trials: pd.DataFrame) -> pd.DataFrame:
    """The Pareto-optimal trials, best F1 first."""
    if trials.empty:
        return trials
    front = trials[trials["pareto_optimal"]]
    return front.sort_values("val_avg_f1", ascending=False).reset_index(drop=True)


def front_summary(trials: pd.DataFrame, floor: float) -> dict[str, float]:
    """Size, counts and hypervolume (reference: the floor, Eopp1 = 1) of a sweep's front."""
    return {
        "pareto_size": int(trials["pareto_optimal"].sum()),
        "trials_finished": int(trials.shape[0]),
        "trials_feasible": int(trials["feasible"].sum()),
        "hypervolume": hypervolume(
            trials["val_avg_f1"], trials["val_eopp1"], reference=(floor, 1.0), feasible=trials["feasible"]
        ),
    }
