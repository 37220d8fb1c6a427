"""The four preference objectives of the paper (docs/method.md#objectives), as pure functions.

Every function takes per-sequence log-probabilities — shape ``[B]``, already reduced over the
completion tokens (sums by default, the paper; per-token means are the caller's option, TRL's IPO) —
and returns per-example values. Nothing here touches a model, so each equation can be checked by hand.

Notation: ``pc``/``pr`` policy log π(y⁺|x), log π(y⁻|x); ``rc``/``rr`` the frozen reference's; the
``*_p`` variants are the same quantities on the prompt-augmented query p ⊕ x.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from contracts import objectives


def margin(pc: Tensor, pr: Tensor, rc: Tensor, rr: Tensor) -> Tensor:
    """m(c) = [log π(y⁺|c) − log π_ref(y⁺|c)] − [log π(y⁻|c) − log π_ref(y⁻|c)]."""
    return (pc - rc) - (pr - rr)


def refinement(pc_p: Tensor, pr_p: Tensor, rc_p: Tensor, rr_p: Tensor, beta: float) -> Tensor:
    """Δπ(y⁻, y⁺; x) = β · m(p ⊕ x), under stop-gradient: it never receives gradient."""
    return (beta * margin(pc_p, pr_p, rc_p, rr_p)).detach()


def dpo_loss(m: Tensor, beta: float) -> Tensor:
    """DPO: L = −log σ(β·m(x))."""
    return -F.logsigmoid(beta * m)


def ipo_loss(m: Tensor, beta: float) -> Tensor:
    """IPO: L = (m(x) − 1/(2β))²  (no β in front of the margin)."""
    return (m - 1.0 / (2.0 * beta)) ** 2


def sr_dpo_loss(m: Tensor, delta: Tensor, beta: float, lam: float) -> Tensor:
    """Sr-DPO: L = −log σ(β·m(x) − λ·⊥[Δπ]).

    Gradient −β·σ(λΔπ − β·m(x))·∇m(x): pairs that the prompted policy already separates weigh more.
    """
    return -F.logsigmoid(beta * m - lam * delta.detach())


def sr_ipo_loss(m: Tensor, delta: Tensor, beta: float, lam: float) -> Tensor:
    """Sr-IPO: L = (m(x) − λ·⊥[Δπ] − 1/(2β))²."""
    return (m - lam * delta.detach() - 1.0 / (2.0 * beta)) ** 2


# The implementation of each preference objective of contracts.objectives: (m, Δπ, β, λ) → losses.
LOSSES = {
    "dpo": lambda m, delta, beta, lam: dpo_loss(m, beta),
    "ipo": lambda m, delta, beta, lam: ipo_loss(m, beta),
    "sr-dpo": sr_dpo_loss,
    "sr-ipo": sr_ipo_loss,
}
assert set(LOSSES) == set(objectives.PREFERENCE), "every preference objective needs its loss here"


@dataclass
class PreferenceLoss:
    """Per-example outputs of :func:`preference_loss`; everything but ``losses`` is detached."""

    losses: Tensor  # [B], carries gradient
    chosen_rewards: Tensor  # β·(log π(y⁺|x) − log π_ref(y⁺|x)), TRL's rewards/chosen
    rejected_rewards: Tensor  # β·(log π(y⁻|x) − log π_ref(y⁻|x)), TRL's rewards/rejected
    margins: Tensor  # m(x), in nats (no β)
    delta: Tensor | None  # Δπ for Sr objectives, else None


def preference_loss(
    objective: str,
    pc: Tensor,
    pr: Tensor,
    rc: Tensor,
    rr: Tensor,
    *,
    beta: float,
    lam: float = 0.0,
    pc_p: Tensor | None = None,
    pr_p: Tensor | None = None,
    rc_p: Tensor | None = None,
    rr_p: Tensor | None = None,
) -> PreferenceLoss:
    """Dispatch on ``objective`` (a name of :data:`LOSSES`); Sr objectives need the ``*_p`` inputs."""
    if objective not in LOSSES:
        raise ValueError(f"unknown objective {objective!r}; expected one of {', '.join(LOSSES)}")
    if beta <= 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    # Sequence log-probs are sums of hundreds of terms: in bf16 they lose whole nats, so the
    # objective is always evaluated in (at least) fp32.
    up = lambda x: None if x is None else (x.float() if x.dtype in (torch.bfloat16, torch.float16) else x)
    pc, pr, rc, rr, pc_p, pr_p, rc_p, rr_p = map(up, (pc, pr, rc, rr, pc_p, pr_p, rc_p, rr_p))
    m = margin(pc, pr, rc, rr)
    delta = None
    if objectives.needs_refine(objective):
        if any(t is None for t in (pc_p, pr_p, rc_p, rr_p)):
            raise ValueError(f"{objective} needs the log-probs on p ⊕ x (pc_p, pr_p, rc_p, rr_p)")
        delta = refinement(pc_p, pr_p, rc_p, rr_p, beta)
    losses = LOSSES[objective](m, delta, beta, lam)
    return PreferenceLoss(
        losses=losses,
        chosen_rewards=(beta * (pc - rc)).detach(),
        rejected_rewards=(beta * (pr - rr)).detach(),
        margins=m.detach(),
        delta=delta,
    )
