"""The objective registry: every objective the project knows, with what the other stages need to know.

Adding an objective is one entry here plus its loss in ``trainer/losses.py`` (``LOSSES``). The
equations are in docs/method.md#objectives.
"""

from __future__ import annotations

from dataclasses import dataclass

from contracts.errors import UserError


@dataclass(frozen=True)
class Objective:
    name: str  # as written in configs, model ids, models.json and run names
    label: str  # display name in tables and figures
    color: str  # one colour per objective across every figure (Okabe–Ito, colour-blind safe)
    trainable: bool = True  # `srdpo-eval train --objective NAME`
    preference: bool = True  # trained on pairs against a frozen reference (needs reference log-probs)
    refine: bool = False  # uses Δπ = β·m(p ⊕ x): needs the p ⊕ x sequences
    base: str | None = None  # for Sr-X: X (Sr-X with λ = 0 is X)


_ALL = (
    Objective("sft", "SFT", "#7f7f7f", preference=False),
    Objective("dpo", "DPO", "#0072b2"),
    Objective("ipo", "IPO", "#009e73"),
    Objective("sr-dpo", "Sr-DPO", "#d55e00", refine=True, base="dpo"),
    Objective("sr-ipo", "Sr-IPO", "#cc79a7", refine=True, base="ipo"),
    # a model that was not trained here (the starting point when it is not an SFT model)
    Objective("base", "Base", "#000000", trainable=False, preference=False),
)
OBJECTIVES: dict[str, Objective] = {o.name: o for o in _ALL}

TRAINABLE = tuple(o.name for o in _ALL if o.trainable)  # sft dpo ipo sr-dpo sr-ipo
PREFERENCE = tuple(o.name for o in _ALL if o.preference)  # dpo ipo sr-dpo sr-ipo
REFINED = tuple(o.name for o in _ALL if o.refine)  # sr-dpo sr-ipo
# (Sr-X, X): the paper's head-to-head comparisons of an Sr objective with its base
SR_PAIRS = tuple((o.name, o.base) for o in _ALL if o.base)
# Figure/table order: the start, then each base next to its Sr variant
ORDER = ("sft", *[n for x in PREFERENCE if not OBJECTIVES[x].base for n in
                  (x, *[o.name for o in _ALL if o.base == x])], "base")


def get(name: str) -> Objective:
    """The registry entry of ``name``; an unknown name is a user error that lists the known ones."""
    try:
        return OBJECTIVES[name]
    except KeyError:
        raise UserError(f"unknown objective {name!r}: use one of {', '.join(TRAINABLE)}") from None


def label(name: str) -> str:
    """'Sr-DPO' for 'sr-dpo'; an unknown name is shown as it is."""
    return OBJECTIVES[name].label if name in OBJECTIVES else name


def color(name: str) -> str:
    """The objective's colour (black for an unknown name)."""
    return OBJECTIVES[name].color if name in OBJECTIVES else "#000000"


def needs_refine(name: str) -> bool:
    return get(name).refine
