"""A researcher's own torchvision model, end to end through the entry points as they type them:
pre-training a ResNet-18 with the tool, its weights saved as a plain state dict, then
``prune.py --model resnet18 --weights FILE`` (curvature on a Ray worker), ``pareto.py`` and
``report.py`` on the same file, and the model chosen in MLflow loaded back as a ResNet."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from .conftest import REPO

pytestmark = pytest.mark.slow


def _run(args: list[str], cwd: Path, timeout: int = 900) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("RAY_ADDRESS", None)
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("your-model")


@pytest.fixture(scope="module")
def weights(work, cache_dir) -> Path:
    """A ResNet-18 fine-tuned by the tool on the synthetic data from "ImageNet" weights (a 1000-class
    state dict), saved as a researcher would save theirs."""
    from fairprune_core.models import ModelConfig, build_model

    imagenet = build_model(ModelConfig(num_classes=1000, image_size=32, arch="resnet18"), seed=7).state_dict()
    torch.save(imagenet, work / "resnet18_imagenet.pt")
    out = _run(
        [
            str(REPO / "sweeps/pretrain.py"),
            "--model",
            "resnet18",
            "--weights",
            str(work / "resnet18_imagenet.pt"),
            "--smoke-test",
            "--cache-dir",
            str(cache_dir),
        ],
        work,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "head 'fc' is for other classes" in out.stdout and "initialised resnet18 (32px)" in out.stdout
    best = next((work / "fairprune_runs" / "pretrain").glob("synthetic-*/best.pt"))
    payload = torch.load(best, weights_only=True)
    assert payload["model_config"]["arch"] == "resnet18"
    path = work / "my_resnet18.pt"
    torch.save(payload["state_dict"], path)  # a plain state dict: what torch.save(model.state_dict()) writes
    return path


def test_prune_takes_a_torchvision_model_from_a_weights_file(work, weights, cache_dir):
    out = _run(
        [
            str(REPO / "sweeps/prune.py"),
            "--model",
            "resnet18",
            "--weights",
            str(weights),
            "--smoke-test",
            "--cache-dir",
            str(cache_dir),
            "--workers",
            "1",
            "--allow-chance-model",
            "--out",
            str(work / "pruned"),
        ],
        work,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    text = out.stdout
    assert "imported" in text and "records no training split" in text
    assert "FairPrune" in text and "OBD" in text and "Eopp1" in text
    assert "curvature pool: 4 steps" in text, "OBD's and FairPrune's two steps each ran on the Ray worker"
    from fairprune_core.checkpoint import load_checkpoint

    pruned = load_checkpoint(work / "pruned" / "fairprune.pt")
    assert type(pruned.model).__name__ == "ResNet" and pruned.model_config.arch == "resnet18"
    kept = sum(int(m.sum()) for m in pruned.masks.values()) / sum(m.numel() for m in pruned.masks.values())
    assert abs(kept - 0.9) < 1e-3, "the smoke test's final ratio is 10%"
    # the same file again: imported once, then reused
    again = _run(
        [
            str(REPO / "sweeps/prune.py"),
            "--model",
            "resnet18",
            "--weights",
            str(weights),
            "--smoke-test",
            "--cache-dir",
            str(cache_dir),
            "--method",
            "obd",
            "--allow-chance-model",
        ],
        work,
    )
    assert again.returncode == 0, again.stderr[-3000:]
    assert "reusing imported resnet18" in again.stdout


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--model", "resnet18", "--method", "advconf"], "advconf train a model of their own"),
        (["--model", "resnet18", "--width", "0.5"], "--width scales the built-in VGG-11 only"),
        (["--model", "resnet81"], "unknown model 'resnet81'; did you mean resnet18"),
        (["--model", "densenet121"], "Pass the --model the weights were saved from"),
        (["--model", "resnet18", "--checkpoint", "x.pt"], "--checkpoint and --weights both name the model"),
    ],
)
def test_a_wrong_model_or_weights_flag_is_one_line_before_any_work(work, weights, cache_dir, extra, message):
    before = sorted(p.name for p in work.iterdir())
    command = [str(REPO / "sweeps/prune.py"), "--weights", str(weights), "--smoke-test", "--cache-dir", str(cache_dir)]
    out = _run(
        [*command, *extra],
        work,
        timeout=300,
    )
    assert out.returncode != 0
    assert message in out.stderr, out.stderr[-2000:]
    assert "Traceback" not in out.stderr
    if "densenet121" not in extra:  # (a file's fit to the data's classes is checked once the data is read)
        assert sorted(p.name for p in work.iterdir()) == before, "something was written"


def test_the_baselines_train_any_architecture_with_the_vanilla_recipe(work, weights, cache_dir):
    """AdvConf and DomainIndep on a ResNet-18 the tool pre-trained: their heads found, DomainIndep folded."""
    out = _run(
        [
            str(REPO / "sweeps/prune.py"),
            "--model",
            "resnet18",
            "--smoke-test",
            "--cache-dir",
            str(cache_dir),
            "--method",
            "advconf,domainindep",
            "--allow-chance-model",
        ],
        work,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    # the fixture's model started from other weights: this recipe is another model, pre-trained here
    assert "pre-training resnet18 (32px)" in out.stdout
    assert "AdvConf" in out.stdout and "DomainIndep" in out.stdout


def test_a_sweep_and_its_report_on_a_torchvision_model(work, weights, cache_dir):
    store = f"sqlite:///{work / 'mlflow.db'}"
    common = ["--storage", str(work / "sweeps"), "--name", "r18", "--tracking-uri", store]
    out = _run(
        [
            str(REPO / "sweeps/pareto.py"),
            "--model",
            "resnet18",
            "--weights",
            str(weights),
            "--smoke-test",
            "--cache-dir",
            str(cache_dir),
            "--trials",
            "2",
            "--f1-floor",
            "0.5",
            "--allow-chance-model",
            *common,
        ],
        work,
    )
    assert out.returncode == 0, (out.stdout[-3000:], out.stderr[-3000:])
    report = _run([str(REPO / "sweeps/report.py"), "--smoke-test", *common[:-2]], work)
    assert report.returncode == 0, (report.stdout[-3000:], report.stderr[-3000:])
    assert (work / "sweeps" / "r18" / "report.md").is_file()
    from fairprune_core.tracking import load_pruned_model

    lines = out.stdout.splitlines()
    line = next(ln for ln in lines if "load_pruned_model(" in ln and "models:/" in ln)
    uri = line.split("load_pruned_model(")[1].split(",")[0].strip("'\"")
    model = load_pruned_model(uri, tracking_uri=store)
    assert type(model).__name__ == "PrunedResNet" and isinstance(model, torch.nn.Module)
    assert model.config.arch == "resnet18" and model.masks
    with torch.no_grad():
        assert model.eval()(torch.zeros(2, 3, 32, 32)).shape == (2, 4)
