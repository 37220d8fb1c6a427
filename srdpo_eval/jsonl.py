"""Reading JSON Lines, the one way every stage does it: errors name the file and the line, and a last
line cut off by a killed writer can be left out or removed (results are appended as they are made)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

log = logging.getLogger(__name__)


def read_jsonl_lines(path: str | Path, *, missing_ok: bool = False, repair_tail: bool = False,
                     skip_cut_tail: bool = False, error: type[Exception] = ValueError) -> list[tuple[int, dict]]:
    """(line number, record) for every JSON object line of ``path``; blank lines are ignored.

    A bad line raises ``error`` naming file and line. ``missing_ok``: a missing file reads as empty.
    A last line cut off by a killed writer (no newline, not valid JSON) is, with ``repair_tail``,
    removed from the file (and logged) so that an appending rerun rewrites that record; with
    ``skip_cut_tail`` it is only left out (the file is not touched).
    """
    path = Path(path)
    if missing_ok and not path.exists():
        return []
    text = path.read_text(encoding="utf-8")
    lines = text.split("\n")
    if (repair_tail or skip_cut_tail) and lines and lines[-1].strip():
        try:
            json.loads(lines[-1])
        except json.JSONDecodeError:
            if repair_tail:
                cut = len(text) - len(lines[-1])
                log.warning("%s: dropping an incomplete last line %d (a run was cut off while writing)",
                            path, len(lines))
                with open(path, "r+b") as f:
                    f.truncate(len(text[:cut].encode("utf-8")))
            lines = lines[:-1]
    records = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise error(f"{path}: line {i}: invalid JSON ({e.msg} at column {e.colno})") from None
        if not isinstance(record, dict):
            raise error(f"{path}: line {i}: expected a JSON object, got {type(record).__name__}")
        records.append((i, record))
    return records
