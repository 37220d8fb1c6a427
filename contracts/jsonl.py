"""JSON Lines, the one way every stage reads them (they are appended by contracts.files.Appender).

Results are appended one flushed line at a time, so a killed writer can leave at most a cut-off last
line: a reader can drop it (``repair_tail``: removed from the file, so an appending rerun rewrites
that record) or skip it (``skip_cut_tail``). A valid last line without its newline is a whole record
and is kept. Errors name the file and the line. Files made elsewhere may repeat a record:
:func:`dedupe` keeps one per key and says how many it dropped.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Hashable
from pathlib import Path

log = logging.getLogger(__name__)


def read_jsonl_lines(path: str | Path, *, missing_ok: bool = False, repair_tail: bool = False,
                     skip_cut_tail: bool = False, error: type[Exception] | None = None) -> list[tuple[int, dict]]:
    """(line number, record) for every JSON object line of ``path``; blank lines are ignored.

    A bad line raises ``error`` (default :class:`contracts.errors.UserError`) naming file and line.
    ``missing_ok``: a missing file reads as empty.
    """
    if error is None:
        from contracts.errors import UserError as error
    path = Path(path)
    if not path.is_file():
        if missing_ok:
            return []
        raise error(f"{path} not found")
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
            raise error(f"{path}:{i}: invalid JSON ({e.msg} at column {e.colno}); fix or remove that line") from None
        if not isinstance(record, dict):
            raise error(f"{path}:{i}: expected a JSON object, got {type(record).__name__}")
        records.append((i, record))
    return records


def dedupe(records: list[tuple[int, dict]], key: Callable[[dict], Hashable], path: str | Path,
           *, what: str = "records") -> list[tuple[int, dict]]:
    """Keep the first record of each ``key``; warn once with the number dropped (a file made by two runs,
    or concatenated by hand, must not count a judgment twice)."""
    seen: set = set()
    out = []
    for n, rec in records:
        k = key(rec)
        if k in seen:
            continue
        seen.add(k)
        out.append((n, rec))
    if len(out) < len(records):
        log.warning("%s: %d duplicate %s dropped (the first of each is kept)", path, len(records) - len(out), what)
    return out


def read_jsonl(path: str | Path, *, missing_ok: bool = False, repair_tail: bool = False) -> list[dict]:
    """All records of ``path`` (see :func:`read_jsonl_lines`)."""
    return [record for _, record in read_jsonl_lines(path, missing_ok=missing_ok, repair_tail=repair_tail)]


def require(record: dict, fields: tuple[str, ...], path: str | Path, line: int) -> None:
    """Fail naming file, line and the first missing field."""
    from contracts.errors import UserError

    for name in fields:
        if name not in record:
            raise UserError(f"{path}:{line}: missing field {name!r}")
