"""Sparse model export through a real MLflow store, and clear tracking errors."""

from __future__ import annotations

import socket

import mlflow
import pytest
import torch

from fairprune_core.model import ModelConfig, build_model
from fairprune_core.pruning import apply_masks, prunable_parameters
from fairprune_core.tracking import (
    TrackingError,
    check_tracking_uri,
    log_pruned_model,
    logged_model_bytes,
    resolve_tracking_uri,
)


def _pruned(keep: float, seed: int = 0):
    model = build_model(ModelConfig(num_classes=5, image_size=32, width=0.25), seed=seed).eval()
    gen = torch.Generator().manual_seed(seed)
    masks = {n: torch.rand(model.get_parameter(n).shape, generator=gen) < keep for n in prunable_parameters(model)}
    return apply_masks(model, masks), masks


def test_logged_model_loads_and_predicts_exactly_and_grows_with_kept_weights(tmp_path):
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    exp = mlflow.create_experiment("export", artifact_location=(tmp_path / "art").as_uri())
    x = torch.randn(6, 3, 32, 32)
    sizes = {}
    for keep in (0.9, 0.3):
        model, masks = _pruned(keep)
        with mlflow.start_run(experiment_id=exp):
            info = log_pruned_model(model, masks)
        loaded = mlflow.pytorch.load_model(info.model_uri)
        assert torch.equal(loaded(x), model(x))
        for name, mask in masks.items():
            assert (loaded.get_parameter(name)[~mask] == 0).all()
        sizes[keep] = logged_model_bytes(info.model_id)
    dense = sum(p.numel() * 4 for p in model.parameters())
    assert sizes[0.3] < 0.45 * dense < sizes[0.9]  # ~4 bytes per kept weight + 1 bit per weight


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
