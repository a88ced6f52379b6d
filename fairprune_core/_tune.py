"""Ray Tune pieces of the sweep. Module-level classes: Tune pickles its searcher and callbacks."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

from ray.tune import Callback
from ray.tune.search.optuna import OptunaSearch

from .sweep import SearchSpace

__all__ = ["ConstrainedOptunaSearch", "ProgressTable", "SearchSpaceFn"]


class SearchSpaceFn:
    """Optuna define-by-run space: beta, step ratio, final ratio (and the trial's number)."""

    def __init__(self, space: SearchSpace) -> None:
        self.space = space

    def __call__(self, trial: Any) -> dict[str, Any]:
        trial.suggest_float("beta", *self.space.beta)
        trial.suggest_float("step_ratio", *self.space.step_ratio)
        trial.suggest_float("final_ratio", *self.space.final_ratio)
        return {"trial_number": trial.number}


class ConstrainedOptunaSearch(OptunaSearch):
    """OptunaSearch that hands each trial's ``constraint`` (F1 floor minus val F1, <= 0 feasible)
    to Optuna before the trial is told: ``Trial.set_constraint`` on Optuna >= 5, whose samplers
    (TPE, NSGA-II, GP) read it; a user attribute for older Optuna's ``constraints_func``."""

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        trial = self._ot_trials.get(trial_id)
        if trial is not None and result and "constraint" in result:
            values = [float(c) for c in result["constraint"]]
            if hasattr(trial, "set_constraint"):  # Optuna >= 5: samplers read trial.constraints
                for i, v in enumerate(values):
                    trial.set_constraint(f"f1_floor_{i}", v)
            trial.set_user_attr("constraint", values)  # older Optuna: read by constraints_func
            trial.set_user_attr("mlflow_run_id", str(result.get("mlflow_run_id", "")))
        super().on_trial_complete(trial_id, result=result, error=error)


class ProgressTable(Callback):
    """A live table of the sweep: one row per finished (or failed) trial."""

    def __init__(self, total: int, already: int, log: Callable[[str], None] = print) -> None:
        self.total = total
        self.done = already
        self.log = log
        self.started = time.monotonic()
        header = f"{'trial':>5} {'beta':>6} {'step':>6} {'final':>6} {'val F1':>7} {'val Eopp1':>9}  status"
        log(header)
        log("-" * (len(header) + 24))

    def _row(self, trial: Any, status: str) -> None:
        cfg, res = trial.config, trial.last_result or {}
        step = min(cfg.get("step_ratio", math.nan), cfg.get("final_ratio", math.nan))
        self.done += 1
        self.log(
            f"{cfg.get('trial_number', -1):>5} {cfg.get('beta', math.nan):6.3f} {step:6.3f} "
            f"{cfg.get('final_ratio', math.nan):6.3f} {res.get('val_avg_f1', math.nan):7.4f} "
            f"{res.get('val_eopp1', math.nan):9.4f}  {status} "
            f"[{self.done}/{self.total}, {time.monotonic() - self.started:.0f}s]"
        )

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        res = trial.last_result or {}
        self._row(trial, "feasible" if res.get("feasible") else "INFEASIBLE (below the F1 floor)")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._row(trial, "ERROR (see the Tune log)")

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "log"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.log = print
