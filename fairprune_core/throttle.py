"""A clock that says when periodic work is due: progress reports at most every N seconds."""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["Throttle", "throttled"]


class Throttle:
    """``due()`` is True at most once per ``every_s`` seconds (always, with 0), the first time
    ``every_s`` after construction. Per-step progress (MLflow curves, Tune reports) goes out when
    due, so that a fast step does not pay a store or scheduler round trip each time."""

    def __init__(self, every_s: float) -> None:
        if every_s < 0:
            raise ValueError(f"every_s must be >= 0, got {every_s}")
        self.every_s = every_s
        self._last = time.monotonic()

    def due(self) -> bool:
        now = time.monotonic()
        if now - self._last >= self.every_s:
            self._last = now
            return True
        return False


def throttled(log: Callable[[str], None], every_s: float, indent: str = "  ") -> Callable[[str], None]:
    """``log`` at most one line per ``every_s`` seconds, the first ``every_s`` after this call
    (indented): a long stretch of work shows it is moving, a short one prints nothing."""
    throttle = Throttle(every_s)

    def say(line: str) -> None:
        if throttle.due():
            log(indent + line.lstrip())

    return say
