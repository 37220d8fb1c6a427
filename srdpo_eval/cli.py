"""`srdpo-eval`: one command line for the four stages, and its one error path.

Each stage module exposes ``register(subparsers)``, which adds its sub-commands and sets ``func`` on
them; heavy imports (torch, transformers, lm-eval) happen inside the command functions so that
``srdpo-eval --help`` stays fast.

Errors: a user's mistake (contracts.errors.UserError — bad input file, config, flag, missing file or
model, unreachable endpoint, a second writer of an output), a full disk (anywhere, also inside a
library) and Ctrl-C print one line and exit with status 2; ``--debug`` (or SRDPO_EVAL_DEBUG=1) shows the
traceback. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import importlib
import os
import sys

# Stage modules that contribute sub-commands, in the order data flows.
STAGE_MODULES = (
    "trainer.cli",  # train
    "benchmarks.cli",  # data, answers, delta, delta-pairs
    "benchmarks.judge_cli",  # judge
    "benchmarks.leaderboard_cli",  # leaderboard
    "analysis.cli",  # figures
    "srdpo_eval.reproduce_cli",  # reproduce
)
DEBUG_ENV = "SRDPO_EVAL_DEBUG"


def build_parser():
    from contracts.settings import ArgumentParser

    parser = ArgumentParser(
        prog="srdpo-eval",
        description="Train DPO/IPO/Sr-DPO/Sr-IPO, benchmark the checkpoints, analyse the results.",
    )
    parser.add_argument("--debug", action="store_true", help=f"show tracebacks of user errors (or {DEBUG_ENV}=1)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in STAGE_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from contracts.errors import UserError

    # torch's CPU threads wait for work by spinning (libgomp's default). On a machine busy with other
    # processes a spinner holds a core that the thread it waits for needs: measured on 2 shared cores,
    # 4 answers of 48 tokens took 167 s with spinning waiters and 10 s with sleeping ones. Set before
    # torch loads (the commands import it lazily); a value in the environment wins.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    # our own bars show progress; the libraries' per-file ones ("Loading weights", "Writing model shards")
    # would print dozens of lines a run (read when huggingface_hub is first imported)
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    parser = build_parser()
    args = parser.parse_args(argv)
    debug = args.debug or os.environ.get(DEBUG_ENV, "") not in ("", "0")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    prog = f"srdpo-eval {args.command}"
    try:
        return int(args.func(args) or 0)
    except UserError as e:
        if debug:
            raise
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the output went to a pager or `head` that stopped reading: not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python flushes
        return 0
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"\n{prog}: interrupted; what was finished is kept: rerun the same command to resume",
              file=sys.stderr)
        return 2
    except Exception as e:  # a full disk met inside a library (torch, safetensors, sqlite): one line too
        from contracts.files import find_out_of_space, out_of_space

        full = find_out_of_space(e)
        if full is None or debug:
            raise
        print(f"{prog}: error: {out_of_space(full.filename)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
