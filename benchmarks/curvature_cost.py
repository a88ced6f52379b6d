"""Time and peak memory of one curvature mini-batch per estimator, relative to one training step.

    python benchmarks/curvature_cost.py                     # writes benchmarks/results/curvature_cost.json
    python benchmarks/curvature_cost.py --width 1 --image-size 128 --classes 8 --batch 16
    python benchmarks/curvature_cost.py --models vgg resnet18 efficientnet_b0 vit --classes 8 \
        --out benchmarks/results/curvature_cost_models.json   # the architectures of issue [2/6]

``vgg`` is the built-in VGG-11 (``fairprune_vgg11``, width ``--width``); any other name is a torchvision
architecture from the model registry, built without weights (``vit``: a small VisionTransformer for
the input size, 4 layers of width 64). Every engine that can compute a model's curvature is timed
side by side (``--engines``): the one :func:`~fairprune_core.curvature.make_engine` picks, BackPACK
through its converter, and per-sample gradients, so the choice can be checked against measurement.
Peak memory is the rise of the process's resident memory over its level before the call (sampled
every 2 ms, after handing glibc's freed memory back with ``malloc_trim``; on a GPU,
``torch.cuda.max_memory_allocated``).

Everything is measured side by side in one process (ratios, not absolute seconds, are what
carries over between machines). A training step is forward + backward + Adam update.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import platform
import threading
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from timing import median_seconds
from torch import nn

from fairprune_core.curvature.hessian import CurvatureConfig, CurvatureEngine, make_engine
from fairprune_core.curvature.per_sample import FuncCurvatureEngine
from fairprune_core.models import BUILTIN, ModelConfig, build_model

ESTIMATORS = ("exact", "mc", "fisher", "hutchinson")


def _model(name: str, width: float, image_size: int, classes: int) -> nn.Module:
    if name in ("vgg", BUILTIN):
        return build_model(ModelConfig(num_classes=classes, image_size=image_size, width=width), seed=0)
    import torchvision

    if name == "vit":
        torch.manual_seed(0)
        return torchvision.models.VisionTransformer(
            image_size=image_size,
            patch_size=8,
            num_layers=4,
            num_heads=4,
            hidden_dim=64,
            mlp_dim=128,
            num_classes=classes,
        )
    return build_model(ModelConfig(num_classes=classes, image_size=image_size, arch=name), seed=0)


def peak_bytes(fn: Callable[[], object]) -> int:
    """Peak memory one call of ``fn`` adds (resident memory on a CPU, allocated memory on a GPU)."""
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base
    _trim()  # memory freed by earlier calls goes back to the system, so the rise is this call's
    base, peak, done = _rss(), [0], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _rss())
            done.wait(0.002)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        fn()
    finally:
        done.set()
        thread.join()
    return max(0, max(peak[0], _rss()) - base)


def _trim() -> None:
    """glibc keeps freed memory for reuse (raising its mmap threshold after large frees): hand it back."""
    with contextlib.suppress(OSError, AttributeError):  # not glibc: the figure may then understate
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _rss() -> int:
    """Resident bytes of this process (Linux: /proc/self/statm)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _engines(model: nn.Module, estimator: str, wanted: list[str]) -> dict[str, Any]:
    """The engines to time: make_engine's pick ("chosen") and, where they apply, the alternatives."""
    config = CurvatureConfig(estimator=estimator)  # type: ignore[arg-type]
    engines: dict[str, Any] = {}
    if "chosen" in wanted:
        engines["chosen"] = make_engine(model, config)
    if estimator == "hutchinson":
        return engines
    if "converter" in wanted and not isinstance(model, nn.Sequential):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                engines["converter"] = CurvatureEngine(model, config, converter=True)
        except Exception:  # the converter fails on this architecture (torch.fx)
            pass
    if "per_sample" in wanted:
        engines["per_sample"] = FuncCurvatureEngine(model, config)
    return engines


def _engine_name(engine: Any) -> str:
    inner = getattr(engine, "engine", engine)
    converted = getattr(inner, "model", None).__class__.__name__ == "GraphModule"
    return "BackPACK (converter)" if converted else type(inner).__name__


def measure(
    name: str, width: float, image_size: int, classes: int, batch: int, repeats: int, engines: list[str]
) -> dict:
    model = _model(name, width, image_size, classes)
    x = torch.randn(batch, 3, image_size, image_size)
    y = torch.randint(0, classes, (batch,))
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    loss_fn = nn.CrossEntropyLoss()

    def train_step() -> None:
        model.train()
        opt.zero_grad()
        loss_fn(model(x), y).backward()
        opt.step()

    row: dict[str, Any] = {
        "model": name,
        "width": width if name == "vgg" else None,
        "image_size": image_size,
        "classes": classes,
        "batch": batch,
        "parameters": sum(p.numel() for p in model.parameters()),
        "train_step_s": median_seconds(train_step, repeats),
        "train_step_peak_mb": peak_bytes(train_step) / 2**20,
    }
    for est in ESTIMATORS:
        for kind, engine in _engines(model, est, engines).items():
            try:
                engine.batch_sums(x, y, seed=0)  # the chosen engine settles on its implementation here
            except Exception as exc:
                row[f"{est}_{kind}_error"] = str(exc).splitlines()[0][:200]
                continue
            prefix = f"{est}_{kind}"
            row[f"{prefix}_engine"] = _engine_name(engine)
            row[f"{prefix}_s"] = median_seconds(lambda e=engine: e.batch_sums(x, y, seed=0), repeats)
            row[f"{prefix}_vs_train_step"] = row[f"{prefix}_s"] / row["train_step_s"]
            row[f"{prefix}_peak_mb"] = peak_bytes(lambda e=engine: e.batch_sums(x, y, seed=0)) / 2**20
    return row


def _print(row: dict) -> None:
    print(
        f"{row['model']:>16} {row['classes']:4d} classes: train step {row['train_step_s'] * 1e3:.0f} ms, "
        f"{row['train_step_peak_mb']:.0f} MB",
        flush=True,
    )
    for key in sorted(k for k in row if k.endswith("_vs_train_step")):
        prefix = key.removesuffix("_vs_train_step")
        print(f"{'':>18}{prefix:<22} {row[key]:6.1f}x  {row[prefix + '_peak_mb']:7.0f} MB  ({row[prefix + '_engine']})")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["vgg"], help="vgg (built-in), registry names, or vit (default vgg)")
    p.add_argument("--width", type=float, default=0.25, help="VGG-11 width multiplier")
    p.add_argument("--image-size", type=int, default=64, help="input side in pixels")
    p.add_argument("--classes", type=int, nargs="+", default=[8, 114], help="class counts (ISIC: 8, Fitzpatrick: 114)")
    p.add_argument("--batch", type=int, default=32, help="mini-batch size")
    p.add_argument("--repeats", type=int, default=3, help="timed repetitions (median reported)")
    p.add_argument(
        "--engines",
        nargs="+",
        default=["chosen"],
        choices=["chosen", "converter", "per_sample"],
        help="engines to time (default: the one make_engine picks)",
    )
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "curvature_cost.json")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    for name in args.models:
        for k in args.classes:
            row = measure(name, args.width, args.image_size, k, args.batch, args.repeats, args.engines)
            rows.append(row)
            _print(row)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    result = {
        "benchmark": "curvature cost per mini-batch relative to one training step, and peak memory",
        "command": "python benchmarks/curvature_cost.py " + " ".join(__import__("sys").argv[1:]),
        "machine": {
            "cpu_threads": torch.get_num_threads(),
            "cuda": torch.cuda.is_available(),
            "device": torch.cuda.get_device_name() if torch.cuda.is_available() else platform.processor() or "cpu",
            "platform": platform.platform(),
            "torch": torch.__version__,
        },
        "rows": rows,
    }
    args.out.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
