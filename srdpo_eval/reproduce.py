"""`srdpo-eval reproduce`: preference data → four trained objectives → benchmarks → judging → figures.

The run is cut into units of work (see :mod:`srdpo_eval.manifest`); this module only decides which
units a config asks for and calls each stage's own functions:

    phase 1  sft (optional) → reference log-probs (once) → train/<run> for every objective (and λ)
    phase 2  models.json → answers/<bench>/<model> → judge/<bench>/… → leaderboard/<model> → delta/<model>
             → figures (always regenerated, seconds)

Phase 2 is built from the checkpoints that training actually wrote, so `--dry-run` (before training)
shows it from the config's expected checkpoints instead.
"""

from __future__ import annotations

import json
import math
import platform
import shlex
import subprocess
import sys
from dataclasses import asdict, dataclass, replace
from importlib import metadata
from pathlib import Path
from typing import Any

from srdpo_eval.config import ReproduceConfig, judge_backend_kind, to_dict
from srdpo_eval.manifest import Manifest, Unit, execute, file_sha256, plan, remove_path
from srdpo_eval.run_dir import ModelEntry, RunDir, safe_name, write_models

PACKAGES = ("srdpo-eval", "torch", "transformers", "accelerate", "lm-eval", "openai", "fschat", "pandas",
            "scipy", "matplotlib")
START_ID = "sft"  # model id of the initial policy π_ref (the SFT model: trained here or given)


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


# ------------------------------------------------------------------------------------------ inputs


def resolve_inputs(cfg: ReproduceConfig, rd: RunDir, *, dry_run: bool = False) -> Context:
    """Resolve the default model/data and the judge. Converting the default model is cached."""
    base = cfg.model
    if base == "default":
        from srdpo_eval.default_model import default_model_checkpoint

        base = "<default model: SmolLM2-135M-Instruct>" if dry_run else str(default_model_checkpoint())
    data, delta_pairs = cfg.data, cfg.delta.pairs
    if cfg.data == "default":
        data, held_out = (str(p) for p in write_default_split(rd.root / "data"))
        delta_pairs = delta_pairs or held_out
    model = str(rd.train("sft") / "final") if cfg.sft.enabled else base
    kind = judge_backend_kind(cfg)
    if kind == "openai":
        judge_model = cfg.judge.model
    else:
        local = cfg.judge.local_model or ("smollm2-135m" if cfg.model == "default" else cfg.model)
        judge_model = f"local-{safe_name(Path(local).name)}"
    return Context(cfg, rd, model, base, data, delta_pairs, kind, judge_model)


def write_default_split(folder: Path) -> tuple[Path, Path]:
    """The shipped pairs split into train and held-out (Table 4) JSONL files in the run directory."""
    from srdpo_eval.default_data import load_default_prefs, split_train_eval

    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for name, records in zip(("train", "heldout"), split_train_eval(load_default_prefs())):
        path = folder / f"{name}.jsonl"
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
        if not path.is_file() or path.read_text(encoding="utf-8") != text:  # unchanged file: same hash
            path.write_text(text, encoding="utf-8")
        out.append(path)
    return out[0], out[1]


def _local_judge_path(ctx: Context) -> str:
    return ctx.cfg.judge.local_model or ctx.base_model


def make_judge_backend(ctx: Context):
    """A fresh judge backend (the judge runner closes its connections after each unit)."""
    if ctx.judge_kind == "openai":
        from benchmarks.judge.openai_backend import OpenAIBackend

        return OpenAIBackend(ctx.cfg.judge.model, base_url=ctx.cfg.judge.base_url)
    from benchmarks.judge.local import LocalJudge

    return LocalJudge(_local_judge_path(ctx), name=ctx.judge_model)


# --------------------------------------------------------------------------------------- phase 1


def run_names(cfg: ReproduceConfig) -> list[tuple[str, str, float | None]]:
    """(run name, objective, λ) for every training run: the objectives, then the λ sweep of Sr ones."""
    out = []
    for obj in cfg.train.objectives:
        out.append((obj, obj, cfg.train.lam if obj.startswith("sr-") else None))
    for lam in cfg.train.lam_sweep:
        for obj in cfg.train.objectives:
            if obj.startswith("sr-") and lam != cfg.train.lam:
                out.append((f"{obj}-lam{lam:g}", obj, float(lam)))
    return out


def train_config(ctx: Context, run: str, objective: str, lam: float | None):
    """The trainer's TrainConfig for one run of this reproduce config."""
    from trainer.config import TrainConfig
    from trainer.data import DataConfig

    t, cfg = ctx.cfg.train, ctx.cfg
    data_cfg = DataConfig(max_length=t.max_length, max_prompt_length=t.max_prompt_length,
                          prompt_placement=cfg.prompt_placement,
                          # every objective trains on the same pairs (those whose p ⊕ x fits too) and
                          # shares one reference cache
                          refine=True)
    if cfg.quality_prompt:
        data_cfg = replace(data_cfg, quality_prompt=cfg.quality_prompt)
    if objective == "sft":
        s = cfg.sft
        return TrainConfig(objective="sft", model=ctx.base_model, data=s.data or ctx.data, split=cfg.data_split,
                           output=str(ctx.rd.train(run)), learning_rate=s.learning_rate,
                           batch_size=s.batch_size, max_steps=s.max_steps, optimizer=t.optimizer,
                           warmup_steps=t.warmup_steps, max_grad_norm=t.max_grad_norm, seed=t.seed,
                           dtype=t.dtype, max_pairs=t.max_pairs, gradient_checkpointing=t.gradient_checkpointing,
                           data_cfg=data_cfg, resume=True).validate()
    return TrainConfig(
        objective=objective, model=ctx.model, ref_model=cfg.ref_model or ctx.model, data=ctx.data,
        split=cfg.data_split, output=str(ctx.rd.train(run)), max_pairs=t.max_pairs, beta=t.beta,
        lam=lam if objective.startswith("sr-") else 0.0,  # λ does not enter DPO/IPO (nor their unit key)
        reduce=t.reduce, learning_rate=t.learning_rate,
        optimizer=t.optimizer, scheduler=t.scheduler, warmup_steps=t.warmup_steps, batch_size=t.batch_size,
        micro_batch_size=t.micro_batch_size, max_grad_norm=t.max_grad_norm, epochs=t.epochs,
        max_steps=t.max_steps, save_every=t.save_every or 0, seed=t.seed, dtype=t.dtype,
        gradient_checkpointing=t.gradient_checkpointing, ref_cache_dir=str(ctx.rd.root / "refcache"),
        data_cfg=data_cfg, resume=True,
    ).validate()


def _run_training(ctx: Context, tcfg) -> dict:
    """Train in this process, or through the configured launcher (accelerate) in a child process."""
    launcher = ctx.cfg.train.launcher
    if not launcher:
        from trainer.train import train

        final = train(tcfg)
    else:
        from trainer.config import dump_yaml

        out = Path(tcfg.output)
        out.mkdir(parents=True, exist_ok=True)
        cfg_file = out.parent / f"{out.name}.launch.yaml"
        dump_yaml(tcfg, cfg_file)
        cmd = [*shlex.split(launcher), "-m", "srdpo_eval", "train", "--config", str(cfg_file), "--resume"]
        print("$ " + shlex.join(cmd), flush=True)
        subprocess.run(cmd, check=True)
        final = out / "final"
    weights = sorted(Path(final).glob("*.safetensors"))
    return {"final": str(final), "sha256": {w.name: file_sha256(w) for w in weights}}


def _reference_unit(ctx: Context, runs: list[tuple[str, str, float | None]]) -> Unit:
    """Reference log-probs on x and p ⊕ x, once, before any objective trains (shared cache)."""
    name, objective, lam = next(r for r in runs if r[1] != "sft")
    tcfg = train_config(ctx, name, objective, lam)

    def run():
        from trainer.data import load_preference_data, tokenize_pairs
        from trainer.modeling import load_tokenizer
        from trainer.refcache import reference_logps

        records = load_preference_data(tcfg.data, split=tcfg.split)
        if tcfg.max_pairs:
            records = records[: tcfg.max_pairs]
        pairs, report = tokenize_pairs(records, load_tokenizer(tcfg.ref_model), tcfg.data_cfg, source=tcfg.data)
        _, path = reference_logps(tcfg.ref_model, pairs, tcfg.data_cfg, reduce=tcfg.reduce,
                                  cache_dir=tcfg.ref_cache_dir, batch_size=tcfg.ref_batch_size, dtype=tcfg.dtype)
        return {"cache": str(path), "pairs": len(pairs)}

    return Unit("reference", "reference",
                {"ref_model": tcfg.ref_model, "data": _data_key(tcfg.data), "data_cfg": asdict(tcfg.data_cfg),
                 "reduce": tcfg.reduce, "max_pairs": tcfg.max_pairs, "dtype": tcfg.dtype},
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
    units.append(_reference_unit(ctx, runs))
    steps = expected_steps(ctx)  # reads the data once, for the descriptions
    for run, objective, lam in runs:
        tcfg = train_config(ctx, run, objective, lam)
        lam_txt = f", λ={tcfg.lam:g}" if objective.startswith("sr-") else ""
        units.append(Unit(f"train/{run}", "train", _train_key(tcfg), lambda t=tcfg: _run_training(ctx, t),
                          deps=["reference"], clear=lambda r=run: remove_path(ctx.rd.train(r)),
                          describe=f"{objective} (β={tcfg.beta:g}{lam_txt}), {steps} steps"))
    return units


# --------------------------------------------------------------------------------------- phase 2


def expected_steps(ctx: Context) -> int | str:
    t = ctx.cfg.train
    if t.max_steps:
        return t.max_steps
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
    for run, objective, lam in run_names(ctx.cfg):
        out = ctx.rd.train(run)
        ckpts = sorted(out.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]))
        for ck in [*ckpts, out / "final"]:
            info_file = ck / "srdpo_info.json"
            if not info_file.is_file():
                continue
            info = json.loads(info_file.read_text())
            final = ck.name == "final"
            model_id = run if final else f"{run}-p{info['pairs_seen']}"
            entries.append(ModelEntry(model_id, str(ck), objective, beta=info.get("beta"), lam=info.get("lam"),
                                      step=info.get("step"), pairs_seen=info.get("pairs_seen"), run=run))
    return entries


def expected_models(ctx: Context) -> list[ModelEntry]:
    """What trained_models will find, from the config alone (for --dry-run before training)."""
    entries = [ModelEntry(START_ID, ctx.model, "sft", step=0, pairs_seen=0)]
    steps = expected_steps(ctx)
    every = ctx.cfg.train.save_every
    for run, objective, lam in run_names(ctx.cfg):
        if every and isinstance(steps, int):
            for s in range(every, steps, every):
                entries.append(ModelEntry(f"{run}-p{s * ctx.cfg.train.batch_size}", "", objective, lam=lam,
                                          step=s, pairs_seen=s * ctx.cfg.train.batch_size, run=run))
        entries.append(ModelEntry(run, "", objective, lam=lam, run=run))
    return entries


def _bench_models(ctx: Context, models: list[ModelEntry]) -> list[ModelEntry]:
    if ctx.cfg.bench.checkpoints == "all":
        return models
    return [m for m in models if m.model_id == START_ID or m.model_id == m.run]


def judge_pairs(ctx: Context, models: list[ModelEntry]) -> list[tuple[str, str]]:
    """Head-to-head pairs: the config's (final models), the same pairs at every shared number of
    training pairs (win rate over training), Sr-X at each λ vs X (Figure 2a), everything vs baseline."""
    ids = {m.model_id for m in models}
    by_run_pairs = {(m.run, m.pairs_seen): m.model_id for m in models if m.run}
    out: list[tuple[str, str]] = []
    for a, b in ctx.cfg.judge.pairs:
        if a in ids and b in ids:
            out.append((a, b))
        if ctx.cfg.bench.checkpoints == "all":
            for (run, seen), mid in sorted(by_run_pairs.items(), key=lambda kv: (kv[0][0], kv[0][1] or 0)):
                other = by_run_pairs.get((b, seen))
                if run == a and other and mid != a:
                    out.append((mid, other))
    for run, objective, lam in run_names(ctx.cfg):
        base = objective.removeprefix("sr-")
        if run != objective and run in ids and base in ids:
            out.append((run, base))
    baseline = ctx.cfg.judge.baseline
    if baseline and baseline in ids:
        out += [(m.model_id, baseline) for m in models if m.model_id != baseline]
    return list(dict.fromkeys(p for p in out if p[0] != p[1]))


def _filter_judgments(path: Path, models: set[str]) -> None:
    """Drop the judgment lines that involve ``models`` (their answers changed)."""
    if not path.is_file():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        involved = {rec.get("model"), rec.get("model_1"), rec.get("model_2")}
        if not involved & models:
            keep.append(line)
    path.write_text("".join(k + "\n" for k in keep))


def phase2_units(ctx: Context, models: list[ModelEntry]) -> list[Unit]:
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
        if cfg.judge.single and bench == "mt_bench":
            ids = [m.model_id for m in bench_models]
            units.append(Unit(f"judge/{bench}/single", "judge",
                              {"judge": ctx.judge_model, "kind": ctx.judge_kind, "models": ids},
                              lambda b=bench, ids=ids: _judge(ctx, b, "single", models=ids),
                              deps=answer_units(ids),
                              clear=lambda b=bench, ids=ids: _filter_judgments(
                                  rd.judgments(b, ctx.judge_model, "single"), set(ids)),
                              describe=f"single grading of {len(ids)} models"))
        for a, b in pairs:
            units.append(Unit(f"judge/{bench}/pair/{a}__{b}", "judge",
                              {"judge": ctx.judge_model, "kind": ctx.judge_kind, "pair": [a, b]},
                              lambda be=bench, a=a, b=b: _judge(ctx, be, "pairwise", pairs=[(a, b)]),
                              deps=answer_units([a, b]),
                              clear=lambda be=bench, a=a, b=b: _filter_judgments(
                                  rd.judgments(be, ctx.judge_model, "pairwise"), {a, b}),
                              describe=f"{a} vs {b}, both orders"))
    if cfg.leaderboard.enabled:
        lb_models = models if cfg.leaderboard.checkpoints == "all" else _bench_models(ctx, models)
        units.append(_leaderboard_unit(ctx, lb_models, sorted({d for m in lb_models for d in deps_of(m.model_id)})))
    if cfg.delta.enabled and ctx.delta_pairs:
        for m in models:
            if m.model_id == m.run:  # final checkpoints of each run
                units.append(_delta_unit(ctx, m, deps_of(m.model_id)))
    units.append(Unit("figures", "figures", asdict(cfg.analysis), lambda: _figures(ctx), deps=[u.name for u in units],
                      always=True, describe="tables, figures and report.md"))
    return units


def _answers_unit(ctx: Context, bench: str, m: ModelEntry, deps: list[str]) -> Unit:
    b = ctx.cfg.bench

    def run():
        from benchmarks.answers import GenerationConfig, generate_answers
        from benchmarks.fastchat_data import load_questions, resolve_data_dir

        questions = load_questions(resolve_data_dir(b.data_dir, bench), bench)
        if b.limit:
            questions = questions[: b.limit]
        gcfg = GenerationConfig(max_new_tokens=b.max_new_tokens, batch_size=b.batch_size, seed=ctx.cfg.train.seed)
        path = generate_answers(m.path, questions, ctx.rd.answers(bench, m.model_id), model_id=m.model_id, cfg=gcfg)
        return {"answers": str(path), "questions": len(questions)}

    return Unit(f"answers/{bench}/{m.model_id}", "answers",
                {"bench": bench, "limit": b.limit, "max_new_tokens": b.max_new_tokens, "model": m.model_id,
                 "path": m.path if m.model_id == START_ID else None, "seed": ctx.cfg.train.seed},
                run, deps=deps, clear=lambda: remove_path(ctx.rd.answers(bench, m.model_id)),
                describe=f"{b.limit or 'all'} questions")


def _judge(ctx: Context, bench: str, mode: str, *, models=None, pairs=None) -> dict:
    from benchmarks.judge import run as judge_run

    kw = dict(data_dir=_bench_data_dir(ctx, bench), concurrency=ctx.cfg.judge.concurrency, cache=True,
              limit=ctx.cfg.bench.limit)
    if mode == "single":
        s = judge_run.judge_single(ctx.rd.root, bench, make_judge_backend(ctx), models=models, **kw)
    else:
        s = judge_run.judge_pairwise(ctx.rd.root, bench, make_judge_backend(ctx), pairs=pairs, **kw)
    return {"matches": s.total, "already_done": s.already_done}


def _bench_data_dir(ctx: Context, bench: str) -> str:
    from benchmarks.fastchat_data import resolve_data_dir

    return str(resolve_data_dir(ctx.cfg.bench.data_dir, bench))


def _leaderboard_unit(ctx: Context, models: list[ModelEntry], deps: list[str]) -> Unit:
    """One unit for all models: lm-eval's task index is built once, results are reused per
    (checkpoint, task) inside; unreachable data (offline) is a skip note, retried next run."""
    lb = ctx.cfg.leaderboard

    def run():
        from benchmarks.leaderboard import LeaderboardConfig, LeaderboardError, evaluate_checkpoints

        lcfg = LeaderboardConfig(tasks=tuple(lb.tasks), limit=lb.limit, batch_size=lb.batch_size)
        try:
            scores = evaluate_checkpoints([(m.model_id, m.path) for m in models], lcfg, ctx.rd.root)
        except LeaderboardError as e:
            print(f"leaderboard skipped: {e}", flush=True)
            return {"skipped": str(e)}
        return {"scores": scores}

    return Unit("leaderboard", "leaderboard",
                {"tasks": lb.tasks, "limit": lb.limit, "models": [m.model_id for m in models]}, run, deps=deps,
                clear=lambda: [remove_path(ctx.rd.leaderboard / safe_name(m.model_id)) for m in models],
                describe=f"{len(models)} models x {len(lb.tasks)} tasks" + (f", limit {lb.limit}" if lb.limit else ""))


def _delta_unit(ctx: Context, m: ModelEntry, deps: list[str]) -> Unit:
    d = ctx.cfg.delta

    def run():
        from analysis.delta import compute_delta

        out = ctx.rd.delta / f"{safe_name(m.model_id)}.csv"
        compute_delta(m.path, ctx.delta_pairs, out, ref_model=ctx.cfg.ref_model or ctx.model,
                      beta=ctx.cfg.train.beta, model_id=m.model_id, batch_size=d.batch_size,
                      max_pairs=d.max_pairs, rating_fields=tuple(d.rating_fields),
                      max_length=ctx.cfg.train.max_length, max_prompt_length=ctx.cfg.train.max_prompt_length)
        return {"table": str(out)}

    return Unit(f"delta/{m.model_id}", "delta",
                {"pairs": _data_key(ctx.delta_pairs) if ctx.delta_pairs else None, "max_pairs": d.max_pairs,
                 "rating_fields": d.rating_fields, "model": m.model_id},
                run, deps=deps, clear=lambda: remove_path(ctx.rd.delta / f"{safe_name(m.model_id)}.csv"),
                describe="Δπ and m(x) on the rated pairs (Table 4)")


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


def print_plan(ctx: Context, manifest: Manifest, units1: list[Unit], units2: list[Unit]) -> None:
    rows = plan(units1 + units2, manifest)
    width = max(len(u.name) for u, _ in rows)
    print(f"plan for {ctx.rd.root} (config {ctx.cfg.name!r}):")
    for u, action in rows:
        print(f"  {action:6s} {u.name:{width}s}  {u.describe}")
    steps = expected_steps(ctx)
    n_runs = len(run_names(ctx.cfg))
    print(f"training: {n_runs} runs x {steps} steps of {ctx.cfg.train.batch_size} pairs")
    print(judge_estimate(ctx, units1 + units2, manifest))


def judge_estimate(ctx: Context, units: list[Unit], manifest: Manifest) -> str:
    """Judge calls still to make: exact where the answers exist (the judge's own dry run: judgments
    already written, cache hits, tokens, cost), else counted from the questions with a rough cost."""
    from benchmarks.fastchat_data import load_questions
    from benchmarks.judge.estimate import price_for

    calls = cached = counted = 0
    notes = []
    todo = [u for u, a in plan(units, manifest) if u.stage == "judge" and a != "skip"]
    for u in todo:
        bench = u.name.split("/")[1]
        models = u.key.get("pair") or u.key["models"]
        mode = "pairwise" if u.key.get("pair") else "single"
        if all(ctx.rd.answers(bench, m).is_file() for m in models):
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
            n_q = len(load_questions(_bench_data_dir(ctx, bench), bench))
        except Exception as e:  # noqa: BLE001 — the plan still prints; the run itself fails loudly
            notes.append(f"{bench}: data not available ({e})")
            continue
        n_q = min(n_q, ctx.cfg.bench.limit or n_q)
        turns = 2 if bench == "mt_bench" else 1
        n = n_q * turns * (2 if mode == "pairwise" else len(models))
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
    from benchmarks.judge import run as judge_run

    fn = judge_run.judge_single if mode == "single" else judge_run.judge_pairwise

    class _NoCalls:  # the dry run never calls the backend; it only needs the model name
        model = ctx.judge_model

    return fn(ctx.rd.root, bench, _NoCalls(), data_dir=_bench_data_dir(ctx, bench), cache=True, dry_run=True,
              progress=False, limit=ctx.cfg.bench.limit, **kw)


def reproduce(cfg: ReproduceConfig, output: str | Path, *, stages: list[str] | None = None,
              dry_run: bool = False) -> dict[str, str]:
    """Run (or with ``dry_run`` only plan) the whole pipeline in ``output``; return {unit: action}."""
    rd = RunDir(Path(output))
    rd.root.mkdir(parents=True, exist_ok=True)
    manifest = Manifest.load(rd.manifest)
    ctx = resolve_inputs(cfg, rd, dry_run=dry_run)
    selected = lambda units: {u.name for u in units if not stages or u.stage in stages}  # noqa: E731
    units1 = phase1_units(ctx)
    if dry_run:
        have = trained_models(ctx)
        models = have if len(have) > 1 else expected_models(ctx)
        print_plan(ctx, manifest, units1, phase2_units(ctx, models))
        return {}
    write_manifest_header(manifest, ctx)
    taken = execute(units1, manifest, only=selected(units1))
    # phase 2 depends on phase 1's keys, so both are hashed together; only phase 2 runs now
    units2 = phase2_units(ctx, trained_models(ctx))
    second = execute(units1 + units2, manifest, only=selected(units2))
    taken.update({name: action for name, action in second.items() if name not in taken})
    print(f"done: {rd.root}  (report: {rd.report})")
    return taken
