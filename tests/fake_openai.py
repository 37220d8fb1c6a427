"""A fake OpenAI-compatible judge server for tests: real HTTP on 127.0.0.1, scripted replies, faults.

Usage::

    with FakeOpenAI(latency=0.0, faults={0: "429", 3: "500"}) as server:
        backend = OpenAIBackend("gpt-4", base_url=server.base_url)
        ...
        server.requests      # POSTs to /v1/chat/completions received so far (faulty ones included)
        server.completed     # of those, answered with a judgment (HTTP 200)
        server.log           # per request: n, fault, Authorization header, JSON body (in-process only)

``serial=True`` serves one request at a time, as llama.cpp with one slot or a small vLLM deployment under
load: the others wait in its queue without a byte of reply, and a request whose client gave up is still
computed when its turn comes (``server.abandoned`` counts them). ``server.max_in_flight`` is the most
requests it held at once. A request with ``"stream": true`` is answered as server-sent events (the
reply in three chunks, then ``[DONE]``), as OpenAI, vLLM, llama.cpp and TGI do.

``subprocess=True`` runs the same server in a child Python process (no GIL shared with the client:
for timings); then ``faults`` must be a dict, ``reply`` the default, and the counts are read over
HTTP (``GET /stats``). ``python tests/fake_openai.py --latency 0.1`` serves until killed.

Replies are deterministic functions of the request (``scripted_reply``): single-grading prompts get
``Rating: [[n]]`` with n in 1..10 from a hash of the user prompt, pairwise prompts get ``[[A]]``,
``[[B]]`` or ``[[C]]`` the same way, so a test can compute the expected verdict from a record's
``user_prompt``. Pass ``reply=`` to script something else (a function of the messages list).

``faults`` schedules failures by request number (0-based, in arrival order): a dict {n: kind} or a
function (n, body) -> kind | None. Kinds:
  "429"        rate limited, with ``Retry-After: <retry_after>`` (seconds)
  "500"        internal server error
  "400"        bad request (not retryable)
  "context"    400 "maximum context length is 1024 tokens; you requested 3254" (llama.cpp's / vLLM's words)
  "slow"       sleeps ``slow_s`` seconds before answering normally (past a short client timeout)
  "malformed"  200 with a reply that holds no verdict
  "badjson"    200 whose body is not valid JSON (a proxy cut it off)
  "nocontent"  200 whose choices[0].message.content is null
  "drop"       closes the connection without answering

``write_answers(path, questions, model_id)`` writes a FastChat answer file with made-up turns
("<model_id> answers turn <t> of question <id>."), handy for judge tests without a model.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import threading
import time
import urllib.request
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
                 reply: Callable[[list[dict[str, str]]], str] = scripted_reply, subprocess: bool = False,
                 serial: bool = False):
        if subprocess and (callable(faults) or reply is not scripted_reply):
            raise ValueError("FakeOpenAI(subprocess=True) takes a dict of faults and the scripted reply only")
        self.subprocess = subprocess
        self._proc = None
        self._port = None
        self.latency = latency
        self.faults = faults or {}
        self.retry_after = retry_after
        self.slow_s = slow_s
        self.reply = reply
        self.serial = serial
        self._slot = threading.Lock()  # serial: the one request being computed
        self._in_flight = 0
        self._max_in_flight = 0
        self._abandoned = 0  # serial: requests computed after their client had closed the connection
        self._requests = 0
        self._completed = 0
        self.log: list[dict] = []  # one entry per request: n, fault, authorization, body
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._port}/v1"

    def _stats(self) -> dict:
        if not self.subprocess:
            return {"requests": self._requests, "completed": self._completed, "max_in_flight": self._max_in_flight,
                    "abandoned": self._abandoned}
        with urllib.request.urlopen(f"{self.base_url}/stats", timeout=10) as r:
            return json.loads(r.read())

    @property
    def requests(self) -> int:
        return self._stats()["requests"]

    @property
    def completed(self) -> int:
        return self._stats()["completed"]

    @property
    def max_in_flight(self) -> int:
        return self._stats()["max_in_flight"]

    @property
    def abandoned(self) -> int:
        return self._stats()["abandoned"]

    def _fault(self, n: int, body: dict) -> str | None:
        return self.faults(n, body) if callable(self.faults) else self.faults.get(n)

    def __enter__(self) -> "FakeOpenAI":
        if self.subprocess:
            cmd = [sys.executable, __file__, "--latency", str(self.latency), "--retry-after", str(self.retry_after),
                   "--slow-s", str(self.slow_s), "--faults", json.dumps({str(k): v for k, v in self.faults.items()}),
                   *(["--serial"] if self.serial else [])]
            self._proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
            line = self._proc.stdout.readline()
            if not line.startswith("PORT "):
                self._proc.kill()
                raise RuntimeError(f"fake OpenAI server did not start (said {line!r})")
            self._port = int(line.split()[1])
            return self
        self._serve()
        return self

    def _serve(self, port: int = 0) -> None:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # headers and body go out as separate writes: without TCP_NODELAY, Nagle's algorithm meets the
            # client's delayed ACK and adds ~40 ms to every reply
            disable_nagle_algorithm = True

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

            def do_GET(self) -> None:
                if self.path.rstrip("/") == "/v1/stats":
                    return self._send(200, fake._stats())
                return self._send(404, {"error": {"message": f"no route {self.path}"}})

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                if self.path.rstrip("/") != "/v1/chat/completions":
                    return self._send(404, {"error": {"message": f"no route {self.path}"}})
                if "messages" not in body:  # a client that went away mid-request
                    return self._send(400, {"error": {"message": "no messages", "type": "invalid_request"}})
                with fake._lock:
                    n = fake._requests
                    fake._requests += 1
                    fake._in_flight += 1
                    fake._max_in_flight = max(fake._max_in_flight, fake._in_flight)
                    fault = fake._fault(n, body)
                    fake.log.append({"n": n, "fault": fault, "authorization": self.headers.get("Authorization"),
                                     "body": body})
                try:
                    if fake.serial:
                        with fake._slot:  # queued: no byte of reply until its turn
                            if fake.latency:
                                time.sleep(fake.latency)
                            if self._client_gone():
                                with fake._lock:
                                    fake._abandoned += 1
                            return self._answer(n, fault, body)
                    if fake.latency:
                        time.sleep(fake.latency)
                    return self._answer(n, fault, body)
                finally:
                    with fake._lock:
                        fake._in_flight -= 1

            def _client_gone(self) -> bool:
                """Whether the client has closed its end (a timed-out request): a readable socket with no data."""
                import select
                import socket

                try:
                    readable, _, _ = select.select([self.connection], [], [], 0)
                    return bool(readable) and self.connection.recv(1, socket.MSG_PEEK) == b""
                except OSError:
                    return True

            def _answer(self, n: int, fault: str | None, body: dict) -> None:
                if fault == "429":
                    return self._send(429, {"error": {"message": "rate limited", "type": "rate_limit"}},
                                      {"Retry-After": str(fake.retry_after)})
                if fault == "500":
                    return self._send(500, {"error": {"message": "boom", "type": "server_error"}})
                if fault == "400":
                    return self._send(400, {"error": {"message": "bad request", "type": "invalid_request"}})
                if fault == "context":
                    return self._send(400, {"error": {"message": "This model's maximum context length is 1024 tokens. "
                                                                 "However, you requested 3254 tokens (1206 in the messages, "
                                                                 "2048 in the completion).", "type": "invalid_request_error",
                                                      "code": "context_length_exceeded"}})
                if fault == "drop":
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return None
                if fault == "slow":
                    time.sleep(fake.slow_s)
                if fault == "badjson":
                    data = b'{"id": "chatcmpl-cut", "choices": [{"index": 0, "mess'
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    return None
                text = (MALFORMED_REPLY if fault == "malformed" else None if fault == "nocontent"
                        else fake.reply(body["messages"]))
                with fake._lock:
                    fake._completed += 1
                if body.get("stream"):
                    return self._stream(n, text, body)
                self._send(200, {
                    "id": f"chatcmpl-{n}", "object": "chat.completion", "created": int(time.time()),
                    "model": body.get("model", ""),
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                 "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}})

            def _stream(self, n: int, text: str | None, body: dict) -> None:
                """The reply as server-sent events: three content chunks, then [DONE]."""
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Connection", "close")
                self.end_headers()
                self.close_connection = True
                cut = [0, len(text or "") // 3, 2 * len(text or "") // 3, len(text or "")]
                parts = [text[a:b] for a, b in zip(cut, cut[1:])] if text is not None else [None]
                for part in parts:
                    chunk = {"id": f"chatcmpl-{n}", "object": "chat.completion.chunk", "created": int(time.time()),
                             "model": body.get("model", ""),
                             "choices": [{"index": 0, "delta": {"content": part}, "finish_reason": None}]}
                    self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                    self.wfile.flush()
                self.wfile.write(b"data: [DONE]\n\n")
                self.wfile.flush()

        class Server(ThreadingHTTPServer):
            request_queue_size = 256  # the default backlog (5) refuses bursts of concurrent clients

            def handle_error(self, request, client_address) -> None:
                if not isinstance(sys.exc_info()[1], (ConnectionError, OSError, ValueError)):
                    super().handle_error(request, client_address)  # a client that timed out is expected

        self._server = Server(("127.0.0.1", port), Handler)
        self._server.daemon_threads = True
        self._port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def __exit__(self, *exc) -> None:
        if self._proc is not None:
            self._proc.terminate()
            self._proc.wait(timeout=10)
            return
        self._server.shutdown()
        self._server.server_close()


def write_answers(path, questions, model_id: str) -> None:
    """A FastChat answer file for ``questions`` (benchmarks.fastchat_data.Question) with made-up turns."""
    from pathlib import Path

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for q in questions:
            turns = [f"{model_id} answers turn {i + 1} of question {q.question_id}." for i in range(len(q.turns))]
            f.write(json.dumps({"question_id": q.question_id, "answer_id": f"{model_id}-{q.question_id}",
                                "model_id": model_id, "choices": [{"index": 0, "turns": turns}],
                                "tstamp": 0.0}) + "\n")


def _main() -> None:
    ap = argparse.ArgumentParser(description="Serve the fake OpenAI judge on 127.0.0.1 (prints PORT n).")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--latency", type=float, default=0.0)
    ap.add_argument("--retry-after", type=float, default=1)
    ap.add_argument("--slow-s", type=float, default=2.0)
    ap.add_argument("--faults", default="{}", help='JSON {"request number": kind}')
    ap.add_argument("--serial", action="store_true", help="one request at a time, the others queued")
    args = ap.parse_args()
    faults = {int(k): v for k, v in json.loads(args.faults).items()}
    fake = FakeOpenAI(latency=args.latency, faults=faults, retry_after=args.retry_after, slow_s=args.slow_s,
                      serial=args.serial)
    fake._serve(args.port)
    print(f"PORT {fake._port}", flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    _main()
