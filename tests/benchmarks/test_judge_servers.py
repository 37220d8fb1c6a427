"""The judge against servers as they are: one request at a time with a queue (llama.cpp, small vLLM), a
context shorter than the prompt, partial failures; honest counts; dry runs that reach no network and write
nothing; endpoint-named judges."""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path

import pytest

pytest.importorskip("openai")  # not on a bare GPU machine: skipped there, never a collection error

from benchmarks.judge.openai_backend import OpenAIBackend
from benchmarks.judge.run import JudgeRunError, judge_pairwise, judge_single
from contracts.run_dir import RunDir
from fake_openai import FakeOpenAI, write_answers
from benchmarks.fastchat_data import load_questions

FAST = dict(backoff_initial=0.01, backoff_max=0.05, retry_after_max=0.1)


@pytest.fixture
def key(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-real-key")
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)


def make_run(tmp_path: Path, data: Path, models=("alpha", "beta"), n: int | None = None) -> Path:
    run = tmp_path / "run"
    qs = load_questions(data, "mt_bench")[:n]
    for m in models:
        write_answers(RunDir(run).answers("mt_bench", m), qs, m)
    return run


def test_one_at_a_time_server_with_the_defaults(tmp_path, small_data, key):
    """Concurrency auto and streamed replies: no timeout, no retry, no work the server computes for nobody,
    and only a few requests ever queue at the server."""
    run = make_run(tmp_path, small_data, n=6)
    with FakeOpenAI(serial=True, latency=0.05) as server:
        backend = OpenAIBackend("gpt-4", base_url=server.base_url, **FAST)  # the default settings
        s = judge_single(run, "mt_bench", backend, data_dir=small_data, progress=False, limit=6)
        assert not s.failed and s.written == s.matches == 24
        assert s.http["attempts"] == server.requests == s.calls_made == 24 and s.http["retries"] == {}
        assert server.abandoned == 0 and server.max_in_flight <= 5  # settles at 3-4 queued
        assert "HTTP requests 24 (retries: none)" in s.describe()


def test_fixed_concurrency_against_a_queue_times_out_and_wastes_work(tmp_path, small_data, key):
    """What the defaults used to do (16 in flight, the timeout counting the wait in the queue): timeouts, the
    same work sent again, replies computed for nobody — the case `auto` and streaming are for."""
    run = make_run(tmp_path, small_data, n=6)
    with FakeOpenAI(serial=True, latency=0.05) as server:
        backend = OpenAIBackend("gpt-4", base_url=server.base_url, concurrency=16, stream=False, timeout=0.3,
                                max_retries=1, **FAST)
        with pytest.raises(JudgeRunError):
            judge_single(run, "mt_bench", backend, data_dir=small_data, progress=False, limit=6)
        assert backend.retries["timeout"] > 0 and backend.attempts > 24
    assert server.abandoned > 0


def test_auto_grows_where_the_server_has_room(tmp_path, small_data, key):
    run = make_run(tmp_path, small_data)
    with FakeOpenAI(latency=0.05) as server:  # serves every request at once
        backend = OpenAIBackend("gpt-4", base_url=server.base_url, **FAST)
        s = judge_single(run, "mt_bench", backend, data_dir=small_data, progress=False)
        assert not s.failed and backend.window.peak >= 8


def test_counts_are_http_attempts_and_retries_by_cause(tmp_path, small_data, key):
    run = make_run(tmp_path, small_data, n=3)
    with FakeOpenAI(faults={0: "429", 2: "500", 4: "drop", 6: "badjson"}, retry_after=0.05) as server:
        s = judge_single(run, "mt_bench", OpenAIBackend("gpt-4", base_url=server.base_url, **FAST),
                         data_dir=small_data, progress=False, limit=3)
        assert s.calls_made == 12 and s.http["attempts"] == server.requests == 16
        assert s.http["retries"] == {"rate limit (429)": 1, "server error (500)": 1, "connection": 1, "bad reply": 1}


def test_context_too_long_is_named_not_retried_and_not_promised_to_a_rerun(tmp_path, small_data, key):
    run = make_run(tmp_path, small_data, n=2)
    with FakeOpenAI(faults={1: "context"}) as server:
        backend = OpenAIBackend("gpt-4", base_url=server.base_url, **FAST)
        with pytest.raises(JudgeRunError) as err:
            judge_pairwise(run, "mt_bench", backend, pairs=[("alpha", "beta")], data_dir=small_data, progress=False,
                           limit=2)
        assert server.requests == 8  # the one too long is sent once
    s = err.value.summary
    assert s.too_long == 1 and len(s.failed) == 1 and s.written == 3
    msg = str(err.value)
    assert "do not fit the model's context" in msg and "maximum context length is 1024" in msg
    assert "--max-tokens" in msg and "rerun to retry" not in msg and "fails the same way" in msg


def test_cli_writes_partial_tables_and_fails_on_an_empty_one(tmp_path, small_data, key, capsys):
    from srdpo_eval.cli import main

    run = make_run(tmp_path, small_data, n=2)
    common = ["--judge-model", "gpt-4", "--data-dir", str(small_data), "--limit", "2", "--no-progress"]
    with FakeOpenAI(faults={0: "context"}) as server:
        assert main(["judge", str(run), *common, "--base-url", server.base_url]) == 1
    out, err = capsys.readouterr()
    assert "partial tables: 1 judgments failed" in out and "do not fit the model's context" in err
    table = RunDir(run).judge_tables / "mt_bench_single_gpt-4.csv"
    assert table.is_file() and "alpha" in table.read_text()  # from the 7 judgments that were made
    run2 = make_run(tmp_path / "b", small_data, n=2)
    with FakeOpenAI(faults=lambda n, body: "malformed") as server:  # every reply without a rating
        assert main(["judge", str(run2), *common, "--base-url", server.base_url]) == 2
    assert "no usable judgment to tabulate" in capsys.readouterr().err


def test_an_endpoint_named_by_a_path_gets_a_short_file_name(tmp_path, small_data, key, capsys):
    from srdpo_eval.cli import main

    run = make_run(tmp_path, small_data, n=1)
    model = "/home/user/.cache/llm/SmolLM2-135M-Instruct.Q4_1.gguf"  # llama.cpp without --model_alias
    with FakeOpenAI() as server:
        base = ["judge", str(run), "--judge-model", model, "--base-url", server.base_url, "--data-dir", str(small_data),
                "--limit", "1", "--no-progress"]
        assert main(base) == 0
        assert main([*base, "--judge-name", "smollm2-q4"]) == 0
        bodies = {e["body"]["model"] for e in server.log}
    from contracts.ids import short_name

    files = sorted(p.name for p in (run / "mt_bench" / "model_judgment").glob("*.jsonl"))
    assert short_name(model).startswith("SmolLM2-135M-Instruct.Q4_1-")
    assert files == sorted([f"{short_name(model)}_single.jsonl", "smollm2-q4_single.jsonl"])
    assert all(len(f) < 60 for f in files) and bodies == {model}  # the requests still name the served model
    rec = json.loads((run / "mt_bench/model_judgment/smollm2-q4_single.jsonl").read_text().splitlines()[0])
    assert rec["judge"][0] == "smollm2-q4"


# ------------------------------------------------------------------------------ dry runs: no network, no files


@pytest.fixture
def no_network(monkeypatch):
    """Any connection to another host than 127.0.0.1 / ::1 fails, and is recorded."""
    tried = []
    real = socket.socket.connect

    def connect(self, address):
        host = address[0] if isinstance(address, tuple) else address
        if host not in ("127.0.0.1", "::1", "localhost") and not str(host).startswith("/"):
            tried.append(address)
            raise ConnectionRefusedError(f"test: no network ({address})")
        return real(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    real_gai = socket.getaddrinfo

    def getaddrinfo(host, *a, **k):
        if host not in ("127.0.0.1", "::1", "localhost", None):
            tried.append(host)
            raise socket.gaierror(f"test: no name resolution ({host})")
        return real_gai(host, *a, **k)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return tried


def test_judge_dry_run_reaches_nothing_and_writes_nothing(tmp_path, small_data, key, no_network, capsys):
    from srdpo_eval.cli import main

    run = make_run(tmp_path, small_data, n=2)
    before = sorted(p.relative_to(run) for p in run.rglob("*"))
    assert main(["judge", str(run), "--judge-model", "gpt-4", "--data-dir", str(small_data), "--limit", "2",
                 "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "estimate:" in out and "completion tokens (250 a call; at most" in out
    assert no_network == [] and sorted(p.relative_to(run) for p in run.rglob("*")) == before


def test_reproduce_dry_run_with_a_local_endpoint(tmp_path, monkeypatch, no_network, capsys):
    """OPENAI_BASE_URL set: the plan names the endpoint and prices nothing; it reaches and writes nothing."""
    from srdpo_eval.cli import main

    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:8080/v1")
    out = tmp_path / "plan"
    assert main(["reproduce", "--output", str(out), "--dry-run"]) == 0
    text = capsys.readouterr().out
    line = next(l for l in text.splitlines() if l.startswith("judge ("))
    assert "at http://127.0.0.1:8080/v1" in line and "$" not in line
    assert no_network == [] and not out.exists()


def test_answers_take_the_default_model(tmp_path, small_data):
    from srdpo_eval.cli import main

    assert main(["answers", "default", "--bench", "mt_bench", "--output", str(tmp_path), "--data-dir",
                 str(small_data), "--limit", "1", "--max-new-tokens", "2"]) == 0
    assert list((tmp_path / "mt_bench" / "model_answer").glob("*.jsonl"))


def test_without_a_selection_the_judge_takes_the_questions_the_answers_cover(tmp_path, small_data, key, capsys):
    from srdpo_eval.cli import main

    run = make_run(tmp_path, small_data, n=3)  # answers made for 3 questions only (as --limit 3 or --per-category)
    with FakeOpenAI() as server:
        assert main(["judge", str(run), "--judge-model", "gpt-4", "--base-url", server.base_url, "--data-dir",
                     str(small_data), "--no-progress"]) == 0
        assert server.requests == 2 * 3 * 2
    assert "the 3 questions (of 16) the answers were made for (--limit 3)" in capsys.readouterr().err
    # models that answered different questions: an error naming the file that lacks one
    qs = load_questions(small_data, "mt_bench")
    write_answers(RunDir(run).answers("mt_bench", "beta"), qs[:2], "beta")
    assert main(["judge", str(run), "--judge-model", "gpt-4", "--data-dir", str(small_data), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert re.search(r"(alpha|beta)\.jsonl: no answer for question_id \d+; answer it, or judge", err), err
