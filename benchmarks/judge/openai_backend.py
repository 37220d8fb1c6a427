"""A ChatBackend on any OpenAI-compatible server (OpenAI, Azure-style proxies, vLLM, a test fake).

One retry policy (tenacity; the openai client's own retries are off): exponential backoff with jitter
on 429 (waiting what Retry-After asks, when it says), 5xx, timeouts, dropped connections and replies
that are not a chat completion (a body cut off, no text content); any other 4xx is a mistake in the
request or the key and fails at once. An endpoint that refuses connections ends the whole run after a
few refusals in a row, naming its URL, instead of retrying every call for minutes. The API key is read
from the environment and handed to the client only: it is never logged, printed or written.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import os
import time

import openai
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_random_exponential

from contracts.errors import UserError

log = logging.getLogger(__name__)


class BadReply(Exception):
    """A 200 whose body is not a chat completion with text (cut off by a proxy, or empty): retried."""


def is_retryable(exc: BaseException) -> bool:
    """429, 5xx, timeouts, dropped connections and bad replies are worth another try; others are not."""
    if isinstance(exc, (openai.RateLimitError, openai.APIConnectionError, BadReply)):  # timeouts subclass connection
        return True
    return isinstance(exc, openai.APIStatusError) and exc.status_code >= 500


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
    """``ChatBackend`` on ``openai.AsyncOpenAI``; ``base_url`` defaults to ``$OPENAI_BASE_URL`` or OpenAI."""

    def __init__(self, model: str, *, base_url: str | None = None, api_key_env: str = "OPENAI_API_KEY",
                 timeout: float = 120.0, max_retries: int = 8, backoff_initial: float = 1.0,
                 backoff_max: float = 60.0, retry_after_max: float = 300.0, connect_failures: int = 3):
        self.model = model
        base_url = base_url or os.environ.get("OPENAI_BASE_URL") or None
        api_key = os.environ.get(api_key_env)
        if not api_key:
            if base_url is None:
                raise UserError(f"the judge needs an API key: set the environment variable {api_key_env} (or "
                                "give --base-url of an OpenAI-compatible server that needs none)")
            api_key = "EMPTY"  # local OpenAI-compatible servers usually need no key
        self.base_url = base_url
        self.url = base_url or "https://api.openai.com/v1"  # for messages
        self.max_retries = max_retries
        self.connect_failures = connect_failures
        self._refusals = 0  # connections refused in a row, over every call in flight
        self._dead: UserError | None = None
        self._wait = _RetryAfterOrBackoff(backoff_initial, backoff_max, retry_after_max)
        # the client's connection pool belongs to one event loop: one client per loop (asyncio.run each)
        self._make_client = lambda: openai.AsyncOpenAI(api_key=api_key, base_url=base_url, timeout=timeout,
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
        async for attempt in retrying:
            with attempt:
                if self._dead is not None:
                    raise self._dead
                # The client's plain POST: the same auth, base_url, timeout and error classes as
                # chat.completions.create, without its per-request typed transform of the messages
                # and pydantic parse of the reply (~5 ms of CPU a call, the bottleneck at concurrency 16).
                body = {"model": self.model, "messages": messages, "temperature": temperature,
                        "max_tokens": max_tokens, "n": 1}
                try:
                    reply = await self._client().post("/chat/completions", cast_to=dict, body=body)
                except Exception as e:  # noqa: BLE001 — sorted into refused / bad reply / the rest
                    self._note_failure(e)
                    if isinstance(e, json.JSONDecodeError):
                        raise BadReply(f"judge {self.model}: reply body is not JSON ({e.msg})") from None
                    raise
                self._refusals = 0
                return reply_text(reply, self.model)
        raise AssertionError("unreachable")

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

    @staticmethod
    def _log_retry(retry_state) -> None:
        exc = retry_state.outcome.exception()
        # the exception's class and status only: its message may echo request details
        status = getattr(exc, "status_code", "")
        log.warning("judge call failed (%s %s), retry %d in %.2fs", type(exc).__name__, status,
                    retry_state.attempt_number, retry_state.upcoming_sleep)

    async def aclose(self) -> None:
        """Close the client of the running event loop (call it before that loop ends)."""
        if self._client_obj is not None and self._loop is asyncio.get_running_loop():
            client, self._client_obj = self._client_obj, None
            await client.close()
