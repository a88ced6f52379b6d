"""The steps every loader shares after parsing its CSV: images, cache, classes, splits."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ._base import DatasetError, DermDataset, DropLog, manifest_fingerprint
from .cache import build_image_cache, default_cache_dir
from .splits import assign_splits


def index_images(image_root: Path, extensions: tuple[str, ...] = (".jpg", ".jpeg", ".png")) -> dict[str, str]:
    """Map image stem -> path for every image anywhere below ``image_root``."""
    found: dict[str, str] = {}
    if not image_root.is_dir():
        return found
    for path in sorted(image_root.rglob("*")):
        if path.suffix.lower() in extensions and path.is_file():
            found.setdefault(path.stem, str(path))
    return found


def _check_classes_and_groups(
    rows: pd.DataFrame, class_names: list[str], group_names: list[str], name: str, fix_hint: str
) -> tuple[list[str], list[str]]:
    """Classes with images (in their original order) and those without; errors for < 2 classes or
    a missing group."""
    present = set(rows["label_name"])
    kept_classes = [c for c in class_names if c in present]
    dropped_classes = [c for c in class_names if c not in present]
    if len(kept_classes) < 2:
        raise DatasetError(
            f"{name}: only {len(kept_classes)} class ({', '.join(kept_classes) or 'none'}) has "
            f"images after filtering; classification needs at least 2. {fix_hint}".strip()
        )
    group_counts = rows["group"].value_counts()
    if len(group_counts) < 2 or (group_counts < 1).any():
        have = ", ".join(f"{group_names[g]} {n}" for g, n in group_counts.items()) or "none"
        raise DatasetError(
            f"{name}: fairness needs images from both groups ({' and '.join(group_names)}); "
            f"found {have}. {fix_hint}".strip()
        )
    return kept_classes, dropped_classes


def _check_every_class_is_trained_and_validated(
    labels: np.ndarray, split: np.ndarray, class_names: list[str], name: str, fix_hint: str
) -> None:
    """A class without training images cannot be learnt; one without validation images cannot be
    selected on or measured: both are errors, naming the classes and their images per split."""
    missing = []
    for k, cls in enumerate(class_names):
        counts = {s: int(((labels == k) & (split == s)).sum()) for s in ("train", "val", "test")}
        if counts["train"] == 0 or counts["val"] == 0:
            missing.append(f"{cls} (train {counts['train']}, val {counts['val']}, test {counts['test']})")
    if missing:
        raise DatasetError(
            f"{name}: {len(missing)} class(es) without training or validation images: {'; '.join(missing[:10])}"
            f"{' ...' if len(missing) > 10 else ''}. Every class needs both: remove or merge those classes' rows "
            f"(or add images), or draw another split (--split-seed; a --manifest that gives them both). "
            f"{fix_hint}".strip()
        )


def assemble(
    *,
    name: str,
    root: Path,
    rows: pd.DataFrame,
    class_names: list[str],
    group_names: list[str],
    drop_log: DropLog,
    image_size: int,
    seed: int,
    cache_dir: str | Path | None,
    manifest: str | Path | None,
    skip_unreadable: bool,
    options: dict[str, Any],
    unit_column: str | None = None,
    fix_hint: str = "",
) -> DermDataset:
    """Turn parsed rows into a :class:`DermDataset`.

    ``rows`` has columns ``image_id``, ``path`` (None when the image file is absent),
    ``label_name``, ``group`` and optionally ``unit_column``. Rows without an image file are
    dropped and counted; if none is left that is an error.
    """
    if image_size < 8:
        raise ValueError(f"image_size must be >= 8 pixels, got {image_size}")
    has_image = rows["path"].notna()
    drop_log.drop("image file not found", int((~has_image).sum()))
    rows = rows[has_image].reset_index(drop=True)
    if rows.empty:
        raise DatasetError(f"no images found for any usable row of {name} under {root}. {fix_hint}".strip())

    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    cache_file, bad = build_image_cache(
        rows["path"].tolist(),
        dataset=name,
        size=image_size,
        cache_dir=cache_dir,
        skip_unreadable=skip_unreadable,
    )
    cache_pos = np.arange(len(rows))
    if bad:
        drop_log.drop("unreadable image file", len(bad))
        keep = np.ones(len(rows), dtype=bool)
        keep[bad] = False
        rows, cache_pos = rows[keep].reset_index(drop=True), cache_pos[keep]
    kept_classes, dropped_classes = _check_classes_and_groups(rows, class_names, group_names, name, fix_hint)
    label_index = {c: i for i, c in enumerate(kept_classes)}
    labels = rows["label_name"].map(label_index).to_numpy(np.int64)
    groups = rows["group"].to_numpy(np.int64)

    if manifest is not None:
        split = _splits_from_manifest(Path(manifest), rows["image_id"], drop_log)
        keep = split != ""
        rows, cache_pos, labels, groups, split = (
            rows[keep].reset_index(drop=True),
            *(a[keep] for a in (cache_pos, labels, groups, split)),
        )
    else:
        unit = rows[unit_column].to_numpy(object) if unit_column else None
        split = assign_splits(labels, groups, seed=seed, unit=unit)

    _check_every_class_is_trained_and_validated(labels, split, kept_classes, name, fix_hint)
    records = pd.DataFrame(
        {
            "image_id": rows["image_id"].to_numpy(str),
            "path": rows["path"].to_numpy(str),
            "label": labels,
            "group": groups,
            "split": split,
            "cache_row": cache_pos,
        }
    )
    if unit_column:
        records[unit_column] = rows[unit_column].to_numpy(object)
    dataset = DermDataset(
        name=name,
        root=root,
        class_names=kept_classes,
        group_names=list(group_names),
        records=records,
        image_size=image_size,
        cache_file=cache_file,
        manifest_file=cache_dir / "manifests" / f"{name}-{manifest_fingerprint(records)[:16]}.csv",
        options=options,
        drop_log=drop_log,
        dropped_classes=dropped_classes,
    )
    if not dataset.manifest_file.is_file():
        dataset.save_manifest(dataset.manifest_file)
    return dataset


def _splits_from_manifest(path: Path, image_ids: pd.Series, drop_log: DropLog) -> np.ndarray:
    if not path.is_file():
        raise DatasetError(f"split manifest not found: {path}; pass the manifest CSV a run saved")
    frame = pd.read_csv(path, dtype=str)
    if not {"image_id", "split"} <= set(frame.columns):
        raise DatasetError(f"split manifest {path} needs columns image_id, split; found: {', '.join(frame.columns)}")
    bad = sorted(set(frame["split"]) - {"train", "val", "test"})
    if bad:
        raise DatasetError(f"split manifest {path} has unknown split names {bad}; use train/val/test")
    mapping = dict(zip(frame["image_id"], frame["split"], strict=True))
    split = image_ids.map(mapping).fillna("").to_numpy(str)
    drop_log.drop("not in the given split manifest", int((split == "").sum()))
    return split
