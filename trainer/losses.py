"""Every objective's loss (docs/method.md#objectives), as a pure function of one pair's terms.

Each loss takes :class:`PairTerms` — per-pair tensors ``[B]``: the policy's log-probs of y⁺ and y⁻ given
x (summed over tokens) and their token counts; where the objective needs them, the frozen reference's on
x, the policy's and the reference's on p ⊕ x, and the pair's rating gap — and :class:`Settings` (β, λ,
ε, γ, ...), and returns per-pair losses. Nothing here touches a model, so each equation can be checked
by hand; ``LOSSES`` maps each name of contracts.objectives to its loss.

A margin loss with a reference is written with a ``shift`` of its margin: its Sr- variant is the same
function with ``shift = λ·Δπ`` (contracts.objectives derives the entry, :func:`sr` the loss), and at
step 0, where π = π_ref and so Δπ = 0, it is its base.

Notation: m(c) = [log π(y⁺|c) − log π_ref(y⁺|c)] − [log π(y⁻|c) − log π_ref(y⁻|c)] with the sequence
log-prob taken as ``reduce`` says (the sum, the paper; or the per-token mean, TRL's IPO); ā = a
sequence's per-token mean log-prob; gap = rating of y⁺ − rating of y⁻.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Callable

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


# The paper's four on the margin itself (the oracle tests check these equations as written).
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


# ------------------------------------------------------------------------------------- the terms


@dataclass
class PairTerms:
    """What a loss may read of B pairs (tensors [B]); ``None`` where the objective does not need it."""

    chosen: Tensor  # log π(y⁺|x), summed over its tokens
    rejected: Tensor  # log π(y⁻|x)
    n_chosen: Tensor  # completion tokens
    n_rejected: Tensor
    reduce: str = "sum"  # the sequence log-prob of m: the sum, or the per-token mean
    ref_chosen: Tensor | None = None  # log π_ref(y⁺|x), already reduced as ``reduce`` (the reference cache)
    ref_rejected: Tensor | None = None
    chosen_p: Tensor | None = None  # log π(y⁺|p ⊕ x), summed (Sr- objectives)
    rejected_p: Tensor | None = None
    ref_chosen_p: Tensor | None = None  # log π_ref(y⁺|p ⊕ x), reduced as ``reduce``
    ref_rejected_p: Tensor | None = None
    rating_gap: Tensor | None = None  # rating of y⁺ − rating of y⁻ (objectives that read ratings)
    token_scale: float = 1.0  # the step's pairs per chosen token: a per-pair mean of x·scale is a token mean

    def __post_init__(self) -> None:
        # sequence log-probs are sums of hundreds of terms: in bf16 they lose whole nats, so every loss is
        # evaluated in (at least) fp32
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, Tensor) and v.dtype in (torch.bfloat16, torch.float16):
                setattr(self, f.name, v.float())

    def seq(self, x: Tensor, n: Tensor) -> Tensor:
        return x if self.reduce == "sum" else x / n.clamp(min=1)

    @property
    def margin(self) -> Tensor:
        """m(x) (nats; no β)."""
        _need(self.ref_chosen, "the reference's log-probs on x")
        return margin(self.seq(self.chosen, self.n_chosen), self.seq(self.rejected, self.n_rejected), self.ref_chosen,
                      self.ref_rejected)

    @property
    def margin_p(self) -> Tensor:
        """m(p ⊕ x), without gradient (Δπ's)."""
        _need(self.chosen_p, "the log-probs on p ⊕ x")
        return margin(self.seq(self.chosen_p, self.n_chosen), self.seq(self.rejected_p, self.n_rejected),
                      self.ref_chosen_p, self.ref_rejected_p).detach()

    def delta(self, beta: float) -> Tensor:
        """Δπ = β·m(p ⊕ x), under stop-gradient."""
        return beta * self.margin_p

    def mean_logps(self) -> tuple[Tensor, Tensor]:
        """(ā⁺, ā⁻): the policy's per-token mean log-probs of y⁺ and y⁻."""
        return self.chosen / self.n_chosen.clamp(min=1), self.rejected / self.n_rejected.clamp(min=1)


def _need(x, what: str) -> None:
    if x is None:
        raise ValueError(f"this objective needs {what}")


@dataclass(frozen=True)
class Settings:
    """The settings losses read (contracts.objectives says which of them each one does)."""

    beta: float = 0.1
    lam: float = 0.0
    label_smoothing: float = 0.1
    simpo_gamma: float = 0.5
    orpo_lambda: float = 0.1
    odpo_alpha: float = 1.0

    @classmethod
    def of(cls, cfg) -> "Settings":
        """The settings of a config that has them (trainer.config.TrainConfig)."""
        return cls(**{f.name: getattr(cfg, f.name) for f in fields(cls)})


# ------------------------------------------------------------------------------------- the losses


def dpo(t: PairTerms, s: Settings, shift: Tensor | float = 0.0) -> Tensor:
    """DPO: −log σ(β·m(x) − shift)."""
    return -F.logsigmoid(s.beta * t.margin - shift)


def ipo(t: PairTerms, s: Settings, shift: Tensor | float = 0.0) -> Tensor:
    """IPO: (m(x) − shift − 1/(2β))²  (Sr-IPO shifts m itself, not β·m)."""
    return (t.margin - shift - 1.0 / (2.0 * s.beta)) ** 2


def cdpo(t: PairTerms, s: Settings, shift: Tensor | float = 0.0) -> Tensor:
    """Conservative DPO (label smoothing ε): −(1−ε)·log σ(z) − ε·log σ(−z), z = β·m(x) − shift."""
    z, e = s.beta * t.margin - shift, s.label_smoothing
    return -(1 - e) * F.logsigmoid(z) - e * F.logsigmoid(-z)


def rdpo(t: PairTerms, s: Settings, shift: Tensor | float = 0.0) -> Tensor:
    """Robust DPO (Chowdhury et al. 2024): [−(1−ε)·log σ(z) + ε·log σ(−z)] / (1 − 2ε), z = β·m(x) − shift."""
    z, e = s.beta * t.margin - shift, s.label_smoothing
    return (-(1 - e) * F.logsigmoid(z) + e * F.logsigmoid(-z)) / (1 - 2 * e)


def hinge(t: PairTerms, s: Settings, shift: Tensor | float = 0.0) -> Tensor:
    """SLiC hinge: max(0, 1 − (β·m(x) − shift))."""
    return torch.relu(1 - (s.beta * t.margin - shift))


def odpo(t: PairTerms, s: Settings, shift: Tensor | float = 0.0) -> Tensor:
    """DPO with an offset (Amini et al. 2024): −log σ(β·m(x) − α·log(1 + gap) − shift); the offset grows
    with how much better the data rates y⁺ (a tie: no offset)."""
    _need(t.rating_gap, "the pairs' ratings")
    return -F.logsigmoid(s.beta * t.margin - s.odpo_alpha * torch.log1p(t.rating_gap.clamp(min=0)) - shift)


def simpo(t: PairTerms, s: Settings) -> Tensor:
    """SimPO (Meng et al. 2024), reference-free: −log σ(β·(ā⁺ − ā⁻) − γ)."""
    a, b = t.mean_logps()
    return -F.logsigmoid(s.beta * (a - b) - s.simpo_gamma)


def orpo(t: PairTerms, s: Settings) -> Tensor:
    """ORPO (Hong et al. 2024), reference-free: NLL(y⁺) − λ_or·log σ(log odds(ā⁺) − log odds(ā⁻)), with
    log odds(a) = a − log(1 − e^a) and the NLL a token mean over the step (as TRL's)."""
    a, b = t.mean_logps()
    log_odds = (a - b) - (_log1mexp(a) - _log1mexp(b))
    return -t.chosen * t.token_scale - s.orpo_lambda * F.logsigmoid(log_odds)


def sft(t: PairTerms, s: Settings) -> Tensor:
    """SFT: the NLL of the chosen answers, a token mean over the step."""
    return -t.chosen * t.token_scale


def _log1mexp(x: Tensor) -> Tensor:
    """log(1 − e^x) for x < 0, stable at both ends."""
    return torch.where(x > -0.6931, torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


def sr(base: Callable) -> Callable:
    """The Sr- variant of a margin loss: its margin shifted by λ·Δπ."""

    def loss(t: PairTerms, s: Settings) -> Tensor:
        return base(t, s, shift=s.lam * t.delta(s.beta))

    loss.__doc__ = f"Sr-: {base.__doc__.splitlines()[0]} with shift = λ·⊥[Δπ]"
    return loss


_BASE_LOSSES = {"sft": sft, "dpo": dpo, "ipo": ipo, "cdpo": cdpo, "rdpo": rdpo, "hinge": hinge, "odpo": odpo,
                "simpo": simpo, "orpo": orpo}
# every trainable objective of contracts.objectives: its own loss, or its base's under sr()
LOSSES: dict[str, Callable[[PairTerms, Settings], Tensor]] = {
    o.name: sr(_BASE_LOSSES[o.base]) if o.refine else _BASE_LOSSES[o.name]
    for o in objectives.OBJECTIVES.values() if o.trainable}
PAPER = objectives.PAPER  # the paper's four (the oracle tests' equations)


# ------------------------------------------------------------------------------------ dispatch


@dataclass
class PreferenceLoss:
    """Per-example outputs of :func:`objective_loss`; everything but ``losses`` is detached."""

    losses: Tensor  # [B], carries gradient
    chosen_rewards: Tensor  # β·(log π(y⁺|x) − log π_ref(y⁺|x)) (TRL's rewards/chosen); reference-free: β·ā⁺
    rejected_rewards: Tensor
    margins: Tensor  # m(x) in nats (no β); reference-free: ā⁺ − ā⁻
    delta: Tensor | None  # Δπ for Sr- objectives, else None


def objective_loss(objective: str, t: PairTerms, s: Settings) -> PreferenceLoss:
    """The loss of ``objective`` (a name of contracts.objectives) on the terms, with what training logs."""
    o = objectives.get(objective)
    if s.beta <= 0:
        raise ValueError(f"beta must be > 0, got {s.beta}")
    if o.refine and t.chosen_p is None:
        raise ValueError(f"{objective} needs the log-probs on p ⊕ x (pc_p, pr_p, rc_p, rr_p)")
    losses = LOSSES[objective](t, s)
    if o.reference:
        pc, pr = t.seq(t.chosen, t.n_chosen), t.seq(t.rejected, t.n_rejected)
        rc, rr = (s.beta * (pc - t.ref_chosen)).detach(), (s.beta * (pr - t.ref_rejected)).detach()
        m = t.margin.detach()
    else:
        a, b = (x.detach() for x in t.mean_logps())
        rc, rr, m = s.beta * a, s.beta * b, a - b
    return PreferenceLoss(losses, rc, rr, m, t.delta(s.beta) if o.refine else None)


def preference_loss(objective: str, pc: Tensor, pr: Tensor, rc: Tensor, rr: Tensor, *, beta: float,
                    lam: float = 0.0, pc_p: Tensor | None = None, pr_p: Tensor | None = None,
                    rc_p: Tensor | None = None, rr_p: Tensor | None = None, **settings) -> PreferenceLoss:
    """A reference-based margin objective on per-sequence log-probs as they enter m (sums by default, or
    per-token means if the caller took them so): :func:`objective_loss` without token counts."""
    if objective not in LOSSES:
        raise ValueError(f"unknown objective {objective!r}; expected one of {', '.join(LOSSES)}")
    ones = torch.ones_like(pc)
    t = PairTerms(pc, pr, ones, ones, "sum", rc, rr, pc_p, pr_p, rc_p, rr_p)
    return objective_loss(objective, t, Settings(beta=beta, lam=lam, **settings))
