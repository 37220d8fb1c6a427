"""Benchmark: our trainer, padded and packed, against TRL's DPOTrainer, on realistic lengths.

Data: pairs whose prompt and completion lengths are drawn from a fixed, seeded long-tailed distribution
(log-normal; prompts 16–400 tokens, completions 8–400 with EOS, roughly HH-RLHF / UltraFeedback), as
plain text of exactly that many tokens, so that both sides tokenize it to the same ids (checked, pair
by pair) and nothing is truncated. The tokenizer is written here (a word-level vocabulary of SmolLM2's
size, 49,152: every word one token), so the benchmark needs no download and no package beyond
transformers and tokenizers; TRL's side runs where trl is installed. The same random Llama-style model, data,
global batch and step order on every side (TRL reads the pairs in our order, one micro-batch per
step); reference log-probs precomputed on both (our cache, warmed in its own process first; TRL's
precompute_ref_log_probs); activation checkpointing off on both.

Each variant runs in a fresh subprocess, ``--runs`` times, alternating with the others. Step time: the
median over the steps after the first of every run; tokens/s: pair tokens (x + y⁺ + y⁻, the prompt once)
per second over those steps. Peak memory: the process's peak RSS from the kernel (VmHWM, whole process:
weights, gradients and optimizer state included) on CPU, CUDA max allocated during training on a GPU.
On a GPU also model FLOPs utilisation: forward + backward over x, y⁺, y⁻ once each (6·N per token, N the
non-embedding parameters, plus attention over each token's context and the LM head at the completion
tokens), the no-grad p ⊕ x forward for Sr-DPO (a third of that), over the GPU's dense bf16 peak.

    python perf/bench_trainer.py                   # CPU: hidden 384 x 6 layers, vocab 49k, 8 pairs/step, fp32
    python perf/bench_trainer.py --size cpu-deep --variants dpo-padded,dpo-packed   # 24 layers: body-bound
    python perf/bench_trainer.py --size 0.5b       # GPU: ~0.5B, bf16 autocast, 32 pairs/step (default on CUDA)
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SIZES = {  # randomly initialised Llama-style models; the vocabulary of all but "tiny" is SmolLM2's size
    "tiny": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=256, vocab=4096),
    "small": dict(hidden_size=512, num_hidden_layers=8, num_attention_heads=8, intermediate_size=1536, vocab=49152),
    "cpu": dict(hidden_size=384, num_hidden_layers=6, num_attention_heads=6, intermediate_size=1024, vocab=49152),
    "cpu-deep": dict(hidden_size=384, num_hidden_layers=24, num_attention_heads=6, intermediate_size=1024,
                     vocab=49152),
    "0.5b": dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096,
                 vocab=49152),
}
VARIANTS = {  # name: (side, objective, packing)
    "trl": ("trl", "dpo", None),  # TRL's DPOTrainer
    "dpo-padded": ("ours", "dpo", False),
    "dpo-packed": ("ours", "dpo", True),
    "sr-dpo-padded": ("ours", "sr-dpo", False),
    "sr-dpo-packed": ("ours", "sr-dpo", True),
}
DEFAULT_VARIANTS = "trl,dpo-padded,dpo-packed,sr-dpo-packed"
PEAK_BF16_TFLOPS = {"H100": 989, "H200": 989, "H800": 989, "GH200": 989, "B200": 2250, "A100": 312, "A800": 312,
                    "L40S": 362, "L4": 121, "A10G": 70}
MAX_LENGTH, MAX_PROMPT = 1024, 512  # above every drawn length: nothing is truncated on either side


def draw_lengths(n: int, seed: int = 0) -> list[tuple[int, int, int]]:
    """(prompt, chosen, rejected) token counts: log-normal, clipped to 16–400 and 8–400."""
    rng = random.Random(seed)
    clip = lambda v, lo, hi: int(min(hi, max(lo, round(v))))
    return [(clip(rng.lognormvariate(math.log(90), 0.9), 16, 400), clip(rng.lognormvariate(math.log(110), 0.9), 8, 400),
             clip(rng.lognormvariate(math.log(110), 0.9), 8, 400)) for _ in range(n)]


WORDS = ("the of and to in is was for on are with as his they be at one have this from or had by word but what "
         "some we can out other were all there when up use your how said an each she which do their time if will "
         "way about many then them write would like so these her long make thing see him two has look more day "
         "could go come did number sound no most people my over know water than call first who may down side "
         "been now find").split()


def word_tokenizer(vocab_size: int):
    """A word-level tokenizer of ``vocab_size`` tokens (WORDS, then fillers): text of k words is k tokens."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<pad>"]
    words = list(WORDS) + [f"w{i}" for i in range(vocab_size - len(specials) - len(WORDS))]
    tok = Tokenizer(models.WordLevel({t: i for i, t in enumerate(specials + words)}, unk_token="<|endoftext|>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|im_end|>",
                                   pad_token="<pad>", unk_token="<|endoftext|>")


def build(work: Path, size: str, n_pairs: int, *, lengths: tuple[int, int, int] | None = None) -> tuple[Path, Path]:
    """A random Llama-style model of ``size`` with a word-level tokenizer, and ``n_pairs`` pairs of drawn
    lengths (or all of ``lengths``: prompt, chosen, rejected tokens)."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    spec = dict(SIZES[size])
    tok = word_tokenizer(spec.pop("vocab"))
    cfg = LlamaConfig(vocab_size=len(tok), num_key_value_heads=spec["num_attention_heads"],
                      max_position_embeddings=2 * MAX_LENGTH, tie_word_embeddings=False, bos_token_id=tok.bos_token_id,
                      eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, **spec)
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(cfg).save_pretrained(work / "model", safe_serialization=True)
    tok.save_pretrained(work / "model")
    rng = random.Random(1)
    text = lambda k: "".join(" " + rng.choice(WORDS) for _ in range(k))  # noqa: E731
    data = work / "pairs.jsonl"
    drawn = [lengths] * n_pairs if lengths else draw_lengths(n_pairs)
    with data.open("w") as f:
        for i, (p, c, r) in enumerate(drawn):  # completions: k − 1 words + EOS
            f.write(json.dumps({"id": i, "prompt": text(p), "chosen": text(c - 1), "rejected": text(r - 1)}) + "\n")
    return work / "model", data


def peak_memory() -> int:
    """Bytes: CUDA max allocated, else the process's peak RSS as the kernel counts it."""
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated()
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kB on Linux


def our_config(args, objective: str, packing: bool, out: str):
    from trainer.config import TrainConfig

    return TrainConfig(objective=objective, model=args.model, data=args.data, output=out, batch_size=args.pairs,
                       micro_batch_size=args.pairs, max_steps=args.steps, warmup_steps=0, learning_rate=5e-7,
                       optimizer="rmsprop", ref_cache_dir=args.cache, progress=False, gradient_checkpointing=False,
                       group_by_length=False, packing=packing, max_length=MAX_LENGTH, max_prompt_length=MAX_PROMPT)


def step_pairs(args) -> tuple[list, list[list[int]]]:
    """Our tokenized pairs and the pair indices of each step (what both sides train on)."""
    from trainer.train import epoch_batches, load_pairs

    cfg = our_config(args, "dpo", True, args.out)
    pairs, report = load_pairs(cfg)
    assert report.prompt_truncated == report.completion_truncated == len(report.dropped) == 0, report.summary()
    return pairs, epoch_batches(pairs, cfg, 0, 1)[:args.steps]


def worker_cache(args) -> dict:
    """Warm our reference cache (x and p ⊕ x) so that the measured runs load no reference model."""
    from trainer.train import reference_pass

    reference_pass(our_config(args, "sr-dpo", True, args.out), refine=True, progress=False)
    return {}


def worker_ours(args) -> dict:
    import torch

    from trainer.train import train

    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    train(our_config(args, args.objective, args.packing == "true", args.out))
    peak = peak_memory()
    log = [json.loads(l) for l in (Path(args.out) / "log.jsonl").read_text().splitlines()]
    info = json.loads((Path(args.out) / "run_info.json").read_text())
    assert info["packing"] == (args.packing == "true"), f"asked packing={args.packing}, ran {info['packing']}"
    pairs, steps = step_pairs(args)
    return {"times": [r["step_time_s"] for r in log], "peak": peak, "attention": info["attention"],
            "fallbacks": info["packing_fallbacks"],
            "scored": sum(len(pairs[i].chosen_ids) + len(pairs[i].rejected_ids) for s in steps for i in s)}


def worker_trl(args) -> dict:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, TrainerCallback
    from trl import DPOConfig, DPOTrainer

    from trainer.data import load_preference_data
    from trainer.modeling import load_tokenizer

    tok = load_tokenizer(args.model)
    pairs, steps = step_pairs(args)
    order = [i for s in steps for i in s]
    recs = load_preference_data(args.data)
    recs = [{k: recs[i][k] for k in ("prompt", "chosen", "rejected")} for i in order]
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

    class InOrder(DPOTrainer):  # our step batches, in our order (the same pairs in every step)
        def _get_train_sampler(self, train_dataset=None):
            return torch.utils.data.SequentialSampler(train_dataset if train_dataset is not None else self.train_dataset)

    # DPOConfig turns activation (gradient) checkpointing on by default; off here, as on our side (it must
    # be given to the constructor: setting the attribute afterwards does not reach the model).
    cfg = DPOConfig(output_dir=args.out, beta=0.1, loss_type=["sigmoid"], per_device_train_batch_size=args.pairs,
                    max_steps=args.steps, learning_rate=5e-7, optim="rmsprop", lr_scheduler_type="constant",
                    warmup_steps=0, max_grad_norm=10.0, precompute_ref_log_probs=True, max_length=None,
                    bf16=cuda, use_cpu=not cuda, report_to=[], save_strategy="no", logging_steps=10_000,
                    dataloader_num_workers=0, seed=0, disable_tqdm=True, activation_checkpointing=False,
                    gradient_checkpointing=False)
    trainer = InOrder(model=model, ref_model=None, args=cfg, train_dataset=Dataset.from_list(recs),
                      processing_class=tok, callbacks=[Timer()])
    for k, i in enumerate(order):  # the same token ids as ours, pair by pair
        row, p = trainer.train_dataset[k], pairs[i]
        assert (row["prompt_ids"], row["chosen_ids"], row["rejected_ids"]) == (p.prompt_ids, p.chosen_ids,
                                                                               p.rejected_ids), f"pair {i} differs"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    trainer.train()
    peak = peak_memory()
    assert not getattr(trainer.model, "is_gradient_checkpointing", False), "TRL ran with checkpointing on"
    assert len(times) == args.steps
    return {"times": times, "peak": peak,
            "scored": sum(len(trainer.train_dataset[k]["chosen_ids"]) + len(trainer.train_dataset[k]["rejected_ids"])
                          for k in range(len(order)))}


def run_worker(kind: str, common: list[str], extra: list[str]) -> dict:
    cmd = [sys.executable, __file__, "--worker", kind, *common, *extra]
    env = {**os.environ, "TQDM_DISABLE": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"worker {kind} {' '.join(extra)} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def model_flops(pairs, steps, size: str, vocab: int, sr: bool) -> float:
    """Useful FLOPs of the measured steps (see the module docstring)."""
    s = SIZES[size]
    d, L, f = s["hidden_size"], s["num_hidden_layers"], s["intermediate_size"]
    n_body = L * (4 * d * d + 3 * d * f)
    total = 0.0
    for i in (i for st in steps[1:] for i in st):
        p = pairs[i]
        for x, passes in [(p.prompt_ids, 3)] + ([(p.refine_prompt_ids, 1)] if sr else []):  # p ⊕ x: forward only
            c, a, b = len(x), len(p.chosen_ids), len(p.rejected_ids)
            ctx = c * (c + 1) / 2 + sum(c + j + 1 for j in range(a)) + sum(c + j + 1 for j in range(b))
            total += passes * (2 * n_body * (c + a + b) + 4 * L * d * ctx + 2 * d * vocab * (a + b))
    return total


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ImportError:  # an import blocked on purpose (tests/bare) or a broken parent package
        return False


def gpu_peak_tflops(name: str, given: float | None) -> float | None:
    if given:
        return given
    return next((v for k, v in sorted(PEAK_BF16_TFLOPS.items(), key=lambda kv: -len(kv[0])) if k in name), None)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", choices=sorted(SIZES), default=None, help="default: cpu, or 0.5b on a GPU")
    ap.add_argument("--pairs", type=int, default=None, help="pairs per step (default: 8 on CPU, 32 on a GPU)")
    ap.add_argument("--steps", type=int, default=None, help="steps per run, the first not counted (default 6, GPU 8)")
    ap.add_argument("--runs", type=int, default=2, help="runs of each variant, alternating")
    ap.add_argument("--variants", default=DEFAULT_VARIANTS, help="comma-separated, of: " + ", ".join(VARIANTS))
    ap.add_argument("--peak-tflops", type=float, default=None, help="the GPU's dense bf16 peak (for MFU)")
    ap.add_argument("--work", default=None)
    ap.add_argument("--json", default=None, help="also write the results here")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    for k in ("model", "data", "out", "cache", "objective", "packing"):
        ap.add_argument(f"--{k}", help=argparse.SUPPRESS)
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    import torch

    cuda = torch.cuda.is_available()
    args.pairs = args.pairs or (32 if cuda else 8)
    args.steps = args.steps or (8 if cuda else 6)
    if args.worker:
        print(json.dumps({"ours": worker_ours, "trl": worker_trl, "cache": worker_cache}[args.worker](args)))
        return
    size = args.size or ("0.5b" if cuda else "cpu")
    names = [v.strip() for v in args.variants.split(",")]
    assert all(v in VARIANTS for v in names), f"unknown variant in {names}"
    if "trl" in names and not _installed("trl"):
        print("skipped: TRL's DPOTrainer (trl is not installed here); ours only", file=sys.stderr)
        names.remove("trl")
    assert args.runs >= 1 and args.steps >= 2
    work = Path(args.work or tempfile.mkdtemp(prefix="bench-trainer-"))
    args.model, args.data = map(str, build(work, size, args.pairs * args.steps))
    args.cache, args.out = str(work / "cache"), str(work / "scratch")
    common = ["--model", args.model, "--data", args.data, "--cache", args.cache, "--pairs", str(args.pairs),
              "--steps", str(args.steps)]
    run_worker("cache", common, ["--out", args.out])
    runs: dict[str, list[dict]] = {v: [] for v in names}
    for r in range(args.runs):  # alternate the variants, so that a slow spell of the machine hits all of them
        for v in names:
            side, objective, packing = VARIANTS[v]
            extra = ["--out", str(work / f"{side}-{objective}-{packing}-{r}"), "--objective", objective,
                     "--packing", str(packing).lower()]
            runs[v].append(run_worker(side, common, extra))
            print(f"run {r + 1}/{args.runs} {v}: steps {', '.join(f'{t:.2f}' for t in runs[v][-1]['times'])} s",
                  file=sys.stderr)
    report(args, size, work, names, runs)


def report(args, size: str, work: Path, names: list[str], runs: dict[str, list[dict]]) -> None:
    import torch

    from contracts.objectives import needs_refine
    from trainer.modeling import load_tokenizer
    from trainer.packing import pack
    from trainer.train import epoch_batches, load_pairs

    cuda = torch.cuda.is_available()
    cfg = our_config(args, "sr-dpo", True, args.out)
    pairs, _ = load_pairs(cfg)
    steps = epoch_batches(pairs, cfg, 0, 1)[:args.steps]
    measured = [i for s in steps[1:] for i in s]
    pair_tokens = sum(len(pairs[i].prompt_ids) + len(pairs[i].chosen_ids) + len(pairs[i].rejected_ids) for i in measured)
    padded = sum(2 * len(s) * max(len(pairs[i].prompt_ids) + max(len(pairs[i].chosen_ids), len(pairs[i].rejected_ids))
                                  for i in s) for s in steps[1:])
    # packed: on a CPU one unpadded row (per-pair attention); on a GPU rows of 128-token blocks (FlexAttention)
    packed = (sum(pack([pairs[i] for i in s], multiple=128)["input_ids"].numel() for s in steps[1:]) if cuda
              else pair_tokens)
    scored = {v: {r["scored"] for r in runs[v]} for v in names}
    assert len(set().union(*scored.values())) == 1, f"the sides scored different numbers of tokens: {scored}"
    dev = torch.cuda.get_device_name() if cuda else f"CPU ({os.cpu_count()} cores)"
    peak_tf = gpu_peak_tflops(dev, args.peak_tflops) if cuda else None
    vocab = len(load_tokenizer(args.model))
    res = {}
    for v in names:
        times = [t for r in runs[v] for t in r["times"][1:]]
        per_run = [sum(r["times"][1:]) for r in runs[v]]
        res[v] = {"step_s": statistics.median(times), "tokens_per_s": pair_tokens / statistics.median(per_run),
                  "peak_gib": max(r["peak"] for r in runs[v]) / 2**30, "runs": [r["times"] for r in runs[v]],
                  "attention": runs[v][0].get("attention", "trl"), "fallbacks": runs[v][0].get("fallbacks", {})}
        if peak_tf:
            flops = model_flops(pairs, steps, size, vocab, needs_refine(VARIANTS[v][1]))
            res[v]["mfu"] = flops / statistics.median(per_run) / (peak_tf * 1e12)
    mem = "CUDA max allocated" if cuda else "peak RSS"
    lens = [(len(p.prompt_ids), len(p.chosen_ids), len(p.rejected_ids)) for p in pairs]
    print(f"\n{size} Llama-style random model (hidden {SIZES[size]['hidden_size']} x {SIZES[size]['num_hidden_layers']} "
          f"layers, vocab {vocab}), {dev}, {'bf16 autocast' if cuda else 'fp32'}; {args.pairs} pairs/step, "
          f"{args.steps} steps x {args.runs} runs per variant (medians over steps 2-{args.steps})")
    print(f"lengths: prompts {min(l[0] for l in lens)}-{max(l[0] for l in lens)} (median "
          f"{statistics.median(l[0] for l in lens):.0f}), completions {min(min(l[1:]) for l in lens)}-"
          f"{max(max(l[1:]) for l in lens)} (median {statistics.median([x for l in lens for x in l[1:]]):.0f}); "
          f"per measured step {pair_tokens / (args.steps - 1):.0f} pair tokens, positions computed: padded "
          f"{padded / (args.steps - 1):.0f}, packed {packed / (args.steps - 1):.0f}; both sides scored the same {next(iter(scored[names[0]]))} completion tokens")
    print(f"\n| variant | attention | step time (s) | pair tokens/s | {mem} (GiB) |" + (" MFU |" if peak_tf else ""))
    print("|---|---|---:|---:|---:|" + ("---:|" if peak_tf else ""))
    for v in names:
        r = res[v]
        fell = f" (fall-backs: {sum(r['fallbacks'].values())})" if r["fallbacks"] else ""
        print(f"| {v} | {r['attention']}{fell} | {r['step_s']:.3f} | {r['tokens_per_s']:.0f} | {r['peak_gib']:.2f} |"
              + (f" {r['mfu']:.1%} |" if peak_tf else ""))
    ratios = {}
    targets = {  # (numerator, denominator, what, target)
        "dpo-packed / dpo-padded, step time": ("dpo-packed", "dpo-padded", "step_s", 0.5),
        "dpo-packed / trl, step time": ("dpo-packed", "trl", "step_s", 0.6 if cuda else 0.10),
        "dpo-packed / trl, peak memory": ("dpo-packed", "trl", "peak_gib", 0.8 if cuda else 0.5),
        "sr-dpo-packed / dpo-packed, step time": ("sr-dpo-packed", "dpo-packed", "step_s", 1.40),
        "sr-dpo-padded / dpo-padded, step time": ("sr-dpo-padded", "dpo-padded", "step_s", None),
        "dpo-padded / trl, step time": ("dpo-padded", "trl", "step_s", None),
        "dpo-padded / trl, peak memory": ("dpo-padded", "trl", "peak_gib", None),
    }
    print("\n| ratio | value | target |\n|---|---:|---:|")
    for k, (a, b, what, target) in targets.items():
        if a in res and b in res:
            ratios[k] = res[a][what] / res[b][what]
            print(f"| {k} | {ratios[k]:.2f} | {'≤ %.2f' % target if target else ''} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"size": size, "device": dev, "pairs": args.pairs, "steps": args.steps,
                                               "results": res, "ratios": ratios}, indent=2))


if __name__ == "__main__":
    main()
