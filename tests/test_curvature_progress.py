"""The progress line inside a curvature step: counts, throughput, time left; results unchanged."""

from __future__ import annotations

import re

import numpy as np
import torch

from fairprune_core.curvature.backends import LocalCurvature, Progress
from fairprune_core.curvature.batches import GroupSampler
from fairprune_core.curvature.hessian import CurvatureConfig
from fairprune_core.models import ModelConfig, build_model


def _sampler(seed: int, batches: int) -> GroupSampler:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(40, 32, 32, 3), dtype=np.uint8)
    return GroupSampler(images, rng.integers(0, 3, size=40), batch_size=4, num_batches=batches, seed=seed)


def test_a_logged_step_reports_batches_done_of_total_and_computes_the_same_sums():
    model = build_model(ModelConfig(num_classes=3, image_size=32, width=0.0625), seed=0)
    requests = [("unprivileged", _sampler(0, 3)), ("privileged", _sampler(1, 2))]
    lines: list[str] = []
    logged = LocalCurvature(CurvatureConfig(), log=lines.append, progress_every_s=0.0).compute(model, requests, 0)
    silent = LocalCurvature(CurvatureConfig()).compute(model, requests, 0)
    assert [re.search(r"(\d+)/5 mini-batches", line).group(1) for line in lines] == ["1", "2", "3", "4", "5"]
    assert all("samples/s" in line and "step 0" in line for line in lines)
    assert all("left in this step" in line for line in lines[:-1]) and "left" not in lines[-1]
    for tag in ("unprivileged", "privileged"):
        assert logged[tag].count == silent[tag].count
        for name, value in silent[tag].sums.items():
            torch.testing.assert_close(logged[tag].sums[name], value)


def test_progress_estimates_the_time_left_from_the_rate_so_far():
    lines: list[str] = []
    progress = Progress(lines.append, 10, every_s=0.0)
    progress.t0 -= 20.0  # 20 s for the first 2 batches: 10 s a batch, 8 batches left
    progress.update(32)
    progress.update(32)
    assert "2/10 mini-batches, 3 samples/s, ~1m20s left" in lines[-1]
