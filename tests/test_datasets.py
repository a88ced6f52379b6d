"""Dataset loaders: real on-disk formats, what is kept and dropped, errors, splits, cache."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from fairprune_core.datasets import (
    DatasetError,
    SyntheticConfig,
    generate_synthetic,
    load_dataset,
)
from fairprune_core.datasets.splits import assign_splits

FITZ_COLUMNS = [
    "md5hash",
    "fitzpatrick_scale",
    "fitzpatrick_centaur",
    "label",
    "nine_partition_label",
    "three_partition_label",
    "qc",
    "url",
    "url_alphanum",
]


def _jpeg(path: Path, colour: tuple[int, int, int], size: int = 24) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (size, size + 6), colour).save(path)


def _fitz_folder(
    tmp_path: Path, rows: list[tuple[str, int, str]], *, nested: bool = False, skip_images: tuple[str, ...] = ()
) -> Path:
    root = tmp_path / "fitz"
    records = []
    for md5, scale, label in rows:
        records.append(
            dict(zip(FITZ_COLUMNS, [md5, scale, scale, label, f"nine-{label}", "benign", "", "u", "u"], strict=True))
        )
        if md5 not in skip_images:
            folder = root / "images" / label if nested else root
            _jpeg(folder / f"{md5}.jpg", (10 * scale, 40, 200))
    root.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(records).to_csv(root / "fitzpatrick17k.csv", index=False)
    return root


def _md5(i: int) -> str:
    return hashlib.md5(str(i).encode()).hexdigest()


def _balanced_rows(n: int = 40) -> list[tuple[str, int, str]]:
    return [(_md5(i), (i % 6) + 1, ["acne", "eczema", "psoriasis"][i % 3]) for i in range(n)]


# -- synthetic --------------------------------------------------------------------------------
def test_synthetic_generation_is_deterministic_and_in_fitzpatrick_format(tmp_path):
    cfg = SyntheticConfig(num_images=80, num_classes=3, seed=3)
    a = generate_synthetic(tmp_path / "a", cfg)
    b = generate_synthetic(tmp_path / "b", cfg)
    csv_a = pd.read_csv(a / "fitzpatrick17k.csv")
    assert list(csv_a.columns) == FITZ_COLUMNS
    assert csv_a.equals(pd.read_csv(b / "fitzpatrick17k.csv"))
    files_a = sorted(p.relative_to(a) for p in a.rglob("*.jpg"))
    assert files_a == sorted(p.relative_to(b) for p in b.rglob("*.jpg"))
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files_a)
    assert all(f.stem in set(csv_a["md5hash"]) for f in files_a)
    other = generate_synthetic(tmp_path / "c", SyntheticConfig(num_images=80, num_classes=3, seed=4))
    assert not pd.read_csv(other / "fitzpatrick17k.csv").equals(csv_a)


def test_synthetic_is_read_by_the_fitzpatrick_loader(synthetic):
    s = synthetic.summary()
    assert s["rows_read"] == 600
    assert s["rows_kept"] + s["rows_dropped"] == 600
    assert "skin type unknown (fitzpatrick_scale -1)" in s["dropped_by_reason"]
    assert "image file not found" in s["dropped_by_reason"]
    assert synthetic.group_names == ["light", "dark"]
    # the group imbalance is there: fewer dark than light images
    assert s["group_counts"]["dark"] < 0.6 * s["group_counts"]["light"]
    train = synthetic.split("train")
    assert train.images.dtype == np.uint8 and train.images.shape[1:] == (32, 32, 3)


def test_synthetic_ambiguity_draws_another_class_at_its_rate_and_only_on_darker_skin():
    from fairprune_core.datasets.synthetic import _looks_like

    cfg = SyntheticConfig(num_classes=4, dark_ambiguity=0.3)
    rng = np.random.default_rng(0)
    for fitzpatrick, rate in ((1, 0.0), (4, 0.18), (6, 0.3)):
        looks = np.array([_looks_like(2, fitzpatrick, cfg, rng) for _ in range(4000)])
        changed = looks != 2
        # binomial: 4 standard errors at n = 4000 is < 0.03
        assert abs(changed.mean() - rate) < 0.03, (fitzpatrick, changed.mean())
        assert set(looks[changed]) <= {0, 1, 3}
    none = SyntheticConfig(num_classes=4)
    assert all(_looks_like(2, 6, none, rng) == 2 for _ in range(100))


def test_synthetic_rejects_bad_config():
    with pytest.raises(ValueError, match="num_classes"):
        SyntheticConfig(num_classes=9)
    with pytest.raises(ValueError, match="dark_fraction"):
        SyntheticConfig(dark_fraction=1.5)


# -- Fitzpatrick17k ---------------------------------------------------------------------------
def test_fitzpatrick_groups_drops_and_label_folders(tmp_path, cache_dir):
    rows = _balanced_rows(40)
    rows[0] = (rows[0][0], -1, rows[0][2])  # unknown skin type
    rows.append((_md5(999), 2, "rare"))  # its image is missing -> class "rare" left empty
    root = _fitz_folder(tmp_path, rows, nested=True, skip_images=(_md5(999), _md5(5)))
    ds = load_dataset("fitzpatrick17k", root, image_size=32, cache_dir=cache_dir)
    s = ds.summary()
    assert s["rows_read"] == 41
    assert s["dropped_by_reason"] == {"skin type unknown (fitzpatrick_scale -1)": 1, "image file not found": 2}
    assert s["rows_kept"] == 38
    assert ds.class_names == ["acne", "eczema", "psoriasis"]
    assert s["classes_dropped"] == ["rare"]
    scale = {md5: sc for md5, sc, _ in rows}
    for _, r in ds.records.iterrows():
        assert r["group"] == int(scale[r["image_id"]] >= 4)
    assert "dropped 2 rows: image file not found" in ds.describe()


def test_fitzpatrick_label_columns(tmp_path, cache_dir):
    root = _fitz_folder(tmp_path, _balanced_rows(30))
    ds = load_dataset("fitzpatrick17k", root, label_column="nine_partition_label", image_size=32, cache_dir=cache_dir)
    assert ds.class_names == ["nine-acne", "nine-eczema", "nine-psoriasis"]
    with pytest.raises(ValueError, match="unknown label column 'diagnosis'"):
        load_dataset("fitzpatrick17k", root, label_column="diagnosis", cache_dir=cache_dir)


def test_real_fitzpatrick_csv_without_images_is_a_clear_error(fitzpatrick_csv, tmp_path, cache_dir):
    # the real CSV ships without images: loading it must say so, not crash or return nothing
    with pytest.raises(DatasetError, match=r"no images found.*md5hash>\.jpg"):
        load_dataset("fitzpatrick17k", fitzpatrick_csv.parent, cache_dir=cache_dir)


def test_real_fitzpatrick_csv_with_some_images(fitzpatrick_csv, tmp_path, cache_dir):
    """The real CSV with images for a few rows: those are kept, the rest counted as missing."""
    frame = pd.read_csv(fitzpatrick_csv)
    have = frame[frame["fitzpatrick_scale"] > 0].groupby("three_partition_label").head(12)
    for md5 in have["md5hash"]:
        _jpeg(tmp_path / "imgs" / f"{md5}.jpg", (120, 90, 80))
    ds = load_dataset(
        "fitzpatrick17k",
        fitzpatrick_csv.parent,
        image_dir=tmp_path / "imgs",
        label_column="three_partition_label",
        image_size=32,
        cache_dir=cache_dir,
    )
    s = ds.summary()
    assert s["rows_read"] == len(frame) == 16577
    assert s["dropped_by_reason"]["skin type unknown (fitzpatrick_scale -1)"] == 565
    assert s["rows_kept"] == len(have)
    assert s["dropped_by_reason"]["image file not found"] == 16577 - 565 - len(have)
    assert s["num_classes"] == 3


@pytest.mark.parametrize(
    ("mutate", "error"),
    [
        (lambda root: (root / "fitzpatrick17k.csv").unlink(), r"Fitzpatrick17k CSV not found: .*fitzpatrick17k\.csv"),
        (
            lambda root: (
                pd.read_csv(root / "fitzpatrick17k.csv")
                .drop(columns=["fitzpatrick_scale"])
                .to_csv(root / "fitzpatrick17k.csv", index=False)
            ),
            r"column 'fitzpatrick_scale' missing from fitzpatrick17k\.csv; found: md5hash, fitzpatrick_centaur",
        ),
        (lambda root: [p.unlink() for p in root.glob("*.jpg")], r"no images found"),
    ],
)
def test_fitzpatrick_bad_input_errors(tmp_path, cache_dir, mutate, error):
    root = _fitz_folder(tmp_path, _balanced_rows(12))
    mutate(root)
    with pytest.raises(DatasetError, match=error):
        load_dataset("fitzpatrick17k", root, image_size=32, cache_dir=cache_dir)


def test_corrupt_image_is_named_or_skipped(tmp_path, cache_dir):
    rows = _balanced_rows(30)
    root = _fitz_folder(tmp_path, rows)
    bad = root / f"{rows[4][0]}.jpg"
    bad.write_bytes(b"not a jpeg at all")
    with pytest.raises(DatasetError, match=rf"unreadable image .*{bad.name}.*--skip-unreadable"):
        load_dataset("fitzpatrick17k", root, image_size=32, cache_dir=cache_dir / "c1")
    ds = load_dataset("fitzpatrick17k", root, image_size=32, cache_dir=cache_dir / "c2", skip_unreadable=True)
    assert ds.summary()["dropped_by_reason"] == {"unreadable image file": 1}
    assert rows[4][0] not in set(ds.records["image_id"])
    # pixels stay aligned with their records after the drop
    tr = ds.split("train")
    for img, iid in zip(tr.images[:5], tr.image_ids[:5], strict=True):
        expect = np.asarray(Image.open(root / f"{iid}.jpg").convert("RGB").resize((32, 32)))
        assert np.abs(img.astype(int) - expect.astype(int)).max() <= 2


def test_single_group_or_class_is_an_error(tmp_path, cache_dir):
    light_only = [(_md5(i), 1 + i % 3, ["a", "b"][i % 2]) for i in range(20)]
    with pytest.raises(DatasetError, match=r"both groups .*light and dark.*found light 20"):
        load_dataset("fitzpatrick17k", _fitz_folder(tmp_path / "g", light_only), cache_dir=cache_dir, image_size=32)
    one_class = [(_md5(i), 1 + i % 6, "a") for i in range(20)]
    with pytest.raises(DatasetError, match="at least 2"):
        load_dataset("fitzpatrick17k", _fitz_folder(tmp_path / "c", one_class), cache_dir=cache_dir, image_size=32)


def test_unknown_dataset_and_missing_root():
    with pytest.raises(ValueError, match="unknown dataset 'imagenet'"):
        load_dataset("imagenet", "/tmp")
    with pytest.raises(ValueError, match="needs a root folder"):
        load_dataset("isic2019")


# -- ISIC 2019 -------------------------------------------------------------------------------
def _isic_folder(tmp_path: Path, n: int = 40, float_values: bool = False) -> Path:
    root = tmp_path / "isic"
    classes = ["MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC", "UNK"]
    truth, meta = [], []
    for i in range(n):
        image = f"ISIC_{i:07d}"
        k = i % 3
        row = {
            "image": image,
            **{c: (1.0 if j == k else 0.0) if float_values else int(j == k) for j, c in enumerate(classes)},
        }
        truth.append(row)
        sex = "" if i % 10 == 9 else ("female" if i % 2 else "male")
        meta.append(
            {
                "image": image,
                "age_approx": 50,
                "anatom_site_general": "back",
                "lesion_id": f"HAM_{i // 2:07d}",
                "sex": sex,
            }
        )
        _jpeg(root / "ISIC_2019_Training_Input" / f"{image}.jpg", (200, 10 * k, 90))
    pd.DataFrame(truth).to_csv(root / "ISIC_2019_Training_GroundTruth.csv", index=False)
    pd.DataFrame(meta).to_csv(root / "ISIC_2019_Training_Metadata.csv", index=False)
    return root


@pytest.mark.parametrize("float_values", [False, True])
def test_isic_formats_sex_and_unused_classes(tmp_path, cache_dir, float_values):
    root = _isic_folder(tmp_path, float_values=float_values)
    ds = load_dataset("isic2019", root, image_size=32, cache_dir=cache_dir)
    s = ds.summary()
    assert s["dropped_by_reason"] == {"sex missing": 4}
    assert ds.class_names == ["MEL", "NV", "BCC"]
    assert set(s["classes_dropped"]) == {"AK", "BKL", "DF", "VASC", "SCC", "UNK"}
    assert ds.group_names == ["female", "male"]
    # a lesion's images never land in two splits
    assert ds.records.groupby("lesion_id")["split"].nunique().max() == 1


def test_isic_errors(tmp_path, cache_dir):
    root = _isic_folder(tmp_path)
    meta = pd.read_csv(root / "ISIC_2019_Training_Metadata.csv").drop(columns=["sex"])
    meta.to_csv(root / "ISIC_2019_Training_Metadata.csv", index=False)
    expected = r"column 'sex' missing from ISIC_2019_Training_Metadata\.csv; found: image, age_approx"
    with pytest.raises(DatasetError, match=expected):
        load_dataset("isic2019", root, cache_dir=cache_dir)
    root2 = _isic_folder(tmp_path / "two")
    truth = pd.read_csv(root2 / "ISIC_2019_Training_GroundTruth.csv")
    truth.loc[3, "NV"] = 1  # two classes in one row
    truth.to_csv(root2 / "ISIC_2019_Training_GroundTruth.csv", index=False)
    with pytest.raises(DatasetError, match=r"not one-hot .*ISIC_0000003"):
        load_dataset("isic2019", root2, cache_dir=cache_dir)
    shutil.rmtree(root2)
    with pytest.raises(DatasetError, match="ISIC 2019 ground truth not found"):
        load_dataset("isic2019", root2, cache_dir=cache_dir)


def test_real_isic2019_counts(isic_root, cache_dir):
    ds = load_dataset("isic2019", isic_root, image_size=32, cache_dir=cache_dir)
    s = ds.summary()
    assert s["rows_read"] == 10015
    assert s["rows_kept"] == 9968
    assert s["num_classes"] == 8 and "UNK" in s["classes_dropped"]
    assert s["group_counts"] == {"female": 4560, "male": 5408}
    assert s["dropped_by_reason"] == {"sex missing": 47}
    assert ds.records.groupby("lesion_id")["split"].nunique().max() == 1
    sizes = ds.records["split"].value_counts(normalize=True)
    assert sizes["train"] == pytest.approx(0.6, abs=0.02)
    assert sizes["val"] == pytest.approx(0.2, abs=0.02)
    # every class is in every split (stratified)
    assert (ds.records.groupby(["split", "label"]).size().unstack(0) > 0).all().all()


# -- splits, manifest, cache ---------------------------------------------------------------
def test_splits_are_stratified_seeded_and_grouped():
    rng = np.random.default_rng(0)
    labels = rng.integers(4, size=3000)
    groups = (rng.random(3000) < 0.3).astype(int)
    a = assign_splits(labels, groups, seed=1)
    assert np.array_equal(a, assign_splits(labels, groups, seed=1))
    assert not np.array_equal(a, assign_splits(labels, groups, seed=2))
    for lab in range(4):
        for g in (0, 1):
            sel = (labels == lab) & (groups == g)
            frac = (a[sel] == "train").mean()
            assert frac == pytest.approx(0.6, abs=0.03)
            assert (a[sel] == "val").mean() == pytest.approx(0.2, abs=0.03)
    unit = np.arange(3000) // 3
    b = assign_splits(labels, groups, seed=1, unit=unit)
    assert pd.Series(b).groupby(unit).nunique().max() == 1


def test_manifest_roundtrip_and_reuse(synthetic, tmp_path):
    path = synthetic.save_manifest(tmp_path / "manifest.csv")
    again = load_dataset(**{**synthetic.spec(), "manifest": path, "seed": 99})
    assert again.manifest_fingerprint == synthetic.manifest_fingerprint
    other = load_dataset(**{**synthetic.spec(), "seed": 99})
    assert other.manifest_fingerprint != synthetic.manifest_fingerprint
    assert synthetic.manifest_file.is_file()


def test_cache_is_reused_and_keyed_by_source(tmp_path, cache_dir):
    root = _fitz_folder(tmp_path, _balanced_rows(20))
    cdir = tmp_path / "cache"
    a = load_dataset("fitzpatrick17k", root, image_size=32, cache_dir=cdir)
    mtime = a.cache_file.stat().st_mtime_ns
    b = load_dataset("fitzpatrick17k", root, image_size=32, cache_dir=cdir)
    assert b.cache_file == a.cache_file and b.cache_file.stat().st_mtime_ns == mtime
    c = load_dataset("fitzpatrick17k", root, image_size=64, cache_dir=cdir)
    assert c.cache_file != a.cache_file
    _jpeg(root / f"{_balanced_rows(20)[0][0]}.jpg", (1, 2, 3), size=30)  # a re-downloaded image
    d = load_dataset("fitzpatrick17k", root, image_size=32, cache_dir=cdir)
    assert d.cache_file != a.cache_file


def test_a_class_without_training_or_validation_images_is_an_error_naming_it(tmp_path, cache_dir):
    rows = _balanced_rows(40)
    root = _fitz_folder(tmp_path, rows)
    ds = load_dataset("fitzpatrick17k", root, image_size=32, cache_dir=cache_dir)
    manifest = ds.records[["image_id", "split"]].copy()
    # every acne image into test: acne keeps its rows but has nothing to train or validate on
    acne = ds.records["label"] == ds.class_names.index("acne")
    manifest.loc[acne, "split"] = "test"
    path = tmp_path / "manifest.csv"
    manifest.to_csv(path, index=False)
    with pytest.raises(
        DatasetError, match=r"1 class\(es\) without training or validation images: acne \(train 0, val 0"
    ):
        load_dataset("fitzpatrick17k", root, image_size=32, cache_dir=cache_dir, manifest=path)
