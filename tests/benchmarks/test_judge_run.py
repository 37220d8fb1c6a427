"""Judge runs end to end over real HTTP (fake server): exactly-once records despite faults, resume after a
cut, zero requests on a full rerun, recorded parse failures, dry run, and an API key that is never written."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

pytest.importorskip("openai")  # not on a bare GPU machine: skipped there, never a collection error

from benchmarks.fastchat_data import load_judge_prompts, load_questions
from benchmarks.judge import prompts as P
from benchmarks.judge.openai_backend import OpenAIBackend
from benchmarks.judge.run import JudgeRunError, judge_async, judge_pairwise, judge_single
from fake_openai import MALFORMED_REPLY, FakeOpenAI, scripted_reply, write_answers
from contracts.run_dir import RunDir

FAST = dict(backoff_initial=0.01, backoff_max=0.05)
KEY = "sk-test-DO-NOT-LEAK-7f3a9c21e5"
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def key(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)


def make_run(tmp_path: Path, data: Path, models=("alpha", "beta"), benches=("mt_bench",)) -> Path:
    run = tmp_path / "run"
    for bench in benches:
        qs = load_questions(data, bench)
        for m in models:
            write_answers(RunDir(run).answers(bench, m), qs, m)
    return run


def n_turns(data: Path, bench: str) -> int:
    return sum(len(q.turns) for q in load_questions(data, bench))


def lines(path: Path) -> list[dict]:
    return [json.loads(l) for l in path.read_text().splitlines() if l.strip()]


def expected_reply(data: Path, prompt_name: str, user_prompt: str) -> str:
    system = load_judge_prompts(data)[prompt_name].system_prompt
    return scripted_reply(P.messages(system, user_prompt))


def backend(server, **kw) -> OpenAIBackend:
    return OpenAIBackend("gpt-4", base_url=server.base_url, **{**FAST, **kw})


# --------------------------------------------------------------------------------------------- single

def test_single_every_judgment_exactly_once_despite_faults(tmp_path, small_data, key):
    run = make_run(tmp_path, small_data)
    total = 2 * n_turns(small_data, "mt_bench")
    faults = {0: "429", 2: "500", 5: "drop", 7: "slow", 9: "malformed"}
    with FakeOpenAI(faults=faults, retry_after=0.05, slow_s=1.5) as server:
        s = judge_single(run, "mt_bench", backend(server, queue_timeout=0.5), data_dir=small_data, concurrency=4,
                         cache=tmp_path / "cache.sqlite", progress=False)
        # each fault but "malformed" (a 200) costs exactly one more request
        assert server.requests == total + 4
        malformed_prompt = next(e["body"]["messages"][-1]["content"] for e in server.log if e["fault"] == "malformed")
    recs = lines(RunDir(run).judgments("mt_bench", "gpt-4", "single"))
    assert len(recs) == total == s.written and s.calls_made == total  # retries happen inside a call
    assert len({(r["question_id"], r["model"], r["turn"]) for r in recs}) == total
    category = {q.question_id: q.category for q in load_questions(small_data, "mt_bench")}
    for r in recs:
        name = P.prompt_name("single", category[r["question_id"]], r["turn"])
        assert r["judge"] == ["gpt-4", name]
        assert f"{r['model']} answers turn {r['turn']} of question {r['question_id']}" in r["user_prompt"]
        if r["user_prompt"] == malformed_prompt:
            assert r["score"] == -1 and r["judgment"] == MALFORMED_REPLY  # recorded with the raw text
        else:
            assert r["judgment"] == expected_reply(small_data, name, r["user_prompt"])
            assert r["score"] == P.parse_rating(r["judgment"]) and 1 <= r["score"] <= 10
    assert s.parse_errors == 1 and sum(r["score"] == -1 for r in recs) == 1


def test_full_rerun_makes_zero_requests_and_adds_nothing(tmp_path, small_data, key):
    run = make_run(tmp_path, small_data)
    path = RunDir(run).judgments("mt_bench", "gpt-4", "single")
    with FakeOpenAI() as server:
        judge_single(run, "mt_bench", backend(server), data_dir=small_data, cache=False, progress=False)
        before, n = path.read_bytes(), server.requests
        s = judge_single(run, "mt_bench", backend(server), data_dir=small_data, cache=False, progress=False)
        assert server.requests == n and s.calls_made == 0 and s.already_done == s.matches
    assert path.read_bytes() == before


def test_cancelled_run_resumes_with_only_the_missing_requests(tmp_path, small_data, key):
    run = make_run(tmp_path, small_data)
    path = RunDir(run).judgments("mt_bench", "gpt-4", "single")
    total = 2 * n_turns(small_data, "mt_bench")

    async def cut_short(server):
        task = asyncio.create_task(judge_async(run, "mt_bench", backend(server), mode="single",
                                               data_dir=small_data, concurrency=2, cache=False, progress=False))
        while not path.exists() or len(path.read_text().splitlines()) < 10:
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    with FakeOpenAI(latency=0.02) as server:
        asyncio.run(cut_short(server))
    done = lines(path)
    assert 10 <= len(done) < total
    with FakeOpenAI() as server:  # without a cache, the rerun must ask for exactly what the file lacks
        judge_single(run, "mt_bench", backend(server), data_dir=small_data, cache=False, progress=False)
        assert server.requests == total - len(done)
    recs = lines(path)
    assert len(recs) == total and len({(r["question_id"], r["model"], r["turn"]) for r in recs}) == total
    assert all(r in recs for r in done)  # nothing written before the cut was touched (tstamps included)
    assert recs == sorted(recs, key=lambda r: (r["question_id"], r["model"], r["turn"]))  # in match order


def test_killed_process_resumes_from_file_and_cache(tmp_path, small_data, key):
    run = make_run(tmp_path, small_data)
    path = RunDir(run).judgments("mt_bench", "gpt-4", "single")
    total = 2 * n_turns(small_data, "mt_bench")
    with FakeOpenAI(latency=0.1) as server:  # slow enough that the kill lands midway
        # the judge alone (the full CLI would also import every stage)
        code = ("import sys; from benchmarks.judge.openai_backend import OpenAIBackend; "
                "from benchmarks.judge.run import judge_single; "
                "judge_single(sys.argv[1], 'mt_bench', OpenAIBackend('gpt-4', base_url=sys.argv[2]), "
                "data_dir=sys.argv[3], concurrency=2, progress=False)")
        cmd = [sys.executable, "-c", code, str(run), server.base_url, str(small_data)]
        proc = subprocess.Popen(cmd, cwd=REPO, env={**os.environ, "OPENAI_API_KEY": KEY},
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 60
        while (not path.exists() or len(path.read_text().splitlines()) < 6) and time.time() < deadline:
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    done = lines(path)
    assert 6 <= len(done) < total
    with open(path, "a") as f:  # what a kill in the middle of a write leaves behind
        f.write('{"question_id": 81, "model": "al')
    from benchmarks.judge.cache import JudgeCache

    with JudgeCache(run / "judge_cache.sqlite") as c:
        cached = len(c)
    assert cached >= len(done)
    with FakeOpenAI() as server:
        judge_single(run, "mt_bench", backend(server), data_dir=small_data, progress=False)
        # answered-but-unwritten calls come from the cache: only never-answered calls reach the server
        assert server.requests == total - cached
    recs = lines(path)
    assert len(recs) == total and len({(r["question_id"], r["model"], r["turn"]) for r in recs}) == total


def test_failed_judgment_raises_after_writing_the_rest(tmp_path, small_data, key):
    run = make_run(tmp_path, small_data, models=("alpha",))
    total = n_turns(small_data, "mt_bench")
    with FakeOpenAI(faults={0: "400"}) as server:
        with pytest.raises(JudgeRunError, match="1 of") as err:
            judge_single(run, "mt_bench", backend(server), data_dir=small_data, cache=False, progress=False)
        assert err.value.summary.written == total - 1 and server.requests == total
    with FakeOpenAI() as server:
        judge_single(run, "mt_bench", backend(server), data_dir=small_data, cache=False, progress=False)
        assert server.requests == 1
    assert len(lines(RunDir(run).judgments("mt_bench", "gpt-4", "single"))) == total


# ------------------------------------------------------------------------------------------- pairwise

def test_pairwise_both_orders_and_winner_names(tmp_path, small_data, key):
    run = make_run(tmp_path, small_data)
    total = n_turns(small_data, "mt_bench")
    with FakeOpenAI() as server:
        s = judge_pairwise(run, "mt_bench", backend(server), pairs=[("alpha", "beta")], data_dir=small_data,
                           cache=False, progress=False)
        assert s.written == total and server.requests == 2 * total
        # the same comparison in the other order is already judged
        judge_pairwise(run, "mt_bench", backend(server), pairs=[("beta", "alpha")], data_dir=small_data,
                       cache=False, progress=False)
        assert server.requests == 2 * total
    recs = lines(RunDir(run).judgments("mt_bench", "gpt-4", "pairwise"))
    assert len(recs) == total
    g1_map = {"A": "model_1", "B": "model_2", "tie": "tie"}
    g2_map = {"A": "model_2", "B": "model_1", "tie": "tie"}
    for r in recs:
        assert (r["model_1"], r["model_2"]) == ("alpha", "beta")
        name = r["judge"][1]
        first = f"answers turn 1 of question {r['question_id']}"
        # game 1 shows alpha as assistant A, game 2 shows beta as assistant A
        assert r["g1_user_prompt"].index("alpha " + first) < r["g1_user_prompt"].index("beta " + first)
        assert r["g2_user_prompt"].index("beta " + first) < r["g2_user_prompt"].index("alpha " + first)
        assert r["g1_winner"] == g1_map[P.parse_winner(expected_reply(small_data, name, r["g1_user_prompt"]))]
        assert r["g2_winner"] == g2_map[P.parse_winner(expected_reply(small_data, name, r["g2_user_prompt"]))]
    assert {r["g1_winner"] for r in recs} >= {"model_1", "model_2"}  # the script yields varied verdicts


def test_pairwise_parse_failures_are_recorded(tmp_path, small_data, key):
    run = make_run(tmp_path, small_data, benches=("vicuna_bench",))
    with FakeOpenAI(reply=lambda msgs: "no verdict here") as server:
        s = judge_pairwise(run, "vicuna_bench", backend(server), pairs=[("alpha", "beta")], data_dir=small_data,
                           cache=False, progress=False)
    recs = lines(RunDir(run).judgments("vicuna_bench", "gpt-4", "pairwise"))
    assert len(recs) == s.parse_errors == len(load_questions(small_data, "vicuna_bench"))
    assert all(r["g1_winner"] == r["g2_winner"] == "error" and r["g1_judgment"] == "no verdict here" for r in recs)


def test_full_benchmarks_have_fastchat_counts(tmp_path, fastchat_data_dir, key, monkeypatch):
    import benchmarks.judge.estimate as E

    monkeypatch.setattr(E, "token_counter", lambda *a, **k: ((lambda text: len(text) // 4), "test"))
    run = make_run(tmp_path, fastchat_data_dir, benches=("mt_bench", "vicuna_bench"))
    with FakeOpenAI() as server:
        b = backend(server)
        kw = dict(data_dir=fastchat_data_dir, cache=False, dry_run=True, progress=False)
        # MT-Bench: 80 questions x 2 turns; Vicuna-Bench: 80 one-turn questions; pairwise plays both orders
        for bench, n in (("mt_bench", 160), ("vicuna_bench", 80)):
            s = judge_pairwise(run, bench, b, pairs=[("alpha", "beta")], **kw)
            assert (s.matches, s.calls_needed) == (n, 2 * n)
            s = judge_single(run, bench, b, models=["alpha"], **kw)
            assert (s.matches, s.calls_needed) == (n, n)
        assert server.requests == 0


def test_cli_prints_and_saves_tables(tmp_path, small_data, key, capsys):
    from srdpo_eval.cli import main

    run = make_run(tmp_path, small_data, models=("alpha", "beta", "gamma"), benches=("mt_bench", "vicuna_bench"))
    with FakeOpenAI() as server:
        common = ["--judge-model", "gpt-4", "--base-url", server.base_url, "--data-dir", str(small_data),
                  "--no-progress"]
        assert main(["judge", str(run), *common, "--mode", "pairwise", "--baseline", "alpha"]) == 0
        assert main(["judge", str(run), *common, "--mode", "single", "--bench", "mt_bench"]) == 0
    out = capsys.readouterr().out
    assert out.count("beta vs alpha") == 2 and out.count("gamma vs alpha") == 2
    tables = run / "tables" / "judge"
    pair = (tables / "vicuna_bench_pairwise_gpt-4.csv").read_text().splitlines()
    assert pair[0].startswith("comparison,model_a,model_b,win,tie,loss,n,")
    assert [l.split(",")[0] for l in pair[1:]] == ["beta vs alpha", "gamma vs alpha"]
    single = (tables / "mt_bench_single_gpt-4.csv").read_text().splitlines()
    assert single[0] == "model,turn_1,turn_2,overall,ci_low,ci_high,n,n_errors" and len(single) == 4
    cats = (tables / "mt_bench_single_gpt-4_categories.csv").read_text().splitlines()[0]
    assert cats.split(",")[1:3] == ["writing", "roleplay"]


# -------------------------------------------------------------------------------------- dry run, key

def test_dry_run_counts_cached_and_done_and_calls_nothing(tmp_path, small_data, key, monkeypatch):
    import benchmarks.judge.estimate as E

    monkeypatch.setattr(E, "token_counter", lambda *a, **k: ((lambda text: len(text) // 4), "test: chars/4"))
    run = make_run(tmp_path, small_data)
    per_model = n_turns(small_data, "mt_bench")
    path = RunDir(run).judgments("mt_bench", "gpt-4", "single")
    with FakeOpenAI() as server:
        judge_single(run, "mt_bench", backend(server), models=["alpha"], data_dir=small_data, progress=False)
        path.unlink()  # records gone, replies still cached
        judge_single(run, "mt_bench", backend(server), models=["beta"], data_dir=small_data, progress=False)
        n = server.requests
        s = judge_single(run, "mt_bench", backend(server), data_dir=small_data, dry_run=True, progress=False)
        assert server.requests == n
    assert (s.matches, s.already_done, s.calls_needed, s.calls_cached) == (2 * per_model, per_model, per_model,
                                                                            per_model)
    # everything still needed is cached; and a model named gpt-4 on another endpoint than OpenAI's has no price
    assert s.estimate.calls == 0 and s.estimate.cost_usd is None and "no price" in s.describe()
    with FakeOpenAI() as server:
        s = judge_single(run, "mt_bench", backend(server, max_tokens=1000), data_dir=small_data, dry_run=True,
                         cache=False, progress=False, price_in=30, price_out=60)
        assert server.requests == 0
    e = s.estimate
    assert e.calls == per_model and e.prompt_tokens > 0 and e.completion_tokens == 250 * per_model
    assert e.cost_usd == pytest.approx((e.prompt_tokens * 30 + e.completion_tokens * 60) / 1e6)
    assert e.completion_max == 1000 * per_model  # every reply as long as --max-tokens allows
    assert e.cost_max_usd == pytest.approx((e.prompt_tokens * 30 + e.completion_max * 60) / 1e6)
    assert "test: chars/4" in s.describe()
    assert len(lines(path)) == per_model  # a dry run writes nothing


def test_api_key_is_never_written_or_logged(tmp_path, small_data, key, capsys, caplog, monkeypatch):
    import logging

    import benchmarks.judge.estimate as E
    from srdpo_eval.cli import main

    monkeypatch.setattr(E, "token_counter", lambda *a, **k: ((lambda text: len(text) // 4), "test"))  # no download

    caplog.set_level(logging.DEBUG)
    run = make_run(tmp_path, small_data, benches=("mt_bench", "vicuna_bench"))
    with FakeOpenAI(faults={1: "500", 3: "429", 4: "malformed"}, retry_after=0.05) as server:
        common = ["--judge-model", "gpt-4", "--base-url", server.base_url, "--data-dir", str(small_data),
                  "--max-retries", "3"]
        assert main(["judge", str(run), *common, "--mode", "single"]) == 0
        assert main(["judge", str(run), *common, "--mode", "pairwise", "--models", "alpha", "beta"]) == 0
        assert main(["judge", str(run), *common, "--mode", "pairwise", "--baseline", "alpha", "--dry-run"]) == 0
        assert {e["authorization"] for e in server.log} == {f"Bearer {KEY}"}  # the key was in use
    captured = capsys.readouterr()
    assert "retry" in caplog.text  # the retries were logged
    for text in (captured.out, captured.err, caplog.text):
        assert KEY not in text
    files = [p for p in run.rglob("*") if p.is_file()]
    assert any(p.suffix == ".sqlite" for p in files) and any(p.parent.name == "judge" for p in files)
    for p in files:
        assert KEY.encode() not in p.read_bytes(), p


def test_missing_answers_are_named(tmp_path, small_data, key):
    run = make_run(tmp_path, small_data, models=("alpha",))
    with FakeOpenAI() as server:
        with pytest.raises(ValueError, match="beta"):
            judge_pairwise(run, "mt_bench", backend(server), pairs=[("alpha", "beta")], data_dir=small_data,
                           progress=False)
        answers = RunDir(run).answers("mt_bench", "alpha")
        keep = answers.read_text().splitlines()[1:]
        answers.write_text("\n".join(keep) + "\n")
        first = load_questions(small_data, "mt_bench")[0].question_id
        with pytest.raises(ValueError, match=f"alpha.jsonl: no answer for question_id {first}"):
            judge_single(run, "mt_bench", backend(server), data_dir=small_data, progress=False)
        assert server.requests == 0


def test_cli_reports_bad_input_without_traceback(tmp_path, small_data, key, capsys):
    from srdpo_eval.cli import main

    run = make_run(tmp_path, small_data, models=("alpha",))
    assert main(["judge", str(run), "--judge-model", "gpt-4", "--base-url", "http://127.0.0.1:9/v1", "--bench",
                 "mt_bench", "--models", "alpha", "nobody", "--data-dir", str(small_data)]) == 2
    assert "nobody" in capsys.readouterr().err


def test_appending_after_a_cut_line_starts_a_new_line(tmp_path):
    from contracts.files import Appender
    from contracts.jsonl import read_jsonl

    path = tmp_path / "j.jsonl"
    path.write_text('{"a": 1}\n{"b": 2}')  # last record complete but its newline lost
    with Appender(path) as out:
        out.write({"c": 3})
    assert read_jsonl(path) == [{"a": 1}, {"b": 2}, {"c": 3}]
    path.write_text('{"a": 1}\n{"b": ')  # last record cut: dropped (and only with repair_tail)
    with pytest.raises(ValueError, match=":2: invalid JSON"):
        read_jsonl(path)
    assert read_jsonl(path, repair_tail=True) == [{"a": 1}] and path.read_text() == '{"a": 1}\n'


def test_dry_run_changes_no_file(tmp_path, small_data, key, monkeypatch):
    import benchmarks.judge.estimate as E

    monkeypatch.setattr(E, "token_counter", lambda *a, **k: ((lambda text: len(text) // 4), "test"))
    run = make_run(tmp_path, small_data, models=("alpha",))
    path = RunDir(run).judgments("mt_bench", "gpt-4", "single")
    with FakeOpenAI() as server:
        judge_single(run, "mt_bench", backend(server), data_dir=small_data, cache=False, progress=False)
        kept = path.read_text().splitlines()[:3]
        path.write_text("\n".join(kept) + '\n{"question_id": 8')  # three records and a cut line
        s = judge_single(run, "mt_bench", backend(server), data_dir=small_data, dry_run=True, progress=False)
        assert s.already_done == 3 and s.calls_cached == 0
    assert path.read_text().endswith('{"question_id": 8') and not (run / "judge_cache.sqlite").exists()


def test_pairwise_game_that_fails_leaves_the_other_cached(tmp_path, small_data, key):
    run = make_run(tmp_path, small_data, benches=("vicuna_bench",))
    total = len(load_questions(small_data, "vicuna_bench"))
    with FakeOpenAI(faults={0: "400"}) as server:
        with pytest.raises(JudgeRunError):
            judge_pairwise(run, "vicuna_bench", backend(server), pairs=[("alpha", "beta")], data_dir=small_data,
                           concurrency=1, progress=False)
        assert server.requests == 2 * total
    with FakeOpenAI() as server:
        judge_pairwise(run, "vicuna_bench", backend(server), pairs=[("alpha", "beta")], data_dir=small_data,
                       progress=False)
        assert server.requests == 1  # only the failed game; its partner came from the cache
    assert len(lines(RunDir(run).judgments("vicuna_bench", "gpt-4", "pairwise"))) == total


def test_cli_local_judge_backend(tmp_path, small_data, tiny_model_dir, capsys):
    from srdpo_eval.cli import main

    run = make_run(tmp_path, small_data, models=("alpha",), benches=("vicuna_bench",))
    assert main(["judge", str(run), "--judge-model", str(tiny_model_dir), "--judge-backend", "local", "--bench",
                 "vicuna_bench", "--data-dir", str(small_data), "--no-progress"]) == 0
    judge_files = list((run / "vicuna_bench" / "model_judgment").glob("*_single.jsonl"))
    assert len(judge_files) == 1
    recs = lines(judge_files[0])
    assert len(recs) == len(load_questions(small_data, "vicuna_bench"))
    assert all(1 <= r["score"] <= 10 and r["judge"][0].startswith("local-") for r in recs)
    assert "alpha" in capsys.readouterr().out


def test_killed_run_with_faults_of_every_kind_completes_on_its_first_rerun(tmp_path, small_data, key):
    """Transient faults of every kind on the way (429, 5xx, dropped connection, cut-off body, no content,
    a slow reply past the timeout); killed midway; the first rerun writes every judgment exactly once."""
    run = make_run(tmp_path, small_data)
    path = RunDir(run).judgments("mt_bench", "gpt-4", "single")
    total = 2 * n_turns(small_data, "mt_bench")
    kinds = ["429", "500", "drop", "badjson", "nocontent", "slow"]
    faults = lambda n, body: kinds[n % len(kinds)] if n % 3 == 0 else None  # noqa: E731
    code = ("import sys; from benchmarks.judge.openai_backend import OpenAIBackend; "
            "from benchmarks.judge.run import judge_single; "
            "judge_single(sys.argv[1], 'mt_bench', OpenAIBackend('gpt-4', base_url=sys.argv[2], timeout=0.5, "
            "backoff_initial=0.01, backoff_max=0.05), data_dir=sys.argv[3], concurrency=2, progress=False)")
    with FakeOpenAI(latency=0.1, faults=faults, retry_after=0.05, slow_s=1.0) as server:
        proc = subprocess.Popen([sys.executable, "-c", code, str(run), server.base_url, str(small_data)], cwd=REPO,
                                env={**os.environ, "OPENAI_API_KEY": KEY}, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        deadline = time.time() + 60
        while (not path.exists() or len(path.read_text().splitlines()) < 4) and time.time() < deadline:
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert 4 <= len(lines(path)) < total
        faulty_before = sum(1 for e in server.log if e["fault"])
        s = judge_single(run, "mt_bench", OpenAIBackend("gpt-4", base_url=server.base_url, timeout=0.5,
                                                         backoff_initial=0.01, backoff_max=0.05),
                         data_dir=small_data, concurrency=2, progress=False)
        assert sum(1 for e in server.log if e["fault"]) > faulty_before  # the rerun met faults too
    assert s.failed == [] and s.matches == total
    recs = lines(path)
    assert len(recs) == total and len({(r["question_id"], r["model"], r["turn"]) for r in recs}) == total
    assert all(r["score"] != -1 for r in recs)  # no bad reply was taken for a verdict
