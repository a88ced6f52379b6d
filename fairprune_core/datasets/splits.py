"""Seeded 60/20/20 splits, stratified by (label, group), keeping grouped images together."""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["assign_splits"]

# A repeating pattern of five slots gives 3 train : 1 val : 1 test. Walking units ordered by
# stratum through the pattern puts 60/20/20 of every large stratum in each split, and spreads
# small strata (fewer than five units) across splits instead of piling them into one.
_PATTERN = np.array(["train", "val", "train", "test", "train"])


def assign_splits(
    labels: np.ndarray,
    groups: np.ndarray,
    *,
    seed: int,
    unit: np.ndarray | None = None,
) -> np.ndarray:
    """Return a split name per row ("train", "val" or "test").

    ``unit`` (e.g. ISIC's ``lesion_id``) groups rows that must land in the same split; a unit's
    stratum is the most common (label, group) among its rows. Rows with a missing unit are
    their own unit. The result depends only on the rows and ``seed``.
    """
    n = len(labels)
    if unit is None:
        unit_keys = np.arange(n).astype(str)
    else:
        unit_keys = np.asarray(unit, dtype=object).copy()
        missing = pd.isna(unit_keys)
        unit_keys[missing] = np.array([f"__row{i}" for i in np.flatnonzero(missing)], dtype=object)
        unit_keys = unit_keys.astype(str)
    frame = pd.DataFrame({"unit": unit_keys, "label": labels, "group": groups})
    stratum = (
        frame.groupby(["unit", "label", "group"], sort=True)
        .size()
        .reset_index(name="n")
        .sort_values(["unit", "n", "label", "group"], ascending=[True, False, True, True])
        .drop_duplicates("unit")
        .set_index("unit")
    )
    rng = np.random.default_rng(seed)
    # random order of units within each stratum, strata in a fixed order
    stratum = stratum.assign(r=rng.random(len(stratum))).sort_values(["label", "group", "r"])
    offset = int(rng.integers(len(_PATTERN)))
    unit_split = pd.Series(_PATTERN[(np.arange(len(stratum)) + offset) % len(_PATTERN)], index=stratum.index)
    return unit_split.reindex(unit_keys).to_numpy(dtype=object).astype(str)
