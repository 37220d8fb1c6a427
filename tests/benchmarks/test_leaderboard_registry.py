"""The leaderboard settings table checked against lm-eval's own task registry (no data is downloaded)."""

from __future__ import annotations

import pytest

from benchmarks.leaderboard import LEADERBOARD_TASKS, TASKS_BY_NAME, LeaderboardConfig, LeaderboardError, task_specs

# The Open LLM Leaderboard v1 (as the paper's Table 3 reports it), written out independently of the code.
V1 = {"arc_challenge": (25, "acc_norm"), "hellaswag": (10, "acc_norm"), "truthfulqa_mc2": (0, "acc"),
      "mmlu": (5, "acc"), "winogrande": (5, "acc"), "gsm8k": (5, "exact_match")}


@pytest.fixture(scope="module")
def task_manager():
    from lm_eval.tasks import TaskManager

    return TaskManager()  # builds the index from lm-eval's YAML files only


def leaves(tm, name: str) -> list[str]:
    """Leaf task names of a group (groups list tasks, sub-groups or tags), from the index's YAML."""
    entry = tm.task_index[name]
    kind = entry.kind.name
    if kind == "TAG":
        return sorted(n for n, e in tm.task_index.items() if name in e.tags)
    if kind != "GROUP":
        return [name]
    subs = entry.cfg["task"]
    return sorted(x for s in (subs if isinstance(subs, list) else [subs]) for x in leaves(tm, s))


def test_table_is_the_leaderboard_v1():
    assert {t.name: (t.num_fewshot, t.metric) for t in LEADERBOARD_TASKS} == V1
    assert TASKS_BY_NAME["gsm8k"].filter == "strict-match"
    assert TASKS_BY_NAME["mmlu"].mean_of_subtasks and sum(t.mean_of_subtasks for t in LEADERBOARD_TASKS) == 1
    assert len({t.label for t in LEADERBOARD_TASKS}) == 6


def test_tasks_exist_with_the_metrics_we_read(task_manager):
    tm = task_manager
    for spec in LEADERBOARD_TASKS:
        assert spec.name in tm.all_tasks, spec.name
        names = leaves(tm, spec.name)
        assert (len(names) == 57) if spec.name == "mmlu" else names == [spec.name], spec.name
        for name in names:
            cfg = tm.task_index[name].cfg
            expected = "generate_until" if spec.name == "gsm8k" else "multiple_choice"
            assert cfg["output_type"] == expected, name
            assert spec.metric in [m["metric"] for m in cfg["metric_list"]], name
            if spec.filter != "none":
                assert spec.filter in [f["name"] for f in cfg.get("filter_list", [])], name
            else:
                assert not cfg.get("filter_list"), name  # results keyed "<metric>,none"


def test_shot_counts_are_accepted(task_manager):
    """lm-eval keeps a task's YAML num_fewshot of 0 (ignoring an override): ours must agree with the
    YAML where it sets one, and a split to draw shots from must exist where we ask for shots."""
    tm = task_manager
    for spec in LEADERBOARD_TASKS:
        for name in leaves(tm, spec.name):
            cfg = tm.task_index[name].cfg
            if cfg.get("num_fewshot") is not None:
                assert cfg["num_fewshot"] == spec.num_fewshot, name
            if spec.num_fewshot > 0:
                assert cfg.get("fewshot_split") or cfg.get("training_split") or cfg.get("validation_split"), name


def test_mmlu_group_is_sample_weighted_in_lm_eval(task_manager):
    """Why we recompute MMLU: lm-eval's group averages by size, the leaderboard by subject."""
    cfg = task_manager.task_index["mmlu"].cfg
    assert cfg["aggregate_metric_list"] == [{"metric": "acc", "weight_by_size": True}]


def test_overrides_and_unknown_names():
    specs = task_specs(LeaderboardConfig(tasks=("gsm8k", "arc_challenge"), num_fewshot={"gsm8k": 8}))
    assert [(s.name, s.num_fewshot) for s in specs] == [("gsm8k", 8), ("arc_challenge", 25)]
    assert task_specs(LeaderboardConfig())[0].num_fewshot == 25  # no overrides by default
    with pytest.raises(LeaderboardError, match="unknown leaderboard task 'mmlu_pro'"):
        task_specs(LeaderboardConfig(tasks=("mmlu_pro",)))
    with pytest.raises(LeaderboardError, match="override for unknown task 'arc'"):
        task_specs(LeaderboardConfig(num_fewshot={"arc": 1}))


def test_records_hold_no_memory_address():
    """lm-eval writes a function whose source it cannot read as "<function f at 0x...>": the records
    and the task-config hashes must not change with the process that evaluated."""
    from benchmarks.leaderboard import _jsonable

    def doc_to_text(doc):
        return doc

    rec = {"doc_to_text": "<function doc_to_text at 0x7f9a79b960c0>", "fn": doc_to_text, "n": 1}
    out = _jsonable(rec)
    assert out["doc_to_text"] == "<function doc_to_text>" and out["n"] == 1
    assert " at 0x" not in out["fn"] and "doc_to_text" in out["fn"]
