"""The run manifest and the unit-of-work engine behind `reproduce`.

A run is a list of units (train one objective, answer one bench with one model, judge one pair, ...).
Each unit has a *key*: everything that determines its result, including the keys of the units it
reads from. The manifest records, per unit, the hash of its key and whether it finished. On a rerun:

- finished with the same key → skipped (nothing recomputed);
- started but not finished (killed, Ctrl-C, crash) → run again; every unit resumes from what it wrote
  (the trainer from its last checkpoint, answers and judgments from their JSONL lines);
- a different key (a setting changed) → its outputs are cleared and it runs again; since dependants
  hash this key into theirs, exactly the units downstream are invalidated too, and nothing else.

The manifest is rewritten atomically after every unit, so a kill loses at most the unit in flight.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def stable_hash(obj: Any) -> str:
    """sha256 of a JSON-able object with sorted keys (the unit key hash)."""
    blob = json.dumps(obj, sort_keys=True, default=str, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()


@dataclass
class Unit:
    """One resumable piece of work."""

    name: str  # unique, e.g. "train/sr-dpo", "answers/mt_bench/dpo", "judge/mt_bench/pair/sr-dpo__dpo"
    stage: str  # model | sft | reference | train | answers | judge | leaderboard | delta | figures
    key: dict[str, Any]  # settings that determine the result
    run: Callable[[], Any]
    deps: list[str] = field(default_factory=list)
    clear: Callable[[], None] | None = None  # removes this unit's outputs when its key changed
    describe: str = ""  # one line for --dry-run
    always: bool = False  # cheap units that rerun every time (figures)


@dataclass
class Manifest:
    path: Path
    data: dict[str, Any]

    @classmethod
    def load(cls, path: str | Path) -> "Manifest":
        p = Path(path)
        if p.exists():
            try:
                data = json.loads(p.read_text())
            except json.JSONDecodeError as e:
                raise ValueError(f"{p}: manifest is not valid JSON ({e}); move it away to start afresh") from None
        else:
            data = {}
        data.setdefault("units", {})
        return cls(p, data)

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(self.data, indent=2, sort_keys=True, default=str) + "\n")
        os.replace(tmp, self.path)

    def unit(self, name: str) -> dict[str, Any]:
        return self.data["units"].get(name, {})


def unit_hashes(units: list[Unit]) -> dict[str, str]:
    """Key hash of every unit, folding in the hashes of its dependencies (so changes flow downstream)."""
    by_name = {u.name: u for u in units}
    out: dict[str, str] = {}

    def h(name: str) -> str:
        if name not in out:
            u = by_name[name]
            missing = [d for d in u.deps if d not in by_name]
            if missing:
                raise ValueError(f"unit {name!r} depends on unknown unit {missing[0]!r}")
            out[name] = stable_hash({"key": u.key, "deps": {d: h(d) for d in sorted(u.deps)}})
        return out[name]

    for u in units:
        h(u.name)
    return out


def plan(units: list[Unit], manifest: Manifest) -> list[tuple[Unit, str]]:
    """What each unit would do now: 'skip' (done, same key), 'resume', 'rerun' (key changed) or 'run'."""
    hashes = unit_hashes(units)
    out = []
    for u in units:
        rec = manifest.unit(u.name)
        if not rec:
            action = "run"
        elif rec.get("key") != hashes[u.name]:
            action = "rerun"
        elif rec.get("status") == "done" and not u.always:
            action = "skip"
        else:
            action = "resume" if rec.get("status") != "done" else "run"
        out.append((u, action))
    return out


def execute(units: list[Unit], manifest: Manifest, *, only: set[str] | None = None,
            log: Callable[[str], None] = print) -> dict[str, str]:
    """Run the units in order (they are given in dependency order); return {name: action taken}.

    ``only``: run just these units (``--stages``); the others are left as they are.
    A unit whose run returns ``{"skipped": reason}`` (e.g. data not reachable offline) is recorded as
    skipped, not done, so a later run tries it again.
    """
    hashes = unit_hashes(units)
    taken: dict[str, str] = {}
    for u, action in plan(units, manifest):
        if only is not None and u.name not in only:
            taken[u.name] = "not selected"
            continue
        taken[u.name] = action
        if action == "skip":
            log(f"[skip]   {u.name} (done)")
            continue
        if action == "rerun" and u.clear is not None:
            log(f"[clear]  {u.name}: its settings changed, clearing its outputs")
            u.clear()
        log(f"[{action}]{' ' * (7 - len(action))}{u.name}{': ' + u.describe if u.describe else ''}")
        manifest.data["units"][u.name] = {
            "stage": u.stage, "key": hashes[u.name], "status": "started", "started": time.time(),
            "settings": u.key,
        }
        manifest.save()
        t0 = time.time()
        result = u.run()
        rec = manifest.data["units"][u.name]
        skipped = isinstance(result, dict) and bool(result.get("skipped"))
        rec.update(status="skipped" if skipped else "done", finished=time.time(), seconds=round(time.time() - t0, 2))
        if isinstance(result, dict):
            rec["result"] = result
        manifest.save()
    return taken


def remove_path(path: str | Path) -> None:
    p = Path(path)
    if p.is_dir():
        shutil.rmtree(p)
    elif p.exists():
        p.unlink()
