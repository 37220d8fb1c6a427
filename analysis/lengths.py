"""Answer lengths, the best-known confound of judged win rates: per model and bench (words and the model's
tokens), and per judged turn for the length-controlled win rate (analysis/paired.py, AlpacaEval 2's)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.inputs import PRODUCERS, Inputs, seed_of
from analysis.section import Section

ITEM = ["question_id", "turn"]


def length_table(inputs: Inputs) -> pd.DataFrame:
    """Mean answer length per model and bench: words, tokens (the model's own; NaN for answer files written
    before they were counted) and the share of turns that reached the token limit (cut short)."""
    rows = []
    for (bench, model_id), df in inputs.answers.items():
        e = inputs.entry(model_id)
        tokens = df["tokens"].astype(float)
        at_limit = (tokens >= df["max_new_tokens"].astype(float)) if tokens.notna().any() else pd.Series(np.nan)
        rows.append({"bench": bench, "model_id": model_id, "objective": e.objective if e else None,
                     "seed": seed_of(e) if e else None, "pairs_seen": e.pairs_seen if e else None, "turns": len(df),
                     "mean_words": df["words"].mean(), "mean_tokens": tokens.mean(),
                     "at_token_limit": 100.0 * at_limit.mean() if tokens.notna().any() else np.nan})
    return pd.DataFrame(rows, columns=["bench", "model_id", "objective", "seed", "pairs_seen", "turns", "mean_words",
                                       "mean_tokens", "at_token_limit"])


def unit_for(inputs: Inputs, bench: str, models) -> str:
    """'tokens' when every answer of these models has its token count, else 'words'."""
    frames = [inputs.answers.get((bench, m)) for m in models]
    ok = all(f is not None and f["tokens"].notna().all() for f in frames)
    return "tokens" if ok else "words"


def turn_lengths(inputs: Inputs, bench: str, model_id: str, unit: str) -> pd.Series:
    """Each answered turn's length, indexed by (question_id, turn); empty without an answer file."""
    df = inputs.answers.get((bench, model_id))
    if df is None:
        return pd.Series(dtype=float)
    return df.set_index(ITEM)[unit].astype(float)


def with_lengths(inputs: Inputs, bench: str, outcomes: pd.DataFrame, a: str, b: str) -> tuple[pd.DataFrame, str]:
    """The outcomes of A vs B (benchmarks.results.pairwise_outcomes) with each turn's answer lengths
    ``len_a``, ``len_b`` and A's score (1 win, 0.5 tie, 0 loss); turns without lengths are dropped."""
    unit = unit_for(inputs, bench, (a, b))
    df = outcomes.set_index(ITEM)
    df = df.assign(score=df["outcome"].map({"win": 1.0, "tie": 0.5, "loss": 0.0}),
                   len_a=turn_lengths(inputs, bench, a, unit), len_b=turn_lengths(inputs, bench, b, unit))
    return df.dropna(subset=["len_a", "len_b"]), unit


def length_section(inputs: Inputs) -> Section:
    sec = Section("Answer lengths")
    if not inputs.answers:
        sec.notes.append(f"skipped: no answer files; produced by {PRODUCERS['answers']}")
        return sec
    t = length_table(inputs)
    sec.tables["answer_lengths"] = t
    cut = t[t["at_token_limit"] > 0]
    if len(cut):
        sec.notes.append(f"{len(cut)} of {len(t)} models have answers cut at the token limit (max_new_tokens), up to "
                         f"{t['at_token_limit'].max():.0f}% of their turns: a judge sees them unfinished "
                         "(raise bench.max_new_tokens)")
    sec.text = ("Mean answer length per turn, in words and in the model's own tokens (`at_token_limit`: % of turns "
                "that reached max_new_tokens). Judges prefer longer answers; Table 2's `lc_win_rate` is the win rate "
                "at equal length (AlpacaEval 2's length control: a logistic fit of the judge's verdict on "
                "tanh(length difference / its SD), read at zero difference).")
    return sec
