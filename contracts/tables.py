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
    "precision",  # how the models ran (trainer.modeling.Precision.key): a table never mixes CPU and GPU rows
)
DELTA_REQUIRED = ("id", "model_id", "delta", "margin", "chosen_rating", "rejected_rating")

# FastChat judgment records (<bench>/model_judgment/<judge>_{single,pair}.jsonl).
SINGLE_KEY = ("question_id", "model", "turn")  # one record per key
SINGLE_FIELDS = (*SINGLE_KEY, "score")
PAIR_KEY = ("question_id", "model_1", "model_2", "turn")  # A vs B and B vs A are one key
PAIR_FIELDS = (*PAIR_KEY, "g1_winner", "g2_winner")
WINNERS = ("model_1", "model_2", "tie", "error")
# A local judge's extra fields (benchmarks/judge/calibration.py → benchmarks/results.py). Single grading:
# the distributions over 1-10 of the answer, of the content-free prior and calibrated ("score" is the
# expected rating under the calibrated one). Pairwise: P(model_1 better) over both orders, the pooled tie
# probability and the verdict "winner" (model_1 / model_2 / tie), which replaces FastChat's tie rule.
SINGLE_CALIBRATED = ("rating_probs", "prior_probs", "calibrated_probs")
PAIR_CALIBRATED = ("g1_probs", "g2_probs", "g1_p_model_1", "g2_p_model_1", "p_model_1", "p_tie", "tie_band",
                   "winner")

# FastChat answer records (<bench>/model_answer/<model_id>.jsonl).
ANSWER_FIELDS = ("question_id", "answer_id", "model_id", "choices", "tstamp")

# train/<run>/log.jsonl: one row per optimizer step (trainer/train.py → analysis/curves.py). The token
# counts are of the whole step (all processes): non-padding tokens forwarded and target tokens (those
# whose log-prob goes through the LM head), with gradient (x) and without (p ⊕ x, Sr objectives only);
# "fallbacks": how many times so far a batch did not get the packing or attention asked for (run_info.json
# names the reasons: trainer.packing.PairBatcher.fallbacks).
TOKEN_FIELDS = ("tokens/grad", "targets/grad", "tokens/no_grad", "targets/no_grad")
LOG_FIELDS = ("step", "pairs_seen", "loss", "lr", "grad_norm", "rewards/chosen", "rewards/rejected",
              "rewards/margins", "rewards/accuracies", "logps/chosen", "logps/rejected", "margin", "accuracy",
              "margin_p", "accuracy_p", "delta/mean", "delta/std", *TOKEN_FIELDS, "fallbacks", "step_time_s",
              "elapsed_s")
# train/<run>/run_info.json: parameters per forwarded token and per target token (trainer.logprobs.param_counts).
PARAM_FIELDS = ("params_body", "params_head")
