"""What the rest of FairPrune asks of a tracking store, and the tracker that stores nothing."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

__all__ = ["LoggedModel", "NullTracker", "Tracker", "TrackingError"]


class TrackingError(RuntimeError):
    """The tracking store cannot be used as configured."""


@dataclass(frozen=True)
class LoggedModel:
    model_id: str
    model_uri: str
    bytes: int  # artifact size; -1 when unknown


class Tracker(Protocol):
    """A store of runs: params, per-step and final metrics, tags, artifacts and models.

    Runs nest: a run started while another is open is its child. Sweep bookkeeping (finished
    runs, closing runs an interrupted sweep left open, front tags) is part of the interface so
    that no caller touches the store's own API.
    """

    enabled: bool

    def run(self, name: str, *, tags: Mapping[str, str] | None = None, run_id: str | None = None) -> Any:
        """Context manager: a new run (or ``run_id`` resumed); yields its id."""
        ...

    def log_params(self, params: Mapping[str, Any]) -> None: ...
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None, model_id: str | None = None) -> None:
        """Log to the open run (and link to the logged model ``model_id``, shown on its page)."""
        ...

    def log_curves(self, rows: Sequence[tuple[int, Mapping[str, float], float]]) -> None:
        """Log per-step metrics to the open run in one call: (step, metrics, unix time) rows."""
        ...

    def set_tags(self, tags: Mapping[str, str]) -> None: ...
    def log_model(
        self, model: Any, masks: Mapping[str, Any] | None, *, name: str, tags: Mapping[str, str], step: int = 0
    ) -> LoggedModel:
        """Log ``model`` named ``name`` (its run's name) at pruning step ``step``."""
        ...

    def load_model(self, model_uri: str) -> tuple[Any, Mapping[str, Any] | None]: ...
    def log_dict(self, obj: Any, artifact_file: str) -> None: ...
    def log_file(self, path: str | Path, artifact_path: str | None = None) -> None: ...
    def log_frame(self, frame: Any, stem: str) -> None: ...
    def log_array(self, array: Any, artifact_file: str) -> None: ...
    def finished_runs(self, sweep_id: str, method: str | None = None) -> Any: ...
    def close_unfinished(
        self, sweep_id: str, completed: set[str], interrupted: set[int] = frozenset()
    ) -> tuple[int, int]: ...
    def completed_trials(self, sweep_id: str, numbers: set[int]) -> dict[int, dict[str, Any]]: ...
    def close_attempts(self, sweep_id: str, number: int) -> int: ...
    def mark_killed(self, run_id: str) -> None: ...
    def set_front_tags(self, tags: Mapping[str, Mapping[str, str]], model_ids: Mapping[str, str | None]) -> None: ...
    def register_front(
        self, registry: str, members: Mapping[str, Mapping[str, str]], aliases: Mapping[str, str]
    ) -> dict[str, str]: ...


class NullTracker:
    """Stores nothing: what library calls and tests use when no tracking is asked for."""

    enabled = False

    @contextmanager
    def run(self, name: str, *, tags: Mapping[str, str] | None = None, run_id: str | None = None) -> Iterator[str]:
        yield run_id or ""

    def log_params(self, params: Mapping[str, Any]) -> None:
        pass

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None, model_id: str | None = None) -> None:
        pass

    def log_curves(self, rows: Sequence[tuple[int, Mapping[str, float], float]]) -> None:
        pass

    def set_tags(self, tags: Mapping[str, str]) -> None:
        pass

    def log_model(
        self, model: Any, masks: Mapping[str, Any] | None, *, name: str, tags: Mapping[str, str], step: int = 0
    ) -> LoggedModel:
        return LoggedModel("", "", -1)

    def load_model(self, model_uri: str) -> tuple[Any, Mapping[str, Any] | None]:
        raise TrackingError("the null tracker stores no models")

    def log_dict(self, obj: Any, artifact_file: str) -> None:
        pass

    def log_file(self, path: str | Path, artifact_path: str | None = None) -> None:
        pass

    def log_frame(self, frame: Any, stem: str) -> None:
        pass

    def log_array(self, array: Any, artifact_file: str) -> None:
        pass

    def finished_runs(self, sweep_id: str, method: str | None = None) -> Any:
        import pandas as pd

        return pd.DataFrame()

    def close_unfinished(
        self, sweep_id: str, completed: set[str], interrupted: set[int] = frozenset()
    ) -> tuple[int, int]:
        return 0, 0

    def completed_trials(self, sweep_id: str, numbers: set[int]) -> dict[int, dict[str, Any]]:
        return {}

    def close_attempts(self, sweep_id: str, number: int) -> int:
        return 0

    def mark_killed(self, run_id: str) -> None:
        pass

    def set_front_tags(self, tags: Mapping[str, Mapping[str, str]], model_ids: Mapping[str, str | None]) -> None:
        pass

    def register_front(
        self, registry: str, members: Mapping[str, Mapping[str, str]], aliases: Mapping[str, str]
    ) -> dict[str, str]:
        return {}
