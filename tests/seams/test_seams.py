"""Where the stages meet: each test feeds one stage's real output to the next (no hand-written
intermediate file), so a renamed column, id or key fails here instead of leaving a table blank."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from contracts.benches import LEADERBOARD_TASKS
from srdpo_eval.cli import main

pytestmark = pytest.mark.slow
WORDS = ["sea", "sky", "fox", "dog", "poem", "plant", "Paris", "France"]


def write_prefs(path: Path, n: int = 8, long: int = 0) -> Path:
    """A learnable toy preference file; ``long`` makes every chosen answer ``long`` words longer."""
    with path.open("w") as f:
        for i in range(n):
            f.write(json.dumps({"prompt": f"Question {i}: what about the {WORDS[i % 8]}?",
                                "chosen": " yes good helpful" + " very" * long,
                                "rejected": " no bad harmless"}) + "\n")
    return path


def train_flags(model, data, out, *extra) -> list[str]:
    return ["train", "--model", str(model), "--data", str(data), "--output", str(out), "--batch-size", "2",
            "--lr", "1e-3", "--warmup-steps", "0", "--device", "cpu", "--no-progress", "--max-length", "128",
            "--max-prompt-length", "64", *extra]


def test_train_then_leaderboard_then_figures_by_pairs_seen(tiny_model_dir, tmp_path):
    from analysis.report import build_report
    from lb_tasks import write_local_tasks

    run = tmp_path / "run"
    data = write_prefs(tmp_path / "prefs.jsonl")
    assert main(train_flags(tiny_model_dir, data, run / "train" / "dpo", "--objective", "dpo", "--max-steps", "4",
                            "--save-every", "2")) == 0
    tasks = write_local_tasks(tmp_path)
    assert main(["leaderboard", str(run / "train" / "dpo"), "--output", str(run), "--include-path", str(tasks),
                 "--include-defaults", "false", "--offline", "true", "--device", "cpu", "--dtype", "float32",
                 "--batch-size", "4", "--limit", "2", "--gen-max-new-tokens", "8"]) == 0
    assert main(["figures", str(run), "--n-boot", "20"]) == 0

    # Table 3: every task column is the per-task result JSON, the average their plain mean
    t3 = pd.read_csv(run / "tables" / "table3_leaderboard.csv").set_index("objective")
    per_task = {t.name: 100 * json.loads((run / "leaderboard" / "dpo" / f"{t.name}.json").read_text())["score"]
                for t in LEADERBOARD_TASKS}
    for task, score in per_task.items():
        assert t3.loc["dpo", task] == pytest.approx(score, abs=1e-3), task
    assert t3.loc["dpo", "average"] == pytest.approx(sum(per_task.values()) / 6, abs=1e-3)

    # Figure 3: a panel per task with the run's curve at the pairs seen the trainer recorded (2 steps of 2
    # pairs at checkpoint-2; 8 at final/) — no models.json: the ids alone say it
    seen = sorted(json.loads((run / "train" / "dpo" / d / "srdpo_info.json").read_text())["pairs_seen"]
                  for d in ("checkpoint-2", "final"))
    assert seen == [4, 8]
    rep = build_report(run, n_boot=20)
    fig = next(s.figures["figure3_leaderboard"] for s in rep.sections if "figure3_leaderboard" in s.figures)
    panels = [ax for ax in fig.axes if ax.get_title()]
    assert len(panels) == 6
    for ax in panels:
        (line,) = [ln for ln in ax.get_lines() if ln.get_label() == "DPO"]
        assert list(line.get_xdata()) == seen
        task = next(t.name for t in LEADERBOARD_TASKS if t.title == ax.get_title())
        assert line.get_ydata()[-1] == pytest.approx(per_task[task], abs=1e-3)


def reproduce_config(folder: Path, model: Path, data: Path, **train) -> Path:
    cfg = {"name": "seam", "model": str(model), "data": str(data),
           "train": {"objectives": ["dpo", "sr-dpo"], "batch_size": 2, "max_steps": 1, "learning_rate": 1e-3,
                     "warmup_steps": 0, "max_length": 128, "max_prompt_length": 64, "progress": False, **train},
           "bench": {"benches": []}, "judge": {"single": False, "pairs": [], "baseline": None},
           "leaderboard": {"enabled": False}, "delta": {"enabled": False}}
    path = folder / "seam.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.parametrize("dtype, mixed_precision", [("auto", "auto"), ("bf16", "no"), ("fp32", "bf16")])
def test_reference_pass_of_reproduce_is_the_one_train_uses(tiny_model_dir, tmp_path, monkeypatch, dtype,
                                                           mixed_precision):
    import trainer.modeling
    from srdpo_eval.config import load_config
    from srdpo_eval.reproduce import reproduce

    data = write_prefs(tmp_path / "prefs.jsonl", n=4)
    cfg = load_config(reproduce_config(tmp_path, tiny_model_dir, data, dtype=dtype, mixed_precision=mixed_precision,
                                       device="cpu"))
    reproduce(cfg, tmp_path / "out", stages=["reference"])
    made = list((tmp_path / "out" / "refcache").glob("*.safetensors"))
    assert len(made) == 1

    def no_reference_model(*a, **k):
        raise AssertionError("the reference model was loaded again: the training run missed the cache entry")

    monkeypatch.setattr(trainer.modeling, "load_causal_lm", no_reference_model)
    taken = reproduce(cfg, tmp_path / "out", stages=["train"])
    assert taken["train/dpo"] == taken["train/sr-dpo"] == "run"
    for run in ("dpo", "sr-dpo"):
        info = json.loads((tmp_path / "out" / "train" / run / "run_info.json").read_text())
        assert info["ref_cache"] == str(made[0])
    assert list((tmp_path / "out" / "refcache").glob("*.safetensors")) == made


def test_dpo_and_sr_dpo_train_on_the_same_pairs_under_truncation(tiny_model_dir, tmp_path):
    from trainer.modeling import load_tokenizer

    tok = load_tokenizer(tiny_model_dir)
    data = write_prefs(tmp_path / "prefs.jsonl", n=6, long=30)
    p_len = len(tok("Please generate" + " x" * 0, add_special_tokens=False).input_ids)
    assert p_len > 0
    # lengths where the plain pairs are cut, and header + p alone would not fit in what is left
    flags = ["--max-length", "40", "--max-prompt-length", "12", "--max-steps", "1"]
    infos = {}
    for objective in ("dpo", "sr-dpo"):
        out = tmp_path / objective
        assert main(train_flags(tiny_model_dir, data, out, "--objective", objective, *flags)) == 0
        infos[objective] = json.loads((out / "run_info.json").read_text())
    dpo, sr = infos["dpo"], infos["sr-dpo"]
    assert dpo["train_pairs"] == sr["train_pairs"] == 6 and dpo["dropped_pairs"] == sr["dropped_pairs"] == 0
    assert dpo["truncation"]["completion_truncated"] == 6
    assert dpo["data_hash"] == sr["data_hash"]  # the same tokens, p ⊕ x included
