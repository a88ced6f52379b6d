"""Prune a pre-trained VGG-11 with FairPrune and the OBD baseline; print the paper's tables.

    python sweeps/prune.py                          # synthetic demo (pre-trains or reuses a model)
    python sweeps/prune.py --dataset isic2019 --data-root ../shared/data/isic2019 \
        --width 0.125 --image-size 32 --epochs 10 --beta 0.2 --step-ratio 0.1 --final-ratio 0.5
    python sweeps/prune.py --checkpoint run/best.pt --dataset isic2019 --data-root ...
    python sweeps/prune.py --workers 4 --address auto    # curvature on the Ray cluster's workers

Without --checkpoint the pre-training flags describe the model, which is trained once and then
reused. Prints per-group precision/recall/F1, Avg, Diff, Eopp0/Eopp1/Eodd for Vanilla, OBD and
FairPrune on validation and test, with 95% bootstrap intervals and a paired-bootstrap verdict
on whether each change is larger than sampling noise.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fairprune_core.cli import (
    add_data_arguments,
    add_pretrain_arguments,
    add_prune_arguments,
    add_worker_arguments,
    checkpoint_from_args,
    curvature_backend_from_args,
    dataset_from_args,
    prune_config_from_args,
    run_main,
)
from fairprune_core.pipeline import run_comparison


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_arguments(parser)
    add_pretrain_arguments(parser)
    add_prune_arguments(parser)
    add_worker_arguments(parser)
    parser.add_argument("--checkpoint", type=Path, default=None, help="pre-trained checkpoint (best.pt)")
    parser.add_argument(
        "--method",
        choices=["both", "fairprune", "obd"],
        default="both",
        help="which pruning methods to run (default: both)",
    )
    parser.add_argument("--out", type=Path, default=None, help="save the pruned checkpoints here")
    args = parser.parse_args(argv)

    dataset = dataset_from_args(args)
    print(dataset.describe())
    checkpoint = checkpoint_from_args(args, dataset)
    config = prune_config_from_args(args, dataset)
    methods = ("obd", "fairprune") if args.method == "both" else (args.method,)
    pool = curvature_backend_from_args(args, checkpoint.model_config, config)
    try:
        run_comparison(checkpoint, dataset, config, methods=methods, out=args.out, curvature=pool)
    finally:
        if pool is not None:
            print(
                f"curvature pool: {pool.stats.steps} steps, {pool.stats.samples} samples, "
                f"{pool.stats.wall_s:.1f}s wall, {pool.stats.restarts} restarts"
            )
            pool.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
