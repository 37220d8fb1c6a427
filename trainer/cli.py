"""`srdpo-eval train`: the trainer's command line, one flag per TrainConfig option (trainer/config.py)."""

from __future__ import annotations

import argparse
from dataclasses import fields

from trainer.config import TrainConfig


def register(subparsers) -> None:
    from contracts import objectives

    p = subparsers.add_parser(
        "train", help="train a policy: SFT, DPO, IPO, Sr-DPO, Sr-IPO and the other objectives of --objective",
        description="Defaults (the paper's settings) < --config FILE < flags given here. "
                    "Method: docs/method.md.",
        epilog="objectives (--objective), with the loss each minimises (m = m(x); Sr- objectives read Δπ):\n  "
               + "\n  ".join(objectives.help_lines()), formatter_class=argparse.RawDescriptionHelpFormatter)
    from contracts.settings import add_flags

    p.add_argument("--config", dest="config_file", metavar="FILE", help="YAML file of options (same names)")
    p.add_argument("--reference-only", action="store_true",
                   help="only compute (or find) the reference log-prob cache entry, on x and p ⊕ x, and exit "
                        "(under torchrun every process scores its share)")
    add_flags(p, TrainConfig)
    p.set_defaults(func=run_train)


def run_train(args: argparse.Namespace) -> int:
    import logging

    from contracts.settings import given
    from trainer.config import build_config
    from trainer.train import TrainingDiverged, reference_only, train

    cfg = build_config(given(args, [f.name for f in fields(TrainConfig)]), config_file=args.config_file)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.reference_only:
        print(f"reference log-probs: {reference_only(cfg)}")
        return 0
    try:
        final = train(cfg)
    except TrainingDiverged as e:
        print(f"srdpo-eval train: {e}")
        return 1
    print(f"final checkpoint: {final}")
    return 0
