"""The Ray curvature pool gives the single-process result: any worker count, faults, Tune trials."""

from __future__ import annotations

import os
import signal
import threading
import time

import numpy as np
import pytest
import ray
import torch

from fairprune_core.curvature.distributed import CurvaturePool, PoolResourcesError, worker_bundles
from fairprune_core.curvature.hessian import CurvatureConfig
from fairprune_core.models import ModelConfig, build_model
from fairprune_core.pruning import GroupSampler, LocalCurvature, fairprune


@pytest.fixture(scope="module")
def local_ray():
    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def problem(synthetic):
    train = synthetic.split("train")
    config = ModelConfig(num_classes=synthetic.num_classes, image_size=32, width=1 / 16)
    model = build_model(config, seed=0)
    g0, g1 = (train.groups == 0), (train.groups == 1)
    # 7 + 6 = 13 mini-batches: uneven shards for 2 and 3 workers
    s0 = GroupSampler(train.images[g0], train.labels[g0], batch_size=8, num_batches=7, seed=1, name="light")
    s1 = GroupSampler(train.images[g1], train.labels[g1], batch_size=8, num_batches=6, seed=2, name="dark")
    return config, model, s0, s1


def _assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for tag in a:
        assert a[tag].count == b[tag].count
        ma, mb = a[tag].mean(), b[tag].mean()
        for name in ma:
            torch.testing.assert_close(ma[name], mb[name], rtol=2e-6, atol=1e-12)


@pytest.mark.parametrize("estimator", ["exact", "mc"])
@pytest.mark.parametrize("workers", [1, 2, 3])
def test_pool_equals_single_process(local_ray, problem, workers, estimator):
    config, model, s0, s1 = problem
    cfg = CurvatureConfig(estimator=estimator, seed=4)
    requests = [("unprivileged", s1), ("privileged", s0)]
    expected = LocalCurvature(cfg).compute(model, requests, step=2)
    with CurvaturePool(config, cfg, num_workers=workers) as pool:
        got = pool.compute(model, requests, step=2)
        _assert_same(got, expected)
        # the next step ships new weights once, reuses the pixels already on the workers
        data_bytes = pool.stats.bytes_data
        pool.compute(model, requests, step=3)
        assert pool.stats.bytes_data == data_bytes
        assert pool.stats.bytes_weights == 2 * sum(p.numel() * 4 for p in model.state_dict().values())


def test_fairprune_through_the_pool_matches_local(local_ray, problem):
    config, model, s0, s1 = problem
    kwargs = dict(beta=0.3, step_ratio=0.1, final_ratio=0.3, estimator="exact")
    local = fairprune(model, s1, s0, **kwargs)
    with CurvaturePool(config, CurvatureConfig(), num_workers=2) as pool:
        pooled = fairprune(model, s1, s0, curvature=pool, **kwargs)
    agree = np.mean([(local.masks[n] == pooled.masks[n]).float().mean().item() for n in local.masks])
    assert agree > 0.9999  # identical up to float32 near-ties in the ranking
    assert pooled.achieved_ratio == local.achieved_ratio


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="needs /proc to see the worker compute")
def test_a_killed_worker_is_restarted_and_the_step_result_is_unchanged(local_ray, problem):
    config, model, _, _ = problem
    images = np.random.default_rng(0).integers(0, 255, (64, 32, 32, 3), dtype=np.uint8)
    labels = np.random.default_rng(1).integers(0, config.num_classes, 64)
    big = GroupSampler(images, labels, batch_size=16, num_batches=240, seed=3)  # a few seconds per worker
    cfg = CurvatureConfig()
    expected = LocalCurvature(cfg).compute(model, [("all", big)], step=0)
    with CurvaturePool(config, cfg, num_workers=2) as pool:
        victim = pool.worker_info[1]["pid"]
        result: dict = {}
        t = threading.Thread(target=lambda: result.update(pool.compute(model, [("all", big)], step=0)))
        start_cpu = _cpu_seconds(victim)
        t.start()
        deadline = time.monotonic() + 60
        while _cpu_seconds(victim) < start_cpu + 0.3:  # the victim is busy with its shard
            assert time.monotonic() < deadline and t.is_alive(), "the step never started"
            time.sleep(0.02)
        os.kill(victim, signal.SIGKILL)  # mid-step, as if the node ran out of memory
        t.join(timeout=120)
        assert not t.is_alive()
        assert pool.stats.restarts + pool.stats.replacements >= 1
        # the pool's record of its workers follows the restart (a trial's curvature_nodes tag reads it)
        assert pool.worker_info[1]["pid"] != victim
        assert pool.worker_info[1]["pid"] == ray.get(pool.actors[1].info.remote())["pid"]
    _assert_same(result, expected)


def test_a_replaced_worker_is_recorded(local_ray, problem):
    """With no restarts allowed, a dead actor is replaced by a new one; worker_info names the new one."""
    config, model, s0, _ = problem
    cfg = CurvatureConfig()
    expected = LocalCurvature(cfg).compute(model, [("a", s0)], step=0)
    with CurvaturePool(config, cfg, num_workers=2, max_restarts=0) as pool:
        victim = pool.worker_info[0]["pid"]
        os.kill(victim, signal.SIGKILL)
        time.sleep(1.0)
        result = pool.compute(model, [("a", s0)], step=0)
        assert pool.stats.replacements == 1
        info = pool.worker_info[0]
        assert info["pid"] != victim and info == ray.get(pool.actors[0].info.remote())
    _assert_same(result, expected)


def test_impossible_gpu_request_is_a_clear_error(local_ray, problem):
    config = problem[0]
    with pytest.raises(PoolResourcesError, match=r"4 workers x 1 GPU = 4 GPU.*has \(and can scale to\) 0 GPU"):
        CurvaturePool(config, CurvatureConfig(), num_workers=4, gpus_per_worker=1)


def test_pool_inside_a_tune_trial_uses_its_placement_group(local_ray, problem, tmp_path):
    from ray import tune

    config, model, s0, _ = problem
    expected = LocalCurvature(CurvatureConfig()).compute(model, [("a", s0)], step=0)["a"].mean()
    state = {k: v.numpy() for k, v in model.state_dict().items()}

    def trainable(cfg):
        from ray import tune as t

        m = build_model(config)
        m.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
        pg = ray.util.get_current_placement_group()
        with CurvaturePool(config, CurvatureConfig(), num_workers=2) as pool:
            got = pool.compute(m, [("a", s0)], step=0)["a"].mean()
        err = max(float((got[k] - expected[k]).abs().max() / (expected[k].abs().max() + 1e-30)) for k in got)
        t.report({"err": err, "in_pg": pg is not None})

    resources = tune.PlacementGroupFactory([{"CPU": 1}, *worker_bundles(2)], strategy="PACK")
    tuner = tune.Tuner(
        tune.with_resources(trainable, resources),
        run_config=tune.RunConfig(storage_path=str(tmp_path), name="pool", verbose=0),
    )
    result = tuner.fit().get_best_result(metric="err", mode="min")
    assert result.error is None
    assert result.metrics["in_pg"] and result.metrics["err"] < 2e-6
