"""`srdpo-eval reproduce`: preference data → four trained objectives → benchmarks → judging → figures.

The run is cut into units of work (see :mod:`srdpo_eval.manifest`); this module only decides which
units a config asks for and calls each stage's own functions:

    phase 1  sft (optional) → reference log-probs (once) → train/<run> for every objective (and λ)
    phase 2  models.json → answers/<bench>/<model> → judge/<bench>/… → leaderboard/<model> → delta/<model>
             → leaderboard (scores.csv) → figures (these two always regenerated, seconds)

Phase 2 is built from the checkpoints that training actually wrote, so `--dry-run` (before training)
shows it from the config's expected checkpoints instead. Its model-loading units run in worker
processes, one per GPU, with ``--workers`` (srdpo_eval.workers), and a share of them per machine with
``--shard`` (srdpo_eval.shards); training keeps its own launcher (train.launcher, torchrun).
"""

from __future__ import annotations

import contextlib
import json
import math
import platform
import shlex
import subprocess
import sys
from dataclasses import asdict, dataclass, fields
from importlib import metadata
from pathlib import Path
from typing import Any

from contracts import ids, objectives
from contracts.errors import UserError
from contracts.files import write_json, write_text
from contracts.hashing import sha256_file as file_sha256
from contracts.ids import START_ID
from contracts.run_dir import ModelEntry, RunDir, checkpoints_of_run, write_models
from contracts.settings import values
from srdpo_eval.config import ReproduceConfig, judge_backend_kind, to_dict
from srdpo_eval.manifest import Manifest, Unit, execute, plan, remove_path

PACKAGES = ("srdpo-eval", "torch", "transformers", "accelerate", "lm-eval", "openai", "fschat", "pandas",
            "scipy", "matplotlib")


@dataclass
class Context:
    cfg: ReproduceConfig
    rd: RunDir
    model: str  # initial policy checkpoint (resolved; the SFT output when SFT runs)
    base_model: str  # the model before SFT (== model when no SFT)
    data: str  # training preference data (file or dataset name)
    delta_pairs: str | None  # pairs with ratings for Table 4
    judge_kind: str  # openai | local
    judge_model: str  # name in judgment files
    ref_model: str  # the frozen reference (resolved: a local directory once the run starts)


# ------------------------------------------------------------------------------------------ inputs


def resolve_inputs(cfg: ReproduceConfig, rd: RunDir, *, dry_run: bool = False) -> Context:
    """Resolve the default model/data and the judge. Converting the default model is cached."""
    base = cfg.model
    if base == "default":
        from trainer.default_model import default_model_checkpoint

        base = str(default_model_checkpoint(convert=not dry_run))
    elif not dry_run:  # a hub name is downloaded once: every stage then reads a local directory
        from trainer.modeling import local_checkpoint

        base = str(local_checkpoint(base))
    data, delta_pairs = cfg.data, cfg.delta.pairs
    if cfg.data == "default":
        data, held_out = (str(p) for p in write_default_split(rd.data))
        delta_pairs = delta_pairs or held_out
    model = str(rd.train("sft") / ids.FINAL_DIR) if cfg.sft.enabled else base
    kind = judge_backend_kind(cfg)
    judge_model = cfg.judge.model if kind == "openai" else _local_judge_name(cfg.judge.local_model or base)
    ref = cfg.ref_model or model
    if cfg.ref_model and not dry_run:
        from trainer.modeling import local_checkpoint

        ref = str(local_checkpoint(cfg.ref_model))
    return Context(cfg, rd, model, base, data, delta_pairs, kind, judge_model, ref)


def _local_judge_name(model: str) -> str:
    from benchmarks.judge.config import JudgeConfig, judge_name

    return judge_name(JudgeConfig(backend="local", model=model))


def check_inputs(cfg: ReproduceConfig) -> None:
    """Every input file and model the config names exists, before anything runs (a plan included)."""
    from trainer.data import FILE_SUFFIXES
    from trainer.modeling import check_model_path

    for key, model in (("model", cfg.model), ("ref_model", cfg.ref_model), ("judge.local_model", cfg.judge.local_model)):
        if model and model != "default":
            try:
                check_model_path(model)
            except UserError as e:
                raise UserError(f"config {key}: {e}") from None
    for key, source in (("data", cfg.data), ("sft.data", cfg.sft.data), ("delta.pairs", cfg.delta.pairs)):
        if source and source != "default":
            p = Path(source.split(":")[0])
            if (p.suffix.lower() in FILE_SUFFIXES or p.exists()) and not p.is_file():
                raise UserError(f"config {key}: {source}: file not found")


def write_default_split(folder: Path) -> tuple[Path, Path]:
    """The shipped pairs split into train and held-out (Table 4) JSONL files in the run directory."""
    from srdpo_eval.default_data import load_default_prefs, split_train_eval

    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for name, records in zip(("train", "heldout"), split_train_eval(load_default_prefs())):
        path = folder / f"{name}.jsonl"
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
        if not path.is_file() or path.read_text(encoding="utf-8") != text:  # unchanged file: same hash
            write_text(path, text)
        out.append(path)
    return out[0], out[1]


def judge_config(ctx: Context):
    """The judge stage's config for this run (the judge: section, with the backend decided)."""
    from benchmarks.judge.config import JudgeConfig

    j = ctx.cfg.judge
    opts = values(j, {f.name for f in fields(JudgeConfig)} - {"backend", "model"})
    model = j.model if ctx.judge_kind == "openai" else (j.local_model or ctx.base_model)
    return JudgeConfig(**opts, backend=ctx.judge_kind, model=model)


def make_judge_backend(ctx: Context):
    """A fresh judge backend (the judge runner closes its connections after each unit)."""
    from benchmarks.judge.config import make_backend

    return make_backend(judge_config(ctx))


# --------------------------------------------------------------------------------------- phase 1


def run_names(cfg: ReproduceConfig) -> list[tuple[str, str, float | None]]:
    """(run name, objective, λ) for every training run: the objectives, then the λ sweep of Sr ones."""
    t = cfg.train
    out = [(o, o, t.lam if objectives.needs_refine(o) else None) for o in t.objectives]
    for lam in t.lam_sweep:
        out += [(ids.run_name(o, lam, t.lam), o, float(lam)) for o in t.objectives
                if objectives.needs_refine(o) and lam != t.lam]
    return out


def train_config(ctx: Context, run: str, objective: str, lam: float | None):
    """The trainer's TrainConfig for one run: the train: section's options (the sft: section's on top for
    SFT), plus what the pipeline decides per run."""
    from dataclasses import fields

    from trainer.config import TrainConfig

    cfg = ctx.cfg
    names = {f.name for f in fields(TrainConfig)}
    opts = values(cfg.train, names)
    if objective == "sft":
        opts.update({k: v for k, v in values(cfg.sft, names).items() if v is not None})
        opts.update(data=cfg.sft.data or ctx.data, model=ctx.base_model)
    else:
        # λ does not enter DPO/IPO, so it is kept out of their settings (and unit keys)
        opts.update(data=ctx.data, model=ctx.model, ref_model=ctx.ref_model,
                    lam=lam if objectives.needs_refine(objective) else 0.0)
    tcfg = TrainConfig(**opts, objective=objective, split=cfg.data_split, output=str(ctx.rd.train(run)),
                       ref_cache_dir=str(ctx.rd.refcache), resume=True)
    tcfg.check()
    return tcfg


def launch_command(ctx: Context, tcfg, *, reference_only: bool = False) -> list[str] | None:
    """The command that runs ``srdpo-eval train`` for ``tcfg`` through ``train.launcher`` (a torchrun
    prefix), with the run's settings in ``<run>.launch.yaml`` beside its folder; None: in this process."""
    if not ctx.cfg.train.launcher:
        return None
    cfg_file = Path(tcfg.output).parent / f"{Path(tcfg.output).name}.launch.yaml"
    extra = ["--reference-only"] if reference_only else ["--resume", *(["--fsdp"] if tcfg.fsdp else [])]
    return [*shlex.split(ctx.cfg.train.launcher), "-m", "srdpo_eval", "train", "--config", str(cfg_file), *extra]


def _launch(ctx: Context, tcfg, *, reference_only: bool = False) -> None:
    from trainer.config import dump_yaml

    cmd = launch_command(ctx, tcfg, reference_only=reference_only)
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
    return {"final": str(final), "sha256": {w.name: file_sha256(w) for w in weights}}


def _reference_unit(ctx: Context, runs: list[tuple[str, str, float | None]]) -> Unit:
    """Reference log-probs on x and p ⊕ x, once, before any objective trains: the trainer's own
    reference pass, whose cache entry every run then finds."""
    from trainer.modeling import resolve_precision

    name, objective, lam = next(r for r in runs if objectives.get(r[1]).preference)
    tcfg = train_config(ctx, name, objective, lam)

    def run():
        from trainer.train import reference_pass

        if ctx.cfg.train.launcher:  # every process of the launcher scores its share; then a cache hit here
            _launch(ctx, tcfg, reference_only=True)
        lp, path = reference_pass(tcfg, refine=True)
        return {"cache": str(path), "pairs": len(lp.chosen)}

    return Unit("reference", "reference",
                {"ref_model": tcfg.ref_model, "data": _data_key(tcfg.data), "data_cfg": asdict(tcfg.data_config()),
                 "reduce": tcfg.reduce, "max_pairs": tcfg.max_pairs, "split": tcfg.split,
                 "precision": resolve_precision(tcfg.device, tcfg.dtype, tcfg.mixed_precision).key},
                run, deps=["train/sft"] if ctx.cfg.sft.enabled else [],
                # nothing to clear: the cache is keyed by content, a new key is a new file
                describe="reference log-probs on x and p ⊕ x (cached, shared by all runs)")


def _data_key(source: str) -> str:
    p = Path(source)
    return file_sha256(p) if p.is_file() else source


def _train_key(tcfg) -> dict:
    d = asdict(tcfg)
    for k in ("output", "resume", "progress", "ref_cache_dir"):
        d.pop(k, None)
    d["data"] = _data_key(tcfg.data)
    return d


def phase1_units(ctx: Context) -> list[Unit]:
    units = []
    runs = run_names(ctx.cfg)
    if ctx.cfg.sft.enabled:
        tcfg = train_config(ctx, "sft", "sft", None)
        units.append(Unit("train/sft", "sft", _train_key(tcfg), lambda t=tcfg: _run_training(ctx, t),
                          clear=lambda: remove_path(ctx.rd.train("sft")),
                          describe=f"SFT of {ctx.base_model} on the chosen answers"))
    if any(objectives.get(o).preference for _, o, _ in runs):
        units.append(_reference_unit(ctx, runs))
    steps = expected_steps(ctx)  # reads the data once, for the descriptions
    for run, objective, lam in runs:
        tcfg = train_config(ctx, run, objective, lam)
        lam_txt = f", λ={tcfg.lam:g}" if objectives.needs_refine(objective) else ""
        units.append(Unit(f"train/{run}", "train", _train_key(tcfg), lambda t=tcfg: _run_training(ctx, t),
                          deps=["reference"] + (["train/sft"] if ctx.cfg.sft.enabled else []), clear=lambda r=run: remove_path(ctx.rd.train(r)),
                          describe=f"{objective} (β={tcfg.beta:g}{lam_txt}), {steps} steps"))
    return units


# --------------------------------------------------------------------------------------- phase 2


def expected_steps(ctx: Context) -> int | str:
    t = ctx.cfg.train
    if t.max_steps:
        return t.max_steps
    if not Path(ctx.data).exists():  # a hub dataset: a plan does not go online (nor wait for it offline)
        return "?"
    try:
        from trainer.data import load_preference_data

        n = len(load_preference_data(ctx.data, split=ctx.cfg.data_split))
    except Exception:  # noqa: BLE001 — an estimate only; online datasets are not opened for a plan
        return "?"
    n = min(n, t.max_pairs or n)
    return math.ceil(n / t.batch_size) * t.epochs


def trained_models(ctx: Context) -> list[ModelEntry]:
    """The initial policy plus every checkpoint the runs wrote (from their srdpo_info.json)."""
    entries = [ModelEntry(START_ID, ctx.model, "sft", step=0, pairs_seen=0)]
    for run, _, _ in run_names(ctx.cfg):
        entries += checkpoints_of_run(ctx.rd.train(run))
    return entries


def expected_models(ctx: Context) -> list[ModelEntry]:
    """What trained_models will find, from the config alone (for --dry-run before training)."""
    entries = [ModelEntry(START_ID, ctx.model, "sft", step=0, pairs_seen=0)]
    steps = expected_steps(ctx)
    every = ctx.cfg.train.save_every
    for run, objective, lam in run_names(ctx.cfg):
        if every and isinstance(steps, int):
            for s in range(every, steps, every):
                seen = s * ctx.cfg.train.batch_size
                entries.append(ModelEntry(ids.checkpoint_id(run, seen), "", objective, lam=lam, step=s,
                                          pairs_seen=seen, run=run))
        entries.append(ModelEntry(ids.final_id(run), "", objective, lam=lam, run=run))
    return entries


def _bench_models(ctx: Context, models: list[ModelEntry]) -> list[ModelEntry]:
    if ctx.cfg.bench.checkpoints == "all":
        return models
    return [m for m in models if m.model_id == START_ID or m.model_id == m.run]


def judge_pairs(ctx: Context, models: list[ModelEntry]) -> list[tuple[str, str]]:
    """Head-to-head pairs: the config's (final models), the same pairs at every shared number of
    training pairs (win rate over training), Sr-X at each λ vs X (Figure 2a), everything vs baseline."""
    have = {m.model_id for m in models}
    by_run_pairs = {(m.run, m.pairs_seen): m.model_id for m in models if m.run}
    out: list[tuple[str, str]] = []
    for a, b in ctx.cfg.judge.pairs:
        if a in have and b in have:
            out.append((a, b))
        if ctx.cfg.bench.checkpoints == "all":
            for (run, seen), mid in sorted(by_run_pairs.items(), key=lambda kv: (kv[0][0], kv[0][1] or 0)):
                other = by_run_pairs.get((b, seen))
                if run == a and other and mid != a:
                    out.append((mid, other))
    for run, objective, lam in run_names(ctx.cfg):
        base = objectives.get(objective).base
        if run != objective and run in have and base in have:
            out.append((run, base))
    baseline = ctx.cfg.judge.baseline
    if baseline and baseline in have:
        out += [(m.model_id, baseline) for m in models if m.model_id != baseline]
    return list(dict.fromkeys(p for p in out if p[0] != p[1]))


def phase2_units(ctx: Context, models: list[ModelEntry]) -> list[Unit]:
    from benchmarks.judge.run import drop_judgments

    cfg, rd = ctx.cfg, ctx.rd
    units: list[Unit] = []
    src = {m.model_id: (f"train/{m.run}" if m.run else ("train/sft" if cfg.sft.enabled else None)) for m in models}
    deps_of = lambda mid: [d for d in [src[mid]] if d]  # noqa: E731

    def models_json():
        write_models(rd.models, models)
        return {"models": len(models)}

    units.append(Unit("models", "models", {"models": [asdict(m) for m in models]}, models_json,
                      deps=[f"train/{r}" for r, _, _ in run_names(cfg)], describe=f"{len(models)} models"))

    bench_models = _bench_models(ctx, models)
    pairs = judge_pairs(ctx, bench_models)
    for bench in cfg.bench.benches:
        for m in bench_models:
            units.append(_answers_unit(ctx, bench, m, deps_of(m.model_id)))
        answer_units = lambda ids, b=bench: [f"answers/{b}/{i}" for i in ids]  # noqa: E731
        # judge units append to one file per judge and mode: the scheduler runs those of a file one at a time
        if cfg.judge.single and bench == "mt_bench":
            ids = [m.model_id for m in bench_models]
            single = rd.judgments(bench, ctx.judge_model, "single")
            units.append(Unit(f"judge/{bench}/single", "judge",
                              {**_judge_key(ctx), "models": ids},
                              lambda b=bench, ids=ids: _judge(ctx, b, "single", models=ids),
                              deps=answer_units(ids),
                              clear=lambda f=single, ids=ids: drop_judgments(f, set(ids)),
                              describe=f"single grading of {len(ids)} models", worker=True, shared_file=str(single)))
        pair_file = rd.judgments(bench, ctx.judge_model, "pairwise")
        for a, b in pairs:
            units.append(Unit(f"judge/{bench}/pair/{a}__{b}", "judge",
                              {**_judge_key(ctx), "pair": [a, b]},
                              lambda be=bench, a=a, b=b: _judge(ctx, be, "pairwise", pairs=[(a, b)]),
                              deps=answer_units([a, b]),
                              clear=lambda f=pair_file, a=a, b=b: drop_judgments(f, {a, b}),
                              describe=f"{a} vs {b}, both orders", worker=True, shared_file=str(pair_file)))
    if cfg.leaderboard.enabled:
        lb_models = models if cfg.leaderboard.checkpoints == "all" else _bench_models(ctx, models)
        lb_units = [_leaderboard_unit(ctx, m, deps_of(m.model_id)) for m in lb_models]
        units += lb_units + [_scores_unit(ctx, lb_units)]
    if cfg.delta.enabled and ctx.delta_pairs:
        for m in models:
            if m.model_id == m.run:  # final checkpoints of each run
                units.append(_delta_unit(ctx, m, deps_of(m.model_id)))
    units.append(Unit("figures", "figures", asdict(cfg.analysis), lambda: _figures(ctx), deps=[u.name for u in units],
                      always=True, describe="tables, figures and report.md"))
    return units


def _answers_unit(ctx: Context, bench: str, m: ModelEntry, deps: list[str]) -> Unit:
    from benchmarks.answers import GenerationConfig

    b = ctx.cfg.bench
    gcfg = GenerationConfig(**values(b, {f.name for f in fields(GenerationConfig)}))

    def run():
        from benchmarks.answers import generate_answers

        questions = _questions(ctx, bench)
        path = generate_answers(m.path, questions, ctx.rd.answers(bench, m.model_id), model_id=m.model_id, cfg=gcfg,
                                hash_cache=ctx.rd.hash_cache)
        return {"answers": str(path), "questions": len(questions)}

    return Unit(f"answers/{bench}/{m.model_id}", "answers",
                {"bench": bench, **_selection(ctx), "generation": asdict(gcfg), "model": m.model_id,
                 "path": m.path if m.model_id == START_ID else None},
                run, deps=deps, clear=lambda: remove_path(ctx.rd.answers(bench, m.model_id)),
                describe=_describe_selection(ctx), worker=True)


def _selection(ctx: Context) -> dict:
    """Which questions of a bench the run answers and judges (benchmarks.fastchat_data.select_questions)."""
    return {"limit": ctx.cfg.bench.limit, "per_category": ctx.cfg.bench.per_category}


def _questions(ctx: Context, bench: str) -> list:
    from benchmarks.fastchat_data import load_selected_questions

    return load_selected_questions(_bench_data_dir(ctx, bench), bench, **_selection(ctx))


def _describe_selection(ctx: Context) -> str:
    b = ctx.cfg.bench
    what = f"first {b.per_category} of each category" if b.per_category else "all"
    return f"{what} questions" + (f", at most {b.limit}" if b.limit else "")


def _judge_key(ctx: Context) -> dict:
    """What a judge unit's records depend on besides its answers: the judge, and for a local judge the
    version of its replies and its tie band (benchmarks/judge/calibration.py)."""
    from benchmarks.judge.config import reply_version

    cfg = judge_config(ctx)
    local = {"reply_version": reply_version(cfg), "tie_band": cfg.tie_band} if ctx.judge_kind == "local" else {}
    return {"judge": ctx.judge_model, "kind": ctx.judge_kind, **local}


def _judge(ctx: Context, bench: str, mode: str, *, models=None, pairs=None) -> dict:
    from benchmarks.judge import run as judge_run

    kw = dict(data_dir=_bench_data_dir(ctx, bench), concurrency=ctx.cfg.judge.concurrency, cache=True,
              **_selection(ctx))
    if mode == "single":
        s = judge_run.judge_single(ctx.rd.root, bench, make_judge_backend(ctx), models=models, **kw)
    else:
        s = judge_run.judge_pairwise(ctx.rd.root, bench, make_judge_backend(ctx), pairs=pairs, **kw)
    return {"matches": s.total, "already_done": s.already_done}


def _bench_data_dir(ctx: Context, bench: str) -> str:
    from benchmarks.fastchat_data import resolve_data_dir

    return str(resolve_data_dir(ctx.cfg.bench.data_dir, bench))


def _leaderboard_unit(ctx: Context, m: ModelEntry, deps: list[str]) -> Unit:
    """One model's leaderboard tasks (results reused per (checkpoint, task) inside); unreachable data
    (offline) is a skip note, retried next run. lm-eval's task index is built once per process."""
    from benchmarks.leaderboard import LeaderboardConfig

    lb = ctx.cfg.leaderboard
    lcfg = LeaderboardConfig(**values(lb, {f.name for f in fields(LeaderboardConfig)}))

    def run():
        from benchmarks.leaderboard import LeaderboardError, evaluate_checkpoints

        try:  # scores.csv is written once, by the "leaderboard" unit, not by units running side by side
            scores = evaluate_checkpoints([(m.model_id, m.path)], lcfg, ctx.rd.root, scores_csv=False)
        except LeaderboardError as e:
            print(f"leaderboard skipped: {e}", flush=True)
            return {"skipped": str(e)}
        return {"scores": scores[m.model_id]}

    return Unit(f"leaderboard/{m.model_id}", "leaderboard",
                {"leaderboard": asdict(lcfg), "model": m.model_id, "path": m.path if m.model_id == START_ID else None},
                run, deps=deps, clear=lambda: remove_path(ctx.rd.leaderboard_model(m.model_id)),
                describe=f"{len(lb.tasks)} tasks" + (f", limit {lb.limit}" if lb.limit else ""), worker=True)


def _scores_unit(ctx: Context, lb_units: list[Unit]) -> Unit:
    """leaderboard/scores.csv from every (model, task) result, after the models' units (seconds)."""

    def run():
        from benchmarks.leaderboard import collect_results, write_scores_csv

        if not collect_results(ctx.rd.root):
            return {"skipped": "no leaderboard results"}
        return {"scores_csv": str(write_scores_csv(ctx.rd.root))}

    return Unit("leaderboard", "leaderboard", {"models": [u.key["model"] for u in lb_units]}, run,
                deps=[u.name for u in lb_units], always=True, describe="leaderboard/scores.csv")


def _delta_unit(ctx: Context, m: ModelEntry, deps: list[str]) -> Unit:
    from benchmarks.delta import DeltaConfig

    d = ctx.cfg.delta
    dcfg = DeltaConfig(**values(d, {f.name for f in fields(DeltaConfig)}))

    def run():
        from benchmarks.delta import compute_delta

        out = ctx.rd.delta_table(m.model_id)
        # the reference's terms on these pairs are the same for every model: cached once in refcache/
        compute_delta(m.path, ctx.delta_pairs, out, cfg=dcfg, ref_model=ctx.ref_model, ref_cache_dir=ctx.rd.refcache,
                      model_id=m.model_id)
        return {"table": str(out)}

    return Unit(f"delta/{m.model_id}", "delta",
                {"pairs": _data_key(ctx.delta_pairs) if ctx.delta_pairs else None, "delta": asdict(dcfg),
                 "model": m.model_id},
                run, deps=deps, clear=lambda: remove_path(ctx.rd.delta_table(m.model_id)),
                describe="Δπ and m(x) on the rated pairs (Table 4)", worker=True)


def _figures(ctx: Context) -> dict:
    from analysis.report import build_report, print_summary

    a = ctx.cfg.analysis
    rep = build_report(ctx.rd.root, n_boot=a.n_boot, seed=a.seed, data_dir=ctx.cfg.bench.data_dir)
    print_summary(rep)
    return {"report": str(ctx.rd.report)}


# ------------------------------------------------------------------------------------ the command


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
                                 "data_sha256": _data_key(ctx.data), "delta_pairs": ctx.delta_pairs,
                                 "judge": {"backend": ctx.judge_kind, "model": ctx.judge_model}}
    manifest.data["environment"] = environment_info()
    manifest.save()


def print_plan(ctx: Context, manifest: Manifest, units1: list[Unit], units2: list[Unit], *,
               only: set[str] | None = None) -> None:
    """The plan of every unit (``only``: of a shard's share, see srdpo_eval.shards)."""
    rows = [(u, a) for u, a in plan(units1 + units2, manifest) if only is None or u.name in only]
    width = max((len(u.name) for u, _ in rows), default=0)
    print(f"plan for {ctx.rd.root} (config {ctx.cfg.name!r}):")
    if only is not None:
        print(f"  this shard: {len(rows)} of the {len(units2)} evaluation units (training must have finished; "
              f"judging, models.json, leaderboard/scores.csv and figures are left to a plain run)")
    launches = launch_commands(ctx)
    for u, action in rows:
        print(f"  {action:6s} {u.name:{width}s}  {u.describe}")
        if u.name in launches and action != "skip":
            print(f"  {'':6s} {'':{width}s}  $ {shlex.join(launches[u.name])}")
    steps = expected_steps(ctx)
    n_runs = len(run_names(ctx.cfg))
    print(f"training: {n_runs} runs x {steps} steps of {ctx.cfg.train.batch_size} pairs")
    print(judge_estimate(ctx, units1 + units2, manifest))


def launch_commands(ctx: Context) -> dict[str, list[str]]:
    """Unit name → the command ``train.launcher`` runs for it (empty when training runs in this process)."""
    if not ctx.cfg.train.launcher:
        return {}
    runs = [("sft", "sft", None)] if ctx.cfg.sft.enabled else []
    out = {f"train/{r[0]}": launch_command(ctx, train_config(ctx, *r)) for r in runs + run_names(ctx.cfg)}
    pref = [r for r in run_names(ctx.cfg) if objectives.get(r[1]).preference]
    if pref:
        out["reference"] = launch_command(ctx, train_config(ctx, *pref[0]), reference_only=True)
    return out


def judge_estimate(ctx: Context, units: list[Unit], manifest: Manifest) -> str:
    """Judge calls still to make: exact where the answers exist and stay (the judge's own dry run:
    judgments already written, cache hits, tokens, cost), else counted from the questions with a rough
    cost: a judge unit whose settings or answers change starts from nothing, whatever files are there."""
    from benchmarks.judge.estimate import price_for

    calls = cached = counted = 0
    notes = []
    actions = {u.name: a for u, a in plan(units, manifest)}
    todo = [u for u in units if u.stage == "judge" and actions[u.name] != "skip"]
    for u in todo:
        bench = u.name.split("/")[1]
        models = u.key.get("pair") or u.key["models"]
        mode = "pairwise" if u.key.get("pair") else "single"
        stays = actions[u.name] != "rerun" and all(actions.get(d) == "skip" for d in u.deps)
        if stays and all(ctx.rd.answers(bench, m).is_file() for m in models):
            kw = dict(pairs=[tuple(models)]) if mode == "pairwise" else dict(models=models)
            summary = _judge_dry_run(ctx, bench, mode, kw)
            calls += summary.calls_needed
            cached += summary.calls_cached
            if summary.estimate is not None and ctx.judge_kind == "openai":
                e = summary.estimate
                notes.append(f"{u.name}: {e.calls} calls, ~{e.prompt_tokens:,} prompt + {e.completion_tokens:,} "
                             f"completion tokens" + (f", about ${e.cost_usd:,.2f}" if e.cost_usd is not None else ""))
            continue
        try:
            n_q = len(_questions(ctx, bench))
        except Exception as e:  # noqa: BLE001 — the plan still prints; the run itself fails loudly
            notes.append(f"{bench}: data not available ({e})")
            continue
        turns = 2 if bench == "mt_bench" else 1
        # a local judge grades each question and turn once more, against the content-free answer
        n = n_q * turns * (2 if mode == "pairwise" else len(models) + (ctx.judge_kind == "local"))
        calls += n
        counted += n
    line = f"judge ({ctx.judge_kind}: {ctx.judge_model}): {calls} calls to make, {cached} of them cached"
    price = price_for(ctx.judge_model) if ctx.judge_kind == "openai" else None
    if counted and price:
        # answers not generated yet: assume FastChat-sized prompts (~1,200 tokens in, ~300 out)
        usd = counted * (1200 * price[0] + 300 * price[1]) / 1e6
        line += f"; about ${usd:,.2f} for the {counted} calls whose answers do not exist yet"
    return "\n".join([line, *("  " + n for n in notes)])


def _judge_dry_run(ctx: Context, bench: str, mode: str, kw: dict):
    from benchmarks.judge.run import judge_plan

    from benchmarks.judge.config import reply_version

    return judge_plan(ctx.rd.root, bench, ctx.judge_model, mode=mode, data_dir=_bench_data_dir(ctx, bench),
                      reply_version=reply_version(judge_config(ctx)), **_selection(ctx), **kw)


def reproduce(cfg: ReproduceConfig, output: str | Path, *, stages: list[str] | None = None,
              dry_run: bool = False, workers: int | None = None,
              shard: tuple[int, int] | None = None) -> dict[str, str]:
    """Run (or with ``dry_run`` only plan) the whole pipeline in ``output``; return {unit: action}.

    ``workers``: evaluation units run in this many processes, one per GPU (default: one per visible GPU,
    1 on a CPU: in this process). ``shard`` (i, n): run only the i-th of n shares of the evaluation
    units, training having finished (srdpo_eval.shards); a later plain run merges and finishes.
    """
    from srdpo_eval.shards import check_not_running, running_entry, share
    from srdpo_eval.workers import default_workers

    if workers is not None and workers < 1:
        raise UserError(f"--workers {workers}: give 1 or more worker processes")
    if shard is not None and not (len(shard) == 2 and 0 <= shard[0] < shard[1]):
        raise UserError(f"--shard {shard}: give (i, n) with 0 <= i < n")
    check_inputs(cfg)
    rd = RunDir(Path(output))
    if dry_run:
        return _reproduce(cfg, rd, stages=stages, dry_run=True, workers=workers, shard=shard)
    # one scheduler per run directory (a shard: per shard; shards of one run run side by side by design)
    from contracts.files import Lock
    from srdpo_eval.manifest import shard_path

    target = rd.root if shard is None else shard_path(rd.manifest, shard)
    with Lock(target, what=f"run directory {rd.root}" + (f" (shard {shard[0]}/{shard[1]})" if shard else "")):
        return _reproduce(cfg, rd, stages=stages, dry_run=False, workers=workers, shard=shard)


def _reproduce(cfg: ReproduceConfig, rd: RunDir, *, stages, dry_run: bool, workers, shard) -> dict[str, str]:
    from srdpo_eval.shards import check_not_running, running_entry, share
    from srdpo_eval.workers import default_workers

    rd.root.mkdir(parents=True, exist_ok=True)
    manifest = Manifest.load(rd.manifest, shard=shard)
    ctx = resolve_inputs(cfg, rd, dry_run=dry_run)
    selected = lambda units: {u.name for u in units if not stages or u.stage in stages}  # noqa: E731
    units1 = phase1_units(ctx)
    if dry_run:
        have = trained_models(ctx)
        models = have if len(have) > 1 else expected_models(ctx)
        units2 = phase2_units(ctx, models)
        print_plan(ctx, manifest, units1, units2, only=share(units2, shard) if shard else None)
        return {}
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
        n = workers or default_workers()
        with _worker_pool(ctx, n, units1 + units2) as pool:
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
        return [sys.executable, "-m", "srdpo_eval.workers", "--config", str(cfg_file), "--output",
                str(ctx.rd.root), "--unit", u.name, "--key", hashes[u.name]]

    with Workers(n, command, ctx.rd.unit_log) as pool:
        cfg_file = pool.tmp / "config.json"
        write_json(cfg_file, to_dict(ctx.cfg), default=str)
        yield pool


def worker_unit(cfg: ReproduceConfig, output: str | Path, name: str, key: str) -> Unit:
    """The unit ``name`` of the run in ``output``, rebuilt in a worker process as its parent built it."""
    from srdpo_eval.manifest import unit_hashes

    ctx = resolve_inputs(cfg, RunDir(Path(output)))
    units = phase1_units(ctx) + phase2_units(ctx, trained_models(ctx))
    hashes = unit_hashes(units)
    if hashes.get(name) != key:  # the run directory or the code changed under the parent
        raise RuntimeError(f"unit {name}: the worker does not build the unit its parent scheduled "
                           f"({'a different key' if name in hashes else 'no such unit'})")
    return next(u for u in units if u.name == name)
