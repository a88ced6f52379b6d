"""Curvature-pass throughput: single process vs a Ray pool of 1 and 2 CPU workers.

    python benchmarks/curvature_scaling.py            # writes benchmarks/results/curvature_scaling.json
    python benchmarks/curvature_scaling.py --gpu      # on a GPU machine: samples/s per GPU, full VGG-11

Reports samples/s for each path (all measured side by side in this one run), the scaling
efficiency from 1 to 2 workers (throughput(2) / (2 x throughput(1))), per-worker throughput
relative to the single-process path (both with one thread), bytes sent per pruning step, and the
time a step spends outside computation (driver wall time minus the slowest worker's compute).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import ray
import torch

from fairprune_core.curvature.distributed import CurvaturePool
from fairprune_core.curvature.hessian import CurvatureConfig
from fairprune_core.models import ModelConfig, build_model
from fairprune_core.pruning import GroupSampler, LocalCurvature


def _sampler(n: int, size: int, classes: int, batch: int, batches: int, seed: int) -> GroupSampler:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    return GroupSampler(images, rng.integers(0, classes, n), batch_size=batch, num_batches=batches, seed=seed)


def _run(backend, model, requests, steps: int) -> dict:
    backend.compute(model, requests, 0)  # warm-up (and, for a pool, the one-time data transfer)
    walls = []
    for step in range(1, steps + 1):
        t0 = time.perf_counter()
        backend.compute(model, requests, step)
        walls.append(time.perf_counter() - t0)
    samples = sum(len(ix) for _, s in requests for ix in s.plan(0))
    return {
        "step_wall_s": statistics.median(walls),
        "samples_per_step": samples,
        "samples_per_s": samples / statistics.median(walls),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--width", type=float, default=0.25)
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--classes", type=int, default=8)
    p.add_argument("--estimator", default="exact", choices=["exact", "mc", "fisher"])
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--batches", type=int, default=12, help="mini-batches per group per step")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--gpu", action="store_true", help="GPU workers (one per GPU) and the full VGG-11 at 128 px")
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "curvature_scaling.json")
    args = p.parse_args()
    if args.gpu:
        args.width, args.image_size = 1.0, 128

    config = ModelConfig(num_classes=args.classes, image_size=args.image_size, width=args.width)
    model = build_model(config, seed=0)
    requests = [
        ("unprivileged", _sampler(512, args.image_size, args.classes, args.batch, args.batches, 1)),
        ("privileged", _sampler(512, args.image_size, args.classes, args.batch, args.batches, 2)),
    ]
    cfg = CurvatureConfig(estimator=args.estimator)  # type: ignore[arg-type]
    result: dict = {
        "config": vars(args) | {"out": str(args.out)},
        "parameters": sum(p.numel() for p in model.parameters()),
    }

    ray.init(include_dashboard=False, log_to_driver=False)
    gpus = int(ray.cluster_resources().get("GPU", 0))
    if args.gpu:
        if not gpus:
            raise SystemExit("--gpu: this machine's Ray sees no GPU")
        counts = sorted({1, gpus})
        local = LocalCurvature(cfg, device="cuda")
        result["single_process"] = _run(local, model.cuda(), requests, args.steps)
        model = model.cpu()
    else:
        counts = [1, 2]
        torch.set_num_threads(1)  # the single-process reference gets one core, like one worker
        result["single_process"] = _run(LocalCurvature(cfg), model, requests, args.steps)
        torch.set_num_threads(2)
    for n in counts:
        with CurvaturePool(config, cfg, num_workers=n, gpus_per_worker=1 if args.gpu else 0) as pool:
            row = _run(pool, model, requests, args.steps)
            st = pool.stats
            per_step = st.per_step[1:]
            row.update(
                workers=n,
                bytes_weights_per_step=st.bytes_weights // st.steps,
                bytes_returned_per_step=st.bytes_returned // st.steps,
                bytes_data_once=st.bytes_data,
                outside_compute_s=statistics.median(s["wall_s"] - s["max_worker_compute_s"] for s in per_step),
            )
            row["outside_compute_fraction"] = row["outside_compute_s"] / row["step_wall_s"]
            result[f"pool_{n}"] = row
    one = result[f"pool_{counts[0]}"]["samples_per_s"]
    summary = {"per_worker_vs_single_process": one / result["single_process"]["samples_per_s"]}
    if len(counts) > 1:
        n = counts[-1]
        summary[f"scaling_efficiency_1_to_{n}"] = result[f"pool_{n}"]["samples_per_s"] / (n * one)
    if args.gpu:
        summary["samples_per_s_per_gpu"] = result[f"pool_{counts[-1]}"]["samples_per_s"] / counts[-1]
    result["summary"] = summary
    result["machine"] = {
        "cpus": ray.cluster_resources().get("CPU"),
        "gpus": gpus,
        "platform": platform.platform(),
        "torch": torch.__version__,
        "ray": ray.__version__,
    }
    ray.shutdown()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    for key in ("single_process", *(f"pool_{n}" for n in counts)):
        r = result[key]
        print(
            f"{key:15s} {r['samples_per_s']:8.1f} samples/s  (step {r['step_wall_s']:.2f}s"
            + (
                f", outside compute {r['outside_compute_s']:.3f}s, sent {r['bytes_weights_per_step'] / 1e6:.1f} MB"
                f" weights + returned {r['bytes_returned_per_step'] / 1e6:.1f} MB"
                if key != "single_process"
                else ""
            )
            + ")"
        )
    print("summary:", json.dumps(summary))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
