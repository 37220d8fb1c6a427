"""`reproduce --workers` and `--shard` on the tiny pipeline (tiny model, local judge, local lm-eval tasks).

Training runs once; its run directory is copied for each way of evaluating it. The result files of every
way must be byte-identical to those of one worker in one process, after two normalisations, and with
three kinds of files left out:

- the run directory's own path (models.json and the leaderboard records name checkpoints by path) and
  the time fields, ``tstamp`` (answer and judgment records, FastChat's format) and ``seconds``
  (leaderboard records), are replaced by placeholders;
- left out: manifest*.json and logs/ (states, pids and times of the units), the figures (PDF
  metadata carries a creation date) and the judge's SQLite reply cache (binary, page layout varies).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import threading
import time
from pathlib import Path

import pytest
import yaml

from contracts.errors import UserError
from srdpo_eval.config import load_config
from srdpo_eval.default_data import load_default_prefs, split_train_eval
from srdpo_eval.manifest import UnitFailed
from srdpo_eval.reproduce import reproduce

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_model_dir, fastchat_data_dir):
    """The config and a run directory whose training has finished (one objective, two steps)."""
    from lb_tasks import write_local_tasks

    d = tmp_path_factory.mktemp("workers")
    train, held = split_train_eval(load_default_prefs())
    (d / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in train[:4]))
    (d / "rated.jsonl").write_text("".join(json.dumps(r) + "\n" for r in held[:4]))
    cfg = {
        "name": "tiny-workers", "model": str(tiny_model_dir), "data": str(d / "train.jsonl"),
        "train": {"objectives": ["dpo"], "learning_rate": 1e-3, "optimizer": "adamw", "warmup_steps": 0,
                  "batch_size": 2, "max_length": 256, "max_prompt_length": 128, "device": "cpu", "progress": False},
        "bench": {"benches": ["mt_bench"], "data_dir": str(fastchat_data_dir), "limit": 2, "max_new_tokens": 4,
                  "batch_size": 2},
        "judge": {"backend": "local", "local_model": str(tiny_model_dir), "pairs": [], "baseline": "sft"},
        "leaderboard": {"include_path": [str(write_local_tasks(d))], "include_defaults": False, "offline": True,
                        "tasks": ["arc_challenge", "winogrande"], "limit": 2, "batch_size": 4, "device": "cpu",
                        "dtype": "float32", "checkpoints": "final"},
        "delta": {"pairs": str(d / "rated.jsonl"), "batch_size": 4},
        "analysis": {"n_boot": 20},
    }
    (d / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    config = load_config(d / "cfg.yaml")
    reproduce(config, d / "base", stages=["sft", "reference", "train"])
    return config, d


def copy_of(trained, name: str) -> Path:
    """A copy of the trained run directory, named "run" in every copy (the report's title is its name)."""
    _, d = trained
    out = d / name / "run"
    shutil.copytree(d / "base", out)
    return out


@pytest.fixture(scope="module")
def one_worker(trained):
    out = copy_of(trained, "one")
    reproduce(trained[0], out, workers=1)
    return out


LEFT_OUT = re.compile(r"^(manifest.*\.json|logs/.*|figures/.*|judge_cache\.sqlite.*|\.checkpoint_hashes\.json)$")


def results(run: Path) -> dict[str, bytes]:
    out = {}
    for p in sorted(run.rglob("*")):
        rel = str(p.relative_to(run))
        if not p.is_file() or LEFT_OUT.match(rel) or rel.startswith(("train/", "refcache/", "data/")):
            continue
        b = p.read_bytes().replace(str(run).encode(), b"RUN")
        b = re.sub(rb'"(tstamp|seconds)": [0-9.e+-]+', rb'"\1": 0', b)
        out[rel] = b
    return out


def assert_same_results(run: Path, reference: Path) -> None:
    got, want = results(run), results(reference)
    assert sorted(got) == sorted(want)
    assert [k for k in want if got[k] != want[k]] == []
    kinds = {k.split("/")[0] for k in want}
    assert {"mt_bench", "leaderboard", "delta", "tables", "models.json", "report.md"} <= kinds, kinds


def test_two_workers_one_killed_then_resumed_equal_one_worker(trained, one_worker):
    cfg, _ = trained
    out = copy_of(trained, "two")
    manifest = out / "manifest.json"
    victim = "leaderboard/dpo"

    def kill_victim_when_it_starts():
        for _ in range(6000):
            rec = json.loads(manifest.read_text())["units"].get(victim, {})
            if rec.get("status") == "started" and "pid" in rec:
                os.kill(rec["pid"], signal.SIGKILL)
                return
            time.sleep(0.05)

    killer = threading.Thread(target=kill_victim_when_it_starts)
    killer.start()
    with pytest.raises(UnitFailed, match=f"unit {victim} failed: killed by SIGKILL"):
        reproduce(cfg, out, workers=2)
    killer.join()
    units = json.loads(manifest.read_text())["units"]
    finished = {n for n, r in units.items() if r["status"] == "done"}
    assert units[victim]["status"] == "failed" and "answers/mt_bench/sft" in finished
    assert not (out / "report.md").exists()

    taken = reproduce(cfg, out, workers=2)
    assert taken[victim] == "resume"
    assert {n: taken[n] for n in finished} == {n: "skip" for n in finished}  # the others are not redone
    units = json.loads(manifest.read_text())["units"]
    assert all(r["status"] == "done" for r in units.values())
    assert units["delta/dpo"]["device"] is None and (out / "logs" / "delta.dpo.log").is_file()
    assert_same_results(out, one_worker)


def test_two_shards_one_after_the_other_then_a_plain_run_equal_one_unsharded_run(trained, one_worker, capsys):
    from srdpo_eval.cli import main

    cfg, d = trained
    with pytest.raises(UserError, match="training is not finished"):
        reproduce(cfg, d / "untrained", shard=(0, 2))

    out = copy_of(trained, "sharded")
    manifest_before = (out / "manifest.json").read_bytes()
    capsys.readouterr()
    reproduce(cfg, out, shard=(0, 2), dry_run=True)
    plan_text = capsys.readouterr().out
    taken0 = reproduce(cfg, out, shard=(0, 2))
    mine = {n for n, a in taken0.items() if a == "run"}
    assert mine and all(n.split("/")[0] in ("answers", "leaderboard", "delta") for n in mine)
    assert f"this shard: {len(mine)} of the" in plan_text and all(n in plan_text for n in mine)
    assert "judge/" not in plan_text.split("judge (local")[0]
    assert (out / "manifest.json").read_bytes() == manifest_before  # a shard writes only its own manifest
    assert set(json.loads((out / "manifest.shard-0-of-2.json").read_text())["units"]) == mine
    taken1 = reproduce(cfg, out, shard=(1, 2))
    theirs = {n for n, a in taken1.items() if a == "run"}
    assert theirs and not mine & theirs
    assert not (out / "models.json").exists() and not (out / "mt_bench" / "model_judgment").exists()
    # `figures` on the shards' results alone: every model's leaderboard scores are there
    assert main(["figures", str(out), "--n-boot", "20"]) == 0
    assert (out / "leaderboard" / "scores.csv").read_text().count("\n") == 3  # header, sft, dpo

    taken = reproduce(cfg, out)  # merges the two shards and finishes
    assert {n: taken[n] for n in mine | theirs} == {n: "skip" for n in mine | theirs}
    assert not list(out.glob("manifest.shard-*"))
    assert_same_results(out, one_worker)
