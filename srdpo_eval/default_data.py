"""The default preference data: a few hundred short pairs, each response rated 1–5, shipped with the
package (``srdpo_eval/data/default_prefs.jsonl``, made by ``tools/make_default_data.py``); its reader and
the train / held-out split of the default run.

Records use TRL's conversational format, so the policy's own chat template renders them::

    {"id": "default-0000", "prompt": [{"role": "user", "content": ...}],
     "chosen": [{"role": "assistant", "content": ...}], "rejected": [{"role": "assistant", ...}],
     "chosen_rating": 5, "rejected_rating": 2, "category": "arithmetic"}

A test checks that the committed file has not drifted from the tool.
"""

from __future__ import annotations

import importlib.resources
import json
from pathlib import Path

FILE_NAME = "default_prefs.jsonl"
N_EVAL = 64  # pairs held out for the Δπ–rating correlation
FIELDS = ("id", "prompt", "chosen", "rejected", "chosen_rating", "rejected_rating", "category")

def default_prefs_path() -> Path:
    """The shipped ``default_prefs.jsonl`` (package data)."""
    return Path(str(importlib.resources.files("srdpo_eval").joinpath("data", FILE_NAME)))


def _check_messages(value, role: str, where: str, field: str) -> None:
    if not (isinstance(value, list) and value and all(isinstance(m, dict) for m in value)):
        raise ValueError(f"{where}: field {field!r}: expected a non-empty list of messages")
    for m in value:
        if not isinstance(m.get("content"), str) or "role" not in m:
            raise ValueError(f"{where}: field {field!r}: each message needs 'role' and string 'content'")
    if value[-1]["role"] != role:
        raise ValueError(f"{where}: field {field!r}: last message must have role {role!r}")


def read_prefs(path: str | Path) -> list[dict]:
    """Read preference JSONL in this module's format; a bad record fails naming file, line and field."""
    path = Path(path)
    out = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{n}"
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{where}: invalid JSON ({e.msg})") from None
            for field in FIELDS:
                if field not in rec:
                    raise ValueError(f"{where}: missing field {field!r}")
            _check_messages(rec["prompt"], "user", where, "prompt")
            _check_messages(rec["chosen"], "assistant", where, "chosen")
            _check_messages(rec["rejected"], "assistant", where, "rejected")
            for field in ("chosen_rating", "rejected_rating"):
                r = rec[field]
                if isinstance(r, bool) or not isinstance(r, (int, float)) or not 1 <= r <= 5:
                    raise ValueError(f"{where}: field {field!r}: expected a rating from 1 to 5, got {r!r}")
            out.append(rec)
    return out


def load_default_prefs() -> list[dict]:
    """The shipped default preference pairs."""
    return read_prefs(default_prefs_path())


def split_train_eval(records: list[dict], n_eval: int = N_EVAL) -> tuple[list[dict], list[dict]]:
    """Deterministic split by id: the ``n_eval`` records with the largest ids are held out."""
    if not 0 <= n_eval < len(records):
        raise ValueError(f"n_eval={n_eval} must be between 0 and {len(records) - 1} for {len(records)} records")
    ordered = sorted(records, key=lambda r: r["id"])
    cut = len(ordered) - n_eval
    return ordered[:cut], ordered[cut:]
