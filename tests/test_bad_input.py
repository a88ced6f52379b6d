"""Bad input, table-driven: each case runs an entry point's ``main`` as the command line does
(through ``run_main``) in an empty folder, and must exit non-zero with a one-line message holding
the given words, no traceback, and nothing left behind (no data cache, no sweep folder, no MLflow
store, no Ray session started by it)."""

from __future__ import annotations

import importlib.util
import pickle
import socket
import sys
from pathlib import Path

import pytest
import torch

from fairprune_core.cli import run_main

from .conftest import REPO


def _entry(script: str):
    spec = importlib.util.spec_from_file_location(f"entry_{script}", REPO / "sweeps" / f"{script}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Payload:
    """Unpickling this writes a file: what a malicious checkpoint would do."""

    def __reduce__(self):
        return (Path.write_text, (Path("PWNED"), "the payload ran"))


def _files(tmp: Path) -> dict[str, Path]:
    (tmp / "bad.yaml").write_text("trials: [1, 2\n")
    (tmp / "unknown.yaml").write_text("no_such_flag: 3\n")
    (tmp / "truncated.pt").write_bytes(b"PK\x03\x04" + b"\x00" * 20)
    with (tmp / "evil.pt").open("wb") as f:
        pickle.dump({"format_version": 1, "x": _Payload()}, f)
    torch.save({"format_version": 99}, tmp / "other.pt")
    (tmp / "empty_root").mkdir()
    for name, text in YAML_VALUES.items():
        (tmp / name).write_text(text)
    _edited_checkpoints(tmp)
    return {
        *EDITED_CHECKPOINTS,
        "bad.yaml",
        "unknown.yaml",
        "truncated.pt",
        "evil.pt",
        "other.pt",
        "empty_root",
        *YAML_VALUES,
    }


EDITED_CHECKPOINTS = ("unknown_key.pt", "wrong_shape.pt", "huge_width.pt", "no_state.pt")


def _edited_checkpoints(tmp: Path) -> None:
    """A well-formed checkpoint of a tiny model, then edited as a user (or an attacker) might."""
    from fairprune_core.models import ModelConfig, build_model

    config = ModelConfig(num_classes=4, image_size=32, width=1 / 16)
    good = {
        "format_version": 1,
        "model_config": config.to_dict(),
        "state_dict": build_model(config).state_dict(),
        "class_names": ["a", "b", "c", "d"],
        "group_names": ["light", "dark"],
        "dataset_name": "synthetic",
        "manifest_fingerprint": "0" * 64,
    }
    torch.save({**good, "model_config": {**config.to_dict(), "depth": 19}}, tmp / "unknown_key.pt")
    state = dict(good["state_dict"])
    state["classifier.6.weight"] = torch.zeros(7, state["classifier.6.weight"].shape[1])  # a 7-class head
    torch.save({**good, "state_dict": state}, tmp / "wrong_shape.pt")
    torch.save({**good, "model_config": {**config.to_dict(), "width": 1000}}, tmp / "huge_width.pt")
    torch.save({k: v for k, v in good.items() if k != "state_dict"}, tmp / "no_state.pt")


# config files whose values are checked as their flags' are (name -> content)
YAML_VALUES = {
    "float_trials.yaml": "trials: 3.7\n",
    "float_concurrency.yaml": "concurrency: 1.5\n",
    "huge_trials.yaml": "trials: 1e23\n",
    "many_trials.yaml": "trials: 100000000000000000000000\n",
    "scalar_range.yaml": "final_range: 0.3\n",
    "three_range.yaml": "step_range: [0.01, 0.1, 0.2]\n",
    "string_beta.yaml": "beta_range: [0, 1e3]\n",
    "huge_beta.yaml": "beta_range: [0, 1e308]\n",
    "bad_sampler.yaml": "sampler: simplex\n",
    "string_switch.yaml": "no_paper_settings: 'yes'\n",
    "list_trials.yaml": "trials: [3]\n",
    "bool_trials.yaml": "trials: true\n",
}


UNREACHABLE = f"http://127.0.0.1:{_free_port()}"

# (script, argv, words the message must contain)
CASES = [
    ("pareto", ["--trials", "0"], ["--trials", ">= 1"]),
    ("pareto", ["--trials", "-3"], ["--trials"]),
    ("pareto", ["--concurrency", "0"], ["--concurrency"]),
    ("pareto", ["--workers-per-trial", "-1"], ["--workers-per-trial"]),
    ("pareto", ["--bootstrap", "50"], ["--bootstrap", "100"]),
    ("pareto", ["--cpus-per-worker", "0"], ["--cpus-per-worker"]),
    ("pareto", ["--gpus-per-worker", "-1"], ["--gpus-per-worker"]),
    ("pareto", ["--gpus-per-trial", "-1"], ["--gpus-per-trial"]),
    ("pareto", ["--stop-eopp1", "-1"], ["--stop-eopp1"]),
    ("pareto", ["--stop-eopp1", "1.5"], ["--stop-eopp1"]),
    ("pareto", ["--max-sub-batch", "0"], ["--max-sub-batch"]),
    ("pareto", ["--obd-final", "1.5"], ["--obd-final"]),
    ("pareto", ["--obd-step", "0"], ["--obd-step"]),
    ("pareto", ["--obd-step", "0.5", "--obd-final", "0.2"], ["--obd-final", "--obd-step", "overshoot"]),
    ("pareto", ["--f1-floor", "1.5"], ["--f1-floor"]),
    ("pareto", ["--step-range", "0.3", "0.1"], ["--step-range", "LOW < HIGH"]),
    ("pareto", ["--final-range", "0.5", "1.2"], ["--final-range", "(0, 1)"]),
    ("pareto", ["--beta-range", "-1", "1"], ["--beta-range"]),
    ("pareto", ["--max-steps", "-1"], ["--max-steps"]),
    ("pareto", ["--curvature-batches", "0"], ["--curvature-batches"]),
    ("pareto", ["--curvature-batch-size", "0"], ["--curvature-batch-size"]),
    ("pareto", ["--mc-samples", "0"], ["--mc-samples"]),
    ("pareto", ["--beta", "-1"], ["--beta"]),
    ("pareto", ["--adv-weight", "-1"], ["--adv-weight"]),
    ("pareto", ["--baselines", "vanilla,foo"], ["--baselines", "foo"]),
    ("pareto", ["--baselines", "obd"], ["--baselines", "vanilla"]),
    ("pareto", ["--sampler", "foo"], ["--sampler", "invalid choice"]),
    ("pareto", ["--prepare-suggestions", "sometimes"], ["--prepare-suggestions", "invalid choice"]),
    ("pareto", ["--tracking-uri", "ftp://example.org/x"], ["ftp", "tracking"]),
    ("pareto", ["--tracking-uri", UNREACHABLE], ["cannot reach the MLflow tracking server", "mlflow server"]),
    ("pareto", ["--config", "missing.yaml"], ["missing.yaml"]),
    ("pareto", ["--config", "bad.yaml"], ["bad.yaml"]),
    ("pareto", ["--config", "unknown.yaml"], ["no_such_flag"]),
    ("pareto", ["--config", "float_trials.yaml"], ["float_trials.yaml", "trials", "must be an integer", "--trials"]),
    ("pareto", ["--config", "float_concurrency.yaml"], ["concurrency", "must be an integer"]),
    ("pareto", ["--config", "huge_trials.yaml"], ["huge_trials.yaml", "trials", "must be an integer"]),
    ("pareto", ["--config", "many_trials.yaml"], ["--trials", "at most 100,000"]),
    ("pareto", ["--config", "scalar_range.yaml"], ["scalar_range.yaml", "final_range", "list of 2 values"]),
    ("pareto", ["--config", "three_range.yaml"], ["step_range", "list of 2 values, got 3"]),
    ("pareto", ["--config", "string_beta.yaml"], ["--beta-range", "[0, 100]"]),
    ("pareto", ["--config", "huge_beta.yaml"], ["--beta-range", "[0, 100]"]),
    ("pareto", ["--config", "bad_sampler.yaml"], ["bad_sampler.yaml", "sampler", "must be one of"]),
    ("pareto", ["--config", "string_switch.yaml"], ["no_paper_settings", "true or false"]),
    ("pareto", ["--config", "list_trials.yaml"], ["trials", "single int"]),
    ("pareto", ["--config", "bool_trials.yaml"], ["trials", "single int"]),
    ("pareto", ["--beta", "1e308"], ["--beta", "[0, 100]"]),
    ("pareto", ["--resume", "--name", "typo"], ["--resume", "typo"]),
    ("pareto", ["--checkpoint", "missing.pt"], ["--checkpoint", "missing.pt"]),
    ("pareto", ["--checkpoint", "evil.pt"], ["not a FairPrune checkpoint", "never unpickles"]),
    ("pareto", ["--checkpoint", "truncated.pt"], ["truncated"]),
    ("pareto", ["--checkpoint", "other.pt"], ["not a FairPrune checkpoint"]),
    ("pareto", ["--checkpoint", "unknown_key.pt"], ["unknown_key.pt", "unknown model_config keys ['depth']"]),
    ("pareto", ["--checkpoint", "wrong_shape.pt"], ["wrong_shape.pt", "classifier.6.weight has shape [7,"]),
    ("pareto", ["--checkpoint", "huge_width.pt"], ["huge_width.pt", "width must be in (0, 4]"]),
    ("pareto", ["--checkpoint", "no_state.pt"], ["no_state.pt", "lacks state_dict"]),
    ("prune", ["--checkpoint", "wrong_shape.pt"], ["wrong_shape.pt", "do not fit the model"]),
    ("pareto", ["--dataset", "isic2019"], ["--data-root"]),
    ("pareto", ["--dataset", "isic2019", "--data-root", "empty_root"], ["empty_root"]),
    ("pareto", ["--dataset", "fitzpatrick17k", "--data-root", "no_such_dir"], ["no_such_dir"]),
    ("prune", ["--method", "obd,kfac"], ["--method", "kfac"]),
    ("prune", ["--step-ratio", "0.5", "--final-ratio", "0.2"], ["--final-ratio", "--step-ratio"]),
    ("prune", ["--estimator", "kfac"], ["--estimator", "invalid choice"]),
    ("prune", ["--checkpoint", "evil.pt"], ["not a FairPrune checkpoint"]),
    ("prune", ["--curvature-batches", "0"], ["--curvature-batches"]),
]


@pytest.fixture(scope="module")
def entries():
    return {name: _entry(name) for name in ("pareto", "prune")}


@pytest.mark.parametrize(("script", "argv", "words"), CASES, ids=[f"{c[0]} {' '.join(c[1])}" for c in CASES])
def test_bad_input_is_one_clear_line_and_leaves_nothing_behind(
    entries, tmp_path, monkeypatch, capsys, script, argv, words
):
    import ray

    keep = _files(tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    cache = tmp_path / "cache"
    try:
        rc = run_main(entries[script].main, [*argv, "--cache-dir", str(cache)])
    except SystemExit as exc:  # argparse and the entry points' own usage errors
        rc = exc.code if isinstance(exc.code, int) else 1
        if not isinstance(exc.code, int | None):
            print(exc.code, file=sys.stderr)
    err = capsys.readouterr().err
    assert rc not in (0, None), f"accepted: {argv}"
    assert "Traceback" not in err
    message = err.strip().splitlines()[-1] if err.strip() else ""
    for word in words:
        assert word in message, f"{argv}: {message!r} lacks {word!r}"
    left = {p.name for p in tmp_path.iterdir()} - keep
    assert not left, f"{argv} left {sorted(left)} behind"
    assert not (tmp_path / "PWNED").exists(), "a checkpoint's payload ran"
    assert not ray.is_initialized(), "Ray was started for bad input"


def _raise_in(module_file: str, exc: Exception):
    """A function whose code lives in ``module_file`` of the package and raises ``exc``."""
    import fairprune_core

    path = str(Path(fairprune_core.__file__).parent / module_file)
    namespace: dict = {}
    exec(compile("def main(argv):\n    raise EXC\n", path, "exec"), {"EXC": exc}, namespace)
    return namespace["main"]


def test_our_own_bugs_keep_their_traceback_and_the_variable_shows_every_one(monkeypatch, capsys):
    # a ValueError where settings are checked is the user's: one line
    assert run_main(_raise_in("config.py", ValueError("--trials must be >= 1"))) == 2
    assert capsys.readouterr().err.strip() == "error: --trials must be >= 1"
    # the same type raised inside the numerics is a bug: its traceback is kept
    with pytest.raises(ValueError, match="shapes do not match"):
        run_main(_raise_in("metrics.py", ValueError("shapes do not match")))
    with pytest.raises(FileNotFoundError):
        run_main(_raise_in("sweep/front.py", FileNotFoundError("internal")))
    monkeypatch.setenv("FAIRPRUNE_TRACEBACK", "1")
    with pytest.raises(ValueError, match="--trials"):
        run_main(_raise_in("config.py", ValueError("--trials must be >= 1")))


def _one_class_checkpoint(entry, argv: list[str], path: Path) -> Path:
    """A checkpoint of the dataset ``argv`` loads, whose model predicts class 1 for every image."""
    from fairprune_core.checkpoint import save_checkpoint
    from fairprune_core.cli import dataset_from_args
    from fairprune_core.models import ModelConfig, build_model

    dataset = dataset_from_args(entry._parser().parse_args(argv))
    size = dataset.split("val").images.shape[1]
    model = build_model(ModelConfig(num_classes=dataset.num_classes, image_size=size, width=1 / 16))
    last = model.classifier[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.copy_(torch.nn.functional.one_hot(torch.tensor(1), dataset.num_classes).float())
    return save_checkpoint(path, model, dataset=dataset)


CHANCE_WORDS = ("near chance on validation", "100% of predictions are one class", "--epochs", "--allow-chance-model")


def test_a_sweep_of_a_one_class_vanilla_model_is_refused_before_ray_or_any_run(entries, tmp_path, monkeypatch, capsys):
    """A vanilla model that predicts one class: the sweep says so and what to change, in one line,
    before starting Ray, the MLflow store or any run (a sweep of it would search for nothing)."""
    import ray

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    store = tmp_path / "mlflow.db"
    argv = ["--cache-dir", str(tmp_path / "cache"), "--tracking-uri", f"sqlite:///{store}", "--name", "chance"]
    _one_class_checkpoint(entries["pareto"], argv, tmp_path / "chance.pt")
    capsys.readouterr()
    rc = run_main(entries["pareto"].main, [*argv, "--checkpoint", "chance.pt"])
    err = capsys.readouterr().err
    assert rc not in (0, None) and "Traceback" not in err
    message = err.strip().splitlines()[-1]
    for words in (*CHANCE_WORDS, "a sweep of it"):
        assert words in message, message
    assert not store.exists(), "the MLflow store was opened for a refused sweep"
    assert not ray.is_initialized(), "Ray was started for a refused sweep"
    assert not list(tmp_path.glob("**/sweep.json")), "a refused sweep left a sweep behind"


def test_prune_refuses_a_one_class_vanilla_model_before_any_method_and_warns_first_when_allowed(
    entries, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    argv = ["--cache-dir", str(tmp_path / "cache"), "--smoke-test"]
    _one_class_checkpoint(entries["prune"], argv, tmp_path / "chance.pt")
    capsys.readouterr()
    rc = run_main(entries["prune"].main, [*argv, "--checkpoint", "chance.pt"])
    captured = capsys.readouterr()
    assert rc not in (0, None) and "Traceback" not in captured.err
    message = captured.err.strip().splitlines()[-1]
    for words in (*CHANCE_WORDS, "comparing methods on it"):
        assert words in message, message
    assert "OBD" not in captured.out, "a method ran before the refusal"
    # allowed: the loud warning comes right after vanilla, before the methods run
    assert run_main(entries["prune"].main, [*argv, "--checkpoint", "chance.pt", "--allow-chance-model"]) == 0
    out = capsys.readouterr().out
    assert out.index("WARNING: the vanilla model is near chance") < out.index("OBD: step")
