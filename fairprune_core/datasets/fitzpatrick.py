"""Fitzpatrick17k: the real ``fitzpatrick17k.csv`` plus ``<md5hash>.jpg`` images.

Group: Fitzpatrick skin type 1-3 -> ``light`` (id 0), 4-6 -> ``dark`` (id 1). Rows with skin
type -1 (unknown) or without a downloaded image are dropped and counted; classes left without
rows are dropped and reported. Images may be saved flat or in sub-folders (e.g. per label):
every ``<md5hash>.jpg`` below ``image_dir`` is found.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import pandas as pd

from ._base import DatasetError, DermDataset, DropLog, read_csv_checked
from ._build import assemble, index_images
from .rows import clean_labels, drop_duplicate_rows

__all__ = ["CSV_NAME", "GROUP_NAMES", "LABEL_COLUMNS", "load_fitzpatrick17k"]

CSV_NAME = "fitzpatrick17k.csv"
LABEL_COLUMNS = ("label", "nine_partition_label", "three_partition_label")
GROUP_NAMES = ["light", "dark"]
LabelColumn = Literal["label", "nine_partition_label", "three_partition_label"]


def _usable_rows(
    frame: pd.DataFrame, label_column: str, drop_wrongly_labelled: bool, log: DropLog, csv_path: Path
) -> tuple[pd.DataFrame, pd.Series]:
    """Rows with a known skin type and a label (and, if asked, not flagged wrongly labelled), and
    their skin types; each drop counted."""
    scale = pd.to_numeric(frame["fitzpatrick_scale"], errors="coerce")
    bad_scale = scale.isna() | ~scale.isin([-1, 1, 2, 3, 4, 5, 6])
    if bad_scale.any():
        example = frame.loc[bad_scale, "fitzpatrick_scale"].iloc[0]
        raise DatasetError(
            f"{csv_path.name}: {int(bad_scale.sum())} rows have a fitzpatrick_scale outside "
            f"1-6 or -1 (e.g. {example!r}); fix or remove those rows"
        )
    unknown = scale == -1
    log.drop("skin type unknown (fitzpatrick_scale -1)", int(unknown.sum()))
    frame, scale = frame[~unknown], scale[~unknown]

    no_label = frame[label_column].isna()
    log.drop(f"no {label_column}", int(no_label.sum()))
    frame, scale = frame[~no_label], scale[~no_label]

    if drop_wrongly_labelled and "qc" in frame.columns:
        wrong = frame["qc"].fillna("").str.startswith("3")
        log.drop("qc: wrongly labelled", int(wrong.sum()))
        frame, scale = frame[~wrong], scale[~wrong]

    return frame, scale


def load_fitzpatrick17k(
    root: str | Path,
    *,
    label_column: LabelColumn = "label",
    image_dir: str | Path | None = None,
    csv: str | Path | None = None,
    image_size: int = 128,
    seed: int = 0,
    cache_dir: str | Path | None = None,
    manifest: str | Path | None = None,
    skip_unreadable: bool = False,
    drop_wrongly_labelled: bool = False,
    name: str = "fitzpatrick17k",
) -> DermDataset:
    """Load Fitzpatrick17k from ``root`` (holding ``fitzpatrick17k.csv`` and the images).

    ``drop_wrongly_labelled`` drops rows whose ``qc`` column says "3 Wrongly labelled" (the
    dataset authors' own quality check; off by default, as in the paper).
    """
    root = Path(root)
    if label_column not in LABEL_COLUMNS:
        raise ValueError(f"unknown label column {label_column!r}; choose one of {', '.join(LABEL_COLUMNS)}")
    csv_path = Path(csv) if csv is not None else root / CSV_NAME
    frame = read_csv_checked(
        csv_path,
        ["md5hash", "fitzpatrick_scale", label_column],
        what="Fitzpatrick17k CSV",
        fix=f"Pass the folder that holds {CSV_NAME} (the file from the Fitzpatrick17k repository).",
    )
    log = DropLog(rows_read=len(frame))

    frame = frame.assign(**{label_column: clean_labels(frame[label_column], log, label_column)})
    frame = drop_duplicate_rows(frame, "md5hash", ["fitzpatrick_scale", label_column], log)

    frame, scale = _usable_rows(frame, label_column, drop_wrongly_labelled, log, csv_path)

    image_root = Path(image_dir) if image_dir is not None else root
    found = index_images(image_root)
    rows = pd.DataFrame(
        {
            "image_id": frame["md5hash"].to_numpy(str),
            "path": frame["md5hash"].map(found).to_numpy(object),
            "label_name": frame[label_column].to_numpy(str),
            "group": (scale.to_numpy() >= 4).astype(int),
        }
    )
    class_names = sorted(set(rows["label_name"]))
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
        options={
            "label_column": label_column,
            "image_dir": str(image_dir) if image_dir is not None else None,
            "csv": str(csv) if csv is not None else None,
            "image_size": image_size,
            "seed": seed,
            "cache_dir": str(cache_dir) if cache_dir is not None else None,
            "manifest": str(manifest) if manifest is not None else None,
            "skip_unreadable": skip_unreadable,
            "drop_wrongly_labelled": drop_wrongly_labelled,
        },
        fix_hint=(
            f"Download the images listed in {csv_path.name} and save them as <md5hash>.jpg "
            f"under {image_root} (flat or in sub-folders)."
        ),
    )
