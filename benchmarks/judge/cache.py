"""A persistent cache of judge replies (SQLite), so re-judging the same prompt costs nothing.

The key is the sha256 of the full request (backend model, messages, temperature, max_tokens, prompt
version); the value is the raw reply text. Only successful replies are stored: a failed call leaves no
entry and is retried next time. One connection; every put is committed at once, and since asyncio runs
the (synchronous) get/put calls one at a time on the event loop, concurrent tasks never interleave.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path


def request_key(model: str, messages: list[dict[str, str]], *, temperature: float, max_tokens: int,
                prompt_version: str) -> str:
    """sha256 of the canonical JSON of everything that determines the judge's reply."""
    payload = {"model": model, "messages": messages, "temperature": float(temperature),
               "max_tokens": int(max_tokens), "prompt_version": prompt_version}
    blob = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class JudgeCache:
    """``get(key) -> str | None`` and ``put(key, text)`` on an SQLite file (created on first use)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # timeout: another process (a parallel judge run) may hold the write lock for a moment
        self._db = sqlite3.connect(self.path, timeout=30, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        # WAL + NORMAL: a commit survives a killed process without an fsync that would stall the event loop
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS replies (key TEXT PRIMARY KEY, model TEXT, text TEXT NOT NULL)")
        self._db.commit()

    def get(self, key: str) -> str | None:
        row = self._db.execute("SELECT text FROM replies WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def __contains__(self, key: str) -> bool:
        return self.get(key) is not None

    def put(self, key: str, text: str, *, model: str = "") -> None:
        if not isinstance(text, str):
            raise TypeError(f"judge cache: reply must be text, got {type(text).__name__}")
        self._db.execute("INSERT OR REPLACE INTO replies (key, model, text) VALUES (?, ?, ?)", (key, model, text))
        self._db.commit()

    def __len__(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM replies").fetchone()[0]

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> "JudgeCache":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
