"""FastChat llm_judge rules: which judge prompt grades which question, how it is filled, how verdicts parse.

Mirrors fastchat/llm_judge (common.py, gen_judgment.py) so that our judgment files mean what FastChat's do:
reference-based prompts for math/reasoning/coding, "-multi-turn" prompts for turn 2, and the same
regexes for ``[[rating]]`` (with the single-bracket fallback) and ``[[A]]``/``[[B]]``/``[[C]]``.
"""

from __future__ import annotations

import ast
import re

# Bump when the way prompts are rendered changes, so cached replies to the old prompts are not reused.
PROMPT_VERSION = "fastchat-llm_judge-v1"

# FastChat's sampling settings for the judge.
TEMPERATURE = 0.0
MAX_TOKENS = 2048

# Categories judged against the GPT-4 reference answer (FastChat's NEED_REF_CATS).
NEED_REF_CATS = ("math", "reasoning", "coding", "arena-hard-200")

_ONE_SCORE = re.compile(r"\[\[(\d+\.?\d*)\]\]")
_ONE_SCORE_BACKUP = re.compile(r"\[(\d+\.?\d*)\]")


def prompt_name(mode: str, category: str, turn: int) -> str:
    """The FastChat judge prompt for a question category and turn (1 or 2) in mode single|pairwise."""
    if mode not in ("single", "pairwise"):
        raise ValueError(f"unknown judge mode {mode!r}: expected single or pairwise")
    math = category in NEED_REF_CATS
    base = {("single", False): "single-v1", ("single", True): "single-math-v1",
            ("pairwise", False): "pair-v2", ("pairwise", True): "pair-math-v1"}[mode, math]
    return base + ("-multi-turn" if turn == 2 else "")


def needs_reference(category: str) -> bool:
    return category in NEED_REF_CATS


def _ref_kwargs(ref: list[str] | None, turn: int) -> dict[str, str]:
    """The reference-answer fields of the math templates (both turns' references for turn 2)."""
    if ref is None:
        return {}
    return {"ref_answer_1": ref[0], **({"ref_answer_2": ref[1]} if turn == 2 else {})}


def render_single(template: str, turns: list[str], answer: list[str], ref: list[str] | None, turn: int) -> str:
    """Fill a single-grading template (FastChat's run_judge_single) for turn 1 or both turns (turn 2)."""
    kw = _ref_kwargs(ref, turn)
    if turn == 2:
        return template.format(question_1=turns[0], question_2=turns[1],
                               answer_1=answer[0], answer_2=answer[1], **kw)
    return template.format(question=turns[0], answer=answer[0], **kw)


def render_pair(template: str, turns: list[str], answer_a: list[str], answer_b: list[str],
                ref: list[str] | None, turn: int) -> str:
    """Fill a pairwise template (FastChat's run_judge_pair); assistant A's answer is ``answer_a``."""
    kw = _ref_kwargs(ref, turn)
    if turn == 2:
        return template.format(question_1=turns[0], question_2=turns[1],
                               answer_a_1=answer_a[0], answer_b_1=answer_b[0],
                               answer_a_2=answer_a[1], answer_b_2=answer_b[1], **kw)
    return template.format(question=turns[0], answer_a=answer_a[0], answer_b=answer_b[0], **kw)


def messages(system_prompt: str, user_prompt: str) -> list[dict[str, str]]:
    """The chat sent to the judge (FastChat sets the prompt's system message, then one user turn)."""
    return [{"role": "system", "content": system_prompt}, {"role": "user", "content": user_prompt}]


def parse_rating(judgment: str) -> float:
    """The ``[[rating]]`` in a single-grading reply (``[rating]`` as fallback); -1 when there is none."""
    match = _ONE_SCORE.search(judgment) or _ONE_SCORE_BACKUP.search(judgment)
    return ast.literal_eval(match.group(1)) if match else -1


def parse_winner(judgment: str) -> str:
    """``A``, ``B``, ``tie`` ([[C]]) or ``error`` from a pairwise reply, checked in FastChat's order."""
    for tag, winner in (("[[A]]", "A"), ("[[B]]", "B"), ("[[C]]", "tie")):
        if tag in judgment:
            return winner
    return "error"
