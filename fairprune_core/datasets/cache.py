"""Decode and resize images once; keep them as a memory-mapped uint8 array.

The cache file is ``<cache_dir>/<dataset>-<size>px-<fingerprint>.npy`` where the fingerprint
hashes every source image's name, byte size and modification time, so an added, removed or
re-downloaded image gives a new cache instead of stale pixels. Later runs and distributed
workers ``np.load(..., mmap_mode="r")`` it and never decode a JPEG again.
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from ._base import DatasetError

__all__ = ["build_image_cache", "default_cache_dir", "source_fingerprint"]


def default_cache_dir() -> Path:
    """``$FAIRPRUNE_CACHE``, else ``~/.cache/fairprune``."""
    env = os.environ.get("FAIRPRUNE_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "fairprune"


def source_fingerprint(paths: Sequence[str]) -> str:
    h = hashlib.sha256()
    for p in paths:
        st = os.stat(p)
        h.update(f"{os.path.basename(p)}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def decode_image(path: str, size: int) -> np.ndarray:
    """One image as ``(size, size, 3)`` uint8 RGB (squashed to a square, as in the paper)."""
    try:
        with Image.open(path) as im:
            im = im.convert("RGB").resize((size, size), Image.Resampling.BILINEAR, reducing_gap=3)
            return np.asarray(im, dtype=np.uint8)
    except Image.DecompressionBombError as exc:  # a file that would decode to billions of pixels
        raise DatasetError(
            f"image {path} is too large to decode safely ({exc}); shrink it, delete it (a deleted image is "
            f"dropped and counted), or pass --skip-unreadable (skip_unreadable=True in Python)"
        ) from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DatasetError(
            f"unreadable image {path} ({type(exc).__name__}: {exc}); re-download or delete it "
            f"(a deleted image is dropped and counted), or pass --skip-unreadable (skip_unreadable=True in Python)"
        ) from exc


def _decode_chunk(args: tuple[list[str], int, bool]) -> tuple[np.ndarray, list[int]]:
    paths, size, skip_unreadable = args
    out = np.zeros((len(paths), size, size, 3), dtype=np.uint8)
    bad: list[int] = []
    for i, p in enumerate(paths):
        try:
            out[i] = decode_image(p, size)
        except DatasetError:
            if not skip_unreadable:
                raise
            bad.append(i)
    return out, bad


_WRITABLE = "pass a writable --cache-dir (or set $FAIRPRUNE_CACHE)"


def build_image_cache(
    paths: Sequence[str],
    *,
    dataset: str,
    size: int,
    cache_dir: Path,
    skip_unreadable: bool = False,
    workers: int | None = None,
    progress: bool = True,
) -> tuple[Path, list[int]]:
    """Return the cache file for ``paths`` (building it if needed) and indices of unreadable ones.

    With ``skip_unreadable`` an undecodable image is reported (its index returned) instead of
    raising; the caller drops it. Its slot in the array stays zero.
    """
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DatasetError(f"cannot create the image cache folder {cache_dir} ({exc.strerror}); {_WRITABLE}") from None
    key = source_fingerprint(paths)[:20]
    file = cache_dir / f"{dataset}-{size}px-{key}.npy"
    bad_file = file.with_suffix(".unreadable.txt")
    if file.is_file():
        bad = [int(x) for x in bad_file.read_text().split()] if bad_file.is_file() else []
        return file, bad

    n = len(paths)
    workers = workers or min(os.cpu_count() or 1, 8)
    chunk = 256
    chunks = [list(paths[i : i + chunk]) for i in range(0, n, chunk)]
    tmp = file.with_suffix(f".{os.getpid()}.tmp.npy")
    try:
        arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(n, size, size, 3))
    except OSError as exc:
        raise DatasetError(f"cannot write the image cache in {cache_dir} ({exc.strerror}); {_WRITABLE}") from None
    bad: list[int] = []
    start = time.monotonic()
    done = 0

    def _report() -> None:
        if progress and n >= 1000:
            rate = done / max(time.monotonic() - start, 1e-9)
            print(
                f"\rcaching {dataset} at {size}px: {done}/{n} images ({rate:.0f}/s)",
                end="" if done < n else "\n",
                file=sys.stderr,
                flush=True,
            )

    try:
        jobs = [(c, size, skip_unreadable) for c in chunks]
        if workers > 1 and n > 2 * chunk:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                results = pool.map(_decode_chunk, jobs)
                for k, (block, bad_local) in enumerate(results):
                    arr[k * chunk : k * chunk + len(block)] = block
                    bad.extend(k * chunk + b for b in bad_local)
                    done += len(block)
                    _report()
        else:
            for k, job in enumerate(jobs):
                block, bad_local = _decode_chunk(job)
                arr[k * chunk : k * chunk + len(block)] = block
                bad.extend(k * chunk + b for b in bad_local)
                done += len(block)
                _report()
        arr.flush()
        del arr
        bad_file.write_text(" ".join(map(str, bad)))
        os.replace(tmp, file)  # atomic: a concurrent reader never sees a half-written cache
    except OSError as exc:  # the cache's disk filled while it was written
        raise DatasetError(f"cannot write the image cache in {cache_dir} ({exc.strerror}); {_WRITABLE}") from None
    finally:
        if tmp.exists():
            tmp.unlink()
    return file, bad
