"""Pictures of a sweep: the Pareto front (PNG) and an interactive version (self-contained HTML)."""

from __future__ import annotations

import html
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from .methods import method_label

__all__ = ["front_html", "front_png"]

Baselines = Mapping[str, Mapping[str, float]]  # method name -> flat val/test metrics
# marker, size and colour per baseline; others cycle through the fallback styles
_BASELINE_STYLE = {"vanilla": ("*", 11, "#000000"), "obd": ("D", 7, "#2e7d32")}
_FALLBACK_STYLE = [("s", 7, "#6a3d9a"), ("^", 8, "#ff7f00"), ("v", 8, "#b15928"), ("P", 8, "#1f78b4")]


def _style(name: str, i: int) -> tuple[str, int, str]:
    return _BASELINE_STYLE.get(name) or _FALLBACK_STYLE[i % len(_FALLBACK_STYLE)]


def front_png(trials: pd.DataFrame, baselines: Baselines, floor: float, path: Path) -> Path:
    """Validation F1 vs Eopp1 of every trial; the front joined by a line; baselines marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5), dpi=120)
    feas, infeas = trials[trials["feasible"]], trials[~trials["feasible"]]
    ax.scatter(infeas["val_eopp1"], infeas["val_avg_f1"], marker="x", c="#bbbbbb", label="infeasible trial")
    ax.scatter(feas["val_eopp1"], feas["val_avg_f1"], c="#7aa6c2", s=22, label="feasible trial")
    front = trials[trials["pareto_optimal"]].sort_values("val_eopp1")
    ax.step(front["val_eopp1"], front["val_avg_f1"], where="post", c="#d1495b", lw=1.5)
    ax.scatter(front["val_eopp1"], front["val_avg_f1"], c="#d1495b", s=40, zorder=3, label="Pareto-optimal")
    for i, (name, m) in enumerate(baselines.items()):
        marker, size, colour = _style(name, i)
        ax.errorbar(
            m["val_eopp1"],
            m["val_avg_f1"],
            xerr=[[m["val_eopp1"] - m["val_eopp1_ci_low"]], [m["val_eopp1_ci_high"] - m["val_eopp1"]]],
            fmt=marker,
            ms=size,
            c=colour,
            capsize=3,
            label=f"{method_label(name)} (95% CI of Eopp1)",
            zorder=4,
        )
    ax.axhline(floor, ls="--", c="#999999", lw=1, label=f"F1 floor {floor:.3f}")
    ax.set_xlabel("validation Eopp1 (lower is fairer)")
    ax.set_ylabel("validation average F1 (higher is better)")
    ax.set_title("FairPrune sweep: validation Pareto front")
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def _scale(v: float, lo: float, hi: float, a: float, b: float) -> float:
    return a + (v - lo) / (hi - lo or 1.0) * (b - a)


def front_html(trials: pd.DataFrame, baselines: Baselines, floor: float, path: Path) -> Path:
    """A self-contained interactive scatter (inline SVG): hover a point for its settings and run."""
    pts: list[dict[str, Any]] = [
        {
            "x": r["val_eopp1"],
            "y": r["val_avg_f1"],
            "kind": "front" if r["pareto_optimal"] else ("feasible" if r["feasible"] else "infeasible"),
            "label": (
                f"trial {r['trial']}: beta {r['beta']:.3f}, step {r['step_ratio']:.3f}, final "
                f"{r['final_ratio']:.3f}; val F1 {r['val_avg_f1']:.4f}, val Eopp1 {r['val_eopp1']:.4f}; "
                f"test F1 {r.get('test_avg_f1', float('nan')):.4f}, test Eopp1 "
                f"{r.get('test_eopp1', float('nan')):.4f}; run {r['run_id']}"
            ),
        }
        for _, r in trials.iterrows()
    ]
    for name, m in baselines.items():
        label = method_label(name)
        pts.append(
            {
                "x": m["val_eopp1"],
                "y": m["val_avg_f1"],
                "kind": label,
                "label": f"{label}: val F1 {m['val_avg_f1']:.4f}, val Eopp1 {m['val_eopp1']:.4f}",
            }
        )
    xs, ys = [p["x"] for p in pts], [p["y"] for p in pts] + [floor]
    x0, x1 = min(xs) - 0.01, max(xs) + 0.01
    y0, y1 = min(ys) - 0.02, max(ys) + 0.02
    w, h, pad = 720, 480, 60
    style = {"front": ("#d1495b", 6), "feasible": ("#7aa6c2", 4), "infeasible": ("#bbbbbb", 3)}
    for i, name in enumerate(baselines):
        style[method_label(name)] = (_style(name, i)[2], 8 if name == "vanilla" else 7)
    shapes = []
    for p in pts:
        cx = _scale(p["x"], x0, x1, pad, w - 20)
        cy = _scale(p["y"], y0, y1, h - pad, 20)
        colour, r = style[p["kind"]]
        shapes.append(
            f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="{r}" fill="{colour}" class="{p["kind"]}">'
            f"<title>{html.escape(p['label'])}</title></circle>"
        )
    fy = _scale(floor, y0, y1, h - pad, 20)
    svg = (
        f'<svg width="{w}" height="{h}" xmlns="http://www.w3.org/2000/svg" font-family="sans-serif">'
        f'<rect x="{pad}" y="20" width="{w - pad - 20}" height="{h - pad - 20}" fill="none" stroke="#ccc"/>'
        f'<line x1="{pad}" x2="{w - 20}" y1="{fy:.1f}" y2="{fy:.1f}" stroke="#999" stroke-dasharray="4"/>'
        f'<text x="{w - 22}" y="{fy - 4:.1f}" text-anchor="end" font-size="11" fill="#777">F1 floor {floor:.3f}</text>'
        f'<text x="{w / 2}" y="{h - 15}" text-anchor="middle" font-size="13">validation Eopp1 '
        f"({x0:.3f} .. {x1:.3f}, lower is fairer)</text>"
        f'<text x="15" y="{h / 2}" font-size="13" transform="rotate(-90 15 {h / 2})" text-anchor="middle">'
        f"validation average F1 ({y0:.3f} .. {y1:.3f})</text>" + "".join(shapes) + "</svg>"
    )
    legend = " ".join(f'<span style="color:{c}">&#9679; {k}</span>' for k, (c, _) in style.items())
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>FairPrune Pareto front</title></head>"
        f"<body><h2>FairPrune sweep: validation Pareto front</h2><p>{legend}</p><p>Hover a point for its "
        f"settings and MLflow run id.</p>{svg}</body></html>"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page)
    return path


def _figure(path_stem: Path, draw: Any, size: tuple[float, float] = (6.4, 4.4)) -> list[Path]:
    """Draw with ``draw(ax)`` and save as PNG and SVG; returns both paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=size, dpi=150)
    draw(ax)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path_stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [path_stem.with_suffix(".png"), path_stem.with_suffix(".svg")]
    for p in paths:
        fig.savefig(p)
    plt.close(fig)
    return paths


def _baseline_points(ax: Any, baselines: Baselines, x: str, y: str) -> None:
    """Baselines with 95% intervals on both axes, each in its own marker (none hides another)."""
    for i, (name, m) in enumerate(baselines.items()):
        marker, size, colour = _style(name, i)
        ax.errorbar(
            m[x],
            m[y],
            xerr=[[m[x] - m[f"{x}_ci_low"]], [m[f"{x}_ci_high"] - m[x]]],
            yerr=[[m[y] - m[f"{y}_ci_low"]], [m[f"{y}_ci_high"] - m[y]]],
            fmt=marker,
            ms=size,
            mfc="none" if i else colour,
            c=colour,
            capsize=2,
            lw=0.8,
            label=method_label(name),
            zorder=4,
        )


def beta_figure(points: pd.DataFrame, baselines: Baselines, path_stem: Path, *, split: str = "test") -> list[Path]:
    """Fig. 2(a): F1 vs Eopp1 of FairPrune as beta varies at a fixed ratio, against the baselines."""

    def draw(ax: Any) -> None:
        _baseline_points(ax, baselines, f"{split}_eopp1", f"{split}_avg_f1")
        pts = points.sort_values("beta")
        ax.plot(pts[f"{split}_eopp1"], pts[f"{split}_avg_f1"], "-o", c="#d1495b", ms=4, lw=1, label="FairPrune")
        for _, r in pts.iterrows():
            mark = " (collapsed)" if r.get("collapsed") else ""
            ax.annotate(
                f"b={r['beta']:g}{mark}",
                (r[f"{split}_eopp1"], r[f"{split}_avg_f1"]),
                fontsize=7,
                xytext=(3, 3),
                textcoords="offset points",
            )
        ax.set_xlabel(f"{split} Eopp1 (lower is fairer)")
        ax.set_ylabel(f"{split} average F1")
        ax.set_title("FairPrune as beta varies (fixed pruning ratio)")
        ax.legend(fontsize=7)

    return _figure(path_stem, draw)


def ratio_figure(curves: Mapping[str, pd.DataFrame], path_stem: Path) -> list[Path]:
    """Fig. 2(b, c): validation recall, Eopp0 and Eopp1 against the pruning ratio, per method."""
    colours = {"fairprune": "#d1495b", "obd": "#2e7d32"}

    def draw(ax: Any) -> None:
        for name, c in curves.items():
            colour = colours.get(name, "#555555")
            ax.plot(c["ratio"], c["val_avg_recall"], "-o", ms=3, c=colour, label=f"{method_label(name)}: avg recall")
            ax.plot(c["ratio"], c["val_eopp1"], "--s", ms=3, c=colour, label=f"{method_label(name)}: Eopp1")
            ax.plot(c["ratio"], c["val_eopp0"], ":^", ms=3, c=colour, label=f"{method_label(name)}: Eopp0")
        ax.set_xlabel("pruning ratio")
        ax.set_ylabel("validation metric")
        ax.set_title("Recall and fairness against the pruning ratio")
        ax.legend(fontsize=7, ncol=2)

    return _figure(path_stem, draw)


def front_figure(trials: pd.DataFrame, baselines: Baselines, floor: float, path_stem: Path) -> list[Path]:
    """The validation Pareto front with intervals on its points, every baseline marked, collapsed trials crossed."""

    def draw(ax: Any) -> None:
        collapsed = trials.get("collapsed", pd.Series("false", index=trials.index)).eq("true")
        infeas = trials[~trials["feasible"] & ~collapsed]
        ax.scatter(infeas["val_eopp1"], infeas["val_avg_f1"], marker=".", c="#bbbbbb", label="infeasible trial")
        ax.scatter(
            trials[collapsed]["val_eopp1"], trials[collapsed]["val_avg_f1"], marker="x", c="#999999", label="collapsed"
        )
        feas = trials[trials["feasible"] & ~trials["pareto_optimal"]]
        ax.scatter(feas["val_eopp1"], feas["val_avg_f1"], c="#7aa6c2", s=14, label="feasible trial")
        front = trials[trials["pareto_optimal"]].sort_values("val_eopp1")
        ax.errorbar(
            front["val_eopp1"],
            front["val_avg_f1"],
            xerr=[front["val_eopp1"] - front["val_eopp1_ci_low"], front["val_eopp1_ci_high"] - front["val_eopp1"]],
            yerr=[front["val_avg_f1"] - front["val_avg_f1_ci_low"], front["val_avg_f1_ci_high"] - front["val_avg_f1"]],
            fmt="o",
            c="#d1495b",
            ms=5,
            capsize=2,
            lw=0.8,
            label="Pareto-optimal (95% BCa)",
            zorder=3,
        )
        ax.step(front["val_eopp1"], front["val_avg_f1"], where="post", c="#d1495b", lw=1)
        _baseline_points(ax, baselines, "val_eopp1", "val_avg_f1")
        ax.axhline(floor, ls="--", c="#999999", lw=1, label=f"F1 floor {floor:.3f}")
        ax.set_xlabel("validation Eopp1 (lower is fairer)")
        ax.set_ylabel("validation average F1")
        ax.set_title("Validation Pareto front")
        ax.legend(fontsize=7, loc="lower right")

    return _figure(path_stem, draw)
