"""Where a sweep's wall time goes: preamble, sampler, trial start, pruning, evaluation, logging, idle.

    python benchmarks/sweep_overhead.py                 # the default sweep (30 trials, 2 at a time)
    python benchmarks/sweep_overhead.py --trials 12 --label before

Runs ``python sweeps/pareto.py`` (synthetic default, its own store and folder; the pre-trained
model is cached first, so pre-training is not timed) and splits its wall time with what the
stores recorded, nothing sampled:

* preamble: from the command's start to the trials' begin (Python and Ray start-up, the data,
  the baselines, the shared step-0 curvature);
* per trial, from the Optuna study (ask and tell times) and the trial's MLflow run (start, end and
  its ``timing/*`` metrics): the slot's wait for the sampler's suggestion (none when it was
  prepared while trials ran; the sampler's own time is listed below the table), worker start
  (a warm worker's first trial: its process, imports and first MLflow connection), trial start
  (from the suggestion to the trial's code running: a new Ray actor process and its imports,
  unless actors are reused),
  pruning (curvature + selection, summed over steps), per-step validation, progress reports
  (per-step Tune reports and MLflow curves), final evaluation and bootstrap, logging (the rest of
  the MLflow run) and trial end (from the run's end to the tell);
* idle slot time: concurrency x (the trials' begin to the last tell) minus the trials' occupancy;
  the trials begin when the driver hands them the context (the parent run's
  ``timing/trials_begin_unix``; older sweeps: the first suggestion), so that nothing a slot
  waits for before its first trial's suggestion hides in the preamble.

Shares are of the trial-slot time. Appends one labelled entry to
``benchmarks/results/sweep_overhead.json`` (before/after figures side by side) and prints the table.
``--plot [LABEL_PART ...]`` runs nothing and draws the recorded entries whose label contains a
part (default "side by side") as stacked bars: ``benchmarks/results/sweep_overhead.png``/``.svg``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "sweep_overhead.json"
PARTS = (
    "suggestion",
    "worker start",
    "trial start",
    "pruning",
    "per-step validation",
    "progress reports",
    "final evaluation",
    "logging",
    "trial end",
)


def _run_sweep(
    work: Path, trials: int, concurrency: int, extra: list[str], repo: Path = REPO
) -> tuple[float, float, float, str]:
    """(start, end, pretrain seconds, stdout) of one sweep in ``work``; the model is pre-trained first.
    ``repo``: a checkout whose code runs (e.g. a git worktree of an older commit, for "before")."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=str(repo))  # Ray's workers inherit it
    env.pop("RAY_ADDRESS", None)
    t0 = time.time()
    subprocess.run(
        [sys.executable, str(repo / "sweeps" / "pretrain.py")], cwd=work, env=env, check=True, capture_output=True
    )
    pretrain = time.time() - t0
    cmd = [
        sys.executable, str(repo / "sweeps" / "pareto.py"),
        "--trials", str(trials), "--concurrency", str(concurrency),
        "--storage", str(work / "sweeps"), "--name", "overhead",
        "--tracking-uri", f"sqlite:///{work}/mlflow.db", *extra,
    ]  # fmt: skip
    start = time.time()
    out = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True)
    end = time.time()
    if out.returncode != 0:
        raise SystemExit(f"the sweep failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    return start, end, pretrain, out.stdout


def _stamp(dt: datetime) -> float:
    return dt.timestamp()


def _slot_asked(t: Any) -> float:
    if "handed_unix" in t.user_attrs:
        return float(t.user_attrs["handed_unix"]) - float(t.user_attrs.get("waited_s", 0.0))
    return _stamp(t.datetime_start)


def _trials(work: Path) -> list[dict[str, Any]]:
    """Per finished trial: ask/tell times (Optuna), run start/end and timing metrics (MLflow)."""
    import mlflow
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    storage = JournalStorage(JournalFileBackend(str(work / "sweeps" / "overhead" / "optuna.journal")))
    study = optuna.load_study(study_name="overhead", storage=storage)
    mlflow.set_tracking_uri(f"sqlite:///{work}/mlflow.db")
    runs = mlflow.search_runs(search_all_experiments=True, filter_string="tags.role = 'trial'")
    by_number = {int(r["tags.optuna_trial"]): r for _, r in runs.iterrows() if r["status"] == "FINISHED"}
    out = []
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        run = by_number[t.number]
        m = {k[len("metrics.timing/") :]: v for k, v in run.items() if str(k).startswith("metrics.timing/")}
        out.append(
            {
                "number": t.number,
                # the slot's trial begins when the slot asks for a suggestion: then, unless it was
                # prepared while trials ran (handed_unix - waited_s; older sweeps: the ask itself)
                "asked": _slot_asked(t),
                "told": _stamp(t.datetime_complete),
                "suggest_s": float(t.user_attrs.get("waited_s", t.user_attrs.get("ask_seconds", 0.0))),
                "sampler_s": float(t.user_attrs.get("ask_seconds", 0.0)),
                "entered": float(m.get("entered_unix", run["start_time"].timestamp())),
                "run_start": run["start_time"].timestamp(),
                "process": str(run.get("tags.trial_process", "")),
                "run_end": run["end_time"].timestamp(),
                "pruning_s": float(m.get("pruning_s", 0.0)),
                "step_eval_s": float(m.get("step_validation_s", 0.0)),
                "final_eval_s": float(m.get("final_evaluation_s", 0.0)),
                "progress_s": float(m.get("progress_s", 0.0)),  # older sweeps: inside "logging"
                "steps": int(m.get("steps", 0)),
                "worker_started": m.get("worker_started_unix"),  # None: no preloading
            }
        )
    return sorted(out, key=lambda r: r["asked"])


def _trials_begin(work: Path) -> float | None:
    """When the driver handed the trials their context (None: a sweep from before it was logged)."""
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{work}/mlflow.db")
    parents = mlflow.search_runs(search_all_experiments=True, filter_string="tags.role = 'parent'")
    value = parents.iloc[0].get("metrics.timing/trials_begin_unix") if len(parents) else None
    return None if value is None or value != value else float(value)  # NaN: not logged


def breakdown(
    trials: list[dict[str, Any]], start: float, end: float, concurrency: int, begin: float | None = None
) -> dict[str, Any]:
    """Seconds per part, summed over trials, and their shares of the trial-slot time, which starts
    at ``begin`` (the trials' context handed over) or else at the first suggestion."""
    first, last = min(t["asked"] for t in trials), max(t["told"] for t in trials)
    first = min(first, begin) if begin is not None else first
    slots = concurrency * (last - first)
    parts = dict.fromkeys(PARTS, 0.0)
    seen: set[str] = set()
    for t in trials:
        inside = t["pruning_s"] + t["step_eval_s"] + t["final_eval_s"] + t["progress_s"]
        begin = max(0.0, t["entered"] - t["asked"] - t["suggest_s"])
        connect = max(0.0, t["run_start"] - t["entered"])  # MLflow's store, the model, the run
        # a warm worker's first trial pays its process, imports and first MLflow connection
        cold = bool(t["process"]) and t["process"] not in seen
        seen.add(t["process"])
        parts["suggestion"] += t["suggest_s"]
        parts["worker start" if cold else "trial start"] += begin + (connect if cold else 0.0)
        parts["pruning"] += t["pruning_s"]
        parts["per-step validation"] += t["step_eval_s"]
        parts["progress reports"] += t["progress_s"]
        parts["final evaluation"] += t["final_eval_s"]
        parts["logging"] += max(0.0, (t["run_end"] - t["run_start"]) - inside) + (0.0 if cold else connect)
        parts["trial end"] += max(0.0, t["told"] - t["run_end"])
    occupied = sum(t["told"] - t["asked"] for t in trials)
    # slots whose first trial ran in one of Ray's idle workers, started (and preloading) before the trials
    firsts = {t["process"]: t for t in reversed(trials)}.values()
    prestarted = sum(1 for t in firsts if (t.get("worker_started") or math.inf) <= first)
    return {
        "wall_s": end - start,
        "preamble_s": first - start,
        "trials_span_s": last - first,
        "after_trials_s": end - last,
        "slot_s": slots,
        "parts_s": parts,
        "idle_s": max(0.0, slots - occupied),
        "shares_of_slot_time": {k: v / slots for k, v in {**parts, "idle": max(0.0, slots - occupied)}.items()},
        "steps_per_trial": [t["steps"] for t in trials],
        "suggest_s_by_trial": [round(t["suggest_s"], 3) for t in trials],  # what the slot waited
        "sampler_s_by_trial": [round(t["sampler_s"], 3) for t in trials],  # what the sampler took
        "sampler_total_s": sum(t["sampler_s"] for t in trials),
        "workers": len(firsts),
        "workers_started_before_trials": prestarted,
    }


def _commit(repo: Path) -> str:
    """The commit the measured code is at (+ "-dirty" with uncommitted changes)."""
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=repo, capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo, capture_output=True)
    return head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def table(entry: dict[str, Any]) -> str:
    b = entry["breakdown"]
    lines = [
        f"{entry['label']}: {entry['trials']} trials, {entry['concurrency']} at a time, wall {b['wall_s']:.0f}s "
        f"(preamble {b['preamble_s']:.0f}s, trials {b['trials_span_s']:.0f}s, after {b['after_trials_s']:.0f}s)",
        f"{'part':<22}{'seconds':>9}{'share of slot time':>20}",
    ]
    for k, v in b["parts_s"].items():
        lines.append(f"{k:<22}{v:9.1f}{b['shares_of_slot_time'][k]:19.1%}")
    lines.append(f"{'idle slot time':<22}{b['idle_s']:9.1f}{b['shares_of_slot_time']['idle']:19.1%}")
    lines.append(f"{'trial-slot time':<22}{b['slot_s']:9.1f}")
    if "workers" in b:
        lines.append(
            f"trial workers: {b['workers']}, {b['workers_started_before_trials']} started before the trials began"
        )
    if "sampler_total_s" in b:
        lines.append(f"the sampler itself took {b['sampler_total_s']:.1f}s in all (in the driver)")
    return "\n".join(lines)


_COLOURS = {  # pruning stands out; the overheads in muted tones; idle grey
    "pruning": "#1b9e77",
    "suggestion": "#d95f02",
    "worker start": "#7570b3",
    "trial start": "#b3b0d9",
    "per-step validation": "#e7298a",
    "progress reports": "#f4a6cf",
    "final evaluation": "#e6ab02",
    "logging": "#a6761d",
    "trial end": "#d9c49b",
    "idle": "#bbbbbb",
}


def plot(entries: list[dict[str, Any]], stem: Path) -> list[Path]:
    """Stacked bars of each entry's trial-slot seconds by part (pruning first), as PNG and SVG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    order = ["pruning", *[p for p in PARTS if p != "pruning"], "idle"]
    fig, ax = plt.subplots(figsize=(8, 1.2 + 0.55 * len(entries)), dpi=150)
    for row, entry in enumerate(reversed(entries)):
        b = entry["breakdown"]
        seconds = {**b["parts_s"], "idle": b["idle_s"]}
        left = 0.0
        for part in order:
            width = seconds.get(part, 0.0)
            ax.barh(row, width, left=left, color=_COLOURS[part], label=part if row == 0 else None, height=0.6)
            left += width
        share = b["shares_of_slot_time"]["pruning"]
        ax.text(left + 2, row, f"pruning {share:.0%}, wall {b['wall_s']:.0f} s", va="center", fontsize=8)
    ax.set_yticks(range(len(entries)), [e["label"] for e in reversed(entries)], fontsize=8)
    ax.set_xlabel("trial-slot seconds (concurrency x the trials' span)")
    ax.set_xlim(0, max(e["breakdown"]["slot_s"] for e in entries) * 1.35)
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    below = -0.6 / max(0.5, fig.get_figheight() * ax.get_position().height)  # 0.6 inch under the axis
    ax.legend(ncol=5, fontsize=7, frameon=False, loc="upper center", bbox_to_anchor=(0.4, below))
    paths = [stem.with_suffix(".png"), stem.with_suffix(".svg")]
    for path in paths:
        fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
    return paths


def _plot_main(out: Path, wanted: list[str]) -> int:
    results = json.loads(out.read_text()) if out.is_file() else []
    entries = [r for r in results if any(w in r["label"] for w in wanted)]
    if not entries:
        labels = [r["label"] for r in results]
        raise SystemExit(f"no entry of {out} has a label containing any of {wanted}; labels: {labels}")
    for path in plot(entries, out.with_suffix("")):
        print(f"wrote {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--plot", nargs="*", metavar="LABEL_PART", help="run nothing: plot the recorded entries whose label "
        "contains any LABEL_PART (default: 'side by side') to sweep_overhead.png/.svg beside the results",
    )  # fmt: skip
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--label", default="current")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument(
        "--repo", type=Path, default=REPO, help="the checkout whose sweep runs (default: this one), e.g. a "
        "worktree of an older commit: git worktree add /tmp/before <commit>",
    )  # fmt: skip
    args, extra = parser.parse_known_args(argv)
    if args.plot is not None:
        return _plot_main(args.out, args.plot or ["side by side"])
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        start, end, pretrain, _ = _run_sweep(work, args.trials, args.concurrency, extra, args.repo.resolve())
        trials, begin = _trials(work), _trials_begin(work)
    entry = {
        "label": args.label,
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "trials": args.trials,
        "concurrency": args.concurrency,
        "extra_flags": extra,
        "code": _commit(args.repo.resolve()),
        "cpus": os.cpu_count(),
        "pretrain_s_not_counted": pretrain,
        "breakdown": breakdown(trials, start, end, args.concurrency, begin),
    }
    print(table(entry))
    results = json.loads(args.out.read_text()) if args.out.is_file() else []
    results = [r for r in results if r["label"] != args.label] + [entry]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1))
    print(f"\nwritten to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
