"""Sub-commands of the analysis stage: `delta`, `delta-pairs` and `figures`."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "delta", help="Δπ, margin m(x) and reward margin of a checkpoint on preference pairs (CSV keyed by pair id)",
        description="For every (prompt, A, B) pair compute Δπ = β·m(p⊕x), m(x) and β·m(x) with the trainer's "
                    "own functions. Written in chunks; a rerun computes only the missing pair ids.")
    p.add_argument("checkpoint", help="policy checkpoint directory (Hugging Face format)")
    p.add_argument("--pairs", required=True, help="preference pairs: JSONL/JSON/parquet file or dataset source "
                   "understood by trainer.data.load_preference_data")
    p.add_argument("--ref-model", help="reference model (default: ref_model in the checkpoint's srdpo_info.json)")
    p.add_argument("--beta", type=float, default=None, help="β (default: the checkpoint's srdpo_info.json, else 0.1)")
    p.add_argument("--output", help="CSV to write (default: RUN_DIR/delta/<model-id>.csv with --run-dir)")
    p.add_argument("--run-dir", help="run directory; the table goes to RUN_DIR/delta/<model-id>.csv")
    p.add_argument("--model-id", help="name of the checkpoint in the table (default: the directory name)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--rating-fields", default="chosen_rating,rejected_rating",
                   help="record fields with the two answers' ratings, e.g. score_chosen,score_rejected")
    p.add_argument("--limit", type=int, default=None, help="use a random sample of this many pairs (paper: 200)")
    p.add_argument("--seed", type=int, default=0, help="seed of the --limit sample")
    p.add_argument("--dtype", default="auto", help="auto | bf16 | fp16 | fp32")
    p.add_argument("--device", default=None, help="cuda | cpu (default: cuda when available)")
    p.add_argument("--chunk-size", type=int, default=64, help="pairs per written chunk (the resume granularity)")
    p.set_defaults(func=_delta)

    p = subparsers.add_parser(
        "delta-pairs", help="build a pairs JSONL from two models' FastChat answers, rated by single grading",
        description="Pairs (question turn 1, answer of A, answer of B) with the single-grading scores of both "
                    "answers as chosen_rating / rejected_rating (A is written as 'chosen', B as 'rejected').")
    p.add_argument("run_dir")
    p.add_argument("--bench", default="mt_bench", choices=("mt_bench", "vicuna_bench"))
    p.add_argument("--model-a", required=True)
    p.add_argument("--model-b", required=True)
    p.add_argument("--judge", required=True, help="judge name of <judge>_single.jsonl (e.g. gpt-4)")
    p.add_argument("--data-dir", help="FastChat llm_judge data folder (questions)")
    p.add_argument("--output", required=True, help="JSONL to write")
    p.set_defaults(func=_delta_pairs)

    p = subparsers.add_parser(
        "figures", help="regenerate every table, figure and report.md of a run directory from stored results",
        description="Reads train/ logs, judgments, leaderboard/scores.csv and delta/ tables; writes "
                    "RUN_DIR/tables/*.csv, RUN_DIR/figures/*.png|pdf and RUN_DIR/report.md.")
    p.add_argument("run_dir")
    p.add_argument("--n-boot", type=int, default=2000, help="bootstrap resamples for the CIs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", help="FastChat llm_judge data folder (question categories)")
    p.set_defaults(func=_figures)


def _figures(args: argparse.Namespace) -> int:
    from pathlib import Path

    from analysis.report import build_report, print_summary

    if not Path(args.run_dir).is_dir():
        print(f"error: run directory {args.run_dir} not found")
        return 2
    rep = build_report(args.run_dir, n_boot=args.n_boot, seed=args.seed, data_dir=args.data_dir)
    print_summary(rep)
    return 0


def _delta(args: argparse.Namespace) -> int:
    from analysis.delta import delta_command

    return delta_command(args)


def _delta_pairs(args: argparse.Namespace) -> int:
    from analysis.delta import pairs_from_answers
    from srdpo_eval.run_dir import RunDir

    run = RunDir(args.run_dir)
    n = pairs_from_answers(
        run.answers(args.bench, args.model_a), run.answers(args.bench, args.model_b),
        run.judgments(args.bench, args.judge, "single"), args.output, bench=args.bench,
        model_a=args.model_a, model_b=args.model_b, data_dir=args.data_dir)
    print(f"{n} pairs written to {args.output}")
    return 0
