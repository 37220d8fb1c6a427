"""Token and cost estimates for a judge run (``--dry-run``), before any call is made."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

# USD per 1M tokens (input, output): public list prices; override with --price-in / --price-out.
PRICES: dict[str, tuple[float, float]] = {
    "gpt-4-32k": (60.0, 120.0),
    "gpt-4-turbo": (10.0, 30.0),
    "gpt-4-1106-preview": (10.0, 30.0),
    "gpt-4-0125-preview": (10.0, 30.0),
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4o": (2.50, 10.0),
    "gpt-4.1-nano": (0.10, 0.40),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1": (2.0, 8.0),
    "gpt-4": (30.0, 60.0),
    "gpt-3.5-turbo": (0.50, 1.50),
}

# A GPT-4 judgment (explanation + verdict) is typically a few hundred tokens.
COMPLETION_TOKENS_PER_CALL = 250
TOKENS_PER_MESSAGE = 4  # chat-format overhead per message


def price_for(model: str) -> tuple[float, float] | None:
    """List price of the longest known model-name prefix of ``model``, or None when unknown."""
    matches = [name for name in PRICES if model.startswith(name)]
    return PRICES[max(matches, key=len)] if matches else None


def token_counter() -> tuple[Callable[[str], int], str]:
    """(count, method): tiktoken's cl100k_base when its encoding is available, else ~4 characters a token.

    tiktoken fetches its encoding file from the internet on first use; offline, the estimate says that
    it used the character rule instead.
    """
    try:
        import tiktoken

        enc = tiktoken.get_encoding("cl100k_base")
        return (lambda text: len(enc.encode(text, disallowed_special=()))), "tiktoken cl100k_base"
    except Exception as e:  # noqa: BLE001 - any failure to get the encoding means: use the rough rule
        return (lambda text: (len(text) + 3) // 4), f"approx. 4 chars/token (tiktoken unavailable: {type(e).__name__})"


@dataclass
class CostEstimate:
    calls: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float | None  # None when the model's price is unknown and none was given
    token_method: str
    price_in: float | None = None
    price_out: float | None = None


def estimate(model: str, chats: list[list[dict[str, str]]], *, count: Callable[[str], int] | None = None,
             method: str = "", completion_tokens_per_call: int = COMPLETION_TOKENS_PER_CALL,
             price_in: float | None = None, price_out: float | None = None) -> CostEstimate:
    """Prompt tokens of ``chats`` (the calls still to make), assumed completion tokens, and their price."""
    if count is None:
        count, method = token_counter()
    prompt = sum(TOKENS_PER_MESSAGE + count(m["content"]) for chat in chats for m in chat)
    completion = completion_tokens_per_call * len(chats)
    listed = price_for(model)
    p_in = price_in if price_in is not None else (listed[0] if listed else None)
    p_out = price_out if price_out is not None else (listed[1] if listed else None)
    cost = None if p_in is None or p_out is None else (prompt * p_in + completion * p_out) / 1e6
    return CostEstimate(len(chats), prompt, completion, cost, method, p_in, p_out)
