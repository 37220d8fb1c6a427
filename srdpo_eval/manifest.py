"""The run manifest and the unit-of-work engine behind `reproduce`.

A run is a list of units (train one objective, answer one bench with one model, judge one pair, ...).
Each unit has a *key*: everything that determines its result, including the keys of the units it
reads from. The manifest records, per unit, the hash of its key and whether it finished. On a rerun:

- finished with the same key → skipped (nothing recomputed);
- started but not finished (killed, Ctrl-C, crash) → run again; every unit resumes from what it wrote
  (the trainer from its last checkpoint, answers and judgments from their JSONL lines);
- a different key (a setting changed) → its outputs are cleared and it runs again; since dependants
  hash this key into theirs, exactly the units downstream are invalidated too, and nothing else.

The manifest is rewritten atomically after every unit, so a kill loses at most the units in flight.
Only the process that schedules the units writes it: worker processes (srdpo_eval.workers) report
their results back. Several schedulers on one run directory (``reproduce --shard i/n`` on several
machines) each write their own ``manifest.shard-<i>-of-<n>.json`` beside ``manifest.json``, holding only
the units they ran; every load merges them (per unit, the record of its latest start wins) and a plain
run folds them into ``manifest.json`` and removes them.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from contracts.progress import bar, write


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
    # reads files no unit key covers (figures: every result file): a digest of them, taken when the unit
    # is due; done with the same key and digest, and none of its dependencies running -> skipped
    inputs: Callable[[], str] | None = None
    # a unit that returned {"skipped": reason, "until": s} is skipped again while ``recheck(probe)`` gives s
    # (the leaderboard offline: until the datasets' cache changes); probe False: reach no network (dry run)
    recheck: Callable[[bool], str | None] | None = None
    worker: bool = False  # may run in a worker process (--workers): it writes only its own files ...
    shared_file: str | None = None  # ... or appends to this one, which no other running unit then touches


# ------------------------------------------------------------------------------------ the manifest


def shard_path(path: str | Path, shard: tuple[int, int]) -> Path:
    """Where the scheduler of shard ``(i, n)`` keeps its units' records: manifest.shard-<i>-of-<n>.json."""
    p = Path(path)
    return p.with_name(f"{p.stem}.shard-{shard[0]}-of-{shard[1]}{p.suffix}")


def _read(p: Path) -> dict[str, Any]:
    try:
        return json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{p}: manifest is not valid JSON ({e}); move it away to start afresh") from None


@dataclass
class Manifest:
    path: Path  # manifest.json
    data: dict[str, Any]  # the merged view: header, and every unit's latest record
    shard: tuple[int, int] | None = None  # set: save() writes this shard's file, never manifest.json
    own: set[str] = field(default_factory=set)  # units whose records this scheduler writes (shard mode)
    merged: list[Path] = field(default_factory=list)  # shard files folded into ``data``
    running: dict[Path, dict] = field(default_factory=dict)  # shard file -> its "running" entry (shards)

    @classmethod
    def load(cls, path: str | Path, *, shard: tuple[int, int] | None = None) -> "Manifest":
        p = Path(path)
        data = _read(p) if p.exists() else {}
        data.setdefault("units", {})
        m = cls(p, data, shard)
        for f in m.shard_files():
            part = _read(f)
            for name, rec in part.get("units", {}).items():
                if rec.get("started", 0) >= data["units"].get(name, {}).get("started", 0):
                    data["units"][name] = rec
            if shard is not None and f == shard_path(p, shard):
                m.own = set(part.get("units", {}))
            m.merged.append(f)
            if part.get("running"):
                m.running[f] = part["running"]
        return m

    def shard_files(self) -> list[Path]:
        return sorted(self.path.parent.glob(f"{self.path.stem}.shard-*-of-*{self.path.suffix}"))

    @property
    def target(self) -> Path:
        return self.path if self.shard is None else shard_path(self.path, self.shard)

    def save(self) -> None:
        data = self.data
        if self.shard is not None:  # this shard's header and units only: shards never overwrite each other
            data = {**data, "units": {n: r for n, r in data["units"].items() if n in self.own}}
        _write_json(self.target, data)
        if self.shard is None:  # folded into manifest.json: the shard files have done their job
            for f in self.merged:
                f.unlink(missing_ok=True)
            self.merged = []

    def unit(self, name: str) -> dict[str, Any]:
        return self.data["units"].get(name, {})

    def record(self, name: str, rec: dict[str, Any]) -> None:
        self.data["units"][name] = rec
        self.own.add(name)


def _write_json(path: Path, data: Any) -> None:
    from contracts.files import write_json

    write_json(path, data, sort_keys=True, default=str)


# -------------------------------------------------------------------------------- keys and the plan


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


def plan(units: list[Unit], manifest: Manifest, *, probe: bool = True) -> list[tuple[Unit, str]]:
    """What each unit would do now: 'skip' (done, same key), 'resume', 'rerun' (key changed) or 'run'.
    ``probe`` False: decide without reaching the network (a dry run)."""
    hashes = unit_hashes(units)
    out, actions = [], {}
    for u in units:
        rec = manifest.unit(u.name)
        if not rec:
            action = "run"
        elif rec.get("key") != hashes[u.name]:
            action = "rerun"
        elif rec.get("status") == "done":
            fresh = u.inputs is None or (all(actions.get(d) == "skip" for d in u.deps)
                                         and rec.get("inputs") == u.inputs())
            action = "skip" if fresh else "run"
        elif rec.get("status") == "skipped" and u.recheck is not None and \
                (until := (rec.get("result") or {}).get("until")) is not None and until == u.recheck(probe):
            action = "skip"
        else:
            action = "resume"
        actions[u.name] = action
        out.append((u, action))
    return out


# ------------------------------------------------------------------------------------- execution


class UnitFailed(RuntimeError):
    """A unit failed in a worker process; the phase stopped after the running units finished."""


def execute(units: list[Unit], manifest: Manifest, *, only: set[str] | None = None,
            log: Callable[[str], None] | None = None, workers=None, desc: str = "units") -> dict[str, str]:
    """Run the units (they are given in dependency order); return {name: action taken}.

    ``only``: run just these units (``--stages``, a shard's share); the others are left as they are.
    A unit whose run returns ``{"skipped": reason}`` (e.g. data not reachable offline) is recorded as
    skipped, not done, so a later run tries it again.

    ``workers`` (a :class:`srdpo_eval.workers.Workers`): the units marked ``worker`` run in its processes,
    each as soon as the units it depends on have finished and a worker is free; two units with the same
    ``shared_file`` never run at the same time. Every other unit runs in this process when it is ready.
    A unit that fails in a worker stops the phase: nothing new starts, the running units finish and are
    recorded, then :class:`UnitFailed` (or the worker's UserError) names it; a rerun resumes.
    """
    log = log or write
    taken: dict[str, str] = {}
    todo: list[tuple[Unit, str]] = []
    skipped: dict[str, list[Unit]] = {}
    for u, action in plan(units, manifest):
        if only is not None and u.name not in only:
            taken[u.name] = "not selected"
            continue
        taken[u.name] = action
        if action == "skip":
            skipped.setdefault(u.stage, []).append(u)
        else:
            todo.append((u, action))
    for stage, us in skipped.items():
        log(f"[skip]   {stage}: {_skip_line(us, manifest)}")
    _Phase(manifest, unit_hashes(units), log, workers, desc).run(todo)
    return taken


def _skip_line(units: list[Unit], manifest: Manifest) -> str:
    """One line for a stage's skipped units: how many, and (once) why those skipped earlier were."""
    what = "" if len(units) > 1 or units[0].name == units[0].stage else f"{units[0].name} "
    what += f"{len(units)} units " if len(units) > 1 else ""
    reasons = [r for u in units if (r := (manifest.unit(u.name).get("result") or {}).get("skipped"))]
    if not reasons:
        return f"{what}done with the same settings and inputs"
    return (f"{what}as before, nothing they need has changed; {len(reasons)} of them without results: "
            + "; ".join(dict.fromkeys(reasons)))


class _Phase:
    """The units of one ``execute`` call: started in dependency order, in this process or in workers."""

    def __init__(self, manifest: Manifest, hashes: dict[str, str], log, workers, desc: str):
        self.manifest, self.hashes, self.log, self.workers, self.desc = manifest, hashes, log, workers, desc
        self.running: dict[str, Any] = {}  # unit name -> worker job
        self.done = self.total = 0
        self.failed: list[tuple[str, Any]] = []  # (unit name, worker outcome)

    def run(self, todo: list[tuple[Unit, str]]) -> None:
        waiting = {u.name for u, _ in todo}  # not finished in this call: their dependants wait
        self.total = len(todo)
        self.bar = bar(total=len(todo), desc=self.desc, unit="unit", enabled=bool(todo))
        try:
            while todo or self.running:
                ready = None if self.failed else next(
                    ((u, a) for u, a in todo if self._can_start(u, waiting)), None)
                if ready is not None:
                    todo.remove(ready)
                    if self._start(*ready):  # ran here, in this process: finished
                        waiting.discard(ready[0].name)
                    continue
                if not self.running:
                    if not self.failed:  # cannot happen with deps listed before their dependants
                        raise RuntimeError(f"no unit can start: {[u.name for u, _ in todo]}")
                    break  # a failure stopped the phase
                for name in self._poll():
                    waiting.discard(name)
            self._raise_failures()
        finally:
            if self.running:  # an exception here (Ctrl-C included): stop the workers; their units resume
                self.workers.stop([j for j in self.running.values()])
                self.running.clear()
            self.bar.close()

    def _can_start(self, u: Unit, waiting: set[str]) -> bool:
        if any(d in waiting for d in u.deps):
            return False
        if self.workers is None or not u.worker:
            return True
        busy = {j.unit.shared_file for j in self.running.values()}
        return len(self.running) < self.workers.slots and (u.shared_file is None or u.shared_file not in busy)

    def _start(self, u: Unit, action: str) -> bool:
        """Start ``u``; return True when it ran to the end here (in this process)."""
        if action == "rerun" and u.clear is not None:
            self.log(f"[clear]  {u.name}: its settings changed, clearing its outputs")
            u.clear()
        self.log(f"[{action}]{' ' * (7 - len(action))}{u.name}{': ' + u.describe if u.describe else ''}")
        rec = {"stage": u.stage, "key": self.hashes[u.name], "status": "started", "started": time.time(),
               "settings": u.key}
        if self.manifest.shard is not None:
            rec["shard"] = "{}/{}".format(*self.manifest.shard)
        if self.workers is not None and u.worker:
            job = self.workers.start(u)
            rec.update(pid=job.pid, device=job.device, log=str(job.log))
            self.manifest.record(u.name, rec)
            self.manifest.save()
            self.running[u.name] = job
            return False
        self.manifest.record(u.name, rec)
        self.manifest.save()
        self.bar.set_postfix_str(u.name)
        t0 = time.time()
        self._finish(u, u.run(), t0)
        return True

    def _finish(self, u: Unit, result: Any, t0: float) -> None:
        rec = self.manifest.unit(u.name)
        skipped = isinstance(result, dict) and bool(result.get("skipped"))
        rec.update(status="skipped" if skipped else "done", finished=time.time(), seconds=round(time.time() - t0, 2))
        if isinstance(result, dict):
            rec["result"] = result
        if u.inputs is not None and not skipped:
            rec["inputs"] = u.inputs()
        self.manifest.save()
        self.done += 1
        self.bar.update(1)

    def _poll(self) -> list[str]:
        """Wait a moment for running workers; record those that ended and return their names."""
        ended = []
        for name, job in list(self.running.items()):
            out = self.workers.poll(job)
            if out is None:
                continue
            del self.running[name]
            ended.append(name)
            if out.ok:
                self._finish(job.unit, out.result, job.t0)
                self.log(f"[done]   {name} ({time.time() - job.t0:.0f} s, {self.done}/{self.total})")
            else:
                self.manifest.unit(name).update(status="failed", finished=time.time(), error=out.error)
                self.manifest.save()
                self.failed.append((name, out))
                more = f"; waiting for the {len(self.running)} running unit(s) to finish" if self.running else ""
                self.log(f"[failed] {name}: {out.error} (output: {job.log}){more}")
        if self.running:
            slowest = min(self.running.values(), key=lambda j: j.t0)
            self.bar.set_postfix_str(f"slowest {slowest.unit.name} {time.time() - slowest.t0:.0f}s")
            if not ended:
                time.sleep(0.2)
        return ended

    def _raise_failures(self) -> None:
        if not self.failed:
            return
        from contracts.errors import UserError

        name, out = self.failed[0]
        others = f" (and {len(self.failed) - 1} more)" if len(self.failed) > 1 else ""
        msg = (f"unit {name} failed{others}: {out.error}; its output is in {out.log}; the other units' results "
               f"are kept: rerun the same command to resume")
        raise (UserError if out.user_error else UnitFailed)(msg)


def remove_path(path: str | Path) -> None:
    p = Path(path)
    if p.is_dir():
        shutil.rmtree(p)
    elif p.exists():
        p.unlink()
