"""Sparse model export through a real MLflow store, and clear tracking errors."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import mlflow
import pytest
import torch
from mlflow.entities import LoggedModelStatus

from fairprune_core.models import ModelConfig, build_model
from fairprune_core.pruning import apply_masks, prunable_parameters
from fairprune_core.tracking import (
    TrackingError,
    check_tracking_uri,
    load_pruned_model,
    log_pruned_model,
    logged_model_bytes,
    resolve_tracking_uri,
)

from .conftest import REPO


def _pruned(keep: float, seed: int = 0):
    model = build_model(ModelConfig(num_classes=5, image_size=32, width=0.25), seed=seed).eval()
    gen = torch.Generator().manual_seed(seed)
    masks = {n: torch.rand(model.get_parameter(n).shape, generator=gen) < keep for n in prunable_parameters(model)}
    return apply_masks(model, masks), masks


def test_logged_model_loads_and_predicts_exactly_and_grows_with_kept_weights(tmp_path):
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    exp = mlflow.create_experiment("export", artifact_location=(tmp_path / "art").as_uri())
    x = torch.randn(6, 3, 32, 32)
    sizes, expected = {}, {}
    for keep in (0.9, 0.3):
        model, masks = _pruned(keep)
        with mlflow.start_run(experiment_id=exp):
            info = log_pruned_model(model, masks)
        loaded = mlflow.pytorch.load_model(info.model_uri)
        assert torch.equal(loaded(x), model(x))
        for name, mask in masks.items():
            assert (loaded.get_parameter(name)[~mask] == 0).all()
        sizes[keep] = logged_model_bytes(info.model_id)
        kept = sum(int(m.sum()) for m in masks.values())
        total = sum(m.numel() for m in masks.values())
        dense_rest = sum(p.numel() * 4 for n, p in model.named_parameters() if n not in masks)
        expected[keep] = 2 * (4 * kept + total / 8 + dense_rest)  # two sparse copies: pickle and safetensors
    dense = sum(p.numel() * 4 for p in model.parameters())
    assert sizes[0.3] < 0.9 * dense < sizes[0.9]
    for keep in sizes:  # within the metadata's few tens of KB
        assert expected[keep] < sizes[keep] < expected[keep] + 60_000, (keep, sizes[keep], expected[keep])


def test_logging_a_model_draws_no_progress_bar_unless_asked(tmp_path, capfd, monkeypatch):
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    exp = mlflow.create_experiment("bar", artifact_location=(tmp_path / "art").as_uri())
    model, masks = _pruned(0.5)
    with mlflow.start_run(experiment_id=exp):
        capfd.readouterr()
        info = log_pruned_model(model, masks)
        load_pruned_model(info.model_uri)  # what the report does for each model it evaluates
        quiet = capfd.readouterr().err
        monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "true")  # the user's choice wins
        log_pruned_model(model, masks, name="again")
        asked = capfd.readouterr().err
    assert "Downloading artifacts" not in quiet and "Downloading artifacts" in asked, (quiet, asked)
    assert os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] == "true"


def test_mlflows_pickle_caution_is_said_once_per_process_not_once_per_model(tmp_path):
    """Three models logged with the PyTorch flavour in a fresh process: MLflow's own warning
    reaches stderr once (a sweep's console had one per baseline)."""
    script = f"""
import mlflow
from tests.test_export_tracking import _pruned
from fairprune_core.tracking.mlflow_store import log_pruned_model
mlflow.set_tracking_uri("sqlite:///{tmp_path}/mlflow.db")
exp = mlflow.create_experiment("once", artifact_location="{(tmp_path / "art").as_uri()}")
for i in range(3):
    with mlflow.start_run(experiment_id=exp):
        log_pruned_model(*_pruned(0.5, seed=i), name=f"m{{i}}")
print("logged", len(mlflow.search_logged_models(experiment_ids=[exp], output_format="list")))
"""
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "logged 3" in res.stdout
    assert res.stderr.count("Pickle or CloudPickle") == 1, res.stderr[-3000:]


def test_logged_model_loads_from_safetensors_with_pickle_disallowed(tmp_path, monkeypatch):
    from fairprune_core.tracking import load_pruned_model

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    exp = mlflow.create_experiment("safe", artifact_location=(tmp_path / "art").as_uri())
    model, masks = _pruned(0.4, seed=3)
    with mlflow.start_run(experiment_id=exp):
        info = log_pruned_model(model, masks, name="trial-007")
    assert mlflow.get_logged_model(info.model_id).name == "trial-007"
    monkeypatch.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "false")
    with pytest.raises(mlflow.exceptions.MlflowException, match="pickle"):
        mlflow.pytorch.load_model(info.model_uri)  # MLflow's own loader refuses: it would unpickle
    loaded = load_pruned_model(info.model_uri)
    x = torch.randn(4, 3, 32, 32)
    assert torch.equal(loaded(x), model(x))
    assert set(loaded.masks) == set(masks) and all(torch.equal(loaded.masks[n], masks[n]) for n in masks)


def test_a_safetensors_only_model_is_half_the_bytes_registers_and_loads_without_pickle(tmp_path):
    from fairprune_core.tracking import load_pruned_model

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    exp = mlflow.create_experiment("st", artifact_location=(tmp_path / "art").as_uri())
    model, masks = _pruned(0.4, seed=5)
    with mlflow.start_run(experiment_id=exp) as run:
        mlflow.log_metrics({"curve/val_avg_f1": 0.5}, step=2)
        mlflow.log_metrics({"curve/val_avg_f1": 0.7}, step=3)
        both = log_pruned_model(model, masks, name="both", step=3)
        only = log_pruned_model(model, masks, name="trial-008", tags={"k": "v"}, step=3, pickle_flavour=False)
    logged = mlflow.get_logged_model(only.model_id)
    assert (logged.name, logged.status, logged.source_run_id, logged.tags["k"]) == (
        "trial-008",
        LoggedModelStatus.READY,
        run.info.run_id,
        "v",
    )
    assert [(m.key, m.value, m.step) for m in logged.metrics] == [("curve/val_avg_f1", 0.7, 3)]  # as the flavour links
    assert only.model_id in {o.model_id for o in mlflow.get_run(run.info.run_id).outputs.model_outputs}
    # one sparse copy instead of two (within the metadata's few tens of KB)
    kept = sum(int(m.sum()) for m in masks.values())
    total = sum(m.numel() for m in masks.values())
    dense_rest = sum(p.numel() * 4 for n, p in model.named_parameters() if n not in masks)
    one = 4 * kept + total / 8 + dense_rest
    assert one < logged_model_bytes(only.model_id) < one + 20_000 < logged_model_bytes(both.model_id)
    # registered and found by alias, loaded from safetensors; MLflow's PyTorch loader says it has no flavour
    version = mlflow.register_model(f"models:/{only.model_id}", "st-reg")
    mlflow.MlflowClient().set_registered_model_alias("st-reg", "knee", version.version)
    x = torch.randn(3, 3, 32, 32)
    assert torch.equal(load_pruned_model("models:/st-reg@knee")(x), model(x))
    with pytest.raises(mlflow.exceptions.MlflowException, match="pytorch"):
        mlflow.pytorch.load_model(only.model_uri)


def test_loading_reads_only_the_safetensors_file_by_id_version_or_alias_and_names_a_model_without_one(
    tmp_path, monkeypatch
):
    """load_pruned_model fetches the one file it reads (not the pickled copy beside it), for a
    logged model's id and for registry URIs; a model logged without it is a clear TrackingError."""
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    exp = mlflow.create_experiment("one-file", artifact_location=(tmp_path / "art").as_uri())
    model, masks = _pruned(0.5, seed=7)
    with mlflow.start_run(experiment_id=exp):
        info = log_pruned_model(model, masks, name="m")
        plain = mlflow.pytorch.log_model(model, name="plain", serialization_format="pickle", pip_requirements=[])
    version = mlflow.register_model(info.model_uri, "one-file")
    mlflow.MlflowClient().set_registered_model_alias("one-file", "knee", version.version)
    fetched: list[str] = []
    real = mlflow.artifacts.download_artifacts

    def spy(*args, **kwargs):  # the real download, recording what was asked for
        fetched.append(kwargs["artifact_uri"])
        return real(*args, **kwargs)

    monkeypatch.setattr(mlflow.artifacts, "download_artifacts", spy)
    x = torch.randn(2, 3, 32, 32)
    for uri in (info.model_uri, f"models:/one-file/{version.version}", "models:/one-file@knee"):
        assert torch.equal(load_pruned_model(uri)(x), model(x)), uri
    assert len(fetched) == 3 and all(u.endswith("/extra_files/pruned_model.safetensors") for u in fetched), fetched
    with pytest.raises(TrackingError, match=r"has no extra_files/pruned_model.safetensors .*mlflow.pytorch.load_model"):
        load_pruned_model(plain.model_uri)


def test_a_safetensors_file_of_another_kind_is_refused(tmp_path):
    from safetensors.torch import save_file

    from fairprune_core.export import load_safetensors

    save_file({"w": torch.zeros(2)}, str(tmp_path / "other.safetensors"), metadata={"format": "someone-else"})
    with pytest.raises(ValueError, match="not a FairPrune pruned model"):
        load_safetensors(tmp_path / "other.safetensors")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_tracking_server_is_named():
    uri = f"http://127.0.0.1:{_free_port()}"
    with pytest.raises(TrackingError, match=rf"cannot reach the MLflow tracking server at {uri}.*mlflow server"):
        check_tracking_uri(uri, multi_node=False, timeout_s=2)


def test_local_store_is_refused_on_a_multi_node_cluster(tmp_path):
    uri = resolve_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    assert uri.startswith("sqlite:////")
    with pytest.raises(TrackingError, match=r"multi-node.*--tracking-uri http://"):
        check_tracking_uri(uri, multi_node=True)
    check_tracking_uri(uri, multi_node=False)  # fine on one machine


def test_a_tracking_uri_mlflow_cannot_use_is_refused_naming_the_choices():
    from fairprune_core.tracking import MlflowTracker

    with pytest.raises(TrackingError, match=r"cannot track to a 'ftp' URI.*sqlite:///"):
        MlflowTracker.check("ftp://example.org/runs")
    MlflowTracker.check("sqlite:///tmp/x.db")  # the usual ones pass
