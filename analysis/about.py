"""The report's first paragraph: what the run is, read from its stored results, and which of its numbers
carry signal at that scale.

A run is "toy scale" when any of these holds: a local judge graded it (its records carry the local
judge's probability fields), the final models saw fewer than ``PAPER_SCALE_PAIRS`` training pairs, or
fewer questions of a bench were judged than it has. The paper trains on the whole of HH-RLHF
(~160k pairs) or UltraFeedback (~61k) and judges all 80 questions with GPT-4.
"""

from __future__ import annotations

from analysis import style
from analysis.inputs import Inputs
from contracts.benches import get_bench
from contracts.tables import PAIR_CALIBRATED, SINGLE_CALIBRATED

PAPER_SCALE_PAIRS = 10_000  # well under either paper dataset, far above a pipeline check


def _scale(inputs: Inputs) -> dict:
    """Pairs seen, steps, judges (and whether local), questions judged: what the stored results say."""
    pairs = [int(tr.log["pairs_seen"].max()) for tr in inputs.train.values() if tr.log["pairs_seen"].notna().any()]
    steps = [int(tr.log["step"].max()) for tr in inputs.train.values() if "step" in tr.log]
    judges, local, questions, same, compared = set(), False, {}, 0, 0
    for kind, fields in (("pair", PAIR_CALIBRATED), ("single", SINGLE_CALIBRATED)):
        for (bench, judge), df in getattr(inputs, kind).items():
            judges.add(judge)
            local |= any(f in df.columns for f in fields)
            questions.setdefault(bench, set()).update(df["question_id"])
            if kind == "pair" and {"g1_user_prompt", "g2_user_prompt"} <= set(df.columns):
                # both orders showed the same prompt: the two models wrote the same answers
                same += int((df["g1_user_prompt"] == df["g2_user_prompt"]).sum())
                compared += len(df)
    return {"pairs": max(pairs) if pairs else None, "steps": max(steps) if steps else None,
            "objectives": sorted({tr.objective for tr in inputs.train.values()}), "judges": sorted(judges),
            "local": local, "questions": {b: len(q) for b, q in questions.items()}, "same": same,
            "compared": compared}


def about(inputs: Inputs) -> str:
    """Markdown: what this run is and how far its numbers can be read."""
    s = _scale(inputs)
    small_data = s["pairs"] is not None and s["pairs"] < PAPER_SCALE_PAIRS
    few_questions = any(0 < n < get_bench(b).questions for b, n in s["questions"].items())
    trained = (f"{', '.join(map(style.label, s['objectives']))} trained on {s['pairs']:,} preference pairs each ({s['steps']} "
               "optimizer steps)" if s["pairs"] is not None else "no training logs")
    asked = " and ".join(f"{n} {get_bench(b).label} questions" for b, n in s["questions"].items())
    judged = (f"{asked} judged by {', '.join(s['judges'])}"
              + (" (a local model's calibrated probabilities)" if s["local"] else "") if asked else "no judgments")
    if not (s["local"] or small_data or few_questions):
        return (f"**What this run is.** {trained}; {judged}. Read every table with its confidence interval; "
                "the paper's numbers are printed beside ours.")
    return (f"**What this run is: a pipeline check at toy scale, not a reproduction.** {trained}; {judged}. "
            "The paper trains on ~160k (HH-RLHF) or ~61k (UltraFeedback) pairs and judges all 80 questions "
            "with GPT-4. **Numbers with signal here:** Table 4 (how m(x) and Δπ of the trained models follow "
            "the quality ratings of held-out pairs, with bootstrap CIs), Figure 1 (margins and accuracies of "
            "real training steps) and Table 5's `flops_ratio` (counted tokens, not a clock). **Numbers that "
            "need GPT-4 and the paper's scale:** Table 2 and Figure 2 (win rates), the single-grading "
            "scores and Table 3 (leaderboard): here they compare models a few steps apart"
            + (", judged by a small local model" if s["local"] else "")
            + ": read them with their CIs, and expect no difference (a 50% win rate)."
            + (f" {s['same']} of the {s['compared']} pairwise comparisons show two word-for-word identical answers "
               "(`n_identical` in Table 2): a tie whatever the judge." if s["same"] else ""))
