"""`srdpo-eval judge`: judge a run directory's answers (no regeneration) and print the result tables."""

from __future__ import annotations

import argparse
import itertools
import sys

from contracts.benches import BENCHES, get_bench
from contracts.errors import UserError
from contracts.ids import safe_name
from contracts.run_dir import RunDir


def register(subparsers) -> None:
    from benchmarks.cli import add_question_flags
    from benchmarks.judge.config import JudgeConfig
    from contracts.settings import add_flags

    p = subparsers.add_parser(
        "judge", help="judge MT-Bench / Vicuna-Bench answers with GPT-4 or any OpenAI-compatible model",
        description="Judge existing answers (FastChat llm_judge rules), resumable and cached; print and save "
                    "the result tables under RUN_DIR/tables/judge/. The API key is read from the environment only.")
    p.add_argument("run_dir", metavar="RUN_DIR")
    add_flags(p, JudgeConfig)
    p.add_argument("--bench", choices=(*BENCHES, "all"), default="all",
                   help="'all': every benchmark with answer files in RUN_DIR")
    p.add_argument("--mode", choices=("single", "pairwise"), default="single",
                   help="single: grade each answer 1-10 (MT-Bench); pairwise: which of two models' answers is "
                        "better, asked in both orders (default: single)")
    p.add_argument("--models", nargs="+", default=None,
                   help="single: models to grade (default: all answer files); pairwise: A B judges A vs B "
                        "(more than two: every pair)")
    p.add_argument("--baseline", default=None, help="pairwise: judge each of --models against this model")
    p.add_argument("--data-dir", default=None, help="FastChat llm_judge data folder")
    add_question_flags(p)  # the same questions as `answers` was given
    p.add_argument("--no-cache", action="store_true", help="do not read or write RUN_DIR/judge_cache.sqlite")
    p.add_argument("--dry-run", action="store_true",
                   help="count calls, cache hits, tokens and cost; call nothing (no API key needed)")
    p.add_argument("--price-in", type=float, default=None, help="USD per 1M prompt tokens (dry-run estimate)")
    p.add_argument("--price-out", type=float, default=None, help="USD per 1M completion tokens (dry-run estimate)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (there is none off a terminal)")
    p.set_defaults(func=run_judge)


def _config(args):
    from dataclasses import fields

    from benchmarks.judge.config import JudgeConfig
    from contracts.settings import FlagSource, apply, check_required, given

    flags = {"backend": "--judge-backend", "model": "--judge-model"}
    cfg = apply(JudgeConfig(), given(args, [f.name for f in fields(JudgeConfig)]), FlagSource(flags))
    check_required(cfg, FlagSource(flags))
    cfg.check("--concurrency")
    from benchmarks.cli import check_question_flags

    check_question_flags(args)
    for flag, v in (("--price-in", args.price_in), ("--price-out", args.price_out)):
        if v is not None and v < 0:
            raise UserError(f"{flag}: must be >= 0, got {v}")
    if not RunDir(args.run_dir).root.is_dir():
        raise UserError(f"{args.run_dir}: run directory not found")
    return cfg


def _pairs(args, available: list[str]) -> list[tuple[str, str]]:
    if args.baseline:
        models = args.models or [m for m in available if m != safe_name(args.baseline)]
        return [(m, args.baseline) for m in models if m != args.baseline]
    models = args.models or []
    if len(models) < 2:
        raise UserError("--mode pairwise: give --models A B (A vs B) or --baseline NAME")
    return list(itertools.combinations(models, 2))


def _benches(args) -> list[str]:
    from benchmarks.judge.run import list_answer_models

    if args.bench != "all":
        return [args.bench]
    found = [b for b in BENCHES if list_answer_models(args.run_dir, b)]
    if not found:
        raise UserError(f"{args.run_dir}: no answer files under <bench>/model_answer/; run `srdpo-eval answers` first")
    return found


def run_judge(args: argparse.Namespace) -> int:
    """Judge every selected benchmark in one event loop, then print and save the tables."""
    return _run_judge(args)


def _run_judge(args: argparse.Namespace) -> int:
    import asyncio

    from benchmarks.judge.config import judge_name, make_backend, plan_args
    from benchmarks.judge.run import JudgeRunError, judge_async, judge_plan, list_answer_models

    cfg = _config(args)
    benches = _benches(args)
    jobs = []
    for bench in benches:
        kw = dict(data_dir=args.data_dir, cache=not args.no_cache, price_in=args.price_in, price_out=args.price_out,
                  limit=args.limit, per_category=args.per_category)
        if args.mode == "single":
            kw["models"] = args.models
        else:
            kw["pairs"] = _pairs(args, list_answer_models(args.run_dir, bench))
        jobs.append((bench, kw))

    name = judge_name(cfg, convert=not args.dry_run)
    if args.dry_run:  # no backend: no key needed, no model loaded, nothing written or downloaded
        results = [(bench, kw, judge_plan(args.run_dir, bench, mode=args.mode, **plan_args(cfg), **kw))
                   for bench, kw in jobs]
    else:
        backend = make_backend(cfg)

        async def main() -> list:
            results = []
            try:
                for bench, kw in jobs:
                    try:
                        results.append((bench, kw, await judge_async(
                            args.run_dir, bench, backend, mode=args.mode, concurrency=cfg.concurrency, progress=not args.no_progress, **kw)))
                    except JudgeRunError as e:
                        results.append((bench, kw, e))
            finally:
                if hasattr(backend, "aclose"):
                    await backend.aclose()
            return results

        results = asyncio.run(main())
    status = 0
    for bench, kw, result in results:
        print(f"\n== {bench} ({args.mode}, judge {name})")
        failed = isinstance(result, JudgeRunError)
        summary = result.summary if failed else result
        print(summary.describe())
        if not args.dry_run:  # partial results are results: the tables of what was judged, said to be partial
            if failed:
                print(f"note: partial tables: {len(summary.failed)} judgments failed (see the error below); these "
                      f"are from the judgments in {summary.path}")
            _tables(args.run_dir, bench, args.mode, name, kw, summary.path)
        if failed:
            print(f"srdpo-eval judge: error: {result}", file=sys.stderr)
            status = 1  # some judgments are missing: not a clean run
    return status


def _tables(run_dir, bench: str, mode: str, judge: str, kw: dict, path) -> None:
    from benchmarks import results as R
    from contracts.files import written

    tables = RunDir(run_dir).judge_tables
    stem = f"{bench}_{mode}_{safe_name(judge)}"

    def save(df, name: str, **kw) -> None:
        with written(tables / f"{name}.csv") as tmp:
            df.to_csv(tmp, **kw)

    if mode == "single":
        df = R.load_single_judgments(path) if path.is_file() else None
        if df is not None and kw.get("models"):
            df = df[df["model"].isin(kw["models"])]
        if df is None or not (df["score"] != -1).any():
            raise UserError(f"{path}: no usable judgment to tabulate ({'no record' if df is None or not len(df) else 'every reply lacked a rating: score -1'}); "
                            "read the judge's replies in that file (a judge model too small or a prompt cut short?)")
        scores = R.mt_bench_scores(df, judge=judge)
        save(scores, stem)
        print(R.format_table(scores))
        if get_bench(bench).single:  # a bench graded one answer at a time has its categories' scores too
            cats = R.mt_bench_category_scores(df, data_dir=kw["data_dir"], bench=bench, judge=judge)
            save(cats, f"{stem}_categories")
            print(R.format_table(cats))
    else:
        table = R.pairwise_table(R.load_pair_judgments(path), kw["pairs"], judge=judge) if path.is_file() else None
        if table is None or not len(table) or not (table["n"] > 0).any():
            raise UserError(f"{path}: no usable judgment to tabulate (no record, or every verdict an error); read "
                            "the judge's replies in that file")
        save(table, stem, index=False)
        cols = ["comparison", "win", "tie", "loss", "n", "adjusted_win_rate", "adjusted_ci_low", "adjusted_ci_high",
                "n_errors"] + (["p_a", "p_a_ci_low", "p_a_ci_high"] if table["p_a"].notna().any() else [])
        print(R.format_table(table[cols].set_index("comparison")))
