"""`srdpo-eval leaderboard`: Open LLM Leaderboard (v1) scores of checkpoints, through lm-eval.

Multi-GPU (data parallel): ``accelerate launch -m srdpo_eval.cli leaderboard CKPT... --output RUN_DIR``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(subparsers) -> None:
    from benchmarks.leaderboard import LEADERBOARD_TASKS

    names = ",".join(t.name for t in LEADERBOARD_TASKS)
    p = subparsers.add_parser(
        "leaderboard", help="Open LLM Leaderboard v1 tasks (ARC, HellaSwag, TruthfulQA, MMLU, Winogrande, GSM8K)",
        description="Evaluate checkpoints with lm-eval at the leaderboard's settings; one JSON per "
                    "(checkpoint, task) under RUN_DIR/leaderboard/<model_id>/, reused on rerun when the "
                    "checkpoint content and settings are unchanged; RUN_DIR/leaderboard/scores.csv in percent. "
                    "A CHECKPOINT may be a training run directory (train/<run>/): all its checkpoint-<step>/ "
                    "and final/ are evaluated. Multi-GPU: accelerate launch -m srdpo_eval.cli leaderboard ...")
    p.add_argument("checkpoints", nargs="*", metavar="CHECKPOINT", help="HF checkpoint directories")
    p.add_argument("--output", "-o", required=True, metavar="RUN_DIR", help="run directory")
    p.add_argument("--model-id", nargs="+", default=None,
                   help="one name per CHECKPOINT (default: the directory names)")
    p.add_argument("--models-json", action="store_true",
                   help="evaluate the entries of RUN_DIR/models.json (with --run: only that training run's)")
    p.add_argument("--run", default=None, help="with --models-json: only entries of this training run")
    p.add_argument("--tasks", default=names, help=f"comma-separated (default: {names})")
    p.add_argument("--limit", type=float, default=None,
                   help="documents per (sub)task, for smoke runs only (a fraction if < 1)")
    p.add_argument("--num-fewshot", action="append", default=[], metavar="TASK=N",
                   help="override the leaderboard's shot count for a task (not comparable with the paper)")
    p.add_argument("--batch-size", default="auto", help="int or 'auto' (default)")
    p.add_argument("--max-batch-size", type=int, default=64)
    p.add_argument("--backend", choices=("hf", "vllm"), default="hf")
    p.add_argument("--dtype", default="auto", help="auto = bf16 on GPU, float32 on CPU")
    p.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    p.add_argument("--include-path", action="append", default=[], metavar="DIR",
                   help="extra lm-eval task YAML directory (e.g. local copies of the tasks); repeatable")
    p.add_argument("--only-include-path", action="store_true",
                   help="use only the tasks under --include-path, not lm-eval's own")
    p.add_argument("--datasets-cache", default=None, help="HF_DATASETS_CACHE for this run")
    net = p.add_mutually_exclusive_group()
    net.add_argument("--offline", dest="offline", action="store_true", default=None,
                     help="never contact the Hub (default: decided by a 2 s probe)")
    net.add_argument("--online", dest="offline", action="store_false")
    p.set_defaults(func=run_leaderboard)


def _parse_fewshot(items: list[str]) -> dict[str, int]:
    out = {}
    for item in items:
        task, sep, n = item.partition("=")
        if not sep or not n.strip().isdigit():
            raise SystemExit(f"leaderboard: --num-fewshot {item!r}: expected TASK=N")
        out[task.strip()] = int(n)
    return out


def _targets(args) -> list[tuple[str, str]]:
    from benchmarks.leaderboard import models_of_run, run_checkpoints

    out: list[tuple[str, str]] = []
    if args.models_json:
        out += [(e.model_id, e.path) for e in models_of_run(args.output, args.run)]
    if args.model_id and len(args.model_id) != len(args.checkpoints):
        raise SystemExit(f"leaderboard: {len(args.model_id)} --model-id for {len(args.checkpoints)} checkpoints")
    for i, ckpt in enumerate(args.checkpoints):
        p = Path(ckpt)
        if p.is_dir() and not (p / "config.json").exists() and (any(p.glob("checkpoint-*")) or (p / "final").is_dir()):
            out += [(m, str(c)) for m, c in run_checkpoints(p)]  # a training run directory
        else:
            out.append((args.model_id[i] if args.model_id else p.resolve().name, ckpt))
    if not out:
        raise SystemExit("leaderboard: give CHECKPOINT directories or --models-json")
    return out


def run_leaderboard(args: argparse.Namespace) -> int:
    """Evaluate, then print the scores table of the whole run directory."""
    from benchmarks.leaderboard import (LeaderboardConfig, LeaderboardError, evaluate_checkpoints, format_table,
                                        scores_table)

    limit = args.limit
    if limit is not None and limit >= 1:
        limit = int(limit)
    batch = args.batch_size if args.batch_size == "auto" or args.batch_size.startswith("auto:") else int(args.batch_size)
    cfg = LeaderboardConfig(
        tasks=tuple(t.strip() for t in args.tasks.split(",") if t.strip()), limit=limit, batch_size=batch,
        max_batch_size=args.max_batch_size, backend=args.backend, dtype=args.dtype, device=args.device,
        num_fewshot=_parse_fewshot(args.num_fewshot), include_path=tuple(args.include_path),
        include_defaults=not args.only_include_path, hf_datasets_cache=args.datasets_cache, offline=args.offline)
    try:
        evaluate_checkpoints(_targets(args), cfg, args.output)
    except LeaderboardError as err:
        print(f"leaderboard: {err}", file=sys.stderr)
        return 1
    df = scores_table(args.output)
    print(format_table(df))
    if df["Average"].isna().any():
        print("Average: plain mean of the six tasks, only for models with all six scores.")
    return 0
