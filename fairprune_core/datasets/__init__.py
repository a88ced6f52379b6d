"""Dermatology datasets behind one entry point: :func:`load_dataset`.

>>> ds = load_dataset("isic2019", "../shared/data/isic2019")   # doctest: +SKIP
>>> ds.summary()["rows_kept"], ds.class_names, ds.group_names  # doctest: +SKIP
>>> train = ds.split("train")  # images (N, H, W, 3) uint8, labels, groups  # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any

from ..config import DATASET_NAMES
from ._base import SPLITS, DatasetError, DermDataset, SplitArrays
from .fitzpatrick import load_fitzpatrick17k
from .isic import load_isic2019
from .synthetic import SyntheticConfig, generate_synthetic, synthetic_root

__all__ = [
    "DATASETS",
    "SPLITS",
    "DatasetError",
    "DermDataset",
    "SplitArrays",
    "SyntheticConfig",
    "generate_synthetic",
    "load_dataset",
    "load_synthetic",
]

DATASETS = DATASET_NAMES
_SYNTHETIC_FIELDS = {f.name for f in fields(SyntheticConfig)}


def load_synthetic(root: str | Path | None = None, **options: Any) -> DermDataset:
    """Generate (or reuse) the synthetic dataset, then read it with the Fitzpatrick17k loader.

    Generator options are :class:`SyntheticConfig` fields (``num_images``, ``num_classes``,
    ...; its ``seed`` is passed as ``data_seed``); the rest go to the loader. The default image
    size is 32 px so demos and tests are fast on a CPU.
    """
    gen = {k: options.pop(k) for k in list(options) if k in _SYNTHETIC_FIELDS - {"seed", "image_size"}}
    renamed = {"data_seed": "seed", "source_image_size": "image_size"}
    gen_options = dict(gen)
    for option, field in renamed.items():
        if option in options:
            gen_options[option] = options[option]
            gen[field] = options.pop(option)
    config = SyntheticConfig(**gen)
    root = Path(root) if root is not None else synthetic_root(config, options.get("cache_dir"))
    generate_synthetic(root, config)
    options.setdefault("image_size", 32)
    dataset = load_fitzpatrick17k(root, name="synthetic", **options)
    dataset.options.update(gen_options)  # so that load_dataset(**dataset.spec()) round-trips
    return dataset


def load_dataset(name: str, root: str | Path | None = None, **options: Any) -> DermDataset:
    """Load one of :data:`DATASETS` from ``root`` and return a :class:`DermDataset`.

    Common options: ``image_size`` (default 128; 32 for synthetic), ``seed`` (split seed),
    ``cache_dir`` (pixel cache; default ``$FAIRPRUNE_CACHE`` or ``~/.cache/fairprune``),
    ``manifest`` (reuse a saved split), ``skip_unreadable`` (drop undecodable images instead of
    failing). Dataset-specific: ``label_column`` for Fitzpatrick17k; generator options for
    synthetic (see :func:`load_synthetic`).
    """
    if name == "synthetic":
        return load_synthetic(root, **options)
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    if root is None:
        raise ValueError(f"dataset {name!r} needs a root folder (e.g. --data-root PATH)")
    loader = load_fitzpatrick17k if name == "fitzpatrick17k" else load_isic2019
    try:
        return loader(root, **options)
    except TypeError as exc:
        if "unexpected keyword" in str(exc):
            raise ValueError(f"{name}: {exc}") from exc
        raise
