"""Everything FairPrune asks of MLflow, in one module (an MLflow upgrade touches only this file)."""

from __future__ import annotations

import json
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch

__all__ = [
    "TrackingError",
    "check_tracking_uri",
    "experiment_id",
    "finished_child_runs",
    "log_dict",
    "log_pruned_model",
    "mark_unfinished_children",
    "resolve_tracking_uri",
    "run",
    "set_pareto_tags",
]

_REMOTE_SCHEMES = ("http", "https", "databricks", "postgresql", "mysql", "mssql")


class TrackingError(RuntimeError):
    """The MLflow tracking store cannot be used as configured."""


def resolve_tracking_uri(uri: str | None) -> str:
    """An absolute tracking URI: ``uri``, else MLflow's own default (``sqlite:///<cwd>/mlflow.db``).

    Trials run in other working directories, so relative defaults are resolved here, once.
    """
    import mlflow

    if uri:
        parsed = urlparse(uri)
        if parsed.scheme in ("", "file"):
            return Path(parsed.path if parsed.scheme else uri).resolve().as_uri()
        if parsed.scheme == "sqlite" and not uri.startswith("sqlite:////"):
            return f"sqlite:///{Path(uri[len('sqlite:///') :]).resolve()}"
        return uri
    default = mlflow.get_tracking_uri()  # honours $MLFLOW_TRACKING_URI
    return resolve_tracking_uri(default) if default else default


def is_remote(uri: str) -> bool:
    return urlparse(uri).scheme in _REMOTE_SCHEMES


def check_tracking_uri(uri: str, *, multi_node: bool, timeout_s: float = 5.0) -> None:
    """Fail early and clearly: a local store on a multi-node cluster, or an unreachable server."""
    if multi_node and not is_remote(uri):
        raise TrackingError(
            f"the sweep runs on a multi-node Ray cluster, but the MLflow tracking URI {uri!r} is a local "
            f"path that the other nodes cannot see; pass the cluster's tracking server, e.g. "
            f"--tracking-uri http://<head-private-ip>:5000"
        )
    if urlparse(uri).scheme in ("http", "https"):
        url = uri.rstrip("/") + "/health"
        try:
            with urllib.request.urlopen(url, timeout=timeout_s) as resp:
                if resp.status != 200:
                    raise TrackingError(f"MLflow tracking server {uri} answered {resp.status} on /health")
        except (urllib.error.URLError, OSError) as exc:
            raise TrackingError(
                f"cannot reach the MLflow tracking server at {uri} ({exc}); start it "
                f"(mlflow server --host 127.0.0.1 --port 5000) or pass another --tracking-uri"
            ) from exc


def experiment_id(uri: str, name: str) -> str:
    import mlflow

    mlflow.set_tracking_uri(uri)
    exp = mlflow.get_experiment_by_name(name)
    return exp.experiment_id if exp is not None else mlflow.create_experiment(name)


@contextmanager
def run(
    uri: str,
    experiment: str,
    *,
    run_name: str | None = None,
    run_id: str | None = None,
    parent_run_id: str | None = None,
    tags: Mapping[str, str] | None = None,
) -> Iterator[Any]:
    """An MLflow run (new, or ``run_id`` resumed), nested under ``parent_run_id`` when given."""
    import mlflow

    mlflow.set_tracking_uri(uri)
    with mlflow.start_run(
        run_id=run_id,
        experiment_id=None if run_id else experiment,
        run_name=run_name,
        parent_run_id=parent_run_id,
        nested=parent_run_id is not None,
        tags=dict(tags or {}),
    ) as active:
        yield active


def log_dict(obj: Any, artifact_file: str) -> None:
    import mlflow

    mlflow.log_dict(json.loads(json.dumps(obj, default=str)), artifact_file)


def log_pruned_model(
    model: torch.nn.Module,
    masks: Mapping[str, torch.Tensor] | None,
    *,
    name: str = "model",
    tags: Mapping[str, str] | None = None,
) -> Any:
    """Log a (pruned) model to the active run as an MLflow PyTorch model; returns its ModelInfo.

    Pruned models are stored sparsely (:mod:`fairprune_core.export`); ``mlflow.pytorch.load_model``
    on the returned ``model_uri`` gives a module that predicts exactly like ``model``.
    """
    import mlflow

    from .export import to_pruned_module

    module = to_pruned_module(model, masks) if masks else to_pruned_module(model, {})
    module.eval()
    return mlflow.pytorch.log_model(
        module,
        name=name,
        serialization_format="pickle",
        pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", "fairprune"],
        tags=dict(tags or {}),
    )


def logged_model_bytes(model_id: str) -> int:
    """Total size of a logged model's artifacts (all files, recursively)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient()

    def walk(path: str | None) -> int:
        total = 0
        for f in client.list_logged_model_artifacts(model_id, path=path):
            total += walk(f.path) if f.is_dir else int(f.file_size or 0)
        return total

    return walk(None)


def log_file(path: str | Path, artifact_path: str | None = None) -> None:
    import mlflow

    mlflow.log_artifact(str(path), artifact_path=artifact_path)


def log_array(array: Any, artifact_file: str) -> None:
    """Log a numpy array as a ``.npy`` artifact."""
    import mlflow
    import numpy as np

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, os.path.basename(artifact_file))
        np.save(path, array)
        mlflow.log_artifact(path, artifact_path=os.path.dirname(artifact_file) or None)


def log_frame(frame: Any, stem: str) -> None:
    """Log a pandas DataFrame as Parquet and CSV artifacts."""
    import mlflow

    with tempfile.TemporaryDirectory() as tmp:
        frame.to_parquet(os.path.join(tmp, f"{stem}.parquet"), index=False)
        frame.to_csv(os.path.join(tmp, f"{stem}.csv"), index=False)
        mlflow.log_artifact(os.path.join(tmp, f"{stem}.parquet"))
        mlflow.log_artifact(os.path.join(tmp, f"{stem}.csv"))


def finished_child_runs(uri: str, experiment: str, sweep_id: str, method: str | None = None) -> Any:
    """FINISHED child runs of one sweep, as a pandas DataFrame (MLflow's search_runs)."""
    import mlflow

    mlflow.set_tracking_uri(uri)
    filt = f"tags.sweep_id = '{sweep_id}' and attributes.status = 'FINISHED'"
    if method:
        filt += f" and tags.method = '{method}'"
    return mlflow.search_runs(experiment_ids=[experiment], filter_string=filt, max_results=50000)


def mark_unfinished_children(uri: str, experiment: str, sweep_id: str, completed: set[str]) -> tuple[int, int]:
    """Close this sweep's runs an interrupted sweep left RUNNING.

    A run whose trial the study recorded as complete (``completed`` run ids) had logged
    everything: it is marked FINISHED. Any other is marked KILLED (its trial runs again).
    Returns (finished, killed).
    """
    import mlflow
    from mlflow.tracking import MlflowClient

    mlflow.set_tracking_uri(uri)
    runs = mlflow.search_runs(
        experiment_ids=[experiment],
        filter_string=f"tags.sweep_id = '{sweep_id}' and attributes.status = 'RUNNING' and tags.method != 'sweep'",
        max_results=50000,
    )
    client = MlflowClient(uri)
    finished = killed = 0
    for run_id in runs.get("run_id", []):
        if run_id in completed:
            client.set_terminated(run_id, status="FINISHED")
            finished += 1
        else:
            client.set_terminated(run_id, status="KILLED")
            killed += 1
    return finished, killed


def set_pareto_tags(uri: str, flags: Mapping[str, bool], model_ids: Mapping[str, str | None]) -> None:
    """Tag runs (and their logged models) ``pareto_optimal`` = "true"/"false"."""
    import mlflow
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    mlflow.set_tracking_uri(uri)
    for run_id, flag in flags.items():
        value = "true" if flag else "false"
        client.set_tag(run_id, "pareto_optimal", value)
        model_id = model_ids.get(run_id)
        if model_id:
            mlflow.set_logged_model_tags(model_id, {"pareto_optimal": value})
