"""The Pareto sweep: Optuna multi-objective search of FairPrune settings on Ray Tune, in MLflow.

Searches beta, the per-step prune fraction and the final ratio for the Pareto front of
validation F1 (maximised) vs validation Eopp1 (minimised). Test metrics are logged beside them
and never used for selection. A trial whose validation F1 falls below the accuracy floor is
infeasible: the study's constraint sees it, and it is never tagged Pareto-optimal.

One concern per module:

* :mod:`.study` - the Optuna study (sampler, constraint, the paper's settings first, resume)
* :mod:`.tune` - the Ray Tune wiring (searcher over the study, trainable, live table)
* :mod:`.trial` - the trial body: settings + context -> :class:`~.trial.TrialRecord` (no framework)
* :mod:`.state` - the persisted :class:`~.state.SweepState`
* :mod:`.front` - the front and the feasibility rule, pure functions
* :mod:`.table` - what is printed
* :mod:`.runner` - :func:`run_sweep`, which ties them together

Importing this package imports none of Ray, MLflow or Optuna; :func:`run_sweep` does.
"""

from __future__ import annotations

from typing import Any

__all__ = ["SweepOutcome", "format_front", "run_sweep"]


def __getattr__(name: str) -> Any:  # lazy: the runner imports torch and the tracking store
    if name in ("run_sweep", "SweepOutcome"):
        from . import runner

        return getattr(runner, name)
    if name == "format_front":
        from .table import format_front

        return format_front
    raise AttributeError(name)
