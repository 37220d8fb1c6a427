"""``reproduce --shard i/n``: several machines share one run directory's evaluation, uncoordinated.

- The share: the evaluation units that read only training outputs (answers, leaderboard and Δπ of each
  model: the heavy units, each writing only its own files), dealt round robin in the manifest's order;
  shard i of n runs every n-th of them from the i-th. i counts from 0 (0 … n-1, as SLURM_ARRAY_TASK_ID
  of an array 0-(n-1)). Every shard computes the same list from the same config and checkpoints.
- Training comes first, once (a plain ``reproduce --stages sft reference train``): a shard refuses to
  start before it has finished, so no two machines ever train the same run.
- Judging (it reads every model's answers and appends to judgment files shared by many units),
  models.json, leaderboard/scores.csv and the figures are left to a later plain ``reproduce`` on the
  directory: it merges the shards' manifests and finishes the run.
- A shard records its units in manifest.shard-<i>-of-<n>.json (srdpo_eval.manifest), with a
  ``running`` entry (host, pid) while it runs: a plain run does not merge a shard that is still running,
  and a shard does not run twice at once.
"""

from __future__ import annotations

import os
import socket
import time

from contracts.errors import UserError
from srdpo_eval.manifest import Manifest, Unit, shard_path


def parse_shard(text: str) -> tuple[int, int]:
    """"i/n" → (i, n), with 0 <= i < n."""
    i, sep, n = str(text).partition("/")
    try:
        i, n = int(i), int(n)
    except ValueError:
        raise UserError(f"expected I/N, e.g. 0/4 (shard I of N, counted from 0), got {text!r}") from None
    if not sep or n < 1 or not 0 <= i < n:
        raise UserError(f"I counts from 0 and must be below N (0/{max(n, 1)} … {max(n, 1) - 1}/{max(n, 1)}), "
                        f"got {text}")
    return i, n


def share(units: list[Unit], shard: tuple[int, int]) -> set[str]:
    """Names of the units shard (i, n) runs: worker units with no dependency among ``units``, round robin."""
    names = {u.name for u in units}
    eligible = [u.name for u in units if u.worker and not set(u.deps) & names]
    i, n = shard
    return set(eligible[i::n])


def running_entry() -> dict:
    return {"host": socket.gethostname(), "pid": os.getpid(), "since": time.strftime("%Y-%m-%d %H:%M:%S")}


def check_not_running(manifest: Manifest) -> None:
    """Refuse to merge a shard that still runs (a plain run), or to run a shard twice at once."""
    for f in manifest.shard_files():
        if manifest.shard is not None and f != shard_path(manifest.path, manifest.shard):
            continue  # other shards run alongside this one
        run = manifest.running.get(f)
        if not run:
            continue
        if run.get("host") == socket.gethostname() and not _alive(run.get("pid", 0)):
            print(f"note: {f.name}: its shard was stopped (pid {run.get('pid')} is gone); taking over", flush=True)
            continue
        shard = f.stem.rsplit(".shard-", 1)[1].replace("-of-", "/")
        raise UserError(f"{f}: shard {shard} is running on {run.get('host')} (pid {run.get('pid')}, since "
                        f"{run.get('since')}); run this once it has finished (if it was killed on another "
                        f"machine: rerun it with --shard {shard}, or delete {f.name} to redo its units here)")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
