"""Two CPU processes (gloo, torchrun + Accelerator): gradients synchronise through CompletionLogps, so
both ranks end with identical weights, equal to a one-process run on the same global batches."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap

import pytest
import torch

WORKER = textwrap.dedent('''
    import sys, torch
    import trainer.train as tm
    from trainer.config import TrainConfig

    model, data, out, cache = sys.argv[1:5]
    real = tm.save_checkpoint

    def save(acc, policy, *a, **k):
        # every rank records the weights it holds when the final checkpoint is written
        sd = {k: v.detach().clone() for k, v in acc.unwrap_model(policy).model.state_dict().items()}
        torch.save(sd, f"{out}.rank{acc.process_index}.pt")
        return real(acc, policy, *a, **k)

    tm.save_checkpoint = save
    tm.train(TrainConfig(objective="sr-dpo", model=model, data=data, output=out, batch_size=4,
                         learning_rate=1e-3, warmup_steps=0, max_steps=3, ref_cache_dir=cache,
                         progress=False, device="cpu",
                         max_length=128, max_prompt_length=64))
''')


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_process_ddp_ranks_identical(tiny_model_dir, tmp_path):
    pytest.importorskip("accelerate")
    data = tmp_path / "toy.jsonl"
    with data.open("w") as f:
        for i in range(12):
            f.write(json.dumps({"prompt": f"Question {i}: sea {i * 7}?", "chosen": " yes good" + " ok" * (i % 3),
                                "rejected": " no bad"}) + "\n")
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    cache = tmp_path / "cache"
    # CPU DDP even on a GPU machine (else the launcher hands rank 1 a CUDA device that may not exist)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "CUDA_VISIBLE_DEVICES": ""}
    # torchrun sets the process-group environment that Accelerator picks up (gloo on CPU); `accelerate
    # launch --cpu` would go through mpirun, which this machine does not have.
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
           str(_free_port()), str(script), str(tiny_model_dir), str(data), str(tmp_path / "ddp"), str(cache)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-4000:]
    r0 = torch.load(tmp_path / "ddp.rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "ddp.rank1.pt", weights_only=True)
    import trainer.train as tm
    from safetensors.torch import load_file
    from trainer.config import TrainConfig

    one = load_file(str(tm.train(TrainConfig(
        objective="sr-dpo", model=str(tiny_model_dir), data=str(data), output=str(tmp_path / "one"), batch_size=4,
        learning_rate=1e-3, warmup_steps=0, max_steps=3, ref_cache_dir=str(cache), progress=False, device="cpu",
        max_length=128, max_prompt_length=64)) / "model.safetensors"))
    for k in r0:
        assert torch.equal(r0[k], r1[k]), f"ranks differ in {k}"
    for k in one:  # the same global batches in one process: the same update, up to summation order
        torch.testing.assert_close(r0[k], one[k], atol=1e-5, rtol=1e-4, msg=k)
    start = load_file(str(tiny_model_dir / "model.safetensors"))
    assert sum(not torch.allclose(start[k], one[k]) for k in start) > 0
    log = [json.loads(l) for l in (tmp_path / "ddp" / "log.jsonl").read_text().splitlines()]
    info = json.loads((tmp_path / "ddp" / "run_info.json").read_text())
    assert info["num_processes"] == 2 and [r["pairs_seen"] for r in log] == [4, 8, 12]
