"""Command-line flags of the entry points in ``sweeps/``, each defined once, mapped onto configs.

Unset flags take a preset (:data:`fairprune_core.config.PRESETS`): on ``synthetic`` a small,
fast demo model; on real data the paper's settings (full VGG-11 at 128 px, Adam 1e-4, batch
256, 200 epochs, lr x0.1 at 160). This module imports only the light config module at import
time, so every entry point answers ``--help`` at once; building the objects the flags describe
imports the heavy stack inside the functions that do it.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..config import DATASET_NAMES, ESTIMATORS, PRESETS, SYNTHETIC_BIASES, Preset, PruneConfig, SweepConfig

__all__ = [
    "TRAINED_METHODS",
    "add_chance_argument",
    "add_checkpoint_argument",
    "add_data_arguments",
    "add_pretrain_arguments",
    "add_prune_arguments",
    "add_ray_arguments",
    "check_args_before_work",
    "check_trainable",
    "checkpoint_before_work",
    "checkpoint_from_args",
    "curvature_backend_from_args",
    "dataset_from_args",
    "model_and_train_config",
    "preset_configs",
    "prune_config_from_args",
    "without_data",
]


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("data")
    g.add_argument(
        "--dataset",
        choices=DATASET_NAMES,
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
        help="input side in pixels (the built-in VGG-11: a multiple of 32; default: 32 synthetic, 128 real data)",
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
        "--synthetic-bias",
        choices=SYNTHETIC_BIASES,
        default="default",
        help="synthetic data only: the planted group bias (default: a light-skin shortcut and a difficulty gap on "
        "dark skin); strong: the positive control, the same plus dark-skin lesions that look like another class (a "
        "gap that lasts at any dataset size); none: the negative control, where no group difference carries label "
        "information",
    )
    g.add_argument(
        "--synthetic-images", type=int, default=None, help="synthetic data only: images generated (default 1500)"
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
    g.add_argument(
        "--model",
        default=None,
        metavar="NAME",
        help="architecture: fairprune_vgg11 (the paper's VGG-11, the default) or any torchvision classification "
        "model by its torchvision name (resnet18, densenet121, efficientnet_b0, vit_b_16, ...); never downloaded",
    )
    g.add_argument("--width", type=float, default=None, help="built-in VGG-11 only: channel multiplier (1.0 = full)")
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


def _preset(args: argparse.Namespace) -> tuple[str, Preset]:
    """The preset the flags select, with every model/training flag the user gave applied."""
    name = getattr(args, "preset", None) or ("demo" if args.dataset == "synthetic" else "paper")
    return name, PRESETS[name].with_overrides(**vars(args))


def dataset_from_args(args: argparse.Namespace) -> Any:
    """Load the dataset the flags describe (image size from the preset when unset)."""
    from ..datasets import load_dataset

    if args.dataset != "synthetic" and args.data_root is None:
        raise SystemExit(f"--dataset {args.dataset} needs --data-root PATH (the folder holding its files)")
    image_size = _preset(args)[1].image_size
    options: dict[str, Any] = dict(
        image_size=image_size,
        seed=args.split_seed,
        cache_dir=args.cache_dir,
        manifest=args.manifest,
        skip_unreadable=args.skip_unreadable,
    )
    if args.dataset in ("fitzpatrick17k", "synthetic"):
        options["label_column"] = args.label_column
    if args.dataset == "synthetic":
        from ..datasets.synthetic import BIAS_PRESETS

        options.update(BIAS_PRESETS[args.synthetic_bias])
        if args.synthetic_images is not None:
            options["num_images"] = args.synthetic_images
    elif args.synthetic_bias != "default" or args.synthetic_images is not None:
        raise SystemExit("--synthetic-bias and --synthetic-images apply to --dataset synthetic only")
    return load_dataset(args.dataset, args.data_root, **options)


def preset_configs(
    preset: Preset,
    dataset: Any,
    *,
    seed: int = 0,
    device: str = "auto",
    arch: str | None = None,
    init_weights: Path | None = None,
) -> tuple[Any, Any]:
    """Model and training configs from a preset (possibly overridden); ``arch`` None is the built-in
    VGG-11 (the preset's width applies to it alone); ``init_weights`` a file to start training from."""
    from ..models import BUILTIN, ModelConfig, check_input_size
    from ..training import TrainConfig

    shape = {"width": preset.width} if arch in (None, BUILTIN) else {"arch": arch}
    model = ModelConfig(num_classes=dataset.num_classes, image_size=dataset.image_size, **shape)
    check_input_size(model)
    train = TrainConfig(
        epochs=preset.epochs,
        batch_size=preset.batch_size,
        lr=preset.lr,
        lr_milestones=preset.lr_milestones,
        augment=preset.augment,
        seed=seed,
        device=device,
        init_weights=None if init_weights is None else str(Path(init_weights).resolve()),
    )
    return model, train


def model_and_train_config(
    args: argparse.Namespace, dataset: Any, *, init_weights: Path | None = None
) -> tuple[str, Any, Any]:
    check_model_flags(args)
    name, preset = _preset(args)
    model, train = preset_configs(
        preset, dataset, seed=args.seed, device=args.device, arch=args.model, init_weights=init_weights
    )
    return name, model, train


def check_model_flags(args: argparse.Namespace) -> None:
    """``--model`` names an architecture, and ``--width`` goes with the built-in VGG-11 only."""
    model = getattr(args, "model", None)
    if model is None:
        return
    from ..models import BUILTIN
    from ..models.registry import check_arch

    check_arch(model)
    if model != BUILTIN and args.width is not None:
        raise SystemExit(f"--width scales the built-in VGG-11 only; {model} is built as torchvision defines it")


def add_checkpoint_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--checkpoint",
        type=Path,
        default=None,
        help="pre-trained FairPrune checkpoint (default: pre-train with the flags above, or reuse one)",
    )
    parser.add_argument(
        "--weights",
        type=Path,
        default=None,
        metavar="FILE",
        help="your trained model's weights, of the --model architecture with one output per class of this data: "
        "a state dict saved with torch.save(model.state_dict(), FILE) or a .safetensors file (read without "
        "unpickling; imported once into fairprune_runs/imported/)",
    )


def add_chance_argument(parser: Any, what: str) -> None:
    """``--allow-chance-model``: run ``what`` ("sweep", "compare") even on a vanilla model near chance."""
    parser.add_argument(
        "--allow-chance-model",
        action="store_true",
        help=f"{what} even a vanilla model near chance on validation (one class, or avg F1 below 1.5 x the best "
        "constant predictor's), which is otherwise refused: its pruning cannot be judged",
    )


def checkpoint_from_args(args: argparse.Namespace, dataset: Any, loaded: Any = None) -> Any:
    """``--checkpoint`` (``loaded``: already read by :func:`check_args_before_work`), else the model
    the pre-training flags describe (trained once, then reused); checked against ``dataset``."""
    from ..checkpoint import load_checkpoint
    from ..pretrained import ensure_pretrained

    if loaded is not None:
        loaded.check_dataset(dataset)
        return loaded
    path = args.checkpoint
    if path is None and getattr(args, "weights", None) is not None:
        from ..pretrained import import_weights

        _, model_config, _ = model_and_train_config(args, dataset)
        path = import_weights(dataset, model_config, args.weights)
    elif path is None:
        _, model_config, train_config = model_and_train_config(args, dataset)
        path = ensure_pretrained(dataset, model_config, train_config)
    return load_checkpoint(path, dataset=dataset)


def add_prune_arguments(parser: argparse.ArgumentParser) -> None:
    d = PruneConfig()
    g = parser.add_argument_group("pruning")
    g.add_argument("--beta", type=float, default=d.beta, help="weight of the privileged group's saliency (Eq. 4)")
    g.add_argument(
        "--step-ratio", type=float, default=d.step_ratio, help="fraction of prunable weights pruned per step"
    )
    g.add_argument("--final-ratio", type=float, default=d.final_ratio, help="final pruned fraction (reached exactly)")
    g.add_argument(
        "--estimator",
        choices=ESTIMATORS,
        default=None,
        help="curvature estimator (default: exact, the exact Gauss-Newton diagonal: the Hessian's on ReLU networks "
        "such as VGG, ResNet, DenseNet; mc on Fitzpatrick17k's 114 classes; hutchinson: the Hessian diagonal "
        "itself, estimated, for smooth activations such as EfficientNet's or a ViT's; ggn: the same as exact)",
    )
    g.add_argument("--mc-samples", type=int, default=d.mc_samples, help="sampled labels per input for --estimator mc")
    g.add_argument(
        "--probes",
        type=int,
        default=d.probes,
        help=f"Rademacher probes per curvature sub-batch for --estimator hutchinson (default {d.probes})",
    )
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
    g.add_argument("--prune-seed", type=int, default=d.seed, help="seed of the curvature mini-batch sampling")
    b = parser.add_argument_group("training-time baselines (each trained like the vanilla model)")
    b.add_argument(
        "--adv-weight", type=float, default=d.adv_weight, help="AdvConf: weight of the confusion loss (default 1.0)"
    )
    b.add_argument(
        "--adv-alpha", type=float, default=d.adv_alpha, help="AdvRev: alpha of the projected update (default 0.1)"
    )


def _privileged(value: str, group_names: list[str]) -> int | None:
    if value == "auto":
        return None
    if value in group_names:
        return group_names.index(value)
    if value in ("0", "1"):
        return int(value)
    raise SystemExit(f"--privileged must be auto, 0, 1 or one of {group_names}; got {value!r}")


class _NoData:
    """Stands in for the dataset while settings are checked before any data is read: its name
    gives the per-dataset defaults; a group named by ``--privileged`` is checked against the data later."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.group_names: list[str] = []


def without_data(args: argparse.Namespace) -> tuple[argparse.Namespace, _NoData]:
    """``args`` and a stand-in dataset for building configs before any data is read (a group
    named by ``--privileged`` is checked against the data later)."""
    return argparse.Namespace(**{**vars(args), "privileged": "auto"}), _NoData(args.dataset)


# methods that train a model of their own, with the vanilla model's recipe
TRAINED_METHODS = ("advconf", "advrev", "domainindep")


def check_trainable(args: argparse.Namespace, methods: Any) -> None:
    """The training-time baselines train like the vanilla model; imported ``--weights`` record no
    recipe to train them with: refused before any work, with what to do instead."""
    trained = [m for m in methods if m in TRAINED_METHODS]
    if getattr(args, "weights", None) is None or not trained:
        return
    model = getattr(args, "model", None) or "fairprune_vgg11"
    raise SystemExit(
        f"{', '.join(trained)} train a model of their own with the vanilla model's recipe, which --weights does not "
        f"record. Pre-train with the tool (sweeps/pretrain.py --model {model} ..., then --checkpoint its best.pt) "
        f"to compare with them under one recipe, or leave them out"
    )


def checkpoint_before_work(args: argparse.Namespace) -> Any:
    """The ``--checkpoint`` given, read and checked now (nothing unpickled); None when not given.
    ``--model`` and a ``--weights`` file are checked too (its fit to the data's classes is checked
    once the data is read)."""
    checkpoint = getattr(args, "checkpoint", None)
    weights = getattr(args, "weights", None)
    if checkpoint is not None and weights is not None:
        raise SystemExit("--checkpoint and --weights both name the model to prune; pass one")
    if checkpoint is not None and getattr(args, "model", None) is not None:
        raise SystemExit("--checkpoint records its architecture; --model goes with --weights or pre-training")
    check_model_flags(args)
    if weights is not None:
        from ..models.weights import load_state

        load_state(Path(weights))  # a readable state dict, nothing unpickled
    if checkpoint is None:
        return None
    from ..checkpoint import load_checkpoint

    if not Path(checkpoint).is_file():
        raise FileNotFoundError(f"--checkpoint {checkpoint}: no such file")
    return load_checkpoint(checkpoint)


def check_args_before_work(args: argparse.Namespace) -> Any:
    """Every setting that does not need the data, checked before anything is read, trained,
    started or written: the pruning settings and a ``--checkpoint`` (returned, to be reused)."""
    loaded = checkpoint_before_work(args)
    prune_config_from_args(*without_data(args))
    return loaded


def prune_config_from_args(args: argparse.Namespace, dataset: Any) -> PruneConfig:
    defaults = PruneConfig.curvature_defaults(dataset.name)

    def given_or(value: Any, key: str) -> Any:
        return value if value is not None else defaults.get(key, getattr(PruneConfig, key, None))

    return PruneConfig(
        beta=args.beta,
        step_ratio=args.step_ratio,
        final_ratio=args.final_ratio,
        estimator=given_or(args.estimator, "estimator"),
        mc_samples=args.mc_samples,
        probes=args.probes,
        batch_size=given_or(args.curvature_batch_size, "batch_size"),
        num_batches=given_or(args.curvature_batches, "num_batches"),
        max_sub_batch=args.max_sub_batch,
        seed=args.prune_seed,
        privileged=_privileged(args.privileged, dataset.group_names),
        stop_eopp1=args.stop_eopp1,
        adv_weight=args.adv_weight,
        adv_alpha=args.adv_alpha,
    )


def add_ray_arguments(parser: argparse.ArgumentParser, *, sweep: bool) -> None:
    """Ray flags: the cluster, and the curvature workers (per pruning run, or per sweep trial)."""
    r = parser.add_argument_group("Ray and curvature workers")
    r.add_argument(
        "--address", default=None, help="Ray cluster address (default: $RAY_ADDRESS, else a local Ray started here)"
    )
    if sweep:
        c = SweepConfig(name="defaults")
        r.add_argument("--concurrency", type=int, default=c.concurrency, help="trials at a time")
        r.add_argument(
            "--workers-per-trial",
            type=int,
            default=c.workers_per_trial,
            help="Ray curvature workers per trial, in the trial's placement group (0: in the trial)",
        )
        r.add_argument(
            "--gpus-per-trial",
            type=float,
            default=c.gpus_per_trial,
            help="GPUs per trial when it computes its own curvature (--workers-per-trial 0); fractions such as "
            "0.25 put four trials on one GPU (default 0: the trials run on CPUs)",
        )
    else:
        r.add_argument(
            "--workers", type=int, default=0, help="Ray curvature workers per pruning run (0: compute in this process)"
        )
    r.add_argument("--cpus-per-worker", type=float, default=1, help="CPUs (and torch threads) per curvature worker")
    r.add_argument(
        "--gpus-per-worker",
        type=float,
        default=None,
        help="GPUs per curvature worker (default: 1 when the Ray cluster has GPUs, else 0)",
    )


def curvature_backend_from_args(args: argparse.Namespace, model_config: Any, config: PruneConfig) -> Any:
    """A :class:`CurvaturePool` when ``--workers`` > 0, else None (single-process)."""
    if not args.workers:
        return None
    from ..curvature.distributed import CurvaturePool
    from ..curvature.hessian import CurvatureConfig

    return CurvaturePool(
        model_config,
        CurvatureConfig.of(config),
        num_workers=args.workers,
        cpus_per_worker=args.cpus_per_worker,
        gpus_per_worker=args.gpus_per_worker,
        address=args.address,
    )
