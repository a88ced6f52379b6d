"""A log filter that says each distinct message once: a library's per-call warning, said once."""

from __future__ import annotations

import logging

__all__ = ["OncePerMessage", "warn_once"]


class OncePerMessage(logging.Filter):
    """Lets each distinct message through once (a sampler's per-suggestion warning, MLflow's
    per-model one)."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if message in self.seen:
            return False
        self.seen.add(message)
        return True


def warn_once(logger: logging.Logger) -> None:
    """From now on ``logger`` says each distinct message once in this process (idempotent)."""
    if not any(isinstance(f, OncePerMessage) for f in logger.filters):
        logger.addFilter(OncePerMessage())
