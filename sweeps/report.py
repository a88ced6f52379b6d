"""The report of a sweep: the paper's Table 1/2 on test and its Fig. 2, with honest statistics.

    python sweeps/report.py                     # the latest sweep in fairprune_runs/sweeps
    python sweeps/report.py --name isic2019-20261201-101500
    python sweeps/report.py --smoke-test        # two betas, a short ratio curve (CI)

Writes report.md and PNG/SVG figures into the sweep folder and logs them to the sweep's MLflow
parent run (under report/). FairPrune points are chosen on VALIDATION; the table is on TEST.
Ablations the search did not produce (beta at a fixed ratio, the ratio at a fixed beta) are
run as child runs tagged role=ablation, and reused by later reports.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fairprune_core.cli import name_argument, run_main


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--name", type=name_argument, default=None, help="the sweep (default: the latest one in --storage)")
    p.add_argument("--storage", type=Path, default=Path("fairprune_runs/sweeps"), help="where sweeps are kept")
    p.add_argument(
        "--betas",
        type=float,
        nargs="+",
        default=None,
        help="Fig. 2(a) betas, at the OBD baseline's step and ratio (default: 0 0.05 0.1 0.2 0.33 0.5)",
    )
    p.add_argument("--curve-beta", type=float, default=None, help="Fig. 2(b, c): FairPrune's beta (default 0.2)")
    p.add_argument("--curve-max", type=float, default=None, help="Fig. 2(b, c): the largest ratio (default 0.8)")
    p.add_argument("--smoke-test", action="store_true", help="betas 0 and 0.2, ratio curve to 20%% (CI)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from dataclasses import replace

    from fairprune_core.sweep.report import ReportConfig, build_report

    rc = ReportConfig(betas=(0.0, 0.2), curve_step=0.1, curve_max=0.2) if args.smoke_test else ReportConfig()
    given = {
        "betas": tuple(args.betas) if args.betas else None,
        "curve_beta": args.curve_beta,
        "curve_max": args.curve_max,
    }
    rc = replace(rc, **{k: v for k, v in given.items() if v is not None})
    found = sorted(args.storage.glob("*/sweep.json"), key=lambda f: f.stat().st_mtime)
    if args.name is None and not found:
        raise SystemExit(f"no sweep found in {args.storage}; run python sweeps/pareto.py first, or pass --storage")
    directory = args.storage / args.name if args.name else found[-1].parent
    if not (directory / "sweep.json").is_file():
        known = ", ".join(sorted(f.parent.name for f in found)) or "none"
        raise SystemExit(f"--name {args.name}: no sweep of that name in {args.storage} (the sweeps there: {known})")
    build_report(directory, rc)
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main, interrupted="the ablation runs that finished are kept; the same command reuses them"))
