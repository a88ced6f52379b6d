"""Pictures of a sweep: the Pareto front (PNG + SVG), a linked HTML version, and the report's figures."""

from __future__ import annotations

import html
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from .methods import method_label

__all__ = ["beta_figure", "front_figure", "front_html", "ratio_figure"]

Baselines = Mapping[str, Mapping[str, float]]  # method name -> flat val/test metrics
# marker, size and colour per baseline; others cycle through the fallback styles
_BASELINE_STYLE = {"vanilla": ("*", 11, "#000000"), "obd": ("D", 7, "#2e7d32")}
_FALLBACK_STYLE = [("s", 7, "#6a3d9a"), ("^", 8, "#ff7f00"), ("v", 8, "#b15928"), ("P", 8, "#1f78b4")]


def _style(name: str, i: int) -> tuple[str, int, str]:
    return _BASELINE_STYLE.get(name) or _FALLBACK_STYLE[i % len(_FALLBACK_STYLE)]


def _scale(v: float, lo: float, hi: float, a: float, b: float) -> float:
    return a + (v - lo) / (hi - lo or 1.0) * (b - a)


def _front_points(trials: pd.DataFrame) -> pd.DataFrame:
    """The front's distinct points: Pareto-optimal trials that are not a tie's duplicate."""
    duplicate = trials.get("pareto_duplicate", pd.Series(False, index=trials.index)).astype(bool)
    return trials[trials["pareto_optimal"] & ~duplicate]


def _kind(r: pd.Series) -> str:
    if str(r.get("collapsed", "false")) == "true":
        return "collapsed"
    if r["pareto_optimal"]:
        return "duplicate" if r.get("pareto_duplicate", False) else "front"
    return "feasible" if r["feasible"] else "infeasible"


_HTML_STYLE = {
    "front": ("#d1495b", 6),
    "duplicate": ("#e8a0aa", 4),
    "feasible": ("#7aa6c2", 4),
    "infeasible": ("#bbbbbb", 3),
    "collapsed": ("#555555", 3),
}


def _trial_label(r: pd.Series) -> str:
    notes = [
        n
        for n, on in (
            ("collapsed", _kind(r) == "collapsed"),
            ("predicts like vanilla", str(r.get("predicts_like_vanilla", "false")) == "true"),
        )
        if on
    ]
    if r.get("pareto_duplicate", False):
        notes.append(f"tie of trial {int(r['duplicate_of'])}")
    return (
        f"trial {r['trial']}: beta {r['beta']:.3f}, step {r['step_ratio']:.3f}, final {r['final_ratio']:.3f}; "
        f"val F1 {r['val_avg_f1']:.4f}, val Eopp1 {r['val_eopp1']:.4f}; test F1 "
        f"{r.get('test_avg_f1', float('nan')):.4f}, test Eopp1 {r.get('test_eopp1', float('nan')):.4f}"
        + (f" ({'; '.join(notes)})" if notes else "")
    )


def front_html(
    trials: pd.DataFrame,
    baselines: Baselines,
    floor: float,
    path: Path,
    run_link: Callable[[str], str] | None = None,
) -> Path:
    """A self-contained front (inline SVG): hover a point for its settings, click it to open its
    MLflow run (``run_link(run_id)``); a table of the front's points below, linked the same way."""
    link = run_link or (lambda run_id: "")
    pts: list[dict[str, Any]] = [
        {
            "x": r["val_eopp1"],
            "y": r["val_avg_f1"],
            "kind": _kind(r),
            "label": _trial_label(r),
            "href": link(r["run_id"]),
        }
        for _, r in trials.iterrows()
    ]
    style = dict(_HTML_STYLE)
    for i, (name, m) in enumerate(baselines.items()):
        label = method_label(name)
        style[label] = (_style(name, i)[2], 8 if name == "vanilla" else 7)
        pts.append(
            {
                "x": m["val_eopp1"],
                "y": m["val_avg_f1"],
                "kind": label,
                "label": f"{label}: val F1 {m['val_avg_f1']:.4f}, val Eopp1 {m['val_eopp1']:.4f}",
                "href": "",
            }
        )
    xs, ys = [p["x"] for p in pts], [p["y"] for p in pts] + [floor]
    x0, x1 = min(xs) - 0.01, max(xs) + 0.01
    y0, y1 = min(ys) - 0.02, max(ys) + 0.02
    w, h, pad = 720, 480, 60
    shapes = []
    for p in sorted(pts, key=lambda p: p["kind"] == "front"):  # front points drawn last, on top
        cx, cy = _scale(p["x"], x0, x1, pad, w - 20), _scale(p["y"], y0, y1, h - pad, 20)
        colour, r = style[p["kind"]]
        dot = (
            f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="{r}" fill="{colour}" class="{p["kind"]}">'
            f"<title>{html.escape(p['label'])}</title></circle>"
        )
        shapes.append(f'<a href="{html.escape(p["href"])}" target="_blank">{dot}</a>' if p["href"] else dot)
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
    rows = "".join(
        f"<tr><td><a href='{html.escape(link(r['run_id']))}' target='_blank'>trial {r['trial']}</a></td>"
        f"<td>{html.escape(_trial_label(r))}</td><td>{int(r.get('ties', 1))}</td></tr>"
        for _, r in _front_points(trials).sort_values("val_avg_f1", ascending=False).iterrows()
    )
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>FairPrune Pareto front</title></head>"
        f"<body><h2>FairPrune sweep: validation Pareto front</h2><p>{legend}</p><p>Hover a point for its "
        f"settings; click a trial to open its MLflow run (the MLflow UI must be running).</p>{svg}"
        f"<h3>The front's points</h3><table border='1' cellpadding='3'><tr><th>run</th><th>settings and "
        f"metrics</th><th>trials at this point</th></tr>{rows}</table></body></html>"
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
    with plt.rc_context({"svg.fonttype": "none"}):  # SVG text stays text: editable in a paper's figure
        for p in paths:
            fig.savefig(p, bbox_inches="tight")  # a legend beside the axes is kept
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
        _coincident_note(ax, baselines, f"{split}_eopp1", f"{split}_avg_f1")
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


def _nonempty(points: pd.DataFrame, label: str) -> str | None:
    """A legend label for points that exist (an empty kind gets no legend entry)."""
    return label if len(points) else None


def _coincident_note(ax: Any, baselines: Baselines, x: str, y: str) -> None:
    """Baselines at the same point are named together there, so none hides another unseen."""
    at: dict[tuple[float, float], list[str]] = {}
    for name, m in baselines.items():
        at.setdefault((round(m[x], 9), round(m[y], 9)), []).append(method_label(name))
    for (px, py), names in at.items():
        if len(names) > 1:
            ax.annotate(" = ".join(names), (px, py), fontsize=7, xytext=(6, -10), textcoords="offset points")


def front_figure(trials: pd.DataFrame, baselines: Baselines, floor: float, path_stem: Path) -> list[Path]:
    """The validation Pareto front with 95% intervals on its points (one per distinct point, the
    number of tied trials written beside it), every baseline marked and named where baselines
    coincide, collapsed trials crossed; PNG and SVG."""

    def draw(ax: Any) -> None:
        collapsed = trials.get("collapsed", pd.Series("false", index=trials.index)).astype(str).eq("true")
        infeas = trials[~trials["feasible"] & ~collapsed]
        ax.scatter(
            infeas["val_eopp1"],
            infeas["val_avg_f1"],
            marker=".",
            c="#bbbbbb",
            label=_nonempty(infeas, "infeasible trial"),
        )
        ax.scatter(
            trials[collapsed]["val_eopp1"],
            trials[collapsed]["val_avg_f1"],
            marker="x",
            c="#555555",
            label=_nonempty(trials[collapsed], "collapsed (never fair)"),
        )
        feas = trials[trials["feasible"] & ~trials["pareto_optimal"]]
        ax.scatter(feas["val_eopp1"], feas["val_avg_f1"], c="#7aa6c2", s=14, label=_nonempty(feas, "feasible trial"))
        front = _front_points(trials).sort_values("val_eopp1")
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
            mec="white",
            mew=0.6,
            label="Pareto-optimal (95% BCa)",
            zorder=5,  # above the baselines: a front point at a baseline's place stays visible
        )
        ax.step(front["val_eopp1"], front["val_avg_f1"], where="post", c="#d1495b", lw=1)
        for _, r in front.iterrows():
            notes = [f"x{int(r['ties'])}"] if int(r.get("ties", 1)) > 1 else []
            if str(r.get("predicts_like_vanilla", "false")) == "true":
                notes.append("= vanilla")
            if notes:
                ax.annotate(
                    " ".join(notes),
                    (r["val_eopp1"], r["val_avg_f1"]),
                    fontsize=7,
                    xytext=(4, 4),
                    textcoords="offset points",
                    color="#d1495b",
                )
        _baseline_points(ax, baselines, "val_eopp1", "val_avg_f1")
        _coincident_note(ax, baselines, "val_eopp1", "val_avg_f1")
        ax.axhline(floor, ls="--", c="#999999", lw=1, label=f"F1 floor {floor:.3f}")
        ax.set_xlabel("validation Eopp1 (lower is fairer)")
        ax.set_ylabel("validation average F1")
        ax.set_title("Validation Pareto front")
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1), borderaxespad=0)  # off the points

    return _figure(path_stem, draw, size=(7.6, 4.4))
