"""Which Optuna sampler should the sweep use by default? Hypervolume after the default budget.

    python benchmarks/sampler_hypervolume.py      # ~10-15 min on 2 cores; writes benchmarks/results/

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


def _objective(beta: float, step: float, final: float) -> tuple[float, float, bool]:
    """Exactly what a sweep trial computes (``run_trial``), without Tune and MLflow."""
    from fairprune_core.sweep.trial import TrialSettings, run_trial

    rec = run_trial(TrialSettings(-1, beta, step, final), _STATE["ctx"])
    return rec.val_avg_f1, rec.val_eopp1, rec.feasible


def _hv_curve(points: list[tuple[float, float, bool]]) -> list[float]:
    from fairprune_core.pareto import hypervolume

    ref = (_STATE["floor"], 1.0)
    return [
        hypervolume(
            [p[0] for p in points[:k]], [p[1] for p in points[:k]], reference=ref, feasible=[p[2] for p in points[:k]]
        )
        for k in range(1, len(points) + 1)
    ]


def run_sampler(args: tuple[str, int, int, str | None]) -> dict:
    import optuna

    from fairprune_core.config import PAPER_SETTINGS
    from fairprune_core.sweep.study import make_sampler, set_constraint

    kind, seed, budget, cache_dir = args
    if not _STATE:
        _setup(cache_dir)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = _STATE["cfg"].space
    study = optuna.create_study(
        directions=["maximize", "minimize"], sampler=make_sampler(kind, seed=seed, num_trials=budget)
    )
    for p in PAPER_SETTINGS:
        study.enqueue_trial(p)
    points: list[tuple[float, float, bool]] = []
    t0 = time.time()
    for _ in range(budget):
        trial = study.ask()
        beta = trial.suggest_float("beta", *space.beta)
        step = trial.suggest_float("step_ratio", *space.step_ratio)
        final = trial.suggest_float("final_ratio", *space.final_ratio)
        f1, e, ok = _objective(beta, step, final)
        set_constraint(trial, _STATE["floor"] - f1)
        study.tell(trial, [f1, e])
        points.append((f1, e, ok))
    return {
        "sampler": kind,
        "seed": seed,
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
        points.append(_objective(beta, step, final))
    return {
        "sampler": "paper grid",
        "seed": 0,
        "hv_curve": _hv_curve(points),
        "feasible": sum(p[2] for p in points),
        "points": points,
        "seconds": time.time() - t0,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--budget", type=int, default=30, help="trials per sampler run (the sweep's default)")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--samplers", nargs="+", default=["tpe", "nsga2", "gp", "random"])
    p.add_argument("--processes", type=int, default=min(2, os.cpu_count() or 1))
    p.add_argument("--cache-dir", default=None)
    args = p.parse_args()
    jobs = [(k, s, args.budget, args.cache_dir) for k in args.samplers for s in range(args.seeds)]
    _setup(args.cache_dir)  # data cache and the demo model, once, before the workers start
    _STATE.clear()
    t0 = time.time()
    with ProcessPoolExecutor(args.processes) as pool:
        grid_future = pool.submit(run_grid, (0, args.cache_dir))
        runs = list(pool.map(run_sampler, jobs))
        runs.append(grid_future.result())
    summary = {}
    for kind in [*args.samplers, "paper grid"]:
        rs = [r for r in runs if r["sampler"] == kind]
        finals = [r["hv_curve"][-1] for r in rs]
        summary[kind] = {
            "trials": len(rs[0]["hv_curve"]),
            "hypervolume_mean": statistics.mean(finals),
            "hypervolume_sd": statistics.stdev(finals) if len(finals) > 1 else 0.0,
            "hypervolume_runs": finals,
            "feasible_mean": statistics.mean(r["feasible"] for r in rs),
        }
    best = max(args.samplers, key=lambda k: summary[k]["hypervolume_mean"])
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = {
        "benchmark": "hypervolume of the feasible validation front after the default budget",
        "reference_point": "(0.9 x vanilla val F1, Eopp1 = 1)",
        "summary": summary,
        "best_sampler": best,
        "wall_s": time.time() - t0,
        "runs": runs,
    }
    (RESULTS / "sampler_hypervolume.json").write_text(json.dumps(out, indent=1))
    _plot(runs, args.samplers, RESULTS / "sampler_hypervolume.png")
    for kind, s in summary.items():
        print(
            f"{kind:12s} HV {s['hypervolume_mean']:.5f} +- {s['hypervolume_sd']:.5f} after {s['trials']} trials, "
            f"{s['feasible_mean']:.1f} feasible"
        )
    print(f"best sampler: {best}; wrote {RESULTS / 'sampler_hypervolume.json'}")


def _plot(runs: list[dict], samplers: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    for kind in samplers:
        curves = np.array([r["hv_curve"] for r in runs if r["sampler"] == kind])
        mean, sd = curves.mean(0), curves.std(0)
        x = np.arange(1, curves.shape[1] + 1)
        ax.plot(x, mean, label=kind)
        ax.fill_between(x, mean - sd, mean + sd, alpha=0.15)
    grid = next(r for r in runs if r["sampler"] == "paper grid")
    ax.plot(np.arange(1, len(grid["hv_curve"]) + 1), grid["hv_curve"], "k--", label="paper grid (32)")
    ax.set_xlabel("trials")
    ax.set_ylabel("hypervolume of the feasible validation front")
    ax.set_title("Sampler comparison on the synthetic default (mean +- sd over seeds)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)


if __name__ == "__main__":
    main()
