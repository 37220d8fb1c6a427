"""Judgment and answer files: JSON Lines read and appended as every stage does (contracts.jsonl)."""

from __future__ import annotations

from pathlib import Path

from contracts.errors import UserError
from contracts.jsonl import JsonlAppender, dedupe  # noqa: F401  (re-exported for the judge modules)
from contracts.jsonl import read_jsonl_lines as _read_lines


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
            raise UserError(f"{path}:{line}: missing field {name!r}")
