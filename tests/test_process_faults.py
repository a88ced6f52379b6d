"""Faults made by real processes during a real sweep (``python sweeps/pareto.py``): a trial's worker
killed with SIGKILL, the MLflow server stopped and restarted, a torn journal, a full disk. Each
sweep must end with every trial it was asked for COMPLETE (or say why not, and run the rest on
``--resume``), no MLflow run left RUNNING and no logged model left PENDING."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from .conftest import REPO, start_mlflow_server, stop_server
from .test_faults import _mount_tmpfs
from .test_sweep_e2e import _free_port

pytestmark = pytest.mark.slow


def _cmd(storage: Path, cache: Path, uri: str, name: str, *extra: str) -> list[str]:
    return [
        sys.executable,
        str(REPO / "sweeps" / "pareto.py"),
        "--smoke-test",
        *("--storage", str(storage), "--name", name, "--cache-dir", str(cache), "--tracking-uri", uri),
        *("--experiment", name, "--concurrency", "1", "--f1-floor", "0.5"),
        # trials of a few seconds each: long enough to be caught running
        *("--curvature-batches", "30"),
        *extra,
    ]


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1", **extra)
    env.pop("RAY_ADDRESS", None)
    return env


def _sweep(
    cmd: list[str], cwd: Path, env: dict[str, str], *, when: str = "", then: Callable[[], None] = lambda: None
) -> tuple[int, str]:
    """Run a sweep; once a line holding ``when`` is printed, call ``then`` (in a thread, so the
    sweep's output keeps flowing). Returns (exit code, everything printed)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=cwd, env=env)
    out, acted = [], None
    for line in proc.stdout:  # type: ignore[union-attr]
        out.append(line)
        if when and acted is None and when in line:
            acted = threading.Thread(target=then)
            acted.start()
    proc.wait(timeout=600)
    if acted is not None:
        acted.join(timeout=120)
    return proc.returncode, "".join(out)


def _study(storage: Path, name: str):
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    backend = JournalFileBackend(str(storage / name / "optuna.journal"))
    return optuna.load_study(study_name=name, storage=JournalStorage(backend))


def _check_store(uri: str, experiment: str, trials: int) -> list:
    """Every trial asked for finished once in MLflow; nothing RUNNING, no model PENDING."""
    import mlflow
    from mlflow.entities import LoggedModelStatus
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    assert not [r.info.run_name for r in runs if r.info.status == "RUNNING"], "a run was left RUNNING"
    finished = [r for r in runs if r.data.tags.get("role") == "trial" and r.info.status == "FINISHED"]
    numbers = sorted(int(r.data.tags["optuna_trial"]) for r in finished)
    assert len(numbers) == len(set(numbers)) == trials, numbers
    mlflow.set_tracking_uri(uri)
    models = mlflow.search_logged_models(experiment_ids=[exp.experiment_id], output_format="list")
    assert not [m.name for m in models if m.status == LoggedModelStatus.PENDING], "a model was left PENDING"
    return runs


def _complete(storage: Path, name: str) -> list[int]:
    from optuna.trial import TrialState

    return [t.number for t in _study(storage, name).get_trials() if t.state == TrialState.COMPLETE]


def _kill_a_running_trial_worker() -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ps = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
        pids = [int(line.split()[0]) for line in ps.splitlines() if "ray::ImplicitFunc.train" in line]
        if pids:
            os.kill(pids[0], signal.SIGKILL)
            return
        time.sleep(0.2)
    raise AssertionError("no running trial worker to kill")


def test_a_trial_whose_worker_is_killed_runs_again_and_the_sweep_completes(tmp_path, cache_dir):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    storage = tmp_path / "sweeps"
    rc, out = _sweep(
        _cmd(storage, cache_dir, uri, "killed", "--trials", "3"),
        tmp_path,
        _env(),
        when="[1/3",
        then=_kill_a_running_trial_worker,
    )
    assert rc == 0, out[-4000:]
    assert "running it again (retry 1 of 2)" in out, out[-4000:]
    assert "Traceback" not in out, "Tune's traceback reached the console"
    assert "(The actor died unexpectedly before finishing this task.)" in out, "the retry does not say what happened"
    assert len(_complete(storage, "killed")) == 3
    runs = _check_store(uri, "killed", 3)
    retried = [r for r in runs if r.data.tags.get("retried") == "true"]
    # the killed attempt's run (if the kill came after it started one) is closed and marked
    assert len(retried) <= 1 and all(r.info.status == "KILLED" for r in retried), "the killed attempt's run"


def test_a_tracking_server_stopped_and_restarted_mid_sweep_loses_no_trial(tmp_path, cache_dir):
    root, port = tmp_path / "server", _free_port()
    uri = f"http://127.0.0.1:{port}"
    servers = [start_mlflow_server(root, port)]

    def outage() -> None:
        time.sleep(1.0)  # the next trial is running
        stop_server(servers[0])
        time.sleep(15)  # a few of the client's retries, and a trial attempt, fail in between
        servers.append(start_mlflow_server(root, port))

    storage = tmp_path / "sweeps"
    try:
        # the client gives up at once (its default retries would ride out a short outage)
        env = _env(MLFLOW_HTTP_REQUEST_MAX_RETRIES="0", MLFLOW_HTTP_REQUEST_TIMEOUT="5")
        rc, out = _sweep(
            _cmd(storage, cache_dir, uri, "outage", "--trials", "4"), tmp_path, env, when="[1/4", then=outage
        )
        assert rc == 0, out[-4000:]
        assert "running it again" in out, "no trial met the outage: the test tested nothing"
        assert len(_complete(storage, "outage")) == 4
        _check_store(uri, "outage", 4)
    finally:
        for proc in servers:
            stop_server(proc)


def test_a_torn_journal_is_repaired_on_resume_and_finished_trials_stay_complete(tmp_path, cache_dir):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    storage = tmp_path / "sweeps"
    rc, out = _sweep(_cmd(storage, cache_dir, uri, "torn", "--trials", "3"), tmp_path, _env())
    assert rc == 0, out[-4000:]
    journal = storage / "torn" / "optuna.journal"
    os.truncate(journal, journal.stat().st_size - 100)  # a driver killed mid-write
    outs = []
    for trials in ("4", "5"):  # the second resume reads what the first appended
        rc, out = _sweep(_cmd(storage, cache_dir, uri, "torn", "--resume", "--trials", trials), tmp_path, _env())
        assert rc == 0, out[-4000:]
        outs.append(out)
    assert "repaired the study journal" in outs[0] and "cut a torn last line" in outs[0], outs[0][-3000:]
    assert "repaired" not in outs[1], "the repaired journal was torn again by the first resume"
    assert _complete(storage, "torn") == [0, 1, 2, 3, 4], "a finished trial was told FAIL or run twice"
    _check_store(uri, "torn", 5)
    assert list((storage / "torn").glob("optuna.journal.torn-*")), "no copy of the torn journal was kept"
    # a resume may reach the same store by another spelling of its URI, never another store
    other = tmp_path / "other.db"
    rc, out = _sweep(
        _cmd(storage, cache_dir, f"sqlite:///{other}", "torn", "--resume", "--trials", "5"), tmp_path, _env()
    )
    assert rc == 2 and "does not hold this sweep's parent run" in out.strip().splitlines()[-1], out[-2000:]
    assert "Started a local Ray instance" not in out and not other.exists()
    (tmp_path / "cwd").mkdir()
    rc, out = _sweep(
        _cmd(storage, cache_dir, "sqlite:///../mlflow.db", "torn", "--resume", "--trials", "6"),
        tmp_path / "cwd",
        _env(),
    )
    assert rc == 0, out[-3000:]
    _check_store(uri, "torn", 6)


def test_a_full_disk_under_the_tracking_store_fails_trials_cleanly_and_resume_runs_them(tmp_path, cache_dir):
    disk = tmp_path / "disk"
    _mount_tmpfs(disk, "40m")
    try:
        uri = f"sqlite:///{disk}/mlflow.db"
        storage = tmp_path / "sweeps"

        def fill() -> None:
            with open(disk / "filler", "wb") as f:
                try:
                    while True:
                        f.write(b"\0" * (1 << 20))
                except OSError:
                    pass

        rc, out = _sweep(
            _cmd(storage, cache_dir, uri, "full", "--trials", "3"), tmp_path, _env(), when="[1/3", then=fill
        )
        assert rc == 2 and "Traceback" not in out, out[-4000:]
        last = out.strip().splitlines()[-1]
        assert last.startswith("error: the MLflow tracking store") and "disk is full" in last, last
        assert "--resume --name full" in last, last
        (disk / "filler").unlink()
        rc, out = _sweep(_cmd(storage, cache_dir, uri, "full", "--resume", "--trials", "3"), tmp_path, _env())
        assert rc == 0, out[-4000:]
        assert len(_complete(storage, "full")) == 3
        _check_store(uri, "full", 3)
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)
