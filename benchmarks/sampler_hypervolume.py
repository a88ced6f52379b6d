"""Which Optuna sampler should the sweep use by default? Hypervolume after the default budget.

    python benchmarks/sampler_hypervolume.py      # ~10-15 min on 2 cores; writes benchmarks/results/
    python benchmarks/sampler_hypervolume.py --samplers gp --lags 1 2 --no-grid --out sampler_lag
        # the GP sampler as a 2-slot sweep asks it: at once (lag 1) or prepared while trials run (lag 2)

On the synthetic default (demo model, the sweep's curvature settings), every sampler runs the
default trial budget (the paper's two settings first, as in the sweep) for several seeds; the
paper's own method, a grid of 4 betas x 4 final ratios x 2 steps (32 trials), runs once. Each
trial is exactly what a sweep trial computes (``fairprune_core.sweep.trial.run_trial``), without
Tune and MLflow. Score: hypervolume of the feasible validation front (F1 up, Eopp1 down)
against the fixed reference point (F1 floor, Eopp1 = 1). Writes sampler_hypervolume.json/.png.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results"
GRID = {"beta": (0.1, 0.2, 0.33, 0.5), "final_ratio": (0.2, 0.35, 0.5, 0.65), "step_ratio": (0.05, 0.1)}
_STATE: dict = {}


def _setup(cache_dir: str | None) -> None:
    """Per process: data, the demo model, the shared trial context (as the sweep builds it)."""
    import torch

    from fairprune_core.checkpoint import load_checkpoint
    from fairprune_core.cli import preset_configs
    from fairprune_core.config import PRESETS, SweepConfig
    from fairprune_core.datasets import load_dataset
    from fairprune_core.evaluation import evaluate
    from fairprune_core.experiment import Experiment, build_problem
    from fairprune_core.pretrained import ensure_pretrained
    from fairprune_core.sweep.trial import TrialContext

    torch.set_num_threads(1)
    ds = load_dataset("synthetic", cache_dir=cache_dir)
    mc, tc = preset_configs(PRESETS["demo"], ds)
    ckpt = load_checkpoint(ensure_pretrained(ds, mc, tc, log=lambda s: None), dataset=ds)
    cfg = SweepConfig(name="benchmark")
    problem = build_problem(ds, ckpt, cfg.prune, log=lambda s: None)
    experiment = Experiment(problem, log=None)
    data = problem.data
    initial = experiment.curvature.compute(
        experiment.model, [("unprivileged", data.unprivileged), ("privileged", data.privileged)], 0
    )
    floor = cfg.f1_floor * evaluate(experiment.model, problem.val, num_classes=ds.num_classes)["avg"]["f1"]
    ctx = TrialContext(problem, initial, f1_floor=floor, abort_infeasible=cfg.abort_infeasible, n_boot=100)
    _STATE.update(ctx=ctx, floor=floor, cfg=cfg)


def _objective(beta: float, step: float, final: float) -> tuple[float, float, bool, bool]:
    """Exactly what a sweep trial computes (``run_trial``), without Tune and MLflow:
    (val F1, val Eopp1, feasible, collapsed)."""
    from fairprune_core.sweep.trial import TrialSettings, run_trial

    rec = run_trial(TrialSettings(-1, beta, step, final), _STATE["ctx"])
    return rec.val_avg_f1, rec.val_eopp1, rec.feasible, rec.collapsed


def _hv_curve(points: list[tuple[float, float, bool]]) -> list[float]:
    from fairprune_core.pareto import hypervolume

    ref = (_STATE["floor"], 1.0)
    return [
        hypervolume(
            [p[0] for p in points[:k]], [p[1] for p in points[:k]], reference=ref, feasible=[p[2] for p in points[:k]]
        )
        for k in range(1, len(points) + 1)
    ]


def run_sampler(args: tuple[str, int, int, str | None, int]) -> dict:
    """One sampler run. ``lag``: suggestions asked before the oldest one's result is told (0:
    one trial at a time; a sweep of 2 slots: 1; with its next suggestion prepared while trials
    run: 2), trials finishing in the order they were asked."""
    import optuna

    from fairprune_core.config import PAPER_SETTINGS
    from fairprune_core.sweep.study import make_sampler, set_constraints

    kind, seed, budget, cache_dir, lag = args
    if not _STATE:
        _setup(cache_dir)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = _STATE["cfg"].space
    study = optuna.create_study(
        directions=["maximize", "minimize"], sampler=make_sampler(kind, seed=seed, num_trials=budget)
    )
    for p in PAPER_SETTINGS:
        study.enqueue_trial(p)
    dists = {k: optuna.distributions.FloatDistribution(lo, hi) for k, (lo, hi) in space.ranges().items()}
    points: list[tuple[float, float, bool]] = []
    in_flight: list = []
    t0 = time.time()
    while len(points) < budget:
        while len(in_flight) <= lag and len(points) + len(in_flight) < budget:
            in_flight.append(study.ask(dists))
        trial = in_flight.pop(0)
        p = trial.params
        f1, e, ok, collapsed = _objective(p["beta"], p["step_ratio"], p["final_ratio"])
        set_constraints(study._storage, trial, [_STATE["floor"] - f1, 1.0 if collapsed else 0.0])
        study.tell(trial, [f1, e])
        points.append((f1, e, ok))
    return {
        "sampler": kind,
        "seed": seed,
        "lag": lag,
        "hv_curve": _hv_curve(points),
        "feasible": sum(p[2] for p in points),
        "points": points,
        "seconds": time.time() - t0,
    }


def run_grid(args: tuple[int, str | None]) -> dict:
    _, cache_dir = args
    if not _STATE:
        _setup(cache_dir)
    points = []
    t0 = time.time()
    for beta, final, step in itertools.product(GRID["beta"], GRID["final_ratio"], GRID["step_ratio"]):
        points.append(_objective(beta, step, final)[:3])
    return {
        "sampler": "paper grid",
        "seed": 0,
        "hv_curve": _hv_curve(points),
        "feasible": sum(p[2] for p in points),
        "points": points,
        "seconds": time.time() - t0,
    }


def _key(run: dict, lags: list[int]) -> str:
    return run["sampler"] if len(lags) == 1 or run["sampler"] == "paper grid" else f"{run['sampler']} lag {run['lag']}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--budget", type=int, default=30, help="trials per sampler run (the sweep's default)")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--samplers", nargs="+", default=["tpe", "nsga2", "gp", "random"])
    p.add_argument(
        "--lags", nargs="+", type=int, default=[0], help="suggestions asked ahead of results (see run_sampler)"
    )
    p.add_argument("--no-grid", action="store_true", help="skip the paper's grid")
    p.add_argument("--out", default="sampler_hypervolume", help="file stem in benchmarks/results/")
    p.add_argument("--processes", type=int, default=min(2, os.cpu_count() or 1))
    p.add_argument("--cache-dir", default=None)
    args = p.parse_args()
    jobs = [
        (k, s, args.budget, args.cache_dir, lag) for k in args.samplers for lag in args.lags for s in range(args.seeds)
    ]
    _setup(args.cache_dir)  # data cache and the demo model, once, before the workers start
    _STATE.clear()
    t0 = time.time()
    with ProcessPoolExecutor(args.processes) as pool:
        grid_future = None if args.no_grid else pool.submit(run_grid, (0, args.cache_dir))
        runs = list(pool.map(run_sampler, jobs))
        if grid_future is not None:
            runs.append(grid_future.result())
    summary = {}
    keys = list(dict.fromkeys(_key(r, args.lags) for r in runs))
    for key in keys:
        rs = [r for r in runs if _key(r, args.lags) == key]
        finals = [r["hv_curve"][-1] for r in rs]
        summary[key] = {
            "trials": len(rs[0]["hv_curve"]),
            "hypervolume_mean": statistics.mean(finals),
            "hypervolume_sd": statistics.stdev(finals) if len(finals) > 1 else 0.0,
            "hypervolume_runs": finals,
            "feasible_mean": statistics.mean(r["feasible"] for r in rs),
        }
    best = max((k for k in keys if k != "paper grid"), key=lambda k: summary[k]["hypervolume_mean"])
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = {
        "benchmark": "hypervolume of the feasible validation front after the default budget",
        "reference_point": "(0.9 x vanilla val F1, Eopp1 = 1)",
        "lags": args.lags,
        "summary": summary,
        "best_sampler": best,
        "wall_s": time.time() - t0,
        "runs": runs,
    }
    (RESULTS / f"{args.out}.json").write_text(json.dumps(out, indent=1))
    _plot(runs, keys, RESULTS / f"{args.out}.png", args.lags)
    for kind, s in summary.items():
        print(
            f"{kind:12s} HV {s['hypervolume_mean']:.5f} +- {s['hypervolume_sd']:.5f} after {s['trials']} trials, "
            f"{s['feasible_mean']:.1f} feasible"
        )
    print(f"best: {best}; wrote {RESULTS / (args.out + '.json')}")


def _plot(runs: list[dict], keys: list[str], path: Path, lags: list[int]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    for key in keys:
        if key == "paper grid":
            continue
        curves = np.array([r["hv_curve"] for r in runs if _key(r, lags) == key])
        mean, sd = curves.mean(0), curves.std(0)
        x = np.arange(1, curves.shape[1] + 1)
        ax.plot(x, mean, label=key)
        ax.fill_between(x, mean - sd, mean + sd, alpha=0.15)
    grid = next((r for r in runs if r["sampler"] == "paper grid"), None)
    if grid is not None:
        ax.plot(np.arange(1, len(grid["hv_curve"]) + 1), grid["hv_curve"], "k--", label="paper grid (32)")
    ax.set_xlabel("trials")
    ax.set_ylabel("hypervolume of the feasible validation front")
    title = "Samplers on the synthetic default (mean +- sd over seeds)"
    if len(lags) > 1:
        title += "\nlag: suggestions asked before the oldest in-flight trial's result is told"
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)


if __name__ == "__main__":
    main()
