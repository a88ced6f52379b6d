"""Why FairPrune collapses a model: curvature noise, estimator, samples per group and beta.

    python benchmarks/fairprune_collapse.py --synthetic-bias strong --synthetic-images 8000
    python benchmarks/fairprune_collapse.py --dataset isic2019 --data-root ../shared/data/isic2019 ...

On one pre-trained model (the same flags as ``sweeps/prune.py``; trained once and reused), for
each curvature estimator (exact, mc) and number of samples per group, the per-group Hessian
diagonals are estimated TWICE, from two disjoint halves of each group's training images (A, B).
Then, for each beta, the weights FairPrune's saliency s = 1/2 theta^2 (h0 - beta h1) ranks lowest
on A are pruned in one shot (5% and 10%, the first steps of the paper's schedules), and measured:

* ``val_avg_f1``, ``val_eopp1``, ``collapsed``: the pruned model on validation;
* ``overlap_ab``: the share of the weights pruned from A's estimate that B's estimate also prunes
  (weights tied with B's k-th value count as pruned; 1 = the selection is not noise: the
  split-half reliability of the ranking);
* ``dloss_unpriv`` / ``dloss_priv``: the second-order loss increase of the pruned set,
  sum 1/2 theta^2 h_g over the pruned weights, measured on B (independent of the selection): what
  the pruned weights cost each group;
* ``share_priv_only``: pruned weights with h0 == 0 on A (no unprivileged sample uses them);
* ``negative_of_all``: the share of ALL prunable weights whose saliency is negative on A (they
  are pruned before any weight of zero curvature).

OBD at the same ratio and samples (beta plays no role) is the reference row. Writes
``benchmarks/results/fairprune_collapse.json`` and ``.png``/``.svg`` (F1 and Eopp1 vs beta).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from fairprune_core.cli import (
    add_checkpoint_argument,
    add_data_arguments,
    add_pretrain_arguments,
    add_prune_arguments,
)

OUT = Path(__file__).parent / "results"
BETAS = (0.0, 0.1, 0.2, 0.33, 0.5, 1.0)
RATIOS = (0.05, 0.10)
SAMPLES = (256, 1024, 4096)  # per group and per half; mini-batches of 32
ESTIMATORS = ("exact", "mc")
BATCH = 32


def _halves(images: np.ndarray, labels: np.ndarray, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    order = np.random.default_rng(seed).permutation(len(labels))
    half = len(order) // 2
    return [(images[i], labels[i]) for i in (order[:half], order[half:])]


def _curvatures(model, images, labels, estimator: str, seed: int) -> dict[int, dict[str, torch.Tensor]]:
    """Mean Hessian diagonal after each of SAMPLES samples (nested: later ones extend earlier ones)."""
    from fairprune_core.curvature.batches import GroupSampler
    from fairprune_core.curvature.hessian import hessian_diagonal

    sampler = GroupSampler(images, labels, batch_size=BATCH, num_batches=SAMPLES[-1] // BATCH, seed=seed)
    batches = list(sampler.batches(0))
    out, total, done = {}, None, 0
    for n in SAMPLES:
        chunk = batches[done // BATCH : n // BATCH]
        mean = hessian_diagonal(model, chunk, estimator=estimator, seed=seed + done)  # type: ignore[arg-type]
        weight = len(chunk) * BATCH
        total = (
            {k: v * weight for k, v in mean.items()}
            if total is None
            else {k: total[k] + mean[k] * weight for k in total}
        )
        done = n
        out[n] = {k: v / n for k, v in total.items()}
    return out


def _flat(tensors: dict[str, torch.Tensor], names: list[str]) -> np.ndarray:
    return np.concatenate([tensors[n].detach().double().flatten().numpy() for n in names])


def _pruned_model(problem, names, saliency: np.ndarray, k: int):
    from fairprune_core.masks import apply_masks
    from fairprune_core.pruning import select_smallest

    alive = torch.ones(len(saliency), dtype=torch.bool)
    pruned = select_smallest(torch.from_numpy(saliency), alive, k)
    alive[pruned] = False
    model = problem.build_model()
    params = dict(model.named_parameters())
    sizes = [params[n].numel() for n in names]
    masks = {n: m.view(params[n].shape) for n, m in zip(names, torch.split(alive, sizes), strict=True)}
    return apply_masks(model, masks), pruned.numpy()


def _measure(problem, model, floor: float, constant_f1: float) -> dict[str, float]:
    from fairprune_core.evaluation import evaluate
    from fairprune_core.stats import sanity

    m = evaluate(model, problem.val, num_classes=problem.num_classes)
    f1 = float(m["avg"]["f1"])
    s = sanity(
        problem.val.labels,
        m["predictions"],
        problem.val.groups,
        num_classes=problem.num_classes,
        avg_f1=f1,
        floor=floor,
        constant_f1=constant_f1,
    )
    return {"val_avg_f1": f1, "val_eopp1": float(m["eopp1"]), "collapsed": s.collapsed}


def run(problem, log=print) -> dict:
    from fairprune_core.evaluation import evaluate
    from fairprune_core.masks import prunable_parameters
    from fairprune_core.stats import best_constant_f1

    model = problem.build_model()
    names = prunable_parameters(model)
    theta_sq = _flat(dict(model.named_parameters()), names) ** 2
    vanilla = evaluate(model, problem.val, num_classes=problem.num_classes)
    floor = 0.9 * float(vanilla["avg"]["f1"])
    constant = best_constant_f1(problem.val.labels, problem.val.groups, problem.num_classes)
    data = problem.data
    groups = {"unpriv": data.unprivileged, "priv": data.privileged}
    rows, timing = [], {}
    for est in ESTIMATORS:
        h: dict[str, list[dict[int, np.ndarray]]] = {}
        t0 = time.perf_counter()
        for gi, (g, sampler) in enumerate(groups.items()):
            h[g] = []
            for half, (x, y) in enumerate(_halves(sampler.images, sampler.labels, seed=gi)):
                per_n = _curvatures(model, x, y, est, seed=100 * half + gi)
                h[g].append({n: _flat(v, names) for n, v in per_n.items()})
        timing[est] = time.perf_counter() - t0
        log(f"{est}: curvature of 2 groups x 2 halves x {SAMPLES[-1]} samples in {timing[est]:.0f}s")
        for n in SAMPLES:
            h0a, h0b, h1a, h1b = h["unpriv"][0][n], h["unpriv"][1][n], h["priv"][0][n], h["priv"][1][n]
            for ratio in RATIOS:
                k = round(ratio * len(theta_sq))
                settings = [("obd", None, 0.5 * theta_sq * (h0a + h1a), 0.5 * theta_sq * (h0b + h1b))]
                settings += [
                    ("fairprune", b, 0.5 * theta_sq * (h0a - b * h1a), 0.5 * theta_sq * (h0b - b * h1b)) for b in BETAS
                ]
                for method, beta, sal_a, sal_b in settings:
                    pruned_model, pruned = _pruned_model(problem, names, sal_a, k)
                    threshold_b = np.partition(sal_b, k - 1)[k - 1]  # ties at B's k-th value count as pruned by B
                    row = {
                        "estimator": est,
                        "samples_per_group": n,
                        "ratio": ratio,
                        "method": method,
                        "beta": beta,
                        **_measure(problem, pruned_model, floor, constant),
                        "overlap_ab": float((sal_b[pruned] <= threshold_b).mean()),
                        "dloss_unpriv": float((0.5 * theta_sq * h0b)[pruned].sum()),
                        "dloss_priv": float((0.5 * theta_sq * h1b)[pruned].sum()),
                        "share_priv_only": float((h0a[pruned] == 0).mean()),
                        "share_negative": float((sal_a[pruned] < 0).mean()),
                        "negative_of_all": float((sal_a < 0).mean()),
                    }
                    rows.append(row)
                    log(_line(row))
    return {
        "vanilla": {"val_avg_f1": float(vanilla["avg"]["f1"]), "val_eopp1": float(vanilla["eopp1"]), "floor": floor},
        "prunable_weights": len(theta_sq),
        "share_zero_curvature": {
            g: float((h[g][0][SAMPLES[-1]] == 0).mean()) for g in ("unpriv", "priv")
        },  # of all prunable weights, exact zeros on A (dead units) with the most samples, last estimator
        "curvature_s": timing,
        "rows": rows,
    }


def _line(r: dict) -> str:
    name = "OBD      " if r["method"] == "obd" else f"FP b={r['beta']:<4}"
    flag = " COLLAPSED" if r["collapsed"] else ""
    return (
        f"  {r['estimator']:5s} n={r['samples_per_group']:<5d} {r['ratio']:.0%} {name}  val F1 {r['val_avg_f1']:.3f}"
        f"  Eopp1 {r['val_eopp1']:.3f}  A/B overlap {r['overlap_ab']:.2f}  dloss unpriv {r['dloss_unpriv']:.4f}"
        f" priv {r['dloss_priv']:.4f}  h0=0 {r['share_priv_only']:.2f}  s<0 {r['negative_of_all']:.3f}{flag}"
    )


def figure(result: dict, stem: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["rows"]
    fig, axes = plt.subplots(len(RATIOS), 2, figsize=(9, 3.4 * len(RATIOS)), sharex=True, squeeze=False)
    colours = {256: "#9ecae1", 1024: "#4292c6", 4096: "#08306b"}
    for i, ratio in enumerate(RATIOS):
        for j, metric in enumerate(("val_avg_f1", "val_eopp1")):
            ax = axes[i][j]
            for est, style in (("exact", "-o"), ("mc", "--s")):
                for n, colour in colours.items():
                    pts = [
                        r
                        for r in rows
                        if r["estimator"] == est
                        and r["samples_per_group"] == n
                        and r["ratio"] == ratio
                        and r["method"] == "fairprune"
                    ]
                    ax.plot(
                        [r["beta"] for r in pts],
                        [r[metric] for r in pts],
                        style,
                        c=colour,
                        ms=4,
                        lw=1.2,
                        label=f"{est}, {n}/group",
                    )
                    bad = [r for r in pts if r["collapsed"]]
                    first = est == "exact" and n == SAMPLES[0]
                    ax.scatter(
                        [r["beta"] for r in bad],
                        [r[metric] for r in bad],
                        s=70,
                        marker="x",
                        c="#d1495b",
                        zorder=4,
                        label="collapsed" if first else None,
                    )
            ax.axhline(result["vanilla"][metric], c="k", lw=1, ls=":", label="vanilla")
            if metric == "val_avg_f1":
                ax.axhline(result["vanilla"]["floor"], c="#d1495b", lw=1, ls="--", label="F1 floor (0.9 x vanilla)")
            ax.set_ylabel({"val_avg_f1": "validation avg F1", "val_eopp1": "validation Eopp1"}[metric])
            ax.set_title(f"FairPrune, one shot to {ratio:.0%}", fontsize=10)
            ax.grid(alpha=0.3)
    for ax in axes[-1]:
        ax.set_xlabel("beta")
    axes[0][0].legend(fontsize=7, ncol=2)
    fig.tight_layout()
    paths = [stem.with_suffix(".png"), stem.with_suffix(".svg")]
    for p in paths:
        fig.savefig(p, dpi=150)
    plt.close(fig)
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_arguments(parser)
    add_pretrain_arguments(parser)
    add_prune_arguments(parser)
    add_checkpoint_argument(parser)
    parser.add_argument("--out", type=Path, default=OUT / "fairprune_collapse.json")
    parser.add_argument("--replot", action="store_true", help="redraw the figure from an existing --out file")
    args = parser.parse_args(argv)
    if args.replot:
        for p in figure(json.loads(args.out.read_text()), args.out.with_suffix("")):
            print(f"wrote {p}")
        return 0

    from fairprune_core.cli import checkpoint_from_args, dataset_from_args, prune_config_from_args
    from fairprune_core.experiment import build_problem

    args.curvature_batch_size, args.curvature_batches = BATCH, 1  # the study draws its own samples
    dataset = dataset_from_args(args)
    print(dataset.describe())
    checkpoint = checkpoint_from_args(args, dataset)
    problem = build_problem(dataset, checkpoint, prune_config_from_args(args, dataset))
    t0 = time.perf_counter()
    result = {"command": " ".join(sys.argv), "dataset": dataset.name, **run(problem)}
    result["wall_s"] = time.perf_counter() - t0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    for p in [args.out, *figure(result, args.out.with_suffix(""))]:
        print(f"wrote {p}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
