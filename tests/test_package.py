"""Package hygiene: light imports, and CI running the README's own test command."""

from __future__ import annotations

import subprocess
import sys

from .conftest import REPO


def test_library_import_does_not_pull_in_ray_mlflow_or_optuna():
    code = (
        "import sys, fairprune_core, fairprune_core.datasets, fairprune_core.pruning, fairprune_core.metrics, "
        "fairprune_core.curvature.hessian, fairprune_core.experiment, fairprune_core.methods, fairprune_core.sweep, "
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


def _imports(path, package: str) -> set[str]:
    """Modules of ``package`` a module imports, at any depth of its code (function-level included)."""
    import ast

    tree = ast.parse(path.read_text())
    parts = path.relative_to(REPO).with_suffix("").parts
    here = parts[:-1]  # the package a relative import starts from (for __init__ too)
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = list(here[: len(here) - node.level + 1]) if node.level else []
            mod = ".".join([*base, *(node.module.split(".") if node.module else [])])
            found.add(mod)
            found.update(f"{mod}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return {m for m in found if m.startswith(package)}


def test_no_import_loops_even_through_function_level_imports():
    package = "fairprune_core"
    files = {
        ".".join(p.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__"): p
        for p in (REPO / package).rglob("*.py")
    }
    graph = {m: {d for d in _imports(p, package) if d in files and d != m} for m, p in files.items()}
    # a package's __init__ re-exporting its own submodules is not a loop
    graph = {m: {d for d in deps if not m.startswith(d + ".")} for m, deps in graph.items()}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for d in graph[m]:
            if state.get(d) == 1:
                raise AssertionError("import loop: " + " -> ".join([*stack[stack.index(d) :], d]))
            if d not in state:
                visit(d)
        stack.pop()
        state[m] = 2

    for m in graph:
        if m not in state:
            visit(m)


def test_entry_points_answer_help_without_importing_the_training_stack():
    for script in ("pretrain.py", "prune.py", "pareto.py"):
        code = (
            "import runpy, sys; sys.argv = ['x', '--help']\n"
            "try:\n    runpy.run_path({!r}, run_name='__main__')\n"
            "except SystemExit:\n    pass\n"
            "print(sorted(m for m in ('torch', 'ray', 'mlflow', 'optuna', 'pandas') if m in sys.modules))"
        ).format(str(REPO / "sweeps" / script))
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
        assert out.strip().splitlines()[-1] == "[]", script


def test_presets_are_config_instances_and_dataset_names_agree():
    from fairprune_core.config import DATASET_NAMES, PRESETS, Preset
    from fairprune_core.datasets import DATASETS

    assert tuple(DATASETS) == DATASET_NAMES
    assert all(isinstance(p, Preset) for p in PRESETS.values())
    assert PRESETS["paper"].with_overrides(width=0.25, epochs=None).width == 0.25


def test_synthetic_bias_names_agree():
    from fairprune_core.config import SYNTHETIC_BIASES
    from fairprune_core.datasets.synthetic import BIAS_PRESETS

    assert tuple(BIAS_PRESETS) == SYNTHETIC_BIASES
