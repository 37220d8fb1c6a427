"""`srdpo-eval train`: the trainer's command line (options mirror trainer/config.py's TrainConfig)."""

from __future__ import annotations

import argparse

from trainer.config import PRESETS, TRAIN_OBJECTIVES


def _bool(v: str) -> bool:
    if v.lower() in ("1", "true", "yes", "on"):
        return True
    if v.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {v!r}")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "train", help="train a policy with sft, DPO, IPO, Sr-DPO or Sr-IPO",
        description="Defaults < --preset < --config FILE < flags given here.",
    )
    # None defaults: only flags actually given override the preset / YAML file.
    a = p.add_argument
    a("--objective", choices=TRAIN_OBJECTIVES)
    a("--model", help="policy initialisation (Hugging Face checkpoint dir)")
    a("--data", help="preference data: JSONL/JSON/parquet file or (online) a HF dataset name")
    a("--output", help="run directory (e.g. RUN_DIR/train/<run>)")
    a("--ref-model", dest="ref_model", help="frozen reference (default: --model)")
    a("--config", dest="config_file", help="YAML file of options")
    a("--preset", choices=sorted(PRESETS), help="paper: the paper's hyper-parameters")
    a("--resume", action="store_true", default=None, help="continue from the last checkpoint in --output")
    a("--split")
    a("--max-pairs", dest="max_pairs", type=int)
    a("--beta", type=float)
    a("--lam", type=float, help="λ of Sr-DPO/Sr-IPO")
    a("--reduce", choices=("sum", "mean"), help="sequence log-prob: sum (paper) or per-token mean (TRL IPO)")
    a("--learning-rate", "--lr", dest="learning_rate", type=float)
    a("--optimizer", choices=("rmsprop", "adamw"))
    a("--weight-decay", dest="weight_decay", type=float)
    a("--scheduler", choices=("constant", "cosine"))
    a("--warmup-steps", dest="warmup_steps", type=int)
    a("--batch-size", dest="batch_size", type=int, help="pairs per optimizer step (all processes)")
    a("--micro-batch-size", dest="micro_batch_size", type=int, help="pairs per forward per process")
    a("--max-grad-norm", dest="max_grad_norm", type=float)
    a("--epochs", type=int)
    a("--max-steps", dest="max_steps", type=int)
    a("--save-every", dest="save_every", type=int)
    a("--seed", type=int)
    a("--device", choices=("auto", "cpu", "cuda"))
    a("--dtype", choices=("auto", "fp32", "bf16"))
    a("--mixed-precision", dest="mixed_precision", choices=("auto", "bf16", "no"))
    a("--gradient-checkpointing", dest="gradient_checkpointing", type=_bool, metavar="BOOL")
    a("--compile", type=_bool, metavar="BOOL")
    a("--group-by-length", dest="group_by_length", type=_bool, metavar="BOOL")
    a("--chunk-size", dest="chunk_size", type=int)
    a("--ref-batch-size", dest="ref_batch_size", type=int)
    a("--ref-cache-dir", dest="ref_cache_dir")
    a("--trust-remote-code", dest="trust_remote_code", action="store_true", default=None)
    a("--no-progress", dest="progress", action="store_false", default=None)
    a("--max-length", dest="max_length", type=int)
    a("--max-prompt-length", dest="max_prompt_length", type=int)
    a("--prompt-placement", dest="prompt_placement", choices=("user", "raw"))
    a("--quality-prompt", dest="quality_prompt", help="override the paper's p")
    a("--chat-template", dest="chat_template", type=_bool, metavar="BOOL")
    p.set_defaults(func=run_train)


def run_train(args: argparse.Namespace) -> int:
    import logging

    from trainer.config import build_config
    from trainer.train import TrainingDiverged, train

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    opts = {k: v for k, v in vars(args).items() if k not in ("func", "command", "config_file", "preset")}
    try:
        cfg = build_config(opts, preset=args.preset, config_file=args.config_file)
    except (ValueError, FileNotFoundError) as e:
        print(f"srdpo-eval train: {e}")
        return 2
    try:
        final = train(cfg)
    except TrainingDiverged as e:
        print(f"srdpo-eval train: {e}")
        return 1
    print(f"final checkpoint: {final}")
    return 0
