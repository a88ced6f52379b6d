"""Plain-text tables in the layout of the paper's Tables 1-2."""

from __future__ import annotations

from typing import Any

__all__ = ["paper_table", "significance_lines"]


def _fmt(v: float) -> str:
    return "  nan" if v != v else f"{v:.3f}"


def _ci(metrics: dict[str, Any], key: str) -> str:
    iv = metrics.get("intervals", {}).get(key)
    return f" [{_fmt(iv[0])}, {_fmt(iv[1])}]" if iv else ""


def paper_table(rows: dict[str, dict[str, Any]], group_names: list[str], *, title: str = "") -> str:
    """One block per method: per-group precision/recall/F1, Avg and Diff, Eopp0/Eopp1/Eodd.

    ``rows`` maps a method name to :func:`fairprune_core.metrics.fairness_metrics` output
    (optionally with ``"intervals"`` from the bootstrap, shown as [low, high]).
    """
    w = max([28, *(len(n) + 2 for n in rows)])
    gw = max([9, *(len(n) + 2 for n in group_names)])
    head = f"{'method':<{w}}{'group':<{gw}}{'precision':>10}{'recall':>9}{'F1':>8}   fairness"
    lines = [title, head, "-" * (len(head) + 40)] if title else [head, "-" * (len(head) + 40)]
    for name, m in rows.items():
        null = m.get("null")
        null_text = f"  null q95 {null['null_q95']:.3f}, p {null['p_value']:.2f}" if null else ""
        fair = [
            f"Eopp0 {m['eopp0']:.4f}{_ci(m, 'eopp0')}",
            f"Eopp1 {m['eopp1']:.4f}{_ci(m, 'eopp1')}{null_text}",
            f"Eodd  {m['eodd']:.4f}{_ci(m, 'eodd')}",
            "",
        ]
        sub = [(group_names[g], m["groups"][g]) for g in (0, 1)] + [("Avg", m["avg"]), ("Diff", m["diff"])]
        for i, (label, vals) in enumerate(sub):
            key = "avg_f1" if label == "Avg" else ("diff_f1" if label == "Diff" else None)
            extra = _ci(m, key) if key else ""
            lines.append(
                f"{(name if i == 0 else ''):<{w}}{label:<{gw}}{_fmt(vals['precision']):>10}"
                f"{_fmt(vals['recall']):>9}{_fmt(vals['f1']):>8}{extra:<18} {fair[i]}"
            )
        lines.append("")
    return "\n".join(lines)


VERDICT_METRICS = (("eopp1", "Eopp1"), ("eodd", "Eodd"), ("avg_f1", "avg F1"), ("diff_f1", "F1 diff"))


def significance_lines(
    name: str, paired: dict[str, dict[str, Any]], split: str, *, against: str = "Vanilla", collapsed: str = ""
) -> list[str]:
    """Paired-bootstrap verdicts of ``name`` against ``against``: is each change larger than
    sampling noise? A collapsed model is not compared; identical predictions say so once."""
    head = f"  {name} vs {against} ({split}):"
    if collapsed:
        return [f"{head} not compared: {name} collapsed ({collapsed}); its fairness numbers are trivial"]
    if any(r.get("identical") for r in paired.values()):
        return [f"{head} no prediction changed"]
    lines = []
    for key, label in VERDICT_METRICS:
        r = paired[key]
        verdict = r["verdict"]  # from fairprune_core.stats.compare
        if verdict == "inside sampling noise":
            verdict = "INSIDE sampling noise (CI contains 0)"
        lines.append(f"{head} d{label} {r['delta']:+.4f} [{r['low']:+.4f}, {r['high']:+.4f}] -> {verdict}")
    return lines
