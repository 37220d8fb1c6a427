"""Completion log-probabilities without materialising the [N, T, V] logits.

The transformer body runs once to hidden states; the LM head is applied only at the positions whose
next token is a completion token (hidden state t predicts token t+1), in chunks of ``chunk_size``
tokens, each with an fp32 log-softmax; the backward recomputes each chunk (a hand-written autograd
Function, the activation-checkpointing idea without autograd's per-chunk weight gradients), so at
most one chunk of [chunk, V] logits exists at a time, in the forward and in the backward. With a 262k vocabulary and
512-token sequences this is the difference between gigabytes and megabytes.

Being the forward of an ``nn.Module`` that wraps the model, it is what DDP wraps and the root that
FSDP2 shards (trainer/distributed.py), so gradients synchronise as usual. It takes a padded batch
(rows = sequences, ``loss_mask`` marks the targets) or packed rows (trainer/packing.py: ``targets``
says which hidden state predicts which token of which sequence).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# Final-logit transforms some architectures apply after the LM head. Softcapping is reproduced here;
# the others are refused rather than silently ignored.
_UNSUPPORTED_LOGIT_TRANSFORMS = ("logit_scale", "logits_scaling", "output_multiplier", "output_multiplier_scale",
                                 "lm_head_multiplier", "logits_soft_cap")


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


class Targets(NamedTuple):
    """The scored tokens of a batch: the hidden state at flat position ``src`` (row · T + column)
    predicts ``tokens``, which count towards output ``seq`` (of ``n_seq`` outputs)."""

    src: Tensor
    tokens: Tensor
    seq: Tensor
    n_seq: int

    def to(self, device) -> "Targets":
        return Targets(self.src.to(device), self.tokens.to(device), self.seq.to(device), self.n_seq)


def padded_targets(input_ids: Tensor, loss_mask: Tensor) -> Targets:
    """A padded batch's targets: token t+1 of a row where ``loss_mask`` is set, predicted from state t."""
    rows, cols = loss_mask[:, 1:].bool().nonzero(as_tuple=True)
    return Targets(rows * input_ids.shape[1] + cols, input_ids[rows, cols + 1], rows, input_ids.shape[0])


def _cap(z: Tensor, softcap: float | None) -> Tensor:
    return torch.tanh(z / softcap) * softcap if softcap else z


class _ChunkedTokenLogps(torch.autograd.Function):
    """log softmax(h Wᵀ + b)[target] per row, chunk by chunk, with a hand-written backward.

    Forward keeps the inputs and the per-row logsumexp; backward recomputes each chunk's logits and forms
    ∂logp/∂logits = onehot − softmax in place, so the peak is one [chunk, V] fp32 block and the
    LM-head weight gradient accumulates in a single fp32 buffer (autograd through checkpointed
    chunks would hold one weight-sized gradient per chunk). The matmuls run in ``dtype`` (the
    autocast dtype when autocast is on), the softmax in fp32.
    """

    @staticmethod
    def forward(ctx, h, weight, bias, targets, chunk: int, softcap, dtype):
        w = weight.to(dtype)
        b = None if bias is None else bias.to(dtype)
        out = torch.empty(h.shape[0], dtype=torch.float32, device=h.device)
        lse = torch.empty(h.shape[0], dtype=torch.float32, device=h.device)
        for s in range(0, h.shape[0], chunk):
            logits = _cap(F.linear(h[s:s + chunk].to(dtype), w, b).float(), softcap)
            target = logits.gather(-1, targets[s:s + chunk, None]).squeeze(-1)
            m = logits.amax(-1)  # logsumexp in place (about 3x faster than torch's on a CPU)
            lse[s:s + chunk] = logits.sub_(m[:, None]).exp_().sum(-1).log_().add_(m)
            out[s:s + chunk] = target - lse[s:s + chunk]
        ctx.save_for_backward(h, weight, bias, targets, lse)  # lse: the backward need not recompute it
        ctx.chunk, ctx.softcap, ctx.dtype = chunk, softcap, dtype
        return out

    @staticmethod
    def backward(ctx, grad_out):
        h, weight, bias, targets, lse = ctx.saved_tensors
        chunk, softcap, dtype = ctx.chunk, ctx.softcap, ctx.dtype
        w = weight.to(dtype)
        b = None if bias is None else bias.to(dtype)
        need_h, need_w, need_b = ctx.needs_input_grad[:3]
        grad_h = torch.empty_like(h) if need_h else None
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if need_w else None
        grad_b = torch.zeros(bias.shape, dtype=torch.float32, device=bias.device) if need_b else None
        for s in range(0, h.shape[0], chunk):
            hc, g, tc = h[s:s + chunk].to(dtype), grad_out[s:s + chunk].float(), targets[s:s + chunk]
            z = F.linear(hc, w, b).float()
            t = torch.tanh(z / softcap) if softcap else None
            logits = t * softcap if softcap else z
            del z
            # grad_logits = g · (onehot − softmax), built in place in the logits buffer
            gl = logits.sub_(lse[s:s + chunk, None]).exp_().mul_(-g[:, None])
            # + g at each row's target: one index per row, so scatter_ (deterministic on CUDA; scatter_add_
            # is refused under torch.use_deterministic_algorithms)
            gl.scatter_(-1, tc[:, None], gl.gather(-1, tc[:, None]) + g[:, None])
            if softcap:  # d(cap·tanh(z/cap))/dz = 1 − tanh²
                gl.mul_(1 - t * t)
                del t
            gl = gl.to(dtype)
            if need_h:
                grad_h[s:s + chunk] = (gl @ w).to(h.dtype)
            if need_w:
                grad_w += (gl.t() @ hc).float()
            if need_b:
                grad_b += gl.float().sum(0)
        return (grad_h, None if grad_w is None else grad_w.to(weight.dtype),
                None if grad_b is None else grad_b.to(bias.dtype), None, None, None, None)


def param_counts(model) -> dict[str, int]:
    """Parameters that every forwarded token multiplies (the body without its input embedding, a lookup)
    and those that only the target tokens multiply (the LM head, applied where a completion token is
    predicted). Model FLOPs: 2·params per token forward, 6·params forward and backward (analysis/curves.py)."""
    n_body = sum(p.numel() for p in _body(model).parameters()) - model.get_input_embeddings().weight.numel()
    n_head = sum(p.numel() for p in model.get_output_embeddings().parameters())  # tied or not: it multiplies
    return {"params_body": int(n_body), "params_head": int(n_head)}


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

    def forward(self, input_ids: Tensor, attention_mask, loss_mask: Tensor | None = None, *, reduce: str = "sum",
                position_ids: Tensor | None = None, targets: Targets | None = None,
                **body_kwargs) -> tuple[Tensor, Tensor]:
        """Return ``(logps [N], n_tokens [N])``: per sequence, the sum (or mean) of log p(token) over its targets.

        Padded batch: the N sequences are the rows, the targets the tokens under ``loss_mask``. Packed rows:
        ``targets`` as trainer.packing builds them, with its ``attention_mask`` and ``position_ids``;
        ``body_kwargs`` go to the model's attention (trainer.packing's ``pair_spans``).
        """
        if reduce not in ("sum", "mean"):
            raise ValueError(f"reduce must be 'sum' or 'mean', got {reduce!r}")
        if targets is None:
            targets = padded_targets(input_ids, loss_mask)
        pos = {} if position_ids is None else {"position_ids": position_ids}
        hidden = _body(self.model)(input_ids=input_ids, attention_mask=attention_mask, use_cache=False, **pos,
                                   **body_kwargs)[0]
        h = hidden.flatten(0, 1).index_select(0, targets.src)
        head = self.model.get_output_embeddings()
        weight, bias = head.weight, getattr(head, "bias", None)
        dev = input_ids.device.type
        dtype = torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else weight.dtype
        # at most chunk_size tokens, and at most 2^26 logits (256 MB in fp32) per chunk for big vocabularies
        chunk = min(self.chunk_size, max(64, (1 << 26) // weight.shape[0]))
        tok = _ChunkedTokenLogps.apply(h, weight, bias, targets.tokens, chunk, self.softcap, dtype)
        logps = torch.zeros(targets.n_seq, dtype=tok.dtype, device=tok.device).index_add(0, targets.seq, tok)
        n = torch.bincount(targets.seq, minlength=targets.n_seq)
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
    from trainer.distributed import unsharded

    sl = slice(0, rows)
    ours, n = wrapper(input_ids[sl], attention_mask[sl], loss_mask[sl], reduce="mean")
    with unsharded(wrapper):  # under FSDP the Hugging Face model is called outside the root's forward
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
