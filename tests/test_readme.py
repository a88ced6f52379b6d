"""The README's sample output keeps the shape and the counts of what the default run prints."""

from __future__ import annotations

import re

import pandas as pd

from fairprune_core.config import SweepConfig
from fairprune_core.sweep.table import PROGRESS_HEADER, format_front, front_counts

from .conftest import REPO

COUNTS = re.compile(
    r"^(?P<n>\d+) trials finished, (?P<feasible>\d+) feasible, (?P<points>\d+) Pareto-optimal points?"
    r"(?: \((?P<on_front>\d+) trials; (?P<tied>\d+) tied, tagged pareto_duplicate\))?; wall time \d+s$"
)
PROGRESS = re.compile(r"^ +\d+ +[\d.]+ +[\d.]+ +[\d.]+ +[\d.]+ +[\d.]+  .+ \[\d+/(?P<total>\d+), \d+s\]$")
FRONT_ROW = re.compile(r"^ +trial \d+ +[\d.]+ +[\d.]+ +[\d.]+ +[\d.]+ \[[\d.]+, [\d.]+\] +[\d.]+ \[[\d.]+, [\d.]+\] ")
MORE = re.compile(r"^  \.\.\. \((?P<more>\d+) more Pareto-optimal points?")


def _sample() -> list[str]:
    text = (REPO / "README.md").read_text()
    section = text[text.index("## What the default run prints") :]
    block = section[section.index("```\n") + 4 :]
    return block[: block.index("```")].rstrip("\n").splitlines()


def test_the_sample_output_has_the_shape_the_code_prints():
    lines = _sample()
    assert lines[0] == PROGRESS_HEADER
    progress = [m for m in map(PROGRESS.match, lines) if m]
    assert progress and {int(m["total"]) for m in progress} == {SweepConfig.num_trials}
    header = format_front(pd.DataFrame(), {}).splitlines()[0]
    assert header in lines, "the front table's header as format_front prints it"
    after = lines[lines.index(header) + 1 :]
    assert after[0].strip().startswith("Vanilla") and any(line.strip().startswith("OBD") for line in after)


def test_the_sample_output_counts_add_up():
    lines = _sample()
    (counts,) = [m for m in map(COUNTS.match, lines) if m]
    assert int(counts["n"]) == SweepConfig.num_trials
    points = int(counts["points"])
    assert points <= int(counts["feasible"]) <= int(counts["n"])
    shown = sum(1 for line in lines if FRONT_ROW.match(line))
    more = sum(int(m["more"]) for m in map(MORE.match, lines) if m)
    assert shown + more == points, "every distinct front point is shown or counted"
    if counts["tied"]:
        assert int(counts["on_front"]) == points + int(counts["tied"])


def test_front_counts_prints_the_line_the_readme_shows():
    trials = pd.DataFrame(
        {
            "feasible": [True, True, True, False],
            "pareto_optimal": [True, True, False, False],
            "pareto_duplicate": [False, True, False, False],
        }
    )
    line = f"{front_counts(trials)}; wall time 100s"
    m = COUNTS.match(line)
    assert m and (m["n"], m["feasible"], m["points"], m["on_front"], m["tied"]) == ("4", "3", "1", "2", "1")
