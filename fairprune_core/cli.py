"""Command-line flags shared by the entry points in ``sweeps/`` (data, model, pre-training).

Unset flags take a preset: on ``synthetic`` a small, fast demo model; on real data the paper's
settings (full VGG-11 at 128 px, Adam 1e-4, batch 256, 200 epochs, lr x0.1 at 160).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .checkpoint import Checkpoint, load_checkpoint
from .datasets import DATASETS, DermDataset, load_dataset
from .model import ModelConfig
from .pipeline import PruneConfig, ensure_pretrained
from .training import TrainConfig

__all__ = [
    "PRESETS",
    "add_data_arguments",
    "add_pretrain_arguments",
    "add_prune_arguments",
    "dataset_from_args",
    "model_and_train_config",
    "prune_config_from_args",
]

PRESETS: dict[str, dict[str, Any]] = {
    # a small VGG-11 that trains in well under a minute on a 2-core CPU
    "demo": dict(image_size=32, width=0.125, epochs=30, batch_size=64, lr=1e-3, lr_milestones=(24,), augment="flips"),
    # Sec. 4 of the paper
    "paper": dict(
        image_size=128, width=1.0, epochs=200, batch_size=256, lr=1e-4, lr_milestones=(160,), augment="paper"
    ),
}


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("data")
    g.add_argument(
        "--dataset",
        choices=DATASETS,
        default="synthetic",
        help="which dataset (default: synthetic, generated on first use)",
    )
    g.add_argument(
        "--data-root",
        type=Path,
        default=None,
        help="folder of the real dataset (fitzpatrick17k.csv + images, or the ISIC 2019 CSVs "
        "+ ISIC_2019_Training_Input/); synthetic: where to write it (default: in the cache)",
    )
    g.add_argument(
        "--image-size",
        type=int,
        default=None,
        help="input side in pixels, a multiple of 32 (default: 32 synthetic, 128 real data)",
    )
    g.add_argument(
        "--label-column",
        default="label",
        choices=["label", "nine_partition_label", "three_partition_label"],
        help="Fitzpatrick17k label column (default: label, 114 conditions)",
    )
    g.add_argument("--split-seed", type=int, default=0, help="seed of the 60/20/20 split (default 0)")
    g.add_argument(
        "--manifest",
        type=Path,
        default=None,
        help="reuse a saved split manifest CSV (image_id,split) instead of drawing one",
    )
    g.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help="pixel cache folder (default: $FAIRPRUNE_CACHE or ~/.cache/fairprune)",
    )
    g.add_argument(
        "--skip-unreadable",
        action="store_true",
        help="drop (and count) undecodable images instead of stopping with an error",
    )


def add_pretrain_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("model and pre-training (unset: demo preset on synthetic, paper's on real data)")
    g.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default=None,
        help="defaults for unset flags (default: demo on synthetic, paper otherwise)",
    )
    g.add_argument("--width", type=float, default=None, help="VGG-11 channel multiplier (1.0 = full)")
    g.add_argument("--epochs", type=int, default=None, help="training epochs")
    g.add_argument("--batch-size", type=int, default=None, help="training batch size")
    g.add_argument("--lr", type=float, default=None, help="Adam learning rate")
    g.add_argument(
        "--lr-milestones",
        type=int,
        nargs="*",
        default=None,
        help="epochs at which the learning rate is multiplied by 0.1",
    )
    g.add_argument(
        "--augment",
        choices=["paper", "flips", "none"],
        default=None,
        help="training augmentation (paper: flips, rotation, scaling, AutoAugment)",
    )
    g.add_argument("--seed", type=int, default=0, help="initialisation and shuffling seed")
    g.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda[:N]")


@dataclass(frozen=True)
class _Resolved:
    preset: str
    values: dict[str, Any]


def _resolve(args: argparse.Namespace) -> _Resolved:
    preset = getattr(args, "preset", None) or ("demo" if args.dataset == "synthetic" else "paper")
    values = dict(PRESETS[preset])
    for key in list(values):
        given = getattr(args, key, None)
        if given is not None:
            values[key] = tuple(given) if key == "lr_milestones" else given
    return _Resolved(preset, values)


def dataset_from_args(args: argparse.Namespace) -> DermDataset:
    """Load the dataset the flags describe (image size from the preset when unset)."""
    if args.dataset != "synthetic" and args.data_root is None:
        raise SystemExit(f"--dataset {args.dataset} needs --data-root PATH (the folder holding its files)")
    image_size = args.image_size or _resolve(args).values["image_size"]
    options: dict[str, Any] = dict(
        image_size=image_size,
        seed=args.split_seed,
        cache_dir=args.cache_dir,
        manifest=args.manifest,
        skip_unreadable=args.skip_unreadable,
    )
    if args.dataset in ("fitzpatrick17k", "synthetic"):
        options["label_column"] = args.label_column
    return load_dataset(args.dataset, args.data_root, **options)


def preset_configs(
    values: dict[str, Any], dataset: DermDataset, *, seed: int = 0, device: str = "auto"
) -> tuple[ModelConfig, TrainConfig]:
    """Model and training configs from preset values (``PRESETS[name]``, possibly overridden)."""
    model = ModelConfig(num_classes=dataset.num_classes, image_size=dataset.image_size, width=values["width"])
    train = TrainConfig(
        epochs=values["epochs"],
        batch_size=values["batch_size"],
        lr=values["lr"],
        lr_milestones=tuple(values["lr_milestones"]),
        augment=values["augment"],
        seed=seed,
        device=device,
    )
    return model, train


def model_and_train_config(args: argparse.Namespace, dataset: DermDataset) -> tuple[str, ModelConfig, TrainConfig]:
    r = _resolve(args)
    model, train = preset_configs(r.values, dataset, seed=args.seed, device=args.device)
    return r.preset, model, train


def checkpoint_from_args(args: argparse.Namespace, dataset: DermDataset) -> Checkpoint:
    """``--checkpoint``, else the model the pre-training flags describe (trained once, then reused)."""
    path = args.checkpoint
    if path is None:
        _, model_config, train_config = model_and_train_config(args, dataset)
        path = ensure_pretrained(dataset, model_config, train_config)
    return load_checkpoint(path, dataset=dataset)


def add_prune_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("pruning")
    g.add_argument("--beta", type=float, default=0.33, help="weight of the privileged group's saliency (Eq. 4)")
    g.add_argument("--step-ratio", type=float, default=0.05, help="fraction of prunable weights pruned per step")
    g.add_argument("--final-ratio", type=float, default=0.35, help="final pruned fraction (reached exactly)")
    g.add_argument(
        "--estimator",
        choices=["exact", "mc", "fisher"],
        default=None,
        help="curvature estimator (default: exact; mc on Fitzpatrick17k's 114 classes)",
    )
    g.add_argument("--mc-samples", type=int, default=1, help="sampled labels per input for --estimator mc")
    g.add_argument(
        "--curvature-batch-size",
        type=int,
        default=None,
        help="curvature mini-batch size per group (default: paper's, 64 ISIC / 2 Fitzpatrick / 32 demo)",
    )
    g.add_argument(
        "--curvature-batches",
        type=int,
        default=None,
        help="curvature mini-batches per group per step (default: 200 ISIC / 500 Fitzpatrick / 8 demo)",
    )
    g.add_argument(
        "--max-sub-batch",
        type=int,
        default=None,
        help="samples per BackPACK pass, to bound memory (default: 256 // classes for exact)",
    )
    g.add_argument(
        "--privileged",
        default="auto",
        help="privileged group: auto (higher vanilla val accuracy), a group name, or 0/1",
    )
    g.add_argument("--stop-eopp1", type=float, default=None, help="stop once validation Eopp1 <= this")
    g.add_argument("--prune-seed", type=int, default=0, help="seed of the curvature mini-batch sampling")


def prune_config_from_args(args: argparse.Namespace, dataset: DermDataset) -> PruneConfig:
    defaults = PruneConfig.curvature_defaults(dataset.name)
    priv = args.privileged
    if priv == "auto":
        privileged = None
    elif priv in dataset.group_names:
        privileged = dataset.group_names.index(priv)
    elif priv in ("0", "1"):
        privileged = int(priv)
    else:
        raise SystemExit(f"--privileged must be auto, 0, 1 or one of {dataset.group_names}; got {priv!r}")
    return PruneConfig(
        beta=args.beta,
        step_ratio=args.step_ratio,
        final_ratio=args.final_ratio,
        estimator=args.estimator or defaults.get("estimator", "exact"),
        mc_samples=args.mc_samples,
        batch_size=args.curvature_batch_size or defaults["batch_size"],
        num_batches=args.curvature_batches or defaults["num_batches"],
        max_sub_batch=args.max_sub_batch,
        seed=args.prune_seed,
        privileged=privileged,
        stop_eopp1=args.stop_eopp1,
    )


def add_worker_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("curvature workers (Ray)")
    g.add_argument(
        "--workers", type=int, default=0, help="Ray curvature workers per pruning run (0: compute in this process)"
    )
    g.add_argument("--cpus-per-worker", type=float, default=1, help="CPUs (and torch threads) per worker")
    g.add_argument(
        "--gpus-per-worker",
        type=float,
        default=None,
        help="GPUs per worker (default: 1 when the cluster has GPUs, else 0)",
    )
    g.add_argument(
        "--address", default=None, help="Ray cluster address (default: $RAY_ADDRESS, else a local Ray started here)"
    )


def curvature_backend_from_args(args: argparse.Namespace, model_config: ModelConfig, config: PruneConfig):
    """A :class:`CurvaturePool` when ``--workers`` > 0, else None (single-process)."""
    if not args.workers:
        return None
    from .distributed import CurvaturePool

    return CurvaturePool(
        model_config,
        config.curvature_config(),
        num_workers=args.workers,
        cpus_per_worker=args.cpus_per_worker,
        gpus_per_worker=args.gpus_per_worker,
        address=args.address,
    )


def add_sweep_arguments(parser: argparse.ArgumentParser) -> None:
    from .sweep import SAMPLERS

    g = parser.add_argument_group("search")
    g.add_argument(
        "--config",
        type=Path,
        default=None,
        help="JSON or YAML file of defaults for any flag below (keys are flag names, e.g. trials: 40)",
    )
    g.add_argument("--trials", type=int, default=30, help="total trials in the study, the paper's two included")
    g.add_argument(
        "--sampler",
        choices=SAMPLERS,
        default="gp",
        help="Optuna sampler (default: gp, the best hypervolume in benchmarks/sampler_hypervolume.py)",
    )
    g.add_argument("--search-seed", type=int, default=0, help="sampler seed")
    g.add_argument("--beta-range", type=float, nargs=2, default=(0.0, 1.0), metavar=("LOW", "HIGH"))
    g.add_argument(
        "--step-range",
        type=float,
        nargs=2,
        default=(0.01, 0.2),
        metavar=("LOW", "HIGH"),
        help="per-step prune fraction range",
    )
    g.add_argument(
        "--final-range",
        type=float,
        nargs=2,
        default=(0.05, 0.8),
        metavar=("LOW", "HIGH"),
        help="final pruned fraction range (a step above the final ratio runs with step = final)",
    )
    g.add_argument(
        "--no-paper-settings",
        action="store_true",
        help="do not evaluate the paper's settings (beta .33/step .05/final .35; .2/.1/.5) first",
    )
    g.add_argument(
        "--f1-floor",
        type=float,
        default=0.9,
        help="feasible trials keep val F1 >= this x the vanilla val F1 (default 0.9)",
    )
    g.add_argument(
        "--no-abort-infeasible",
        action="store_true",
        help="prune to the final ratio even after val F1 fell below the floor",
    )
    g.add_argument("--obd-step", type=float, default=0.05, help="OBD baseline: per-step fraction")
    g.add_argument("--obd-final", type=float, default=0.35, help="OBD baseline: final ratio")
    g.add_argument("--bootstrap", type=int, default=500, help="bootstrap resamples for the intervals")
    r = parser.add_argument_group("Ray")
    r.add_argument("--address", default=None, help="Ray cluster address (default: $RAY_ADDRESS, else local Ray)")
    r.add_argument("--concurrency", type=int, default=2, help="trials at a time")
    r.add_argument(
        "--workers-per-trial",
        type=int,
        default=0,
        help="Ray curvature workers per trial, in the trial's placement group (0: in the trial)",
    )
    r.add_argument("--cpus-per-worker", type=float, default=1, help="CPUs per curvature worker")
    r.add_argument("--gpus-per-worker", type=float, default=0, help="GPUs per curvature worker")
    m = parser.add_argument_group("MLflow and storage")
    m.add_argument(
        "--tracking-uri",
        default=None,
        help="MLflow tracking URI (default: MLflow's own, sqlite:///<cwd>/mlflow.db); on a cluster, "
        "the head's server, e.g. http://<head-ip>:5000",
    )
    m.add_argument("--experiment", default=None, help="MLflow experiment (default: fairprune-<dataset>)")
    m.add_argument("--name", default=None, help="sweep name (default: <dataset>-<date>-<time>)")
    m.add_argument(
        "--storage",
        type=Path,
        default=Path("fairprune_runs/sweeps"),
        help="where sweeps keep their Optuna study and Tune results",
    )
    m.add_argument(
        "--resume", action="store_true", help="continue the sweep --name (default: the latest one in --storage)"
    )


def apply_config_file(parser: argparse.ArgumentParser, argv: list[str] | None) -> None:
    """Load ``--config FILE`` (JSON/YAML) as parser defaults, so explicit flags still win."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config", type=Path, default=None)
    known, _ = pre.parse_known_args(argv)
    if known.config is None:
        return
    if not known.config.is_file():
        raise SystemExit(f"--config: file not found: {known.config}")
    text = known.config.read_text()
    if known.config.suffix in (".yaml", ".yml"):
        import yaml

        values = yaml.safe_load(text) or {}
    else:
        values = __import__("json").loads(text)
    dests = {a.dest for a in parser._actions}
    unknown = sorted(k for k in values if k.replace("-", "_") not in dests)
    if unknown:
        raise SystemExit(f"--config {known.config}: unknown keys {unknown}; use flag names such as trials, sampler")
    parser.set_defaults(**{k.replace("-", "_"): v for k, v in values.items()})


def sweep_config_from_args(args: argparse.Namespace, dataset: DermDataset, name: str):
    from .sweep import SearchSpace, SweepConfig

    prune = prune_config_from_args(args, dataset)
    return SweepConfig(
        name=name,
        storage=args.storage,
        num_trials=args.trials,
        sampler=args.sampler,
        seed=args.search_seed,
        space=SearchSpace(
            beta=tuple(args.beta_range), step_ratio=tuple(args.step_range), final_ratio=tuple(args.final_range)
        ),
        paper_settings_first=not args.no_paper_settings,
        prune=prune,
        f1_floor=args.f1_floor,
        abort_infeasible=not args.no_abort_infeasible,
        obd_step=args.obd_step,
        obd_final=args.obd_final,
        concurrency=args.concurrency,
        workers_per_trial=args.workers_per_trial,
        cpus_per_worker=args.cpus_per_worker,
        gpus_per_worker=args.gpus_per_worker,
        n_boot=args.bootstrap,
        tracking_uri=args.tracking_uri,
        experiment=args.experiment,
        address=args.address,
    )


def run_main(main: Any, argv: list[str] | None = None) -> int:
    """Run an entry point; user errors (bad data, unreachable tracking server, impossible
    resources, mismatched checkpoint, invalid settings) print one clear line instead of a traceback."""
    import sys

    from .checkpoint import CheckpointMismatch
    from .datasets import DatasetError
    from .distributed import PoolResourcesError
    from .tracking import TrackingError

    user_errors = (
        DatasetError,
        TrackingError,
        PoolResourcesError,
        CheckpointMismatch,
        FileExistsError,
        FileNotFoundError,
        ValueError,
    )
    try:
        return int(main(argv) or 0)
    except user_errors as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
