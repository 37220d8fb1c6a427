"""A ChatBackend on any OpenAI-compatible server (OpenAI, vLLM, llama.cpp, TGI, a test fake).

Replies are streamed by default, so that the wait for a reply is split where it should be: a request may
wait ``queue_timeout`` for the server to start answering (it is queued behind others) and then
``timeout`` between two pieces of the reply; without streaming, ``timeout`` is the whole request. How many
requests are in flight is benchmarks/judge/window.py's (``auto``: adapted to the server).

One retry policy (tenacity; the openai client's own retries are off): exponential backoff with jitter
on 429 (waiting what Retry-After asks, when it says), 5xx, timeouts, dropped connections and replies
that are not a chat completion (a body cut off, no text content); a prompt longer than the model's
context is named as such and not retried; any other 4xx is a mistake in the request or the key and
fails at once. A timed-out request's connection is closed before it is sent again. An endpoint that
refuses connections ends the whole run after a few refusals in a row, naming its URL. Every HTTP
attempt and every retry (by cause) is counted. The API key is read from the environment and handed to
the client only: it is never logged, printed or written.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import os
import time
from collections import Counter

import openai
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_random_exponential

from benchmarks.judge.window import Window
from contracts.errors import UserError

log = logging.getLogger(__name__)


class Stalled(openai.APITimeoutError):
    """A streamed reply that did not start within ``queue_timeout`` or paused longer than ``timeout``."""

    def __init__(self, request, what: str):
        super().__init__(request)
        self.message = what


class ContextTooLong(Exception):
    """The server says the prompt plus max_tokens exceed the model's context: retrying cannot help."""

class BadReply(Exception):
    """A 200 whose body is not a chat completion with text (cut off by a proxy, or empty): retried."""


def is_retryable(exc: BaseException) -> bool:
    """429, 5xx, timeouts, dropped connections and bad replies are worth another try; others are not."""
    if isinstance(exc, (openai.RateLimitError, openai.APIConnectionError, BadReply)):  # timeouts subclass connection
        return True
    return isinstance(exc, openai.APIStatusError) and exc.status_code >= 500


def cause(exc: BaseException) -> str:
    """What a failed attempt met, for the counts of retries."""
    if isinstance(exc, openai.APITimeoutError):
        return "timeout"
    if isinstance(exc, openai.RateLimitError):
        return "rate limit (429)"
    if isinstance(exc, openai.APIStatusError):
        return f"server error ({exc.status_code})"
    if isinstance(exc, openai.APIConnectionError):
        return "connection"
    if isinstance(exc, BadReply):
        return "bad reply"
    return type(exc).__name__


CONTEXT_WORDS = ("context_length", "context length", "maximum context", "context window", "too many tokens",
                 "prompt is too long", "exceeds the model")


def context_error(exc: BaseException) -> str | None:
    """The server's message when a 400 says the request does not fit the model's context, else None."""
    if not isinstance(exc, openai.BadRequestError):
        return None
    body = exc.body if isinstance(exc.body, dict) else {}
    text = " ".join(str(x) for x in (getattr(exc, "code", None), body.get("code"), body.get("message"), exc.message))
    return str(body.get("message") or exc.message)[:300] if any(w in text.lower() for w in CONTEXT_WORDS) else None


def _refused(exc: BaseException) -> bool:
    """No connection could be made at all (refused, or no such host): not a timeout, not a connection
    dropped mid-reply. The HTTP client reports it as a ConnectError under openai's APIConnectionError."""
    return (isinstance(exc, openai.APIConnectionError) and not isinstance(exc, openai.APITimeoutError)
            and type(exc.__cause__).__name__ == "ConnectError")


def retry_after_seconds(exc: BaseException) -> float | None:
    """The wait a 429 asks for (``retry-after-ms``, or ``Retry-After`` as seconds or an HTTP date)."""
    response = getattr(exc, "response", None)
    if not isinstance(exc, openai.RateLimitError) or response is None:
        return None
    headers = response.headers
    try:
        if "retry-after-ms" in headers:
            return max(0.0, float(headers["retry-after-ms"]) / 1000)
        if "retry-after" in headers:
            value = headers["retry-after"]
            try:
                return max(0.0, float(value))
            except ValueError:
                when = email.utils.parsedate_to_datetime(value)
                return max(0.0, when.timestamp() - time.time())
    except (TypeError, ValueError):
        return None
    return None


def reply_text(reply: object, model: str) -> str:
    """The text of choice 0 of a chat-completion JSON reply; a reply without one is an error."""
    try:
        content = reply["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        content = None
    if not isinstance(content, str):
        raise BadReply(f"judge {model}: reply without text content (choices[0].message.content)")
    return content


class _RetryAfterOrBackoff:
    """tenacity wait: the server's Retry-After when it gives one (up to a cap), else jittered exponential."""

    def __init__(self, initial: float, maximum: float, retry_after_max: float):
        self.backoff = wait_random_exponential(multiplier=initial, max=maximum)
        self.retry_after_max = retry_after_max

    def __call__(self, retry_state) -> float:
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        asked = retry_after_seconds(exc) if exc else None
        return min(asked, self.retry_after_max) if asked is not None else self.backoff(retry_state)


class OpenAIBackend:
    """``ChatBackend`` on ``openai.AsyncOpenAI``; ``base_url`` defaults to ``$OPENAI_BASE_URL`` or OpenAI.

    ``model`` is what requests ask for; ``name`` is the judge's name in judgment files and tables
    (default: ``model``, shortened and made file-safe when it is a path: contracts.ids.judge_id).
    """

    def __init__(self, model: str, *, name: str | None = None, base_url: str | None = None,
                 api_key_env: str = "OPENAI_API_KEY", timeout: float = 120.0, queue_timeout: float = 1800.0,
                 stream: bool = True, concurrency: int | None = None, max_tokens: int = 2048, max_retries: int = 8,
                 backoff_initial: float = 1.0, backoff_max: float = 60.0, retry_after_max: float = 300.0,
                 connect_failures: int = 3):
        from contracts.ids import judge_id

        self.model, self.name, self.max_tokens = model, name or judge_id("openai", model), max_tokens
        base_url = base_url or os.environ.get("OPENAI_BASE_URL") or None
        api_key = os.environ.get(api_key_env)
        if not api_key:
            if base_url is None:
                raise UserError(f"the judge needs an API key: set the environment variable {api_key_env} (or "
                                "give --base-url of an OpenAI-compatible server that needs none)")
            api_key = "EMPTY"  # local OpenAI-compatible servers usually need no key
        self.base_url = base_url
        self.url = base_url or "https://api.openai.com/v1"  # for messages
        self.stream, self.timeout, self.queue_timeout = stream, timeout, queue_timeout
        self.window = Window(concurrency)
        self.attempts = 0  # HTTP requests sent
        self.retries: Counter[str] = Counter()  # by cause
        self.max_retries = max_retries
        self.connect_failures = connect_failures
        self._refusals = 0  # connections refused in a row, over every call in flight
        self._dead: UserError | None = None
        self._wait = _RetryAfterOrBackoff(backoff_initial, backoff_max, retry_after_max)
        # streamed: a request may wait queue_timeout for its reply to start (our own clock times each piece);
        # else timeout is the whole request
        limit = openai.Timeout(queue_timeout if stream else timeout, connect=min(30.0, timeout))
        # the client's connection pool belongs to one event loop: one client per loop (asyncio.run each)
        self._make_client = lambda: openai.AsyncOpenAI(api_key=api_key, base_url=base_url, timeout=limit,
                                                       max_retries=0)
        self._loop: asyncio.AbstractEventLoop | None = None  # held, so its id cannot be reused meanwhile
        self._client_obj: openai.AsyncOpenAI | None = None

    def _client(self) -> openai.AsyncOpenAI:
        loop = asyncio.get_running_loop()
        if self._loop is not loop or self._client_obj is None:
            self._loop, self._client_obj = loop, self._make_client()
        return self._client_obj

    def __repr__(self) -> str:  # never shows the key
        return f"OpenAIBackend(model={self.model!r}, base_url={self.base_url!r})"

    async def chat(self, messages: list[dict[str, str]], *, temperature: float, max_tokens: int) -> str:
        """One chat completion, retried on transient failures; returns the reply text."""
        retrying = AsyncRetrying(retry=retry_if_exception(is_retryable), stop=stop_after_attempt(self.max_retries + 1),
                                 wait=self._wait, reraise=True, before_sleep=self._log_retry)
        body = {"model": self.model, "messages": messages, "temperature": temperature, "max_tokens": max_tokens,
                "n": 1}
        async for attempt in retrying:
            with attempt:
                return await self._attempt(body)
        raise AssertionError("unreachable")

    async def _attempt(self, body: dict) -> str:
        """One HTTP request inside the concurrency window; its delay (to the reply's start) tunes the window."""
        if self._dead is not None:
            raise self._dead
        await self.window.acquire()
        t0, delay, timed_out = time.monotonic(), None, False
        try:
            self.attempts += 1
            # The client's plain POST: the same auth, base_url, timeout and error classes as
            # chat.completions.create, without its typed transform of the messages and pydantic parse of the
            # reply (~5 ms of CPU a call, the bottleneck at concurrency 16).
            if self.stream:
                text, delay = await self._streamed(body, t0)
            else:
                text = reply_text(await self._client().post("/chat/completions", cast_to=object, body=body), self.model)
                delay = time.monotonic() - t0
            self._refusals = 0
            return text
        except Exception as e:  # noqa: BLE001 — sorted into refused / context / bad reply / the rest
            timed_out = isinstance(e, openai.APITimeoutError)
            self._note_failure(e)
            if (said := context_error(e)) is not None:
                raise ContextTooLong(
                    f"{self.url}: the judge prompt and max_tokens {body['max_tokens']} do not fit the model's context "
                    f"(the server said: {said!r}); use a server with a longer context (llama.cpp --ctx-size, vLLM "
                    "--max-model-len), a smaller --max-tokens, or leave these questions out: rerunning as is fails "
                    "the same way") from None
            if isinstance(e, json.JSONDecodeError):
                raise BadReply(f"judge {self.model}: reply body is not JSON ({e.msg})") from None
            raise
        finally:
            await self.window.release(delay, timed_out=timed_out)

    async def _streamed(self, body: dict, t0: float) -> tuple[str, float]:
        """A streamed reply's text and the delay to its first piece; the stream (and connection) is closed
        however it ends, so a timed-out request is never left running on our side."""
        # chunks as plain JSON (object: openai < 1.7x cannot construct a bare dict type)
        stream = await self._client().post("/chat/completions", cast_to=object, body={**body, "stream": True},
                                           stream=True, stream_cls=openai.AsyncStream[object])
        parts, delay, pieces = [], None, stream.__aiter__()
        try:
            while True:
                left = self.queue_timeout - (time.monotonic() - t0) if delay is None else self.timeout
                try:
                    chunk = await asyncio.wait_for(pieces.__anext__(), timeout=max(left, 0.001))
                except StopAsyncIteration:
                    break
                except asyncio.TimeoutError:
                    what = "did not start" if delay is None else "paused"
                    raise Stalled(stream.response.request, f"the reply {what} in time") from None
                if delay is None:
                    delay = time.monotonic() - t0
                choices = chunk.get("choices") if isinstance(chunk, dict) else None
                piece = ((choices[0] or {}).get("delta") or {}).get("content") if choices else None
                if isinstance(piece, str):
                    parts.append(piece)
        finally:
            await stream.close()
        if not parts:
            raise BadReply(f"judge {self.model}: streamed reply without text content")
        return "".join(parts), delay if delay is not None else time.monotonic() - t0

    def _note_failure(self, e: BaseException) -> None:
        """Count refused connections in a row; past ``connect_failures`` the endpoint is down for the run."""
        if not _refused(e):
            return
        self._refusals += 1
        if self._refusals >= self.connect_failures and self._dead is None:
            self._dead = UserError(f"{self.url}: the judge endpoint refused {self._refusals} connections in a row; "
                                   "check --base-url / OPENAI_BASE_URL and that the server is up, then rerun "
                                   "(judgments made so far are kept)")
        if self._dead is not None:
            raise self._dead

    def _log_retry(self, retry_state) -> None:
        exc = retry_state.outcome.exception()
        self.retries[cause(exc)] += 1
        # the exception's class and status only: its message may echo request details
        status = getattr(exc, "status_code", "")
        log.warning("judge call failed (%s %s), retry %d in %.2fs", type(exc).__name__, status,
                    retry_state.attempt_number, retry_state.upcoming_sleep)

    def counts(self) -> dict:
        """HTTP attempts, retries by cause and the concurrency reached, for the run's summary."""
        return {"attempts": self.attempts, "retries": dict(self.retries), "window": self.window.describe()}

    async def aclose(self) -> None:
        """Close the client of the running event loop (call it before that loop ends)."""
        if self._client_obj is not None and self._loop is asyncio.get_running_loop():
            client, self._client_obj = self._client_obj, None
            await client.close()
