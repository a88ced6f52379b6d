"""Running an entry point: user errors as one clear line, everything else as a traceback."""

from __future__ import annotations

from typing import Any

__all__ = ["run_main"]


def _user_errors() -> tuple[type[BaseException], ...]:
    from ..checkpoint import CheckpointMismatch
    from ..datasets import DatasetError
    from ..distributed import PoolResourcesError
    from ..sweep.lock import SweepLocked
    from ..tracking import TrackingError

    return (
        DatasetError,
        TrackingError,
        PoolResourcesError,
        CheckpointMismatch,
        SweepLocked,
        FileExistsError,
        FileNotFoundError,
        ValueError,
    )


def run_main(main: Any, argv: list[str] | None = None) -> int:
    """Run an entry point; user errors (bad data, unreachable tracking server, impossible
    resources, mismatched checkpoint, invalid settings) print one clear line instead of a traceback.

    The error types are imported only when something was raised, so ``--help`` stays instant."""
    import sys

    try:
        return int(main(argv) or 0)
    except Exception as exc:
        if not isinstance(exc, _user_errors()):
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
