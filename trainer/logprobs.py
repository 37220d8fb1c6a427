"""Completion log-probabilities without materialising the [N, T, V] logits.

The transformer body runs once to hidden states; the LM head is applied only at the positions whose
next token is a completion token (hidden state t predicts token t+1), in chunks of ``chunk_size``
tokens, each with an fp32 log-softmax under activation checkpointing, so at most one chunk of
[chunk, V] logits exists at a time, in the forward and in the backward. With a 262k vocabulary and
512-token sequences this is the difference between gigabytes and megabytes.

Being the forward of an ``nn.Module`` that wraps the model, it is what DDP/FSDP (accelerate) wrap,
so gradients synchronise as usual.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

# Final-logit transforms some architectures apply after the LM head. Softcapping is reproduced here;
# the others are refused rather than silently ignored.
_UNSUPPORTED_LOGIT_TRANSFORMS = ("logit_scale", "logits_scaling", "output_multiplier_scale", "logits_soft_cap")


def _text_config(model):
    cfg = model.config
    return cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg


def _body(model) -> nn.Module:
    """The transformer without its LM head (``model.model``, ``model.gpt_neox``, …)."""
    prefix = getattr(model, "base_model_prefix", None)
    body = getattr(model, prefix, None) if prefix else None
    if body is None or body is model:
        raise ValueError(f"cannot find the transformer body of {type(model).__name__}")
    return body


def _head_logps(hidden: Tensor, targets: Tensor, weight: Tensor, bias: Tensor | None, softcap: float | None):
    logits = F.linear(hidden, weight, bias).float()  # fp32 for the softmax: bf16 loses nats per sequence
    if softcap:
        logits = torch.tanh(logits / softcap) * softcap
    return logits.log_softmax(-1).gather(-1, targets[:, None]).squeeze(-1)


class CompletionLogps(nn.Module):
    """Sequence log-probs of the completion tokens of a batch; wraps a Hugging Face causal LM."""

    def __init__(self, model: nn.Module, chunk_size: int = 1024):
        super().__init__()
        self.model = model
        self.chunk_size = chunk_size
        cfg = _text_config(model)
        for name in _UNSUPPORTED_LOGIT_TRANSFORMS:
            value = getattr(cfg, name, None)
            if value not in (None, 1, 1.0):
                raise NotImplementedError(
                    f"{type(model).__name__}: final-logit transform {name}={value} is not reproduced by "
                    "CompletionLogps; add it here (and to the verification) before training this model"
                )
        self.softcap = getattr(cfg, "final_logit_softcapping", None) or None
        _body(model)  # fail now, not at the first batch

    def forward(self, input_ids: Tensor, attention_mask: Tensor, loss_mask: Tensor, *,
                reduce: str = "sum") -> tuple[Tensor, Tensor]:
        """Return ``(logps [N], n_tokens [N])``: per-row sum (or mean) of log p(token) over ``loss_mask``."""
        if reduce not in ("sum", "mean"):
            raise ValueError(f"reduce must be 'sum' or 'mean', got {reduce!r}")
        hidden = _body(self.model)(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)[0]
        sel = loss_mask[:, 1:].bool()  # targets: token t+1 predicted from hidden state t
        rows = sel.nonzero()[:, 0]
        h = hidden[:, :-1][sel]
        targets = input_ids[:, 1:][sel]
        head = self.model.get_output_embeddings()
        weight, bias = head.weight, getattr(head, "bias", None)
        parts = []
        for s in range(0, h.shape[0], self.chunk_size):
            args = (h[s:s + self.chunk_size], targets[s:s + self.chunk_size], weight, bias, self.softcap)
            if torch.is_grad_enabled() and h.requires_grad:
                parts.append(checkpoint(_head_logps, *args, use_reentrant=False))
            else:
                parts.append(_head_logps(*args))
        tok = torch.cat(parts) if parts else h.new_zeros(0, dtype=torch.float32)
        logps = torch.zeros(input_ids.shape[0], dtype=tok.dtype, device=tok.device).index_add(0, rows, tok)
        n = sel.sum(1)
        if reduce == "mean":
            logps = logps / n.clamp(min=1)
        return logps, n


def full_logits_logps(model, input_ids: Tensor, attention_mask: Tensor, loss_mask: Tensor, *,
                      reduce: str = "sum") -> tuple[Tensor, Tensor]:
    """The naive way (the model's own full logits, fp32 log-softmax): the reference for checks."""
    logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits
    tok = logits[:, :-1].float().log_softmax(-1).gather(-1, input_ids[:, 1:, None]).squeeze(-1)
    sel = loss_mask[:, 1:].bool()
    logps = (tok * sel).sum(1)
    n = sel.sum(1)
    return (logps / n.clamp(min=1) if reduce == "mean" else logps), n


@torch.no_grad()
def verify_against_full_logits(wrapper: CompletionLogps, input_ids: Tensor, attention_mask: Tensor,
                               loss_mask: Tensor, *, atol: float | None = None, rows: int = 2) -> float:
    """Check the chunked log-probs of the first ``rows`` rows against the model's full logits.

    Catches a final-logit transform this module does not reproduce. Returns the largest per-token
    difference; raises RuntimeError if it exceeds ``atol`` (default 1e-4 in fp32, 2e-2 in half precision).
    """
    sl = slice(0, rows)
    ours, n = wrapper(input_ids[sl], attention_mask[sl], loss_mask[sl], reduce="mean")
    ref, _ = full_logits_logps(wrapper.model, input_ids[sl], attention_mask[sl], loss_mask[sl], reduce="mean")
    if atol is None:
        half = next(wrapper.model.parameters()).dtype != torch.float32 or torch.is_autocast_enabled(input_ids.device.type)
        atol = 2e-2 if half else 1e-4
    diff = (ours.float() - ref.float()).abs().max().item()
    if not diff <= atol:
        raise RuntimeError(
            f"CompletionLogps disagrees with the full-logits log-probs of {type(wrapper.model).__name__} "
            f"by {diff:.3g} nats/token (> {atol}); the model may transform its logits in a way not reproduced"
        )
    return diff
