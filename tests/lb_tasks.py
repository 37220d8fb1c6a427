"""Local leaderboard tasks for the tests: the real lm-eval task YAMLs (included by path) over tiny local
JSONL data, under lm-eval's task names, so the harness runs fully offline."""

from __future__ import annotations

import json
from pathlib import Path

TASK_DIR = Path(__import__("lm_eval").__file__).parent / "tasks"


# ------------------------------------------------------------------------------------------ data

def arc(i):
    return {"id": f"a{i}", "question": f"Is {i} odd?",
            "choices": {"text": ["yes", "no", "maybe so", "odd"], "label": ["A", "B", "C", "D"]},
            "answerKey": "ABCD"[i % 4]}


def hellaswag(i):
    return {"ind": i, "activity_label": "Cooking", "ctx_a": f"A man cuts {i} eggs.", "ctx_b": "he",
            "ctx": "", "endings": ["fries them.", "sings [title] loudly.", "sleeps now", "eats"],
            "label": str(i % 4), "source_id": "x", "split": "val", "split_type": "indomain"}


def truthfulqa(i):
    return {"question": f"What is {i}?",
            "mc1_targets": {"choices": ["a number", "a fox"], "labels": [1, 0]},
            "mc2_targets": {"choices": ["a number", "a digit", "a fox", "the sea"][: 3 + i % 2],
                            "labels": [1, 1, 0, 0][: 3 + i % 2] if i % 3 else [1, 0, 0, 1][: 3 + i % 2]}}


def winogrande(i):
    return {"sentence": f"Fox {i} saw the dog because _ was {'quick' if i % 2 else 'lazy'}.",
            "option1": "the fox", "option2": "the dog", "answer": "12"[i % 2]}


def gsm8k(i, n):
    return {"question": f"Tom has {i} apples.", "answer": f"He has {n}.\n#### {n}"}


def mmlu(i):
    return {"question": f"{i} + 1 = ?", "subject": "x", "choices": ["one", "two", "three", "four"],
            "answer": i % 4}


def _jsonl(path: Path, rows) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def _yaml(path: Path, body: dict) -> None:
    lines = []
    for k, v in body.items():
        lines.append(f"{k}: {json.dumps(v)}")  # JSON is YAML
    path.write_text("\n".join(lines) + "\n")


def write_local_tasks(root: Path) -> Path:
    """The six tasks under their lm-eval names: each includes lm-eval's own YAML, data from local JSONL."""
    d = root / "tasks"
    (d / "data").mkdir(parents=True)
    first_n = {"sampler": "first_n"}  # deterministic few-shot examples, so the test can rebuild prompts

    def files(name, **splits):
        return {"data_files": {s: _jsonl(d / "data" / f"{name}_{s}.jsonl", rows) for s, rows in splits.items()}}

    _yaml(d / "arc_challenge.yaml", {
        "include": str(TASK_DIR / "arc" / "arc_challenge.yaml"), "task": "arc_challenge",
        "dataset_path": "json", "dataset_name": None, "fewshot_config": first_n,
        "dataset_kwargs": files("arc", train=[arc(i) for i in range(100, 125)],
                                validation=[arc(i) for i in range(3)], test=[arc(i) for i in range(5)])})
    _yaml(d / "hellaswag.yaml", {
        "include": str(TASK_DIR / "hellaswag" / "hellaswag.yaml"), "task": "hellaswag",
        "dataset_path": "json", "dataset_name": None, "fewshot_config": first_n,
        "dataset_kwargs": files("hs", train=[hellaswag(i) for i in range(50, 60)],
                                validation=[hellaswag(i) for i in range(4)])})
    _yaml(d / "truthfulqa_mc2.yaml", {
        "include": str(TASK_DIR / "truthfulqa" / "truthfulqa_mc2.yaml"), "task": "truthfulqa_mc2",
        "dataset_path": "json", "dataset_name": None,
        "dataset_kwargs": files("tqa", validation=[truthfulqa(i) for i in range(4)])})
    _yaml(d / "winogrande.yaml", {
        "include": str(TASK_DIR / "winogrande" / "default.yaml"), "task": "winogrande",
        "dataset_path": "json", "dataset_name": None, "fewshot_config": first_n,
        "dataset_kwargs": files("wg", train=[winogrande(i) for i in range(10, 15)],
                                validation=[winogrande(i) for i in range(4)])})
    _yaml(d / "gsm8k.yaml", {
        "include": str(TASK_DIR / "gsm8k" / "gsm8k.yaml"), "task": "gsm8k",
        "dataset_path": "json", "dataset_name": None, "fewshot_config": first_n,
        "dataset_kwargs": files("gsm", train=[gsm8k(i, 3) for i in range(5)],
                                test=[gsm8k(1, 7), gsm8k(2, 8), gsm8k(3, 7)])})
    # MMLU: two subjects of different sizes under a group named like lm-eval's (sample-weighted) one.
    subjects = {"anatomy": 2, "astronomy": 5}
    for subj, n in subjects.items():
        _yaml(d / f"mmlu_{subj}.yaml", {
            "include": str(TASK_DIR / "mmlu" / "default" / "_default_template_yaml"),
            "task": f"mmlu_{subj}", "dataset_path": "json", "dataset_name": None,
            "description": f"The following are multiple choice questions (with answers) about {subj}.\n\n",
            "dataset_kwargs": files(f"mmlu_{subj}", dev=[mmlu(i) for i in range(20, 25)],
                                    test=[mmlu(i) for i in range(n)])})
    _yaml(d / "_mmlu.yaml", {"group": "mmlu", "task": [f"mmlu_{s}" for s in subjects],
                             "aggregate_metric_list": [{"metric": "acc", "weight_by_size": True}],
                             "metadata": {"version": 2}})
    return d
