"""Time of one curvature mini-batch per estimator, relative to one training step (same batch).

    python benchmarks/curvature_cost.py                     # writes benchmarks/results/curvature_cost.json
    python benchmarks/curvature_cost.py --width 1 --image-size 128 --classes 8 --batch 16
    python benchmarks/curvature_cost.py --models vgg resnet18 efficientnet_b0 vit --classes 8 \
        --out benchmarks/results/curvature_cost_models.json   # other architectures (per-sample gradients)

``vgg`` is the built-in VGG-11 (BackPACK); any other name is a torchvision architecture built
without weights (``vit``: a small VisionTransformer for the input size, 4 layers of width 64), whose
curvature goes through per-sample gradients (:mod:`fairprune_core.curvature_func`). Where the
network has smooth layers, ``exact`` (the Hessian's diagonal) is refused and ``ggn`` (the same
computation) is timed in its place.

Everything is measured side by side in one process (ratios, not absolute seconds, are what
carries over between machines). A training step is forward + backward + Adam update.
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import torch
from timing import median_seconds
from torch import nn

from fairprune_core.hessian import CurvatureConfig, UnsupportedLayerError, make_engine
from fairprune_core.model import ModelConfig, build_model


def _model(name: str, width: float, image_size: int, classes: int) -> nn.Module:
    if name == "vgg":
        return build_model(ModelConfig(num_classes=classes, image_size=image_size, width=width), seed=0)
    import torchvision

    torch.manual_seed(0)
    if name == "vit":
        return torchvision.models.VisionTransformer(
            image_size=image_size,
            patch_size=8,
            num_layers=4,
            num_heads=4,
            hidden_dim=64,
            mlp_dim=128,
            num_classes=classes,
        )
    return torchvision.models.get_model(name, num_classes=classes)


def measure(name: str, width: float, image_size: int, classes: int, batch: int, repeats: int) -> dict:
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

    row = {
        "model": name,
        "width": width if name == "vgg" else None,
        "image_size": image_size,
        "classes": classes,
        "batch": batch,
        "parameters": sum(p.numel() for p in model.parameters()),
        "train_step_s": median_seconds(train_step, repeats),
    }
    for est in ("exact", "mc", "fisher"):
        try:
            engine = make_engine(model, CurvatureConfig(estimator=est))  # type: ignore[arg-type]
        except UnsupportedLayerError:  # smooth layers: the GGN diagonal is timed as "exact"
            engine = make_engine(model, CurvatureConfig(estimator="ggn"))
            row["exact_is_ggn"] = True
        row[f"{est}_s"] = median_seconds(lambda e=engine: e.batch_sums(x, y, seed=0), repeats)
        # which engine computed it (BackPACK, BackPACK through its converter, or per-sample gradients)
        inner = getattr(engine, "engine", engine)
        converted = getattr(inner, "model", None).__class__.__name__ == "GraphModule"
        row[f"{est}_engine"] = "BackPACK (converter)" if converted else type(inner).__name__
        row[f"{est}_vs_train_step"] = row[f"{est}_s"] / row["train_step_s"]
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--models", nargs="+", default=["vgg"], help="vgg (built-in) and/or torchvision names, or vit (default vgg)"
    )
    p.add_argument("--width", type=float, default=0.25, help="VGG-11 width multiplier")
    p.add_argument("--image-size", type=int, default=64, help="input side in pixels")
    p.add_argument("--classes", type=int, nargs="+", default=[8, 114], help="class counts (ISIC: 8, Fitzpatrick: 114)")
    p.add_argument("--batch", type=int, default=32, help="mini-batch size")
    p.add_argument("--repeats", type=int, default=3, help="timed repetitions (median reported)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "curvature_cost.json")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    for name in args.models:
        for k in args.classes:
            row = measure(name, args.width, args.image_size, k, args.batch, args.repeats)
            rows.append(row)
            exact = "ggn" if row.get("exact_is_ggn") else "exact"
            print(
                f"{name:>16} {k:4d} classes: train step {row['train_step_s'] * 1e3:.0f} ms; per curvature mini-batch: "
                + ", ".join(
                    f"{exact if e == 'exact' else e} {row[f'{e}_vs_train_step']:.1f}x ({row[f'{e}_engine']})"
                    for e in ("exact", "mc", "fisher")
                ),
                flush=True,
            )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    result = {
        "benchmark": "curvature cost per mini-batch relative to one training step",
        "machine": {
            "cpu_threads": torch.get_num_threads(),
            "cuda": torch.cuda.is_available(),
            "platform": platform.platform(),
            "torch": torch.__version__,
        },
        "rows": rows,
    }
    args.out.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
