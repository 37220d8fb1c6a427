"""trainer/logprobs.py: chunked completion log-probs equal the naive full-logits ones (values, grads)."""

from __future__ import annotations

import pytest
import torch

from trainer.logprobs import CompletionLogps, full_logits_logps, verify_against_full_logits


def _batch(vocab: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, vocab, (4, 24), generator=g)
    attn = torch.ones_like(ids)
    loss = torch.zeros_like(ids, dtype=torch.bool)
    for row, (prompt, length) in enumerate([(5, 24), (3, 17), (10, 20), (1, 9)]):
        attn[row, length:] = 0
        ids[row, length:] = 0  # right padding
        loss[row, prompt:length] = True
    return ids, attn, loss


def _load(path):
    from trainer.modeling import load_causal_lm

    model, _ = load_causal_lm(path, dtype="fp32", device="cpu", with_tokenizer=False)
    return model


@pytest.mark.parametrize("arch", ["llama", "gpt_neox"])
@pytest.mark.parametrize("reduce", ["sum", "mean"])
def test_chunked_equals_full_logits_values_and_grads(arch, reduce, tiny_model_dir, tiny_neox_dir):
    model = _load(tiny_model_dir if arch == "llama" else tiny_neox_dir)
    model.train()
    ids, attn, loss = _batch(model.config.vocab_size)
    w = CompletionLogps(model, chunk_size=5)  # several chunks, the last one partial
    ours, n = w(ids, attn, loss, reduce=reduce)
    weights = torch.linspace(-1, 1, len(ours))  # a loss that mixes rows with different signs
    (ours * weights).sum().backward()
    g_ours = {k: p.grad.clone() for k, p in model.named_parameters()}
    model.zero_grad()
    ref, n_ref = full_logits_logps(model, ids, attn, loss, reduce=reduce)
    (ref * weights).sum().backward()
    assert n.tolist() == n_ref.tolist() == (loss[:, 1:].sum(1)).tolist()
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)
    for k, p in model.named_parameters():
        torch.testing.assert_close(g_ours[k], p.grad, atol=1e-5, rtol=1e-4, msg=k)
    assert verify_against_full_logits(w, ids, attn, loss) < 1e-4


def test_padding_does_not_change_log_probs(tiny_model_dir):
    model = _load(tiny_model_dir)
    ids, attn, loss = _batch(model.config.vocab_size)
    w = CompletionLogps(model, chunk_size=64)
    with torch.no_grad():
        batched, _ = w(ids, attn, loss)
        alone, _ = w(ids[3:4, :9], attn[3:4, :9], loss[3:4, :9])  # row 3 without its padding
    torch.testing.assert_close(batched[3:4], alone, atol=1e-5, rtol=1e-5)


def _tiny_gemma3(tmp_path, softcap):
    from transformers import AutoModelForCausalLM, Gemma3TextConfig

    cfg = Gemma3TextConfig(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=2, head_dim=8,
                           final_logit_softcapping=softcap, sliding_window=16)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg)
    with torch.no_grad():  # large logits, so that the softcap matters
        model.get_output_embeddings().weight.mul_(50.0)
    return model.float()


def test_gemma_softcapping_reproduced_and_checked(tmp_path):
    model = _tiny_gemma3(tmp_path, softcap=3.0)
    ids, attn, loss = _batch(300)
    w = CompletionLogps(model, chunk_size=7)
    assert w.softcap == 3.0
    ours, _ = w(ids, attn, loss)
    ours.sum().backward()
    g_ours = {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    ref, _ = full_logits_logps(model, ids, attn, loss)
    ref.sum().backward()
    torch.testing.assert_close(ours, ref, atol=1e-4, rtol=1e-5)
    assert g_ours.keys() == {k for k, p in model.named_parameters() if p.grad is not None}
    for k, p in model.named_parameters():  # the softcap's derivative is in the hand-written backward
        if p.grad is not None:
            torch.testing.assert_close(g_ours[k], p.grad, atol=1e-4, rtol=1e-3, msg=k)
    w.softcap = None  # as if the transform were ignored: the self-check must catch it
    with pytest.raises(RuntimeError, match="disagrees with the full-logits"):
        verify_against_full_logits(w, ids, attn, loss)


def test_unsupported_logit_transform_refused(tiny_model_dir):
    model = _load(tiny_model_dir)
    model.config.logit_scale = 0.5
    with pytest.raises(NotImplementedError, match="logit_scale"):
        CompletionLogps(model)


def test_full_logits_never_materialised(tiny_model_dir, monkeypatch):
    """The LM head only ever sees at most chunk_size rows (completion positions), never [N, T, V]."""
    model = _load(tiny_model_dir)
    ids, attn, loss = _batch(model.config.vocab_size)
    head = model.get_output_embeddings()
    seen = []
    import trainer.logprobs as lp

    real = lp.F.linear
    monkeypatch.setattr(lp.F, "linear", 
                        lambda x, w, b=None: (w is head.weight and seen.append(tuple(x.shape))) or real(x, w, b))
    CompletionLogps(model, chunk_size=8)(ids, attn, loss)
    assert seen and all(s[0] <= 8 and len(s) == 2 for s in seen)
    assert sum(s[0] for s in seen) == int(loss[:, 1:].sum())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_bf16_autocast_close_to_fp32_on_cuda(tiny_model_dir):
    model = _load(tiny_model_dir).cuda()
    ids, attn, loss = (t.cuda() for t in _batch(model.config.vocab_size))
    w = CompletionLogps(model, chunk_size=16)
    with torch.no_grad():
        fp32, _ = w(ids, attn, loss, reduce="mean")
        with torch.autocast("cuda", dtype=torch.bfloat16):
            bf16, _ = w(ids, attn, loss, reduce="mean")
            assert verify_against_full_logits(w, ids, attn, loss) < 2e-2
    assert bf16.dtype == torch.float32  # the softmax runs in fp32 even under autocast
    torch.testing.assert_close(bf16, fp32, atol=3e-2, rtol=0)
