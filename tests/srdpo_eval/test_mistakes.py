"""Every user mistake gets one clear line: exit status 2, no traceback, the culprit named (file:line and
field, the flag or config key, or the URL). Run through the real command line, in process."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from srdpo_eval.cli import main

pytestmark = pytest.mark.slow

PREF = {"prompt": "Question: what about the sea?", "chosen": " yes good helpful", "rejected": " no bad",
        "chosen_rating": 5, "rejected_rating": 2}


def _jsonl(path: Path, lines: list[str]) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines))
    return str(path)


@pytest.fixture(scope="module")
def env(tiny_model_dir, fastchat_data_dir, tmp_path_factory):
    """Files the mistakes point at: good and bad data, configs, a finished run, answers to judge."""
    from benchmarks.fastchat_data import load_questions
    from contracts.run_dir import RunDir
    from fake_openai import write_answers

    d = tmp_path_factory.mktemp("mistakes")
    good = [json.dumps({**PREF, "prompt": f"Question {i}: what about the sea?"}) for i in range(4)]
    e = {"d": str(d), "model": str(tiny_model_dir), "data_dir": str(fastchat_data_dir)}
    e["prefs"] = _jsonl(d / "prefs.jsonl", good)
    e["bad_json"] = _jsonl(d / "bad_json.jsonl", [good[0], '{"prompt": "a", "chosen": "b"'])
    e["no_rejected"] = _jsonl(d / "no_rejected.jsonl", [good[0], json.dumps({"prompt": "a", "chosen": " b"})])
    e["int_chosen"] = _jsonl(d / "int_chosen.jsonl", [json.dumps({"prompt": "a", "chosen": 3, "rejected": " c"})])
    e["usr_role"] = _jsonl(d / "usr_role.jsonl", [json.dumps({"prompt": [{"role": "usr", "content": "hi"}],
                                                             "chosen": "yes", "rejected": "no"})])
    e["bad_rating"] = _jsonl(d / "bad_rating.jsonl", [good[0], json.dumps({**PREF, "id": "x", "chosen_rating": "five"})])
    (d / "notamodel").mkdir()
    # a finished dpo run (trained with the same flags as the cases below)
    e["run"] = str(d / "train" / "dpo")
    assert main(train(e, "--output", e["run"])) == 0
    # a run directory with answers of two models, and a broken judgment file
    jrun = d / "judged"
    qs = load_questions(fastchat_data_dir, "mt_bench")[:2]
    for m in ("alpha", "beta"):
        write_answers(RunDir(jrun).answers("mt_bench", m), qs, m)
    e["jrun"] = str(jrun)
    broken = d / "broken"
    shutil.copytree(jrun, broken)
    _jsonl(RunDir(broken).judgments("mt_bench", "gpt-4", "single"), [
        json.dumps({"question_id": qs[0].question_id, "model": "alpha", "score": 5, "turn": 1,
                    "judge": ["gpt-4", "single-v1"]}), '{"question_id": 81, "model": "alpha", "score": "high"}'])
    e["broken"] = str(broken)
    (d / "cut_models").mkdir()
    (d / "cut_models" / "models.json").write_text('[{"model_id": "dpo", "path": "x", "objec')
    (d / "cut_models" / "train").mkdir()
    e["cut_models"] = str(d / "cut_models")
    bad_q = d / "bad_q"
    (bad_q / "mt_bench").mkdir(parents=True)
    shutil.copy(fastchat_data_dir / "judge_prompts.jsonl", bad_q / "judge_prompts.jsonl")
    (bad_q / "mt_bench" / "question.jsonl").write_text('{"question_id": 1, "category": "x"}\n')
    e["bad_q"] = str(bad_q)
    ckpt = d / "ckpt_no_info"
    shutil.copytree(tiny_model_dir, ckpt)
    e["ckpt"] = str(ckpt)
    return e


def train(e, *extra) -> list[str]:
    base = ["train", "--objective", "dpo", "--model", e["model"], "--data", e["prefs"], "--output",
            str(Path(e["d"]) / "new"), "--batch-size", "2", "--max-steps", "1", "--device", "cpu", "--no-progress",
            "--max-length", "128", "--max-prompt-length", "64"]
    # a flag given twice: the last wins (argparse), so the cases override the base
    return [*base, *extra]


def yaml_file(e, name: str, text: str) -> str:
    p = Path(e["d"]) / name
    p.write_text(text)
    return str(p)


def judge(e, *extra, run="jrun") -> list[str]:
    return ["judge", e[run], "--judge-model", "gpt-4", "--data-dir", e["data_dir"], "--limit", "2", "--no-progress",
            *extra]


def lb(e, *extra) -> list[str]:
    return ["leaderboard", e["model"], "--output", str(Path(e["d"]) / "lb"), "--offline", "true", *extra]


def delta(e, *extra) -> list[str]:
    return ["delta", e["ckpt"], "--pairs", e["prefs"], "--ref-model", e["model"], "--output",
            str(Path(e["d"]) / "delta.csv"), "--device", "cpu", *extra]


def answers(e, *extra) -> list[str]:
    return ["answers", e["model"], "--bench", "mt_bench", "--output", str(Path(e["d"]) / "ans"), "--data-dir",
            e["data_dir"], "--limit", "1", "--max-new-tokens", "2", *extra]


def repro(e, text: str, *extra) -> list[str]:
    return ["reproduce", "--config", yaml_file(e, "repro.yaml", text), "--output", str(Path(e["d"]) / "rp"),
            "--dry-run", *extra]


# (id, argv from the env, what the one line must name)
CASES = [
    # train: flags
    ("train-objective", lambda e: train(e, "--objective", "ppo"), "--objective: 'ppo' is not one of"),
    ("train-beta-text", lambda e: train(e, "--beta", "abc"), "--beta"),
    ("train-beta-zero", lambda e: train(e, "--beta", "0"), "--beta: must be > 0"),
    ("train-lr-negative", lambda e: train(e, "--lr", "-1"), "--learning-rate: must be > 0"),
    ("train-batch-zero", lambda e: train(e, "--batch-size", "0"), "--batch-size: must be >= 1"),
    ("train-max-steps-zero", lambda e: train(e, "--max-steps", "0"), "--max-steps: must be >= 1"),
    ("train-lam-negative", lambda e: train(e, "--lam", "-1"), "--lam: must be >= 0"),
    ("train-reduce", lambda e: train(e, "--reduce", "avg"), "--reduce: 'avg' is not one of"),
    ("train-bool-flag", lambda e: train(e, "--gradient-checkpointing", "maybe"), "--gradient-checkpointing"),
    ("train-lengths", lambda e: train(e, "--max-length", "32", "--max-prompt-length", "64"),
     "max_prompt_length (64) must be smaller than max_length (32)"),
    ("train-no-model", lambda e: ["train", "--data", e["prefs"], "--output", e["d"] + "/x"], "--model: required"),
    ("train-unknown-flag", lambda e: train(e, "--betta", "0.1"), "unrecognized arguments: --betta"),
    ("train-device-cuda", lambda e: train(e, "--device", "cuda"), "CUDA is not available"),
    # train: config files
    ("train-config-missing", lambda e: train(e, "--config", e["d"] + "/nope.yaml"), "nope.yaml: config file not found"),
    ("train-config-text-beta", lambda e: train(e, "--config", yaml_file(e, "c1.yaml", 'seed: 1\nbeta: "abc"\n')),
     "c1.yaml:2: beta: expected a number, got 'abc'"),
    ("train-config-string-bool", lambda e: train(e, "--config", yaml_file(e, "c2.yaml", 'gradient_checkpointing: "no"\n')),
     "c2.yaml:1: gradient_checkpointing: expected true or false"),
    ("train-config-unknown-key", lambda e: train(e, "--config", yaml_file(e, "c3.yaml", "betta: 0.2\n")),
     "c3.yaml:1: betta: unknown setting (did you mean 'beta'?)"),
    ("train-config-bad-yaml", lambda e: train(e, "--config", yaml_file(e, "c4.yaml", "beta: [0.1\nseed: 2\n")),
     "c4.yaml:"),
    ("train-config-list", lambda e: train(e, "--config", yaml_file(e, "c5.yaml", "- beta\n")),
     "c5.yaml: expected a mapping"),
    ("train-config-int-as-float", lambda e: train(e, "--config", yaml_file(e, "c6.yaml", "batch_size: 2.5\n")),
     "c6.yaml:1: batch_size: expected an integer"),
    # train: inputs
    ("train-model-missing", lambda e: train(e, "--model", e["d"] + "/no/such/model"), "model not found"),
    ("train-model-not-hf", lambda e: train(e, "--model", e["d"] + "/notamodel"), "not a Hugging Face model checkpoint"),
    ("train-data-missing", lambda e: train(e, "--data", e["d"] + "/nope.jsonl"), "nope.jsonl: preference data file not found"),
    ("train-data-bad-json", lambda e: train(e, "--data", e["bad_json"]), "bad_json.jsonl:2: invalid JSON"),
    ("train-data-missing-field", lambda e: train(e, "--data", e["no_rejected"]), "no_rejected.jsonl:2 (id 1): missing field 'rejected'"),
    ("train-data-non-string", lambda e: train(e, "--data", e["int_chosen"]), "int_chosen.jsonl:1 (id 0): field 'chosen'"),
    ("train-data-role", lambda e: train(e, "--data", e["usr_role"]), "role 'usr' is not one of"),
    # train: the run directory
    ("train-exists-no-resume", lambda e: train(e, "--output", e["run"]), "already holds a run; pass --resume"),
    ("train-resume-other-objective", lambda e: train(e, "--output", e["run"], "--resume", "--objective", "ipo"),
     "--resume: " + "{run}" + " was trained with objective = 'dpo', not 'ipo'"),
    ("train-resume-other-beta", lambda e: train(e, "--output", e["run"], "--resume", "--beta", "0.2"),
     "was trained with beta = 0.1, not 0.2"),
    ("train-resume-other-data", lambda e: train(e, "--output", e["run"], "--resume", "--data", e["bad_rating"]),
     "was trained with data = "),
    # answers
    ("answers-max-new-tokens", lambda e: answers(e, "--max-new-tokens", "0"), "--max-new-tokens: must be >= 1"),
    ("answers-batch-size", lambda e: answers(e, "--batch-size", "0"), "--batch-size: must be >= 1"),
    ("answers-limit", lambda e: answers(e, "--limit", "-2"), "--limit: must be >= 1"),
    ("answers-per-category", lambda e: answers(e, "--per-category", "0"), "--per-category: must be >= 1"),
    ("answers-conv-template", lambda e: answers(e, "--conv-template", "vicunaa_v1.1"),
     "conv_template 'vicunaa_v1.1': not a FastChat conversation template (did you mean"),
    ("answers-bench", lambda e: answers(e, "--bench", "alpaca"), "--bench: invalid choice"),
    ("answers-model-missing", lambda e: ["answers", e["d"] + "/nope", "--bench", "mt_bench", "--output", e["d"]],
     "nope: model not found"),
    ("answers-data-dir", lambda e: answers(e, "--data-dir", e["d"] + "/nowhere"), "--data-dir " + "{d}" + "/nowhere"),
    ("answers-bad-questions", lambda e: answers(e, "--data-dir", e["bad_q"]), "question.jsonl:1: missing field 'turns'"),
    # judge
    ("judge-concurrency", lambda e: judge(e, "--concurrency", "0"), "--concurrency: 'auto' or a number >= 1, got 0"),
    ("judge-concurrency-word", lambda e: judge(e, "--concurrency", "lots"), "--concurrency: 'auto' or a number >= 1"),
    ("reproduce-concurrency", lambda e: repro(e, "judge:\n  concurrency: many\n"),
     "repro.yaml: judge.concurrency: 'auto' or a number >= 1"),
    ("judge-timeout", lambda e: judge(e, "--timeout", "0"), "--timeout: must be > 0"),
    ("judge-limit", lambda e: judge(e, "--limit", "0"), "--limit: must be >= 1"),
    ("judge-per-category", lambda e: judge(e, "--per-category", "-1"), "--per-category: must be >= 1"),
    ("judge-one-model-pairwise", lambda e: judge(e, "--mode", "pairwise", "--models", "alpha"), "--models A B"),
    ("judge-missing-answers", lambda e: judge(e, "--models", "alpha", "gamma", "--dry-run"), "gamma.jsonl is missing"),
    ("judge-no-key", lambda e: judge(e, "--api-key-env", "SRDPO_TEST_NO_SUCH_KEY"), "SRDPO_TEST_NO_SUCH_KEY"),
    ("judge-refused", lambda e: judge(e, "--base-url", "http://127.0.0.1:9/v1", "--concurrency", "1"),
     "http://127.0.0.1:9/v1: the judge endpoint refused"),
    ("judge-local-missing", lambda e: judge(e, "--judge-backend", "local", "--judge-model", e["d"] + "/nope"),
     "model not found"),
    ("judge-run-dir-missing", lambda e: ["judge", e["d"] + "/nowhere", "--judge-model", "gpt-4"], "run directory not found"),
    ("judge-no-answers", lambda e: ["judge", e["d"] + "/notamodel", "--judge-model", "gpt-4"], "no answer files"),
    ("judge-broken-judgments", lambda e: judge(e, "--dry-run", run="broken"), "gpt-4_single.jsonl:2: missing field 'turn'"),
    # leaderboard
    ("lb-batch-size", lambda e: lb(e, "--batch-size", "abc"), "--batch-size: expected a positive integer or 'auto'"),
    ("lb-limit", lambda e: lb(e, "--limit", "0"), "--limit: must be > 0"),
    ("lb-task", lambda e: lb(e, "--tasks", "arc"), "--tasks[0]: 'arc' is not one of"),
    ("lb-fewshot", lambda e: lb(e, "--num-fewshot", "gsm8k=x"), "--num-fewshot 'gsm8k=x': expected TASK=N"),
    ("lb-models-json-missing", lambda e: ["leaderboard", "--models-json", "--output", e["d"] + "/notamodel"],
     "models.json not found"),
    ("lb-models-json-cut", lambda e: ["leaderboard", "--models-json", "--output", e["cut_models"]],
     "models.json:1: not valid JSON"),
    ("lb-checkpoint-missing", lambda e: ["leaderboard", e["d"] + "/nope", "--output", e["d"]], "nope: not a directory"),
    # delta
    ("delta-pairs-no-answers", lambda e: ["delta-pairs", e["jrun"], "--model-a", "alpha", "--model-b", "nobody",
                                          "--judge", "gpt-4", "--output", e["d"] + "/p.jsonl"],
     "mt_bench/model_answer/nobody.jsonl not found"),
    ("delta-batch-size", lambda e: delta(e, "--batch-size", "0"), "--batch-size: must be >= 1"),
    ("delta-beta-zero", lambda e: delta(e, "--beta", "0"), "--beta: must be > 0"),
    ("delta-rating-fields", lambda e: delta(e, "--rating-fields", "chosen_ratng,rejected_rating"),
     "no record of " + "{prefs}" + " has these fields"),
    ("delta-rating-text", lambda e: delta(e, "--pairs", e["bad_rating"]), "bad_rating.jsonl:2: field 'chosen_rating' must be a number"),
    ("delta-no-output", lambda e: ["delta", e["ckpt"], "--pairs", e["prefs"], "--ref-model", e["model"]], "--output"),
    ("delta-no-reference", lambda e: ["delta", e["ckpt"], "--pairs", e["prefs"], "--output", e["d"] + "/d2.csv"],
     "--ref-model"),
    ("delta-pairs-missing", lambda e: delta(e, "--pairs", e["d"] + "/nope.jsonl"), "nope.jsonl: preference data file not found"),
    # figures, data
    ("figures-missing", lambda e: ["figures", e["d"] + "/nowhere"], "run directory not found"),
    ("figures-n-boot", lambda e: ["figures", e["d"], "--n-boot", "0"], "--n-boot: must be >= 1"),
    ("figures-empty", lambda e: ["figures", e["d"] + "/notamodel"], "no results to report"),
    ("figures-bad-score", lambda e: ["figures", e["broken"]], "gpt-4_single.jsonl:2"),
    ("figures-models-json-cut", lambda e: ["figures", e["cut_models"]], "models.json:1: not valid JSON"),
    ("data-fetch-offline", lambda e: ["data", "fetch", "--cache-dir", e["d"] + "/c", "--base-url", "http://127.0.0.1:9/x"],
     "http://127.0.0.1:9/x/judge_prompts.jsonl: download failed"),
    ("data-verify-missing", lambda e: ["data", "verify", e["d"] + "/nowhere"], "nowhere: not a directory"),
    # reproduce
    ("reproduce-config-missing", lambda e: ["reproduce", "--config", e["d"] + "/nope.yaml"], "nope.yaml: config file not found"),
    ("reproduce-lr-text", lambda e: repro(e, "train:\n  learning_rate: fast\n"), "repro.yaml:2: train.learning_rate: expected a number"),
    ("reproduce-unknown-section", lambda e: repro(e, "trian:\n  beta: 0.1\n"), "repro.yaml:1: trian: unknown setting (did you mean 'train'?)"),
    ("reproduce-objective", lambda e: repro(e, "train:\n  objectives: [dpo, kto]\n"), "train.objectives[1]: 'kto' is not one of"),
    ("reproduce-pairs", lambda e: repro(e, "judge:\n  pairs: [[sr-dpo]]\n"), "judge.pairs: each entry must be [A, B]"),
    ("reproduce-model-missing", lambda e: repro(e, "model: /no/such/model\n"), "config model: /no/such/model: model not found"),
    ("reproduce-data-missing", lambda e: repro(e, "data: /no/such/prefs.jsonl\n"), "config data: /no/such/prefs.jsonl: file not found"),
    ("reproduce-bool", lambda e: repro(e, "leaderboard:\n  enabled: \"no\"\n"), "leaderboard.enabled: expected true or false"),
    ("reproduce-stage", lambda e: ["reproduce", "--stages", "nope"], "--stages: invalid choice"),
    ("reproduce-train-seed", lambda e: repro(e, "train:\n  seed: 3\n"),
     "repro.yaml:2: train.seed: unknown setting (it is set at the top level, as a list: seeds: [0, 1, 2]"),
    ("reproduce-seeds-twice", lambda e: repro(e, "seeds: [1, 1]\n"), "seeds: give one or more different seeds"),
    ("reproduce-seeds-flag", lambda e: ["reproduce", "--seeds", "0", "0", "--dry-run"], "--seeds: give different seeds"),
    ("cli-unknown-command", lambda e: ["trian"], "invalid choice: 'trian'"),
]


def _one_line_error(capsys, rc) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip() and "Warning" not in line and "warn(" not in line]
    assert rc == 2, err
    assert "Traceback" not in err, err
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_mistake_gives_one_clear_line(env, capsys, monkeypatch, case):
    _, argv, culprit = case
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-real-key")
    try:
        rc = main(argv(env))
    except SystemExit as e:  # argparse's own errors
        rc = e.code
    line = _one_line_error(capsys, rc)
    assert culprit.format(**env) in line, line


def test_every_command_a_user_runs_has_its_mistakes_here(env):
    """Whichever command a user mistypes, the one-line error is tested for it: every sub-command of
    `srdpo-eval` (and each action of `data`) appears among the cases above."""
    from srdpo_eval.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    commands = {name for name in sub.choices if name != "data"}
    commands |= {f"data {a}" for a in next(x for x in sub.choices["data"]._actions if x.dest == "data_command").choices}
    argvs = [argv(env) for _, argv, _ in CASES]
    covered = {" ".join(a[:2]) if a[0] == "data" else a[0] for a in argvs}
    assert commands <= covered, f"no mistake case for: {sorted(commands - covered)}"


def test_ctrl_c_is_one_line_and_debug_shows_the_traceback(env, capsys, monkeypatch):
    import trainer.train

    def interrupted(cfg):
        raise KeyboardInterrupt

    monkeypatch.setattr(trainer.train, "train", interrupted)
    line = _one_line_error(capsys, main(train(env, "--output", env["d"] + "/ctrl-c")))
    assert "interrupted" in line and "rerun the same command to resume" in line
    with pytest.raises(ValueError, match="--beta"):  # --debug: the user error with its traceback
        main(["--debug", *train(env, "--beta", "0")])


def test_valid_yaml_numbers_and_booleans_are_taken(env, tmp_path):
    from trainer.config import build_config

    cfg = build_config({"model": "m", "data": "d", "output": "o"}, config_file=yaml_file(
        env, "ok.yaml", "learning_rate: 1e-6\nbeta: 1\ngradient_checkpointing: false\n"))
    assert (cfg.learning_rate, cfg.beta, cfg.gradient_checkpointing) == (1e-6, 1.0, False)


def test_resuming_a_finished_run_changes_nothing(env, capsys):
    run = Path(env["run"])
    before = {str(p): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}
    assert main(train(env, "--output", env["run"], "--resume")) == 0
    assert "already finished" in capsys.readouterr().out
    assert {str(p): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()} == before
    assert main(train(env, "--output", env["run"], "--resume", "--objective", "ipo")) == 2  # refused, and ...
    assert {str(p): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()} == before  # ... untouched


def test_no_traceback_when_run_as_a_program(env):
    """The same error path when `srdpo-eval` runs as its own process (what a user sees)."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "srdpo_eval", *train(env, "--beta", "abc")], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert re.fullmatch(r"srdpo-eval train: error: .*--beta.*\n", proc.stderr), proc.stderr


def test_a_hub_model_offline_is_one_line_naming_it(env, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    line = _one_line_error(capsys, main(train(env, "--model", "srdpo-test/not-cached-anywhere")))
    assert "srdpo-test/not-cached-anywhere: not a local directory, and getting it from the Hugging Face hub" in line


def test_judge_dry_run_needs_no_key(env, capsys, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    assert main(judge(env, "--dry-run")) == 0
    out = capsys.readouterr().out
    assert "records needed 8, already in file 0" in out and "to request 8" in out


def test_every_flag_of_every_command_says_what_it_does():
    """`--help` describes each flag (a bare `--mode {single,pairwise}` leaves the user guessing), and no
    switch that turns something off reads backwards ("--no-progress ... (default: True)")."""
    import argparse
    import re

    from srdpo_eval.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    bare, backwards = [], []
    for name, parser in sub.choices.items():
        bare += [f"{name} {a.option_strings[0]}" for a in parser._actions
                 if a.option_strings and "-h" not in a.option_strings and not a.help]
        for entry in re.split(r"\n  (?=-)", parser.format_help()):
            if entry.startswith("--no-") and "(default: True)" in entry:
                backwards.append(f"{name} {entry.split()[0]}")
    assert not bare and not backwards, (bare, backwards)
