"""The dataset object every loader returns, and the bookkeeping shared by all loaders."""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

__all__ = ["SPLITS", "DatasetError", "DermDataset", "DropLog", "SplitArrays", "read_csv_checked"]

SPLITS: tuple[str, ...] = ("train", "val", "test")
Split = Literal["train", "val", "test"]


class DatasetError(ValueError):
    """A dataset on disk cannot be used as given; the message says what is wrong and how to fix."""


def read_csv_checked(path: Path, required: list[str], *, what: str, fix: str) -> pd.DataFrame:
    """Read a CSV, failing clearly when it is missing, unreadable or lacks columns."""
    if not path.is_file():
        raise DatasetError(f"{what} not found: {path}. {fix}")
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
        raise DatasetError(f"cannot parse {what} {path}: {exc}") from exc
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise DatasetError(
            f"column{'s' if len(missing) > 1 else ''} {', '.join(repr(c) for c in missing)} "
            f"missing from {path.name}; found: {', '.join(map(str, frame.columns))}. {fix}"
        )
    return frame


@dataclass
class DropLog:
    """Counts rows read, and rows dropped per reason (in the order the reasons occurred)."""

    rows_read: int = 0
    dropped: Counter = field(default_factory=Counter)
    notes: list[str] = field(default_factory=list)

    def drop(self, reason: str, count: int) -> None:
        if count:
            self.dropped[reason] += int(count)


@dataclass(frozen=True)
class SplitArrays:
    """One split in memory: uint8 images ``(N, H, W, 3)``, labels ``(N,)``, group ids ``(N,)``."""

    images: np.ndarray
    labels: np.ndarray
    groups: np.ndarray
    image_ids: np.ndarray

    def __len__(self) -> int:
        return int(self.labels.shape[0])


@dataclass
class DermDataset:
    """A loaded dermatology dataset: kept rows, their split, and their cached pixels.

    ``records`` has one row per kept image with columns ``image_id``, ``path``, ``label`` (class
    index into ``class_names``), ``group`` (sensitive-group index into ``group_names``) and
    ``split``. Pixels live in a memory-mapped uint8 cache (``cache_file``); ``cache_row`` is each
    record's row in it. Every later run and every distributed worker skips JPEG decoding.
    """

    name: str
    root: Path
    class_names: list[str]
    group_names: list[str]
    records: pd.DataFrame
    image_size: int
    cache_file: Path
    manifest_file: Path
    options: dict[str, Any]
    drop_log: DropLog
    dropped_classes: list[str]
    _images: np.ndarray | None = field(default=None, repr=False)
    _splits: dict[str, SplitArrays] = field(default_factory=dict, repr=False)

    # -- pixels and splits -------------------------------------------------------------------
    @property
    def cache(self) -> np.ndarray:
        """The whole pixel cache, ``(M, H, W, 3)`` uint8, memory-mapped (index by ``cache_row``)."""
        if self._images is None:
            self._images = np.load(self.cache_file, mmap_mode="r")
        return self._images

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def split(self, name: Split) -> SplitArrays:
        """The rows of one split, with their pixels read from the cache into memory (once; later
        calls return the same arrays, which callers must not modify)."""
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; expected one of {SPLITS}")
        if name not in self._splits:
            self._splits[name] = self._read_split(name)
        return self._splits[name]

    def _read_split(self, name: str) -> SplitArrays:
        idx = np.flatnonzero(self.records["split"].to_numpy() == name)
        rows = self.records["cache_row"].to_numpy(np.int64)[idx]
        return SplitArrays(
            images=np.ascontiguousarray(self.cache[rows]),
            labels=self.records["label"].to_numpy(np.int64)[idx],
            groups=self.records["group"].to_numpy(np.int64)[idx],
            image_ids=self.records["image_id"].to_numpy(str)[idx],
        )

    # -- manifest ----------------------------------------------------------------------------
    @property
    def manifest(self) -> pd.DataFrame:
        """image id -> split, sorted by image id."""
        return self.records[["image_id", "split"]].sort_values("image_id").reset_index(drop=True)

    @property
    def manifest_fingerprint(self) -> str:
        return manifest_fingerprint(self.manifest)

    def save_manifest(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.manifest.to_csv(path, index=False)
        return path

    # -- reporting ---------------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        """A plain dict: rows read/kept/dropped (per reason), class, group and split counts."""
        rec = self.records
        class_counts = rec["label"].value_counts().reindex(range(self.num_classes), fill_value=0)
        group_counts = rec["group"].value_counts().reindex(range(len(self.group_names)), fill_value=0)
        per_split = {
            s: {
                "images": int((rec["split"] == s).sum()),
                "groups": {
                    g: int(((rec["split"] == s) & (rec["group"] == i)).sum()) for i, g in enumerate(self.group_names)
                },
            }
            for s in SPLITS
        }
        return {
            "dataset": self.name,
            "root": str(self.root),
            "rows_read": self.drop_log.rows_read,
            "rows_kept": len(rec),
            "rows_dropped": int(sum(self.drop_log.dropped.values())),
            "dropped_by_reason": dict(self.drop_log.dropped),
            "classes_dropped": list(self.dropped_classes),
            "num_classes": self.num_classes,
            "class_counts": {self.class_names[i]: int(n) for i, n in class_counts.items()},
            "group_counts": {self.group_names[i]: int(n) for i, n in group_counts.items()},
            "splits": per_split,
            "image_size": self.image_size,
            "manifest_fingerprint": self.manifest_fingerprint,
            "notes": list(self.drop_log.notes),
            "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in self.options.items()},
        }

    def describe(self) -> str:
        """Human-readable summary lines (what was kept and dropped, and why)."""
        s = self.summary()
        lines = [
            f"{self.name}: read {s['rows_read']} rows, kept {s['rows_kept']} images of "
            f"{s['num_classes']} classes ({', '.join(f'{k} {v}' for k, v in s['group_counts'].items())})"
        ]
        for reason, n in s["dropped_by_reason"].items():
            lines.append(f"  dropped {n} rows: {reason}")
        if s["classes_dropped"]:
            shown = ", ".join(s["classes_dropped"][:10])
            more = len(s["classes_dropped"]) - 10
            lines.append(
                f"  dropped {len(s['classes_dropped'])} classes left without rows: {shown}"
                + (f" (+{more} more)" if more > 0 else "")
            )
        lines.extend(f"  note: {n}" for n in s["notes"])
        sp = s["splits"]
        lines.append(
            "  split train/val/test: "
            + "/".join(str(sp[k]["images"]) for k in SPLITS)
            + f" (manifest {s['manifest_fingerprint'][:12]})"
        )
        return "\n".join(lines)

    def spec(self) -> dict[str, Any]:
        """Arguments that reload this dataset with ``load_dataset(**spec)`` (e.g. in a worker)."""
        return {"name": self.name, "root": str(self.root), **self.options}


def manifest_fingerprint(manifest: pd.DataFrame) -> str:
    rows = manifest.sort_values("image_id")
    text = "\n".join(f"{i},{s}" for i, s in zip(rows["image_id"], rows["split"], strict=True))
    return hashlib.sha256(text.encode()).hexdigest()
