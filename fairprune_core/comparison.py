"""Vanilla against each requested method on one pruning problem: the paper's tables, printed.

What ``sweeps/prune.py`` runs: every method through the one :class:`~.experiment.Experiment`,
with the hyper-parameters a :class:`~.config.PruneConfig` gives them, each table on validation
and test with 95% bootstrap intervals and paired-bootstrap verdicts against vanilla.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .checkpoint import Checkpoint, save_pruned
from .config import PruneConfig
from .datasets import DermDataset
from .experiment import Experiment, MethodRecord, build_problem, training_setup
from .methods import method_from_config
from .pruning import CurvatureBackend
from .report import paper_table, significance_lines

__all__ = ["row_name", "run_comparison"]


def row_name(record: MethodRecord) -> str:
    """A table row's name: the method and what it achieved (e.g. ``OBD (pr=35%)``)."""
    if record.output.masks is None:
        return record.label
    label, _, rest = record.label.partition(" (")
    inside = f"pr={record.achieved_ratio:.0%}" + (f", {rest.rstrip(')')}" if rest else "")
    return f"{label} ({inside})"


def _describe(method: Any, config: PruneConfig) -> str:
    return (
        f"{method.label()}: step {config.step_ratio:.0%} up to {config.final_ratio:.0%}, {config.estimator} curvature "
        f"from {config.num_batches} x {config.batch_size} samples per group per step"
    )


def run_comparison(
    checkpoint: Checkpoint,
    dataset: DermDataset,
    config: PruneConfig,
    *,
    methods: Sequence[str] = ("obd", "fairprune"),
    curvature: CurvatureBackend | None = None,
    out: Path | None = None,
    n_boot: int = 1000,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Vanilla, then each of ``methods`` with one config; print the paper's tables on val and test."""
    problem = build_problem(dataset, checkpoint, config, log=log)
    experiment = Experiment(
        problem, curvature=curvature, n_boot=n_boot, training=training_setup(dataset, checkpoint), log=log
    )
    records = []
    for name in ("vanilla", *[m for m in methods if m != "vanilla"]):
        method = method_from_config(name, config)
        if method.role == "pruning" or name == "obd":
            log(_describe(method, config))
        elif name != "vanilla":
            settings = method.hyperparameters() or "no hyper-parameters"
            log(f"{method.label()}: trained like the vanilla model ({settings})")
        record = experiment.run_method(method)
        records.append(record)
        if out is not None and record.output.masks is not None:
            extra = {
                "prune_config": config.to_dict(),
                "privileged": problem.privileged,
                "history": record.output.history,
            }
            path = save_pruned(
                out / f"{name}.pt", record.output.model, record.output.masks, dataset=dataset, extra=extra
            )
            log(f"saved {path}")
    names = [
        f"{n} ({'privileged' if g == problem.privileged else 'unprivileged'})"
        for g, n in enumerate(dataset.group_names)
    ]
    for split in ("val", "test"):
        rows = {row_name(r): r.metrics[split] for r in records}
        log(paper_table(rows, names, title=f"\n{dataset.name}, {split} split (95% bootstrap intervals)"))
        for r in records[1:]:
            for line in significance_lines(r.label.split(" (")[0], r.vs_vanilla[split], split):
                log(line)
    return {"records": records, "privileged": problem.privileged}
