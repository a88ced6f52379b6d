"""Faults and bad input, round two: the tool never deletes or overwrites what it did not create,
writes nothing outside the folders named, repairs what a crash tore, and says what it does.

Each case runs the real entry point (``run_main``, as the command line does) or the real library
call, on real files; process faults use real processes (``test_process_faults.py``)."""

from __future__ import annotations

import json
import subprocess
from dataclasses import asdict
from pathlib import Path

import pytest

from fairprune_core.cli import run_main

from .test_bad_input import _entry


@pytest.fixture(scope="module")
def entries():
    return {name: _entry(name) for name in ("pareto", "prune", "pretrain", "report")}


def _run(entries, script: str, argv: list[str], capsys) -> tuple[int, str]:
    try:
        rc = run_main(entries[script].main, argv)
    except SystemExit as exc:
        rc = exc.code if isinstance(exc.code, int) else 2
        if not isinstance(exc.code, int | None):
            print(exc.code, file=__import__("sys").stderr)
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    return rc, (err.strip().splitlines() or [""])[-1]


# -- 1. never delete what the tool did not create ------------------------------------------------
def _stamp_of_another_config(root: Path) -> None:
    from fairprune_core.datasets import SyntheticConfig

    root.mkdir()
    (root / "synthetic.json").write_text(json.dumps(asdict(SyntheticConfig(num_images=99, seed=7))))


def test_a_synthetic_root_with_the_users_files_is_refused_and_nothing_is_touched(entries, tmp_path, capsys):
    root = tmp_path / "d"
    _stamp_of_another_config(root)
    (root / "notes.txt").write_text("x")
    rc, message = _run(
        entries, "pretrain", ["--data-root", str(root), "--synthetic-images", "600", "--smoke-test"], capsys
    )
    assert rc == 2
    assert "notes.txt" in message and "nothing was changed" in message
    assert (root / "notes.txt").read_text() == "x"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"], "a temporary sibling was left behind"


def test_a_synthetic_root_the_tool_wrote_is_regenerated_for_another_config(tmp_path):
    from fairprune_core.datasets import SyntheticConfig, generate_synthetic

    root = generate_synthetic(tmp_path / "d", SyntheticConfig(num_images=60, image_size=16, seed=1))
    generate_synthetic(root, SyntheticConfig(num_images=80, image_size=16, seed=1))
    assert json.loads((root / "synthetic.json").read_text())["num_images"] == 80
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]
    # one foreign file anywhere in the tree (here among the images) and it is refused
    next((root / "images").iterdir()).joinpath("mine.png").write_bytes(b"x")
    from fairprune_core.datasets import DatasetError

    with pytest.raises(DatasetError, match=r"mine\.png"):
        generate_synthetic(root, SyntheticConfig(num_images=60, image_size=16, seed=1))


def _mount_tmpfs(path: Path, size: str, *options: str) -> None:
    path.mkdir(exist_ok=True)
    opts = ",".join([f"size={size}", *options])
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.decode().strip()}): needs root in a container")


@pytest.fixture
def small_disk(tmp_path):
    """A real 1 MB file system (tmpfs), unmounted afterwards."""
    path = tmp_path / "disk"
    _mount_tmpfs(path, "1m")
    yield path
    subprocess.run(["umount", "-l", str(path)], check=False)


def test_a_full_disk_while_writing_synthetic_data_is_one_line_and_leaves_no_temporary_folder(
    entries, small_disk, capsys
):
    rc, message = _run(
        entries,
        "pretrain",
        ["--data-root", str(small_disk / "d"), "--synthetic-images", "600", "--smoke-test"],
        capsys,
    )
    assert rc == 2
    assert "cannot write the synthetic dataset" in message and "No space left" in message
    assert list(small_disk.iterdir()) == [], "a temporary sibling was left on the full disk"


# -- 2. nothing outside the folders named ---------------------------------------------------------
@pytest.mark.parametrize("name", ["../../x", "a/b", "/abs", "..", ".hidden", ""])
@pytest.mark.parametrize("script", ["pareto", "report"])
def test_name_is_a_name_not_a_path(entries, tmp_path, monkeypatch, capsys, script, name):
    monkeypatch.chdir(tmp_path)
    rc, message = _run(entries, script, ["--storage", "runs", "--name", name], capsys)
    assert rc == 2 and "--name" in message and "not a path" in message
    assert list(tmp_path.iterdir()) == []
