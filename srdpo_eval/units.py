"""What a `reproduce` run is: its units of work (srdpo_eval.manifest) and their keys.

    phase 1  sft (optional) → reference log-probs (once) → train/<run> for every objective (and λ)
    phase 2  models.json → answers/<bench>/<model> → judge/<bench>/… → leaderboard/<model> → delta/<model>
             → leaderboard (scores.csv) → figures

A unit's key is what decides its result, and each stage alone says what that is: the trainer's
``result_key`` and ``reference_key``, the answers', the judge's, the leaderboard's, Δπ's and the
analysis' ``result_key``; a unit adds only which inputs it reads (inputs the run made are its
dependencies, whose keys the manifest folds in). So a stage's execution-only settings (device, batch
sizes, micro-batches, workers, ...) never rerun a unit. Phase 2 is built from the checkpoints training
actually wrote (a dry run before training: from those the config will write).
"""

from __future__ import annotations

import math
import subprocess
from dataclasses import asdict
from pathlib import Path

from contracts import ids, objectives
from contracts.hashing import sha256_file
from contracts.ids import START_ID
from contracts.run_dir import ModelEntry, checkpoints_of_run, write_models
from srdpo_eval import context as C
from srdpo_eval.context import Context
from srdpo_eval.eval_units import answers_unit, delta_unit, judge_units, leaderboard_units
from srdpo_eval.manifest import Unit, remove_path

# ------------------------------------------------------------------------------------------ phase 1


def phase1_units(ctx: Context) -> list[Unit]:
    from trainer.config import result_key

    units, runs = [], C.run_names(ctx.cfg)
    if ctx.cfg.sft.enabled:
        tcfg = C.train_config(ctx, "sft", objectives.sft(), None)
        units.append(Unit("train/sft", "sft", result_key(tcfg, C.train_inputs(ctx, objectives.sft())),
                          lambda t=tcfg: _run_training(ctx, t), clear=lambda: remove_path(ctx.rd.train("sft")),
                          describe=f"SFT of {ctx.base_model} on the chosen answers"))
    if any(objectives.get(r.objective).reference for r in runs):
        units.append(_reference_unit(ctx, runs))
    steps = expected_steps(ctx)  # reads the data once, for the descriptions
    for run, objective, lam, seed in runs:
        tcfg = C.train_config(ctx, run, objective, lam, seed)
        lam_txt = f", λ={tcfg.lam:g}" if objectives.needs_refine(objective) else ""
        lam_txt += f", seed {seed}" if len(ctx.cfg.seeds) > 1 else ""
        units.append(Unit(f"train/{run}", "train", result_key(tcfg, C.train_inputs(ctx, objective)),
                          lambda t=tcfg: _run_training(ctx, t),
                          deps=["reference"] + (["train/sft"] if ctx.cfg.sft.enabled else []),
                          clear=lambda r=run: remove_path(ctx.rd.train(r)),
                          describe=f"{objective} (β={tcfg.beta:g}{lam_txt}), {steps} steps"))
    return units


def _launch(ctx: Context, tcfg, *, reference_only: bool = False) -> None:
    import shlex

    from trainer.config import dump_yaml

    cmd = C.launch_command(ctx, tcfg, reference_only=reference_only)
    Path(tcfg.output).mkdir(parents=True, exist_ok=True)
    dump_yaml(tcfg, cmd[cmd.index("--config") + 1])
    print("$ " + shlex.join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def _run_training(ctx: Context, tcfg) -> dict:
    """Train in this process, or through the configured launcher (torchrun) in child processes."""
    if not ctx.cfg.train.launcher:
        from trainer.train import train

        final = train(tcfg)
    else:
        _launch(ctx, tcfg)
        final = Path(tcfg.output) / ids.FINAL_DIR
    weights = sorted(Path(final).glob("*.safetensors"))
    return {"final": str(final), "sha256": {w.name: sha256_file(w) for w in weights}}


def _reference_unit(ctx: Context, runs: list[C.Run]) -> Unit:
    """Reference log-probs on x and p ⊕ x, once, before any objective trains: the trainer's own
    reference pass, whose cache entry every run (of every seed: the seed is not in its key) then finds."""
    from trainer.config import reference_key

    first = next(r for r in runs if objectives.get(r.objective).reference)
    tcfg = C.train_config(ctx, *first)
    objective = first.objective

    def run():
        from trainer.train import reference_pass

        if ctx.cfg.train.launcher:  # every process of the launcher scores its share; then a cache hit here
            _launch(ctx, tcfg, reference_only=True)
        lp, path = reference_pass(tcfg, refine=True)
        return {"cache": str(path), "pairs": len(lp.chosen)}

    return Unit("reference", "reference", reference_key(tcfg, C.train_inputs(ctx, objective)), run,
                deps=["train/sft"] if ctx.cfg.sft.enabled else [],
                # nothing to clear: the cache is keyed by content, a new key is a new file
                describe="reference log-probs on x and p ⊕ x (cached, shared by all runs)")


def expected_steps(ctx: Context) -> int | str:
    t = ctx.cfg.train
    if t.max_steps:
        return t.max_steps
    try:
        if ctx.cfg.data == "default":  # a dry run has not written the split: count it in memory
            from srdpo_eval.default_data import load_default_prefs, split_train_eval

            n = len(split_train_eval(load_default_prefs())[0])
        elif not Path(ctx.data).exists():  # a hub dataset: a plan does not go online (nor wait offline)
            return "?"
        else:
            from trainer.data import load_preference_data

            n = len(load_preference_data(ctx.data, split=ctx.cfg.data_split))
    except Exception:  # noqa: BLE001 — an estimate only; online datasets are not opened for a plan
        return "?"
    n = min(n, t.max_pairs or n)
    return math.ceil(n / t.batch_size) * t.epochs


# ------------------------------------------------------------------------------------------- models


def trained_models(ctx: Context) -> list[ModelEntry]:
    """The initial policy plus every checkpoint the runs wrote (from their srdpo_info.json)."""
    entries = [ModelEntry(START_ID, ctx.model, objectives.sft(), step=0, pairs_seen=0)]
    for r in C.run_names(ctx.cfg):
        entries += checkpoints_of_run(ctx.rd.train(r.name))
    return entries


def expected_models(ctx: Context) -> list[ModelEntry]:
    """What trained_models will find, from the config alone (for --dry-run before training)."""
    entries = [ModelEntry(START_ID, ctx.model, objectives.sft(), step=0, pairs_seen=0)]
    steps = expected_steps(ctx)
    every = ctx.cfg.train.save_every
    for run, objective, lam, seed in C.run_names(ctx.cfg):
        if every and isinstance(steps, int):
            for s in range(every, steps, every):
                seen = s * ctx.cfg.train.batch_size
                entries.append(ModelEntry(ids.checkpoint_id(run, seen), "", objective, lam=lam, step=s,
                                          pairs_seen=seen, run=run, seed=seed))
        entries.append(ModelEntry(ids.final_id(run), "", objective, lam=lam, run=run, seed=seed))
    return entries


def bench_models(ctx: Context, models: list[ModelEntry]) -> list[ModelEntry]:
    if ctx.cfg.bench.checkpoints == "all":
        return models
    return [m for m in models if m.model_id == START_ID or m.model_id == m.run]


def default_pairs(trained: list[str]) -> list[tuple[str, str]]:
    """Head-to-head comparisons for the objectives trained: each Sr-X against X, then the paper's
    cross pairs (Table 2: Sr-DPO vs IPO, Sr-IPO vs DPO) among its own objectives — not every Sr- against
    every base, which would grow with the square of the objectives."""
    srs = [(sr, base) for sr, base in objectives.sr_pairs() if sr in trained and base in trained]
    paper = [p for p in srs if set(p) <= set(objectives.PAPER)]
    return srs + [(sr, b) for sr, _ in paper for _, b in paper if (sr, b) not in srs]


def judge_pairs(ctx: Context, models: list[ModelEntry]) -> list[tuple[str, str]]:
    """Head-to-head pairs, within each seed: the config's (final models), the same pairs at every shared
    number of training pairs (win rate over training), Sr-X at each λ vs X (Figure 2a); then everything vs
    the baseline."""
    have = {m.model_id for m in models}
    by_run_pairs = {(m.run, m.pairs_seen): m.model_id for m in models if m.run}
    trained = ctx.cfg.train.objectives
    out: list[tuple[str, str]] = []
    for seed in ctx.cfg.seeds:
        of_seed = lambda name: ids.run_name(name, seed=seed) if name in trained else name  # noqa: E731
        for a, b in (tuple(map(of_seed, p)) for p in ctx.cfg.judge.pairs or default_pairs(trained)):
            if a in have and b in have:
                out.append((a, b))
            if ctx.cfg.bench.checkpoints == "all":
                for (run, seen), mid in sorted(by_run_pairs.items(), key=lambda kv: (kv[0][0], kv[0][1] or 0)):
                    other = by_run_pairs.get((b, seen))
                    if run == a and other and mid != a:
                        out.append((mid, other))
    for run, objective, lam, seed in C.run_names(ctx.cfg):
        base = objectives.get(objective).base
        base_run = ids.run_name(base, seed=seed) if base else None
        if run != ids.run_name(objective, seed=seed) and run in have and base_run in have:
            out.append((run, base_run))
    baseline = ctx.cfg.judge.baseline
    if baseline and baseline in have:
        out += [(m.model_id, baseline) for m in models if m.model_id != baseline]
    return list(dict.fromkeys(p for p in out if p[0] != p[1]))


# ------------------------------------------------------------------------------------------ phase 2


def phase2_units(ctx: Context, models: list[ModelEntry]) -> list[Unit]:
    cfg = ctx.cfg
    src = {m.model_id: (f"train/{m.run}" if m.run else ("train/sft" if cfg.sft.enabled else None)) for m in models}
    deps_of = lambda mid: [d for d in [src[mid]] if d]  # noqa: E731

    def models_json():
        write_models(ctx.rd.models, models)
        return {"models": len(models)}

    units = [Unit("models", "models", {"models": [asdict(m) for m in models]}, models_json,
                  deps=[f"train/{r.name}" for r in C.run_names(cfg)], describe=f"{len(models)} models")]
    answered = bench_models(ctx, models)
    for bench in cfg.bench.benches:
        units += [answers_unit(ctx, bench, m, deps_of(m.model_id)) for m in answered]
        units += judge_units(ctx, bench, answered, judge_pairs(ctx, answered))
    if cfg.leaderboard.enabled:
        units += leaderboard_units(ctx, models if cfg.leaderboard.checkpoints == "all" else answered, deps_of)
    if cfg.delta.enabled and ctx.delta_pairs:
        scored = [m for m in models if m.run and (cfg.delta.checkpoints == "all" or m.model_id == m.run)]
        units += [delta_unit(ctx, m, deps_of(m.model_id)) for m in scored]
    units.append(_figures_unit(ctx, [u.name for u in units]))
    return units


def _figures_unit(ctx: Context, deps: list[str]) -> Unit:
    from analysis.config import AnalysisConfig, result_key

    acfg = C.stage_config(AnalysisConfig, ctx.cfg.analysis)

    def run() -> dict:
        from analysis.report import build_report, print_summary

        rep = build_report(ctx.rd.root, n_boot=acfg.n_boot, seed=acfg.seed, data_dir=ctx.cfg.bench.data_dir)
        print_summary(rep, notes=False)
        return {"report": str(ctx.rd.report)}

    from analysis.inputs import inputs_digest

    return Unit("figures", "figures", result_key(acfg), run, deps=deps, inputs=lambda: inputs_digest(ctx.rd.root),
                describe="tables, figures and report.md")


def all_units(ctx: Context, *, planned: bool = False) -> tuple[list[Unit], list[Unit]]:
    """Both phases' units; ``planned``: phase 2 from the config's expected checkpoints where training
    has not written any yet (a dry run)."""
    have = trained_models(ctx)
    models = expected_models(ctx) if planned and len(have) == 1 else have
    return phase1_units(ctx), phase2_units(ctx, models)
