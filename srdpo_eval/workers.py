"""Units of work in worker processes, one per GPU: ``reproduce --workers N``.

Each unit runs in a fresh child process (the command the caller gives: for `reproduce`,
``python -m srdpo_eval.worker_main``, which rebuilds the run's units from the parent's resolved config,
checks that the unit's key hash is the parent's, runs the one it is given and writes its result as JSON
for the parent, which alone writes the manifest). This module is the pool alone: it knows nothing of
what the units are. A fresh
process per unit frees one model's GPU memory before the next is loaded, and a crash or a kill ends
that unit only: the others run on and keep what they finished.

Worker slot k of N is pinned to the k-th visible GPU (the child gets CUDA_VISIBLE_DEVICES=<that id> and
sees one device, cuda:0); with more workers than GPUs the slots share them round robin; on a CPU
nothing is pinned. A unit's output goes to RUN_DIR/logs/<unit>.log (contracts.run_dir).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

RESULT_ENV = "SRDPO_EVAL_UNIT_RESULT"  # where the child writes {"result": ...} or {"user_error": message}
PARENT_ENV = "SRDPO_EVAL_PARENT_PID"  # the child exits when this process is gone (the parent was killed)


def visible_devices() -> list[str]:
    """The GPU ids workers are pinned to: those CUDA_VISIBLE_DEVICES lists, else 0..count-1; [] on a CPU."""
    import torch

    n = torch.cuda.device_count()
    if n == 0:
        return []
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = [d.strip() for d in env.split(",") if d.strip()] if env else [str(i) for i in range(n)]
    return ids[:n]


def default_workers() -> int:
    """``--workers`` when not given: one per visible GPU, 1 on a CPU."""
    return max(1, len(visible_devices()))


@dataclass
class Job:
    unit: Any  # srdpo_eval.manifest.Unit
    slot: int
    device: str | None
    proc: subprocess.Popen
    log: Path
    result: Path
    t0: float

    @property
    def pid(self) -> int:
        return self.proc.pid


@dataclass
class Outcome:
    ok: bool
    log: Path
    result: Any = None
    error: str = ""
    user_error: bool = False  # the unit stopped on a user's mistake (one line, no traceback needed)


class Workers:
    """``slots`` child processes at most, each unit in its own, started by ``command(unit)`` (an argv)."""

    def __init__(self, slots: int, command: Callable[[Any], list[str]], log_for: Callable[[str], Path], *,
                 devices: list[str] | None = None):
        self.slots, self.command, self.log_for = slots, command, log_for
        self.devices = visible_devices() if devices is None else devices
        self.tmp = Path(tempfile.mkdtemp(prefix="srdpo-workers-"))  # this machine's: results, config
        self._busy: set[int] = set()

    def start(self, unit) -> Job:
        slot = min(set(range(self.slots)) - self._busy)
        device = self.devices[slot % len(self.devices)] if self.devices else None
        result = self.tmp / f"{os.urandom(8).hex()}.json"
        # the child imports the same code as this process, whatever its PYTHONPATH says
        root = str(Path(__file__).resolve().parents[1])
        env = {**os.environ, RESULT_ENV: str(result), PARENT_ENV: str(os.getpid()), "PYTHONUNBUFFERED": "1",
               "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)}
        if device is not None:
            env["CUDA_VISIBLE_DEVICES"] = device
        log = self.log_for(unit.name)
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "w") as out:
            out.write(f"# {unit.name} on {'GPU ' + device if device is not None else 'CPU'}, {time.ctime()}\n")
            out.flush()
            proc = subprocess.Popen(self.command(unit), stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, env=env)
        self._busy.add(slot)
        return Job(unit, slot, device, proc, log, result, time.time())

    def poll(self, job: Job) -> Outcome | None:
        """None while the unit runs; its outcome once it has ended."""
        rc = job.proc.poll()
        if rc is None:
            return None
        self._busy.discard(job.slot)
        data = json.loads(job.result.read_text()) if job.result.is_file() else {}
        job.result.unlink(missing_ok=True)
        if rc == 0 and "result" in data:
            return Outcome(True, job.log, result=data["result"])
        if "user_error" in data:
            return Outcome(False, job.log, error=data["user_error"], user_error=True)
        why = f"killed by {signal.Signals(-rc).name}" if rc < 0 else f"exit status {rc}"
        return Outcome(False, job.log, error=why + (f" ({last})" if (last := _last_line(job.log)) else ""))

    def stop(self, jobs: list[Job]) -> None:
        """End running units (Ctrl-C, or an error in the parent); their records stay 'started'."""
        for j in jobs:
            if j.proc.poll() is None:
                j.proc.terminate()
        for j in jobs:
            try:
                j.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                j.proc.kill()
                j.proc.wait()
            self._busy.discard(j.slot)

    def close(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self) -> "Workers":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _last_line(log: Path) -> str:
    try:
        lines = [x for x in log.read_text(errors="replace").splitlines() if x.strip()]
    except OSError:
        return ""
    return lines[-1].strip()[:300] if len(lines) > 1 else ""  # line 1 is the header
