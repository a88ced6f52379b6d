"""One driver per sweep folder: a lock file naming its holder, a stale one detected and taken over.

Two drivers on one folder would log two parent runs, re-queue each other's running trials and
overwrite each other's figures. The lock is created atomically (``O_EXCL``) and holds the
holder's pid, host and start time; a lock whose process is gone (same host) is stale.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["LOCK_NAME", "SweepLocked", "sweep_lock"]

LOCK_NAME = "sweep.lock"


class SweepLocked(RuntimeError):
    """Another live driver holds the sweep folder."""


def _holder(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}  # being written, or garbage: treated as held by an unknown process


def _alive(holder: dict[str, Any]) -> bool:
    if holder.get("host") != socket.gethostname():
        return True  # another machine's process: it cannot be checked from here
    try:
        os.kill(int(holder["pid"]), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, KeyError, ValueError):
        return True
    return True


@contextmanager
def sweep_lock(directory: Path, log: Callable[[str], None] = print, *, why: str = "") -> Iterator[Path]:
    """Hold ``directory/sweep.lock`` for the body; :class:`SweepLocked` if a live driver (or a report)
    has it. ``why``: what this process would get wrong by going on anyway, said in the error."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / LOCK_NAME
    me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    for _ in range(3):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = _holder(path)
            if not holder or _alive(holder):
                why = f": {why}" if why else ""
                where = f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}, since {holder.get('started', '?')}"
                raise SweepLocked(
                    f"sweep folder {directory} is in use by another sweep driver or report ({where}){why}. Wait "
                    f"for it to finish or stop it, or use another --name. If that process is gone (another machine, "
                    f"or a crash there), delete {path}"
                ) from None
            log(f"removing a stale lock of {directory.name}: its driver (pid {holder['pid']}) is no longer running")
            path.unlink(missing_ok=True)
            continue
        with os.fdopen(fd, "w") as f:
            json.dump(me, f)
        break
    else:
        raise SweepLocked(f"could not take the lock {path}; another driver keeps taking it")
    try:
        yield path
    finally:
        if _holder(path).get("pid") == me["pid"]:
            path.unlink(missing_ok=True)
