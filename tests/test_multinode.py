"""Curvature workers on a multi-node Ray cluster (ray.cluster_utils.Cluster on one machine)."""

from __future__ import annotations

from pathlib import Path

import ray
import torch

from fairprune_core.curvature.distributed import CurvaturePool
from fairprune_core.curvature.hessian import CurvatureConfig
from fairprune_core.models import ModelConfig, build_model
from fairprune_core.pruning import GroupSampler, LocalCurvature


def test_gpu_workers_land_on_different_nodes_and_agree(gpu_cluster, synthetic, monkeypatch):
    cluster, workers = gpu_cluster
    monkeypatch.setenv("RAY_ADDRESS", cluster.address)  # how a user's driver reaches a cluster
    train = synthetic.split("train")
    config = ModelConfig(num_classes=synthetic.num_classes, image_size=32, width=1 / 16)
    model = build_model(config, seed=1)
    src = GroupSampler(train.images, train.labels, batch_size=8, num_batches=5, seed=0)
    expected = LocalCurvature(CurvatureConfig()).compute(model, [("all", src)], step=1)["all"].mean()

    with CurvaturePool(config, CurvatureConfig(), num_workers=2) as pool:  # connects via RAY_ADDRESS
        assert ray.get_runtime_context().gcs_address == cluster.address
        nodes = {info["node_id"] for info in pool.worker_info}
        assert nodes == {w.node_id for w in workers}  # one worker per GPU node, not on the head
        got = pool.compute(model, [("all", src)], step=1)["all"].mean()
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=2e-6, atol=1e-12)


def test_a_cluster_already_running_here_is_not_joined_unless_named(monkeypatch):
    """A Ray head started on this machine (as `ray start --head` does, it writes Ray's
    current-cluster file, which plain `ray.init()` would join) is not joined without an address."""
    import glob
    import os

    from ray.cluster_utils import Cluster

    from fairprune_core.curvature.distributed import ensure_ray

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    if ray.is_initialized():
        ray.shutdown()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    try:
        files = glob.glob(os.path.join(os.environ.get("RAY_TMPDIR", "/tmp/ray"), "ray_current_cluster"))
        assert files and Path(files[0]).read_text().strip() == cluster.address  # what ray.init() would find
        ensure_ray(None)
        assert ray.get_runtime_context().gcs_address != cluster.address  # a private Ray of its own
        ray.shutdown()
        ensure_ray(cluster.address)  # named: joined
        assert ray.get_runtime_context().gcs_address == cluster.address
    finally:
        ray.shutdown()
        cluster.shutdown()
