"""The FairPrune Pareto sweep: F1 (max) vs Eopp1 (min) over beta, step and final ratio.

    python sweeps/pareto.py                       # synthetic demo: data, pre-training, baselines, sweep
    python sweeps/pareto.py --smoke-test          # the same in about a minute (what CI runs)
    python sweeps/pareto.py --dataset isic2019 --data-root ../shared/data/isic2019 --width 0.125 \
        --image-size 32 --epochs 10 --trials 12
    python sweeps/pareto.py --resume              # continue the latest interrupted sweep
    python sweeps/pareto.py --address auto --tracking-uri http://<head-ip>:5000 \
        --workers-per-trial 2 --gpus-per-worker 1 # on a Ray cluster (see README)

Every trial prunes the pre-trained VGG-11 with FairPrune on Ray Tune, logs its metrics and its
pruned model to MLflow, and Optuna proposes the next settings; trials whose validation F1 falls
below the floor are infeasible. At the end the Pareto-optimal trials are tagged
pareto_optimal=true and the front is printed, plotted and logged on the sweep's parent run.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from fairprune_core.checkpoint import load_checkpoint
from fairprune_core.cli import (
    add_data_arguments,
    add_pretrain_arguments,
    add_prune_arguments,
    add_sweep_arguments,
    apply_config_file,
    checkpoint_from_args,
    dataset_from_args,
    run_main,
    sweep_config_from_args,
)
from fairprune_core.datasets import load_dataset
from fairprune_core.sweep import SweepConfig, format_front, run_sweep
from fairprune_core.tracking import check_tracking_uri

SMOKE = dict(
    width=0.0625,
    epochs=3,
    trials=4,
    curvature_batches=2,
    curvature_batch_size=16,
    bootstrap=100,
    obd_final=0.1,
    obd_step=0.05,
)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_arguments(p)
    add_pretrain_arguments(p)
    add_prune_arguments(p)
    add_sweep_arguments(p)
    p.add_argument(
        "--checkpoint",
        type=Path,
        default=None,
        help="pre-trained checkpoint (default: pre-train with the flags above, or reuse one)",
    )
    p.add_argument("--smoke-test", action="store_true", help="a tiny model and 4 trials (about a minute; CI)")
    return p


def _latest(storage: Path) -> str:
    found = sorted(storage.glob("*/sweep.json"), key=lambda f: f.stat().st_mtime)
    if not found:
        raise SystemExit(f"--resume: no sweep found in {storage}; start one without --resume")
    return found[-1].parent.name


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    apply_config_file(parser, argv)
    args = parser.parse_args(argv)
    if args.smoke_test:
        for key, value in SMOKE.items():
            if getattr(args, key) in (None, parser.get_default(key)):
                setattr(args, key, value)

    if args.tracking_uri:  # fail in a second, not after pre-training (multi-node rules are checked later)
        check_tracking_uri(args.tracking_uri, multi_node=False)
    if args.resume:
        name = args.name or _latest(args.storage)
        stored = json.loads((args.storage / name / "sweep.json").read_text())
        cfg = SweepConfig.from_dict(
            stored["config"], num_trials=args.trials if "--trials" in (argv or sys.argv) else None
        )
        dataset = load_dataset(**stored["dataset_spec"])
        checkpoint = load_checkpoint(stored["checkpoint"], dataset=dataset)
        print(f"resuming sweep {name}")
    else:
        dataset = dataset_from_args(args)
        print(dataset.describe())
        checkpoint = checkpoint_from_args(args, dataset)
        name = args.name or f"{dataset.name}-{time.strftime('%Y%m%d-%H%M%S')}"
        cfg = sweep_config_from_args(args, dataset, name)

    outcome = run_sweep(cfg, dataset, checkpoint, resume=args.resume)
    print()
    print(format_front(outcome))
    feasible = int(outcome.trials["feasible"].sum()) if len(outcome.trials) else 0
    print(
        f"\n{len(outcome.trials)} trials finished, {feasible} feasible, {len(outcome.front)} Pareto-optimal; "
        f"wall time {outcome.wall_s:.0f}s"
    )
    print(
        f"front plot: {outcome.directory / 'pareto_front.png'} (and .html); "
        f"tables and plots are also on the MLflow parent run {outcome.parent_run_id}"
    )
    print("\nBrowse it in MLflow:")
    if outcome.tracking_uri.startswith(("http://", "https://")):
        print(f"  open {outcome.tracking_uri}")
    else:
        print(f"  mlflow ui --backend-store-uri {outcome.tracking_uri}   # then open http://127.0.0.1:5000")
    print("  filter the runs with:  tags.pareto_optimal = 'true'")
    print("  chart view: x = metrics.val_eopp1, y = metrics.val_avg_f1")
    if len(outcome.front):
        print(f"  load a model:  mlflow.pytorch.load_model('{outcome.front.iloc[0]['model_uri']}')")
    if outcome.interrupted:
        print(f"\nThe sweep stopped early. Resume it with:\n  python sweeps/pareto.py --resume --name {cfg.name}")
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
