"""The GPU benchmark's CPU rehearsal (--smoke): the same pipeline end to end, figures consistent."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_smoke_runs_every_stage_and_its_figures_agree(tmp_path):
    out = tmp_path / "gpu_paper_scale.json"
    env = {**os.environ, "PYTHON": sys.executable, "CUDA_VISIBLE_DEVICES": ""}
    cmd = ["bash", "benchmarks/gpu_paper_scale.sh", "--smoke", "--out", str(out), "--work", str(tmp_path / "work")]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    r = json.loads(out.read_text())
    assert r["device"].startswith("CPU") and r["dataset"] == "synthetic"
    pre = r["pretrain"]
    assert 1 <= pre["epochs"] == len(pre["per_epoch"])
    seconds = sum(row["seconds"] for row in pre["per_epoch"])
    assert abs(pre["images_per_s"] * seconds / pre["epochs"] - 876) < 1  # 876 training images per epoch
    assert pre["best_val_avg_f1"] == max(row["val_avg_f1"] for row in pre["per_epoch"])
    curv = r["curvature"]
    for est in ("exact", "mc"):
        assert (
            curv[est]["samples_per_s"] * curv[est]["seconds"] == curv["batch"]
            or abs(curv[est]["samples_per_s"] * curv[est]["seconds"] - curv["batch"]) < 1e-6
        )
        assert abs(curv[est]["x_train_step"] * curv["train_step_s"] - curv[est]["seconds"]) < 1e-9
    for method, per_step in (("obd", 2 * 2 * 16), ("fairprune", 2 * 2 * 16)):
        m = r[method]
        assert m["samples_per_step"] == per_step
        assert m["steps_done"] == len(m["step_seconds"]) == len(m["val_eopp1"])
        if not m["stopped_by_budget"]:
            assert m["steps_done"] == 5 and abs(m["achieved_ratio"] - 0.5) < 1e-3  # 10% steps to 50%
