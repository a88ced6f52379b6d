"""The sweep's printed tables: the live progress rows and the final front with its baselines."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import pandas as pd

from ..methods import method_label

__all__ = ["PROGRESS_HEADER", "format_front", "front_counts", "progress_row", "trial_status"]

PROGRESS_HEADER = f"{'trial':>5} {'beta':>6} {'step':>6} {'final':>6} {'val F1':>7} {'val Eopp1':>9}  status"


def progress_row(
    config: Mapping[str, Any], result: Mapping[str, Any], status: str, done: int, total: int, secs: float
) -> str:
    """One line of the live table for a finished (or failed) trial."""
    # the step the trial ran with (its final report), else the suggested one capped by the final ratio
    step = result.get("step_ratio", min(config.get("step_ratio", math.nan), config.get("final_ratio", math.nan)))
    return (
        f"{config.get('trial_number', -1):>5} {config.get('beta', math.nan):6.3f} {step:6.3f} "
        f"{config.get('final_ratio', math.nan):6.3f} {result.get('val_avg_f1', math.nan):7.4f} "
        f"{result.get('val_eopp1', math.nan):9.4f}  {status} [{done}/{total}, {secs:.0f}s]"
    )


def trial_status(result: Mapping[str, Any]) -> str:
    if result.get("collapsed"):  # the rule and its numbers (results of older trials: the rules)
        return f"COLLAPSED ({result.get('collapse_reason') or 'one class or below the F1 floor'})"
    if result.get("feasible"):
        return "feasible (fairness target reached)" if result.get("reached_target") else "feasible"
    return "INFEASIBLE (below the F1 floor)"


def _interval(m: Mapping[str, Any], key: str) -> str:
    return f"{m[key]:7.4f} [{m[f'{key}_ci_low']:.3f}, {m[f'{key}_ci_high']:.3f}]"


def _ties(r: Mapping[str, Any]) -> str:
    ties = int(r.get("ties", 1) or 1)
    return f" (+{ties - 1} tied trials)" if ties > 1 else ""


def format_front(front: pd.DataFrame, baselines: Mapping[str, Mapping[str, float]]) -> str:
    """The Pareto table, with every baseline the sweep logged, as printed at the end of a sweep."""
    lines = [
        f"{'':>11} {'beta':>6} {'step':>6} {'final':>6} {'val F1':>22} {'val Eopp1':>22} "
        f"{'test F1':>8} {'test Eopp1':>10}  Eopp1 change vs vanilla",
    ]
    for name, m in baselines.items():
        lines.append(
            f"{method_label(name):>11} {'':>6} {'':>6} {'':>6} {_interval(m, 'val_avg_f1')} "
            f"{_interval(m, 'val_eopp1')} {m['test_avg_f1']:8.4f} {m['test_eopp1']:10.4f}"
        )
    for _, r in front.iterrows():
        lines.append(
            f"{'trial ' + str(r['trial']):>11} {r['beta']:6.3f} {r['step_ratio']:6.3f} {r['final_ratio']:6.3f} "
            f"{_interval(r, 'val_avg_f1')} {_interval(r, 'val_eopp1')} "
            f"{r['test_avg_f1']:8.4f} {r['test_eopp1']:10.4f}  {r.get('eopp1_change_vs_vanilla', '')}{_ties(r)}"
        )
    return "\n".join(lines)


def front_counts(trials: pd.DataFrame) -> str:
    """``30 trials finished, 15 feasible, 3 Pareto-optimal points (14 trials; 11 tied, tagged
    pareto_duplicate)``: the summary line printed under the front."""
    if trials.empty:
        return "0 trials finished"
    feasible = int(trials["feasible"].sum())
    on_front = int(trials["pareto_optimal"].sum())
    duplicates = int(trials["pareto_duplicate"].sum()) if "pareto_duplicate" in trials else 0
    points = on_front - duplicates
    line = f"{len(trials)} trials finished, {feasible} feasible, {points} Pareto-optimal point{'s' * (points != 1)}"
    if duplicates:
        line += f" ({on_front} trials; {duplicates} tied, tagged pareto_duplicate)"
    return line
