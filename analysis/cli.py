"""`srdpo-eval figures`: every table, figure and report.md of a run directory from stored results."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "figures", help="regenerate every table, figure and report.md of a run directory from stored results",
        description="Reads train/ logs, judgments, leaderboard results (refreshing leaderboard/scores.csv) and "
                    "delta/ tables; writes "
                    "RUN_DIR/tables/*.csv, RUN_DIR/figures/*.png|pdf and RUN_DIR/report.md.")
    from analysis.config import AnalysisConfig
    from contracts.settings import add_flags

    p.add_argument("run_dir")
    add_flags(p, AnalysisConfig)
    p.add_argument("--data-dir", help="FastChat llm_judge data folder (question categories)")
    p.set_defaults(func=_figures)


def _figures(args: argparse.Namespace) -> int:
    from dataclasses import fields
    from pathlib import Path

    from analysis.config import AnalysisConfig
    from analysis.report import build_report, print_summary
    from contracts.errors import UserError
    from contracts.settings import FlagSource, apply, given

    cfg = apply(AnalysisConfig(), given(args, [f.name for f in fields(AnalysisConfig)]), FlagSource())
    if not Path(args.run_dir).is_dir():
        raise UserError(f"{args.run_dir}: run directory not found")
    from benchmarks.leaderboard import collect_results, write_scores_csv

    if collect_results(args.run_dir):  # results of leaderboard units that ran elsewhere (reproduce --shard)
        write_scores_csv(args.run_dir)  # the leaderboard stage's own writer of its table
    rep = build_report(args.run_dir, n_boot=cfg.n_boot, seed=cfg.seed, data_dir=args.data_dir)
    print_summary(rep)
    return 0
