"""Everything FairPrune asks of MLflow, in one module (an MLflow upgrade touches only this file).

:class:`MlflowTracker` implements :class:`~fairprune_core.tracking.base.Tracker`; the functions
around it resolve and check tracking URIs and log sparse pruned models. MLflow is imported
inside functions only.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
import re
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch

from ..once import warn_once
from .base import LoggedModel, TrackingError

__all__ = [
    "MlflowTracker",
    "check_tracking_uri",
    "experiment_id",
    "is_remote",
    "load_pruned_model",
    "log_pruned_model",
    "logged_model_bytes",
    "resolve_tracking_uri",
    "store_failure",
]

_REMOTE_SCHEMES = ("http", "https", "databricks", "postgresql", "mysql", "mssql")


# what a store failure says where it is one (sqlite, the OS, a server away): named in one line
KNOWN_STORE_FAILURES = (
    "database or disk is full",
    "No space left on device",
    "Read-only file system",
    "Connection refused",
    "Max retries exceeded",
)


def store_failure(exc: BaseException) -> str | None:
    """Why the tracking store failed (``database or disk is full``, a refused connection, ...), or
    None when ``exc`` is not a failure of the store (a bug of ours keeps its traceback)."""
    from mlflow.exceptions import MlflowException

    chain: list[BaseException] = []
    while exc is not None and len(chain) < 10:
        chain.append(exc)
        exc = exc.__cause__ or exc.__context__
    if not any(isinstance(e, MlflowException | OSError) for e in chain):
        return None
    text = " ".join(str(e) for e in chain)
    for reason in KNOWN_STORE_FAILURES:
        if reason.lower() in text.lower():
            return reason
    first = str(chain[0]).strip().splitlines()
    return first[0][:160] if first else type(chain[0]).__name__


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


# where MLflow can keep runs ("" is a plain folder path); a database URI may name its driver ("postgresql+psycopg2")
TRACKING_SCHEMES = frozenset({"", "file", "sqlite", "http", "https", "postgresql", "mysql", "mssql", "databricks"})


def check_tracking_uri(uri: str, *, multi_node: bool, timeout_s: float = 5.0) -> None:
    """Fail early and clearly: a scheme MLflow cannot track to, a local store on a multi-node
    cluster, or an unreachable server."""
    scheme = urlparse(uri).scheme.split("+")[0]
    if scheme not in TRACKING_SCHEMES:
        raise TrackingError(
            f"--tracking-uri {uri!r}: MLflow cannot track to a {scheme!r} URI; use a tracking server "
            f"(http://host:5000), a database (sqlite:///path/mlflow.db, postgresql://...) or a folder (file:///path)"
        )
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
        _check_speaks_mlflow(uri, timeout_s)


def _check_speaks_mlflow(uri: str, timeout_s: float) -> None:
    """Something answers on ``uri``: is it MLflow's REST API (JSON), or another web server (a page)?"""
    url = uri.rstrip("/") + "/api/2.0/mlflow/experiments/search?max_results=1"
    what = ""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:
            body = resp.read(65536)
            try:
                ok = isinstance(json.loads(body or b"{}"), dict)
            except ValueError:
                ok = False
            what = resp.headers.get("Content-Type", "no content type")
    except urllib.error.HTTPError as exc:
        if exc.code in (401, 403):
            return  # an MLflow server behind authentication: the client's credentials decide
        ok, what = False, f"status {exc.code}"
    except (urllib.error.URLError, OSError) as exc:
        raise TrackingError(
            f"the tracking server at {uri} stopped answering ({exc}); pass another --tracking-uri"
        ) from exc
    if not ok:
        raise TrackingError(
            f"{uri} answers, but not as an MLflow tracking server (its REST API answered {what}); check the host "
            f"and port (mlflow server --host 127.0.0.1 --port 5000) or pass another --tracking-uri"
        )


def experiment_id(uri: str, name: str) -> str:
    import mlflow

    mlflow.set_tracking_uri(uri)
    exp = mlflow.get_experiment_by_name(name)
    return exp.experiment_id if exp is not None else mlflow.create_experiment(name)


@contextmanager
def _no_progress_bar() -> Iterator[None]:
    """Without MLflow's "Downloading artifacts" bar (logging a model reads one small file back;
    loading one downloads a few), unless the user set ``MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR``."""
    key = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
    if key in os.environ:
        yield
        return
    os.environ[key] = "false"
    try:
        yield
    finally:
        os.environ.pop(key, None)


def log_pruned_model(
    model: torch.nn.Module,
    masks: Mapping[str, torch.Tensor] | None,
    *,
    name: str = "model",
    tags: Mapping[str, str] | None = None,
    step: int = 0,
    pickle_flavour: bool = True,
) -> Any:
    """Log a (pruned) model to the active run as an MLflow logged model named ``name``; returns
    what has its ``model_id`` and ``model_uri``.

    Pruned models are stored sparsely (:mod:`fairprune_core.export`) as
    ``extra_files/pruned_model.safetensors`` (:func:`load_pruned_model`, nothing unpickled) and,
    with ``pickle_flavour``, again as the PyTorch flavour (``mlflow.pytorch.load_model`` gives a
    module that predicts exactly like ``model``; it unpickles). ``step`` is the pruning step the
    model is at: MLflow links the run's metrics at that step to the model (one history query per
    metric: log the final metrics after the model, with its ``model_id``, to keep that cheap).
    """
    import mlflow

    from ..export import SAFETENSORS_FILE, save_safetensors, to_pruned_module

    module = to_pruned_module(copy.deepcopy(model).cpu(), masks or {})  # loadable on a machine without a GPU
    module.eval()
    name = re.sub(r"[/:.%\"']", "_", name) or "model"  # characters MLflow refuses in a model's name
    if not pickle_flavour:
        return _log_safetensors_only(module, name=name, tags=dict(tags or {}), step=step)
    # its pickle caution once per process, not once per model (--safetensors-only avoids pickle)
    warn_once(logging.getLogger("mlflow.pytorch"))
    with tempfile.TemporaryDirectory() as tmp, _no_progress_bar():
        weights = save_safetensors(module, module.masks, Path(tmp) / SAFETENSORS_FILE)
        return mlflow.pytorch.log_model(
            module,
            name=name,
            serialization_format="pickle",
            pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", "fairprune"],
            extra_files=[str(weights)],
            tags=dict(tags or {}),
            step=step,
        )


SAFETENSORS_ONLY = "fairprune-safetensors"  # the model_type of a model logged without the PyTorch flavour


def _log_safetensors_only(module: Any, *, name: str, tags: dict[str, str], step: int) -> Any:
    """The sparse safetensors file as an MLflow logged model of the active run, without a flavour:
    an ``MLmodel`` that says how to load it, and the run's metrics at ``step`` linked as
    ``mlflow.pytorch.log_model`` links them."""
    import mlflow
    from mlflow.models import Model

    from ..export import SAFETENSORS_FILE, save_safetensors

    client = mlflow.MlflowClient()
    active = mlflow.active_run()
    run_id = active.info.run_id if active is not None else None  # as MLflow's own: a model may have no run
    logged = mlflow.initialize_logged_model(name=name, source_run_id=run_id, tags=tags, model_type=SAFETENSORS_ONLY)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / "extra_files").mkdir()
            save_safetensors(module, module.masks, Path(tmp) / "extra_files" / SAFETENSORS_FILE)
            Model(
                run_id=run_id,
                model_uuid=logged.model_id,
                metadata={"load_with": "fairprune_core.tracking.load_pruned_model (no PyTorch flavour)"},
            ).save(str(Path(tmp) / "MLmodel"))
            client.log_model_artifacts(logged.model_id, tmp)
        if run_id is not None:
            _link_run(client, run_id, logged.model_id, step)
    except BaseException:
        mlflow.finalize_logged_model(logged.model_id, "FAILED")
        raise
    return mlflow.finalize_logged_model(logged.model_id, "READY")


def _link_run(client: Any, run_id: str, model_id: str, step: int) -> None:
    """The model as an output of the run at ``step``, and the run's metrics at that step linked to
    it (what ``mlflow.pytorch.log_model`` does for its models)."""
    from mlflow.entities import LoggedModelOutput, Metric

    client.log_outputs(run_id, [LoggedModelOutput(model_id, step=step)])
    at_step = [
        Metric(m.key, m.value, m.timestamp, m.step, model_id=model_id, run_id=run_id)
        for key in client.get_run(run_id).data.metrics
        for m in client.get_metric_history(run_id, key)
        if m.step == step and m.model_id is None
    ]
    if at_step:
        client.log_batch(run_id, metrics=at_step)


def load_pruned_model(model_uri: str, tracking_uri: str | None = None) -> Any:
    """A logged model (``models:/m-...``, ``models:/fairprune-<dataset>@best-f1``, ...) from its
    safetensors file: nothing is unpickled, so it loads with ``MLFLOW_ALLOW_PICKLE_DESERIALIZATION``
    false. Returns the pruned model, an instance of its architecture's class (``.masks``: its pruning masks)."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from ..export import SAFETENSORS_FILE, load_safetensors

    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
    # the one file, not the whole model (its pickled copy is as large and never read here)
    with tempfile.TemporaryDirectory() as tmp, _no_progress_bar():  # a report loads several: no bar each
        try:
            path = mlflow.artifacts.download_artifacts(artifact_uri=_weights_uri(model_uri), dst_path=tmp)
        except (MlflowException, OSError) as exc:
            if _model_is_missing(model_uri):
                raise TrackingError(
                    f"no model {model_uri} in the tracking store {mlflow.get_tracking_uri()}: it was deleted, or its "
                    f"name, version or alias is wrong (the registry lists them: MlflowClient().search_model_versions)"
                ) from None
            raise TrackingError(
                f"{model_uri} has no extra_files/{SAFETENSORS_FILE} (logged by an older FairPrune?); load it "
                f"with mlflow.pytorch.load_model, which unpickles ({exc})"
            ) from exc
        return load_safetensors(Path(path))


def _model_is_missing(model_uri: str) -> bool:
    """Whether a failed download means the model itself is gone (not just its safetensors file)."""
    import mlflow
    from mlflow.exceptions import MlflowException

    inside = model_uri[len("models:/") :].strip("/") if model_uri.startswith("models:/") else ""
    try:
        if inside.startswith("m-") and "/" not in inside and "@" not in inside:
            mlflow.get_logged_model(inside)
        elif "@" in inside:
            name, alias = inside.split("@", 1)
            mlflow.MlflowClient().get_model_version_by_alias(name, alias)
        elif "/" in inside:
            name, version = inside.rsplit("/", 1)
            mlflow.MlflowClient().get_model_version(name, version)
        else:
            return False
    except MlflowException:
        return True
    return False


def _weights_uri(model_uri: str) -> str:
    """Where a logged model's safetensors file is: under the model (a registry URI, ``models:/<name>/<version>``
    or ``@alias``, takes the path after it), or, for a logged model's id (``models:/m-...``, which MLflow
    would read as a registered name), under its artifact location."""
    import mlflow

    from ..export import SAFETENSORS_FILE

    tail = f"extra_files/{SAFETENSORS_FILE}"
    inside = model_uri[len("models:/") :].strip("/") if model_uri.startswith("models:/") else ""
    if inside.startswith("m-") and "/" not in inside and "@" not in inside:
        return f"{mlflow.get_logged_model(inside).artifact_location.rstrip('/')}/{tail}"
    return f"{model_uri.rstrip('/')}/{tail}"


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


def _strip_prefixes(runs: Any) -> Any:
    """``search_runs`` columns without MLflow's ``metrics.``/``params.``/``tags.`` prefixes."""
    renamed = {}
    for col in runs.columns:
        for prefix in ("metrics.", "params.", "tags."):
            if col.startswith(prefix):
                name = col[len(prefix) :]
                if name not in renamed.values():  # metrics win over params, params over tags
                    renamed[col] = name
                break
    return runs[["run_id", *renamed]].rename(columns=renamed)


class MlflowTracker:
    """:class:`~fairprune_core.tracking.base.Tracker` on an MLflow tracking store.

    ``uri`` must be absolute (see :func:`resolve_tracking_uri`): trials run in other working
    directories. A run started while another is open in this process is its child; otherwise
    it is a child of ``parent_run_id`` when given (a sweep trial in a Ray worker).
    """

    enabled = True

    def __init__(
        self, uri: str, experiment: str, *, parent_run_id: str | None = None, pickle_models: bool = True
    ) -> None:
        self.uri = uri
        self.experiment_id = experiment
        self.parent_run_id = parent_run_id
        self.pickle_models = pickle_models  # False: models as safetensors only (no PyTorch flavour)

    @classmethod
    def check(cls, uri: str | None) -> None:
        """The checks that need no cluster (scheme, a server's health), before anything starts."""
        check_tracking_uri(resolve_tracking_uri(uri), multi_node=False)

    @classmethod
    def connect(
        cls, uri: str | None, experiment_name: str, *, multi_node: bool = False, pickle_models: bool = True
    ) -> MlflowTracker:
        """Resolve and check ``uri`` (clear errors), then create or find the experiment. A failing SQL
        store is reported once, as the sweep's error line (:func:`store_failure`), not also as
        MLflow's logged traceback of each failed statement."""
        logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)
        uri = resolve_tracking_uri(uri)
        check_tracking_uri(uri, multi_node=multi_node)
        return cls(uri, experiment_id(uri, experiment_name), pickle_models=pickle_models)

    def check_run(self, run_id: str, stored_uri: str) -> None:
        """A resumed sweep's parent run must be in this store: a changed ``--tracking-uri`` may reach the
        same store anew (another path to it, its server), not another store."""
        from mlflow.exceptions import MlflowException

        parsed = urlparse(self.uri)
        if parsed.scheme == "sqlite" and not Path(self.uri[len("sqlite:///") :]).is_file():
            run = None  # not even a database there (and none is created by asking)
        elif parsed.scheme == "file" and not Path(parsed.path).is_dir():
            run = None
        else:
            try:
                run = self._client().get_run(run_id)
            except MlflowException:
                run = None
        if run is None or run.info.experiment_id != self.experiment_id:
            raise TrackingError(
                f"--tracking-uri {self.uri} does not hold this sweep's parent run {run_id} (the sweep logs to "
                f"{stored_uri}); resume against the store that holds it (the same database, or its server), or "
                f"start a new sweep (another --name)"
            )

    def _client(self) -> Any:
        import mlflow
        from mlflow.tracking import MlflowClient

        mlflow.set_tracking_uri(self.uri)
        return MlflowClient(self.uri)

    @contextmanager
    def run(self, name: str, *, tags: Mapping[str, str] | None = None, run_id: str | None = None) -> Iterator[str]:
        import mlflow

        mlflow.set_tracking_uri(self.uri)
        active = mlflow.active_run()
        parent = active.info.run_id if active is not None else self.parent_run_id
        started = mlflow.start_run(
            run_id=run_id,
            experiment_id=None if run_id else self.experiment_id,
            run_name=None if run_id else name,
            parent_run_id=None if run_id else parent,
            nested=parent is not None and not run_id,
            tags=dict(tags or {}),
        )
        try:
            yield started.info.run_id
        except BaseException as exc:
            # Ctrl-C: stopped by the user, not FAILED (MLflow's default). If the store itself failed,
            # ending the run fails too: the error that got here is the one to report (a resumed sweep
            # or a retried trial closes the run later)
            with contextlib.suppress(Exception):
                mlflow.end_run("KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED")
            raise
        mlflow.end_run()

    def log_params(self, params: Mapping[str, Any]) -> None:
        import mlflow

        mlflow.log_params({k: str(v)[:500] for k, v in params.items()})

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None, model_id: str | None = None) -> None:
        import mlflow

        mlflow.log_metrics(dict(metrics), step=step, model_id=model_id or None)

    def log_curves(self, rows: Sequence[tuple[int, Mapping[str, float], float]]) -> None:
        import mlflow
        from mlflow.entities import Metric

        metrics = [Metric(k, float(v), int(ts * 1000), step) for step, values, ts in rows for k, v in values.items()]
        if metrics:
            self._client().log_batch(mlflow.active_run().info.run_id, metrics=metrics)

    def set_tags(self, tags: Mapping[str, str]) -> None:
        import mlflow

        mlflow.set_tags(dict(tags))

    def log_model(
        self, model: Any, masks: Mapping[str, Any] | None, *, name: str, tags: Mapping[str, str], step: int = 0
    ) -> LoggedModel:
        tags = {**tags, "pareto_optimal": "false"}
        info = log_pruned_model(model, masks, name=name, tags=tags, step=step, pickle_flavour=self.pickle_models)
        try:
            size = logged_model_bytes(info.model_id)
        except Exception:  # an artifact store that cannot list sizes: report unknown, do not fail the run
            size = -1
        return LoggedModel(info.model_id, info.model_uri, size)

    def load_model(self, model_uri: str) -> tuple[Any, dict[str, Any] | None]:
        """A logged model and its masks (None when it is dense), from safetensors (no unpickling)."""
        model = load_pruned_model(model_uri, self.uri)
        return model, model.masks or None

    def log_dict(self, obj: Any, artifact_file: str) -> None:
        import mlflow

        mlflow.log_dict(json.loads(json.dumps(obj, default=str)), artifact_file)

    def log_file(self, path: str | Path, artifact_path: str | None = None) -> None:
        import mlflow

        mlflow.log_artifact(str(path), artifact_path=artifact_path)

    def log_array(self, array: Any, artifact_file: str) -> None:
        """Log a numpy array as a ``.npy`` artifact."""
        import numpy as np

        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, os.path.basename(artifact_file))
            np.save(path, array)
            self.log_file(path, os.path.dirname(artifact_file) or None)

    def log_frame(self, frame: Any, stem: str) -> None:
        """Log a pandas DataFrame as Parquet and CSV artifacts."""
        with tempfile.TemporaryDirectory() as tmp:
            frame.to_parquet(os.path.join(tmp, f"{stem}.parquet"), index=False)
            frame.to_csv(os.path.join(tmp, f"{stem}.csv"), index=False)
            self.log_file(os.path.join(tmp, f"{stem}.parquet"))
            self.log_file(os.path.join(tmp, f"{stem}.csv"))

    def _search(self, filter_string: str) -> Any:
        import mlflow

        mlflow.set_tracking_uri(self.uri)
        return mlflow.search_runs(experiment_ids=[self.experiment_id], filter_string=filter_string, max_results=50000)

    def finished_runs(self, sweep_id: str, method: str | None = None) -> Any:
        """FINISHED child runs of one sweep: a DataFrame with ``run_id`` and one column per
        metric, param and tag (plain names)."""
        filt = f"tags.sweep_id = '{sweep_id}' and attributes.status = 'FINISHED'"
        if method:
            filt += f" and tags.method = '{method}'"
        runs = self._search(filt)
        return _strip_prefixes(runs) if not runs.empty else runs

    def completed_trials(self, sweep_id: str, numbers: set[int]) -> dict[int, dict[str, Any]]:
        """Trials among ``numbers`` whose run recorded its final objectives and tags (RUNNING or
        FINISHED): trial number -> ``f1``, ``eopp1``, ``run_id``, ``feasible``, ``collapsed``."""
        if not numbers:
            return {}
        runs = self._search(f"tags.sweep_id = '{sweep_id}' and tags.role = 'trial'")
        out: dict[int, dict[str, Any]] = {}
        for _, run in runs.iterrows() if not runs.empty else []:
            number = str(run.get("tags.optuna_trial", ""))
            f1, eopp1 = run.get("metrics.val_avg_f1"), run.get("metrics.val_eopp1")
            if not (number.isdigit() and int(number) in numbers) or run["status"] not in ("RUNNING", "FINISHED"):
                continue
            if run.get("tags.feasible") not in ("true", "false") or f1 != f1 or eopp1 != eopp1 or f1 is None:
                continue  # its final tags are set last: without them the trial did not finish
            out[int(number)] = {
                "f1": float(f1),
                "eopp1": float(eopp1),
                "run_id": run["run_id"],
                "feasible": run["tags.feasible"] == "true",
                "collapsed": run.get("tags.collapsed") == "true",
            }
        return out

    def close_attempts(self, sweep_id: str, number: int) -> int:
        """Before trial ``number`` runs (again): the runs an earlier attempt of it left open (its
        worker died, or the tracking server was away when it failed) are marked KILLED, tagged
        ``interrupted`` and ``retried``, and their unfinished models FAILED. Returns how many."""
        runs = self._search(
            f"tags.sweep_id = '{sweep_id}' and tags.optuna_trial = '{number}' and attributes.status = 'RUNNING'"
        )
        client = self._client()
        for run_id in runs["run_id"] if not runs.empty else []:
            client.set_terminated(run_id, status="KILLED")
            client.set_tag(run_id, "interrupted", "true")
            client.set_tag(run_id, "retried", "true")
        self.fail_pending_models(sweep_id, optuna_trial=str(number))
        return 0 if runs.empty else len(runs)

    def fail_pending_models(self, sweep_id: str, optuna_trial: str | None = None) -> int:
        """Logged models of this sweep left PENDING (their process died while uploading) are
        finalized FAILED, so that no search or registry sees them as usable. Returns how many."""
        import mlflow
        from mlflow.entities import LoggedModelStatus

        mlflow.set_tracking_uri(self.uri)
        filt = f"tags.sweep_id = '{sweep_id}'" + (f" and tags.optuna_trial = '{optuna_trial}'" if optuna_trial else "")
        found = mlflow.search_logged_models(
            experiment_ids=[self.experiment_id], filter_string=filt, output_format="list"
        )
        pending = [m for m in found if m.status == LoggedModelStatus.PENDING]
        for m in pending:
            mlflow.finalize_logged_model(m.model_id, LoggedModelStatus.FAILED)
        return len(pending)

    def close_unfinished(
        self, sweep_id: str, completed: set[str], interrupted: set[int] = frozenset()
    ) -> tuple[int, int]:
        """Close this sweep's runs an interrupted sweep left open or failed.

        A RUNNING run whose trial the study recorded as complete (``completed`` run ids) had logged
        everything: it is marked FINISHED. Any other RUNNING one is marked KILLED (its trial runs
        again), and so is a FAILED run of an ``interrupted`` trial number (Ctrl-C stopped it; it
        did not fail). Killed runs are tagged ``interrupted``. Returns (finished, killed).
        """
        runs = self._search(
            f"tags.sweep_id = '{sweep_id}' and attributes.status != 'FINISHED' and attributes.status != 'KILLED' "
            f"and tags.method != 'sweep'"
        )
        client = self._client()
        finished = killed = 0
        for _, run in runs.iterrows() if not runs.empty else []:
            run_id, status = run["run_id"], run["status"]
            number = str(run.get("tags.optuna_trial", ""))
            if status == "RUNNING" and run_id in completed:
                client.set_terminated(run_id, status="FINISHED")
                finished += 1
            elif status == "RUNNING" or (status == "FAILED" and number.isdigit() and int(number) in interrupted):
                client.set_terminated(run_id, status="KILLED")
                client.set_tag(run_id, "interrupted", "true")
                killed += 1
        self.fail_pending_models(sweep_id)
        return finished, killed

    def has_pytorch_flavour(self, model_id: str) -> bool:
        """Whether a logged model loads with ``mlflow.pytorch.load_model`` (not ``--safetensors-only``:
        a resumed sweep may have switched the setting, so its models can be of either kind)."""
        import mlflow

        mlflow.set_tracking_uri(self.uri)
        return mlflow.get_logged_model(model_id).model_type != SAFETENSORS_ONLY

    def mark_killed(self, run_id: str) -> None:
        """End a run as KILLED (an interrupted sweep's parent: visibly unfinished until resumed)."""
        self._client().set_terminated(run_id, status="KILLED")

    def set_front_tags(self, tags: Mapping[str, Mapping[str, str]], model_ids: Mapping[str, str | None]) -> None:
        """Set ``tags[run_id]`` (``pareto_optimal``, ``pareto_duplicate``, ...) on each run and its model."""
        import mlflow

        client = self._client()
        for run_id, run_tags in tags.items():
            for key, value in run_tags.items():
                client.set_tag(run_id, key, value)
            model_id = model_ids.get(run_id)
            if model_id:
                mlflow.set_logged_model_tags(model_id, dict(run_tags))

    def register_front(
        self, registry: str, members: Mapping[str, Mapping[str, str]], aliases: Mapping[str, str]
    ) -> dict[str, str]:
        """Register each front model (``members``: model id -> version tags, ``description`` among
        them) as a version of the registered model ``registry``, once: a model registered before
        (a resumed sweep) keeps its version. Then point each alias (alias -> model id) at its
        version. Returns model id -> version."""
        import mlflow

        client = self._client()
        known = {}
        if client.search_registered_models(filter_string=f"name = '{registry}'"):
            known = {v.tags.get("model_id"): v.version for v in client.search_model_versions(f"name = '{registry}'")}
        versions: dict[str, str] = {}
        for model_id, member in members.items():
            tags = {k: v for k, v in member.items() if k != "description"}
            if model_id in known:
                versions[model_id] = str(known[model_id])
                for key, value in tags.items():
                    client.set_model_version_tag(registry, versions[model_id], key, value)
            else:
                version = mlflow.register_model(f"models:/{model_id}", registry, tags={**tags, "model_id": model_id})
                versions[model_id] = str(version.version)
            if member.get("description"):
                client.update_model_version(registry, versions[model_id], description=member["description"])
        for alias, model_id in aliases.items():
            client.set_registered_model_alias(registry, alias, versions[model_id])
        return versions
