"""Every entry point's --smoke-test runs end to end (pareto.py and report.py run in test_sweep_e2e)."""

from __future__ import annotations

import os
import subprocess
import sys

from .conftest import REPO


def _run(script: str, *args: str, cwd, cache) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.pop("RAY_ADDRESS", None)
    return subprocess.run(
        [sys.executable, str(REPO / "sweeps" / script), "--smoke-test", "--cache-dir", str(cache), *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
        env=env,
    )


def test_pretrain_smoke_test(tmp_path, cache_dir):
    res = _run("pretrain.py", cwd=tmp_path, cache=cache_dir)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    assert "best checkpoint:" in res.stdout and "BCa" not in res.stderr


def test_prune_smoke_test_compares_every_method(tmp_path, cache_dir):
    res = _run("prune.py", "--method", "all", cwd=tmp_path, cache=cache_dir)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    out = res.stdout
    assert "95% BCa bootstrap intervals" in out and "null q95" in out
    for name in ("OBD", "FairPrune", "AdvConf", "AdvRev", "DomainIndep"):
        assert f"  {name} vs Vanilla (test):" in out
    assert "vs OBD (pr=10%) (test):" in out  # FairPrune against OBD at the same ratio


def test_a_bad_method_name_is_a_clear_error(tmp_path, cache_dir):
    res = _run("prune.py", "--method", "obd,kfac", cwd=tmp_path, cache=cache_dir)
    assert res.returncode != 0 and "--method: unknown 'kfac'; choose among obd, fairprune" in res.stderr


def test_resuming_a_sweep_that_does_not_exist_names_the_ones_that_do(tmp_path, cache_dir):
    (tmp_path / "sweeps" / "real-one").mkdir(parents=True)
    (tmp_path / "sweeps" / "real-one" / "sweep.json").write_text("{}")
    args = ("--resume", "--name", "typo", "--storage", str(tmp_path / "sweeps"))
    res = _run("pareto.py", *args, cwd=tmp_path, cache=cache_dir)
    assert res.returncode != 0 and "Traceback" not in res.stderr
    assert "--resume --name typo: no sweep of that name" in res.stderr and "real-one" in res.stderr


def test_a_safetensors_only_sweep_logs_every_model_once_and_says_how_to_load_it(tmp_path, cache_dir):
    import mlflow
    import torch

    from fairprune_core.tracking import load_pruned_model
    from fairprune_core.tracking.mlflow_store import SAFETENSORS_ONLY

    store = f"sqlite:///{tmp_path}/mlflow.db"
    args = ("--safetensors-only", "--trials", "2", "--tracking-uri", store, "--storage", str(tmp_path / "sweeps"))
    res = _run("pareto.py", *args, cwd=tmp_path, cache=cache_dir)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    assert "mlflow.pytorch.load_model" not in res.stdout and "Pickle" not in res.stderr  # no flavour to name
    mlflow.set_tracking_uri(store)
    runs = mlflow.search_runs(search_all_experiments=True, output_format="list")
    runs = [r for r in runs if r.data.tags.get("role") in ("baseline", "trial")]
    models = [mlflow.get_logged_model(r.data.tags["model_id"]) for r in runs if "model_id" in r.data.tags]
    assert len(models) == len(runs) >= 4, [r.info.run_name for r in runs]  # vanilla, OBD, 2 trials
    assert {m.model_type for m in models} == {SAFETENSORS_ONLY}
    line = next(s for s in res.stdout.splitlines() if "load_pruned_model(" in s)
    uri = line.split("load_pruned_model(")[1].split("'")[1]  # the registered @knee the sweep printed
    assert uri.endswith("@knee") and "tracking_uri=" in line
    model = load_pruned_model(uri, store)
    assert model(torch.zeros(1, 3, model.config.image_size, model.config.image_size)).shape[1] >= 2

    # resumed without the flag (no trial left to run): the @knee is still a flavourless model, and
    # the sweep must not tell the user to load it with MLflow's PyTorch loader
    name = next((tmp_path / "sweeps").glob("*/sweep.json")).parent.name
    again = ("--resume", "--name", name, "--trials", "2", "--tracking-uri", store)
    again += ("--storage", str(tmp_path / "sweeps"))
    res = _run("pareto.py", *again, cwd=tmp_path, cache=cache_dir)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    assert "@knee" in res.stdout and "load_pruned_model(" in res.stdout
    assert "mlflow.pytorch.load_model" not in res.stdout


def _ctrl_c_at(prefix: str, cmd: list[str], cwd, env) -> tuple[int, str]:
    """Run ``cmd``, send it SIGINT (a real Ctrl-C) at its first output line starting with ``prefix``;
    (exit code, everything it printed)."""
    import signal

    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=cwd, env=env)
    out = []
    for line in proc.stdout:  # type: ignore[union-attr]
        out.append(line)
        if line.startswith(prefix):
            proc.send_signal(signal.SIGINT)
            break
    rest, _ = proc.communicate(timeout=300)
    return proc.returncode, "".join(out) + rest


def test_ctrl_c_before_the_trials_says_whether_there_is_a_sweep_to_resume(tmp_path, cache_dir):
    """Ctrl-C in the baselines: exit 130, no traceback, and the advice that fits what is on disk
    (resume once the sweep's state is saved, else run the command again)."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("RAY_ADDRESS", None)
    cmd = [sys.executable, str(REPO / "sweeps" / "pareto.py"), "--smoke-test", "--cache-dir", str(cache_dir)]
    cmd += ["--name", "stopped", "--storage", str(tmp_path / "sweeps")]
    cmd += ["--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db"]
    returncode, text = _ctrl_c_at("baseline: ", cmd, tmp_path, env)
    assert returncode == 130, text[-3000:]
    assert "Traceback" not in text and "trials finished" not in text
    if (tmp_path / "sweeps" / "stopped" / "sweep.json").is_file():  # the signal came after the baselines
        assert "Resume it with:\n  python sweeps/pareto.py --resume --name stopped" in text
    else:
        assert "before its baselines were saved: nothing to resume; run the command again" in text


def test_ctrl_c_in_pretraining_is_one_line_and_the_same_command_resumes(tmp_path, cache_dir):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    cmd = [sys.executable, str(REPO / "sweeps" / "pretrain.py"), "--smoke-test", "--epochs", "30"]
    cmd += ["--cache-dir", str(cache_dir), "--out", str(tmp_path / "run")]
    returncode, text = _ctrl_c_at("epoch 1/30", cmd, tmp_path, env)
    assert returncode == 130 and "Traceback" not in text, text[-3000:]
    assert "stopped (Ctrl-C); the same command resumes from the last finished epoch" in text
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)
    assert again.returncode == 0 and "resuming from" in again.stdout, again.stdout[-2000:] + again.stderr[-2000:]


def test_ctrl_c_keeps_its_traceback_when_asked(monkeypatch, capsys):
    import pytest

    from fairprune_core.cli import run_main

    def main(argv):
        raise KeyboardInterrupt

    monkeypatch.setenv("FAIRPRUNE_TRACEBACK", "1")
    with pytest.raises(KeyboardInterrupt):
        run_main(main)
    monkeypatch.delenv("FAIRPRUNE_TRACEBACK")
    assert run_main(main, interrupted="what is kept") == 130
    assert capsys.readouterr().err.strip() == "stopped (Ctrl-C); what is kept"
