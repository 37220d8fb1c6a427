"""Faults a long run meets, through the command line: a full disk, two writers on one output, a damaged
cache. Each ends in one line (exit 2) or a one-line warning, loses nothing finished, doubles nothing, and
the rerun ends where an undisturbed run does."""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from fake_openai import FakeOpenAI, write_answers
from srdpo_eval.cli import main

ROOT = Path(__file__).resolve().parents[2]
NO_SPACE = r"no space left on the device.*; free space and rerun the same command: what was finished is kept\n"


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("faults") / "pairs.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"Question {i}: the sea {i}?", "chosen": " yes good" * (1 + i % 2),
                                        "rejected": " no bad"}) + "\n" for i in range(12)))
    return path


def train_args(model, data, out, cache, *more) -> list[str]:
    return ["train", "--objective", "sr-dpo", "--model", str(model), "--data", str(data), "--output", str(out),
            "--ref-cache-dir", str(cache), "--batch-size", "4", "--lr", "1e-3", "--warmup-steps", "0",
            "--max-steps", "3", "--save-every", "1", "--max-length", "64", "--max-prompt-length", "32",
            "--device", "cpu", "--no-progress", *more]


def error_line(err: str) -> str:
    """What the user reads: the last line (libraries' progress bars may come before it in a test)."""
    assert "Traceback" not in err, err
    return err.rstrip("\n").rsplit("\n", 1)[-1].rsplit("\r", 1)[-1] + "\n"


def weights(ckpt: Path) -> dict:
    return load_file(str(ckpt / "model.safetensors"))


def same_weights(a: Path, b: Path) -> bool:
    wa, wb = weights(a), weights(b)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.fixture(scope="module")
def undisturbed(tiny_model_dir, data, tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("undisturbed")  # its checkpoints whole, trainer state in: their size is read
    assert main(train_args(tiny_model_dir, data, d / "run", d / "cache", "--keep-trainer-state", "true")) == 0
    return d / "run"


def full_disk_after(monkeypatch, n: int, log: list | None = None) -> None:
    """Every append through contracts.files fails for want of space after ``n`` of them, half-way through
    its bytes (as a real full disk does)."""
    import contracts.files as F

    real, calls = F._write, [0]

    def write(fd, data):
        calls[0] += 1
        if calls[0] > n:
            real(fd, data[:max(1, len(data) // 2)])
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd, data)

    monkeypatch.setattr(F, "_write", write)


# ------------------------------------------------------------------------------------------ full disk


def test_full_disk_while_train_writes_a_checkpoint(tiny_model_dir, data, undisturbed, tmp_path, monkeypatch, capsys):
    import trainer.checkpoint as C

    real = C._save_trainer_state

    def full_disk_at_checkpoint_2(policy, opt, sched, folder, state):
        if folder.parent.name == "checkpoint-2.tmp":  # after the weights, as the optimizer state is written
            raise OSError(errno.ENOSPC, "No space left on device", str(folder / "optimizer" / "shard.safetensors"))
        return real(policy, opt, sched, folder, state)

    monkeypatch.setattr(C, "_save_trainer_state", full_disk_at_checkpoint_2)
    out = tmp_path / "run"
    args = train_args(tiny_model_dir, data, out, tmp_path / "cache")
    capsys.readouterr()
    assert main(args) == 2
    err = error_line(capsys.readouterr().err)
    assert re.fullmatch(r"srdpo-eval train: error: \S+/checkpoint-2: " + NO_SPACE, err), err
    assert "(about " in err and " needed)" in err
    assert not (out / "checkpoint-2.tmp").exists() and not (out / "checkpoint-2").exists()
    assert (out / "checkpoint-1" / "trainer_state" / "state.json").is_file()  # what was finished is kept
    monkeypatch.undo()
    assert main([*args, "--resume"]) == 0
    assert same_weights(out / "final", undisturbed / "final")
    assert [json.loads(l)["step"] for l in (out / "log.jsonl").read_text().splitlines()] == [1, 2, 3]


def _mount_tmpfs(path: Path, size: int) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    try:
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True,
                           timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return r.returncode == 0


@pytest.mark.slow
def test_a_real_full_file_system_during_training(tiny_model_dir, data, undisturbed, tmp_path, capsys):
    """The same on a small file system (where this machine lets a test mount one): room for one checkpoint
    and a half; after more room, --resume ends bitwise where the undisturbed run did."""
    one = sum(f.stat().st_size for f in (undisturbed / "checkpoint-1").rglob("*") if f.is_file())
    fs = tmp_path / "small"
    if not _mount_tmpfs(fs, int(one * 1.6) + 64 * 1024):
        pytest.skip("this machine does not let a test mount a small file system (the injected case runs)")
    try:
        out = fs / "run"
        args = train_args(tiny_model_dir, data, out, tmp_path / "cache")
        capsys.readouterr()
        assert main(args) == 2
        err = error_line(capsys.readouterr().err)
        assert re.fullmatch(r"srdpo-eval train: error: \S+: " + NO_SPACE, err), err
        assert not list(fs.rglob("*.tmp")) and (out / "checkpoint-1" / "trainer_state" / "state.json").is_file()
        subprocess.run(["mount", "-o", "remount,size=64m", str(fs)], check=True, timeout=20)
        assert main([*args, "--resume"]) == 0
        assert same_weights(out / "final", undisturbed / "final")
    finally:
        subprocess.run(["umount", "-l", str(fs)], capture_output=True, timeout=20)


def _answers_args(model, run, data_dir) -> list[str]:
    return ["answers", str(model), "--bench", "mt_bench", "--output", str(run), "--data-dir", str(data_dir),
            "--limit", "3", "--max-new-tokens", "3", "--device", "cpu"]


def test_full_disk_while_answers_append(tiny_model_dir, small_data, tmp_path, monkeypatch, capsys):
    from benchmarks.fastchat_data import load_answers

    assert main(_answers_args(tiny_model_dir, tmp_path / "calm", small_data)) == 0
    full_disk_after(monkeypatch, 4)  # the turn-1 side file takes 3 lines, then 1 answer: the 2nd fails
    run = tmp_path / "run"
    capsys.readouterr()
    assert main(_answers_args(tiny_model_dir, run, small_data)) == 2
    err = error_line(capsys.readouterr().err)
    assert re.fullmatch(r"srdpo-eval answers: error: \S+\.jsonl: " + NO_SPACE, err), err
    path = next((run / "mt_bench" / "model_answer").glob("*.jsonl"))
    for f in (path, path.with_name(path.name + ".partial")):
        assert f.read_text().endswith("\n")  # no half line
    assert len(load_answers(path)) == 1
    monkeypatch.undo()
    assert main(_answers_args(tiny_model_dir, run, small_data)) == 0
    got, want = load_answers(path), load_answers(next((tmp_path / "calm" / "mt_bench" / "model_answer").glob("*.jsonl")))
    assert {q: r["choices"] for q, r in got.items()} == {q: r["choices"] for q, r in want.items()}
    assert [r["answer_id"] for r in got.values()] == [r["answer_id"] for r in want.values()]


def _judge_args(run, server, data_dir, *more) -> list[str]:
    return ["judge", str(run), "--judge-model", "gpt-4", "--base-url", server.base_url, "--bench", "mt_bench",
            "--mode", "single", "--data-dir", str(data_dir), "--no-progress", *more]


def _judge_run(tmp_path: Path, data_dir: Path, name: str) -> Path:
    from benchmarks.fastchat_data import load_questions
    from contracts.run_dir import RunDir

    run = tmp_path / name
    write_answers(RunDir(run).answers("mt_bench", "alpha"), load_questions(data_dir, "mt_bench"), "alpha")
    return run


def _records(path: Path) -> dict:
    recs = [json.loads(l) for l in path.read_text().splitlines()]
    keys = [(r["question_id"], r["model"], r["turn"]) for r in recs]
    assert len(keys) == len(set(keys)), "a judgment written twice"
    return {k: {f: v for f, v in r.items() if f != "tstamp"} for k, r in zip(keys, recs)}


def test_full_disk_while_judge_appends(small_data, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    judgments = "mt_bench/model_judgment/gpt-4_single.jsonl"
    with FakeOpenAI() as server:
        calm = _judge_run(tmp_path, small_data, "calm")
        assert main(_judge_args(calm, server, small_data, "--no-cache")) == 0
        n = server.requests
        run = _judge_run(tmp_path, small_data, "run")
        full_disk_after(monkeypatch, 5)
        capsys.readouterr()
        assert main(_judge_args(run, server, small_data, "--no-cache")) == 2
        err = error_line(capsys.readouterr().err)
        assert re.fullmatch(r"srdpo-eval judge: error: \S+gpt-4_single\.jsonl: " + NO_SPACE, err), err
        text = (run / judgments).read_text()
        assert text.endswith("\n") and len(text.splitlines()) == 5
        monkeypatch.undo()
        before = server.requests
        assert main(_judge_args(run, server, small_data, "--no-cache")) == 0
        assert server.requests - before == n - 5  # exactly the missing ones
    assert _records(run / judgments) == _records(calm / judgments)


# ------------------------------------------------------------------------------------- two writers


def _held_by_another_process(path: Path, what: str = ""):
    """A real second process holding the output's lock (until its stdin closes)."""
    code = ("import sys; from contracts.files import Lock; l = Lock(sys.argv[1]); print('held', flush=True); "
            "sys.stdin.read()")
    proc = subprocess.Popen([sys.executable, "-c", code, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_train_on_one_output_refuses_naming_the_first(tiny_model_dir, data, tmp_path):
    out = tmp_path / "run"
    holder = _held_by_another_process(out)
    try:
        proc = subprocess.run([sys.executable, "-m", "srdpo_eval", *train_args(tiny_model_dir, data, out,
                                                                                tmp_path / "cache")],
                              capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
    finally:
        holder.stdin.close()
        holder.wait(timeout=10)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert re.fullmatch(rf"srdpo-eval train: error: --output \S+ is being written by another process \(pid "
                        rf"{holder.pid} on {re.escape(socket.gethostname())} since .*\); wait for it to finish or "
                        rf"stop it, then rerun \(lock: \S+\)\n", proc.stderr), proc.stderr
    assert not out.exists() or not list(out.iterdir())  # nothing written
    assert main(train_args(tiny_model_dir, data, out, tmp_path / "cache")) == 0  # the lock died with its holder


@pytest.mark.slow
def test_two_judges_on_one_run_directory_judge_once(small_data, tmp_path):
    """Two `srdpo-eval judge` processes started together: one judges, the other stops at once naming it;
    every judgment is requested and written once."""
    run = _judge_run(tmp_path, small_data, "run")
    env = {**os.environ, "OPENAI_API_KEY": "sk-test", "PYTHONPATH": str(ROOT)}
    with FakeOpenAI(latency=0.05) as server:
        args = [sys.executable, "-m", "srdpo_eval", *_judge_args(run, server, small_data, "--concurrency", "2")]
        first = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        lock = run / "mt_bench" / "model_judgment" / ".gpt-4_single.jsonl.lock"
        for _ in range(600):
            if lock.exists() or first.poll() is not None:
                break
            time.sleep(0.05)
        second = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120)
        out, err = first.communicate(timeout=120)
        requests = server.requests
    assert first.returncode == 0, err
    assert second.returncode == 2 and f"pid {first.pid}" in second.stderr and "Traceback" not in second.stderr
    recs = _records(run / "mt_bench" / "model_judgment" / "gpt-4_single.jsonl")
    assert requests == len(recs) and not lock.exists()


# ---------------------------------------------------------------------------------- damaged caches


@pytest.mark.parametrize("damage", ["truncated", "overwritten"])
def test_a_damaged_reference_cache_is_recomputed(tiny_model_dir, data, undisturbed, tmp_path, damage, caplog):
    cache = tmp_path / "cache"
    shutil.copytree(undisturbed.parent / "cache", cache)
    entry = next(cache.glob("ref-*.safetensors"))
    raw = bytearray(entry.read_bytes())
    if damage == "truncated":
        entry.write_bytes(raw[: len(raw) // 3])
    else:  # bytes of the tensors changed, the header intact
        raw[-16:] = bytes(16)
        entry.write_bytes(bytes(raw))
    with caplog.at_level("WARNING", logger="trainer.refcache"):
        assert main(train_args(tiny_model_dir, data, tmp_path / "run", cache)) == 0
    said = [r.getMessage() for r in caplog.records if r.name == "trainer.refcache"]
    assert len(said) == 1 and said[0].startswith(f"reference log-prob cache {entry} is damaged (") and \
        said[0].endswith("); recomputing it") and "\n" not in said[0], said
    assert same_weights(tmp_path / "run" / "final", undisturbed / "final")
    from trainer.refcache import load_pair_logps

    load_pair_logps(entry)  # rewritten whole


def test_a_damaged_judge_reply_cache_is_moved_aside_and_rebuilt(small_data, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    run = _judge_run(tmp_path, small_data, "run")
    judgments = run / "mt_bench" / "model_judgment" / "gpt-4_single.jsonl"
    with FakeOpenAI() as server:
        assert main(_judge_args(run, server, small_data)) == 0
        first, n = _records(judgments), server.requests
        db = run / "judge_cache.sqlite"
        with sqlite3.connect(db) as con:  # fold the write-ahead log into the file, then damage the file
            con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        raw = bytearray(db.read_bytes())
        raw[200:4096] = b"\xff" * (4096 - 200)
        db.write_bytes(bytes(raw))
        judgments.unlink()  # every reply must come from the cache now
        capsys.readouterr()
        assert main(_judge_args(run, server, small_data)) == 0
        err = capsys.readouterr().err
        assert server.requests - n == n  # the damaged cache answered nothing
    lines = [l for l in err.splitlines() if "judge reply cache" in l]
    assert len(lines) == 1 and re.search(rf"damaged .*moved to judge_cache\.sqlite\.damaged-\S+; started empty, so {n} "
                                         r"replies of this run are requested again", lines[0]), err
    assert list(run.glob("judge_cache.sqlite.damaged-*")) and _records(judgments) == first
