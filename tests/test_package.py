"""Package hygiene: light imports, and CI running the README's own test command."""

from __future__ import annotations

import subprocess
import sys

from .conftest import REPO


def test_library_import_does_not_pull_in_ray_mlflow_or_optuna():
    code = (
        "import sys, fairprune_core, fairprune_core.datasets, fairprune_core.pruning, fairprune_core.metrics, "
        "fairprune_core.hessian, fairprune_core.experiment, fairprune_core.methods, fairprune_core.sweep, "
        "fairprune_core.tracking, fairprune_core.cli; "
        "print(sorted(m for m in ('ray', 'mlflow', 'optuna') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_readme_starts_with_the_two_commands_and_ci_runs_the_second():
    lines = (REPO / "README.md").read_text().splitlines()
    first_block = lines[lines.index("```bash") + 1 : lines.index("```bash") + 3]
    assert first_block[0].endswith("python sweeps/pareto.py")
    assert first_block[1].endswith("python -m pytest") and "[test]" in first_block[1]
    ci = (REPO / ".ci" / "run").read_text()
    assert "README.md" in ci and "sed -n 2p" in ci  # .ci/run executes that second line verbatim
