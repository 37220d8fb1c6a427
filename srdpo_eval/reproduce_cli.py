"""`srdpo-eval reproduce`: the whole pipeline in one resumable command."""

from __future__ import annotations

STAGES = ("sft", "reference", "train", "models", "answers", "judge", "leaderboard", "delta", "figures")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "reproduce",
        help="data → training (4 objectives) → benchmarks → judge → analysis, resumable",
        description="Run the paper's comparison end to end in RUN_DIR. Rerunning the same command resumes "
        "at the first unfinished unit of work; a changed setting reruns that stage and what depends on "
        "it. Without --config: the embedded offline CPU default (minutes).",
    )
    p.add_argument("--config", help="YAML config (see configs/); default: the embedded offline default")
    p.add_argument("--output", help="run directory (default: runs/<config name>)")
    p.add_argument("--stages", nargs="+", choices=STAGES, metavar="STAGE",
                   help=f"run only these stages ({', '.join(STAGES)}); the others are left as they are")
    p.add_argument("--seeds", type=int, nargs="+", metavar="SEED",
                   help="train every objective once per seed (overrides the config's seeds:)")
    p.add_argument("--dry-run", action="store_true",
                   help="print the plan: units to run or skip, training steps, judge calls and cost; run nothing")
    p.add_argument("--workers", type=_positive, metavar="N",
                   help="evaluation units run in N processes, one per GPU (default: the number of visible GPUs, "
                        "1 on a CPU)")
    p.add_argument("--shard", type=_shard, metavar="I/N",
                   help="run only the I-th of N shares of the evaluation units (I = 0 … N-1; training must have "
                        "finished); a later plain reproduce on the same output judges, merges and finishes")
    p.set_defaults(func=_run)


def _positive(text: str) -> int:
    import argparse

    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a number of worker processes >= 1, got {text!r}")
    return n


def _shard(text: str) -> tuple[int, int]:
    import argparse

    from contracts.errors import UserError
    from srdpo_eval.shards import parse_shard

    try:
        return parse_shard(text)
    except UserError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _run(args) -> int:
    from contracts.errors import UserError
    from srdpo_eval.config import load_config
    from srdpo_eval.reproduce import reproduce

    cfg = load_config(args.config)
    if args.seeds is not None:
        if min(args.seeds) < 0 or len(set(args.seeds)) != len(args.seeds):
            raise UserError(f"--seeds: give different seeds, each a number >= 0; got {' '.join(map(str, args.seeds))}")
        cfg.seeds = list(args.seeds)
    out = args.output or f"runs/{cfg.name}"
    reproduce(cfg, out, stages=args.stages, dry_run=args.dry_run, workers=args.workers, shard=args.shard)
    return 0
