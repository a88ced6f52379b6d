"""End to end: `python sweeps/pareto.py` against a real `mlflow server` on 127.0.0.1.

A small sweep runs to completion, a resumed sweep is interrupted with SIGINT (Ctrl-C) mid-way,
and a final resume completes it. Everything is then checked through MlflowClient.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient

from fairprune_core.datasets import load_dataset
from fairprune_core.evaluation import predict
from fairprune_core.models import to_model_input

from .conftest import REPO, start_mlflow_server, stop_server

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    proc, port = None, _free_port()
    try:
        proc = start_mlflow_server(tmp_path_factory.mktemp("mlflow-server"), port)
        yield f"http://127.0.0.1:{port}"
    finally:
        if proc is not None:
            stop_server(proc)


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


@dataclass
class Swept:
    """What the module's sweep left: its folder, store and what it printed."""

    uri: str
    storage: Path
    tmp: Path
    env: dict[str, str]
    first: str  # stdout of the first, complete run
    interrupted: str  # output of the run stopped by Ctrl-C
    returncode_interrupted: int
    parent_status_interrupted: str
    last: str  # stdout of the final resume
    first_console: str = ""  # stdout + stderr of the first run


@pytest.fixture(scope="module")
def swept(mlflow_server, tmp_path_factory, cache_dir) -> Swept:
    """A 3-trial sweep (curvature workers in the trial's placement group, every baseline), resumed
    to 6 trials and stopped by Ctrl-C after the 4th, then resumed to completion."""
    tmp_path = tmp_path_factory.mktemp("e2e")
    storage = tmp_path / "sweeps"
    env = _env(tmp_path)
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
    client = MlflowClient(mlflow_server)
    exp_id = client.get_experiment_by_name("e2e").experiment_id
    parents = client.search_runs([exp_id], "tags.method = 'sweep'")
    last = subprocess.run(
        _cmd(mlflow_server, storage, cache_dir, "--resume", "--trials", "6"),
        capture_output=True,
        text=True,
        timeout=400,
        cwd=tmp_path,
        env=env,
    )
    assert last.returncode == 0, last.stdout[-3000:] + last.stderr[-3000:]
    return Swept(
        mlflow_server,
        storage,
        tmp_path,
        env,
        first.stdout,
        "".join(out) + rest,
        proc.returncode,
        parents[0].info.status if len(parents) == 1 else f"{len(parents)} parent runs",
        last.stdout,
        first.stdout + first.stderr,
    )


def test_the_sweep_console_has_no_per_trial_tune_warnings(swept):
    # Tune's result grid warns once per trial when a trial has no result file; TensorBoard's hint
    # would send users to files the sweep does not write
    assert "Failed to fetch metrics" not in swept.first_console, swept.first_console[-3000:]
    assert "tensorboard" not in swept.first_console.lower()
    assert "Configuration for experiment" not in swept.first_console  # Tune's box: the table is ours
    assert "Pareto-optimal" in swept.first_console


def test_sweep_logs_tags_resumes_without_duplicates(swept):
    mlflow_server, storage, tmp_path, env = swept.uri, swept.storage, swept.tmp, swept.env
    assert "Pareto-optimal" in swept.first and "tags.pareto_optimal = 'true'" in swept.first
    # Ctrl-C: exit 130, the resume command printed, the parent run visibly unfinished
    assert swept.returncode_interrupted == 130, swept.interrupted[-3000:]
    assert "Resume it with:" in swept.interrupted and "--resume --name e2e" in swept.interrupted
    assert swept.parent_status_interrupted == "KILLED", "an interrupted sweep's parent run is visibly unfinished"

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
    # a collapsed run says why (the rule and its numbers, as the progress table prints it)
    for r in finished:
        collapsed = r.data.tags["collapsed"] == "true"
        assert ("collapse_reason" in r.data.tags) == collapsed, r.data.tags
        if collapsed:
            assert re.search(r"predictions are one class|below the floor \d\.\d{3}", r.data.tags["collapse_reason"])
    # warm trial workers: the trials of a sweep run in fewer processes than there are trials
    assert len({r.data.tags["trial_process"] for r in trials}) < len(trials)
    numbers = [r.data.tags["optuna_trial"] for r in trials]
    assert len(trials) == 6 and len(set(numbers)) == 6, f"finished trial runs: {sorted(numbers)}"
    # the paper's settings were evaluated first
    first_two = sorted(trials, key=lambda r: int(r.data.tags["optuna_trial"]))[:2]
    assert [(float(r.data.params["beta"]), float(r.data.params["final_ratio"])) for r in first_two] == [
        (0.33, 0.35),
        (0.2, 0.5),
    ]
    # per-step curves are there (step = pruning iteration), under their own names
    # (logged in batches, every step there by the end, in order)
    for r in trials:
        history = client.get_metric_history(r.info.run_id, "curve/val_eopp1")
        assert sorted(m.step for m in history) == list(range(int(r.data.metrics["timing/steps"]) + 1))

    # the pareto tags equal a front recomputed here from the logged validation metrics: one
    # representative per distinct point (the sparsest model, then the lowest trial number)
    floor = float(parent.data.params["f1_floor_abs"])
    pts = [
        (
            r.data.metrics["val_avg_f1"],
            r.data.metrics["val_eopp1"],
            r.data.tags["feasible"] == "true" and r.data.metrics["val_avg_f1"] >= floor,
        )
        for r in trials
    ]
    optimal = [
        ok and not any(ok2 and f2 >= f and e2 <= e and (f2 > f or e2 < e) for f2, e2, ok2 in pts) for f, e, ok in pts
    ]
    points: dict[tuple[float, float], list] = {}
    for r, (f, e, _), opt in zip(trials, pts, optimal, strict=True):
        if opt:
            points.setdefault((f, e), []).append(r)
    representatives = {
        min(rs, key=lambda r: (-r.data.metrics["achieved_ratio"], int(r.data.tags["optuna_trial"]))).info.run_id
        for rs in points.values()
    }
    for r in trials:
        assert r.data.tags["pareto_optimal"] == str(r.info.run_id in representatives).lower()
        tied = any(r in rs and r.info.run_id not in representatives for rs in points.values())
        assert r.data.tags["pareto_duplicate"] == str(tied).lower(), r.data.tags["optuna_trial"]
    tagged = [r for r in trials if r.data.tags["pareto_optimal"] == "true"]
    assert tagged, "at least one feasible trial is expected on the smoke-test front"
    assert all(r.data.tags["feasible"] == "true" for r in tagged)
    found = mlflow.search_runs([exp.experiment_id], filter_string="tags.pareto_optimal = 'true'")
    assert set(found["run_id"]) == {r.info.run_id for r in tagged}
    models = mlflow.search_logged_models(
        experiment_ids=[exp.experiment_id], filter_string="tags.pareto_optimal = 'true'", output_format="list"
    )
    assert {m.source_run_id for m in models} == {r.info.run_id for r in tagged}

    # every logged model: named after its run, one value per metric name, the run's final values
    for r in finished:
        model = mlflow.get_logged_model(r.data.tags["model_id"])
        assert model.name == r.info.run_name
        keys = [m.key for m in model.metrics]
        assert len(keys) == len(set(keys)), f"{r.info.run_name}: metric names repeat on its model page"
        on_model = {m.key: m.value for m in model.metrics}
        for key in ("val_avg_f1", "val_eopp1", "test_avg_f1", "achieved_ratio"):
            assert on_model[key] == r.data.metrics[key], (r.info.run_name, key)
        if r.data.tags["method"] == "fairprune":
            assert on_model["curve/ratio"] == pytest.approx(r.data.metrics["achieved_ratio"])
            assert r.data.tags["mlflow.source.name"].startswith("sweeps/pareto.py")  # not Ray's worker script
        assert r.data.params["group_g0"] and r.data.params["group_g1"]  # what g0/g1 in metric names are

    # the front's models are registered under the experiment's name, the picks as aliases
    versions = client.search_model_versions("name = 'e2e'")
    assert {v.tags["model_id"] for v in versions} == {r.data.tags["model_id"] for r in tagged}
    by_alias = {
        a: client.get_model_version_by_alias("e2e", a).tags["model_id"] for a in ("best-f1", "fairest-feasible", "knee")
    }
    best = max(tagged, key=lambda r: r.data.metrics["val_avg_f1"])
    fairest = min(tagged, key=lambda r: r.data.metrics["val_eopp1"])
    assert by_alias["best-f1"] == best.data.tags["model_id"]
    assert by_alias["fairest-feasible"] == fairest.data.tags["model_id"]
    assert by_alias["knee"] in {r.data.tags["model_id"] for r in tagged}

    # a tagged model loads and predicts exactly like the in-memory pruned model did (through the
    # tool's own inference, channels-last on the CPU), and like a plain NCHW forward up to float
    # rounding with the same classes: through MLflow's loader (unpickles) and from its
    # safetensors (with pickle disallowed)
    from fairprune_core.tracking import load_pruned_model

    chosen = tagged[0]
    logged = np.load(
        mlflow.artifacts.download_artifacts(
            run_id=chosen.info.run_id, artifact_path="predictions/val_logits.npy", dst_path=str(tmp_path / "dl")
        )
    )
    state = json.loads((storage / "e2e" / "sweep.json").read_text())
    val = load_dataset(**state["dataset_spec"]).split("val")
    os.environ["MLFLOW_ALLOW_PICKLE_DESERIALIZATION"] = "false"
    try:
        safe = load_pruned_model(chosen.data.tags["model_uri"], mlflow_server)
    finally:
        os.environ.pop("MLFLOW_ALLOW_PICKLE_DESERIALIZATION")
    for model in (mlflow.pytorch.load_model(chosen.data.tags["model_uri"]), safe):
        np.testing.assert_array_equal(predict(model, val.images), logged)
        with torch.no_grad():
            plain = model.eval()(to_model_input(val.images)).numpy()  # a split's numpy images as they are
        np.testing.assert_allclose(plain, logged, rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(plain.argmax(1), logged.argmax(1))
        for name, mask in model.masks.items():
            assert (model.get_parameter(name)[~mask] == 0).all()

    # the parent run holds the front as tables and plots
    names = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {
        "pareto_front.parquet",
        "pareto_front.csv",
        "pareto_front.png",
        "pareto_front.svg",
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


def test_the_printed_load_snippet_works_from_another_folder(swept, tmp_path):
    """The lines the sweep prints under "load one (from anywhere):" run as they are elsewhere."""
    lines = swept.last.splitlines()
    start = lines.index("  load one (from anywhere; nothing is unpickled):") + 1
    snippet = [line.strip() for line in lines[start : start + 3]]
    assert snippet[0] == "from fairprune_core.tracking import load_pruned_model"
    assert "@knee" in snippet[1] and "tracking_uri=" in snippet[1]
    # the pickle loader is only mentioned, with the warning, never the line to run
    assert snippet[2].startswith("# mlflow.pytorch.load_model(") and "unpickles" in snippet[2]
    code = "\n".join([*snippet[:2], "print(type(model).__name__, len(model.masks))"])
    env = dict(swept.env, MLFLOW_ALLOW_PICKLE_DESERIALIZATION="false")  # it works without unpickling
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[0] == "PrunedVGG"
    assert not (tmp_path / "mlflow.db").exists(), "the snippet must not create a local store"


def test_optuna_dashboard_names_the_objectives_and_marks_infeasible_trials(swept):
    """optuna-dashboard itself (its server, on the sweep's journal) serves the study."""
    port = _free_port()
    journal = swept.storage / "e2e" / "optuna.journal"
    proc = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "optuna-dashboard"),
            str(journal),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        detail = _get_json(f"http://127.0.0.1:{port}/api/studies/0", proc)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    assert detail["objective_names"] == ["val_avg_f1", "val_eopp1"]
    client = MlflowClient(swept.uri)
    exp_id = client.get_experiment_by_name("e2e").experiment_id
    runs = {r.data.tags["optuna_trial"]: r for r in client.search_runs([exp_id], "tags.role = 'trial'")}
    complete = [t for t in detail["trials"] if t["state"] == "Complete"]
    assert len(complete) == 6
    for t in complete:  # feasible in the dashboard (all constraints <= 0) exactly when the sweep says so
        feasible = all(c <= 0 for c in t["constraints"])
        assert feasible == (runs[str(t["number"])].data.tags["feasible"] == "true"), t["number"]


def _get_json(url: str, proc: subprocess.Popen, timeout_s: float = 90) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                return json.loads(r.read())
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"no answer from {url}")
            time.sleep(0.5)


def _browser():
    """Headless Chromium through selenium (Debian: apt-get install chromium chromium-driver)."""
    import shutil

    binary = next((b for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)
    driver = shutil.which("chromedriver")
    if not (binary and driver):
        message = "needs chromium and chromedriver (apt-get install chromium chromium-driver)"
        if os.environ.get("CI"):
            pytest.fail(message + ": .ci/run installs them")
        pytest.skip(message)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which(binary)
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1600,1000",
    ):
        opts.add_argument(arg)
    return webdriver.Chrome(service=Service(driver), options=opts)


def test_the_mlflow_ui_lists_the_front_when_filtered_by_its_tag(swept):
    """The README's way to browse: the runs page filtered by tags.pareto_optimal = 'true', in a real
    browser against the real server, lists the front's trial runs and no other trial."""
    import urllib.parse

    client = MlflowClient(swept.uri)
    exp_id = client.get_experiment_by_name("e2e").experiment_id
    trials = client.search_runs([exp_id], "tags.role = 'trial' and attributes.status = 'FINISHED'")
    expected = {r.info.run_name for r in trials if r.data.tags["pareto_optimal"] == "true"}
    assert expected
    browser = _browser()
    try:
        query = urllib.parse.quote("tags.pareto_optimal = 'true'")
        browser.get(f"{swept.uri}/#/experiments/{exp_id}/runs?searchFilter={query}")

        def listed() -> set[str]:
            links = browser.find_elements("css selector", "[role=row] a[href*='/runs/']")
            return {a.text for a in links if a.text}

        deadline = time.monotonic() + 90
        while not listed() and time.monotonic() < deadline:
            time.sleep(0.5)
        # trials are child runs: the UI lists them under their sweep's row, collapsed; expand it
        for button in browser.find_elements("css selector", "button[data-component-id*='runnamecellrenderer']"):
            button.click()
        while not (expected <= listed()) and time.monotonic() < deadline:
            time.sleep(0.5)
        shown = listed()
    finally:
        browser.quit()
    assert {n for n in shown if n.startswith("trial-")} == expected, shown


def test_the_mlflow_ui_shows_a_safetensors_only_model_with_its_metrics(mlflow_server):
    """A model logged with --safetensors-only (no flavour) has a working model page in the real UI:
    its name, status, the run's metrics at its step and its final metrics."""
    from fairprune_core.models import ModelConfig, build_model
    from fairprune_core.tracking.mlflow_store import log_pruned_model

    mlflow.set_tracking_uri(mlflow_server)
    exp = mlflow.create_experiment("ui-safetensors-only")
    model = build_model(ModelConfig(num_classes=4, image_size=32, width=0.125), seed=0)
    with mlflow.start_run(experiment_id=exp, run_name="trial-042"):
        mlflow.log_metrics({"curve/val_avg_f1": 0.7731}, step=2)
        info = log_pruned_model(model, {}, name="trial-042", step=2, pickle_flavour=False)
        mlflow.log_metrics({"val_avg_f1": 0.8123}, step=2, model_id=info.model_id)
    browser = _browser()
    try:
        browser.get(f"{mlflow_server}/#/experiments/{exp}/models/{info.model_id}")
        wanted = ("trial-042", "Ready", "curve/val_avg_f1", "0.7731", "val_avg_f1", "0.8123", info.model_id)
        deadline = time.monotonic() + 90
        text = ""
        while time.monotonic() < deadline:
            text = browser.find_element("tag name", "body").text
            if all(w in text for w in wanted):
                break
            time.sleep(0.5)
    finally:
        browser.quit()
    assert all(w in text for w in wanted), text[:3000]
