"""A worker process of `reproduce --workers`: ``python -m srdpo_eval.worker_main`` runs one unit.

The parent (srdpo_eval.reproduce) starts it through the pool (srdpo_eval.workers) with the run's resolved
config; this rebuilds the run's units as the parent built them, checks that the unit's key hash is the
parent's (the run directory or the code did not change meanwhile), runs that one unit and writes its
result as JSON where the pool reads it. It exits when its parent is gone.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path

from srdpo_eval.workers import PARENT_ENV, RESULT_ENV


def _exit_with_parent() -> None:
    """A worker whose parent was killed (SIGKILL leaves children running) stops within a second."""
    parent = int(os.environ.get(PARENT_ENV, "0"))

    def watch():
        while os.getppid() == parent:
            time.sleep(1)
        os._exit(3)

    if parent:
        threading.Thread(target=watch, daemon=True).start()


def _write_result(data: dict) -> None:
    from contracts.files import write_json

    write_json(os.environ[RESULT_ENV], data, default=str)


def worker_unit(cfg, output: str | Path, name: str, key: str):
    """The unit ``name`` of the run in ``output``, rebuilt in a worker process as its parent built it."""
    from contracts.run_dir import RunDir
    from srdpo_eval.context import resolve_inputs
    from srdpo_eval.manifest import unit_hashes
    from srdpo_eval.units import all_units

    ctx = resolve_inputs(cfg, RunDir(Path(output)))
    units = [u for phase in all_units(ctx) for u in phase]
    hashes = unit_hashes(units)
    if hashes.get(name) != key:  # the run directory or the code changed under the parent
        raise RuntimeError(f"unit {name}: the worker does not build the unit its parent scheduled "
                           f"({'a different key' if name in hashes else 'no such unit'})")
    return next(u for u in units if u.name == name)


def main(argv: list[str] | None = None) -> int:
    """Run one unit of a `reproduce` run (the parent starts this; not a user command)."""
    from contracts.errors import UserError
    from contracts.settings import NamedSource, apply
    from srdpo_eval.config import ReproduceConfig

    p = argparse.ArgumentParser(prog="python -m srdpo_eval.worker_main")
    p.add_argument("--config", required=True, help="the parent's resolved config (JSON)")
    p.add_argument("--output", required=True, help="run directory")
    p.add_argument("--unit", required=True)
    p.add_argument("--key", required=True, help="the unit's key hash in the parent")
    args = p.parse_args(argv)
    _exit_with_parent()
    try:
        cfg = apply(ReproduceConfig(), json.loads(Path(args.config).read_text()), NamedSource(args.config))
        result = worker_unit(cfg, args.output, args.unit, args.key).run()
    except UserError as e:
        print(f"srdpo-eval reproduce: {args.unit}: error: {e}", file=sys.stderr)
        _write_result({"user_error": str(e)})
        return 2
    _write_result({"result": result})
    return 0


if __name__ == "__main__":
    sys.exit(main())
