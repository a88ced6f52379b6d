"""The paper's ISIC 2019 experiment at full scale on one GPU, within a fixed time budget.

    bash benchmarks/gpu_paper_scale.sh             # on a GPU machine: ../shared/data/isic2019, <= 8 min
    bash benchmarks/gpu_paper_scale.sh --smoke     # the same pipeline, tiny, on a CPU (< 3 min; CI)

Stages, each with its own share of the budget and written to the result file as it finishes
(so a stage cut short by the budget still leaves the others):

1. ``pretrain``: the full VGG-11 at 128 px with the paper's recipe (Adam 1e-4, batch 256, the
   paper's augmentation) for as many epochs as fit its budget: epochs, images/s, val avg F1.
2. ``curvature``: throughput of one curvature mini-batch (64) per estimator (exact, mc) on the
   pre-trained model: samples/s and the cost in training steps of the same batch.
3. ``obd`` and ``fairprune``: one run each at the paper's ISIC setting (200 x 64 samples per
   group per step, exact curvature, 10% steps to 50%, FairPrune beta 0.2), with per-step
   seconds, validation F1 and Eopp1; a run that reaches the budget stops and says so.

Writes ``benchmarks/results/gpu_paper_scale.json`` (``--out`` to change) with the device's name.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch
from timing import median_seconds

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "gpu_paper_scale.json"
PAPER = dict(image_size=128, width=1.0, batch_size=256, lr=1e-4, epochs=200, augment="paper", curv_batches=200)
SMOKE = dict(image_size=32, width=0.0625, batch_size=64, lr=1e-3, epochs=200, augment="paper", curv_batches=2)
# shares of the budget: pre-training, curvature timing, then OBD and FairPrune
SHARES = {"pretrain": 0.35, "curvature": 0.05, "obd": 0.25, "fairprune": 0.25}


class _Budget(Exception):
    """The stage used its share of the time budget."""


def _pretrain(dataset: Any, s: dict[str, Any], device: torch.device, out: Path, budget_s: float) -> dict[str, Any]:
    from fairprune_core.models import ModelConfig
    from fairprune_core.training import TrainConfig, pretrain

    model_config = ModelConfig(num_classes=dataset.num_classes, image_size=s["image_size"], width=s["width"])
    train_config = TrainConfig(
        epochs=s["epochs"], batch_size=s["batch_size"], lr=s["lr"], augment=s["augment"], device=str(device)
    )
    t0, rows = time.perf_counter(), []

    def on_epoch(epoch: int, row: dict[str, float]) -> None:
        rows.append(row)
        spent = time.perf_counter() - t0
        if spent + spent / epoch > budget_s:  # the next epoch would not fit
            raise _Budget

    with contextlib.suppress(_Budget):
        pretrain(dataset, model_config, train_config, out / "pretrain", resume=False, on_epoch=on_epoch)
    seconds = sum(r["seconds"] for r in rows)
    n_train = len(dataset.split("train").labels)
    return {
        "model": model_config.to_dict(),
        "train": train_config.to_dict(),
        "epochs": len(rows),
        "seconds": seconds,
        "images_per_s": n_train * len(rows) / seconds if seconds else 0.0,
        "best_val_avg_f1": max((r["val_avg_f1"] for r in rows), default=float("nan")),
        "per_epoch": rows,
        "checkpoint": str(out / "pretrain" / "best.pt"),
    }


def _curvature(model: torch.nn.Module, dataset: Any, device: torch.device, repeats: int) -> dict[str, Any]:
    from fairprune_core.curvature.hessian import CurvatureConfig, CurvatureEngine
    from fairprune_core.models import to_model_input

    train = dataset.split("train")
    x = to_model_input(train.images[:64]).to(device)
    y = torch.from_numpy(train.labels[:64].astype("int64")).to(device)
    trainable = copy.deepcopy(model)
    opt = torch.optim.Adam(trainable.parameters(), lr=1e-4)

    def train_step() -> None:
        trainable.train()
        opt.zero_grad()
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
            torch.nn.functional.cross_entropy(trainable(x), y).backward()
        opt.step()

    out: dict[str, Any] = {"batch": len(y), "train_step_s": median_seconds(train_step, repeats)}
    for est in ("exact", "mc"):
        engine = CurvatureEngine(model, CurvatureConfig(estimator=est), device=device)  # type: ignore[arg-type]
        seconds = median_seconds(lambda e=engine: e.batch_sums(x, y, seed=0), repeats)
        out[est] = {
            "seconds": seconds,
            "samples_per_s": len(y) / seconds,
            "x_train_step": seconds / out["train_step_s"],
            "sub_batch": engine.sub_batch(tuple(x.shape[1:])),
        }
    return out


def _prune(method: str, problem: Any, device: torch.device, budget_s: float) -> dict[str, Any]:
    from fairprune_core.curvature.backends import LocalCurvature
    from fairprune_core.evaluation import evaluate
    from fairprune_core.pruning import fairprune, obd

    model = problem.build_model().to(device)
    t0 = time.perf_counter()

    def deadline(row: dict[str, float]) -> str | None:
        spent = time.perf_counter() - t0
        step = max(int(row["step"]), 1)
        return "the time budget" if spent + spent / step > budget_s else None

    curvature = LocalCurvature(problem.curvature, log=print)
    common = dict(step_ratio=0.1, final_ratio=0.5, curvature=curvature, validation=problem.val, stop_when=deadline)
    common.update(num_classes=problem.num_classes, log=print)
    d = problem.data
    samplers = [d.all] if method == "obd" else [d.unprivileged, d.privileged]
    if method == "obd":
        res = obd(model, d.all, **common)
    else:
        res = fairprune(model, d.unprivileged, d.privileged, beta=0.2, **common)
    test = evaluate(res.model, problem.test, num_classes=problem.num_classes)
    steps = res.history[1:]
    return {
        "steps_done": len(steps),
        "achieved_ratio": res.achieved_ratio,
        "stopped_by_budget": res.aborted,
        "samples_per_step": sum(x.num_batches * x.batch_size for x in samplers),
        "step_seconds": [r["seconds"] for r in steps],
        "val_avg_f1": [r["val_avg_f1"] for r in steps],
        "val_eopp1": [r["val_eopp1"] for r in steps],
        "test_avg_f1": float(test["avg"]["f1"]),
        "test_eopp1": float(test["eopp1"]),
        "curvature_samples_per_s": curvature.stats["samples"] / max(curvature.stats["seconds"], 1e-9),
    }


def _device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({platform.processor() or 'cpu'})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="a tiny model on the synthetic data, on the CPU")
    parser.add_argument("--data-root", type=Path, default=ROOT.parent / "shared" / "data" / "isic2019")
    parser.add_argument("--budget-s", type=float, default=None, help="total seconds (default 420; smoke 100)")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--work", type=Path, default=Path("fairprune_runs/gpu_paper_scale"))
    args = parser.parse_args(argv)

    from fairprune_core.checkpoint import load_checkpoint
    from fairprune_core.config import PruneConfig
    from fairprune_core.datasets import load_dataset
    from fairprune_core.evaluation import resolve_device
    from fairprune_core.experiment import build_problem

    s = SMOKE if args.smoke else PAPER
    budget = args.budget_s or (100.0 if args.smoke else 420.0)
    device = torch.device("cpu") if args.smoke else resolve_device("auto")
    if device.type != "cuda" and not args.smoke:
        raise SystemExit("no GPU here: this benchmark measures a GPU (use --smoke for the CPU rehearsal)")
    if args.smoke:
        dataset = load_dataset("synthetic", image_size=s["image_size"])
    else:
        dataset = load_dataset("isic2019", args.data_root, image_size=s["image_size"])
    result: dict[str, Any] = {
        "command": " ".join(["bash benchmarks/gpu_paper_scale.sh", *(argv if argv is not None else sys.argv[1:])]),
        "device": _device_name(device),
        "torch": torch.__version__,
        "dataset": dataset.name,
        "budget_s": budget,
        "settings": s,
    }

    def write(stage: str, value: Any) -> None:
        result[stage] = value
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1, default=str))
        print(f"[{stage}] written to {args.out}", flush=True)

    t0 = time.perf_counter()
    write("pretrain", _pretrain(dataset, s, device, args.work, SHARES["pretrain"] * budget))
    checkpoint = load_checkpoint(result["pretrain"]["checkpoint"], dataset=dataset)
    model = checkpoint.model.to(device).eval()
    write("curvature", _curvature(model, dataset, device, repeats=3 if args.smoke else 5))
    config = PruneConfig(
        beta=0.2,
        step_ratio=0.1,
        final_ratio=0.5,
        batch_size=64 if not args.smoke else 16,
        num_batches=s["curv_batches"],
    )
    problem = build_problem(dataset, checkpoint, config)
    for method in ("obd", "fairprune"):
        write(method, _prune(method, problem, device, SHARES[method] * budget))
    write("wall_s", time.perf_counter() - t0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
