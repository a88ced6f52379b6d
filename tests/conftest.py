from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def real_data_root() -> Path:
    """``$FAIRPRUNE_DATA``, else ``../shared/data`` beside the repository."""
    return Path(os.environ.get("FAIRPRUNE_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fairprune-cache")


@pytest.fixture(scope="session")
def isic_root() -> Path:
    root = real_data_root() / "isic2019"
    if not (root / "ISIC_2019_Training_GroundTruth.csv").is_file():
        pytest.skip(f"real ISIC 2019 data not found at {root} (set FAIRPRUNE_DATA)")
    return root


@pytest.fixture(scope="session")
def fitzpatrick_csv() -> Path:
    path = real_data_root() / "fitzpatrick17k" / "fitzpatrick17k.csv"
    if not path.is_file():
        pytest.skip(f"real Fitzpatrick17k CSV not found at {path} (set FAIRPRUNE_DATA)")
    return path


@pytest.fixture(scope="session")
def synthetic(cache_dir):
    """The small synthetic dataset most tests share (generated once per session)."""
    from fairprune_core.datasets import load_dataset

    return load_dataset("synthetic", cache_dir=cache_dir, num_images=600, image_size=32)
