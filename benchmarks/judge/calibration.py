"""The local judge's scores and verdicts from its probabilities (docs/method.md, open choice 17).

A small judge's raw distribution is dominated by its prompt, not by the answers: FastChat's single
prompt shows "Rating: [[5]]" as the format example and a 135M judge copies it (~90% of the mass on 5),
and in pairwise it prefers whichever answer comes first. Both biases are measured from the judge
itself and removed in log-probability space, where a bias that does not depend on the answer is a
constant added to the log-probabilities:

Single grading — contextual calibration (Zhao et al. 2021, "Calibrate Before Use"). The same prompt
is scored once more with every answer under judgment replaced by the content-free answer "N/A"; the
answer's distribution is divided by that prior and renormalised, p̃(k) ∝ p(k | answer) / p(k | N/A).
The score is the expected rating Σ k·p̃(k): 5.5 when the answer moves the judge no more than "N/A"
does, higher when it moves it towards high ratings. The prior depends only on (question, turn, prompt),
so it is one extra call per question and turn, shared by every model.

Pairwise — both answer orders, pooled in log-probability space. Game 1 shows model_1 as A, game 2 as
B. Map each game's letters to models (A→model_1 in game 1, B→model_1 in game 2; C = tie) and take the
normalised geometric mean of the two games' distributions, q(o) ∝ exp(½·(log p_1(o) + log p_2(o))).
If the position of an answer adds a constant to the log-probability of its letter, that constant is
the same for model_1 and model_2 in q and cancels: P(model_1 better) = q(model_1) / (q(model_1) +
q(model_2)) = σ(d), d = ½·[(log p_1(A) − log p_1(B)) − (log p_2(A) − log p_2(B))], is free of it.
(Averaging the probabilities instead would cancel it only to first order and shrink every verdict
towards ½ when the bias is strong.) The tie mass C is left out of P and kept in q.

The verdict is the most probable outcome under q, as FastChat takes the judge's stated verdict: a tie
when q(tie) ≥ q(model_1), q(model_2). In terms of P this is a tie band that the judge sets itself for
each comparison: tie ⇔ |P − ½| ≤ t/(1 − t) − ½, t = q(tie). No constant is fitted to any output. An
extra fixed band (``tie_band``, default 0) also makes |P − ½| ≤ tie_band a tie; at 0 that is only
P = ½ exactly, e.g. two identical answers.

The OpenAI judge never comes here: its records follow FastChat's rules (benchmarks/results.py).
"""

from __future__ import annotations

import math

from benchmarks.judge.local import JudgeScore, expected_rating

CONTENT_FREE = "N/A"  # the answer of the single-grading prior (Zhao et al.'s first content-free input)
TIE_BAND = 0.0  # an extra fixed tie band on |P − ½| (the judge's own tie probability always counts)
PAIR_WINNERS = ("model_1", "model_2", "tie")


def _normalise(logps: list[float]) -> list[float]:
    m = max(logps)
    z = m + math.log(sum(math.exp(x - m) for x in logps))
    return [math.exp(x - z) for x in logps]


def calibrated_probs(score: JudgeScore, prior: JudgeScore) -> list[float]:
    """p̃(k) ∝ p(k | answer) / p(k | content-free answer), over the ratings 1..10."""
    if score.kind != "single" or prior.kind != "single" or score.labels != prior.labels:
        raise ValueError("calibrated_probs: two single-grading scores over the same ratings expected")
    return _normalise([a - b for a, b in zip(score.logprobs, prior.logprobs)])


def single_fields(reply: str, prior_reply: str) -> dict:
    """A single-grading record's judge fields from the answer's and the prior's replies."""
    score, prior = JudgeScore.from_reply(reply), JudgeScore.from_reply(prior_reply)
    cal = calibrated_probs(score, prior)
    rating = expected_rating(cal)
    text = (f"Rating: [[{rating:.2f}]]\n\nLocal judge: expected rating under its distribution over 1-10 divided "
            f"by its distribution for the content-free answer {CONTENT_FREE!r} (contextual calibration); "
            f"uncalibrated expected rating {score.expected_rating:.2f}."
            + (" The prompt was truncated to fit the judge's context." if score.truncated else ""))
    return {"judgment": text, "score": rating, "rating_probs": list(score.probs), "prior_probs": list(prior.probs),
            "calibrated_probs": cal}


def _by_model(score: JudgeScore, model_1_is: str) -> dict[str, float]:
    """One game's log-probabilities keyed by model_1 / model_2 / tie."""
    if score.kind != "pairwise" or model_1_is not in ("A", "B"):
        raise ValueError("a pairwise score and model_1's letter (A or B) expected")
    lp = dict(zip(score.labels, score.logprobs))
    other = "B" if model_1_is == "A" else "A"
    return {"model_1": lp[model_1_is], "model_2": lp[other], "tie": lp["C"]}


def game_preference(score: JudgeScore, model_1_is: str) -> float:
    """P(model_1 better) in one game: its letter's probability over p(A) + p(B)."""
    g = _by_model(score, model_1_is)
    return 1.0 / (1.0 + math.exp(g["model_2"] - g["model_1"]))


def pooled(game_1: JudgeScore, game_2: JudgeScore) -> dict[str, float]:
    """q over model_1 / model_2 / tie: the normalised geometric mean of both games (game 1: model_1 is A)."""
    g1, g2 = _by_model(game_1, "A"), _by_model(game_2, "B")
    return dict(zip(PAIR_WINNERS, _normalise([0.5 * (g1[o] + g2[o]) for o in PAIR_WINNERS])))


def preference(q: dict[str, float]) -> float:
    """P(model_1 better) = q(model_1) / (q(model_1) + q(model_2))."""
    return q["model_1"] / (q["model_1"] + q["model_2"])


def verdict(q: dict[str, float], band: float = TIE_BAND) -> str:
    """The most probable outcome under q; also a tie when |P − ½| ≤ band."""
    if not 0 <= band < 0.5:
        raise ValueError(f"tie band must be in [0, 0.5), got {band}")
    best = max(PAIR_WINNERS, key=lambda o: (q[o], o == "tie"))  # an exact draw with the tie is a tie
    return "tie" if best == "tie" or abs(preference(q) - 0.5) <= band else best


def pair_fields(reply_1: str, reply_2: str, band: float = TIE_BAND) -> dict:
    """A pairwise record's calibrated fields from game 1's and game 2's replies."""
    g1, g2 = JudgeScore.from_reply(reply_1), JudgeScore.from_reply(reply_2)
    q = pooled(g1, g2)
    return {"g1_probs": dict(zip(g1.labels, g1.probs)), "g2_probs": dict(zip(g2.labels, g2.probs)),
            "g1_p_model_1": game_preference(g1, "A"), "g2_p_model_1": game_preference(g2, "B"),
            "p_model_1": preference(q), "p_tie": q["tie"], "tie_band": band, "winner": verdict(q, band)}
