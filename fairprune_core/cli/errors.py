"""Running an entry point: user errors as one clear line, everything else as a traceback.

A user error is one of FairPrune's own error types (bad data, unreachable tracking store, a
locked sweep, ...) or a ``ValueError``/``FileNotFoundError``/``FileExistsError`` raised where
inputs are checked (settings, the command line, checkpoints, datasets, sweep folders, tracking).
The same types raised anywhere else are bugs and keep their traceback. ``FAIRPRUNE_TRACEBACK=1``
shows the traceback of every error.
"""

from __future__ import annotations

import os
import traceback
from pathlib import Path
from typing import Any

__all__ = ["is_user_error", "run_main"]

# where inputs are validated: a ValueError raised there is about the user's input
_PACKAGE = Path(__file__).resolve().parents[1]
_CHECKING = (
    "config.py",
    "cli/",
    "checkpoint.py",
    "datasets/",
    "export.py",
    "methods/__init__.py",
    "models/",
    "pretrained.py",
    "sweep/runner.py",
    "sweep/state.py",
    "sweep/study.py",
    "tracking/",
)


def _user_errors() -> tuple[type[BaseException], ...]:
    from ..checkpoint import CheckpointMismatch
    from ..comparison import ChanceModelError
    from ..curvature.distributed import PoolResourcesError
    from ..datasets import DatasetError
    from ..models import ModelFileError
    from ..sweep.journal import JournalDamaged
    from ..sweep.lock import SweepLocked
    from ..tracking import TrackingError

    return (
        DatasetError,
        TrackingError,
        PoolResourcesError,
        CheckpointMismatch,
        ChanceModelError,
        SweepLocked,
        JournalDamaged,
        ModelFileError,
    )


def _raised_where_inputs_are_checked(exc: BaseException) -> bool:
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return False
    where = Path(frames[-1].filename).resolve()
    if _PACKAGE not in where.parents:
        return where.parent.name == "sweeps"  # the entry points' own argument checks
    inside = where.relative_to(_PACKAGE).as_posix()
    return any(inside == c or (c.endswith("/") and inside.startswith(c)) for c in _CHECKING)


def is_user_error(exc: BaseException) -> bool:
    if isinstance(exc, _user_errors()):
        return True
    return isinstance(exc, ValueError | FileNotFoundError | FileExistsError) and _raised_where_inputs_are_checked(exc)


class Interrupted(KeyboardInterrupt):
    """A Ctrl-C that knows what the user can do next (``advice``), when only the code it stopped knows."""

    def __init__(self, advice: str) -> None:
        super().__init__(advice)
        self.advice = advice


def run_main(main: Any, argv: list[str] | None = None, *, interrupted: str = "") -> int:
    """Run an entry point; user errors (bad data, unreachable tracking server, impossible
    resources, mismatched checkpoint, invalid settings) print one clear line instead of a traceback,
    and so does Ctrl-C (exit 130), with what the user can do next: an :class:`Interrupted`'s advice,
    else ``interrupted``.

    The error types are imported only when something was raised, so ``--help`` stays instant."""
    import sys

    try:
        return int(main(argv) or 0)
    except KeyboardInterrupt as exc:
        if os.environ.get("FAIRPRUNE_TRACEBACK") == "1":
            raise
        advice = exc.advice if isinstance(exc, Interrupted) else interrupted
        print(f"\nstopped (Ctrl-C){'; ' + advice if advice else ''}", file=sys.stderr)
        return 130
    except Exception as exc:
        if os.environ.get("FAIRPRUNE_TRACEBACK") == "1" or not is_user_error(exc):
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
