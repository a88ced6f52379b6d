"""ISIC 2019: ``ISIC_2019_Training_GroundTruth.csv`` (one-hot), ``..._Metadata.csv``, images.

Group: ``sex`` (``female`` id 0, ``male`` id 1); rows without sex are excluded and counted.
Classes without rows (``UNK`` in the training set) are dropped. ``lesion_id`` groups the images
of one lesion so that they never land in two splits.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ._base import DatasetError, DermDataset, DropLog, read_csv_checked
from ._build import assemble, index_images
from .rows import conflicting_ids, drop_duplicate_rows

__all__ = ["GROUND_TRUTH", "GROUP_NAMES", "IMAGE_DIR", "METADATA", "load_isic2019"]

GROUND_TRUTH = "ISIC_2019_Training_GroundTruth.csv"
METADATA = "ISIC_2019_Training_Metadata.csv"
IMAGE_DIR = "ISIC_2019_Training_Input"
GROUP_NAMES = ["female", "male"]


def load_isic2019(
    root: str | Path,
    *,
    image_size: int = 128,
    seed: int = 0,
    cache_dir: str | Path | None = None,
    manifest: str | Path | None = None,
    skip_unreadable: bool = False,
    group_split_by_lesion: bool = True,
    name: str = "isic2019",
) -> DermDataset:
    """Load ISIC 2019 from ``root`` (holding the two CSVs and ``ISIC_2019_Training_Input/``)."""
    root = Path(root)
    fix = f"Pass the folder that holds {GROUND_TRUTH}, {METADATA} and {IMAGE_DIR}/."
    truth = read_csv_checked(root / GROUND_TRUTH, ["image"], what="ISIC 2019 ground truth", fix=fix)
    meta = read_csv_checked(root / METADATA, ["image", "sex"], what="ISIC 2019 metadata", fix=fix)
    class_names = [c for c in truth.columns if c != "image"]
    if len(class_names) < 2:
        raise DatasetError(
            f"{GROUND_TRUTH} needs one column per class after 'image'; found: {', '.join(truth.columns)}"
        )
    try:
        onehot = truth[class_names].astype(float).to_numpy()
    except ValueError as exc:
        raise DatasetError(f"{GROUND_TRUTH}: class columns must hold 0/1 (or 0.0/1.0) values: {exc}") from exc
    valid = np.isin(onehot, (0.0, 1.0)).all(axis=1) & (onehot.sum(axis=1) == 1)
    if not valid.all():
        bad = truth.loc[~valid, "image"].head(5).tolist()
        raise DatasetError(
            f"{GROUND_TRUTH}: {int((~valid).sum())} rows are not one-hot over "
            f"{', '.join(class_names)} (e.g. {', '.join(bad)}); each row needs exactly one 1"
        )
    labels = pd.Series(np.asarray(class_names)[onehot.argmax(axis=1)], index=truth["image"])

    log = DropLog(rows_read=len(truth))
    kept = drop_duplicate_rows(
        pd.DataFrame({"image": labels.index, "label": labels.to_numpy()}), "image", ["label"], log
    )
    labels = pd.Series(kept["label"].to_numpy(), index=kept["image"].to_numpy())

    # metadata rows of one image that disagree (another sex, another lesion): that image's group is unknown
    meta = meta.assign(sex=meta["sex"].str.strip().str.lower())
    conflicts = conflicting_ids(meta, "image", ["sex", *(["lesion_id"] if "lesion_id" in meta.columns else [])])
    in_conflict = labels.index.isin(list(conflicts))
    which = ", ".join(sorted({c for cols in conflicts.values() for c in cols}))
    log.drop(f"conflicting rows in {METADATA} (they disagree on {which})", int(in_conflict.sum()))
    labels = labels[~in_conflict]
    meta = meta.drop_duplicates("image").set_index("image")
    in_meta = labels.index.isin(meta.index)
    log.drop(f"no row in {METADATA}", int((~in_meta).sum()))
    labels = labels[in_meta]
    sex = meta["sex"].reindex(labels.index)
    known = sex.isin(GROUP_NAMES)
    odd = sorted(set(sex[~known].dropna()))
    if odd:
        raise DatasetError(f"{METADATA}: unknown values in column 'sex': {odd}; expected female, male or empty")
    log.drop("sex missing", int((~known).sum()))
    labels, sex = labels[known.to_numpy()], sex[known]

    found = index_images(root / IMAGE_DIR)
    ids = labels.index.to_numpy(str)
    rows = pd.DataFrame(
        {
            "image_id": ids,
            "path": pd.Series(ids).map(found).to_numpy(object),
            "label_name": labels.to_numpy(str),
            "group": (sex.to_numpy() == "male").astype(int),
        }
    )
    unit_column = None
    if group_split_by_lesion and "lesion_id" in meta.columns:
        rows["lesion_id"] = meta["lesion_id"].reindex(ids).to_numpy(object)
        unit_column = "lesion_id"
    return assemble(
        name=name,
        root=root,
        rows=rows,
        class_names=class_names,
        group_names=GROUP_NAMES,
        drop_log=log,
        image_size=image_size,
        seed=seed,
        cache_dir=cache_dir,
        manifest=manifest,
        skip_unreadable=skip_unreadable,
        unit_column=unit_column,
        options={
            "image_size": image_size,
            "seed": seed,
            "cache_dir": str(cache_dir) if cache_dir is not None else None,
            "manifest": str(manifest) if manifest is not None else None,
            "skip_unreadable": skip_unreadable,
            "group_split_by_lesion": group_split_by_lesion,
        },
        fix_hint=f"Put the images as {IMAGE_DIR}/<image>.jpg under {root}.",
    )
