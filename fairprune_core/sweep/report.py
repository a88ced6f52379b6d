"""The report of a finished sweep: the paper's Table 1/2 on TEST and its Fig. 2, regenerated.

* a table in the layout of Tables 1-2 on the TEST split for vanilla, every baseline the sweep
  logged, and FairPrune at two points chosen on VALIDATION only: the best validation F1 among
  feasible trials fairer than vanilla on validation, and the knee of the front (the front point
  nearest the ideal point, objectives scaled to [0, 1] over the front); paired verdicts against
  vanilla and OBD; BCa intervals; the Eopp1 permutation null; collapsed models marked;
* Fig. 2(a): test F1 vs Eopp1 of FairPrune as beta varies at OBD's ratio, against the baselines;
* Fig. 2(b, c): validation recall, Eopp0 and Eopp1 against the pruning ratio (0 to 80%) for
  FairPrune at a fixed beta and for OBD;
* the validation front with intervals on its points and every baseline marked.

Ablations the search did not produce are run here, each a child run tagged ``role=ablation``,
and cached in ``report_ablations.json`` so that a second report reuses them. Everything goes
to the sweep folder and to the sweep's parent run (``report/``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from ..checkpoint import load_checkpoint
from ..comparison import versus_lines
from ..datasets import load_dataset
from ..experiment import Experiment, MethodRecord, build_problem, training_setup
from ..methods import make_method, method_label
from ..methods.base import MethodOutput
from ..report import paper_table, significance_lines
from ..stats import INTERVAL_METHOD
from ..tracking import MlflowTracker
from .front import front_of, knee, trials_frame
from .lock import sweep_lock
from .runner import initial_curvature
from .state import SweepState

__all__ = ["ReportConfig", "build_report", "knee", "select_points"]


@dataclass(frozen=True)
class ReportConfig:
    betas: tuple[float, ...] = (0.0, 0.05, 0.1, 0.2, 0.33, 0.5)  # Fig. 2(a), at OBD's step and ratio
    curve_beta: float = 0.2  # Fig. 2(b, c)
    curve_step: float = 0.1
    curve_max: float = 0.8


def select_points(trials: pd.DataFrame, vanilla_val_eopp1: float) -> dict[str, pd.Series]:
    """FairPrune points chosen on validation only (test is never looked at)."""
    out: dict[str, pd.Series] = {}
    if trials.empty:
        return out
    fairer = trials[trials["feasible"] & (trials["val_eopp1"] < vanilla_val_eopp1)]
    if not fairer.empty:
        out["best F1, fairer than vanilla"] = fairer.loc[fairer["val_avg_f1"].idxmax()]
    k = knee(front_of(trials))
    if k is not None:
        out["knee of the front"] = k
    return out


class _Report:
    def __init__(self, directory: Path, rc: ReportConfig, log: Callable[[str], None]) -> None:
        self.dir, self.rc, self.log = directory, rc, log
        self.state = SweepState.load(directory)
        self.cfg = self.state.sweep_config()
        self.dataset = load_dataset(**self.state.dataset_spec)
        checkpoint = load_checkpoint(self.state.checkpoint, dataset=self.dataset)
        self.tracker = MlflowTracker(self.state.tracking_uri, self.state.experiment_id)
        problem = build_problem(self.dataset, checkpoint, self.cfg.prune, privileged=self.state.privileged, log=log)
        self.experiment = Experiment(
            problem,
            tracker=self.tracker,
            n_boot=self.cfg.n_boot,
            f1_floor=self.cfg.f1_floor,
            training=training_setup(self.dataset, checkpoint),
            log=None,
            device=self.cfg.device,
        )
        self.cache_path = directory / "report_ablations.json"
        self.cache: dict[str, Any] = json.loads(self.cache_path.read_text()) if self.cache_path.is_file() else {}

    # -- models evaluated on test ------------------------------------------------------------------
    def _evaluate(self, method: Any, model: Any, masks: Any) -> MethodRecord:
        return self.experiment.evaluate(method, MethodOutput(model, masks), 0.0)

    def baseline_records(self, runs: pd.DataFrame) -> dict[str, MethodRecord]:
        out = {"vanilla": self._evaluate(make_method("vanilla"), self.experiment.model, None)}
        for name in self.state.baselines:
            row = runs[(runs["method"] == name) & (runs["role"] == "baseline")]
            if name == "vanilla" or row.empty:
                continue
            model, masks = self.tracker.load_model(row.iloc[0]["model_uri"])
            out[name] = self._evaluate(make_method(name), model, masks)
        return out

    def point_records(self, points: dict[str, pd.Series]) -> dict[str, MethodRecord]:
        """Each chosen trial once (a trial chosen for both reasons is one row naming both)."""
        reasons: dict[int, list[str]] = {}
        rows: dict[int, pd.Series] = {}
        for why, r in points.items():
            reasons.setdefault(int(r["trial"]), []).append(why)
            rows[int(r["trial"])] = r
        out = {}
        for number, r in rows.items():
            model, masks = self.tracker.load_model(r["model_uri"])
            method = make_method("fairprune", beta=r["beta"], step_ratio=r["step_ratio"], final_ratio=r["final_ratio"])
            out[f"FairPrune, trial {number} ({'; '.join(reasons[number])})"] = self._evaluate(method, model, masks)
        return out

    # -- ablations ---------------------------------------------------------------------------------
    def _cached_run(self, key: str, method: Any, **context: Any) -> dict[str, Any]:
        if key not in self.cache:
            self.log(f"ablation: {key}")
            rec = self.experiment.run_method(
                method,
                run_name=f"ablation-{key}",
                tags={"sweep_id": self.state.sweep_id, "role": "ablation"},
                **context,
            )
            self.cache[key] = {"flat": rec.flat(), "history": rec.output.history, "collapsed": rec.collapsed}
            self.cache_path.write_text(json.dumps(self.cache, indent=1, default=float))
        return self.cache[key]

    def beta_points(self, initial: Any) -> pd.DataFrame:
        rows = []
        for beta in self.rc.betas:
            method = make_method("fairprune", beta=beta, step_ratio=self.cfg.obd_step, final_ratio=self.cfg.obd_final)
            key = f"beta-{beta:g}-step-{self.cfg.obd_step:g}-final-{self.cfg.obd_final:g}"
            res = self._cached_run(key, method, initial_curvature=initial)
            rows.append({"beta": beta, **res["flat"], "collapsed": res["collapsed"]})
        return pd.DataFrame(rows)

    def ratio_curves(self, initial: Any) -> dict[str, pd.DataFrame]:
        step, top = self.rc.curve_step, self.rc.curve_max
        fp = make_method("fairprune", beta=self.rc.curve_beta, step_ratio=step, final_ratio=top)
        ob = make_method("obd", step_ratio=step, final_ratio=top)
        return {
            "fairprune": pd.DataFrame(
                self._cached_run(
                    f"curve-fairprune-{self.rc.curve_beta:g}-{step:g}-{top:g}", fp, initial_curvature=initial
                )["history"]
            ),
            "obd": pd.DataFrame(self._cached_run(f"curve-obd-{step:g}-{top:g}", ob)["history"]),
        }


def _verdicts(rows: dict[str, MethodRecord], experiment: Experiment, split: str = "test") -> list[str]:
    """Every row against vanilla, and FairPrune's rows against OBD."""
    lines = []
    obd = next((r for r in rows.values() if r.method == "obd"), None)
    for name, r in rows.items():
        if r.method == "vanilla":
            continue
        s = r.sanity[split]
        lines += significance_lines(name, r.vs_vanilla[split], split, collapsed=s.reason if s.collapsed else "")
        if r.method == "fairprune" and obd is not None:
            lines += versus_lines(name, r, obd, split, experiment)
    return lines


def _markdown(rep: _Report, rows: dict[str, MethodRecord], points: dict[str, pd.Series], figures: dict) -> str:
    s, cfg, ds = rep.state, rep.cfg, rep.dataset
    vanilla = rows["Vanilla"].sanity["val"]
    groups = [f"{n} ({'privileged' if g == s.privileged else 'unprivileged'})" for g, n in enumerate(ds.group_names)]
    table = paper_table(
        {
            n + (" COLLAPSED" if r.sanity["test"].collapsed else ""): {**r.metrics["test"], "null": r.null["test"]}
            for n, r in rows.items()
        },
        groups,
    )
    warn = (
        f"\n> **Warning: the vanilla model is near chance on validation ({vanilla.reason}).** Fairness numbers mean "
        f"nothing here; pre-train a model that learns (more epochs, another learning rate, a wider model).\n"
        if not vanilla.ok
        else ""
    )
    chosen = (
        "\n".join(
            f"* {why}: trial {int(r['trial'])}, beta {r['beta']:.3f}, step {r['step_ratio']:.3f}, final "
            f"{r['final_ratio']:.3f} (validation F1 {r['val_avg_f1']:.4f}, Eopp1 {r['val_eopp1']:.4f})"
            for why, r in points.items()
        )
        or "* no feasible trial is fairer than vanilla on validation; no FairPrune point is reported"
    )
    figs = "\n".join(f"![{name}]({paths[0].name})" for name, paths in figures.items())
    return f"""# FairPrune report: sweep `{cfg.name}`

Data: `{ds.name}` ({ds.num_classes} classes; test {len(rep.experiment.problem.test.labels)} images); privileged
group {ds.group_names[s.privileged]} (the more accurate one for vanilla on validation). Intervals: 95%
{INTERVAL_METHOD} bootstrap ({cfg.n_boot} resamples, within groups), each containing its estimate. Beside
Eopp1: the permutation null (group labels shuffled within each class: what a group-blind model shows
at these counts), its 95th percentile and one-sided p. A model is COLLAPSED when (almost) one class is
predicted or its avg F1 is below {cfg.f1_floor} x vanilla's; it is never called fairer.
{warn}
## FairPrune points, chosen on validation only

{chosen}

## Test split, in the layout of the paper's Tables 1-2

```text
{table}
```

Paired verdicts (test):

```text
{chr(10).join(_verdicts(rows, rep.experiment))}
```

## Figures

{figs}
"""


def build_report(directory: Path, rc: ReportConfig | None = None, *, log: Callable[[str], None] = print) -> Path:
    """Write ``report.md`` and its figures into the sweep folder and onto its parent run."""
    rc = rc or ReportConfig()
    # a sweep that is running would change under the report: its tables would describe half a sweep
    with sweep_lock(directory, log, why="a report of a running sweep would describe it half-finished"):
        return _build_locked(directory, rc, log)


def _build_locked(directory: Path, rc: ReportConfig, log: Callable[[str], None]) -> Path:
    from ..plots import beta_figure, front_figure, ratio_figure

    rep = _Report(directory, rc, log)
    state = rep.state
    with rep.tracker.run(rep.cfg.name, run_id=state.parent_run_id):
        runs = rep.tracker.finished_runs(state.sweep_id)
        trials = trials_frame(runs[runs["method"] == "fairprune"] if not runs.empty else runs, state.f1_floor_abs)
        base = rep.baseline_records(runs)
        points = select_points(trials, base["vanilla"].metrics["val"]["eopp1"])
        rows = {method_label(k): v for k, v in base.items()} | rep.point_records(points)
        initial = initial_curvature(rep.cfg, rep.experiment, log)
        betas = rep.beta_points(initial)
        curves = rep.ratio_curves(initial)
        flat = {k: v.flat() for k, v in base.items()}
        figures = {
            "Fig. 2(a): beta at a fixed ratio": beta_figure(betas, flat, directory / "report_fig2a_beta"),
            "Fig. 2(b, c): the pruning ratio": ratio_figure(curves, directory / "report_fig2bc_ratio"),
        }
        if not trials.empty:
            figures["the validation front"] = front_figure(trials, flat, state.f1_floor_abs, directory / "report_front")
        path = directory / "report.md"
        path.write_text(_markdown(rep, rows, points, figures))
        for f in [path, rep.cache_path, *(p for paths in figures.values() for p in paths)]:
            rep.tracker.log_file(f, "report")
        rep.tracker.log_dict(asdict(rc), "report/report_config.json")
    log(f"report: {path} (and on the MLflow parent run {state.parent_run_id}, under report/)")
    return path
