"""`srdpo-eval leaderboard`: Open LLM Leaderboard (v1) scores of checkpoints, through lm-eval.

Flags: one per LeaderboardConfig option (benchmarks/leaderboard.py), plus what to evaluate.
"""

from __future__ import annotations

import argparse
from dataclasses import fields
from pathlib import Path

from contracts.errors import UserError


def register(subparsers) -> None:
    from benchmarks.leaderboard import LeaderboardConfig
    from contracts.settings import add_flags

    p = subparsers.add_parser(
        "leaderboard", help="Open LLM Leaderboard v1 tasks (ARC, HellaSwag, TruthfulQA, MMLU, Winogrande, GSM8K)",
        description="Evaluate checkpoints with lm-eval at the leaderboard's settings; one JSON per "
                    "(checkpoint, task) under RUN_DIR/leaderboard/<model_id>/, reused on rerun when the "
                    "checkpoint content and settings are unchanged; RUN_DIR/leaderboard/scores.csv in percent. "
                    "A CHECKPOINT may be a training run directory (train/<run>/): all its checkpoint-<step>/ "
                    "and final/ are evaluated, named as every stage names them (<run>-p<pairs seen>, <run>).")
    p.add_argument("checkpoints", nargs="*", metavar="CHECKPOINT", help="HF checkpoint or training run directories")
    p.add_argument("--output", "-o", required=True, metavar="RUN_DIR", help="run directory")
    p.add_argument("--model-id", nargs="+", default=None,
                   help="one name per CHECKPOINT (default: the id contracts.ids gives the directory)")
    p.add_argument("--models-json", action="store_true",
                   help="evaluate the entries of RUN_DIR/models.json (with --run: only that training run's)")
    p.add_argument("--run", default=None, help="with --models-json: only entries of this training run")
    p.add_argument("--num-fewshot", action="append", default=[], metavar="TASK=N",
                   help="override the leaderboard's shot count for a task (not comparable with the paper)")
    add_flags(p, LeaderboardConfig)
    p.set_defaults(func=run_leaderboard)


def _parse_fewshot(items: list[str]) -> dict[str, int]:
    out = {}
    for item in items:
        task, sep, n = item.partition("=")
        if not sep or not n.strip().isdigit():
            raise UserError(f"--num-fewshot {item!r}: expected TASK=N")
        out[task.strip()] = int(n)
    return out


def _targets(args) -> list[tuple[str, str]]:
    from benchmarks.leaderboard import check_checkpoint, models_of_run, run_checkpoints
    from contracts.ids import model_id_for_checkpoint

    out: list[tuple[str, str]] = []
    if args.models_json:
        out += [(e.model_id, e.path) for e in models_of_run(args.output, args.run)]
    if args.model_id and len(args.model_id) != len(args.checkpoints):
        raise UserError(f"--model-id: {len(args.model_id)} names for {len(args.checkpoints)} checkpoints")
    for i, ckpt in enumerate(args.checkpoints):
        p = Path(ckpt)
        if p.is_dir() and not (p / "config.json").exists() and (any(p.glob("checkpoint-*")) or (p / "final").is_dir()):
            out += [(m, str(c)) for m, c in run_checkpoints(p)]  # a training run directory
        else:
            check_checkpoint(p)
            out.append((args.model_id[i] if args.model_id else model_id_for_checkpoint(p), ckpt))
    if not out:
        raise UserError("give CHECKPOINT directories or --models-json")
    return out


def run_leaderboard(args: argparse.Namespace) -> int:
    """Evaluate, then print the scores table of the whole run directory."""
    from benchmarks.leaderboard import LeaderboardConfig, evaluate_checkpoints, format_table, scores_table
    from contracts.settings import FlagSource, apply, given

    names = [f.name for f in fields(LeaderboardConfig) if f.name != "num_fewshot"]  # its own TASK=N flag
    cfg = apply(LeaderboardConfig(), given(args, names), FlagSource())
    if args.num_fewshot:
        cfg.num_fewshot = _parse_fewshot(args.num_fewshot)
    if isinstance(cfg.limit, float) and cfg.limit >= 1:
        cfg.limit = int(cfg.limit)
    cfg.check()
    evaluate_checkpoints(_targets(args), cfg, args.output)
    df = scores_table(args.output)
    print(format_table(df))
    if df["average"].isna().any():
        print("average: plain mean of the six tasks, only for models with all six scores.")
    return 0
