"""trainer/packing.py: packed [x, y⁺, y⁻] rows give the padded batch's log-probs and gradients on four
architectures; the layout and the mask; the fallbacks; micro-batches by tokens; training, the reference
pass and pair_logps with packing on and off."""

from __future__ import annotations

import json
import logging
import random

import pytest
import torch

from trainer.data import DataConfig, TokenizedPair, tokenize_pairs
from trainer.logprobs import CompletionLogps
from trainer.packing import PAIRS, PairBatcher, dense_mask, micro_batches, pack, pair_tokens

ARCHS = ("llama", "gpt_neox", "qwen2", "gemma")
WORDS = "the quick brown fox jumps over lazy dog sea sky poem plant Paris France yes no good bad".split()


@pytest.fixture(scope="module")
def arch_dirs(tiny_model_dir, tiny_neox_dir, tmp_path_factory):
    from tiny import build_tiny_model

    return {"llama": tiny_model_dir, "gpt_neox": tiny_neox_dir,
            "qwen2": build_tiny_model(tmp_path_factory.mktemp("tiny-qwen2"), arch="qwen2"),
            "gemma": build_tiny_model(tmp_path_factory.mktemp("tiny-gemma"), arch="gemma")}


def _records(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    text = lambda k: " ".join(rng.choice(WORDS) for _ in range(k))
    return [{"id": i, "prompt": "Question: " + text(rng.randint(1, 30)), "chosen": " " + text(rng.randint(1, 25)),
             "rejected": " " + text(rng.randint(1, 25))} for i in range(n)]


def _pairs(tok, n: int = 8, seed: int = 0) -> list[TokenizedPair]:
    """Varied lengths; some prompts and some completions truncated."""
    pairs, report = tokenize_pairs(_records(n, seed), tok, DataConfig(max_length=48, max_prompt_length=20))
    assert report.prompt_truncated and report.completion_truncated and len(pairs) == n
    return pairs


def _load(path, **kw):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32, **kw), AutoTokenizer.from_pretrained(
        str(path))


def _logps_and_grads(w, batch, reduce):
    w.model.zero_grad()
    lp, n = w(**batch, reduce=reduce)
    (lp * torch.linspace(-1, 1, len(lp))).sum().backward()  # rows of both signs in one loss
    return lp.detach(), n, {k: p.grad.clone() for k, p in w.model.named_parameters() if p.grad is not None}


CUDA = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]
MODES = {"pairs": PAIRS, "dense": "sdpa", "flex": "flex_attention"}  # mode: the attention it runs


@pytest.fixture(scope="module")
def flex_arch_dirs(tmp_path_factory):
    """The four architectures with head_dim 16: FlexAttention's CUDA kernel needs at least 16 (with less it
    fails, and the batcher falls back to dense masks: the flex test would not test flex)."""
    from tiny import build_tiny_model

    return {a: build_tiny_model(tmp_path_factory.mktemp(f"flex-{a}"), arch=a, hidden_size=64, num_heads=4)
            for a in ARCHS}


@pytest.mark.parametrize("mode", ["pairs", "dense", pytest.param("flex", marks=CUDA)])
@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("reduce", ["sum", "mean"])
def test_packed_equals_padded_values_and_grads(arch, reduce, mode, arch_dirs, request):
    """fp32. pairs: the CPU's per-pair SDPA on one unpadded row; dense: SDPA with [R, 1, T, T] masks (where
    neither of the others applies); flex: FlexAttention with block masks, on CUDA, and it must really run:
    the batcher's own check passes with no fall-back."""
    dirs = request.getfixturevalue("flex_arch_dirs") if mode == "flex" else arch_dirs
    model, tok = _load(dirs[arch])
    model.to("cuda" if mode == "flex" else "cpu").train()
    pairs = _pairs(tok)
    w = CompletionLogps(model, chunk_size=5)
    batcher = PairBatcher(model)
    if mode == "dense":
        model.set_attn_implementation("sdpa")
    assert batcher.packing and batcher.attn == MODES[mode]
    if mode == "flex":
        assert batcher.verify(w, pairs) is not None
        assert batcher.attn == "flex_attention" and not batcher.fallbacks, dict(batcher.fallbacks)
    for refine in (False, True):
        budget = 2 * max(pair_tokens(p, refine) for p in pairs)
        packed = batcher(pairs, refine=refine, row_tokens=budget)
        rows, T = packed["input_ids"].shape
        if mode == "pairs":  # everything in one row, without padding
            assert rows == 1 and T == sum(pair_tokens(p, refine) for p in pairs)
        else:
            assert 1 < rows < len(pairs), "want several pairs per row and several rows"
        lp, n, g = _logps_and_grads(w, packed, reduce)
        lp_ref, n_ref, g_ref = _logps_and_grads(w, batcher.padded(pairs, refine=refine), reduce)
        assert n.tolist() == n_ref.tolist() == [len(p.chosen_ids) for p in pairs] + [len(p.rejected_ids) for p in pairs]
        torch.testing.assert_close(lp, lp_ref, atol=1e-5, rtol=1e-5)
        assert g.keys() == g_ref.keys()
        for k in g:
            assert (g[k] - g_ref[k]).norm() <= 1e-5 * g_ref[k].norm() + 1e-8, (arch, refine, k)


def test_eager_attention_takes_an_additive_mask(tiny_model_dir):
    model, tok = _load(tiny_model_dir, attn_implementation="eager")
    pairs = _pairs(tok)
    batcher = PairBatcher(model)
    batch = batcher(pairs, row_tokens=100)
    assert batcher.attn == "eager" and batch["attention_mask"].dtype == torch.float32
    w = CompletionLogps(model)
    with torch.no_grad():
        torch.testing.assert_close(w(**batch)[0], w(**batcher.padded(pairs))[0], atol=1e-5, rtol=1e-5)


@pytest.mark.slow
def test_flex_block_mask_equals_padded(tiny_model_dir):
    """The CUDA path's BlockMask, checked on the CPU (forward only: FlexAttention has no CPU backward)."""
    model, tok = _load(tiny_model_dir)
    pairs = _pairs(tok)
    w = CompletionLogps(model)
    with torch.no_grad():
        ref, _ = w(**PairBatcher(model, packing=False).padded(pairs, refine=True))
        model.set_attn_implementation("flex_attention")
        batcher = PairBatcher(model)
        batch = batcher(pairs, refine=True, row_tokens=150)
        assert batcher.attn == "flex_attention" and type(batch["attention_mask"]).__name__ == "BlockMask"
        assert batch["input_ids"].shape[1] % 128 == 0
        torch.testing.assert_close(w(**batch)[0], ref, atol=1e-5, rtol=1e-5)


def test_layout_targets_and_mask():
    a = TokenizedPair("a", [1, 2, 3], [4, 5], [6, 7, 8], [90, 1, 2, 3])
    b = TokenizedPair("b", [9], [10], [11, 12], [90, 9])
    one = pack([a, b], row_tokens=100)
    assert one["input_ids"].tolist() == [[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]]
    assert one["position_ids"].tolist() == [[0, 1, 2, 3, 4, 3, 4, 5, 0, 1, 1, 2]]
    t = one["targets"]
    got = sorted(zip(t.seq.tolist(), t.src.tolist(), t.tokens.tolist()))
    # pair a: chosen is output 0, rejected output 2; y⁻'s first token is predicted from x's last state
    # (column 2), not from y⁺'s last (column 4), which predicts nothing
    assert got == [(0, 2, 4), (0, 3, 5), (1, 8, 10), (2, 2, 6), (2, 5, 7), (2, 6, 8), (3, 8, 11), (3, 10, 12)]
    assert t.n_seq == 4
    m = dense_mask(one["doc"], one["role"])[0, 0]
    sees = lambda q: m[q].nonzero().flatten().tolist()
    assert sees(5) == [0, 1, 2, 5] and sees(7) == [0, 1, 2, 5, 6, 7]  # y⁻ sees x and itself, never y⁺
    assert sees(4) == [0, 1, 2, 3, 4] and sees(9) == [8, 9] and sees(11) == [8, 10, 11]  # no pair sees another
    two = pack([a, b], refine=True)  # default rows: the longest pair's length; padding only at a row's end
    assert two["input_ids"].tolist() == [[90, 1, 2, 3, 4, 5, 6, 7, 8], [90, 9, 10, 11, 12, 0, 0, 0, 0]]
    m = dense_mask(two["doc"], two["role"])[1, 0]
    assert [m[q].nonzero().flatten().tolist() for q in range(5, 9)] == [[5], [6], [7], [8]]  # pads: themselves
    assert sorted(zip(two["targets"].seq.tolist(), two["targets"].src.tolist())) == [
        (0, 3), (0, 4), (1, 10), (2, 3), (2, 6), (2, 7), (3, 10), (3, 12)]


def test_unsupported_attention_falls_back_with_one_log_line(tiny_model_dir, caplog):
    model, tok = _load(tiny_model_dir)
    model.config._attn_implementation_internal = "flash_attention_2"
    with caplog.at_level(logging.INFO, logger="trainer.packing"):
        batcher = PairBatcher(model)
    assert not batcher.packing and "loss_mask" in batcher(_pairs(tok))
    assert [r.message for r in caplog.records if "packing off" in r.message] == [
        "packing off for LlamaForCausalLM: attention implementation 'flash_attention_2' takes no custom mask "
        "(packing needs one of sdpa, eager, flex_attention); padded batches"]
    model.config._attn_implementation_internal = "sdpa"
    model.config.layer_types = ["full_attention", "linear_attention"]
    assert not PairBatcher(model).packing
    assert "loss_mask" in PairBatcher(_load(tiny_model_dir)[0], packing=False)(_pairs(tok))


def test_verification_turns_off_packing_when_the_model_ignores_the_mask(tiny_model_dir, monkeypatch, caplog):
    import trainer.packing as pk

    model, tok = _load(tiny_model_dir)
    pairs = _pairs(tok)
    w = CompletionLogps(model)
    batcher = PairBatcher(model)
    model.set_attn_implementation("sdpa")  # dense masks
    assert batcher.verify(w, pairs) < 1e-4 and batcher.packing
    # as if the model attended across the packed sequences (a plain causal mask)
    monkeypatch.setattr(pk, "sees", lambda dq, rq, dk, rk, q, k: (k <= q) & (dq == dq) & (dk == dk))
    with caplog.at_level(logging.WARNING, logger="trainer.packing"):
        assert batcher.verify(w, pairs) is None
    assert not batcher.packing and "loss_mask" in batcher(pairs)
    assert any(r.message.startswith("packing off: packed log-probs differ") for r in caplog.records)


def test_failing_per_pair_attention_falls_back_to_dense_masks(tiny_model_dir):
    from transformers import AttentionInterface

    import trainer.packing as pk

    def causal_over_the_row(module, q, k, v, mask, *, pair_spans=None, **kw):  # pairs see each other
        return torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2), None

    model, tok = _load(tiny_model_dir)
    pairs = _pairs(tok)
    batcher = PairBatcher(model)
    assert batcher.attn == PAIRS and batcher.switched_from == "sdpa"
    AttentionInterface.register(PAIRS, causal_over_the_row)
    try:
        assert batcher.verify(CompletionLogps(model), pairs) < 1e-4
    finally:
        pk._register_pairs_attention()
    assert batcher.packing and batcher.attn == "sdpa" and batcher.switched_from is None
    batch = batcher(pairs)
    R, T = batch["input_ids"].shape
    assert "pair_spans" not in batch and batch["attention_mask"].shape == (R, 1, T, T)


def test_sliding_window_packs_only_what_fits(tiny_model_dir):
    model, tok = _load(tiny_model_dir)
    model.config.sliding_window = 32  # as a model with sliding-window layers
    pairs = _pairs(tok)
    batcher = PairBatcher(model)
    assert batcher.window == 32 and batcher.packing
    short = [p for p in pairs if len(p.prompt_ids) + max(len(p.chosen_ids), len(p.rejected_ids)) <= 32]
    assert short and "targets" in batcher(short) and "loss_mask" in batcher(pairs)


def test_micro_batches_by_pairs_and_tokens():
    def pair(x, c, r):
        return TokenizedPair(0, [1] * x, [1] * c, [1] * r)

    pairs = [pair(10, 10, 5), pair(8, 4, 4), pair(5, 5, 5), pair(2, 1, 1), pair(50, 50, 50)]
    order = [4, 0, 2, 1, 3]  # longest first, as the trainer sorts
    assert micro_batches(pairs, order, max_pairs=2) == [[4, 0], [2, 1], [3]]
    # packed sizes 150, 25, 15, 16, 4: the 150-token pair goes alone, the rest fill 40-token budgets
    assert micro_batches(pairs, order, max_tokens=40) == [[4], [0, 2], [1, 3]]
    assert micro_batches(pairs, order, max_tokens=40, max_pairs=1) == [[4], [0], [2], [1], [3]]
    # padded: 2 · pairs · longest row (100, 20, 10, 12, 3)
    assert micro_batches(pairs, order, max_tokens=80, packing=False) == [[4], [0, 2], [1, 3]]
    assert micro_batches(pairs, order) == [order]


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=CUDA)])
@pytest.mark.parametrize("reduce", ["sum", "mean"])
def test_pair_logps_packed_equals_padded(tiny_neox_dir, reduce, device, request):
    from trainer.scoring import pair_logps

    model, tok = _load(request.getfixturevalue("flex_arch_dirs")["gpt_neox"] if device == "cuda" else tiny_neox_dir)
    model.to(device)
    if device == "cuda":  # the batcher pair_logps makes runs FlexAttention, no fall-back
        probe = PairBatcher(model)
        assert probe.verify(CompletionLogps(model), _pairs(tok, n=9, seed=2)) is not None and not probe.fallbacks
        assert probe.attn == "flex_attention"
        model.set_attn_implementation(probe.switched_from)
    pairs = _pairs(tok, n=9, seed=2)
    kw = dict(pad_id=tok.pad_token_id, batch_size=4, reduce=reduce, progress=False)
    packed, padded = pair_logps(model, pairs, **kw), pair_logps(model, pairs, packing=False, **kw)
    for k in ("chosen", "rejected", "refine_chosen", "refine_rejected"):
        torch.testing.assert_close(getattr(packed, k), getattr(padded, k), atol=1e-5, rtol=1e-6)
    assert packed.n_chosen.tolist() == padded.n_chosen.tolist() == [len(p.chosen_ids) for p in pairs]


@pytest.fixture(scope="module")
def varied(tmp_path_factory):
    d = tmp_path_factory.mktemp("varied")
    with (d / "pairs.jsonl").open("w") as f:
        for r in _records(8, seed=2):
            f.write(json.dumps(r) + "\n")
    return d / "pairs.jsonl"


def _train(model_dir, data, out, **kw):
    from safetensors.torch import load_file

    from trainer.config import TrainConfig
    from trainer.train import train

    cfg = TrainConfig(**{**dict(objective="sr-dpo", model=str(model_dir), data=str(data), output=str(out),
                                batch_size=4, micro_batch_size=2, learning_rate=1e-4, warmup_steps=0, max_steps=2,
                                ref_cache_dir=str(out) + "-cache", progress=False, device="cpu", lam=1.0,
                                max_length=48, max_prompt_length=20), **kw})
    final = train(cfg)
    assert "srdpo_pairs" not in (final / "config.json").read_text()  # a checkpoint loads without this project
    return load_file(str(final / "model.safetensors")), json.loads((out / "run_info.json").read_text())


def test_training_with_packing_on_and_off_and_token_budgets_agree(tiny_model_dir, varied, tmp_path):
    """The same weights after two Sr-DPO steps (reference pass, gradient pass and p ⊕ x pass all packed or
    all padded); micro-batches by token budget give the same step as by pair count. (A small learning
    rate: RMSprop's first steps are ±10·lr whatever the gradient's size, so the rounding noise of a
    near-zero gradient would show as lr-sized differences.)"""
    on, info_on = _train(tiny_model_dir, varied, tmp_path / "on")
    off, info_off = _train(tiny_model_dir, varied, tmp_path / "off", packing=False)
    tokens, _ = _train(tiny_model_dir, varied, tmp_path / "tokens", micro_batch_size=None,
                       max_tokens_per_micro_batch=60)
    assert info_on["packing"] and not info_off["packing"] and info_on["ref_cache"] != info_off["ref_cache"]
    start = _load(tiny_model_dir)[0].state_dict()
    assert all(not torch.allclose(on[k], start[k]) for k in ("model.layers.0.self_attn.q_proj.weight",
                                                            "lm_head.weight"))
    for k in on:
        torch.testing.assert_close(on[k], off[k], atol=1e-5, rtol=1e-4, msg=k)
        torch.testing.assert_close(on[k], tokens[k], atol=1e-5, rtol=1e-4, msg=k)


def _random_pairs(rng: random.Random, n: int, longest: int = 300) -> list[TokenizedPair]:
    k = lambda: rng.randint(1, longest)  # noqa: E731
    return [TokenizedPair(i, [1] * k(), [2] * k(), [3] * k(), [4] * (k() + 40)) for i in range(n)]


def test_flex_block_mask_classifies_blocks_as_create_block_mask():
    """The BlockMask built from the pair layout (linear in T, no [T, T] mask) lists the same full and partial
    key blocks for every query block as torch's create_block_mask, which evaluates the mask everywhere."""
    from torch.nn.attention.flex_attention import create_block_mask

    from trainer.packing import block_mask, mask_mod_of

    rng = random.Random(0)
    for trial in range(12):
        b = pack(_random_pairs(rng, rng.randint(1, 10)), refine=trial % 2 == 1, multiple=128, buckets=trial % 3 == 0,
                 row_tokens=rng.choice([None, 900]))
        doc, role = b["doc"], b["role"]
        R, T = doc.shape
        ours = block_mask(doc, role)
        ref = create_block_mask(mask_mod_of(doc, role), R, None, T, T, device="cpu")
        assert torch.equal(ours.kv_num_blocks, ref.kv_num_blocks), trial
        assert torch.equal(ours.full_kv_num_blocks, ref.full_kv_num_blocks), trial
        assert torch.equal(ours.to_dense(), ref.to_dense()), trial  # which blocks are listed, full or partial
        # and inside the listed blocks the mask_mod gives dense_mask
        assert torch.equal(ours.mask_mod(0, 0, torch.arange(T)[:, None], torch.arange(T)[None, :]),
                           dense_mask(doc, role)[0, 0])


def test_bucketed_rows_give_few_shapes():
    """Compiled kernels (FlexAttention's, the body under --compile) compile once per shape: over a run of
    8-pair micro-batches of long-tailed lengths, bucketed rows give a few shapes, where rows cut to fit
    give one for most batches."""
    from trainer.packing import bucket

    assert [bucket(n) for n in range(1, 14)] == [1, 2, 3, 4, 6, 6, 8, 8, 12, 12, 12, 12, 16]
    assert bucket(129, 128) == 256 and bucket(700, 128) == 768 and bucket(1, 16) == 16
    rng = random.Random(3)
    n = lambda mu: max(8, min(400, round(rng.lognormvariate(mu, 0.9))))  # noqa: E731 (as perf/bench_trainer.py)
    pairs = [TokenizedPair(i, [1] * n(4.5), [2] * n(4.7), [3] * n(4.7)) for i in range(480)]
    batches = [pairs[i:i + 8] for i in range(0, len(pairs), 8)]
    shapes = lambda **kw: {tuple(pack(b, multiple=16, **kw)["input_ids"].shape) for b in batches}  # noqa: E731
    few, many = shapes(buckets=True), shapes()
    assert len(few) <= 12 and len(many) >= 3 * len(few), (len(few), len(many))


@pytest.mark.slow
def test_compiled_packed_training_compiles_a_few_times_and_equals_eager(tiny_model_dir, varied, tmp_path):
    """--compile with packing: dense masks (not the per-pair loop, which would recompile every batch) in
    bucketed shapes, so a run compiles a handful of graphs, and trains as the eager run does."""
    eager, _ = _train(tiny_model_dir, varied, tmp_path / "eager", max_steps=4, batch_size=2, micro_batch_size=None)
    compiled, info = _train(tiny_model_dir, varied, tmp_path / "compiled", max_steps=4, batch_size=2,
                            micro_batch_size=None, compile=True)
    assert info["attention"] == "sdpa" and info["packing"] and info["packing_fallbacks"] == {}
    assert info["packed_shapes"] <= 6 and 0 < info["compiled_graphs"] <= 8, info
    for k in eager:
        torch.testing.assert_close(compiled[k], eager[k], atol=1e-5, rtol=1e-4, msg=k)


def test_a_fall_back_is_counted_in_the_log_and_run_info(tiny_model_dir, varied, tmp_path, monkeypatch):
    import trainer.packing as pk

    _, info = _train(tiny_model_dir, varied, tmp_path / "plain")
    assert info["packing_fallbacks"] == {} and info["attention"] == PAIRS
    assert all(r["fallbacks"] == 0 for r in map(json.loads, (tmp_path / "plain" / "log.jsonl").read_text().splitlines()))
    monkeypatch.setattr(pk, "sliding_window", lambda model: 20)  # as a model whose window the long pairs exceed
    _, info = _train(tiny_model_dir, varied, tmp_path / "window")
    reason = "padded batches: pairs longer than the sliding window (20 tokens)"
    assert list(info["packing_fallbacks"]) == [reason] and info["packing_fallbacks"][reason] > 0
    log = [json.loads(l) for l in (tmp_path / "window" / "log.jsonl").read_text().splitlines()]
    assert log[-1]["fallbacks"] == info["packing_fallbacks"][reason] and log[0]["fallbacks"] > 0
