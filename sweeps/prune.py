"""Prune a pre-trained model (the built-in VGG-11 or any torchvision classifier) with FairPrune and
the OBD baseline; print the paper's tables.

    python sweeps/prune.py                          # synthetic demo (pre-trains or reuses a model)
    python sweeps/prune.py --dataset isic2019 --data-root ../shared/data/isic2019 \
        --width 0.125 --image-size 32 --epochs 30 --lr 1e-3 --batch-size 64 --augment flips \
        --curvature-batches 20 --beta 0.2 --step-ratio 0.1 --final-ratio 0.5     # a small CPU scale
    python sweeps/prune.py --checkpoint run/best.pt --dataset isic2019 --data-root ...
    python sweeps/prune.py --model resnet18 --weights my_resnet18.pt --dataset isic2019 --data-root ...
    python sweeps/prune.py --workers 4 --address auto    # curvature on the Ray cluster's workers

Without --checkpoint or --weights the pre-training flags describe the model, which is trained once
and then reused. Prints per-group precision/recall/F1, Avg, Diff, Eopp0/Eopp1/Eodd for Vanilla, OBD and
FairPrune on validation and test, with 95% BCa bootstrap intervals and a paired-bootstrap verdict
on whether each change is larger than sampling noise.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

# only the light flag definitions at import time: --help answers at once
from fairprune_core.cli import (
    add_chance_argument,
    add_checkpoint_argument,
    add_data_arguments,
    add_pretrain_arguments,
    add_prune_arguments,
    add_ray_arguments,
    apply_smoke,
    run_main,
)
from fairprune_core.methods import METHOD_NAMES

OTHER_METHODS = tuple(m for m in METHOD_NAMES if m != "vanilla")


def _methods(value: str) -> tuple[str, ...]:
    if value == "all":
        return OTHER_METHODS
    names = ("obd", "fairprune") if value == "both" else tuple(v.strip() for v in value.split(",") if v.strip())
    unknown = [n for n in names if n not in OTHER_METHODS]
    if unknown or not names:
        raise SystemExit(f"--method: unknown {', '.join(unknown) or value!r}; choose among {', '.join(OTHER_METHODS)}")
    return names


SMOKE = dict(width=0.0625, epochs=3, curvature_batches=2, curvature_batch_size=16, step_ratio=0.05, final_ratio=0.1)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_arguments(parser)
    add_pretrain_arguments(parser)
    add_prune_arguments(parser)
    add_ray_arguments(parser, sweep=False)
    add_checkpoint_argument(parser)
    parser.add_argument(
        "--method",
        default="obd,fairprune",
        help=f"comma-separated methods to compare with vanilla, among {', '.join(OTHER_METHODS)}; 'both' is "
        f"obd,fairprune (the default), 'all' every one (the training-time baselines train a model each)",
    )
    parser.add_argument("--out", type=Path, default=None, help="save the pruned checkpoints here")
    add_chance_argument(parser, "compare")
    parser.add_argument("--smoke-test", action="store_true", help="a tiny model, 2 steps to 10%% (seconds; CI)")
    return parser


# a comparison keeps nothing but the pruned checkpoints it already saved to --out
INTERRUPTED = "kept: only the checkpoints already saved to --out; the same command runs every method again"


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    methods = _methods(args.method)
    if args.smoke_test:
        apply_smoke(parser, args, SMOKE)

    from fairprune_core.cli import (
        check_args_before_work,
        check_trainable,
        checkpoint_from_args,
        curvature_backend_from_args,
        dataset_from_args,
        prune_config_from_args,
    )
    from fairprune_core.comparison import run_comparison

    loaded = check_args_before_work(args)  # before any data or model
    check_trainable(args, methods)
    if args.out is not None:  # the checkpoints a comparison saves: never over a file of the user's
        from fairprune_core.checkpoint import check_overwritable

        check_overwritable([args.out / f"{m}.pt" for m in methods], "--out")
    dataset = dataset_from_args(args)
    print(dataset.describe())
    checkpoint = checkpoint_from_args(args, dataset, loaded)
    config = prune_config_from_args(args, dataset)
    pool = curvature_backend_from_args(args, checkpoint.model_config, config)
    try:
        run_comparison(
            checkpoint,
            dataset,
            config,
            methods=methods,
            out=args.out,
            curvature=pool,
            device=args.device,
            allow_chance_model=args.allow_chance_model,
        )
    finally:
        if pool is not None:
            print(
                f"curvature pool: {pool.stats.steps} steps, {pool.stats.samples} samples, "
                f"{pool.stats.wall_s:.1f}s wall, {pool.stats.restarts} restarts"
            )
            pool.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main, interrupted=INTERRUPTED))
