"""The objective registry: the only place that knows what an objective is.

An objective says what every stage needs to know of it: its kind (a loss on preference pairs, or the
NLL of the chosen answers: SFT), whether it reads a frozen reference (the reference pass), whether it is
an Sr- objective (it reads Δπ, the policy and the reference on p ⊕ x) and of which base, which training
settings its loss reads, and whether it reads the pairs' quality ratings. The trainer, the reference
pass, `reproduce`, the plan and the analysis read these fields; none compares an objective's name.

Adding an objective is one entry in ``_BASES`` plus its loss in ``trainer/losses.py`` (``LOSSES``); a
margin loss with a reference (``sr=True``) gets its Sr- variant from here, with no code of its own: the
refinement enters as its margin minus λΔπ (docs/method.md#objectives).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from contracts.errors import UserError

PAIRWISE, NLL, NONE = "pairwise", "nll", "none"  # kinds: a loss on pairs; the chosen answers' NLL; not trained


@dataclass(frozen=True)
class Objective:
    name: str  # as written in configs, model ids, models.json and run names
    label: str  # display name in tables and figures
    color: str  # one colour per objective across every figure
    summary: str = ""  # one line for `srdpo-eval train --help` and docs
    kind: str = PAIRWISE
    reference: bool = True  # reads a frozen reference's log-probs (needs the reference pass)
    refine: bool = False  # an Sr- objective: reads Δπ = β·m(p ⊕ x) (needs the p ⊕ x sequences)
    base: str | None = None  # for Sr-X: X (Sr-X with λ = 0 is X)
    settings: tuple[str, ...] = ("beta",)  # the training settings its loss reads (trainer.config.TrainConfig)
    ratings: bool = False  # reads the pair's rating gap (chosen_rating − rejected_rating)
    sr: bool = False  # a margin loss with a reference: it has an Sr- variant (derived below)

    @property
    def trainable(self) -> bool:
        return self.kind != NONE

    @property
    def preference(self) -> bool:
        """Trained on preference pairs (every pairwise objective, with a reference or without)."""
        return self.kind == PAIRWISE


_BASES = (
    Objective("sft", "SFT", "#7f7f7f", "NLL of the chosen answers (the SFT stage)", kind=NLL, reference=False,
              settings=()),
    Objective("dpo", "DPO", "#0072b2", "−log σ(β·m(x))", sr=True),
    Objective("ipo", "IPO", "#009e73", "(m(x) − 1/(2β))²", sr=True),
    Objective("cdpo", "cDPO", "#56b4e9", "DPO with label smoothing ε: −(1−ε)·log σ(β·m) − ε·log σ(−β·m)",
              settings=("beta", "label_smoothing"), sr=True),
    Objective("rdpo", "rDPO", "#e69f00", "robust DPO: [−(1−ε)·log σ(β·m) + ε·log σ(−β·m)] / (1 − 2ε)",
              settings=("beta", "label_smoothing"), sr=True),
    Objective("hinge", "Hinge", "#f0e442", "SLiC hinge: max(0, 1 − β·m(x))", sr=True),
    Objective("odpo", "ODPO", "#8c564b", "DPO with an offset from the ratings: −log σ(β·m − α·log(1 + gap))",
              settings=("beta", "odpo_alpha"), ratings=True, sr=True),
    Objective("simpo", "SimPO", "#17becf", "reference-free: −log σ(β·(ā⁺ − ā⁻) − γ), ā = per-token mean log-prob",
              reference=False, settings=("beta", "simpo_gamma")),
    Objective("orpo", "ORPO", "#bcbd22", "reference-free: NLL(y⁺) − λ_or·log σ(log odds(y⁺) − log odds(y⁻))",
              reference=False, settings=("orpo_lambda",)),
    # a model that was not trained here (the starting point when it is not an SFT model)
    Objective("base", "Base", "#000000", "a model not trained here", kind=NONE, reference=False, settings=()),
)
# The Sr- variants: the paper's two keep their colours; the others take the next of these.
_SR_COLORS = {"dpo": "#d55e00", "ipo": "#cc79a7"}
_MORE_COLORS = ("#9467bd", "#e377c2", "#2ca02c", "#7f3c8d", "#a5aa99", "#11a579")


def _sr(base: Objective, color: str) -> Objective:
    return replace(base, name=f"sr-{base.name}", label=f"Sr-{base.label}", color=color, refine=True, base=base.name,
                   settings=(*base.settings, "lam"), sr=False,
                   summary=f"{base.label} with Δπ: its margin minus λ·Δπ (docs/method.md)")


_SRS = tuple(_sr(b, _SR_COLORS.get(b.name) or _MORE_COLORS[i % len(_MORE_COLORS)])
             for i, b in enumerate(b for b in _BASES if b.sr))
OBJECTIVES: dict[str, Objective] = {o.name: o for o in _BASES[:-1] + _SRS + _BASES[-1:]}
PAPER = ("dpo", "ipo", "sr-dpo", "sr-ipo")  # the paper's four: the default of a reproduce config


# Views of the registry, read when asked (an objective registered later is in them).
def trainable() -> tuple[str, ...]:
    return tuple(o.name for o in OBJECTIVES.values() if o.trainable)


def preference() -> tuple[str, ...]:
    """Trained on pairs (with a reference or without)."""
    return tuple(o.name for o in OBJECTIVES.values() if o.preference)


def refined() -> tuple[str, ...]:
    """The Sr- objectives."""
    return tuple(o.name for o in OBJECTIVES.values() if o.refine)


def sr_pairs() -> tuple[tuple[str, str], ...]:
    """(Sr-X, X) for every Sr- objective."""
    return tuple((o.name, o.base) for o in OBJECTIVES.values() if o.base)


def order() -> tuple[str, ...]:
    """Figure and table order: the NLL objectives, then each base beside its Sr- variant, then the rest."""
    objs = list(OBJECTIVES.values())
    return (*[o.name for o in objs if o.kind == NLL],
            *[n for o in objs if o.preference and not o.base for n in (o.name, *[s.name for s in objs if s.base == o.name])],
            *[o.name for o in objs if o.kind == NONE])


def get(name: str) -> Objective:
    """The registry entry of ``name``; an unknown name is a user error that lists the known ones."""
    try:
        return OBJECTIVES[name]
    except KeyError:
        raise UserError(f"unknown objective {name!r}: use one of {', '.join(trainable())}") from None


def label(name: str) -> str:
    """'Sr-DPO' for 'sr-dpo'; an unknown name is shown as it is."""
    return OBJECTIVES[name].label if name in OBJECTIVES else name


def color(name: str) -> str:
    """The objective's colour (black for an unknown name)."""
    return OBJECTIVES[name].color if name in OBJECTIVES else "#000000"


def needs_refine(name: str) -> bool:
    return get(name).refine


def needs_reference(name: str) -> bool:
    return get(name).reference


def sft() -> str:
    """The objective of an SFT stage: the NLL of the chosen answers."""
    return next(o.name for o in OBJECTIVES.values() if o.kind == NLL)


def help_lines() -> list[str]:
    """One line per trainable objective, for `srdpo-eval train --help`."""
    return [f"{o.name:9s} {o.summary}" for o in OBJECTIVES.values() if o.trainable]
