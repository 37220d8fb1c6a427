"""The one interface every judge backend implements.

A backend turns a chat (FastChat judge prompt rendered as system + user messages) into the judge's
reply text. The OpenAI-compatible client and the local Hugging Face judge both implement it, so the
prompt building, verdict parsing, caching and file writing above it are shared.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable


@runtime_checkable
class ChatBackend(Protocol):
    #: identifies the backend and its model in cache keys and judgment files (e.g. "gpt-4")
    model: str

    async def chat(self, messages: list[dict[str, str]], *, temperature: float, max_tokens: int) -> str:
        """Return the judge's reply text for ``messages`` ([{"role": ..., "content": ...}, ...])."""
        ...
