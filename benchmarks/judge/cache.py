"""A persistent cache of judge replies (SQLite), so re-judging the same prompt costs nothing.

The key is the sha256 of the full request (backend model, messages, temperature, max_tokens, prompt
version); the value is the raw reply text. Only successful replies are stored: a failed call leaves no
entry and is retried next time. One connection; every put is committed at once, and since asyncio runs
the (synchronous) get/put calls one at a time on the event loop, concurrent tasks never interleave.

A damaged file is never trusted: it is checked when opened (SQLite's quick_check) and, if damaged, moved
aside (``<name>.damaged-<time>``) and started afresh (``damaged`` says why and where it went); a fault
that shows up later makes a lookup a miss and a store a no-op, with one warning, not a crash.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sqlite3
import time
from pathlib import Path

log = logging.getLogger(__name__)


def request_key(model: str, messages: list[dict[str, str]], *, temperature: float, max_tokens: int,
                prompt_version: str) -> str:
    """sha256 of the canonical JSON of everything that determines the judge's reply."""
    payload = {"model": model, "messages": messages, "temperature": float(temperature),
               "max_tokens": int(max_tokens), "prompt_version": prompt_version}
    blob = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class JudgeCache:
    """``get(key) -> str | None`` and ``put(key, text)`` on an SQLite file (created on first use).

    ``repair=False`` (a dry run): a damaged file is left where it is and the cache reads as empty."""

    def __init__(self, path: str | Path, *, repair: bool = True):
        self.path = Path(path)
        self.damaged: str | None = None  # why the file was found damaged, and where it was moved
        self._warned = False
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = self._open()
        except sqlite3.DatabaseError as e:
            if not repair:
                self.damaged, self._db = f"{e}; it would be moved aside and rebuilt", sqlite3.connect(":memory:")
                self._db.execute("CREATE TABLE replies (key TEXT PRIMARY KEY, model TEXT, text TEXT NOT NULL)")
                return
            aside = self.path.with_name(f"{self.path.name}.damaged-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}")
            for suffix in ("", "-wal", "-shm"):
                src = Path(f"{self.path}{suffix}")
                if src.exists():
                    os.replace(src, f"{aside}{suffix}")
            self.damaged = f"{e}; moved to {aside.name}"
            self._db = self._open()

    def _open(self) -> sqlite3.Connection:
        # timeout: another process (a parallel judge run) may hold the write lock for a moment
        db = sqlite3.connect(self.path, timeout=30, check_same_thread=False)
        try:
            status = db.execute("PRAGMA quick_check").fetchone()[0]
            if status != "ok":
                raise sqlite3.DatabaseError(f"quick_check: {status}")
            db.execute("PRAGMA journal_mode=WAL")
            # WAL + NORMAL: a commit survives a killed process without an fsync that would stall the event loop
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("CREATE TABLE IF NOT EXISTS replies (key TEXT PRIMARY KEY, model TEXT, text TEXT NOT NULL)")
            db.commit()
        except BaseException:
            db.close()
            raise
        return db

    def _fault(self, e: sqlite3.DatabaseError) -> None:
        if not self._warned:
            self._warned = True
            log.warning("judge reply cache %s failed (%s): this run neither reads nor stores replies there", self.path,
                        e)

    def get(self, key: str) -> str | None:
        try:
            row = self._db.execute("SELECT text FROM replies WHERE key = ?", (key,)).fetchone()
        except sqlite3.DatabaseError as e:
            self._fault(e)
            return None
        return row[0] if row else None

    def __contains__(self, key: str) -> bool:
        return self.get(key) is not None

    def put(self, key: str, text: str, *, model: str = "") -> None:
        if not isinstance(text, str):
            raise TypeError(f"judge cache: reply must be text, got {type(text).__name__}")
        try:
            self._db.execute("INSERT OR REPLACE INTO replies (key, model, text) VALUES (?, ?, ?)", (key, model, text))
            self._db.commit()
        except sqlite3.OperationalError as e:
            if "full" in str(e):  # the disk: a user's problem to fix, not a reply to lose silently
                from contracts.files import out_of_space

                raise out_of_space(self.path) from e
            self._fault(e)
        except sqlite3.DatabaseError as e:
            self._fault(e)

    def __len__(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM replies").fetchone()[0]

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> "JudgeCache":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
