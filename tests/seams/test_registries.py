"""The registries keep their promise: one entry plus its own code adds an objective (training, the
reproduce plan and the figures take it with no other change) or a judge backend (the judge command takes
it); and no stage compares an objective's, a bench's or a judge backend's name (a source scan)."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest
import torch.nn.functional as F

from contracts import judges, objectives
from contracts.objectives import Objective
from srdpo_eval.cli import main
from trainer import losses as L

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def tdpo(monkeypatch):
    """A new objective: one registry entry and one loss, nothing else."""
    monkeypatch.setitem(objectives.OBJECTIVES, "tdpo", Objective("tdpo", "TDPO", "#123456", "DPO at twice β (a test)"))
    monkeypatch.setitem(L.LOSSES, "tdpo", lambda t, s: -F.logsigmoid(2 * s.beta * t.margin))
    return "tdpo"


def test_one_entry_and_one_loss_add_an_objective(tdpo, tiny_model_dir, fastchat_data_dir, tmp_path, capsys):
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"Question {i}: the sea?", "chosen": " yes good",
                                        "rejected": " no bad"}) + "\n" for i in range(8)))
    run = tmp_path / "run"
    common = ["--model", str(tiny_model_dir), "--data", str(data), "--batch-size", "4", "--max-steps", "1",
              "--warmup-steps", "0", "--lr", "1e-3", "--device", "cpu", "--no-progress", "--max-length", "64",
              "--max-prompt-length", "32", "--ref-cache-dir", str(tmp_path / "cache")]
    for objective in ("dpo", tdpo):  # one training step of the new objective, beside DPO
        assert main(["train", "--objective", objective, "--output", str(run / "train" / objective), *common]) == 0
    log = json.loads((run / "train" / tdpo / "log.jsonl").read_text())
    assert log["step"] == 1 and log["loss"] > 0 and "margin" in log

    cfg = tmp_path / "c.yaml"  # the reproduce plan
    cfg.write_text(json.dumps({"model": str(tiny_model_dir), "data": str(data),
                               "train": {"objectives": ["dpo", tdpo], "max_steps": 2, "batch_size": 4},
                               "bench": {"data_dir": str(fastchat_data_dir), "per_category": 1,
                                         "benches": ["mt_bench"]}, "judge": {"backend": "local"}}))
    capsys.readouterr()
    assert main(["reproduce", "--config", str(cfg), "--output", str(tmp_path / "plan"), "--dry-run"]) == 0
    plan = capsys.readouterr().out
    assert re.search(r"run +train/tdpo +tdpo \(β=0\.1\)", plan) and "answers/mt_bench/tdpo" in plan

    assert main(["figures", str(run), "--n-boot", "20"]) == 0  # the figures
    t5 = [l for l in (run / "tables" / "table5_training_time.csv").read_text().splitlines() if l.startswith("tdpo,")]
    assert len(t5) == 1
    import pandas as pd

    curves = pd.read_csv(run / "tables" / "training_log.csv")
    assert set(curves["objective"]) == {"dpo", tdpo}
    assert (run / "figures" / "figure1_margin_accuracy.png").is_file()


def test_one_entry_and_its_maker_add_a_judge_backend(monkeypatch, small_data, tmp_path, capsys):
    from benchmarks.fastchat_data import load_questions
    from benchmarks.judge import config as JC
    from contracts.run_dir import RunDir
    from fake_openai import scripted_reply, write_answers

    class Echo:  # a ChatBackend answering as the fake server does, without a server
        model = "echo-1"

        async def chat(self, messages, *, temperature, max_tokens):
            return scripted_reply(messages)

    monkeypatch.setitem(judges.JUDGE_BACKENDS, "echo",
                        judges.JudgeBackend("echo", "a test judge", local=False, calibrated=False, served=False))
    monkeypatch.setitem(JC.MAKERS, "echo", lambda cfg: Echo())
    run = tmp_path / "run"
    write_answers(RunDir(run).answers("mt_bench", "alpha"), load_questions(small_data, "mt_bench"), "alpha")
    assert main(["judge", str(run), "--judge-backend", "echo", "--judge-model", "echo-1", "--bench", "mt_bench",
                 "--mode", "single", "--data-dir", str(small_data), "--no-progress"]) == 0
    recs = (run / "mt_bench" / "model_judgment" / "echo-1_single.jsonl").read_text().splitlines()
    assert len(recs) == 2 * len(load_questions(small_data, "mt_bench"))


def test_no_stage_compares_a_registered_name():
    """Outside the registries (and their tests), no code compares a value to the name of an objective, a
    bench or a judge backend: what varies is read from the registry's fields."""
    from contracts.benches import BENCHES

    names = {*objectives.OBJECTIVES, *BENCHES, *judges.JUDGE_BACKENDS}
    registries = {"contracts/objectives.py", "contracts/benches.py", "contracts/judges.py"}
    found = []
    for pkg in ("contracts", "trainer", "benchmarks", "analysis", "srdpo_eval", "perf"):
        for p in (ROOT / pkg).rglob("*.py"):
            rel = str(p.relative_to(ROOT))
            if rel in registries:
                continue
            for node in ast.walk(ast.parse(p.read_text(), rel)):
                if isinstance(node, ast.Compare):
                    for c in [node.left, *node.comparators]:
                        strs = [c] if isinstance(c, ast.Constant) else list(getattr(c, "elts", []))
                        hit = [s.value for s in strs if isinstance(s, ast.Constant) and s.value in names]
                        if hit:
                            found.append(f"{rel}:{node.lineno} compares {hit}")
    assert not found, found


def test_default_judge_pairs_follow_the_registry():
    """Each trained Sr-X meets X; the paper's cross pairs only among the paper's objectives."""
    from srdpo_eval.units import default_pairs

    assert default_pairs(["dpo", "ipo", "sr-dpo", "sr-ipo"]) == [
        ("sr-dpo", "dpo"), ("sr-ipo", "ipo"), ("sr-dpo", "ipo"), ("sr-ipo", "dpo")]
    got = default_pairs(["dpo", "sr-dpo", "odpo", "sr-odpo", "hinge", "simpo"])
    assert got == [("sr-dpo", "dpo"), ("sr-odpo", "odpo")]  # no Sr- for hinge here, none exists for simpo
    assert default_pairs(["sr-dpo"]) == []  # no base trained: nothing to compare it with
