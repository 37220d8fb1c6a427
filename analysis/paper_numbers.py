"""The paper's reported numbers, as reference data to print beside ours.

Source: Yu, Wang, Jiao, Zhang, Kwok, "Direct Alignment of Language Models via Quality-Aware
Self-Refinement", arXiv:2405.21040v1, as listed in docs/method.md#paper-numbers. Only numbers the paper's
main text states are here; anything else is absent (never guessed).
"""

from __future__ import annotations

SOURCE = "Yu et al. 2024, arXiv:2405.21040v1 (see docs/method.md#paper-numbers)"

# Table 2 — GPT-4 pairwise judgments, percent win / tie / lose of the first model, per benchmark.
# MT-Bench: both turns (160 outcomes); Vicuna-Bench: 80.
TABLE2 = {
    ("sr-dpo", "dpo"): {"mt_bench": (45.62, 33.76, 20.62), "vicuna_bench": (63.75, 13.75, 22.50)},
    ("sr-ipo", "ipo"): {"mt_bench": (38.75, 25.00, 26.25), "vicuna_bench": (60.00, 8.75, 31.25)},
}

# Table 3 — Open LLM Leaderboard v1, plain mean of six tasks (percent). Per-task values not restated.
TABLE3_AVERAGE = {"sft": 58.14, "dpo": 63.04, "ipo": 61.23, "sr-dpo": 64.48, "sr-ipo": 62.40}

# Table 4 — correlation between the trained model's margin m(x) and the GPT-4 rating difference on 200
# UltraFeedback binarized-preference pairs: (Pearson, Spearman, Kendall).
TABLE4 = {
    "dpo": (0.21, 0.14, 0.10),
    "ipo": (0.11, 0.05, 0.03),
    "sr-dpo": (0.26, 0.20, 0.14),
    "sr-ipo": (0.13, 0.08, 0.05),
}

# Table 5 — training time, GPU-hours (8×A100, FSDP).
TABLE5_GPU_HOURS = {"dpo": 16.8, "sr-dpo": 20.8}


def table2_row(a: str, b: str, bench: str) -> tuple[float, float, float] | None:
    """The paper's (win, tie, lose) percent of ``a`` against ``b`` on ``bench``, or None if not reported."""
    if (a, b) in TABLE2:
        return TABLE2[(a, b)].get(bench)
    if (b, a) in TABLE2 and bench in TABLE2[(b, a)]:
        w, t, l = TABLE2[(b, a)][bench]
        return (l, t, w)
    return None
