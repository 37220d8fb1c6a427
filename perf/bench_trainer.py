"""Benchmark: our DPO step vs TRL's DPOTrainer, and our Sr-DPO vs our DPO (same model, data, batch, length).

Each variant runs in its own subprocess (clean peak-memory numbers); the reference log-probs are
precomputed on both sides (our on-disk cache, warmed in a separate process first; TRL's
precompute_ref_log_probs) and gradient checkpointing is off on both. Step time: median over the
steps after the first. Peak memory: CUDA max_memory_allocated during training on GPU; on CPU the
peak RSS of the process sampled every 5 ms while training (weights, gradients and optimizer state
included — the same for every variant).

    python perf/bench_trainer.py                   # CPU: Llama-style, hidden 512, 8 layers, vocab 32k
    python perf/bench_trainer.py --size 0.5b       # GPU: ~0.5B Llama-style model, bf16 autocast
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

SIZES = {  # randomly initialised Llama-style models
    "cpu": dict(hidden_size=512, num_hidden_layers=8, num_attention_heads=8, intermediate_size=1408,
                vocab_size=32000),
    "0.5b": dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=2816,
                 vocab_size=128256),
}


def build(work: Path, size: str, seq: int, pairs: int) -> tuple[Path, Path]:
    """A random Llama model (tiny local tokenizer, big head) and pairs of exactly ``seq`` tokens each side."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    from trainer.tiny import build_tiny_tokenizer

    tok = build_tiny_tokenizer()
    cfg = LlamaConfig(num_key_value_heads=SIZES[size]["num_attention_heads"], max_position_embeddings=seq + 8,
                      tie_word_embeddings=False, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id, **SIZES[size])
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg)
    model.save_pretrained(work / "model", safe_serialization=True)
    tok.save_pretrained(work / "model")
    half = seq // 2  # prompt half, completion half (EOS included)
    data = work / "pairs.jsonl"
    with data.open("w") as f:
        for i in range(pairs):
            f.write(json.dumps({"id": i, "prompt": " fox" * half, "chosen": " dog" * (half - 1),
                                "rejected": " sea" * (half - 1)}) + "\n")
    return work / "model", data


class PeakRSS:
    """Peak resident memory of this process, sampled in a thread (torch's CPU allocations are invisible
    to tracemalloc)."""

    def __init__(self):
        import psutil

        self.proc, self.peak, self._stop = psutil.Process(), 0, threading.Event()

    def __enter__(self):
        self.peak = self.proc.memory_info().rss
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(0.005)

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)


def _peak_ctx():
    import contextlib

    import torch

    if torch.cuda.is_available():
        class Cuda(contextlib.AbstractContextManager):
            def __enter__(self):
                torch.cuda.reset_peak_memory_stats()
                return self

            def __exit__(self, *exc):
                torch.cuda.synchronize()
                self.peak = torch.cuda.max_memory_allocated()

        return Cuda()
    return PeakRSS()


def worker_ours(args) -> dict:
    from trainer.config import TrainConfig
    from trainer.data import DataConfig
    from trainer.train import train

    seq = args.seq
    cfg = TrainConfig(objective=args.objective, model=args.model, data=args.data, output=args.out,
                      batch_size=args.pairs, micro_batch_size=args.pairs, max_steps=args.steps, warmup_steps=0,
                      learning_rate=5e-7, optimizer="rmsprop", ref_cache_dir=args.cache, progress=False,
                      verify_logps=False, gradient_checkpointing=False, chunk_size=args.chunk,
                      max_length=seq + 256, max_prompt_length=seq)
    with _peak_ctx() as mem:
        train(cfg)
    log = [json.loads(l) for l in (Path(args.out) / "log.jsonl").read_text().splitlines()]
    return {"step_s": statistics.median(r["step_time_s"] for r in log[1:]), "peak": mem.peak}


def worker_cache(args) -> dict:
    """Warm our reference cache (x and p ⊕ x) so the measured runs load no reference model."""
    from trainer.data import DataConfig, load_preference_data, tokenize_pairs
    from trainer.modeling import load_tokenizer
    from trainer.refcache import reference_logps
    import torch

    tok = load_tokenizer(args.model)
    amp = torch.bfloat16 if torch.cuda.is_available() else None
    for refine in (False, True):  # the dpo and the sr-dpo cache entries
        dcfg = DataConfig(max_length=args.seq + 256, max_prompt_length=args.seq, refine=refine)
        pairs, _ = tokenize_pairs(load_preference_data(args.data), tok, dcfg)
        assert all(len(p.prompt_ids) + len(p.chosen_ids) == args.seq for p in pairs), "pairs are not seq tokens"
        reference_logps(args.model, pairs, dcfg, cache_dir=args.cache, dtype=torch.float32, autocast_dtype=amp,
                        progress=False)
    return {}


def worker_trl(args) -> dict:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, TrainerCallback
    from trl import DPOConfig, DPOTrainer

    from trainer.data import load_preference_data
    from trainer.modeling import load_tokenizer

    tok = load_tokenizer(args.model)
    recs = [{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in load_preference_data(args.data)]
    cuda = torch.cuda.is_available()
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    times = []

    class Timer(TrainerCallback):
        def on_step_begin(self, *a, **k):
            if cuda:
                torch.cuda.synchronize()
            self.t = time.time()

        def on_step_end(self, *a, **k):
            if cuda:
                torch.cuda.synchronize()
            times.append(time.time() - self.t)

    cfg = DPOConfig(output_dir=args.out, beta=0.1, loss_type=["sigmoid"], per_device_train_batch_size=args.pairs,
                    max_steps=args.steps, learning_rate=5e-7, optim="rmsprop", lr_scheduler_type="constant",
                    warmup_steps=0, max_grad_norm=10.0, precompute_ref_log_probs=True, max_length=None,
                    bf16=cuda, use_cpu=not cuda, report_to=[], save_strategy="no", logging_steps=10_000,
                    dataloader_num_workers=0, seed=0, disable_tqdm=True, activation_checkpointing=False)
    # DPOConfig turns activation (gradient) checkpointing on by default; it must be off, as on our side.
    # It has to be passed to the constructor: setting the attribute afterwards does not reach the model.
    assert cfg.activation_checkpointing is False
    trainer = DPOTrainer(model=model, ref_model=None, args=cfg, train_dataset=Dataset.from_list(recs),
                         processing_class=tok, callbacks=[Timer()])
    row = trainer.train_dataset[0]
    assert len(row["prompt_ids"]) + len(row["chosen_ids"]) == args.seq, "TRL tokenized to a different length"
    with _peak_ctx() as mem:
        trainer.train()
    assert not getattr(trainer.model, "is_gradient_checkpointing", False), "TRL ran with checkpointing on"
    return {"step_s": statistics.median(times[1:]), "peak": mem.peak}


def run_worker(kind: str, common: list[str], extra: list[str]) -> dict:
    cmd = [sys.executable, __file__, "--worker", kind, *common, *extra]
    env = {**os.environ, "TQDM_DISABLE": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"worker {kind} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", choices=sorted(SIZES), default=None, help="default: cpu, or 0.5b on a GPU")
    ap.add_argument("--seq", type=int, default=512, help="tokens per sequence (prompt + completion)")
    ap.add_argument("--pairs", type=int, default=4, help="preference pairs per step")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--chunk", type=int, default=1024)
    ap.add_argument("--work", default=None)
    ap.add_argument("--json", default=None, help="also write the results here")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--objective", default="dpo", help=argparse.SUPPRESS)
    for k in ("model", "data", "out", "cache"):
        ap.add_argument(f"--{k}", help=argparse.SUPPRESS)
    args = ap.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    if args.worker:
        fn = {"ours": worker_ours, "trl": worker_trl, "cache": worker_cache}[args.worker]
        print(json.dumps(fn(args)))
        return

    import torch

    size = args.size or ("0.5b" if torch.cuda.is_available() else "cpu")
    work = Path(args.work or tempfile.mkdtemp(prefix="bench-trainer-"))
    model, data = build(work, size, args.seq, args.pairs)
    common = ["--model", str(model), "--data", str(data), "--cache", str(work / "cache"), "--seq", str(args.seq),
              "--pairs", str(args.pairs), "--steps", str(args.steps), "--chunk", str(args.chunk)]
    run_worker("cache", common, ["--out", str(work / "x")])
    res = {
        "TRL DPOTrainer (dpo)": run_worker("trl", common, ["--out", str(work / "trl")]),
        "ours dpo": run_worker("ours", common, ["--out", str(work / "dpo"), "--objective", "dpo"]),
        "ours sr-dpo": run_worker("ours", common, ["--out", str(work / "srdpo"), "--objective", "sr-dpo"]),
    }
    trl, dpo, sr = res["TRL DPOTrainer (dpo)"], res["ours dpo"], res["ours sr-dpo"]
    mem = "CUDA max allocated" if torch.cuda.is_available() else "peak RSS"
    dev = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"
    print(f"\n{size} Llama-style random model, {args.pairs} pairs x {args.seq} tokens, {args.steps} steps, {dev}"
          f"{', bf16 autocast' if torch.cuda.is_available() else ', fp32'}")
    print(f"| variant | step time (s) | {mem} (GiB) |")
    print("|---|---:|---:|")
    for name, r in res.items():
        print(f"| {name} | {r['step_s']:.3f} | {r['peak'] / 2**30:.2f} |")
    ratios = {
        "ours dpo / TRL step time (target <= 0.75)": dpo["step_s"] / trl["step_s"],
        "ours dpo / TRL peak memory (target <= 0.70)": dpo["peak"] / trl["peak"],
        "ours sr-dpo / ours dpo step time (target <= 1.40)": sr["step_s"] / dpo["step_s"],
    }
    print("\n| ratio | value |\n|---|---:|")
    for k, v in ratios.items():
        print(f"| {k} | {v:.2f} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"size": size, "device": dev, "results": res, "ratios": ratios},
                                              indent=2))


if __name__ == "__main__":
    main()
