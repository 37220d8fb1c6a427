"""OpenAIBackend against the fake server over real HTTP: retry policy, Retry-After, timeouts, key handling."""

from __future__ import annotations

import asyncio
import re
import time

import pytest

openai = pytest.importorskip("openai")  # not on a bare GPU machine: skipped there, never a collection error

from benchmarks.judge.backend import ChatBackend
from benchmarks.judge.openai_backend import OpenAIBackend
from fake_openai import MALFORMED_REPLY, FakeOpenAI, scripted_reply

MSGS = [{"role": "system", "content": "You are a helpful assistant."}, {"role": "user", "content": "Grade: hi"}]
FAST = dict(backoff_initial=0.01, backoff_max=0.05)


def chat(backend: OpenAIBackend, messages=MSGS) -> str:
    async def go():
        try:
            return await backend.chat(messages, temperature=0.0, max_tokens=2048)
        finally:
            await backend.aclose()

    return asyncio.run(go())


@pytest.fixture
def key(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-backend-key")
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    return "sk-test-backend-key"


def test_reply_request_and_key(key):
    with FakeOpenAI() as server:
        backend = OpenAIBackend("gpt-4", base_url=server.base_url, **FAST)
        assert isinstance(backend, ChatBackend)
        assert chat(backend) == scripted_reply(MSGS)
        (entry,) = server.log
        assert entry["authorization"] == f"Bearer {key}"
        body = entry["body"]
        assert body["model"] == "gpt-4" and body["messages"] == MSGS
        assert body["temperature"] == 0.0 and body["max_tokens"] == 2048
        assert key not in repr(backend)


@pytest.mark.parametrize("fault", ["500", "drop", "429"])
def test_transient_faults_are_retried(key, fault):
    with FakeOpenAI(faults={0: fault, 1: fault}, retry_after=0.05) as server:
        assert chat(OpenAIBackend("gpt-4", base_url=server.base_url, **FAST)) == scripted_reply(MSGS)
        assert server.requests == 3 and server.completed == 1


def test_retry_after_is_honoured(key):
    # backoff alone would wait at most 50 ms; the server asks for 1 s
    with FakeOpenAI(faults={0: "429"}, retry_after=1) as server:
        t0 = time.perf_counter()
        chat(OpenAIBackend("gpt-4", base_url=server.base_url, **FAST))
        assert time.perf_counter() - t0 >= 1.0
        assert server.requests == 2


@pytest.mark.parametrize("limits", [{"timeout": 0.3, "stream": False}, {"queue_timeout": 0.3}],
                         ids=["whole-request", "streamed-start"])
def test_timeout_is_retried(key, limits):
    with FakeOpenAI(faults={0: "slow"}, slow_s=1.0) as server:
        backend = OpenAIBackend("gpt-4", base_url=server.base_url, **limits, **FAST)
        assert chat(backend) == scripted_reply(MSGS)
        assert server.requests == 2 and backend.attempts == 2 and backend.retries == {"timeout": 1}


def test_client_errors_are_not_retried(key):
    with FakeOpenAI(faults={0: "400"}) as server:
        with pytest.raises(openai.BadRequestError):
            chat(OpenAIBackend("gpt-4", base_url=server.base_url, **FAST))
        assert server.requests == 1


def test_gives_up_after_max_retries(key):
    with FakeOpenAI(faults=lambda n, body: "500") as server:
        with pytest.raises(openai.InternalServerError):
            chat(OpenAIBackend("gpt-4", base_url=server.base_url, max_retries=2, **FAST))
        assert server.requests == 3


def test_malformed_reply_text_is_returned_as_is(key):
    with FakeOpenAI(faults={0: "malformed"}) as server:
        assert chat(OpenAIBackend("gpt-4", base_url=server.base_url, **FAST)) == MALFORMED_REPLY


def test_base_url_from_environment(key, monkeypatch):
    with FakeOpenAI() as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        chat(OpenAIBackend("gpt-4", **FAST))
        assert server.requests == 1


def test_missing_key_names_the_variable(monkeypatch):
    monkeypatch.delenv("MY_JUDGE_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.raises(ValueError, match="MY_JUDGE_KEY"):
        OpenAIBackend("gpt-4", api_key_env="MY_JUDGE_KEY")


def test_subprocess_server_counts_over_http(key):
    with FakeOpenAI(subprocess=True, faults={0: "500"}) as server:
        assert chat(OpenAIBackend("gpt-4", base_url=server.base_url, **FAST)) == scripted_reply(MSGS)
        assert server.requests == 2 and server.completed == 1


def test_one_backend_serves_successive_event_loops(key):
    with FakeOpenAI() as server:
        backend = OpenAIBackend("gpt-4", base_url=server.base_url, **FAST)
        assert chat(backend) == chat(backend) == scripted_reply(MSGS)
        assert server.completed == 2


@pytest.mark.parametrize("fault", ["badjson", "nocontent"])
def test_replies_that_are_not_a_completion_are_retried(key, fault):
    with FakeOpenAI(faults={0: fault}) as server:
        assert chat(OpenAIBackend("gpt-4", base_url=server.base_url, **FAST)) == scripted_reply(MSGS)
        assert server.requests == 2  # the bad 200, then the good one


def test_refused_connections_end_the_run_quickly_naming_the_url(key):
    import socket
    import time

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}/v1"
    backend = OpenAIBackend("gpt-4", base_url=url, max_retries=8)
    t0 = time.time()
    with pytest.raises(ValueError, match=re.escape(url) + ": the judge endpoint refused 3 connections in a row"):
        chat(backend)
    assert time.time() - t0 < 30
