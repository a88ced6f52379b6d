from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def real_data_root() -> Path:
    """``$FAIRPRUNE_DATA``, else ``../shared/data`` beside the repository."""
    return Path(os.environ.get("FAIRPRUNE_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fairprune-cache")


@pytest.fixture(scope="session")
def isic_root() -> Path:
    root = real_data_root() / "isic2019"
    if not (root / "ISIC_2019_Training_GroundTruth.csv").is_file():
        pytest.skip(f"real ISIC 2019 data not found at {root} (set FAIRPRUNE_DATA)")
    return root


@pytest.fixture(scope="session")
def fitzpatrick_csv() -> Path:
    path = real_data_root() / "fitzpatrick17k" / "fitzpatrick17k.csv"
    if not path.is_file():
        pytest.skip(f"real Fitzpatrick17k CSV not found at {path} (set FAIRPRUNE_DATA)")
    return path


@pytest.fixture(scope="session")
def synthetic(cache_dir):
    """The small synthetic dataset most tests share (generated once per session)."""
    from fairprune_core.datasets import load_dataset

    return load_dataset("synthetic", cache_dir=cache_dir, num_images=600, image_size=32)


@pytest.fixture(scope="module")
def gpu_cluster():
    """A multi-node Ray cluster on this machine: a head (2 CPUs) and two nodes with one logical GPU each."""
    import ray
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        ray.shutdown()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "include_dashboard": False})
    nodes = [cluster.add_node(num_cpus=1, num_gpus=1) for _ in range(2)]
    cluster.wait_for_nodes()
    yield cluster, nodes
    ray.shutdown()
    cluster.shutdown()


def start_mlflow_server(root: Path, port: int) -> subprocess.Popen:
    """A real ``mlflow server`` on 127.0.0.1:``port`` storing under ``root``, once it answers as one."""
    from fairprune_core.tracking import TrackingError, check_tracking_uri

    proc = subprocess.Popen(
        [
            sys.executable,
            *("-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{root}/mlflow.db"),
            *("--artifacts-destination", str(root / "artifacts"), "--host", "127.0.0.1", "--port", str(port)),
            *("--workers", "1"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    while True:
        try:
            check_tracking_uri(f"http://127.0.0.1:{port}", multi_node=False, timeout_s=2)
            return proc
        except TrackingError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail("mlflow server did not start")
            time.sleep(0.5)


def stop_server(proc: subprocess.Popen) -> None:
    """Stop a server started in its own session (SIGTERM to its process group), and wait for it."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
