"""Judge probabilities computed by hand: the whole text per candidate through a plain transformers forward
(no KV cache, no batching, nothing from benchmarks/), summed log-softmax over the candidate's tokens."""

from __future__ import annotations

import math

import torch

VERDICT_PREFIX = {"single": "Rating: [[", "pairwise": "Verdict: [["}
RATINGS = [str(k) for k in range(1, 11)]


def reference_probs(model_dir, messages, kind, labels):
    """Normalised probabilities of ``labels`` after the chat-rendered ``messages`` and the verdict prefix."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    context = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False) + VERDICT_PREFIX[kind]
    n_ctx = len(tok(context, add_special_tokens=False).input_ids)
    scores = []
    for label in labels:
        ids = tok(context + label + "]]", add_special_tokens=False).input_ids
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0].double()
        lp = torch.log_softmax(logits, -1)
        scores.append(sum(lp[t - 1, ids[t]].item() for t in range(n_ctx, len(ids))))
    z = max(scores) + math.log(sum(math.exp(x - max(scores)) for x in scores))
    return [math.exp(x - z) for x in scores]
