"""`srdpo-eval`: one command line for the four stages.

Each stage module exposes ``register(subparsers)``, which adds its sub-commands and sets ``func`` on
them; heavy imports (torch, transformers, lm-eval) happen inside the command functions so that
``srdpo-eval --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# Stage modules that contribute sub-commands, in the order data flows.
STAGE_MODULES = (
    "trainer.cli",  # train
    "benchmarks.cli",  # data, answers
    "benchmarks.judge_cli",  # judge
    "benchmarks.leaderboard_cli",  # leaderboard
    "analysis.cli",  # delta, figures
    "srdpo_eval.reproduce_cli",  # reproduce
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="srdpo-eval",
        description="Train DPO/IPO/Sr-DPO/Sr-IPO, benchmark the checkpoints, analyse the results.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in STAGE_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
