"""`srdpo-eval reproduce`: running a run — preference data → trained objectives → benchmarks → judging →
figures, in units of work (srdpo_eval.units) that the manifest's engine (srdpo_eval.manifest) runs,
resumes and skips.

Training runs first, in this process or through ``train.launcher`` (torchrun). The evaluation units that
load a model run in worker processes, one per GPU, with ``--workers`` (srdpo_eval.workers; each rebuilt
there by srdpo_eval.worker_main), and a share of them per machine with ``--shard`` (srdpo_eval.shards).
``--dry-run`` only prints the plan (srdpo_eval.plan).
"""

from __future__ import annotations

import contextlib
import platform
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from contracts.errors import UserError
from contracts.files import Lock, write_json
from contracts.run_dir import RunDir
from srdpo_eval.config import ReproduceConfig, to_dict
from srdpo_eval.context import Context, check_inputs, resolve_inputs
from srdpo_eval.manifest import Manifest, Unit, execute, plan, shard_path
from srdpo_eval.units import all_units, phase2_units, trained_models

PACKAGES = ("srdpo-eval", "torch", "transformers", "accelerate", "lm-eval", "openai", "fschat", "pandas",
            "scipy", "matplotlib")


def reproduce(cfg: ReproduceConfig, output: str | Path, *, stages: list[str] | None = None,
              dry_run: bool = False, workers: int | None = None,
              shard: tuple[int, int] | None = None) -> dict[str, str]:
    """Run (or with ``dry_run`` only plan) the whole pipeline in ``output``; return {unit: action}.

    ``workers``: evaluation units run in this many processes, one per GPU (default: one per visible GPU,
    1 on a CPU: in this process). ``shard`` (i, n): run only the i-th of n shares of the evaluation
    units, training having finished (srdpo_eval.shards); a later plain run merges and finishes. One
    scheduler per run directory (per shard for shards, which run side by side by design).
    """
    if workers is not None and workers < 1:
        raise UserError(f"--workers {workers}: give 1 or more worker processes")
    if shard is not None and not (len(shard) == 2 and 0 <= shard[0] < shard[1]):
        raise UserError(f"--shard {shard}: give (i, n) with 0 <= i < n")
    check_inputs(cfg)
    rd = RunDir(Path(output))
    if dry_run:
        return dry_run_plan(cfg, rd, shard=shard)
    target = rd.root if shard is None else shard_path(rd.manifest, shard)
    with Lock(target, what=f"run directory {rd.root}" + (f" (shard {shard[0]}/{shard[1]})" if shard else "")):
        return _run(cfg, rd, stages=stages, workers=workers, shard=shard)


def dry_run_plan(cfg: ReproduceConfig, rd: RunDir, *, shard: tuple[int, int] | None = None) -> dict[str, str]:
    """Print what a run would do (srdpo_eval.plan); nothing is run, written or downloaded."""
    from srdpo_eval.plan import print_plan
    from srdpo_eval.shards import share

    manifest = Manifest.load(rd.manifest, shard=shard)
    ctx = resolve_inputs(cfg, rd, dry_run=True)
    units1, units2 = all_units(ctx, planned=True)
    print_plan(ctx, manifest, units1, units2, only=share(units2, shard) if shard else None)
    return {}


def _run(cfg: ReproduceConfig, rd: RunDir, *, stages, workers, shard) -> dict[str, str]:
    from srdpo_eval.shards import check_not_running, running_entry, share
    from srdpo_eval.workers import default_workers

    rd.root.mkdir(parents=True, exist_ok=True)
    manifest = Manifest.load(rd.manifest, shard=shard)
    ctx = resolve_inputs(cfg, rd)
    selected = lambda units: {u.name for u in units if not stages or u.stage in stages}  # noqa: E731
    units1, _ = all_units(ctx)
    check_not_running(manifest)
    if shard is not None:
        _check_trained(manifest, units1, shard)
        manifest.data["running"] = running_entry()
    write_manifest_header(manifest, ctx)
    try:
        taken = {} if shard else execute(units1, manifest, only=selected(units1), desc="phase 1: training")
        # phase 2 depends on phase 1's keys, so both are hashed together; only phase 2 runs now
        units2 = phase2_units(ctx, trained_models(ctx))
        only = selected(units2) & (share(units2, shard) if shard else selected(units2))
        with _worker_pool(ctx, workers or default_workers(), units1 + units2) as pool:
            second = execute(units1 + units2, manifest, only=only, workers=pool, desc="phase 2: evaluation")
    finally:
        if manifest.data.pop("running", None):
            manifest.save()
    taken.update({name: action for name, action in second.items() if name not in taken})
    if shard:
        print(f"shard {shard[0]}/{shard[1]} done: {len(only)} units in {rd.root}; once every shard has "
              f"finished, a plain `srdpo-eval reproduce` on it judges, merges and draws the figures")
    else:
        print(f"done: {rd.root}  (report: {rd.report})")
    return taken


def environment_info() -> dict[str, Any]:
    versions = {}
    for pkg in PACKAGES:
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    return {"python": sys.version.split()[0], "platform": platform.platform(), "packages": versions}


def write_manifest_header(manifest: Manifest, ctx: Context) -> None:
    manifest.data["config"] = to_dict(ctx.cfg)
    manifest.data["resolved"] = {"model": ctx.model, "base_model": ctx.base_model, "data": ctx.data,
                                 "delta_pairs": ctx.delta_pairs, "inputs": ctx.identity,
                                 "judge": {"backend": ctx.judge_kind, "model": ctx.judge_model}}
    manifest.data["environment"] = environment_info()
    manifest.save()


def _check_trained(manifest: Manifest, units1: list[Unit], shard: tuple[int, int]) -> None:
    todo = [u.name for u, action in plan(units1, manifest) if action != "skip"]
    if todo:
        raise UserError(f"--shard {shard[0]}/{shard[1]}: training is not finished ({todo[0]}); run a plain "
                        f"`srdpo-eval reproduce --stages sft reference train` with the same config and output "
                        f"first (one machine), then the shards")


@contextlib.contextmanager
def _worker_pool(ctx: Context, n: int, units: list[Unit]):
    """``n`` worker processes for the evaluation units (None for 1: they run in this process)."""
    if n == 1:
        yield None
        return
    from srdpo_eval.manifest import unit_hashes
    from srdpo_eval.workers import Workers

    if "torch" in sys.modules and sys.modules["torch"].cuda.is_initialized():
        import gc  # training in this process left cached GPU memory that worker 0 needs

        gc.collect()
        sys.modules["torch"].cuda.empty_cache()
    hashes = unit_hashes(units)

    def command(u: Unit) -> list[str]:
        return [sys.executable, "-m", "srdpo_eval.worker_main", "--config", str(cfg_file), "--output",
                str(ctx.rd.root), "--unit", u.name, "--key", hashes[u.name]]

    with Workers(n, command, ctx.rd.unit_log) as pool:
        cfg_file = pool.tmp / "config.json"
        write_json(cfg_file, to_dict(ctx.cfg), default=str)
        yield pool
