"""Columns and fields of every table or record one stage writes and another reads.

The writer builds its rows from these names and the reader checks for them, so a renamed column
fails at once on both sides instead of leaving a table blank.
"""

from __future__ import annotations

from contracts.benches import LEADERBOARD_TASKS

# leaderboard/scores.csv (benchmarks/leaderboard.py → analysis/leaderboard.py): scores in percent,
# one row per model; "average" is the plain mean of the six tasks, only for complete rows.
SCORES_INDEX = "model_id"
SCORES_AVERAGE = "average"
SCORES_COLUMNS = (SCORES_INDEX, *(t.name for t in LEADERBOARD_TASKS), SCORES_AVERAGE)

# delta/<model_id>.csv (benchmarks/delta.py → analysis/correlation.py): one row per preference pair.
DELTA_COLUMNS = (
    "id", "model_id", "delta", "margin", "reward_margin", "margin_p", "chosen_tokens", "rejected_tokens",
    "length_diff", "chosen_rating", "rejected_rating", "rating_diff", "logp_chosen", "logp_rejected",
    "ref_logp_chosen", "ref_logp_rejected", "logp_p_chosen", "logp_p_rejected", "ref_logp_p_chosen",
    "ref_logp_p_rejected", "beta", "reduce", "prompt_truncated", "completion_truncated",
)
DELTA_REQUIRED = ("id", "model_id", "delta", "margin", "chosen_rating", "rejected_rating")

# FastChat judgment records (<bench>/model_judgment/<judge>_{single,pair}.jsonl).
SINGLE_KEY = ("question_id", "model", "turn")  # one record per key
SINGLE_FIELDS = (*SINGLE_KEY, "score")
PAIR_KEY = ("question_id", "model_1", "model_2", "turn")  # A vs B and B vs A are one key
PAIR_FIELDS = (*PAIR_KEY, "g1_winner", "g2_winner")
WINNERS = ("model_1", "model_2", "tie", "error")

# FastChat answer records (<bench>/model_answer/<model_id>.jsonl).
ANSWER_FIELDS = ("question_id", "answer_id", "model_id", "choices", "tstamp")

# train/<run>/log.jsonl: one row per optimizer step (trainer/train.py → analysis/curves.py).
LOG_FIELDS = ("step", "pairs_seen", "loss", "lr", "grad_norm", "rewards/chosen", "rewards/rejected",
              "rewards/margins", "rewards/accuracies", "logps/chosen", "logps/rejected", "margin", "accuracy",
              "margin_p", "accuracy_p", "delta/mean", "delta/std", "step_time_s", "elapsed_s")
