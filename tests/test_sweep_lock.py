"""One driver per sweep folder: a second one is refused naming the first; a stale lock is taken over."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from fairprune_core.sweep.lock import LOCK_NAME, SweepLocked, sweep_lock


def test_a_second_driver_is_refused_naming_the_first_and_the_lock_goes_with_the_first(tmp_path):
    with sweep_lock(tmp_path / "s", log=lambda _: None) as path:
        held = json.loads(path.read_text())
        assert held["pid"] == os.getpid()
        with pytest.raises(SweepLocked, match=rf"pid {os.getpid()} on .*another --name"), sweep_lock(tmp_path / "s"):
            pass
        assert path.is_file()  # the refused driver did not remove the holder's lock
    assert not path.exists()


def test_a_lock_whose_driver_died_is_taken_over_with_a_message(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    folder = tmp_path / "s"
    folder.mkdir()
    import socket

    (folder / LOCK_NAME).write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(), "started": "x"}))
    said: list[str] = []
    with sweep_lock(folder, log=said.append) as path:
        assert json.loads(path.read_text())["pid"] == os.getpid()
    assert said and "stale lock" in said[0] and str(dead.pid) in said[0]


def test_a_lock_held_on_another_machine_is_respected(tmp_path):
    folder = tmp_path / "s"
    folder.mkdir()
    (folder / LOCK_NAME).write_text(json.dumps({"pid": 1, "host": "elsewhere", "started": "x"}))
    with pytest.raises(SweepLocked, match="on elsewhere"), sweep_lock(folder):
        pass


def test_run_sweep_refuses_a_held_folder_before_starting_ray_or_mlflow(synthetic, tmp_path, monkeypatch):
    import ray

    from fairprune_core.checkpoint import load_checkpoint
    from fairprune_core.config import SweepConfig
    from fairprune_core.models import ModelConfig
    from fairprune_core.sweep.runner import run_sweep
    from fairprune_core.training import TrainConfig, pretrain

    monkeypatch.chdir(tmp_path)
    model = ModelConfig(num_classes=synthetic.num_classes, image_size=32, width=1 / 16)
    res = pretrain(synthetic, model, TrainConfig(epochs=1, augment="none"), tmp_path / "v", log=lambda _: None)
    checkpoint = load_checkpoint(res.best_path, dataset=synthetic)
    cfg = SweepConfig(name="busy", storage=tmp_path / "sweeps")
    with sweep_lock(cfg.directory, log=lambda _: None):
        with pytest.raises(SweepLocked, match="in use by another sweep driver"):
            run_sweep(cfg, synthetic, checkpoint, log=lambda _: None)
        assert not ray.is_initialized()
        assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "mlruns").exists()
