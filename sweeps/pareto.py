"""The FairPrune Pareto sweep: F1 (max) vs Eopp1 (min) over beta, step and final ratio.

    python sweeps/pareto.py                       # synthetic demo: data, pre-training, baselines, sweep
    python sweeps/pareto.py --smoke-test          # the same in about a minute (what CI runs)
    python sweeps/pareto.py --dataset isic2019 --data-root ../shared/data/isic2019 --width 0.125 \
        --image-size 32 --epochs 30 --lr 1e-3 --batch-size 64 --augment flips --curvature-batches 20 \
        --trials 12                                 # a small CPU scale (README, "Real data")
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
from typing import Any

# only the light flag definitions at import time: --help answers at once
from fairprune_core.cli import (
    Interrupted,
    add_checkpoint_argument,
    add_data_arguments,
    add_pretrain_arguments,
    add_prune_arguments,
    add_ray_arguments,
    add_sweep_arguments,
    apply_config_file,
    apply_smoke,
    explicit_dests,
    run_main,
)

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
# flags a resumed sweep may change, as SweepConfig fields; flags that only locate the sweep
RESUMABLE = {
    "trials": "num_trials",
    "concurrency": "concurrency",
    "workers_per_trial": "workers_per_trial",
    "cpus_per_worker": "cpus_per_worker",
    "gpus_per_worker": "gpus_per_worker",
    "gpus_per_trial": "gpus_per_trial",
    "device": "device",
    "address": "address",
    "tracking_uri": "tracking_uri",
    "prepare_suggestions": "prepare_suggestions",
    "safetensors_only": "safetensors_only",
    "allow_chance_model": "allow_chance_model",  # checked when a sweep starts only
    "max_retries": "trial_retries",
}
LOCATORS = {"resume", "name", "storage", "config", "smoke_test"}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_arguments(p)
    add_pretrain_arguments(p)
    add_prune_arguments(p)
    add_sweep_arguments(p)
    add_ray_arguments(p, sweep=True)
    add_checkpoint_argument(p)
    p.add_argument("--smoke-test", action="store_true", help="a tiny model and 4 trials (about a minute; CI)")
    return p


def _latest(storage: Path) -> str:
    found = sorted(storage.glob("*/sweep.json"), key=lambda f: f.stat().st_mtime)
    if not found:
        raise SystemExit(f"--resume: no sweep found in {storage}; start one without --resume")
    return found[-1].parent.name


def _plain(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def _resumed_config(args: argparse.Namespace, given: set[str], state: Any) -> Any:
    """The stored config with the changes a resume may make; a clear error for any other change."""
    changes, conflicts = {}, []
    for dest in sorted(given - LOCATORS):
        value = getattr(args, dest)
        if dest in RESUMABLE:
            changes[RESUMABLE[dest]] = value
        elif dest not in state.flags or _plain(state.flags[dest]) != _plain(value):
            was = state.flags.get(dest, "not recorded")
            conflicts.append(f"--{dest.replace('_', '-')} {_plain(value)} (the sweep has {was})")
    if conflicts:
        raise ValueError(
            f"--resume cannot change {'; '.join(conflicts)}: that would change the study. A resume may change "
            f"{', '.join('--' + k.replace('_', '-') for k in RESUMABLE)}; for other settings start a new sweep "
            f"(another --name)"
        )
    return state.sweep_config().resumed(**changes)


def _start(args: argparse.Namespace, given: set[str]) -> tuple[Any, Any, Any]:
    """(config, dataset, checkpoint) of a new sweep, or of the one being resumed."""
    from fairprune_core.checkpoint import load_checkpoint
    from fairprune_core.cli import check_sweep_args, checkpoint_from_args, dataset_from_args, sweep_config_from_args
    from fairprune_core.datasets import load_dataset
    from fairprune_core.sweep.state import SweepState

    if args.resume:
        name = args.name or _latest(args.storage)
        if not SweepState.path(args.storage / name).is_file():
            known = sorted(f.parent.name for f in args.storage.glob("*/sweep.json"))
            raise SystemExit(
                f"--resume --name {name}: no sweep of that name in {args.storage}; "
                + (f"the sweeps there: {', '.join(known)}" if known else "there are none: start one without --resume")
            )
        state = SweepState.load(args.storage / name)
        cfg = _resumed_config(args, given, state)
        dataset = load_dataset(**state.dataset_spec)
        print(f"resuming sweep {name}")
        return cfg, dataset, load_checkpoint(state.checkpoint, dataset=dataset)
    loaded = check_sweep_args(args)  # before any data, model, Ray, MLflow run or folder
    dataset = dataset_from_args(args)
    print(dataset.describe())
    checkpoint = checkpoint_from_args(args, dataset, loaded)
    name = args.name or f"{dataset.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    return sweep_config_from_args(args, dataset, name), dataset, checkpoint


def _print_outcome(outcome: Any) -> None:
    from fairprune_core.sweep.table import format_front, front_counts

    print()
    print(format_front(outcome.front, outcome.baselines))
    print(f"\n{front_counts(outcome.trials)}; wall time {outcome.wall_s:.0f}s")
    print(
        f"front plot: {outcome.directory / 'pareto_front.png'} (and .svg, .html); "
        f"tables and plots are also on the MLflow parent run {outcome.parent_run_id}"
    )
    print("\nBrowse it in MLflow:")
    if outcome.tracking_uri.startswith(("http://", "https://")):
        print(f"  open {outcome.tracking_uri}")
    else:
        print(f"  mlflow ui --backend-store-uri {outcome.tracking_uri}   # then open http://127.0.0.1:5000")
    print("  filter the runs with:  tags.pareto_optimal = 'true'")
    if outcome.aliases:
        picks = ", ".join(f"@{alias} = trial {n}" for alias, n in outcome.aliases.items())
        print(f"  registered model {outcome.registry}: {picks}")
        print("  load one (from anywhere; nothing is unpickled):")
        print("    from fairprune_core.tracking import load_pruned_model")
        uri = f"models:/{outcome.registry}@knee"
        print(f"    model = load_pruned_model({uri!r}, tracking_uri={outcome.tracking_uri!r})")
        if outcome.knee_pickled:  # the PyTorch flavour too (not --safetensors-only): it unpickles
            trust = "also works, but unpickles the file: only for a store you trust"
            print(f"    # mlflow.pytorch.load_model({uri!r}) {trust}")


RESUME = "python sweeps/pareto.py --resume"


def _stopped_before_trials(cfg: Any) -> str:
    """What a Ctrl-C before the trials leaves: a sweep to resume once its baselines are saved."""
    from fairprune_core.sweep.state import SweepState

    if SweepState.exists(cfg.directory):
        return f"the sweep stopped early. Resume it with:\n  {RESUME} --name {cfg.name}"
    return "the sweep stopped before its baselines were saved: nothing to resume; run the command again"


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    from_file = apply_config_file(parser, argv)
    args = parser.parse_args(argv)
    given = explicit_dests(parser, argv) | from_file
    if args.smoke_test:
        apply_smoke(parser, args, SMOKE)
    if args.tracking_uri:  # fail in a second, not after pre-training (multi-node rules are checked later)
        from fairprune_core.tracking import check_tracking_uri

        check_tracking_uri(args.tracking_uri, multi_node=False)
    cfg, dataset, checkpoint = _start(args, given)

    from fairprune_core.sweep import run_sweep

    try:
        outcome = run_sweep(cfg, dataset, checkpoint, resume=args.resume, flags=_plain(vars(args)))
    except KeyboardInterrupt:  # in the preamble (Ctrl-C while trials run ends the sweep gracefully)
        raise Interrupted(_stopped_before_trials(cfg)) from None
    _print_outcome(outcome)
    if outcome.shortfall:
        print(f"\nNOTE: {outcome.shortfall}")
    if outcome.interrupted:
        print(f"\nThe sweep stopped early. Resume it with:\n  {RESUME} --name {cfg.name}")
        return 130
    return 1 if outcome.shortfall else 0


if __name__ == "__main__":
    # Ctrl-C before the sweep starts (in its pre-training): the same command resumes that
    sys.exit(run_main(main, interrupted="the same command resumes the pre-training from its last finished epoch"))
