"""Benchmark: batched answer generation vs one question at a time (same model, questions, greedy).

    python perf/bench_generation.py [--questions 16] [--max-new-tokens 128] [--batch-size 16] [--threads 1]

Builds a random-weight Llama-style model (hidden 256, 4 layers by default) with the project's tiny
tokenizer, answers the first turn of MT-Bench questions through ``generate_answers`` twice — with
``--batch-size`` and with batch size 1 — all greedy (categories forced to temperature 0), and prints
both times, the speed-up and whether the answers agree. Stop tokens are disabled so that every
answer has exactly ``--max-new-tokens`` tokens in both runs (equal work).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # tiny.py: the tests' tiny models


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--questions", type=int, default=16)
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: stable on shared cores)")
    ap.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    ap.add_argument("--data-dir", default=None)
    args = ap.parse_args()

    import torch

    from benchmarks.answers import GenerationConfig, generate_answers
    from benchmarks.fastchat_data import Question, load_questions, resolve_data_dir
    from benchmarks.fastchat_data import load_answers
    from benchmarks.generation import HFGenerator
    from tiny import build_tiny_model

    torch.set_num_threads(args.threads)
    qs = load_questions(resolve_data_dir(args.data_dir, "mt_bench"), "mt_bench")[: args.questions]
    qs = [Question(q.question_id, "math", q.turns[:1]) for q in qs]  # math: temperature 0 (greedy)
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = build_tiny_model(Path(tmp) / "model", hidden_size=args.hidden, num_layers=args.layers,
                                num_heads=max(4, args.hidden // 64), max_positions=2048)
        gen = HFGenerator(ckpt, device=args.device, dtype="fp32")
        gen.fmt.stop_ids = []  # fixed-length answers: same token count in both runs
        gen.model.generation_config.eos_token_id = None
        gen.generate([gen.render([{"role": "user", "content": "warm up"}])], temperature=0.0,
                     max_new_tokens=4, seed=0)
        results = {}
        for bs in (args.batch_size, 1):
            cfg = GenerationConfig(max_new_tokens=args.max_new_tokens, batch_size=bs)
            out = Path(tmp) / f"bs{bs}.jsonl"
            if gen.model.device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            generate_answers(None, qs, out, model_id=f"bs{bs}", cfg=cfg, generator=gen, progress=False)
            if gen.model.device.type == "cuda":
                torch.cuda.synchronize()
            results[bs] = (time.perf_counter() - t0, {k: v["choices"][0]["turns"] for k, v in load_answers(out).items()})
    (tb, ab), (ts, as_) = results[args.batch_size], results[1]
    same = sum(ab[k] == as_[k] for k in ab)
    tokens = len(qs) * args.max_new_tokens
    print(f"model: llama hidden {args.hidden}, {args.layers} layers, fp32, device {gen.model.device}, "
          f"{args.threads} thread(s); {len(qs)} MT-Bench first turns, greedy, {args.max_new_tokens} new tokens each")
    print(f"{'mode':<24}{'seconds':>10}{'tokens/s':>12}")
    print(f"{f'batched (batch {args.batch_size})':<24}{tb:>10.2f}{tokens / tb:>12.1f}")
    print(f"{'one at a time':<24}{ts:>10.2f}{tokens / ts:>12.1f}")
    print(f"speed-up: {ts / tb:.2f}x (target >= 3x); identical answers: {same}/{len(ab)}")


if __name__ == "__main__":
    main()
