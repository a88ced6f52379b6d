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
from .stats import INTERVAL_METHOD

__all__ = [
    "CHANCE_ADVICE",
    "ChanceModelError",
    "refuse_a_chance_model",
    "row_name",
    "run_comparison",
    "versus_lines",
    "warn_if_near_chance",
]


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
    device: str = "auto",
    allow_chance_model: bool = False,
) -> dict[str, Any]:
    """Vanilla, then each of ``methods`` with one config; print the paper's tables on val and test.
    A vanilla model near chance is refused before any method runs, unless ``allow_chance_model``."""
    problem = build_problem(dataset, checkpoint, config, log=log)
    experiment = Experiment(
        problem,
        curvature=curvature,
        n_boot=n_boot,
        training=training_setup(dataset, checkpoint),
        log=log,
        device=device,
    )
    if not allow_chance_model:
        refuse_a_chance_model(experiment, "comparing methods on it")
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
        if name == "vanilla":
            warn_if_near_chance(record, log)  # allowed: said before the other methods run, not after
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
        log(_table(records, names, split, dataset.name))
        for line in _verdicts(records, split, experiment):
            log(line)
    return {"records": records, "privileged": problem.privileged}


def _table(records: list[MethodRecord], group_names: list[str], split: str, dataset_name: str) -> str:
    rows = {}
    for r in records:
        collapsed = " COLLAPSED" if r.sanity[split].collapsed else ""
        rows[row_name(r) + collapsed] = {**r.metrics[split], "null": r.null[split]}
    title = (
        f"\n{dataset_name}, {split} split (95% {INTERVAL_METHOD} bootstrap intervals; beside Eopp1 the "
        f"permutation null: what a group-blind model shows at these counts, its 95th percentile and p)"
    )
    return paper_table(rows, group_names, title=title)


def _verdicts(records: list[MethodRecord], split: str, experiment: Experiment) -> list[str]:
    """Each method against vanilla; FairPrune against OBD at the same pruning ratio (the paper's claim)."""
    lines = []
    for r in records[1:]:
        s = r.sanity[split]
        lines += significance_lines(
            r.label.split(" (")[0], r.vs_vanilla[split], split, collapsed=s.reason if s.collapsed else ""
        )
    by_name = {r.method: r for r in records}
    if "fairprune" in by_name and "obd" in by_name:
        fp = by_name["fairprune"]
        lines += versus_lines(f"FairPrune (pr={fp.achieved_ratio:.0%})", fp, by_name["obd"], split, experiment)
    return lines


def versus_lines(name: str, record: MethodRecord, ref: MethodRecord, split: str, experiment: Experiment) -> list[str]:
    """Verdicts of ``record`` against ``ref`` (e.g. FairPrune against OBD at the same ratio);
    nothing is compared when either collapsed."""
    collapsed = " and ".join(x.sanity[split].reason for x in (record, ref) if x.sanity[split].collapsed)
    against = row_name(ref).split(" COLLAPSED")[0]
    paired = experiment.paired(split, ref, record)
    return significance_lines(name, paired, split, against=against, collapsed=collapsed)


# what to change when the vanilla model is near chance (the warning here, the sweep's refusal)
CHANCE_ADVICE = (
    "Pre-train a model that learns first: more --epochs, another --lr or --batch-size, a larger --width or "
    "--image-size (the paper's recipe is 200 epochs at 128 px; the README's \"Real data\" has a small one)"
)


class ChanceModelError(ValueError):
    """The vanilla model is near chance on validation: pruning or debiasing it would measure nothing."""


def refuse_a_chance_model(experiment: Experiment, what: str) -> None:
    """Raise :class:`ChanceModelError` when the vanilla model is near chance on validation (one
    class, or avg F1 below 1.5 x the best constant predictor's): before ``what`` starts."""
    s = experiment.vanilla_sanity("val")
    if not s.ok:
        raise ChanceModelError(
            f"the vanilla model is near chance on validation ({s.reason}): fairness numbers mean nothing for it "
            f"and its pruning cannot be judged, so {what} would measure nothing. {CHANCE_ADVICE}; or pass "
            f"--allow-chance-model to run it anyway"
        )


def warn_if_near_chance(vanilla: MethodRecord, log: Callable[[str], None]) -> None:
    s = vanilla.sanity["val"]
    if not s.ok:
        bar = "!" * 100
        log(
            f"\n{bar}\nWARNING: the vanilla model is near chance on validation ({s.reason}).\n"
            f"Fairness numbers mean nothing for such a model, and pruning it cannot be judged. {CHANCE_ADVICE}.\n{bar}"
        )
