"""The sweep's flags: search, MLflow and storage, a ``--config`` file, and what the user gave."""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

from ..config import PREPARE, SAMPLERS, SearchSpace, SweepConfig, default_baselines, sweep_name
from ..sweep.study import grid_size
from .common import (
    TRAINED_METHODS,
    add_chance_argument,
    check_trainable,
    checkpoint_before_work,
    prune_config_from_args,
    without_data,
)

__all__ = [
    "add_sweep_arguments",
    "apply_config_file",
    "apply_smoke",
    "check_sweep_args",
    "explicit_dests",
    "name_argument",
    "sweep_config_from_args",
]


def add_sweep_arguments(parser: argparse.ArgumentParser) -> None:
    c = SweepConfig(name="defaults")
    g = parser.add_argument_group("search")
    g.add_argument(
        "--config",
        type=Path,
        default=None,
        help="JSON or YAML file of defaults for any flag (keys are flag names, e.g. trials: 40)",
    )
    g.add_argument(
        "--trials", type=int, default=c.num_trials, help="total trials in the study, the paper's two included"
    )
    g.add_argument(
        "--sampler",
        choices=SAMPLERS,
        default=c.sampler,
        help="Optuna sampler (default: gp, the best hypervolume in benchmarks/sampler_hypervolume.py); grid: the "
        "paper's protocol, beta 0.1/0.2/0.33/0.5 x final 0.2/0.35/0.5/0.65 x step 0.05/0.1",
    )
    g.add_argument("--search-seed", type=int, default=c.seed, help="sampler seed")
    g.add_argument(
        "--prepare-suggestions",
        choices=PREPARE,
        default=c.prepare_suggestions,
        help="ask the sampler for the next trial while trials run, so a freed slot does not wait for it "
        "(auto, the default: when the last suggestion took over 2%% of a trial's mean time)",
    )
    g.add_argument(
        "--safetensors-only",
        action="store_true",
        help="log each model once, as safetensors (half the bytes, nothing to unpickle; load it with "
        "fairprune_core.tracking.load_pruned_model), without MLflow's PyTorch flavour (mlflow.pytorch.load_model)",
    )
    add_chance_argument(g, "sweep")
    g.add_argument("--beta-range", type=float, nargs=2, default=c.space.beta, metavar=("LOW", "HIGH"))
    g.add_argument(
        "--step-range",
        type=float,
        nargs=2,
        default=c.space.step_ratio,
        metavar=("LOW", "HIGH"),
        help="per-step prune fraction range",
    )
    g.add_argument(
        "--final-range",
        type=float,
        nargs=2,
        default=c.space.final_ratio,
        metavar=("LOW", "HIGH"),
        help="final pruned fraction range (a step above the final ratio runs with step = final)",
    )
    g.add_argument(
        "--max-steps",
        type=int,
        default=c.space.max_steps,
        help="at most this many pruning steps per trial: a smaller suggested step runs as final / max-steps "
        "(default %(default)s, enough for the paper's grid; 0: no cap)",
    )
    g.add_argument(
        "--no-paper-settings",
        action="store_true",
        help="do not evaluate the paper's settings (beta .33/step .05/final .35; .2/.1/.5) first",
    )
    g.add_argument(
        "--f1-floor", type=float, default=c.f1_floor, help="feasible trials keep val F1 >= this x the vanilla val F1"
    )
    g.add_argument(
        "--no-abort-infeasible",
        action="store_true",
        help="prune to the final ratio even after val F1 fell below the floor",
    )
    g.add_argument("--obd-step", type=float, default=c.obd_step, help="OBD baseline: per-step fraction")
    g.add_argument("--obd-final", type=float, default=c.obd_final, help="OBD baseline: final ratio")
    g.add_argument(
        "--baselines",
        default=None,
        help="comma-separated baselines logged before the trials, vanilla first (default: "
        "vanilla,obd,advconf,advrev,domainindep on real data; vanilla,obd on the synthetic demo)",
    )
    g.add_argument(
        "--max-retries",
        type=int,
        default=c.trial_retries,
        help="run a trial again when its worker dies or its tracking store fails, up to this many times "
        "(default %(default)s; may change on resume)",
    )
    g.add_argument("--bootstrap", type=int, default=c.n_boot, help="bootstrap resamples for the intervals")
    m = parser.add_argument_group("MLflow and storage")
    m.add_argument(
        "--tracking-uri",
        default=None,
        help="MLflow tracking URI (default: MLflow's own, sqlite:///<cwd>/mlflow.db); on a cluster, "
        "the head's server, e.g. http://<head-ip>:5000",
    )
    m.add_argument("--experiment", default=None, help="MLflow experiment (default: fairprune-<dataset>)")
    m.add_argument(
        "--name",
        type=name_argument,
        default=None,
        help="sweep name, a folder in --storage (default: <dataset>-<date>-<time>)",
    )
    m.add_argument(
        "--storage", type=Path, default=c.storage, help="where sweeps keep their Optuna study and Tune results"
    )
    m.add_argument(
        "--resume", action="store_true", help="continue the sweep --name (default: the latest one in --storage)"
    )


def name_argument(value: str) -> str:
    """argparse type of ``--name``: a sweep name, never a path (see :func:`~fairprune_core.config.sweep_name`)."""
    try:
        return sweep_name(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _config_file_values(parser: argparse.ArgumentParser, argv: list[str] | None) -> dict[str, Any]:
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config", type=Path, default=None)
    known, _ = pre.parse_known_args(argv)
    if known.config is None:
        return {}
    if not known.config.is_file():
        raise SystemExit(f"--config: file not found: {known.config}")
    text = known.config.read_text()
    try:
        if known.config.suffix in (".yaml", ".yml"):
            import yaml

            values = yaml.safe_load(text) or {}
        else:
            import json

            values = json.loads(text)
    except Exception as exc:  # yaml.YAMLError, json.JSONDecodeError: the file's own message says where
        where = getattr(exc, "problem_mark", None) or getattr(exc, "lineno", None)
        line = f" at line {where.line + 1}" if hasattr(where, "line") else (f" at line {where}" if where else "")
        problem = getattr(exc, "problem", None) or getattr(exc, "msg", None) or str(exc).splitlines()[0]
        raise SystemExit(
            f"--config {known.config}: not valid {known.config.suffix.lstrip('.').upper()}{line}: {problem}"
        ) from exc
    if not isinstance(values, dict):
        raise SystemExit(
            f"--config {known.config}: expected a mapping of flag names to values, got {type(values).__name__}"
        )
    actions = {a.dest: a for a in parser._actions if a.option_strings}
    unknown = sorted(str(k) for k in values if str(k).replace("-", "_") not in actions or k in ("help", "config"))
    if unknown:
        raise SystemExit(f"--config {known.config}: unknown keys {unknown}; use flag names such as trials, sampler")
    out = {}
    for key, value in values.items():
        dest = key.replace("-", "_")
        try:
            out[dest] = _file_value(actions[dest], value)
        except ValueError as exc:
            flag = actions[dest].option_strings[-1]
            raise SystemExit(f"--config {known.config}: {key}: {exc} (as the flag {flag} takes it)") from None
    return out


def _file_value(action: argparse.Action, value: Any) -> Any:
    """A ``--config`` value checked and converted as its flag's own argument would be: the same
    type (an integer stays an integer), the same number of values, the same choices."""
    if action.nargs == 0:  # a switch (store_true)
        if not isinstance(value, bool):
            raise ValueError(f"must be true or false, got {value!r}")
        return value
    if value is None:
        return None
    count = action.nargs if isinstance(action.nargs, int) else None
    if count is not None or action.nargs in ("+", "*"):
        if not isinstance(value, list):
            raise ValueError(f"must be a list{f' of {count} values' if count else ''}, got {value!r}")
        if count is not None and len(value) != count:
            raise ValueError(f"must be a list of {count} values, got {len(value)}: {value!r}")
        return [_file_scalar(action, v) for v in value]
    return _file_scalar(action, value)


def _file_scalar(action: argparse.Action, value: Any) -> Any:
    if isinstance(value, list | dict | bool):
        raise ValueError(f"must be a single {getattr(action.type, '__name__', 'value')}, got {value!r}")
    if action.type is int and not (
        isinstance(value, int) or (isinstance(value, str) and value.strip().lstrip("-").isdigit())
    ):
        raise ValueError(f"must be an integer, got {value!r}")
    convert = action.type or str
    try:
        converted = convert(value if action.type in (int, float) and not isinstance(value, str) else str(value))
    except (TypeError, ValueError, argparse.ArgumentTypeError) as exc:
        raise ValueError(f"invalid value {value!r}: {exc}") from None
    if isinstance(converted, float) and not math.isfinite(converted):
        raise ValueError(f"must be a finite number, got {value!r}")
    if action.choices is not None and converted not in action.choices:
        raise ValueError(f"must be one of {', '.join(map(str, action.choices))}, got {value!r}")
    return converted


def apply_config_file(parser: argparse.ArgumentParser, argv: list[str] | None) -> set[str]:
    """Load ``--config FILE`` (JSON/YAML) as parser defaults, so explicit flags still win.

    Returns the destinations the file set (they count as given by the user)."""
    values = _config_file_values(parser, argv)
    parser.set_defaults(**values)
    return set(values)


def explicit_dests(parser: argparse.ArgumentParser, argv: list[str] | None) -> set[str]:
    """The destinations the command line sets explicitly, in any spelling (``--trials 40``,
    ``--trials=40``), by parsing it again with every default suppressed."""
    quiet = argparse.ArgumentParser(add_help=False, allow_abbrev=parser.allow_abbrev)
    for action in parser._actions:
        if action.option_strings and not isinstance(action, argparse._HelpAction):
            kwargs: dict[str, Any] = {"dest": action.dest, "default": argparse.SUPPRESS}
            if action.nargs == 0:
                kwargs["action"] = "store_const"
                kwargs["const"] = action.const
            else:
                kwargs["nargs"] = action.nargs
            quiet.add_argument(*action.option_strings, **kwargs)
    known, _ = quiet.parse_known_args(argv)
    return set(vars(known))


def apply_smoke(parser: argparse.ArgumentParser, args: argparse.Namespace, values: dict[str, Any]) -> None:
    """``--smoke-test``: these values for every flag the user left at its default (``width`` only
    for the built-in VGG-11)."""
    builtin = getattr(args, "model", None) in (None, "fairprune_vgg11")
    for key, value in values.items():
        if key == "width" and not builtin:
            continue
        if getattr(args, key) in (None, parser.get_default(key)):
            setattr(args, key, value)


def check_sweep_args(args: argparse.Namespace) -> Any:
    """A new sweep's settings, all checked before any data, model, Ray, MLflow or folder exists;
    returns the ``--checkpoint`` read (None when not given), to be reused."""
    loaded = checkpoint_before_work(args)
    if args.baselines:
        check_trainable(args, args.baselines.split(","))
    sweep_config_from_args(*without_data(args), "check")
    return loaded


def _default_baselines(args: argparse.Namespace, dataset_name: str) -> tuple[str, ...]:
    """The dataset's baselines; with ``--weights``, those that train no model of their own."""
    names = default_baselines(dataset_name)
    if getattr(args, "weights", None) is None:
        return names
    return tuple(n for n in names if n not in TRAINED_METHODS)


def sweep_config_from_args(args: argparse.Namespace, dataset: Any, name: str) -> SweepConfig:
    return SweepConfig(
        name=name,
        storage=args.storage,
        num_trials=args.trials if args.trials is not None else (grid_size() if args.sampler == "grid" else 30),
        sampler=args.sampler,
        seed=args.search_seed,
        space=SearchSpace(
            beta=tuple(args.beta_range),
            step_ratio=tuple(args.step_range),
            final_ratio=tuple(args.final_range),
            max_steps=args.max_steps or None,
        ),
        paper_settings_first=not args.no_paper_settings,
        prune=prune_config_from_args(args, dataset),
        f1_floor=args.f1_floor,
        abort_infeasible=not args.no_abort_infeasible,
        obd_step=args.obd_step,
        obd_final=args.obd_final,
        baselines=tuple(args.baselines.split(",")) if args.baselines else _default_baselines(args, dataset.name),
        concurrency=args.concurrency,
        workers_per_trial=args.workers_per_trial,
        cpus_per_worker=args.cpus_per_worker,
        gpus_per_worker=args.gpus_per_worker,
        gpus_per_trial=args.gpus_per_trial,
        device=args.device,
        n_boot=args.bootstrap,
        tracking_uri=args.tracking_uri,
        experiment=args.experiment,
        address=args.address,
        prepare_suggestions=args.prepare_suggestions,
        safetensors_only=args.safetensors_only,
        allow_chance_model=args.allow_chance_model,
        trial_retries=args.max_retries,
    )
