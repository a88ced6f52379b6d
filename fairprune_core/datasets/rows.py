"""Metadata rows made consistent before a loader uses them: labels and duplicate rows.

* A label is one class whatever whitespace surrounds it (``'psoriasis '`` is ``'psoriasis'``), and
  labels that differ only in case are one class, spelt as most rows spell it; each merge is a note
  in the dataset's summary, naming the spellings and their rows.
* Rows that share an image id and agree on everything the loader uses are one image (the others
  dropped as duplicates); rows that share an id but disagree (another label, another group) say
  nothing reliable about that image: all of them are dropped, as conflicting duplicates.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from ._base import DropLog

__all__ = ["clean_labels", "conflicting_ids", "drop_duplicate_rows"]


def clean_labels(labels: pd.Series, log: DropLog, column: str) -> pd.Series:
    """``labels`` stripped, inner whitespace collapsed, and case variants merged (see the module
    docstring); missing values stay missing, empty ones become missing."""
    text = labels.where(labels.isna(), labels.astype(str).str.split().str.join(" "))
    text = text.where(text != "", None)
    changed = int(((text != labels.astype(object)) & labels.notna() & text.notna()).sum())
    if changed:
        log.notes.append(f"{column}: {changed} label(s) had extra whitespace, removed")
    counts = text.value_counts()
    spellings: dict[str, list[str]] = {}
    for spelt in counts.index:
        spellings.setdefault(str(spelt).casefold(), []).append(str(spelt))
    mapping = {}
    for variants in spellings.values():
        if len(variants) < 2:
            continue
        main = max(variants, key=lambda v: (counts[v], v))  # most rows; ties: a fixed choice
        others = sorted(v for v in variants if v != main)
        mapping.update({v: main for v in others})
        listed = ", ".join(f"{v!r} ({counts[v]} rows)" for v in others)
        log.notes.append(f"{column}: labels differing only in case merged: {listed} -> {main!r} ({counts[main]} rows)")
    return text.replace(mapping) if mapping else text


def conflicting_ids(frame: pd.DataFrame, key: str, columns: Sequence[str]) -> dict[str, list[str]]:
    """Ids of ``key`` whose rows disagree on ``columns``: id -> the columns that differ."""
    dup = frame[key].duplicated(keep=False)
    if not dup.any():
        return {}
    rows = frame.loc[dup, [key, *columns]].astype({c: str for c in columns})
    same = rows.groupby(key)[list(columns)].nunique(dropna=False)
    return {str(i): [c for c in columns if same.loc[i, c] > 1] for i in same.index[(same > 1).any(axis=1)]}


def drop_duplicate_rows(frame: pd.DataFrame, key: str, columns: Sequence[str], log: DropLog) -> pd.DataFrame:
    """One row per ``key``: exact duplicates (same ``columns``) kept once; ids whose rows disagree
    on ``columns`` dropped entirely. Each drop is counted under its reason."""
    conflicts = conflicting_ids(frame, key, columns)
    if conflicts:
        bad = frame[key].astype(str).isin(conflicts)
        log.drop(f"conflicting duplicate {key} (rows disagree on {_differ(conflicts)})", int(bad.sum()))
        frame = frame[~bad]
    repeated = frame[key].duplicated()
    log.drop(f"duplicate {key}", int(repeated.sum()))
    return frame[~repeated]


def _differ(conflicts: dict[str, list[str]]) -> str:
    return ", ".join(sorted({c for cols in conflicts.values() for c in cols}))
