"""The study's journal file checked and repaired before Optuna opens it.

Optuna's ``JournalFileBackend`` appends one JSON operation per line. A driver killed mid-write (or
a full disk) leaves a torn last line; Optuna skips it when it reads, but its next append lands
right after the fragment, which then sits in the middle of the file, where a line that is not
JSON makes the whole journal unreadable (``../shared/FACTS.md``). So before the study is opened:

* a torn tail (a last line without its newline, or not JSON) is cut off, after a copy of the file
  is kept beside it, and the caller is told what was cut: Optuna never applied that operation;
* a fragment already in the middle (an older FairPrune appended after a torn tail) is one line
  holding the fragment and then a whole operation: the fragment is dropped, the operation kept
  (again after a copy is kept);
* anything else that is not an operation is an error naming the file, the line and the copy.

No Optuna import: this is a check of the file format (Optuna 3.1+ journals).
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["JournalDamaged", "JournalRepair", "repair_journal"]

_OP = b'{"op_code":'


class JournalDamaged(ValueError):
    """The journal holds a line that is no Optuna operation and cannot be repaired safely."""


@dataclass(frozen=True)
class JournalRepair:
    """What :func:`repair_journal` changed: bytes cut from the tail, fragments dropped, the copy."""

    tail_bytes: int
    fragments: int
    backup: Path

    def describe(self, path: Path) -> str:
        what = []
        if self.tail_bytes:
            what.append(f"cut a torn last line ({self.tail_bytes} bytes: an operation never written in full)")
        if self.fragments:
            what.append(f"dropped {self.fragments} torn fragment(s) an earlier append had left mid-file")
        if not what:
            what.append("added the newline its last operation lacked")
        return f"repaired the study journal {path}: {'; '.join(what)}; the original is kept as {self.backup.name}"


def _is_op(line: bytes) -> bool:
    try:
        value = json.loads(line)
    except ValueError:
        return False
    return isinstance(value, dict) and "op_code" in value


def repair_journal(path: Path) -> JournalRepair | None:
    """Repair ``path`` in place (see the module docstring); None when it was whole or absent."""
    if not path.is_file():
        return None
    data = path.read_bytes()
    lines = data.split(b"\n")
    tail = lines.pop()  # b"" when the file ends with a newline
    kept: list[bytes] = []
    fragments = 0
    for number, line in enumerate(lines, start=1):
        if _is_op(line):
            kept.append(line)
            continue
        start = line.rfind(_OP)
        if start > 0 and _is_op(line[start:]):
            kept.append(line[start:])  # a fragment, then a whole operation appended after it
            fragments += 1
            continue
        if number == len(lines) and not tail:
            tail = line  # the last line is torn (its newline was written, the JSON was not whole)
            continue
        raise JournalDamaged(
            f"the study journal {path} is damaged at line {number} (not an Optuna operation); nothing was changed. "
            f"Restore it from a copy, or start a new sweep (another --name)"
        )
    newline_only = bool(tail) and _is_op(tail)
    if newline_only:  # a whole operation whose newline was not written: kept, with its newline
        kept.append(tail)
        tail = b""
    if not tail and not fragments and not newline_only:
        return None
    stamp = time.strftime("%Y%m%d-%H%M%S")
    backup = path.with_name(f"{path.name}.torn-{stamp}")
    n = 1
    while backup.exists():  # an earlier copy of the same second is never overwritten
        backup, n = path.with_name(f"{path.name}.torn-{stamp}-{n}"), n + 1
    shutil.copy2(path, backup)
    fixed = path.with_name(f".{path.name}.repair")
    fixed.write_bytes(b"".join(line + b"\n" for line in kept))
    fixed.replace(path)
    return JournalRepair(len(tail), fragments, backup)
