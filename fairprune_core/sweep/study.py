"""The sweep's Optuna study: sampler, F1-floor constraint, the paper's settings first, resume.

Everything Optuna lives here, through its public ask/tell API. The study is kept in a
journal file (safe with parallel writers, readable by optuna-dashboard). Objectives:
validation F1 (maximised) and validation Eopp1 (minimised); a trial's constraints are
``floor - F1`` and 1 for a collapsed model (0 otherwise); <= 0 is feasible. They are stored as
the trial's ``constraints`` list, which Optuna 5's samplers and optuna-dashboard both read.

Bookkeeping of interrupted trials uses only public calls: a trial whose run never reported its
final objectives is told FAIL and its settings are enqueued again with the user attribute
``requeued_from`` = its number; such a FAIL does not count against the budget, a real error does.
"""

from __future__ import annotations

import logging
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..config import PAPER_GRID, PAPER_SETTINGS, SAMPLERS, SearchSpace
from ..once import warn_once
from .journal import repair_journal

__all__ = ["OBJECTIVES", "SweepStudy", "grid_size", "make_sampler"]

OBJECTIVES = ("val_avg_f1", "val_eopp1")
DIRECTIONS = ("maximize", "minimize")
PARAMS = ("beta", "step_ratio", "final_ratio")


def _constraints(trial: Any) -> list[float]:
    """Optuna constraints_func (Optuna < 5): <= 0 is feasible; no value counts as infeasible."""
    return list(trial.user_attrs.get("constraint", [1.0]))


def make_sampler(kind: str, *, seed: int, num_trials: int, constrained: bool = True) -> Any:
    """An Optuna sampler for the 2-objective search, with the F1-floor constraint where supported."""
    import optuna

    # Optuna >= 5 reads the constraints stored on trials (set_constraints); older needs constraints_func
    cons = _constraints if constrained and not hasattr(optuna.trial.Trial, "set_constraint") else None
    startup = max(4, min(10, num_trials // 3))
    if kind == "nsga2":
        return optuna.samplers.NSGAIISampler(
            seed=seed, population_size=max(4, min(20, num_trials // 4)), constraints_func=cons
        )
    if kind == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup, multivariate=True, constraints_func=cons)
    if kind == "gp":
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=startup, constraints_func=cons)
    if kind == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if kind == "grid":  # the paper's protocol; the paper's two settings are grid points
        return optuna.samplers.GridSampler({k: list(v) for k, v in PAPER_GRID.items()}, seed=seed)
    raise ValueError(f"unknown sampler {kind!r}; choose one of {', '.join(SAMPLERS)}")


def set_constraints(storage: Any, trial: Any, values: list[float]) -> None:
    """Record a told trial's constraints where this Optuna's samplers and optuna-dashboard read them."""
    trial.set_user_attr("constraint", list(values))  # Optuna < 5: read by constraints_func
    if hasattr(trial, "set_constraint"):  # Optuna >= 5 reads the system attribute "constraints" too
        # the list form (not Trial.set_constraint's named keys): optuna-dashboard 0.21 reads only it
        storage.set_trial_system_attr(trial._trial_id, "constraints", list(values))


def _grid_sampler() -> type:
    import optuna

    return optuna.samplers.GridSampler


def grid_size() -> int:
    """Trials in the paper's grid (beta x final ratio x step)."""
    n = 1
    for values in PAPER_GRID.values():
        n *= len(values)
    return n


_GP_LOGGER = "optuna._gp.optim_mixed"  # "Study already converged, ...": once per suggestion otherwise


class SweepStudy:
    """The study of one sweep, in ``<directory>/optuna.journal``."""

    def __init__(
        self,
        directory: Path,
        name: str,
        *,
        space: SearchSpace,
        sampler: str,
        seed: int,
        num_trials: int,
        log: Callable[[str], None] = print,
    ) -> None:
        import optuna
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        warn_once(logging.getLogger(_GP_LOGGER))
        # the same event's 0/0 inside Optuna (a flat acquisition), which the warning above explains
        warnings.filterwarnings("ignore", "invalid value encountered in divide", RuntimeWarning, _GP_LOGGER)
        self.space = space
        self.log = log
        journal = directory / "optuna.journal"
        repaired = repair_journal(journal)  # a torn tail (a driver killed mid-write) before anything appends
        if repaired is not None:
            log(repaired.describe(journal))
        self.storage = JournalStorage(JournalFileBackend(str(journal)))
        self.study = optuna.create_study(
            storage=self.storage,
            study_name=name,
            directions=list(DIRECTIONS),
            load_if_exists=True,
            sampler=make_sampler(sampler, seed=seed, num_trials=num_trials),
        )
        if list(self.study.metric_names or []) != list(OBJECTIVES):
            with warnings.catch_warnings():  # experimental since Optuna 3.2, stable in use
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                self.study.set_metric_names(list(OBJECTIVES))
        self._asked: dict[int, Any] = {}
        self._lock = threading.RLock()  # a suggestion may be prepared in another thread (sweep.tune)

    def __getstate__(self) -> dict[str, Any]:  # Tune pickles its searcher; a log function may not pickle
        return {k: v for k, v in self.__dict__.items() if k not in ("log", "_lock")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.log = print
        self._lock = threading.RLock()

    # -- setting up -----------------------------------------------------------------------------
    def is_empty(self) -> bool:
        """No trial asked, queued or told yet."""
        return not self.study.get_trials(deepcopy=False)

    def enqueue_paper_settings(self) -> None:
        if isinstance(self.study.sampler, _grid_sampler()):
            return  # the grid holds them already
        for point in PAPER_SETTINGS:
            if self.space.contains(point):
                self.study.enqueue_trial(point)
            else:
                self.log(f"note: the paper's setting {point} lies outside the search space; not enqueued")

    def requeue_interrupted(self) -> None:
        """Trials a stopped sweep left RUNNING (process gone) or PRUNED: FAIL them and queue their
        settings again, once."""
        from optuna.trial import TrialState

        done = self._requeued()
        for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.PRUNED)):
            if t.number in done:
                continue
            if t.state == TrialState.RUNNING:
                self.study.tell(t.number, state=TrialState.FAIL)
            self._requeue(t.number, t.params)

    def _requeue(self, number: int, params: dict[str, Any]) -> None:
        self.study.enqueue_trial({k: params[k] for k in PARAMS if k in params}, user_attrs={"requeued_from": number})
        self.log(f"trial {number} was interrupted; its settings are queued to run again")

    def running_numbers(self) -> set[int]:
        """Trials the journal holds as RUNNING: in a study no process runs, their driver was stopped
        (or their last operations were torn off the journal)."""
        from optuna.trial import TrialState

        return {t.number for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}

    def recover(
        self, number: int, *, f1: float, eopp1: float, floor: float, run_id: str, feasible: bool, collapsed: bool
    ) -> None:
        """Tell a RUNNING trial COMPLETE from what its tracked run recorded: it finished, but the
        driver stopped before telling the study (or the journal lost the telling)."""
        trial = next(t for t in self.study.get_trials(deepcopy=False) if t.number == number)
        tid = trial._trial_id  # the storage's id of the trial (Optuna has no public accessor)
        for key, value in (
            ("constraint", [floor - f1, 1.0 if collapsed else 0.0]),
            ("mlflow_run_id", run_id),
            ("feasible", bool(feasible)),
            ("collapsed", bool(collapsed)),
            ("recovered_from_tracking", True),
        ):
            self.storage.set_trial_user_attr(tid, key, value)
        self.storage.set_trial_system_attr(tid, "constraints", [floor - f1, 1.0 if collapsed else 0.0])
        self._tell(number, [f1, eopp1])

    def requeue_errored(self) -> list[int]:
        """Trials that failed with an error (after Ray Tune's retries) in an earlier invocation: queued
        to run again, once each, so that a resumed sweep runs what it says it runs."""
        from optuna.trial import TrialState

        done = self._requeued()
        errored = [t for t in self.study.get_trials(deepcopy=False, states=(TrialState.FAIL,)) if t.number not in done]
        for t in errored:
            self.study.enqueue_trial(
                {k: t.params[k] for k in PARAMS if k in t.params}, user_attrs={"requeued_from": t.number}
            )
            self.log(f"trial {t.number} failed with an error; its settings are queued to run again")
        return [t.number for t in errored]

    def failed_count(self) -> int:
        """Trials that failed with an error and were not queued again (they used budget)."""
        from optuna.trial import TrialState

        done = self._requeued()
        return sum(1 for t in self.study.get_trials(deepcopy=False, states=(TrialState.FAIL,)) if t.number not in done)

    def completed_count(self) -> int:
        from optuna.trial import TrialState

        return len(self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))

    def interrupted_numbers(self) -> set[int]:
        """Numbers of trials that were interrupted and queued to run again."""
        return self._requeued()

    def _requeued(self) -> set[int]:
        return {
            int(t.user_attrs["requeued_from"])
            for t in self.study.get_trials(deepcopy=False)
            if "requeued_from" in t.user_attrs
        }

    # -- counting -------------------------------------------------------------------------------
    def finished_count(self) -> int:
        """Trials that used budget: completed, and failed ones that were not re-queued."""
        from optuna.trial import TrialState

        requeued = self._requeued()
        done = self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        failed = [
            t for t in self.study.get_trials(deepcopy=False, states=(TrialState.FAIL,)) if t.number not in requeued
        ]
        return len(done) + len(failed)

    def completed_run_ids(self) -> set[str]:
        from optuna.trial import TrialState

        trials = self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        return {t.user_attrs.get("mlflow_run_id", "") for t in trials}

    # -- ask and tell ---------------------------------------------------------------------------
    def ask(self) -> tuple[int, dict[str, float]]:
        """The next settings to try: (trial number, {beta, step_ratio, final_ratio})."""
        from optuna.distributions import FloatDistribution

        dists = {k: FloatDistribution(lo, hi) for k, (lo, hi) in self.space.ranges().items()}
        with self._lock:
            t0 = time.perf_counter()
            trial = self.study.ask(dists)
            trial.set_user_attr("ask_seconds", time.perf_counter() - t0)  # the sampler's cost, as the study grows
            self._asked[trial.number] = trial
        return trial.number, {k: float(trial.params[k]) for k in PARAMS}

    def ask_seconds(self, number: int) -> float:
        """What the sampler took to suggest trial ``number`` (asked in this process)."""
        with self._lock:
            return float(self._asked[number].user_attrs.get("ask_seconds", 0.0))

    def mark_handed(self, number: int, *, waited_s: float, prepared: bool = False) -> None:
        """Record when trial ``number`` went to a trial slot, how long the slot waited for the
        sampler (0 for a suggestion prepared in time) and whether it was prepared while trials
        ran: user attrs ``handed_unix``, ``waited_s``, ``prepared``."""
        with self._lock:
            trial = self._asked[number]
            trial.set_user_attr("handed_unix", time.time())
            trial.set_user_attr("waited_s", waited_s)
            trial.set_user_attr("prepared", prepared)

    def tell(
        self,
        number: int,
        *,
        f1: float,
        eopp1: float,
        floor: float,
        run_id: str = "",
        feasible: bool | None = None,
        collapsed: bool = False,
    ) -> None:
        """A finished trial's objectives and constraints (F1 floor, collapse: read by the sampler and
        by optuna-dashboard); its feasibility, collapse and run id as user attributes."""
        with self._lock:
            trial = self._asked.pop(number)
            set_constraints(self.storage, trial, [floor - f1, 1.0 if collapsed else 0.0])
            trial.set_user_attr("mlflow_run_id", run_id)
            trial.set_user_attr("feasible", bool(f1 >= floor and not collapsed) if feasible is None else bool(feasible))
            trial.set_user_attr("collapsed", bool(collapsed))
            self._tell(trial, [f1, eopp1])

    def _tell(self, trial: Any, values: list[float] | None = None, **kwargs: Any) -> None:
        try:
            self.study.tell(trial, values, **kwargs)
        except RuntimeError as exc:
            # the grid sampler calls Study.stop() once its grid is done, which Optuna only allows
            # inside optimize(); the trial is already recorded (Optuna sets its state in a finally)
            if "Study.stop" not in str(exc):
                raise

    def tell_failed(self, number: int, *, interrupted: bool) -> None:
        """A trial that errored (counts against the budget) or was interrupted (runs again)."""
        from optuna.trial import TrialState

        with self._lock:
            trial = self._asked.pop(number, None)
            if trial is None:
                return
            self._tell(trial, state=TrialState.FAIL)
            if interrupted:
                self._requeue(number, trial.params)
