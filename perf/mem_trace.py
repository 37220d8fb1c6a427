"""Where our trainer's CUDA memory peaks: allocated/peak memory after the forward, after the backward
and after the optimizer step, for a few steps of DPO (run perf/bench_trainer.py first for the model).

    python perf/mem_trace.py WORK_DIR   # WORK_DIR as given to bench_trainer.py --work
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import trainer.train as tm  # noqa: E402
from trainer.config import TrainConfig  # noqa: E402


GiB = 2**30


def show(tag: str) -> None:
    torch.cuda.synchronize()
    print(f"{tag:>22}: allocated {torch.cuda.memory_allocated() / GiB:6.2f} GiB, "
          f"peak {torch.cuda.max_memory_allocated() / GiB:6.2f} GiB", flush=True)


def main() -> None:
    work = Path(sys.argv[1])
    real_terms, real_step = tm.objective_terms, torch.optim.RMSprop.step

    def terms(*a, **k):
        show("after forward")
        return real_terms(*a, **k)

    def step(self, *a, **k):
        show("after backward")
        out = real_step(self, *a, **k)
        show("after optimizer step")
        return out

    tm.objective_terms = terms
    torch.optim.RMSprop.step = step
    tm.train(TrainConfig(objective="dpo", model=str(work / "model"), data=str(work / "pairs.jsonl"),
                         output=str(work / "memtrace"), batch_size=4, max_steps=3, warmup_steps=0,
                         ref_cache_dir=str(work / "cache"), progress=False, verify_logps=False,
                         max_length=768, max_prompt_length=512))


if __name__ == "__main__":
    main()
