"""The trainer on torch.distributed, as CI can run it: 2 CPU processes (gloo) started by torchrun.

FSDP2 and DDP each end with the same weights as one process on the same global batches; an FSDP run
killed after a checkpoint and resumed ends exactly where the uninterrupted one does; checkpoints are
plain Hugging Face checkpoints (whole tensors, no shards); the reference pass is shared out and gathered.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import trainer.train as tm
from trainer.config import TrainConfig

ROOT = Path(__file__).resolve().parents[2]
SETTINGS = dict(objective="sr-dpo", batch_size=4, learning_rate=1e-3, warmup_steps=0, max_steps=4, save_every=2,
                device="cpu", max_length=128, max_prompt_length=64, progress=False)

# The CLI under torchrun, with test hooks: every rank records the weights it holds when final/ is written
# (DDP: all equal), or every rank dies as if killed once a checkpoint is complete.
WORKER = textwrap.dedent('''
    import os, sys, torch
    import trainer.train as tm
    from srdpo_eval.cli import main

    real = tm.save_checkpoint

    def save(policy, *a, **k):
        path = a[3]
        if path.name == "final" and os.environ.get("RANK_WEIGHTS"):
            sd = {k: v.detach().clone() for k, v in policy.model.state_dict().items()}
            torch.save(sd, f"{os.environ['RANK_WEIGHTS']}.rank{os.environ['RANK']}.pt")
        real(policy, *a, **k)
        if path.name == os.environ.get("DIE_AFTER"):
            os._exit(3)

    tm.save_checkpoint = save
    sys.exit(main(sys.argv[1:]))
''')


def flags(model, data, out, cache) -> list[str]:
    """`srdpo-eval train` flags of SETTINGS."""
    return ["train", "--objective", "sr-dpo", "--model", str(model), "--data", str(data), "--output", str(out),
            "--ref-cache-dir", str(cache), "--batch-size", "4", "--lr", "1e-3", "--warmup-steps", "0",
            "--max-steps", "4", "--save-every", "2", "--device", "cpu", "--max-length", "128",
            "--max-prompt-length", "64", "--no-progress"]


def torchrun(*args: str, env_extra: dict | None = None, timeout: float = 400) -> subprocess.CompletedProcess:
    # CPU processes even on a GPU machine; the children import this checkout
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "CUDA_VISIBLE_DEVICES": "",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]), **(env_extra or {})}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def setup(tiny_model_dir, tmp_path_factory):
    d = tmp_path_factory.mktemp("dist")
    data = d / "toy.jsonl"
    with data.open("w") as f:
        for i in range(12):
            f.write(json.dumps({"prompt": f"Question {i}: sea {i * 7}?", "chosen": " yes good" + " ok" * (i % 3),
                                "rejected": " no bad"}) + "\n")
    (d / "worker.py").write_text(WORKER)
    return d, tiny_model_dir, data


@pytest.fixture(scope="module")
def fsdp_run(setup):
    """2-process FSDP through the documented command, `torchrun ... -m srdpo_eval train ... --fsdp`, on an
    empty reference cache (so the reference pass is shared out too); its checkpoints keep their sharded
    trainer state (--keep-trainer-state), which the tests read."""
    d, model, data = setup
    proc = torchrun("-m", "srdpo_eval", *flags(model, data, d / "fsdp", d / "cache"), "--fsdp",
                    "--keep-trainer-state", "true")
    assert proc.returncode == 0, proc.stderr[-4000:]
    return d / "fsdp", proc


@pytest.fixture(scope="module")
def one_process(setup, fsdp_run):
    """The same run in one process, no process group (reads the reference cache the FSDP run wrote)."""
    d, model, data = setup
    return tm.train(TrainConfig(model=str(model), data=str(data), output=str(d / "one"),
                                ref_cache_dir=str(d / "cache"), **SETTINGS))


def weights(ckpt: Path) -> dict[str, torch.Tensor]:
    return load_file(str(ckpt / "model.safetensors"))


def assert_close_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:  # the same global batches: the same updates, up to summation order
        torch.testing.assert_close(a[k], b[k], atol=1e-5, rtol=1e-4, msg=k)


@pytest.mark.slow
def test_fsdp_two_processes_match_one_process(setup, fsdp_run, one_process):
    d, model, data = setup
    out, proc = fsdp_run
    assert_close_weights(weights(out / "final"), weights(one_process))
    start = weights(model)
    assert sum(not torch.allclose(start[k], weights(one_process)[k]) for k in start) > 0  # it trained
    # the log-prob self-check ran under FSDP, on both ranks
    assert proc.stderr.count("chunked log-probs verified against full logits") == 2
    log = [json.loads(l) for l in (out / "log.jsonl").read_text().splitlines()]
    info = json.loads((out / "run_info.json").read_text())
    assert info["num_processes"] == 2 and [r["pairs_seen"] for r in log] == [4, 8, 12, 16]
    # the reference pass, shared out over the ranks and gathered, equals one process's
    from trainer.refcache import load_pair_logps

    cached = load_pair_logps(Path(info["ref_cache"]))
    alone, _ = tm.reference_pass(TrainConfig(model=str(model), data=str(data), output=str(d / "x"),
                                             **SETTINGS), refine=True, progress=False)
    for k in ("chosen", "rejected", "refine_chosen", "refine_rejected"):
        torch.testing.assert_close(getattr(cached, k), getattr(alone, k), atol=1e-5, rtol=1e-6)
    assert torch.equal(cached.n_chosen, alone.n_chosen)


@pytest.mark.slow
def test_fsdp_checkpoints_are_whole_hugging_face_checkpoints(setup, fsdp_run):
    from transformers import AutoModelForCausalLM

    d, model, _ = setup
    out, _ = fsdp_run
    start = weights(model)
    for ckpt in (out / "checkpoint-2", out / "final"):
        w = weights(ckpt)
        assert w.keys() == start.keys() and all(w[k].shape == start[k].shape for k in w)
        loaded, info = AutoModelForCausalLM.from_pretrained(ckpt, output_loading_info=True)
        assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
        assert all(type(p.data) is torch.Tensor for p in loaded.parameters())
    state = out / "checkpoint-2" / "trainer_state"
    assert json.loads((state / "state.json").read_text())["world_size"] == 2
    # the optimizer state is sharded: one file per rank, each with half of every parameter's state
    from safetensors import safe_open

    files = sorted((state / "optimizer").glob("*.safetensors"))
    key = "model.model.embed_tokens.weight.square_avg"
    rows = []
    for f in files:
        with safe_open(str(f), "pt") as g:
            rows.append(g.get_slice(key).get_shape()[0])
    assert len(files) == 2 and rows == [start["model.embed_tokens.weight"].shape[0] // 2] * 2
    assert sorted(p.name for p in state.glob("rng-*")) == ["rng-0.safetensors", "rng-1.safetensors"]
    assert not list(out.rglob("*.pt")) and not list(out.rglob("*.tmp"))


@pytest.mark.slow
def test_fsdp_killed_after_checkpoint_and_resumed_matches_uninterrupted(setup, fsdp_run):
    d, model, data = setup
    out = d / "killed"
    args = [*flags(model, data, out, d / "cache"), "--fsdp"]
    proc = torchrun(str(d / "worker.py"), *args, env_extra={"DIE_AFTER": "checkpoint-2"})
    assert proc.returncode != 0
    assert (out / "checkpoint-2" / "trainer_state" / "state.json").is_file() and not (out / "final").exists()
    proc = torchrun("-m", "srdpo_eval", *args, "--resume")
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "resuming from" in proc.stderr
    full, resumed = weights(fsdp_run[0] / "final"), weights(out / "final")
    assert full.keys() == resumed.keys()
    for k in full:
        assert torch.equal(full[k], resumed[k]), k
    lf, lr = ([json.loads(l)["loss"] for l in (o / "log.jsonl").read_text().splitlines()] for o in (fsdp_run[0], out))
    assert lf == lr and len(lr) == 4


@pytest.mark.slow
def test_ddp_two_processes_ranks_identical_and_match_one_process(setup, one_process):
    d, model, data = setup
    prefix = d / "ddp"
    proc = torchrun(str(d / "worker.py"), *flags(model, data, d / "ddp", d / "cache"),
                    env_extra={"RANK_WEIGHTS": str(prefix)})
    assert proc.returncode == 0, proc.stderr[-4000:]
    r0, r1 = (torch.load(f"{prefix}.rank{r}.pt", weights_only=True) for r in (0, 1))
    for k in r0:
        assert torch.equal(r0[k], r1[k]), f"ranks differ in {k}"
    assert_close_weights(r0, weights(one_process))
    assert_close_weights(weights(d / "ddp" / "final"), weights(one_process))


def test_fsdp_in_one_process_equals_plain(tiny_model_dir, tmp_path):
    """``fsdp`` without torchrun: FSDP over a one-process group, the same code and the same numbers."""
    import torch.distributed as dist

    data = tmp_path / "toy.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"Q{i}: sky?", "chosen": " yes" * (1 + i % 3),
                                        "rejected": " no"}) + "\n" for i in range(8)))
    kw = dict(SETTINGS, model=str(tiny_model_dir), data=str(data), ref_cache_dir=str(tmp_path / "cache"),
              max_steps=2, save_every=0)
    plain = tm.train(TrainConfig(output=str(tmp_path / "plain"), **kw))
    sharded = tm.train(TrainConfig(output=str(tmp_path / "fsdp"), fsdp=True, **kw))
    assert not dist.is_initialized()  # the group made for the run is gone
    # activation checkpointing recomputes each layer's forward inside FSDP's hooks
    recomputed = tm.train(TrainConfig(output=str(tmp_path / "fsdp-ac"), fsdp=True, gradient_checkpointing=True, **kw))
    a = weights(plain)
    for b in (weights(sharded), weights(recomputed)):
        assert a.keys() == b.keys()
        for k in a:
            torch.testing.assert_close(a[k], b[k], atol=1e-6, rtol=1e-5, msg=k)


def test_fsdp_bf16_step_zero_is_the_reference(tiny_model_dir, tmp_path):
    """FSDP2 gathers the parameters in bf16 (MixedPrecisionPolicy) for the forward; the reference pass casts
    its parameters the same way, so at step 0 the policy is the reference: m(x) = 0 and Δπ = 0 exactly, and
    Sr-DPO's first step is DPO's (before, m(x) was ~1e-3 nats here)."""
    data = tmp_path / "toy.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"Question {i}: sea {i * 7}?", "chosen": " yes good" + " ok" * (i % 3),
                                        "rejected": " no bad"}) + "\n" for i in range(8)))
    kw = dict(SETTINGS, model=str(tiny_model_dir), data=str(data), ref_cache_dir=str(tmp_path / "cache"), max_steps=1,
              save_every=0, fsdp=True, mixed_precision="bf16")
    finals = {o: tm.train(TrainConfig(**{**kw, "objective": o}, output=str(tmp_path / o))) for o in ("sr-dpo", "dpo")}
    info = json.loads((tmp_path / "sr-dpo" / "run_info.json").read_text())
    assert info["mixed_precision"] == "bf16" and info["precision"] == "float32/bfloat16/params-bfloat16"
    row = [json.loads(l) for l in (tmp_path / "sr-dpo" / "log.jsonl").read_text().splitlines()][0]
    assert row["margin"] == 0.0 and row["delta/mean"] == 0.0 and row["margin_p"] == 0.0
    a, b = weights(finals["sr-dpo"]), weights(finals["dpo"])
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("name, runs", [("paper-hh", 13), ("paper-zephyr", 4)])
def test_paper_configs_launch_through_torchrun_with_fsdp(name, runs, tmp_path, capsys, monkeypatch):
    """The dry run prints each run's exact launch command, offline: no model or dataset is opened."""
    import trainer.data
    import trainer.modeling
    from srdpo_eval.config import load_config
    from srdpo_eval.reproduce import reproduce

    opened = []

    def refuse(*a, **k):
        opened.append(a)  # recorded: a plan may swallow the error
        raise AssertionError(f"the dry run opened {a}")

    for mod, fn in ((trainer.data, "load_preference_data"), (trainer.modeling, "load_causal_lm"),
                    (trainer.modeling, "load_tokenizer")):
        monkeypatch.setattr(mod, fn, refuse)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    reproduce(load_config(ROOT / "configs" / f"{name}.yaml"), tmp_path / name, dry_run=True)
    lines = [l.strip() for l in capsys.readouterr().out.splitlines() if l.strip().startswith("$ ")]
    prefix = "$ torchrun --nproc_per_node 8 -m srdpo_eval train --config "
    assert all(l.startswith(prefix) for l in lines) and len(lines) == runs + 1, lines
    assert sum(l.endswith(".launch.yaml --resume --fsdp") for l in lines) == runs
    assert sum(l.endswith(".launch.yaml --reference-only") for l in lines) == 1
    assert opened == []


@pytest.mark.slow
def test_reproduce_trains_through_the_torchrun_launcher(setup, tmp_path, monkeypatch, capsys):
    """`train.launcher` + `fsdp: true`: the reference pass and the training run go through torchrun."""
    import yaml

    from srdpo_eval.config import load_config
    from srdpo_eval.reproduce import reproduce

    d, model, data = setup
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    launcher = f"{sys.executable} -m torch.distributed.run --standalone --nproc_per_node 2"
    cfg = {"name": "launched", "model": str(model), "data": str(data),
           "train": {"objectives": ["sr-dpo"], "batch_size": 4, "learning_rate": 1e-3, "warmup_steps": 0,
                     "max_steps": 2, "device": "cpu", "max_length": 128, "max_prompt_length": 64,
                     "progress": False, "fsdp": True, "launcher": launcher}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    out = tmp_path / "run"
    reproduce(load_config(tmp_path / "c.yaml"), out, stages=["reference", "train"])
    printed = capsys.readouterr().out
    assert "train --config" in printed and "--reference-only" in printed and "--resume --fsdp" in printed
    info = json.loads((out / "train" / "sr-dpo" / "run_info.json").read_text())
    assert info["finished"] and info["num_processes"] == 2 and Path(info["ref_cache"]).parent == out / "refcache"
    assert (out / "train" / "sr-dpo" / "final" / "model.safetensors").is_file()


# Splits of a step's pairs that give the two processes different numbers of micro-batches (before the
# fix, FSDP waited in a collective for ever): pairs per forward, tokens per forward, and an 11-pair epoch
# whose last batch is short (3 pairs: 2 on one process, 1 on the other).
UNEVEN = {"micro-batch-size": dict(batch_size=3, micro_batch_size=1),
          "token-budget": dict(batch_size=4, max_tokens_per_micro_batch=48)}


@pytest.fixture(scope="module")
def uneven_data(setup):
    d = setup[0]
    data = d / "uneven.jsonl"
    with data.open("w") as f:
        for i in range(11):
            f.write(json.dumps({"prompt": f"Question {i}: " + "sea sky " * (i % 4), "chosen": " yes" * (1 + i % 5),
                                "rejected": " no bad" * (1 + i % 2)}) + "\n")
    return data


def _uneven_cfg(model, data, out, cache, split: str) -> TrainConfig:
    return TrainConfig(objective="sr-dpo", model=str(model), data=str(data), output=str(out), ref_cache_dir=str(cache),
                       learning_rate=1e-3, warmup_steps=0, device="cpu", max_length=128, max_prompt_length=64,
                       progress=False, **UNEVEN[split])


@pytest.mark.slow
@pytest.mark.parametrize("split", list(UNEVEN))
@pytest.mark.parametrize("mode", ["fsdp", "ddp"])
def test_uneven_micro_batches_never_hang_and_match_one_process(setup, uneven_data, mode, split):
    """Every process makes the same number of forwards and backwards per step, whatever its share."""
    d, model, _ = setup
    cache = d / "uneven-cache"
    cfg = _uneven_cfg(model, uneven_data, d / f"uneven-one-{mode}-{split}", cache, split)
    pairs, _ = tm.load_pairs(cfg)
    batches = tm.epoch_batches(pairs, cfg, 0, 2)
    counts = [[len(c) for c in tm.step_micro_batches(pairs, b, cfg, 2, True)] for b in batches]
    assert any(a != b for a, b in counts), f"the split is even in every step, the test proves nothing: {counts}"
    assert len(batches[-1]) < cfg.batch_size or split != "micro-batch-size"  # a short last batch too
    one = weights(tm.train(cfg))
    out = d / f"uneven-{mode}-{split}"
    args = ["train", "--config", str(d / f"uneven-{split}.yaml"), "--output", str(out)]
    from trainer.config import dump_yaml

    dump_yaml(cfg, d / f"uneven-{split}.yaml")
    proc = torchrun("-m", "srdpo_eval", *args, *(["--fsdp"] if mode == "fsdp" else []), timeout=120)
    assert proc.returncode == 0, proc.stderr[-4000:]
    log = [json.loads(l) for l in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == list(range(1, len(batches) + 1))
    assert_close_weights(weights(out / "final"), one)
