"""Token and cost estimates for a judge run (``--dry-run``), before any call is made, and without the network.

Prompt tokens are counted with the judge's own tokenizer where it is known offline: a local judge's
checkpoint, or tiktoken's encoding for OpenAI's models when its file is already on disk (tiktoken
downloads it otherwise; a dry run never does). Anything else: about 4 characters a token, said so.
Completion tokens: 250 a call as a typical GPT-4 judgment, and at most ``max_tokens`` (a small local judge
often uses all of them).
"""

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
OPENAI_HOSTS = ("api.openai.com",)  # where list prices apply; any other endpoint is priced only when told

# A GPT-4 judgment (explanation + verdict) is typically a few hundred tokens.
COMPLETION_TOKENS_PER_CALL = 250
TOKENS_PER_MESSAGE = 4  # chat-format overhead per message
APPROX = "approx. 4 characters a token"


def price_for(model: str, base_url: str | None = None) -> tuple[float, float] | None:
    """List price of the longest known model-name prefix of ``model`` on OpenAI's own endpoint, else None
    (a local server named gpt-4 is not billed as GPT-4)."""
    if base_url and not any(h in base_url for h in OPENAI_HOSTS):
        return None
    matches = [name for name in PRICES if model.startswith(name)]
    return PRICES[max(matches, key=len)] if matches else None


def _tiktoken_offline(encoding: str) -> Callable[[str], int] | None:
    """tiktoken's ``encoding`` if its file is on disk already: its download is switched off meanwhile (a
    version without the hook we switch is not used at all)."""
    try:
        import tiktoken
        import tiktoken.load as load
    except ImportError:
        return None
    if not hasattr(load, "read_file"):
        return None

    def no_download(blobpath: str):
        raise ConnectionRefusedError(f"{blobpath}: not downloaded by a dry run")

    real, load.read_file = load.read_file, no_download
    try:
        enc = tiktoken.get_encoding(encoding)
    except Exception:  # noqa: BLE001 — not on disk (or unusable): the rough rule instead
        return None
    finally:
        load.read_file = real
    return lambda text: len(enc.encode(text, disallowed_special=()))


def token_counter(model: str = "gpt-4", tokenizer: str | None = None) -> tuple[Callable[[str], int], str]:
    """(count, method): a local judge's tokenizer (``tokenizer``: its checkpoint), tiktoken's cl100k_base for
    OpenAI's models when on disk, else ~4 characters a token."""
    if tokenizer is not None:
        from trainer.modeling import load_tokenizer

        tok = load_tokenizer(tokenizer)
        return (lambda text: len(tok.encode(text, add_special_tokens=False))), "the judge's own tokenizer"
    if price_for(model) is not None and (count := _tiktoken_offline("cl100k_base")) is not None:
        return count, "tiktoken cl100k_base"
    return (lambda text: (len(text) + 3) // 4), APPROX


@dataclass
class CostEstimate:
    calls: int
    prompt_tokens: int
    completion_tokens: int  # typical: 250 a call (at most max_tokens)
    cost_usd: float | None  # None when the model's price is unknown and none was given
    token_method: str
    price_in: float | None = None
    price_out: float | None = None
    completion_max: int = 0  # every reply as long as max_tokens allows
    cost_max_usd: float | None = None

    def describe(self) -> str:
        if self.cost_usd is None:
            cost = "no price (a local endpoint, or give --price-in/--price-out)"
        else:
            cost = f"about ${self.cost_usd:,.2f}, at most ${self.cost_max_usd:,.2f}"
        return (f"  estimate: {self.prompt_tokens} prompt tokens ({self.token_method}) + {self.completion_tokens} "
                f"completion tokens (250 a call; at most {self.completion_max} at --max-tokens), cost {cost}")


def estimate(model: str, chats: list[list[dict[str, str]]], *, count: Callable[[str], int] | None = None,
             method: str = "", max_tokens: int = 2048, price_in: float | None = None,
             price_out: float | None = None, base_url: str | None = None) -> CostEstimate:
    """Prompt tokens of ``chats`` (the calls still to make), completion tokens (typical and at most), and
    their price: the list price on OpenAI's endpoint, or the one given."""
    if count is None:
        count, method = token_counter(model)
    prompt = sum(TOKENS_PER_MESSAGE + count(m["content"]) for chat in chats for m in chat)
    typical, most = min(COMPLETION_TOKENS_PER_CALL, max_tokens) * len(chats), max_tokens * len(chats)
    listed = price_for(model, base_url)
    p_in = price_in if price_in is not None else (listed[0] if listed else None)
    p_out = price_out if price_out is not None else (listed[1] if listed else None)
    priced = p_in is not None and p_out is not None
    cost = (prompt * p_in + typical * p_out) / 1e6 if priced else None
    cost_max = (prompt * p_in + most * p_out) / 1e6 if priced else None
    return CostEstimate(len(chats), prompt, typical, cost, method, p_in, p_out, most, cost_max)
