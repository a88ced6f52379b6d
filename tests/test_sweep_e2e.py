"""End to end: `python sweeps/pareto.py` against a real `mlflow server` on 127.0.0.1.

A small sweep runs to completion, a resumed sweep is interrupted with SIGINT (Ctrl-C) mid-way,
and a final resume completes it. Everything is then checked through MlflowClient.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient

from fairprune_core.datasets import load_dataset
from fairprune_core.model import to_model_input

from .conftest import REPO

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlflow-server")
    port = _free_port()
    uri = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--backend-store-uri",
            f"sqlite:///{root}/mlflow.db",
            "--artifacts-destination",
            str(root / "artifacts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    while True:
        try:
            with urllib.request.urlopen(f"{uri}/health", timeout=2) as r:
                if r.status == 200:
                    break
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail("mlflow server did not start")
        time.sleep(0.5)
    yield uri
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=30)


def _cmd(uri: str, storage: Path, cache: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        str(REPO / "sweeps" / "pareto.py"),
        "--smoke-test",
        "--tracking-uri",
        uri,
        "--experiment",
        "e2e",
        "--storage",
        str(storage),
        "--name",
        "e2e",
        "--f1-floor",  # the tiny smoke-test model is noisy: a low floor keeps feasible trials to check
        "0.5",
        "--cache-dir",
        str(cache),
        "--concurrency",
        "1",
        *extra,
    ]


def _env(tmp: Path) -> dict[str, str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1", RAY_DEDUP_LOGS="0")
    env.pop("RAY_ADDRESS", None)
    return env


def test_sweep_logs_tags_resumes_without_duplicates(mlflow_server, tmp_path, cache_dir):
    storage = tmp_path / "sweeps"
    env = _env(tmp_path)

    # 1. a complete sweep of 3 trials (the paper's two settings first); curvature workers in the trial's
    #    placement group for this one
    first = subprocess.run(
        _cmd(
            mlflow_server,
            storage,
            cache_dir,
            *("--trials", "3", "--workers-per-trial", "1"),
            *("--baselines", "vanilla,obd,advconf,advrev,domainindep"),
        ),
        capture_output=True,
        text=True,
        timeout=400,
        cwd=tmp_path,
        env=env,
    )
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert "Pareto-optimal" in first.stdout and "tags.pareto_optimal = 'true'" in first.stdout

    # 2. resume to 6 trials, and press Ctrl-C once the first new trial has finished
    proc = subprocess.Popen(
        _cmd(mlflow_server, storage, cache_dir, "--resume", "--trials", "6"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=tmp_path,
        env=env,
    )
    out = []
    for line in proc.stdout:  # type: ignore[union-attr]
        out.append(line)
        if "[4/6" in line:
            proc.send_signal(signal.SIGINT)
            break
    rest, _ = proc.communicate(timeout=300)
    text = "".join(out) + rest
    assert proc.returncode == 130, text[-3000:]
    assert "Resume it with:" in text and "--resume --name e2e" in text
    client = MlflowClient(mlflow_server)
    exp_id = client.get_experiment_by_name("e2e").experiment_id
    (parent_run,) = client.search_runs([exp_id], "tags.method = 'sweep'")
    assert parent_run.info.status == "KILLED", "an interrupted sweep's parent run is visibly unfinished"

    # 3. resume again: it completes the 6 trials
    last = subprocess.run(
        _cmd(mlflow_server, storage, cache_dir, "--resume", "--trials", "6"),
        capture_output=True,
        text=True,
        timeout=400,
        cwd=tmp_path,
        env=env,
    )
    assert last.returncode == 0, last.stdout[-3000:] + last.stderr[-3000:]

    # -- what MLflow holds -------------------------------------------------------------------
    client = MlflowClient(mlflow_server)
    mlflow.set_tracking_uri(mlflow_server)
    exp = client.get_experiment_by_name("e2e")
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("method") == "sweep"]
    assert len(parents) == 1, "one parent run per sweep, resumed runs included"
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    # no trial that Ctrl-C stopped is left looking as if it had failed
    assert not [r for r in children if r.info.status in ("FAILED", "RUNNING")], [r.info.status for r in children]
    finished = [r for r in children if r.info.status == "FINISHED"]
    trials = [r for r in finished if r.data.tags.get("method") == "fairprune"]
    baselines = {"vanilla", "obd", "advconf", "advrev", "domainindep"}
    assert {r.data.tags["method"] for r in finished} == baselines | {"fairprune"}
    for name in baselines:  # each requested baseline once, as a child run with its model logged
        (run,) = [r for r in finished if r.data.tags["method"] == name]
        assert run.data.tags["role"] == "baseline" and run.data.tags["model_uri"].startswith("models:/")
    numbers = [r.data.tags["optuna_trial"] for r in trials]
    assert len(trials) == 6 and len(set(numbers)) == 6, f"finished trial runs: {sorted(numbers)}"
    # the paper's settings were evaluated first
    first_two = sorted(trials, key=lambda r: int(r.data.tags["optuna_trial"]))[:2]
    assert [(float(r.data.params["beta"]), float(r.data.params["final_ratio"])) for r in first_two] == [
        (0.33, 0.35),
        (0.2, 0.5),
    ]
    # per-step metrics are there (step = pruning iteration)
    history = client.get_metric_history(trials[0].info.run_id, "val_eopp1")
    assert [m.step for m in history][:2] == [0, 1]

    # the pareto tags equal a front recomputed here from the logged validation metrics
    floor = float(parent.data.params["f1_floor_abs"])
    pts = [
        (
            r.data.metrics["val_avg_f1"],
            r.data.metrics["val_eopp1"],
            r.data.tags["feasible"] == "true" and r.data.metrics["val_avg_f1"] >= floor,
        )
        for r in trials
    ]
    for r, (f, e, ok) in zip(trials, pts, strict=True):
        dominated = any(ok2 and f2 >= f and e2 <= e and (f2 > f or e2 < e) for f2, e2, ok2 in pts)
        assert r.data.tags["pareto_optimal"] == str(ok and not dominated).lower(), r.data.tags["optuna_trial"]
    tagged = [r for r in trials if r.data.tags["pareto_optimal"] == "true"]
    assert tagged, "at least one feasible trial is expected on the smoke-test front"
    assert all(r.data.tags["feasible"] == "true" for r in tagged)
    found = mlflow.search_runs([exp.experiment_id], filter_string="tags.pareto_optimal = 'true'")
    assert set(found["run_id"]) == {r.info.run_id for r in tagged}
    models = mlflow.search_logged_models(
        experiment_ids=[exp.experiment_id], filter_string="tags.pareto_optimal = 'true'", output_format="list"
    )
    assert {m.source_run_id for m in models} == {r.info.run_id for r in tagged}

    # a tagged model loads and predicts exactly like the in-memory pruned model did
    chosen = tagged[0]
    model = mlflow.pytorch.load_model(chosen.data.tags["model_uri"])
    logged = np.load(
        mlflow.artifacts.download_artifacts(
            run_id=chosen.info.run_id, artifact_path="predictions/val_logits.npy", dst_path=str(tmp_path / "dl")
        )
    )
    state = json.loads((storage / "e2e" / "sweep.json").read_text())
    val = load_dataset(**state["dataset_spec"]).split("val")
    with torch.no_grad():
        logits = model.eval()(to_model_input(torch.from_numpy(val.images))).numpy()
    np.testing.assert_array_equal(logits, logged)
    for name, mask in model.masks.items():
        assert (model.get_parameter(name)[~mask] == 0).all()

    # the parent run holds the front as tables and plots
    names = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {
        "pareto_front.parquet",
        "pareto_front.csv",
        "pareto_front.png",
        "pareto_front.html",
        "config.json",
        "dataset_summary.json",
        "split_manifest.csv",
    } <= names

    # -- the report of that sweep: tables on test, figures, ablations as child runs -------------
    rep = subprocess.run(
        [
            sys.executable,
            str(REPO / "sweeps" / "report.py"),
            "--smoke-test",
            "--storage",
            str(storage),
            "--name",
            "e2e",
        ],
        capture_output=True,
        text=True,
        timeout=400,
        cwd=tmp_path,
        env=env,
    )
    assert rep.returncode == 0, rep.stdout[-3000:] + rep.stderr[-3000:]
    report = (storage / "e2e" / "report.md").read_text()
    assert "layout of the paper's Tables 1-2" in report and "BCa" in report and "permutation null" in report
    for baseline in ("Vanilla", "OBD", "AdvConf", "AdvRev", "DomainIndep"):
        assert f"\n{baseline} " in report
    for stem in ("report_fig2a_beta", "report_fig2bc_ratio", "report_front"):
        assert (storage / "e2e" / f"{stem}.png").is_file() and (storage / "e2e" / f"{stem}.svg").is_file()
    assert "report" in {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert "report/report.md" in {a.path for a in client.list_artifacts(parent.info.run_id, "report")}
    after = client.search_runs([exp.experiment_id], max_results=1000)
    ablations = [r for r in after if r.data.tags.get("role") == "ablation"]
    assert len(ablations) == 4 and all(r.data.tags["mlflow.parentRunId"] == parent.info.run_id for r in ablations)
    # ablations are not trials: the front's tags are unchanged
    assert {
        r.info.run_id
        for r in after
        if r.data.tags.get("pareto_optimal") == "true" and r.data.tags.get("role") == "trial"
    } == {r.info.run_id for r in tagged}
