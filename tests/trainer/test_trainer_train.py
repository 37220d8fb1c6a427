"""trainer/train.py end to end on a tiny model: learning, Sr-X = X at step 0, exact resume, NaN stop,
checkpoints, the reference cache, the config precedence and the CLI."""

from __future__ import annotations

import json

import pytest
import torch

import trainer.train as train_mod
from trainer.config import TrainConfig, build_config
from contracts.errors import UserError
from trainer.data import DataConfig

WORDS = ["sea", "sky", "fox", "dog", "poem", "plant", "Paris", "France"]


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """A learnable toy preference set: the chosen answer is always the same helpful one."""
    d = tmp_path_factory.mktemp("toy")
    with (d / "toy.jsonl").open("w") as f:
        for i in range(16):
            f.write(json.dumps({"prompt": f"Question {i}: what about the {WORDS[i % 8]}?",
                                "chosen": " yes good helpful", "rejected": " no bad harmless"}) + "\n")
    return d


def cfg_for(model_dir, toy, out, **kw) -> TrainConfig:
    base = dict(objective="dpo", model=str(model_dir), data=str(toy / "toy.jsonl"), output=str(out),
                batch_size=4, micro_batch_size=2, learning_rate=1e-3, warmup_steps=0, max_steps=3,
                ref_cache_dir=str(toy / "ref_cache"), progress=False, device="cpu",
                max_length=128, max_prompt_length=64)
    base.update(kw)
    return TrainConfig(**base)


def weights(path):
    from safetensors.torch import load_file

    return load_file(str(path / "model.safetensors"))


def read_log(out):
    return [json.loads(l) for l in (out / "log.jsonl").read_text().splitlines()]


def test_training_raises_reward_accuracy(tiny_model_dir, toy, tmp_path):
    from trainer.data import load_preference_data, tokenize_pairs
    from trainer.losses import margin
    from trainer.modeling import load_causal_lm
    from trainer.scoring import pair_logps

    out = tmp_path / "dpo"
    final = train_mod.train(cfg_for(tiny_model_dir, toy, out, max_steps=4))
    policy, tok = load_causal_lm(final, dtype="fp32", device="cpu")
    ref, _ = load_causal_lm(tiny_model_dir, dtype="fp32", device="cpu", with_tokenizer=False)
    pairs, _ = tokenize_pairs(load_preference_data(str(toy / "toy.jsonl")), tok, DataConfig())
    pl, rl = (pair_logps(m, pairs, pad_id=0, refine=False, progress=False) for m in (policy, ref))
    m = margin(pl.chosen, pl.rejected, rl.chosen, rl.rejected)
    assert (m > 0).float().mean() >= 0.9 and m.mean() > 0.5  # at the start every margin is 0
    log = read_log(out)
    assert [r["step"] for r in log] == [1, 2, 3, 4] and [r["pairs_seen"] for r in log] == [4, 8, 12, 16]
    assert log[0]["rewards/accuracies"] == 0.0 and log[-1]["rewards/accuracies"] == 1.0
    assert log[-1]["loss"] < log[0]["loss"]
    for key in ("loss", "lr", "grad_norm", "rewards/chosen", "rewards/rejected", "rewards/margins",
                "rewards/accuracies", "logps/chosen", "logps/rejected", "margin", "accuracy", "step_time_s",
                "elapsed_s"):
        assert key in log[0], key
    info = json.loads((out / "run_info.json").read_text())
    assert info["finished"] and info["steps"] == 4 and info["train_pairs"] == 16 and info["dropped_pairs"] == 0
    # checkpoints are standard HF checkpoints
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(final)
    si = json.loads((final / "srdpo_info.json").read_text())
    assert (si["objective"], si["step"], si["pairs_seen"], si["beta"]) == ("dpo", 4, 16, 0.1)


@pytest.mark.parametrize("base", ["dpo", "ipo"])
def test_sr_objective_equals_base_at_step_zero(tiny_model_dir, toy, tmp_path, base):
    """Δπ = 0 at step 0 (π = π_ref), so one step of Sr-X is one step of X, whatever λ."""
    a = train_mod.train(cfg_for(tiny_model_dir, toy, tmp_path / base, objective=base, max_steps=1))
    b = train_mod.train(cfg_for(tiny_model_dir, toy, tmp_path / f"sr-{base}", objective=f"sr-{base}",
                                max_steps=1, lam=1.0))
    la, lb = read_log(tmp_path / base)[0], read_log(tmp_path / f"sr-{base}")[0]
    assert abs(lb["delta/mean"]) < 1e-6 and lb["accuracy_p"] == 0.0
    assert abs(la["loss"] - lb["loss"]) < 1e-6
    wa, wb = weights(a), weights(b)
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], atol=1e-6, rtol=0)
    # and Δπ moves away from 0 once the policy has moved
    c = train_mod.train(cfg_for(tiny_model_dir, toy, tmp_path / f"sr2-{base}", objective=f"sr-{base}",
                                max_steps=3, lam=1.0))
    assert c.is_dir() and abs(read_log(tmp_path / f"sr2-{base}")[-1]["delta/mean"]) > 1e-4


def test_killed_and_resumed_run_matches_uninterrupted(tiny_model_dir, toy, tmp_path, monkeypatch):
    kw = dict(objective="sr-dpo", max_steps=4, save_every=2, optimizer="adamw", epochs=1)
    full = train_mod.train(cfg_for(tiny_model_dir, toy, tmp_path / "full", **kw))

    real_save = train_mod.save_checkpoint

    def save_then_die(policy, opt, sched, tok, path, info, state, **kw):
        real_save(policy, opt, sched, tok, path, info, state, **kw)
        if path.name == "checkpoint-2":
            raise KeyboardInterrupt("simulated kill after checkpoint-2")

    monkeypatch.setattr(train_mod, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train_mod.train(cfg_for(tiny_model_dir, toy, tmp_path / "killed", **kw))
    monkeypatch.setattr(train_mod, "save_checkpoint", real_save)
    out = tmp_path / "killed"
    assert not (out / "final").exists() and (out / "checkpoint-2" / "trainer_state" / "state.json").is_file()
    with pytest.raises(UserError, match="--resume"):
        train_mod.train(cfg_for(tiny_model_dir, toy, out, **kw))
    resumed = train_mod.train(cfg_for(tiny_model_dir, toy, out, resume=True, **kw))
    wf, wr = weights(full), weights(resumed)
    assert wf.keys() == wr.keys()
    for k in wf:
        assert torch.equal(wf[k], wr[k]), k
    lf, lr_ = read_log(tmp_path / "full"), read_log(out)
    assert [r["step"] for r in lr_] == [1, 2, 3, 4]
    assert [r["loss"] for r in lf] == [r["loss"] for r in lr_]
    # finished: the checkpoint keeps its weights for evaluation, not the optimizer state (keep_trainer_state)
    for run in (tmp_path / "full", out):
        assert (run / "checkpoint-2" / "model.safetensors").is_file() and not (run / "checkpoint-2" / "trainer_state").exists()


def test_finished_run_keeps_weights_in_the_save_dtype(tiny_model_dir, toy, tmp_path):
    """Checkpoints lose their trainer state once final/ is written (unless keep_trainer_state); with
    save_dtype bf16 the weights of final/ and of the checkpoints are the trained fp32 weights rounded to bf16."""
    from safetensors import safe_open

    kw = dict(max_steps=4, save_every=2, optimizer="adamw")
    kept = tmp_path / "kept"
    train_mod.train(cfg_for(tiny_model_dir, toy, kept, keep_trainer_state=True, **kw))
    assert (kept / "checkpoint-2" / "trainer_state" / "state.json").is_file()
    w32 = {d: weights(kept / d) for d in ("checkpoint-2", "final")}
    assert all(t.dtype == torch.float32 for t in w32["final"].values())  # CPU: fp32, as trained
    small = tmp_path / "small"
    train_mod.train(cfg_for(tiny_model_dir, toy, small, save_dtype="bf16", **kw))
    assert not (small / "checkpoint-2" / "trainer_state").exists()
    for d in ("checkpoint-2", "final"):
        w16 = weights(small / d)
        assert w16.keys() == w32[d].keys()
        for k in w16:
            assert w16[k].dtype == torch.bfloat16 and torch.equal(w16[k], w32[d][k].to(torch.bfloat16)), (d, k)
        assert json.loads((small / d / "config.json").read_text()).get("dtype") == "bfloat16"
        with safe_open(str(small / d / "model.safetensors"), "pt") as f:
            assert f.metadata() is not None
    size = lambda p: sum(f.stat().st_size for f in p.rglob("*") if f.is_file())  # noqa: E731
    assert size(small / "checkpoint-2") < 0.5 * size(kept / "checkpoint-2")


def test_nan_loss_stops_with_last_good_checkpoint_intact(tiny_model_dir, toy, tmp_path, monkeypatch):
    real = train_mod.objective_terms
    calls = {"n": 0}

    def poisoned(cfg, *a, **k):
        terms = real(cfg, *a, **k)
        calls["n"] += 1
        if calls["n"] > 4:  # steps 1-2 are fine (2 micro-batches each), step 3 is NaN
            terms.losses = terms.losses * float("nan")
        return terms

    monkeypatch.setattr(train_mod, "objective_terms", poisoned)
    out = tmp_path / "nan"
    with pytest.raises(train_mod.TrainingDiverged, match=r"step 3: loss is nan.*checkpoint-2"):
        train_mod.train(cfg_for(tiny_model_dir, toy, out, max_steps=4, save_every=2))
    assert not (out / "final").exists()
    info = json.loads((out / "run_info.json").read_text())
    assert not info["finished"] and "nan" in info["error"] and info["steps"] == 2
    w = weights(out / "checkpoint-2")
    assert all(torch.isfinite(t).all() for t in w.values())
    assert len(read_log(out)) == 2


def test_sft_lowers_nll_of_chosen(tiny_model_dir, toy, tmp_path):
    out = tmp_path / "sft"
    train_mod.train(cfg_for(tiny_model_dir, toy, out, objective="sft", max_steps=3))
    log = read_log(out)
    assert log[-1]["loss"] < log[0]["loss"]
    assert abs(log[0]["loss"] + log[0]["logps/chosen"] / 4) < 1e-4  # token mean: 3 words + EOS = 4 tokens


def test_reference_cache_reused_without_loading_the_reference(tiny_model_dir, toy, tmp_path, monkeypatch):
    import trainer.modeling

    train_mod.train(cfg_for(tiny_model_dir, toy, tmp_path / "a", objective="sr-ipo", max_steps=1))
    files = list((toy / "ref_cache").glob("*.safetensors"))

    loads = []
    real = trainer.modeling.load_causal_lm
    monkeypatch.setattr(trainer.modeling, "load_causal_lm", lambda *a, **k: loads.append(a) or real(*a, **k))
    train_mod.train(cfg_for(tiny_model_dir, toy, tmp_path / "b", objective="sr-dpo", beta=0.3, lam=0.1,
                            max_steps=1))
    assert loads == [] and sorted(files) == sorted((toy / "ref_cache").glob("*.safetensors"))
    info = json.loads((tmp_path / "b" / "run_info.json").read_text())
    assert info["ref_cache"] and any(str(f) == info["ref_cache"] for f in files)
    # a different reduction is a different cache entry
    train_mod.train(cfg_for(tiny_model_dir, toy, tmp_path / "c", objective="sr-dpo", reduce="mean", max_steps=1))
    assert len(loads) == 1


def test_config_precedence_and_errors(tmp_path):
    y = tmp_path / "c.yaml"
    y.write_text("beta: 0.3\nmax_length: 384\nlam: 0.1\nlearning_rate: 1e-6\n")
    cfg = build_config({"lam": 1.0, "model": "m", "data": "d", "output": "o"}, config_file=str(y))
    # defaults (the paper's) < file < flags; YAML 1.1's string "1e-6" is read as the number
    assert (cfg.beta, cfg.lam, cfg.learning_rate, cfg.optimizer) == (0.3, 1.0, 1e-6, "rmsprop")
    assert (cfg.max_length, cfg.max_prompt_length, cfg.warmup_steps) == (384, 256, 150)
    y.write_text("beta: 0.1\nbetta: 0.3\n")
    with pytest.raises(ValueError, match=r"c\.yaml:2: betta: unknown setting"):
        build_config({}, config_file=str(y))
    with pytest.raises(ValueError, match="--objective: 'ppo' is not one of"):
        build_config({"objective": "ppo", "model": "m", "data": "d", "output": "o"})
    with pytest.raises(ValueError, match="--model: required"):
        build_config({"data": "d", "output": "o"})
    y.write_text("max_length: 64\nmax_prompt_length: 64\n")
    with pytest.raises(ValueError, match="max_prompt_length .* must be smaller than max_length"):
        build_config({"model": "m", "data": "d", "output": "o"}, config_file=str(y))


def test_cli_train(tiny_model_dir, toy, tmp_path):
    from srdpo_eval.cli import main

    y = tmp_path / "c.yaml"
    y.write_text(f"objective: ipo\nmodel: {tiny_model_dir}\nbatch_size: 4\nmax_steps: 5\nwarmup_steps: 0\n"
                 f"ref_cache_dir: {toy / 'ref_cache'}\ndevice: cpu\nmax_length: 128\nmax_prompt_length: 64\n")
    out = tmp_path / "cli"
    rc = main(["train", "--config", str(y), "--data", str(toy / "toy.jsonl"), "--output", str(out),
               "--objective", "sr-ipo", "--max-steps", "2", "--lam", "0.3", "--no-progress"])
    assert rc == 0 and (out / "final" / "model.safetensors").is_file()
    info = json.loads((out / "run_info.json").read_text())
    assert (info["objective"], info["lam"], info["steps"]) == ("sr-ipo", 0.3, 2)
    assert main(["train", "--objective", "dpo", "--data", "x", "--output", "y"]) == 2  # no --model


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_bf16_training_steps(toy, tmp_path):
    """On a GPU: bf16 autocast (fp32 master weights), packed pairs on FlexAttention with no fall-back (head_dim
    16: its kernel's least), Sr-DPO learns, Δπ = 0 at step 0 within bf16 noise."""
    from tiny import build_tiny_model

    model = build_tiny_model(tmp_path / "model", hidden_size=64, num_heads=4)
    out = tmp_path / "cuda"
    final = train_mod.train(cfg_for(model, toy, out, objective="sr-dpo", device="cuda", max_steps=6,
                                    ref_cache_dir=str(tmp_path / "cache")))
    info = json.loads((out / "run_info.json").read_text())
    assert info["device"].startswith("cuda") and info["mixed_precision"] == "bf16" and info["dtype"] == "float32"
    assert info["attention"] == "flex_attention" and info["packing_fallbacks"] == {}, info
    log = read_log(out)
    assert abs(log[0]["loss"] - 0.693147) < 1e-3 and abs(log[0]["delta/mean"]) < 1e-3
    assert log[-1]["accuracy"] == 1.0 and log[-1]["loss"] < log[0]["loss"]
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(final)


def test_log_counts_the_tokens_each_step_forwards(tiny_model_dir, toy, tmp_path):
    """Per step: tokens of the x ⊕ y⁺ and x ⊕ y⁻ forward with gradient, of p ⊕ x ⊕ y without (Sr only), and
    the target (completion) tokens of each, counted from the tokenized pairs of that step's batch: packed,
    each pair's context once; padded, once per completion."""
    from trainer.modeling import load_tokenizer

    for objective, packing in (("dpo", True), ("sr-dpo", True), ("sr-dpo", False)):
        run = tmp_path / f"{objective}-{packing}"
        cfg = cfg_for(tiny_model_dir, toy, run, objective=objective, max_steps=3, packing=packing)
        train_mod.train(cfg)
        assert json.loads((run / "run_info.json").read_text())["packing"] is packing
        pairs, _ = train_mod.load_pairs(cfg, load_tokenizer(str(tiny_model_dir)))
        batches = train_mod.epoch_batches(pairs, cfg, 0, 1)
        k = 1 if packing else 2
        for row, idx in zip(read_log(run), batches):
            ps = [pairs[i] for i in idx]
            targets = sum(len(p.chosen_ids) + len(p.rejected_ids) for p in ps)
            assert row["targets/grad"] == targets
            assert row["tokens/grad"] == targets + sum(k * len(p.prompt_ids) for p in ps)
            if objective == "dpo":
                assert row["tokens/no_grad"] == row["targets/no_grad"] == 0
            else:
                assert row["targets/no_grad"] == targets
                assert row["tokens/no_grad"] == targets + sum(k * len(p.refine_prompt_ids) for p in ps)
                assert row["tokens/no_grad"] > row["tokens/grad"]  # p adds its tokens to the context
        # parameters per forwarded token: all but the input embedding (a lookup) and the LM head (targets only)
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
        vocab, hidden = model.config.vocab_size, model.config.hidden_size
        info = json.loads((run / "run_info.json").read_text())
        assert info["params_head"] == vocab * hidden  # untied in the tiny Llama
        assert info["params_body"] == sum(p.numel() for p in model.parameters()) - 2 * vocab * hidden


def test_deterministic_flag_trains_the_same_and_restores_torch(tiny_model_dir, toy, tmp_path):
    """--deterministic: torch's deterministic algorithms during the run (and cuBLAS's fixed workspace on a
    GPU); on a CPU the result is bitwise the default one. Afterwards torch is as it was."""
    before = torch.are_deterministic_algorithms_enabled()
    a = train_mod.train(cfg_for(tiny_model_dir, toy, tmp_path / "det", objective="sr-dpo", deterministic=True))
    assert torch.are_deterministic_algorithms_enabled() == before
    b = train_mod.train(cfg_for(tiny_model_dir, toy, tmp_path / "default", objective="sr-dpo"))
    wa, wb = weights(a), weights(b)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert json.loads((tmp_path / "det" / "run_info.json").read_text())["deterministic"] is True


def test_a_schedule_that_makes_no_sense_for_the_data_is_said(tiny_model_dir, toy, tmp_path, caplog):
    """The paper's batch and warm-up on 16 pairs: one step at a learning rate of 1/151 of its peak."""
    import logging

    with caplog.at_level(logging.WARNING, logger="trainer.train"):
        train_mod.train(cfg_for(tiny_model_dir, toy, tmp_path / "paper", batch_size=64, warmup_steps=150,
                                learning_rate=5e-7, max_steps=None))
    said = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("batch_size 64 is more than the 16 usable pairs" in m for m in said), said
    assert any("warmup_steps 150 is not shorter than the run's 1 steps: the learning rate rises to 0.7% of 5e-07 "
               "at most (3.3e-09)" in m and m.endswith("training as set") for m in said), said
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="trainer.train"):
        train_mod.train(cfg_for(tiny_model_dir, toy, tmp_path / "repeat", batch_size=4, warmup_steps=0, max_steps=8))
    said = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(said) == 1 and "max_steps 8 is more than 1 epoch(s) of 4 steps: each pair is trained on about 2.0" \
        in said[0], said
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="trainer.train"):  # a sensible schedule: nothing said
        train_mod.train(cfg_for(tiny_model_dir, toy, tmp_path / "fine", batch_size=4, warmup_steps=1, max_steps=4))
    assert not [r for r in caplog.records if r.levelno == logging.WARNING]
