"""A fake OpenAI-compatible judge server for tests: real HTTP on 127.0.0.1, scripted replies, faults.

Usage::

    with FakeOpenAI(latency=0.0, faults={0: "429", 3: "500"}) as server:
        backend = OpenAIBackend("gpt-4", base_url=server.base_url)
        ...
        server.requests      # POSTs to /v1/chat/completions received so far (faulty ones included)
        server.completed     # of those, answered with a judgment (HTTP 200)

Replies are deterministic functions of the request (``scripted_reply``): single-grading prompts get
``Rating: [[n]]`` with n in 1..10 from a hash of the user prompt, pairwise prompts get ``[[A]]``,
``[[B]]`` or ``[[C]]`` the same way, so a test can compute the expected verdict from a record's
``user_prompt``. Pass ``reply=`` to script something else (a function of the messages list).

``faults`` schedules failures by request number (0-based, in arrival order): a dict {n: kind} or a
function (n, body) -> kind | None. Kinds:
  "429"        rate limited, with ``Retry-After: <retry_after>`` (seconds)
  "500"        internal server error
  "400"        bad request (not retryable)
  "slow"       sleeps ``slow_s`` seconds before answering normally (past a short client timeout)
  "malformed"  200 with a reply that holds no verdict
  "drop"       closes the connection without answering
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

MALFORMED_REPLY = "The two answers are hard to compare; I cannot reach a verdict."


def _digest(text: str) -> int:
    return int(hashlib.sha256(text.encode("utf-8")).hexdigest(), 16)


def scripted_reply(messages: list[dict[str, str]]) -> str:
    """The fake judge's reply: a rating or a pairwise verdict derived from the last user message."""
    user = messages[-1]["content"]
    h = _digest(user)
    if "[[A]]" in user or "[[A]]" in messages[0]["content"]:  # FastChat's pairwise prompts name the tags
        return f"Both assistants answer. Verdict: {('[[A]]', '[[B]]', '[[C]]')[h % 3]}"
    return f"The response is adequate. Rating: [[{h % 10 + 1}]]"


class FakeOpenAI:
    """A threaded HTTP server answering ``POST /v1/chat/completions`` (context manager)."""

    def __init__(self, *, latency: float = 0.0, faults: dict[int, str] | Callable[[int, dict], str | None] | None = None,
                 retry_after: float = 1, slow_s: float = 2.0,
                 reply: Callable[[list[dict[str, str]]], str] = scripted_reply):
        self.latency = latency
        self.faults = faults or {}
        self.retry_after = retry_after
        self.slow_s = slow_s
        self.reply = reply
        self.requests = 0
        self.completed = 0
        self.log: list[dict] = []  # one entry per request: n, fault, authorization, body
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/v1"

    def _fault(self, n: int, body: dict) -> str | None:
        return self.faults(n, body) if callable(self.faults) else self.faults.get(n)

    def __enter__(self) -> "FakeOpenAI":
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # keep test output quiet
                pass

            def _send(self, status: int, payload: dict, headers: dict | None = None) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                if self.path.rstrip("/") != "/v1/chat/completions":
                    return self._send(404, {"error": {"message": f"no route {self.path}"}})
                with fake._lock:
                    n = fake.requests
                    fake.requests += 1
                    fault = fake._fault(n, body)
                    fake.log.append({"n": n, "fault": fault, "authorization": self.headers.get("Authorization"),
                                     "body": body})
                if fake.latency:
                    time.sleep(fake.latency)
                if fault == "429":
                    return self._send(429, {"error": {"message": "rate limited", "type": "rate_limit"}},
                                      {"Retry-After": str(fake.retry_after)})
                if fault == "500":
                    return self._send(500, {"error": {"message": "boom", "type": "server_error"}})
                if fault == "400":
                    return self._send(400, {"error": {"message": "bad request", "type": "invalid_request"}})
                if fault == "drop":
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return None
                if fault == "slow":
                    time.sleep(fake.slow_s)
                text = MALFORMED_REPLY if fault == "malformed" else fake.reply(body["messages"])
                with fake._lock:
                    fake.completed += 1
                self._send(200, {
                    "id": f"chatcmpl-{n}", "object": "chat.completion", "created": int(time.time()),
                    "model": body.get("model", ""),
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                 "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}})

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()
