"""End to end: `reproduce` on a tiny config (tiny model, a few steps, a few questions, a loopback judge).

The full pipeline runs and writes every artefact; a run killed in the middle of training and again in
the middle of judging, then resumed, ends with the same weights, answers and judgments as a run that
was never interrupted; a rerun of a finished run recomputes nothing and calls the judge zero times.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from fake_openai import FakeOpenAI
from srdpo_eval.config import load_config
from srdpo_eval.default_data import load_default_prefs, split_train_eval
from srdpo_eval.reproduce import reproduce

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_setup(tmp_path_factory, fastchat_data_dir):
    from tiny import build_tiny_model

    d = tmp_path_factory.mktemp("tiny-reproduce")
    # big enough that a training step takes tens of milliseconds: the kills below must land mid-run
    tiny_model_dir = build_tiny_model(d / "model", hidden_size=128, num_layers=4)
    train, held = split_train_eval(load_default_prefs())
    (d / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in train[:12]))
    (d / "rated.jsonl").write_text("".join(json.dumps(r) + "\n" for r in held[:10]))
    return d, tiny_model_dir, fastchat_data_dir


def write_config(folder: Path, model: Path, data_dir: Path, base_url: str) -> Path:
    cfg = {
        "name": "tiny",
        "model": str(model),
        "data": str(folder / "train.jsonl"),
        "train": {"objectives": ["dpo", "sr-dpo"], "learning_rate": 1e-3, "optimizer": "adamw",
                  "warmup_steps": 0, "batch_size": 2, "max_pairs": 12, "save_every": 2, "max_length": 256,
                  "max_prompt_length": 128, "dtype": "fp32"},
        "bench": {"benches": ["mt_bench"], "data_dir": str(data_dir), "limit": 3, "max_new_tokens": 6,
                  "batch_size": 3},
        "judge": {"backend": "openai", "model": "gpt-4", "base_url": base_url, "concurrency": 2,
                  "pairs": [["sr-dpo", "dpo"]], "baseline": "sft"},
        "leaderboard": {"enabled": False},
        "delta": {"pairs": str(folder / "rated.jsonl"), "max_pairs": None, "batch_size": 4},
        "analysis": {"n_boot": 50},
    }
    path = folder / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _env():
    return {**os.environ, "OPENAI_API_KEY": "sk-test-not-a-real-key", "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": str(ROOT), "CUDA_VISIBLE_DEVICES": ""}


def run_until(config: Path, out: Path, stop_when, timeout: float = 300) -> None:
    """Run `reproduce` in a child process and SIGKILL it as soon as ``stop_when()`` holds."""
    proc = subprocess.Popen([sys.executable, "-m", "srdpo_eval", "reproduce", "--config", str(config),
                             "--output", str(out)], env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    t0 = time.time()
    while proc.poll() is None and not stop_when():
        if time.time() - t0 > timeout:
            proc.kill()
            pytest.fail("reproduce did not reach the kill point in time")
        time.sleep(0.01)
    if proc.poll() is not None:
        pytest.fail(f"reproduce ended (rc {proc.returncode}) before the kill point:\n{proc.stderr.read()[-3000:]}")
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.is_file() else 0


def snapshot(out: Path) -> dict:
    """What must be identical between an interrupted and an uninterrupted run."""
    snap = {}
    for w in sorted(out.glob("train/*/final/model.safetensors")):
        snap[str(w.relative_to(out))] = w.read_bytes()
    for a in sorted(out.glob("mt_bench/model_answer/*.jsonl")):
        snap[str(a.relative_to(out))] = sorted(
            (r["question_id"], tuple(r["choices"][0]["turns"])) for r in map(json.loads, a.read_text().splitlines()))
    for j in sorted(out.glob("mt_bench/model_judgment/*.jsonl")):
        recs = [json.loads(x) for x in j.read_text().splitlines()]
        snap[str(j.relative_to(out))] = sorted(
            json.dumps({k: v for k, v in r.items() if k != "tstamp"}, sort_keys=True) for r in recs)
    return snap


def test_tiny_pipeline_end_to_end_with_kills(tiny_setup, monkeypatch, capsys):
    folder, model, data_dir = tiny_setup
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-real-key")
    with FakeOpenAI(latency=0.2) as server:
        config = write_config(folder, model, data_dir, server.base_url)
        cfg = load_config(config)

        # the uninterrupted reference run
        clean = folder / "clean"
        reproduce(cfg, clean)
        for artefact in ["manifest.json", "models.json", "report.md", "train/dpo/final/model.safetensors",
                         "train/sr-dpo/final/srdpo_info.json", "train/sr-dpo/log.jsonl",
                         "mt_bench/model_answer/sr-dpo.jsonl", "mt_bench/model_judgment/gpt-4_pair.jsonl",
                         "mt_bench/model_judgment/gpt-4_single.jsonl", "delta/sr-dpo.csv"]:
            assert (clean / artefact).is_file(), artefact
        figures = sorted(p.name for p in (clean / "figures").glob("*.png"))
        assert figures, "no figure was made"
        report = (clean / "report.md").read_text()
        assert all(name in report for name in figures)
        manifest = json.loads((clean / "manifest.json").read_text())
        assert all(u["status"] == "done" for u in manifest["units"].values())
        assert manifest["environment"]["packages"]["torch"]
        assert "sk-test" not in (clean / "manifest.json").read_text()
        # MT-Bench pairwise: 3 questions x 2 turns, for sr-dpo vs dpo and each model vs sft
        pair_recs = [json.loads(x) for x in (clean / "mt_bench/model_judgment/gpt-4_pair.jsonl").read_text().splitlines()]
        assert sum({r["model_1"], r["model_2"]} == {"sr-dpo", "dpo"} for r in pair_recs) == 6

        # a rerun of the finished run: nothing recomputed, no judge call, no figure drawn again; one line
        # per stage says so
        before, report_made = server.requests, (clean / "report.md").stat().st_mtime_ns
        capsys.readouterr()
        taken = reproduce(cfg, clean)
        assert server.requests == before and set(taken.values()) == {"skip"}
        assert (clean / "report.md").stat().st_mtime_ns == report_made
        said = [x for x in capsys.readouterr().out.splitlines() if x.startswith("[")]
        stages = {json.loads((clean / "manifest.json").read_text())["units"][n]["stage"] for n in taken}
        assert len(said) == len(stages) and all(x.startswith("[skip]") for x in said), said
        # a result file written again (Δπ recomputed by hand, say) is an input the figures read: drawn again
        os.utime(clean / "delta/sr-dpo.csv", ns=(report_made + 10**9,) * 2)
        taken = reproduce(cfg, clean)
        assert taken["figures"] == "run" and {a for n, a in taken.items() if n != "figures"} == {"skip"}
        assert (clean / "report.md").stat().st_mtime_ns != report_made

        # killed during training (after the dpo run logged 3 of its 6 steps), then during judging
        cut = folder / "cut"
        run_until(config, cut, lambda: lines(cut / "train/dpo/log.jsonl") >= 3)
        assert not (cut / "train/dpo/final").exists()
        pair_file = cut / "mt_bench/model_judgment/gpt-4_pair.jsonl"
        run_until(config, cut, lambda: lines(pair_file) >= 2)
        assert not (cut / "report.md").exists()
        # the plan of a half-judged run counts the missing calls exactly, from the judge's own dry run
        capsys.readouterr()
        reproduce(cfg, cut, dry_run=True)
        plan_text = capsys.readouterr().out
        # the judge named with its endpoint (a local server: no price)
        assert f"judge (openai: gpt-4 at {server.base_url}):" in plan_text and "calls to make" in plan_text
        requests_before_resume = server.requests
        reproduce(cfg, cut)
        assert snapshot(cut) == snapshot(clean)
        # the resumed judging asked only for what was missing: fewer calls than a run from scratch
        n_calls_clean = sum(2 for r in pair_recs) + lines(clean / "mt_bench/model_judgment/gpt-4_single.jsonl")
        made = server.requests - requests_before_resume
        assert made < n_calls_clean
        to_make = int(plan_text.split(f"judge (openai: gpt-4 at {server.base_url}): ")[1].split(" calls")[0])
        cached = int(plan_text.split("calls to make, ")[1].split(" of them")[0])
        # the plan's count is an upper bound: identical prompts (two models giving the same answer)
        # are answered from the cache as the run goes
        assert 0 < made <= to_make - cached, plan_text

        # a changed setting: the plan counts the calls that will follow, not the stale files' state
        cfg.bench.max_new_tokens = 5
        reproduce(cfg, clean, dry_run=True)
        plan_text = capsys.readouterr().out
        to_make = int(plan_text.split(" calls to make, ")[0].rsplit(" ", 1)[-1])
        before = server.requests
        reproduce(cfg, clean)
        made = server.requests - before
        assert 0 < made <= to_make, plan_text


def test_dry_run_prints_the_plan_and_runs_nothing(tiny_setup, capsys):
    folder, model, data_dir = tiny_setup
    config = write_config(folder, model, data_dir, "http://127.0.0.1:9/v1")
    out = folder / "dry"
    reproduce(load_config(config), out, dry_run=True)
    text = capsys.readouterr().out
    for unit in ["reference", "train/dpo", "train/sr-dpo", "answers/mt_bench/sft", "judge/mt_bench/pair/sr-dpo__dpo",
                 "delta/sr-dpo", "figures"]:
        assert unit in text
    assert "2 runs x 6 steps of 2 pairs" in text
    assert "judge (openai: gpt-4 at http://127.0.0.1:9/v1)" in text and "$" not in text
    assert not (out / "train").exists() and not (out / "manifest.json").exists()


def test_default_dry_run_counts_steps_from_the_shipped_data_and_writes_nothing(tmp_path, capsys):
    from srdpo_eval.cli import main

    out = tmp_path / "default"
    assert main(["reproduce", "--output", str(out), "--dry-run"]) == 0
    text = capsys.readouterr().out
    n_train = len(split_train_eval(load_default_prefs())[0])
    cfg = load_config(None)
    steps = -(-min(n_train, cfg.train.max_pairs) // cfg.train.batch_size)
    assert f"4 runs x {steps} steps of {cfg.train.batch_size} pairs" in text
    assert not out.exists()


def test_changed_setting_reruns_only_what_depends_on_it(tiny_setup, monkeypatch):
    folder, model, data_dir = tiny_setup
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-real-key")
    with FakeOpenAI() as server:
        config = write_config(folder, model, data_dir, server.base_url)
        cfg = load_config(config)
        out = folder / "changed"
        reproduce(cfg, out, stages=["reference", "train"])
        assert (out / "train/dpo/final").is_dir() and not (out / "mt_bench").exists()
        cfg.train.lam = 0.9  # affects Sr runs only
        taken = reproduce(cfg, out, stages=["reference", "train"])
        assert taken["train/dpo"] == "skip" and taken["reference"] == "skip"
        assert taken["train/sr-dpo"] == "rerun"
        info = json.loads((out / "train/sr-dpo/final/srdpo_info.json").read_text())
        assert info["lam"] == pytest.approx(0.9)


def test_config_errors_name_the_file_and_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  betta: 0.2\n")
    with pytest.raises(ValueError, match=r"bad.yaml:2: train.betta: unknown setting \(did you mean 'beta'\?\)"):
        load_config(bad)
    bad.write_text("train:\n  objectives: [dpo, kto]\n")
    with pytest.raises(ValueError, match="kto"):
        load_config(bad)


def test_shipped_configs_load():
    for name in ("paper-hh.yaml", "paper-zephyr.yaml"):
        cfg = load_config(ROOT / "configs" / name)
        assert cfg.train.beta == 0.1 and cfg.train.learning_rate == 5e-7 and cfg.train.optimizer == "rmsprop"
    default = load_config(None)
    assert default.model == "default" and default.data == "default"


EXPECTED_TABLES = ("training_log", "table5_training_time", "table2_winrates", "figure2a_lambda", "figure2b_training",
                   "winrate_curves", "leaderboard_scores", "table3_leaderboard", "table4_correlation", "table4_summary")
EXPECTED_FIGURES = ("figure1_margin_accuracy", "figure1_prompted_accuracy", "training_curves", "table2_outcomes",
                    "figure2a_lambda", "figure2b_training", "winrate_curves", "figure3_leaderboard", "table4_scatter")


def test_tiny_pipeline_fills_every_table_and_figure_from_the_stages_outputs(tiny_model_dir, fastchat_data_dir,
                                                                            tmp_path, capsys):
    """The whole pipeline on a tiny model, a local judge (the tiny model itself) and local lm-eval tasks:
    every table and figure is made and holds numbers; then a judge-only rerun on the run directory asks
    for nothing and writes no new file, and `figures` twice gives identical tables, the judge's kept."""
    from analysis.report import build_report
    from lb_tasks import write_local_tasks
    from srdpo_eval.cli import main

    train, held = split_train_eval(load_default_prefs())
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in train[:8]))
    (tmp_path / "rated.jsonl").write_text("".join(json.dumps(r) + "\n" for r in held[:8]))
    tasks = write_local_tasks(tmp_path)
    cfg = {
        "name": "tiny-local", "model": str(tiny_model_dir), "data": str(tmp_path / "train.jsonl"),
        "train": {"objectives": ["dpo", "sr-dpo"], "lam_sweep": [0.0], "learning_rate": 1e-3, "optimizer": "adamw",
                  "warmup_steps": 0, "batch_size": 2, "save_every": 2, "max_length": 256, "max_prompt_length": 128,
                  "device": "cpu", "progress": False},
        "bench": {"benches": ["mt_bench"], "data_dir": str(fastchat_data_dir), "limit": 3, "max_new_tokens": 6,
                  "batch_size": 3, "checkpoints": "all"},
        "judge": {"backend": "local", "local_model": str(tiny_model_dir), "pairs": [["sr-dpo", "dpo"]],
                  "baseline": "sft"},
        "leaderboard": {"include_path": [str(tasks)], "include_defaults": False, "offline": True, "limit": 2,
                        "batch_size": 4, "device": "cpu", "dtype": "float32", "gen_max_new_tokens": 8,
                        "checkpoints": "all"},
        "delta": {"pairs": str(tmp_path / "rated.jsonl"), "batch_size": 4},
        "analysis": {"n_boot": 50},
    }
    config = tmp_path / "tiny-local.yaml"
    config.write_text(yaml.safe_dump(cfg))
    run = tmp_path / "run"
    assert main(["reproduce", "--config", str(config), "--output", str(run)]) == 0

    judge = f"local-{tiny_model_dir.name}"
    for name in EXPECTED_TABLES:
        t = pd.read_csv(run / "tables" / f"{name}.csv")
        assert len(t) and t.select_dtypes("number").notna().any().any(), name
    t3 = pd.read_csv(run / "tables" / "table3_leaderboard.csv").set_index("objective")
    assert {"sft", "dpo", "sr-dpo"} <= set(t3.index) and t3[["arc_challenge", "gsm8k", "average"]].notna().all().all()
    t2 = pd.read_csv(run / "tables" / "table2_winrates.csv")
    assert set(zip(t2["model_a"], t2["model_b"])) == {("sr-dpo", "dpo")} and t2["n"].iloc[0] == 6
    # the local judge's verdicts pool both orders: its P(A better) and CI are in the table
    assert t2[["p_a", "p_a_ci_low", "p_a_ci_high"]].notna().all().all()
    t5 = pd.read_csv(run / "tables" / "table5_training_time.csv").set_index("run")
    assert t5.loc["sr-dpo", "flops_ratio"] > 1 and t5.loc["sr-dpo", "time_ratio"] > 0
    assert t5.loc["dpo", "tokens_no_grad_per_pair"] == 0 < t5.loc["sr-dpo", "tokens_no_grad_per_pair"]
    scores = pd.read_csv(run / "tables" / f"mt_bench_scores_{judge}.csv")
    assert ((scores["ci_low"] <= scores["overall"]) & (scores["overall"] <= scores["ci_high"])).all()
    paragraphs = (run / "report.md").read_text().split("\n\n")
    assert paragraphs[1].startswith("## The answer") and "Sr-DPO vs DPO" in paragraphs[2]
    assert any("pipeline check at toy scale" in p for p in paragraphs[3:6])
    t4 = pd.read_csv(run / "tables" / "table4_correlation.csv")
    finals = {"dpo", "sr-dpo", "sr-dpo-lam0"}  # and each run's checkpoint (delta.checkpoints: all)
    assert set(t4["model_id"]) == finals | {f"{m}-p4" for m in finals} and t4["estimate"].notna().all()
    assert {"pearson | length", "spearman | length"} <= set(t4["method"])
    for name in (f"mt_bench_scores_{judge}", f"mt_bench_categories_{judge}"):
        assert len(pd.read_csv(run / "tables" / f"{name}.csv")), name
    rep = build_report(run, n_boot=50)
    figures = {n: f for s in rep.sections for n, f in s.figures.items()}
    for name in EXPECTED_FIGURES:
        assert name in figures, name
        drawn = [a for a in figures[name].axes if a.lines or a.patches or a.collections]
        assert drawn, f"{name} has no data drawn"

    # a judge-only rerun on the run directory, as the README writes it (no question selection: the one the
    # answers were made with): the same judge id, nothing asked, no new file
    judgments = run / "mt_bench" / "model_judgment"
    before = {p.name: p.read_bytes() for p in judgments.iterdir()}
    common = ["judge", str(run), "--judge-backend", "local", "--judge-model", str(tiny_model_dir),
              "--data-dir", str(fastchat_data_dir), "--no-progress"]
    capsys.readouterr()
    assert main([*common, "--mode", "single"]) == 0
    assert main([*common, "--mode", "pairwise", "--models", "sr-dpo", "dpo"]) == 0
    out = capsys.readouterr().out
    assert out.count("calls made 0, written 0") == 2, out
    assert {p.name: p.read_bytes() for p in judgments.iterdir()} == before
    judge_tables = sorted((run / "tables" / "judge").glob("*.csv"))
    assert judge_tables

    # figures twice: identical tables, and the judge's tables are still there
    assert main(["figures", str(run), "--n-boot", "50"]) == 0
    first = {p.name: p.read_bytes() for p in (run / "tables").glob("*.csv")}
    assert main(["figures", str(run), "--n-boot", "50"]) == 0
    assert {p.name: p.read_bytes() for p in (run / "tables").glob("*.csv")} == first
    assert sorted((run / "tables" / "judge").glob("*.csv")) == judge_tables

    # the plan of judging still to do with a local judge: the prompt tokens it will score, no price
    (judgments / f"{judge}_pair.jsonl").unlink()
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["units"] = {n: u for n, u in manifest["units"].items() if not n.startswith("judge/mt_bench/pair")}
    (run / "manifest.json").write_text(json.dumps(manifest))
    capsys.readouterr()
    assert main(["reproduce", "--config", str(config), "--output", str(run), "--dry-run"]) == 0
    plan = capsys.readouterr().out
    assert re.search(r"judge/mt_bench/pair/sr-dpo__dpo: \d+ calls, ~[\d,]+ prompt tokens to score\n", plan), plan
    assert "$" not in plan


def test_two_seeds_give_the_paired_comparison_report(tiny_setup, monkeypatch):
    """seeds: [0, 1] trains each objective twice (seed 0 keeps the plain names), judges Sr-X against X within
    each seed, and the report opens with the pooled answer; the held-out table, length-controlled win rates
    and the forest plot are made from the stored results."""
    folder, model, data_dir = tiny_setup
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-real-key")
    with FakeOpenAI() as server:
        cfg = load_config(write_config(folder, model, data_dir, server.base_url))
        cfg.seeds, cfg.train.max_pairs, cfg.judge.baseline = [0, 1], 8, None
        out = folder / "seeds"
        reproduce(cfg, out)
    models = {m["model_id"]: m for m in json.loads((out / "models.json").read_text())}
    assert {"dpo", "sr-dpo", "dpo-s1", "sr-dpo-s1", "dpo-s1-p4"} <= set(models)
    assert models["dpo-s1"]["seed"] == 1 and models["dpo"]["seed"] == 0
    w0 = (out / "train/dpo/final/model.safetensors").read_bytes()
    assert w0 != (out / "train/dpo-s1/final/model.safetensors").read_bytes()  # another data order
    pairs = {(r["model_1"], r["model_2"]) for r in map(json.loads, (out / "mt_bench/model_judgment/gpt-4_pair.jsonl")
                                                        .read_text().splitlines())}
    assert pairs == {("sr-dpo", "dpo"), ("sr-dpo-s1", "dpo-s1")}  # within each seed, never across

    report = (out / "report.md").read_text()
    assert report.split("\n\n")[1].startswith("## The answer")
    comp = pd.read_csv(out / "tables/comparisons.csv", dtype={"seed": str})
    pooled = comp[comp["family"]]
    assert set(pooled["seed"]) == {"all"} and set(pooled["seeds"]) == {2}
    assert {"heldout_accuracy", "win_rate", "lc_win_rate", "single_score"} <= set(pooled["measure"])
    assert set(comp["seed"]) == {"0", "1", "all"} and pooled["p_holm"].notna().all()
    answer = pd.read_csv(out / "tables/answer.csv")
    assert len(answer) == len(pooled) and set(answer["verdict"]) <= {"significant", "not significant", "underpowered"}
    held = pd.read_csv(out / "tables/heldout_preferences.csv", dtype={"seed": str})
    assert {"0", "1", "all"} <= set(held["seed"]) and held["accuracy"].between(0, 100).all()
    assert set(held.loc[held["seed"] == "all", "pairs_seen"]) == {4, 8}  # a checkpoint and the final, pooled
    t2 = pd.read_csv(out / "tables/table2_winrates.csv", dtype={"seed": str})
    assert set(t2["seed"]) == {"0", "1", "all"} and t2["lc_win_rate"].notna().all()
    for fig in ("comparisons_forest", "heldout_accuracy"):
        assert (out / "figures" / f"{fig}.png").is_file(), fig
