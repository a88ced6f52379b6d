"""A seeded synthetic dermatology dataset, WRITTEN in the Fitzpatrick17k on-disk format.

The generator writes ``fitzpatrick17k.csv`` (the real file's columns) and ``<md5hash>.jpg``
images in per-label folders; the ``fitzpatrick17k`` loader then reads it like real data, so the
demo exercises the real code path. What it draws:

* a skin-tone background drawn from a continuum over Fitzpatrick types 1-6 (types 3 and 4 look
  alike, as in real photographs; light = 1-3, dark = 4-6), with lighting and noise;
* a lesion whose shape, colour and texture depend on the class;
* a group imbalance (``dark_fraction`` of images are dark) and a difficulty gap: the darker the
  skin, the less lesion contrast (down to ``dark_contrast``), the more noise and shape jitter,
  so a vanilla model is measurably less accurate on the dark group (here the unprivileged one);
* a group-specific shortcut: on ``shortcut_fraction`` of the light-skin images a small marker in
  a corner has a class-specific colour (like the ink marks, rulers and stickers that correlate
  with the diagnosis in real clinical photographs). The model leans on it for the light group
  only, which is the kind of privileged-group-only parameter FairPrune prunes;
* optional ambiguity on dark skin (``dark_ambiguity``): on that share of the darkest images
  (scaled down linearly to none at type 1) the lesion drawn looks like another class while the
  label stays true, so no model can be right on them: a group gap that does not shrink as the
  dataset grows (the positive control, ``--synthetic-bias strong``);
* optional annotation noise (``label_noise``), as real labels have;
* like real downloads, a few rows have skin type -1 and a few images are missing.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from ._base import DatasetError
from .cache import default_cache_dir
from .fitzpatrick import CSV_NAME

__all__ = ["BIAS_PRESETS", "SyntheticConfig", "generate_synthetic", "synthetic_root"]

# ``--synthetic-bias``: "default" is the demo's planted bias (shortcut + difficulty gap); "strong"
# the positive control: the demo's bias plus lesions on dark skin that look like another class
# (a gap that lasts however many images are drawn); "none" the negative control: no shortcut, the
# same contrast, noise and shape jitter on every skin tone (the groups still differ in skin
# colour, which carries no label information).
BIAS_PRESETS: dict[str, dict[str, float]] = {
    "default": {},
    "strong": {"dark_ambiguity": 0.3},
    "none": {"shortcut_fraction": 0.0, "dark_contrast": 0.7, "dark_noise": 8.0, "jitter_gap": 0.0},
}

# name, nine-partition label, three-partition label, shape, RGB colour, texture
_CLASSES: tuple[tuple[str, str, str, str, tuple[int, int, int], str], ...] = (
    ("melanoma", "malignant melanoma", "malignant", "blob", (40, 25, 20), "speckle"),
    ("nevus", "benign dermal", "benign", "disc", (120, 70, 40), "smooth"),
    ("psoriasis", "inflammatory", "non-neoplastic", "plaque", (200, 70, 80), "stripes"),
    ("vascular lesion", "benign vascular", "benign", "ring", (130, 20, 90), "smooth"),
    ("basal cell carcinoma", "malignant epidermal", "malignant", "square", (230, 150, 170), "dots"),
    ("seborrheic keratosis", "benign epidermal", "benign", "cross", (150, 120, 60), "hatch"),
)
_LIGHT_SKIN = np.array([232.0, 196.0, 170.0])
_DARK_SKIN = np.array([112.0, 74.0, 52.0])


@dataclass(frozen=True)
class SyntheticConfig:
    """What the generator draws; every field changes the data (and the folder's stamp)."""

    num_images: int = 1500  # rows in the CSV (before drops)
    num_classes: int = 4  # 2..6
    image_size: int = 64  # side of the written JPEGs
    dark_fraction: float = 0.35  # group imbalance: share of dark-skin rows
    dark_contrast: float = 0.4  # lesion opacity on dark skin (light skin: light_contrast)
    light_contrast: float = 0.7
    dark_noise: float = 22.0  # pixel noise std on dark skin
    light_noise: float = 8.0
    jitter_gap: float = 0.08  # extra lesion-shape jitter on the darkest skin (0: none)
    dark_ambiguity: float = 0.0  # share of type-6 images whose lesion looks like another class
    label_noise: float = 0.05  # share of rows whose CSV label is another class (annotation noise)
    shortcut_fraction: float = 0.6  # share of light-skin images with a class-coloured corner marker
    unknown_skin_fraction: float = 0.02  # rows with fitzpatrick_scale -1
    missing_image_fraction: float = 0.01  # rows whose image is "not downloaded"
    seed: int = 0

    def __post_init__(self) -> None:
        if not 2 <= self.num_classes <= len(_CLASSES):
            raise ValueError(f"num_classes must be in 2..{len(_CLASSES)}, got {self.num_classes}")
        if self.num_images < 10 * self.num_classes:
            raise ValueError(
                f"num_images={self.num_images} is too few for {self.num_classes} classes; "
                f"use at least {10 * self.num_classes}"
            )
        if not 0 < self.dark_fraction < 1:
            raise ValueError(f"dark_fraction must be in (0, 1), got {self.dark_fraction}")
        if self.image_size < 16:
            raise ValueError(f"image_size must be >= 16, got {self.image_size}")
        if not 0 <= self.shortcut_fraction <= 1:
            raise ValueError(f"shortcut_fraction must be in [0, 1], got {self.shortcut_fraction}")
        for f in ("unknown_skin_fraction", "missing_image_fraction", "label_noise", "dark_ambiguity"):
            if not 0 <= getattr(self, f) < 0.5:
                raise ValueError(f"{f} must be in [0, 0.5), got {getattr(self, f)}")

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:12]


def synthetic_root(config: SyntheticConfig, cache_dir: str | Path | None = None) -> Path:
    base = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return base / "synthetic" / f"seed{config.seed}-{config.fingerprint()}"


def generate_synthetic(root: str | Path, config: SyntheticConfig = SyntheticConfig()) -> Path:
    """Write the dataset under ``root`` (reused when ``root`` already holds this config).

    A folder that holds another configuration is replaced only when everything in it is what the
    generator writes (its stamp, its CSV, ``images/<class>/<md5>.jpg``); any other file there is
    the user's, and the folder is refused, naming it. The data is written into a new hidden sibling
    and renamed into place; the sibling is removed on any failure."""
    root = Path(root)
    stamp = root / "synthetic.json"
    if stamp.is_file() and _read_stamp(stamp) == asdict(config):
        return root
    if root.exists():
        _check_ours(root)
    # write into a new sibling folder and rename it into place: an interrupted run leaves no half dataset
    final_root = root
    try:
        final_root.parent.mkdir(parents=True, exist_ok=True)
        root = Path(tempfile.mkdtemp(prefix=f".{final_root.name}.tmp-", dir=final_root.parent))
    except OSError as exc:
        raise DatasetError(
            f"cannot write the synthetic dataset next to {final_root}: {exc.strerror or exc}; "
            f"pass a writable --data-root or --cache-dir"
        ) from exc
    try:
        _write(root, config)
        if final_root.exists():
            _check_ours(final_root)  # again: nothing of the user's arrived while it was written
            shutil.rmtree(final_root)
        os.replace(root, final_root)
    except OSError as exc:
        raise DatasetError(
            f"cannot write the synthetic dataset to {final_root}: {exc.strerror or exc}; "
            f"pass a writable --data-root or --cache-dir"
        ) from exc
    finally:
        if root.exists():
            shutil.rmtree(root, ignore_errors=True)  # our own temporary folder, made above
    return final_root


_OURS = re.compile(r"[0-9a-f]{32}\.jpg")


def _read_stamp(stamp: Path) -> Any:
    try:
        return json.loads(stamp.read_text())
    except (OSError, ValueError):
        return None


def _check_ours(root: Path) -> None:
    """Raise :class:`DatasetError` unless every entry below ``root`` is one the generator writes."""
    if not root.is_dir():
        raise DatasetError(f"--data-root {root} is a file, not a folder; pass a new or empty folder")
    entries = list(root.iterdir())
    if not entries:
        return
    if not (root / "synthetic.json").is_file():
        raise DatasetError(
            f"--data-root {root} is not empty and is not a synthetic dataset folder (no synthetic.json); "
            f"pass a new or empty folder"
        )
    folders = {c[0].replace(" ", "_") for c in _CLASSES}
    for entry in entries:
        if entry.name in ("synthetic.json", CSV_NAME) and entry.is_file() and not entry.is_symlink():
            continue
        if entry.name == "images" and entry.is_dir() and not entry.is_symlink():
            for sub in entry.iterdir():
                if sub.name not in folders or not sub.is_dir() or sub.is_symlink():
                    _not_ours(root, sub)
                for f in sub.iterdir():
                    if not (_OURS.fullmatch(f.name) and f.is_file() and not f.is_symlink()):
                        _not_ours(root, f)
            continue
        _not_ours(root, entry)


def _not_ours(root: Path, path: Path) -> None:
    raise DatasetError(
        f"--data-root {root} holds a synthetic dataset of another configuration, and {path} was not written by "
        f"FairPrune: nothing was changed. Pass a new or empty --data-root, or move that file away"
    )


def _write(root: Path, config: SyntheticConfig) -> None:
    (root / "images").mkdir(parents=True)
    rng = np.random.default_rng(config.seed)
    n, size = config.num_images, config.image_size
    dark = rng.random(n) < config.dark_fraction
    labels = rng.integers(config.num_classes, size=n)
    unknown = rng.random(n) < config.unknown_skin_fraction
    missing = rng.random(n) < config.missing_image_fraction
    noisy = rng.random(n) < config.label_noise
    written = np.where(noisy, (labels + rng.integers(1, config.num_classes, size=n)) % config.num_classes, labels)
    # a stream of its own, so that data without ambiguity stays identical to what it always was
    ambiguity_rng = np.random.default_rng([config.seed, 1])
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size - 0.5  # (S, S) in [-0.5, 0.5)

    rows = []
    for i in range(n):
        md5 = hashlib.md5(f"fairprune-synthetic:{config.seed}:{i}".encode()).hexdigest()
        scale = int(rng.integers(4, 7)) if dark[i] else int(rng.integers(1, 4))
        look = _looks_like(labels[i], scale, config, ambiguity_rng)
        img = _draw(rng, _CLASSES[look], scale, config, xx, yy)
        if not dark[i] and rng.random() < config.shortcut_fraction:
            _mark(img, labels[i], rng)
        shown = _CLASSES[written[i]]  # the label a (noisy) annotator wrote down
        if not missing[i]:
            folder = root / "images" / shown[0].replace(" ", "_")
            folder.mkdir(exist_ok=True)
            Image.fromarray(img).save(folder / f"{md5}.jpg", quality=92)
        rows.append(
            {
                "md5hash": md5,
                "fitzpatrick_scale": -1 if unknown[i] else scale,
                "fitzpatrick_centaur": -1 if unknown[i] else scale,
                "label": shown[0],
                "nine_partition_label": shown[1],
                "three_partition_label": shown[2],
                "qc": "",
                "url": f"synthetic://{md5}",
                "url_alphanum": f"synthetic{md5}.jpg",
            }
        )
    pd.DataFrame(rows).to_csv(root / CSV_NAME, index=False)
    (root / "synthetic.json").write_text(json.dumps(asdict(config), indent=1))


def _looks_like(label: int, fitzpatrick: int, cfg: SyntheticConfig, rng: np.random.Generator) -> int:
    """The class whose lesion is drawn: the true one, or (ambiguous dark skin) another one."""
    if cfg.dark_ambiguity == 0 or rng.random() >= cfg.dark_ambiguity * (fitzpatrick - 1) / 5:
        return int(label)
    return int((label + rng.integers(1, cfg.num_classes)) % cfg.num_classes)


_MARKER_COLOURS = ((0, 160, 255), (255, 220, 0), (0, 200, 80), (255, 255, 255), (255, 0, 200), (20, 20, 255))


def _mark(img: np.ndarray, label: int, rng: np.random.Generator) -> None:
    """A class-coloured square marker in a random corner (in place)."""
    size = img.shape[0]
    m = max(3, size // 10)
    y = 1 if rng.random() < 0.5 else size - m - 1
    x = 1 if rng.random() < 0.5 else size - m - 1
    img[y : y + m, x : x + m] = _MARKER_COLOURS[label]


def _draw(
    rng: np.random.Generator,
    cls: tuple[str, str, str, str, tuple[int, int, int], str],
    fitzpatrick: int,
    cfg: SyntheticConfig,
    xx: np.ndarray,
    yy: np.ndarray,
) -> np.ndarray:
    _, _, _, shape, colour, texture = cls
    # darkness in [0, 1] along the Fitzpatrick continuum; neighbouring types overlap
    t = float(np.clip((fitzpatrick - 1) / 5 + rng.normal(0, 0.08), 0, 1))
    skin = _LIGHT_SKIN * (1 - t) + _DARK_SKIN * t + rng.normal(0, 10, 3)
    light = 1.0 + 0.15 * (rng.random() - 0.5) * (xx + yy)  # a soft lighting gradient
    bg = skin[None, None, :] * light[..., None]

    jitter = 0.04 + cfg.jitter_gap * t
    cx, cy = rng.normal(0, jitter, 2)
    r = 0.22 * np.exp(rng.normal(0, 0.12 + jitter))
    ang = rng.uniform(0, np.pi)
    x, y = xx - cx, yy - cy
    u, v = x * np.cos(ang) + y * np.sin(ang), -x * np.sin(ang) + y * np.cos(ang)
    d = np.hypot(x, y)
    if shape == "disc":
        mask = d < r
    elif shape == "ring":
        mask = (d < r) & (d > 0.55 * r)
    elif shape == "plaque":
        mask = (u / (1.6 * r)) ** 2 + (v / (0.6 * r)) ** 2 < 1
    elif shape == "square":
        mask = (np.abs(u) < 0.8 * r) & (np.abs(v) < 0.8 * r)
    elif shape == "cross":
        mask = ((np.abs(u) < 0.3 * r) | (np.abs(v) < 0.3 * r)) & (np.maximum(np.abs(u), np.abs(v)) < r)
    else:  # "blob": an irregular outline
        theta = np.arctan2(y, x)
        k = rng.integers(3, 7)
        edge = r * (1 + 0.3 * np.sin(k * theta + rng.uniform(0, 6.3)) + 0.15 * np.sin(2 * theta))
        mask = d < edge

    if texture == "speckle":
        tex = 1 + 0.6 * (rng.random(xx.shape) - 0.5)
    elif texture == "stripes":
        tex = 1 + 0.35 * np.sign(np.sin(u * 60))
    elif texture == "dots":
        tex = 1 + 0.4 * ((np.sin(xx * 70) > 0.6) & (np.sin(yy * 70) > 0.6))
    elif texture == "hatch":
        tex = 1 + 0.3 * np.sign(np.sin((xx + yy) * 55) * np.sin((xx - yy) * 55))
    else:
        tex = np.ones_like(xx)
    lesion = np.clip(np.asarray(colour, float)[None, None, :] * tex[..., None], 0, 255)
    contrast = cfg.light_contrast + (cfg.dark_contrast - cfg.light_contrast) * t
    alpha = contrast * mask[..., None]
    img = bg * (1 - alpha) + lesion * alpha
    img += rng.normal(0, cfg.light_noise + (cfg.dark_noise - cfg.light_noise) * t, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)
