"""Command-line flags of the entry points in ``sweeps/``, each defined once, mapped onto configs.

* :mod:`.common` - data, model/pre-training, pruning, Ray and checkpoint flags, and the objects they describe
* :mod:`.sweep` - the sweep's flags, ``--config`` files, which flags the user gave, ``--smoke-test``
* :mod:`.errors` - :func:`run_main`, :class:`Interrupted`

Importing this package imports only the light :mod:`fairprune_core.config` module, so every entry
point answers ``--help`` at once.
"""

from __future__ import annotations

from ..config import PRESETS
from .common import (
    add_chance_argument,
    add_checkpoint_argument,
    add_data_arguments,
    add_pretrain_arguments,
    add_prune_arguments,
    add_ray_arguments,
    check_args_before_work,
    check_model_flags,
    check_trainable,
    checkpoint_from_args,
    curvature_backend_from_args,
    dataset_from_args,
    model_and_train_config,
    preset_configs,
    prune_config_from_args,
)
from .errors import Interrupted, run_main
from .sweep import (
    add_sweep_arguments,
    apply_config_file,
    apply_smoke,
    check_sweep_args,
    explicit_dests,
    name_argument,
    sweep_config_from_args,
)

__all__ = [
    "PRESETS",
    "Interrupted",
    "add_chance_argument",
    "add_checkpoint_argument",
    "add_data_arguments",
    "add_pretrain_arguments",
    "add_prune_arguments",
    "add_ray_arguments",
    "add_sweep_arguments",
    "apply_config_file",
    "apply_smoke",
    "check_args_before_work",
    "check_model_flags",
    "check_sweep_args",
    "check_trainable",
    "checkpoint_from_args",
    "curvature_backend_from_args",
    "dataset_from_args",
    "explicit_dests",
    "model_and_train_config",
    "name_argument",
    "preset_configs",
    "prune_config_from_args",
    "run_main",
    "sweep_config_from_args",
]
