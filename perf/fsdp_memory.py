"""Peak memory and step time of a few Sr-DPO steps on a random Llama-style model (~0.5B on a GPU, bf16):
one process without torch.distributed (plain), DDP and FSDP2 at world size 1. perf/gpu_checks.py runs it:

    python perf/fsdp_memory.py build WORK [SIZE]   # model, pairs, the reference cache (so no run loads it)
    python perf/fsdp_memory.py run WORK plain
    torchrun --standalone --nproc_per_node 1 perf/fsdp_memory.py run WORK ddp
    torchrun --standalone --nproc_per_node 1 perf/fsdp_memory.py run WORK fsdp
    python perf/fsdp_memory.py table WORK          # the comparison, how far the final weights differ (+ JSON)

SIZE: 0.5b (default on a GPU) or tiny (the CPU rehearsal). Each run is its own process, so its peak is its
own (the reference pass is a cache hit: no model but the policy is ever loaded). On a GPU the FSDP run
gathers parameters in bf16, and its reference cache entry is the one computed with bf16 parameters.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

PROMPT, COMPLETION, PAIRS, BATCH, MICRO, STEPS = 384, 128, 80, 16, 8, 5  # 2 micro-batches: accumulation runs
VARIANTS = ("plain", "ddp", "fsdp")
GiB = 2**30


def config(work: Path, name: str):
    from trainer.config import TrainConfig

    return TrainConfig(objective="sr-dpo", model=str(work / "model"), data=str(work / "pairs.jsonl"),
                       output=str(work / name), batch_size=BATCH, micro_batch_size=MICRO, max_steps=STEPS,
                       warmup_steps=0, learning_rate=1e-5, ref_cache_dir=str(work / "cache"), progress=False,
                       max_length=PROMPT + COMPLETION, max_prompt_length=PROMPT, fsdp=name == "fsdp",
                       mixed_precision="bf16")  # on a CPU too (the rehearsal): FSDP gathers in bf16 there as well


def build_all(work: Path, size: str) -> None:
    from bench_trainer import build  # the same random Llama-style models as the benchmark

    from trainer.train import reference_only

    build(work, size, PAIRS, lengths=(PROMPT, COMPLETION, COMPLETION))
    for name in ("plain", "fsdp"):  # FSDP's forward has bf16 parameters on a GPU: its own cache entry
        print("reference cache:", reference_only(config(work, name)))


def peak_memory() -> tuple[float, float]:
    """(allocated, reserved) GiB at the peak: CUDA's, or the process's peak RSS twice on a CPU."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / GiB, torch.cuda.max_memory_reserved() / GiB
    from bench_trainer import peak_memory as rss

    return rss() / GiB, rss() / GiB


def run(work: Path, name: str) -> None:
    from trainer.train import train

    if (name in ("ddp", "fsdp")) != ("WORLD_SIZE" in os.environ):
        raise SystemExit(f"{name}: run ddp and fsdp under torchrun, plain without it")
    t0 = time.time()
    train(config(work, name))
    if int(os.environ.get("RANK", 0)) == 0:
        log = [json.loads(l) for l in (work / name / "log.jsonl").read_text().splitlines()]
        info = json.loads((work / name / "run_info.json").read_text())
        alloc, reserved = peak_memory()
        res = {"variant": name, "processes": info["num_processes"], "mixed_precision": info["mixed_precision"],
               "precision": info["precision"], "attention": info["attention"], "peak_alloc_gib": alloc,
               "peak_reserved_gib": reserved, "step_s": statistics.median(r["step_time_s"] for r in log[1:]),
               "margin_step0": log[0]["margin"], "delta_step0": log[0]["delta/mean"],
               "loss_first": log[0]["loss"], "loss_last": log[-1]["loss"], "wall_s": time.time() - t0}
        (work / f"{name}.json").write_text(json.dumps(res))
        print(json.dumps(res))


def table(work: Path) -> None:
    from safetensors.torch import load_file

    def weights(path: Path) -> dict:
        return {k: v.float() for k, v in load_file(str(path / "model.safetensors")).items()}

    plain, start = weights(work / "plain" / "final"), weights(work / "model")
    moved = max((plain[k] - start[k]).abs().max().item() for k in plain)
    print(f"{'variant':8s} {'procs':>5s} {'amp':>4s} {'peak alloc GiB':>15s} {'peak reserved GiB':>18s} "
          f"{'step s':>7s} {'m(x) at step 0':>15s} {'loss first -> last':>20s} {'max |w - w_plain|':>18s}")
    out = {"weights_moved": moved, "variants": {}}
    for name in VARIANTS:
        f = work / f"{name}.json"
        if not f.is_file():
            print(f"{name:8s} (no result)")
            continue
        r = json.loads(f.read_text())
        w = weights(work / name / "final")
        r["max_diff_to_plain"] = max((w[k] - plain[k]).abs().max().item() for k in plain)
        out["variants"][name] = r
        print(f"{name:8s} {r['processes']:5d} {r['mixed_precision']:>4s} {r['peak_alloc_gib']:15.2f} "
              f"{r['peak_reserved_gib']:18.2f} {r['step_s']:7.3f} {r['margin_step0']:15.2e} {r['loss_first']:9.4f} -> "
              f"{r['loss_last']:7.4f} {r['max_diff_to_plain']:18.2e}")
    print(f"(training moved the plain run's weights by up to {moved:.2e}; bf16 runs differ from each other by "
          "rounding: FSDP gathers the weights in bf16 where plain/DDP cast them under autocast; m(x) at step 0 is "
          "0 when the reference pass computed what the run's forward computes)")
    (work / "summary.json").write_text(json.dumps(out, indent=1))


def main() -> None:
    cmd, work = sys.argv[1], Path(sys.argv[2])
    if cmd == "build":
        build_all(work, sys.argv[3] if len(sys.argv) > 3 else "0.5b")
    elif cmd == "run":
        run(work, sys.argv[3])
    elif cmd == "table":
        table(work)
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main()
