"""What a sweep trial imports, imported ahead by the workers of the private local Ray a sweep starts.

Ray starts one idle worker process per CPU as soon as it is up and has each import the modules
named in its ``preload_python_modules`` setting: this one, while the driver loads the data and
runs the baselines (mostly one core's work). Ray Tune's trial actors then take those workers
(:func:`~fairprune_core.sweep.tune.run_trials` starts them without a runtime environment, which
a prestarted worker could not switch to), so a slot's first trial does not import torch, Ray
Tune, MLflow and its SQL store itself (~5 s on 2 cores). The trial logs when this began and
ended (``timing/worker_started_unix``, ``timing/worker_preloaded_unix``):
``benchmarks/sweep_overhead.py`` counts the slots whose worker was started before the trials.
"""

from __future__ import annotations

import contextlib
import importlib
import time

STARTED_UNIX = time.time()  # the worker process is just up: Ray preloads first

MODULES = (
    "torch",
    "mlflow",
    "mlflow.pytorch",
    "mlflow.pyfunc",  # what logging the first model imports
    "mlflow.store.tracking.sqlalchemy_store",
    "safetensors.torch",
    "fairprune_core.export",
    "fairprune_core.sweep.tune",
)
OPTIONAL = ("git",)  # GitPython: MLflow reads a run's source commit with it when it is installed

for _name in MODULES:
    importlib.import_module(_name)
for _name in OPTIONAL:
    with contextlib.suppress(ImportError):
        importlib.import_module(_name)

PRELOADED_UNIX = time.time()
