"""Vanilla pre-training of the built-in VGG-11 or any torchvision classifier on synthetic,
Fitzpatrick17k or ISIC 2019 data.

    python sweeps/pretrain.py                                  # synthetic demo, ~1 min on a CPU
    python sweeps/pretrain.py --dataset isic2019 --data-root ../shared/data/isic2019 \
        --width 0.125 --image-size 32 --epochs 30 --lr 1e-3 --batch-size 64 --augment flips   # small, learns
    python sweeps/pretrain.py --model resnet18 --dataset isic2019 --data-root ../shared/data/isic2019 \
        --image-size 32 --epochs 30 --lr 1e-3 --batch-size 64 --augment flips   # torchvision's ResNet-18
    python sweeps/pretrain.py --model resnet18 --weights resnet18_imagenet.pt ...   # fine-tune your weights

Re-running the same command resumes an interrupted run from its last epoch.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

# only the light flag definitions at import time: --help answers at once
from fairprune_core.cli import add_data_arguments, add_pretrain_arguments, apply_smoke, run_main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_arguments(parser)
    add_pretrain_arguments(parser)
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="output folder (default: fairprune_runs/pretrain/<dataset>-<config hash>)",
    )
    parser.add_argument(
        "--weights",
        type=Path,
        default=None,
        metavar="FILE",
        help="start from these weights of the --model architecture (fine-tuning; e.g. ImageNet weights you saved "
        "with torch.save(model.state_dict(), FILE)); a head for other classes starts fresh. Never downloaded",
    )
    parser.add_argument("--no-resume", action="store_true", help="start over even if a last.pt exists")
    parser.add_argument("--smoke-test", action="store_true", help="2 epochs of a tiny model (for CI)")
    args = parser.parse_args(argv)
    if args.smoke_test:
        apply_smoke(parser, args, {"epochs": 2, "width": 0.0625})

    from fairprune_core.cli import check_model_flags, dataset_from_args, model_and_train_config
    from fairprune_core.pretrained import run_pretrain

    check_model_flags(args)  # before any data is read
    if args.weights is not None:
        from fairprune_core.models.weights import load_state

        load_state(args.weights)  # a readable state dict, nothing unpickled

    if args.out is not None:  # what pre-training writes there: never over a file of the user's
        from fairprune_core.checkpoint import check_overwritable

        check_overwritable([args.out / name for name in ("best.pt", "last.pt", "done")], "--out")
    dataset = dataset_from_args(args)
    preset, model_config, train_config = model_and_train_config(args, dataset, init_weights=args.weights)
    run_pretrain(dataset, model_config, train_config, out=args.out, resume=not args.no_resume, preset=preset)
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main, interrupted="the same command resumes from the last finished epoch"))
