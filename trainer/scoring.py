"""Per-pair sequence log-probs of a model on x and on p ⊕ x (no gradient): reference terms, Δπ analysis."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import Tensor
from contracts.progress import bar

from trainer.data import TokenizedPair
from trainer.logprobs import CompletionLogps
from trainer.packing import PairBatcher, micro_batches


@dataclass
class PairLogps:
    """float64 CPU tensors [N] in the order of the pairs; ``refine_*`` None when not requested."""

    chosen: Tensor
    rejected: Tensor
    refine_chosen: Tensor | None
    refine_rejected: Tensor | None
    n_chosen: Tensor  # completion tokens scored (the same on x and p ⊕ x)
    n_rejected: Tensor

    def select(self, idx: list[int] | Tensor) -> "PairLogps":
        idx = torch.as_tensor(idx, dtype=torch.long)
        pick = lambda t: None if t is None else t[idx]
        return PairLogps(*(pick(getattr(self, k)) for k in
                           ("chosen", "rejected", "refine_chosen", "refine_rejected", "n_chosen", "n_rejected")))


@torch.no_grad()
def pair_logps(model, pairs: list[TokenizedPair], *, pad_id: int, batch_size: int = 8, reduce: str = "sum",
               refine: bool = True, device=None, progress: bool = True, chunk_size: int = 1024,
               autocast_dtype: torch.dtype | None = None, packing: bool = True, verify: bool = True) -> PairLogps:
    """Log π(y⁺|x), log π(y⁻|x) (and on p ⊕ x if ``refine``) for every pair, summed or averaged per token.

    ``model`` is a Hugging Face causal LM or a :class:`CompletionLogps`. ``batch_size`` pairs per forward,
    length-sorted; results come back in the order of ``pairs``. ``packing``: each pair as one sequence
    [x, y⁺, y⁻] (trainer/packing.py) where that is exact for the model (checked on a few pairs first
    if ``verify``), else padded batches. ``autocast_dtype`` runs the forward under autocast (e.g. bf16,
    to match a mixed-precision training run).
    """
    wrapper = model if isinstance(model, CompletionLogps) else CompletionLogps(model, chunk_size)
    was_training = wrapper.training
    wrapper.eval()
    device = torch.device(device) if device is not None else next(wrapper.parameters()).device
    batcher = PairBatcher(wrapper.model, packing=packing, pad_id=pad_id, device=device)
    N = len(pairs)
    out = {k: torch.zeros(N, dtype=torch.float64) for k in ("chosen", "rejected", "refine_chosen", "refine_rejected")}
    n_c, n_r = torch.zeros(N, dtype=torch.long), torch.zeros(N, dtype=torch.long)
    order = sorted(range(N), key=lambda i: -pairs[i].length)
    amp = (torch.autocast(device.type, dtype=autocast_dtype) if autocast_dtype is not None
           else contextlib.nullcontext())
    if verify and pairs:
        with amp:
            batcher.verify(wrapper, pairs)
    for idx in bar(micro_batches(pairs, order, max_pairs=batch_size), desc="log-probs", enabled=progress,
                    unit="batch"):
        batch = [pairs[i] for i in idx]
        B = len(idx)
        with amp:
            lp, n = wrapper(**batcher(batch), reduce=reduce)
        lp = lp.double().cpu()
        out["chosen"][idx], out["rejected"][idx] = lp[:B], lp[B:]
        n_c[idx], n_r[idx] = n[:B].cpu(), n[B:].cpu()
        if refine:
            with amp:
                lp, _ = wrapper(**batcher(batch, refine=True), reduce=reduce)
            lp = lp.double().cpu()
            out["refine_chosen"][idx], out["refine_rejected"][idx] = lp[:B], lp[B:]
    wrapper.train(was_training)
    return PairLogps(out["chosen"], out["rejected"], out["refine_chosen"] if refine else None,
                     out["refine_rejected"] if refine else None, n_c, n_r)
