"""How many judge requests to keep in flight: a fixed number, or ``auto``, a window that adapts to the server.

Measured against llama.cpp's server with one slot (as most local servers, and small vLLM deployments under
load, serve): 16 requests in flight with a 120 s timeout sent 45 HTTP requests for 8 judgments — the queued
ones timed out while they waited, were sent again, and the server computed replies nobody read. ``auto``
keeps in flight what the server serves without queueing, TCP Vegas' idea: it grows the window while replies
start within 1.5 times the fastest start seen (the server has room), shrinks it by one when they start more
than 3 times later (they wait in the server's queue), and halves it on a timeout. It starts at 2.

The delay measured is the time to the reply's first byte (streamed replies), which grows with the
server's queue and not with the reply's length, or the whole reply when not streamed.
"""

from __future__ import annotations

import asyncio

AUTO = "auto"


class Window:
    """An asyncio limit on requests in flight; with ``fixed`` None it adapts (see the module)."""

    def __init__(self, fixed: int | None = None, *, start: int = 2, maximum: int = 64, grow_below: float = 1.5,
                 shrink_above: float = 3.0, slack_s: float = 0.02):
        self.fixed = fixed
        self.limit = float(fixed or start)
        self.maximum = fixed or maximum
        self.grow_below, self.shrink_above, self.slack_s = grow_below, shrink_above, slack_s
        self.in_flight = 0
        self.base: float | None = None  # the shortest delay seen: the server's own time, without queueing
        self.peak = 0  # the most requests ever in flight
        self.timeouts = 0
        self._cond: asyncio.Condition | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # a condition belongs to one event loop

    def _condition(self) -> asyncio.Condition:
        loop = asyncio.get_running_loop()
        if self._cond is None or self._loop is not loop:
            self._cond, self._loop, self.in_flight = asyncio.Condition(), loop, 0
        return self._cond

    async def acquire(self) -> None:
        cond = self._condition()
        async with cond:
            await cond.wait_for(lambda: self.in_flight < int(self.limit))
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)

    async def release(self, delay: float | None = None, *, timed_out: bool = False) -> None:
        """One request ended: ``delay`` until its reply started (None: it failed otherwise)."""
        if self.fixed is None:
            self._adapt(delay, timed_out)
        cond = self._condition()
        async with cond:
            self.in_flight -= 1
            cond.notify_all()

    def _adapt(self, delay: float | None, timed_out: bool) -> None:
        if timed_out:
            self.timeouts += 1
            self.limit = max(1.0, self.limit / 2)
            return
        if delay is None:
            return
        self.base = delay if self.base is None else min(self.base, delay)
        if delay <= self.grow_below * self.base + self.slack_s:  # half a request more per reply that did not wait
            self.limit = min(self.maximum, self.limit + 0.5)
        elif delay > self.shrink_above * self.base + self.slack_s:
            self.limit = max(1.0, self.limit - 1.0)

    def describe(self) -> str:
        kind = f"fixed at {self.fixed}" if self.fixed else f"auto, now {int(self.limit)}"
        return f"concurrency {kind} (at most {self.peak} in flight)"


def parse_concurrency(value) -> int | None:
    """``auto`` → None (adaptive), a number ≥ 1 → that number; anything else is an error."""
    if isinstance(value, str) and value.strip().lower() == AUTO:
        return None
    try:
        n = int(value)
    except (TypeError, ValueError):
        n = 0
    if n < 1:
        raise ValueError(f"concurrency: 'auto' or a number >= 1, got {value!r}")
    return n
