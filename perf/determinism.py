"""Bitwise determinism of training with ``--deterministic``, and what it costs.

    python perf/determinism.py WORK [--size small] [--json FILE]

On a random Llama-style model (perf/bench_trainer.py's sizes; ``small`` on a GPU, ``tiny`` on a CPU),
Sr-DPO with packing (FlexAttention on a GPU) for 4 steps of 8 pairs, a checkpoint after step 2:

  1. with deterministic algorithms, straight through;
  2. the same, stopped right after checkpoint-2 (as if killed) and resumed with ``--resume``;
  3. without deterministic algorithms, straight through.

Run 2's final weights must equal run 1's bit for bit. The cost is the median step time of run 1 over
run 3's (steps after the first). Whether run 3 also equals run 1 is printed, not required.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

STEPS, BATCH, MICRO = 4, 8, 4


class _Stop(Exception):
    pass


def config(work: Path, name: str, **kw):
    from trainer.config import TrainConfig

    return TrainConfig(**{**dict(objective="sr-dpo", model=str(work / "model"), data=str(work / "pairs.jsonl"),
                                 output=str(work / name), batch_size=BATCH, micro_batch_size=MICRO, max_steps=STEPS,
                                 save_every=2, warmup_steps=0, learning_rate=1e-4, ref_cache_dir=str(work / "cache"),
                                 progress=False, max_length=1024, max_prompt_length=512, deterministic=True), **kw})


def train_stopped_after(cfg, checkpoint: str):
    """Train until ``checkpoint`` is written, then stop as a kill would (no final/)."""
    import trainer.train as tm

    real = tm.save_checkpoint

    def save_then_stop(policy, opt, sched, tok, path, info, state, **kw):
        real(policy, opt, sched, tok, path, info, state, **kw)
        if path.name == checkpoint:
            raise _Stop(checkpoint)

    tm.save_checkpoint = save_then_stop
    try:
        tm.train(cfg)
    except _Stop:
        pass
    finally:
        tm.save_checkpoint = real


def main() -> None:
    import torch
    from safetensors.torch import load_file

    import trainer.train as tm
    from bench_trainer import build

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("work")
    ap.add_argument("--size", default=None, help="a perf/bench_trainer.py size (default: small on a GPU, tiny)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    size = args.size or ("small" if torch.cuda.is_available() else "tiny")
    build(work, size, STEPS * BATCH)
    weights = lambda name: load_file(str(work / name / "final" / "model.safetensors"))  # noqa: E731
    steps = lambda name: [json.loads(l)["step_time_s"] for l in (work / name / "log.jsonl").read_text().splitlines()]  # noqa: E731

    tm.train(config(work, "straight"))
    train_stopped_after(config(work, "resumed"), "checkpoint-2")
    assert not (work / "resumed" / "final").exists()
    tm.train(config(work, "resumed", resume=True))
    tm.train(config(work, "default", deterministic=False))
    a, b, c = weights("straight"), weights("resumed"), weights("default")
    diff = max((a[k].float() - b[k].float()).abs().max().item() for k in a)
    info = json.loads((work / "straight" / "run_info.json").read_text())
    t_det, t_def = statistics.median(steps("straight")[1:]), statistics.median(steps("default")[1:])
    res = {"size": size, "device": info["device"], "precision": info["precision"], "attention": info["attention"],
           "fallbacks": info["packing_fallbacks"], "bitwise_resume": all(torch.equal(a[k], b[k]) for k in a),
           "max_diff_resume": diff, "default_equals_deterministic": all(torch.equal(a[k], c[k]) for k in a),
           "step_s_deterministic": t_det, "step_s_default": t_def, "cost": t_det / t_def}
    print(json.dumps(res, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))
    if not res["bitwise_resume"]:
        raise SystemExit(f"a resumed deterministic run differs from the straight one by up to {diff:.3g}")


if __name__ == "__main__":
    main()
