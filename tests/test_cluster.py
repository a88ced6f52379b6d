"""Cluster configs (offline validation) and a sweep on a multi-node Ray cluster with an MLflow server."""

from __future__ import annotations

import contextlib
import copy
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient
from ray.autoscaler._private.util import prepare_config, validate_config

from .conftest import REPO
from .test_sweep_e2e import mlflow_server  # noqa: F401  (a module-scoped fixture)

CONFIGS = sorted((REPO / "cluster").glob("*.yaml"))


def _load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def test_there_are_an_aws_and_an_on_premises_config():
    providers = {_load(p)["provider"]["type"] for p in CONFIGS}
    assert {"aws", "local"} <= providers


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_configs_pass_rays_own_validation(path):
    validate_config(prepare_config(_load(path)))


@pytest.mark.parametrize(
    "breakage",
    [
        lambda c: c.update(max_worker=c.pop("max_workers", 2)),  # a misspelt key
        lambda c: c.update(head_node_type="no_such_type"),  # head type is not a node type
        lambda c: c["available_node_types"]["gpu_worker"].update(min_workers=20),  # > global max_workers
    ],
    ids=["misspelt-key", "unknown-head-type", "min-workers-above-global-max"],
)
def test_a_broken_copy_fails_validation(breakage):
    config = copy.deepcopy(_load(REPO / "cluster" / "ray_cluster.yaml"))
    breakage(config)
    with pytest.raises(Exception):  # noqa: B017 (jsonschema or ValueError, both are refusals)
        validate_config(prepare_config(config))


def test_top_level_config_is_the_same_file():
    assert os.path.samefile(REPO / "ray_cluster.yaml", REPO / "cluster" / "ray_cluster.yaml")


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_files_named_by_mounts_and_commands_exist(path):
    config = _load(path)
    for local in config.get("file_mounts", {}).values():
        assert (REPO / local).exists(), f"file_mounts source {local} is not in the repository"
    commands = " ".join(
        str(c)
        for key in (
            "setup_commands",
            "head_setup_commands",
            "worker_setup_commands",
            "head_start_ray_commands",
            "worker_start_ray_commands",
        )
        for c in config.get(key, []) or []
    )
    mounted = {remote.rstrip("/"): local for remote, local in config.get("file_mounts", {}).items()}
    named = re.findall(r"(~/fairprune/[\w./-]+)", commands)
    assert named, "the commands should install or run something from the synced project"
    for ref in named:
        remote_root = next(r for r in mounted if ref.startswith(r))
        rel = ref[len(remote_root) :].lstrip("/")
        assert (REPO / mounted[remote_root] / rel).exists(), f"{ref} is not in the repository"


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_nothing_listens_on_a_public_address(path):
    config = _load(path)
    head = " ".join(config["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head
    assert "0.0.0.0" not in path.read_text()
    script = (REPO / "cluster" / "start_mlflow.sh").read_text()
    assert '--host "$host"' in script and 'host="127.0.0.1"' in script and "hostname -I" in script
    assert "start_mlflow.sh --host private" in head  # the head's private address, for the workers


def test_idle_gpu_workers_scale_down():
    config = _load(REPO / "cluster" / "ray_cluster.yaml")
    gpu = config["available_node_types"]["gpu_worker"]
    assert gpu["min_workers"] == 0 and config["idle_timeout_minutes"] <= 10


# -- the sweep on a multi-node cluster ---------------------------------------------------------
@pytest.mark.slow
def test_sweep_runs_on_a_multi_node_cluster(gpu_cluster, mlflow_server, tmp_path, cache_dir):  # noqa: F811
    cluster, nodes = gpu_cluster
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("RAY_ADDRESS", None)
    base = [
        sys.executable,
        str(REPO / "sweeps" / "pareto.py"),
        "--smoke-test",
        "--trials",
        "2",
        "--concurrency",
        "1",
        "--cache-dir",
        str(cache_dir),
        "--storage",
        str(tmp_path / "sweeps"),
        "--name",
        "cluster",
        "--experiment",
        "cluster",
        "--f1-floor",
        "0.5",
        "--address",
        cluster.address,
        "--workers-per-trial",
        "2",
        "--gpus-per-worker",
        "1",
    ]

    # a local store is refused: the other nodes could not see it
    refused = subprocess.run(
        [*base, "--tracking-uri", f"sqlite:///{tmp_path}/local.db"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env=env,
    )
    assert refused.returncode != 0
    assert "multi-node Ray cluster" in refused.stderr and "--tracking-uri http://" in refused.stderr

    proc = subprocess.run(
        [*base, "--tracking-uri", mlflow_server], capture_output=True, text=True, timeout=400, cwd=tmp_path, env=env
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    client = MlflowClient(mlflow_server)
    exp = client.get_experiment_by_name("cluster")
    trials = client.search_runs([exp.experiment_id], "tags.method = 'fairprune' and attributes.status = 'FINISHED'")
    assert len(trials) == 2
    for run in trials:
        # each trial's two curvature workers ran on the two GPU nodes, one each
        assert set(run.data.tags["curvature_nodes"].split(",")) == {n.node_id for n in nodes}


@pytest.mark.slow
def test_start_mlflow_restarts_its_own_server_and_no_other(tmp_path):
    """Run the head's script twice for real: the second run stops the first server by its pid and
    leaves any other process whose command line says "mlflow server" alone."""
    import os
    import shutil
    import signal
    import socket
    import subprocess
    import sys
    import time

    with socket.socket() as s:
        s.bind(("", 0))
        port = s.getsockname()[1]
    env = {
        **os.environ,
        "FAIRPRUNE_MLFLOW_DIR": str(tmp_path / "mlflow"),
        "FAIRPRUNE_MLFLOW_PORT": str(port),
        "HOME": str(tmp_path),
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
    }
    decoy = subprocess.Popen(["bash", "-c", 'exec -a "mlflow server --decoy" sleep 300'])
    script = REPO / "cluster" / "start_mlflow.sh"
    pids = []
    try:
        for _ in range(2):
            subprocess.run(["bash", str(script)], env=env, check=True, timeout=240, capture_output=True)
            pids.append(int((tmp_path / "mlflow" / "server.pid").read_text()))
        time.sleep(1)
        assert decoy.poll() is None, "the script stopped a process it did not start"
        assert pids[0] != pids[1]
        with pytest.raises(ProcessLookupError):
            os.kill(pids[0], 0)  # the first server is gone
        os.kill(pids[1], 0)  # the second one runs
        # one machine: loopback only, and every file beside the store (nothing written to $HOME)
        assert (tmp_path / "mlflow" / "mlflow_uri").read_text().strip() == f"http://127.0.0.1:{port}"
        assert sorted(p.name for p in tmp_path.iterdir()) == ["mlflow"]
        if shutil.which("ss"):
            listening = subprocess.run(["ss", "-ltn"], capture_output=True, text=True).stdout
            assert f"127.0.0.1:{port}" in listening and f"0.0.0.0:{port}" not in listening
        refused = subprocess.run(["bash", str(script), "--host", "0.0.0.0"], env=env, capture_output=True, text=True)
        assert refused.returncode == 2 and "every interface" in refused.stderr
    finally:
        decoy.kill()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGTERM)  # the server's own session (setsid), never ours
