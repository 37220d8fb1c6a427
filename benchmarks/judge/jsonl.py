"""JSON-lines files written one record at a time, and read back with errors that name file and line."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import IO

from srdpo_eval.jsonl import read_jsonl_lines as _read_lines

log = logging.getLogger(__name__)


def read_jsonl(path: str | Path, *, repair_tail: bool = False) -> list[dict]:
    """All records of ``path`` ([] if it does not exist); see :func:`read_jsonl_lines`."""
    return [record for _, record in read_jsonl_lines(path, repair_tail=repair_tail)]


def read_jsonl_lines(path: str | Path, *, repair_tail: bool = False,
                     skip_cut_tail: bool = False) -> list[tuple[int, dict]]:
    """(line number, record) of a judgment/answer file; a missing file reads as empty."""
    return _read_lines(path, missing_ok=True, repair_tail=repair_tail, skip_cut_tail=skip_cut_tail)


def require(record: dict, fields: tuple[str, ...], path: str | Path, line: int) -> None:
    """Fail naming file, line and the first missing field."""
    for name in fields:
        if name not in record:
            raise ValueError(f"{path}: line {line}: missing field {name!r}")


class JsonlAppender:
    """Append records to a JSONL file, each flushed as soon as it is written (a crash loses none)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f: IO[str] = open(self.path, "a", encoding="utf-8")
        if self._f.tell() > 0:
            with open(self.path, "rb") as f:
                f.seek(-1, 2)
                if f.read(1) != b"\n":
                    self._f.write("\n")  # never glue a new record onto a previous last line

    def write(self, record: dict) -> None:
        self._f.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._f.flush()

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> "JsonlAppender":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

