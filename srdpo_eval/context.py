"""What a `reproduce` run works with: its config, run directory and resolved inputs (the model, data and
judge), and each stage's own config for it (the sections' options, plus what the pipeline decides).

Inputs are identified as results depend on them (``Context.identity``): models and files from outside the
run directory by their content (contracts.hashing.fingerprint), so a run moved to another machine or path
keeps its keys; what a unit of the run makes is identified by that unit (its key is folded into its
dependants' keys by the manifest).
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import NamedTuple

from contracts import ids, objectives
from contracts.errors import UserError
from contracts.files import write_text
from contracts.judges import get_judge_backend
from contracts.run_dir import ModelEntry, RunDir
from contracts.settings import values
from srdpo_eval.config import ReproduceConfig, judge_backend_kind


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
    identity: dict[str, str | None] = field(default_factory=dict)  # input -> what results depend on


def resolve_inputs(cfg: ReproduceConfig, rd: RunDir, *, dry_run: bool = False) -> Context:
    """Resolve the default model/data and the judge. Converting the default model is cached; a dry run
    converts, downloads and writes nothing."""
    base = cfg.model
    if base == "default":
        from trainer.default_model import default_model_checkpoint

        base = str(default_model_checkpoint(convert=not dry_run))
    elif not dry_run:  # a hub name is downloaded once: every stage then reads a local directory
        from trainer.modeling import local_checkpoint

        base = str(local_checkpoint(base))
    data, delta_pairs = cfg.data, cfg.delta.pairs
    if cfg.data == "default":
        data, held_out = (str(p) for p in default_split(rd.data, write=not dry_run))
        delta_pairs = delta_pairs or held_out
    model = str(rd.train("sft") / ids.FINAL_DIR) if cfg.sft.enabled else base
    kind = judge_backend_kind(cfg)
    ref = cfg.ref_model or model
    if cfg.ref_model and not dry_run:
        from trainer.modeling import local_checkpoint

        ref = str(local_checkpoint(cfg.ref_model))
    ctx = Context(cfg, rd, model, base, data, delta_pairs, kind, "", ref)
    ctx.judge_model = judge_name(ctx)
    ctx.identity = identities(ctx)
    return ctx


def identities(ctx: Context) -> dict[str, str | None]:
    """The run's inputs as results depend on them: the SFT model as its unit, the rest by content."""
    from contracts.hashing import fingerprint

    cache = ctx.rd.hash_cache if ctx.rd.root.is_dir() else None
    base = fingerprint(ctx.base_model, cache)
    model = "unit train/sft" if ctx.cfg.sft.enabled else base
    ref = model if ctx.ref_model == ctx.model else fingerprint(ctx.ref_model, cache)
    return {"base_model": base, "model": model, "ref_model": ref, "data": fingerprint(ctx.data),
            "delta_pairs": fingerprint(ctx.delta_pairs), "sft_data": fingerprint(ctx.cfg.sft.data)}


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


def default_split(folder: Path, *, write: bool = True) -> tuple[Path, Path]:
    """The shipped pairs split into train and held-out (Table 4) JSONL files in the run directory (their
    paths only, with ``write`` False)."""
    from srdpo_eval.default_data import load_default_prefs, split_train_eval

    paths = folder / "train.jsonl", folder / "heldout.jsonl"
    if write:
        for path, records in zip(paths, split_train_eval(load_default_prefs())):
            text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
            if not path.is_file() or path.read_text(encoding="utf-8") != text:  # unchanged file: same hash
                write_text(path, text)
    return paths


# -------------------------------------------------------------------------- each stage's config


def stage_config(cls, section, **decided):
    """``cls`` (a stage's config) from a reproduce section's options, plus what the pipeline ``decided``."""
    return cls(**{**values(section, {f.name for f in fields(cls)} - set(decided)), **decided})


class Run(NamedTuple):
    """One training run of a reproduce config."""

    name: str  # train/<name>: contracts.ids.run_name
    objective: str
    lam: float | None
    seed: int = 0


def run_names(cfg: ReproduceConfig) -> list[Run]:
    """Every training run: per seed, the objectives, then the λ sweep of the Sr ones."""
    t, out = cfg.train, []
    for seed in cfg.seeds:
        out += [Run(ids.run_name(o, seed=seed), o, t.lam if objectives.needs_refine(o) else None, seed)
                for o in t.objectives]
        for lam in t.lam_sweep:
            out += [Run(ids.run_name(o, lam, t.lam, seed), o, float(lam), seed) for o in t.objectives
                    if objectives.needs_refine(o) and lam != t.lam]
    return out


def train_config(ctx: Context, run: str, objective: str, lam: float | None, seed: int | None = None):
    """The trainer's TrainConfig for one run: the train: section's options (the sft: section's on top for
    SFT), plus what the pipeline decides per run (the SFT stage, run once, takes the first seed)."""
    from trainer.config import TrainConfig

    cfg = ctx.cfg
    names = {f.name for f in fields(TrainConfig)}
    opts = values(cfg.train, names)
    if objectives.get(objective).kind == objectives.NLL:
        opts.update({k: v for k, v in values(cfg.sft, names).items() if v is not None})
        opts.update(data=cfg.sft.data or ctx.data, model=ctx.base_model)
    else:  # (settings an objective's loss does not read stay out of its key: trainer.config.result_settings)
        opts.update(data=ctx.data, model=ctx.model, ref_model=ctx.ref_model, **({"lam": lam} if lam is not None else {}))
    opts["seed"] = seed if seed is not None else opts.get("seed", cfg.seeds[0])  # SFT: sft.seed, else the first
    tcfg = TrainConfig(**opts, objective=objective, split=cfg.data_split, output=str(ctx.rd.train(run)),
                       ref_cache_dir=str(ctx.rd.refcache), resume=True)
    tcfg.check()
    return tcfg


def train_inputs(ctx: Context, objective: str) -> dict:
    """A training run's inputs as its key names them (trainer.config.result_key)."""
    if objectives.get(objective).kind == objectives.NLL:
        return {"model": ctx.identity["base_model"], "ref_model": ctx.identity["base_model"],
                "data": ctx.identity["sft_data"] or ctx.identity["data"]}
    return {k: ctx.identity[k] for k in ("model", "ref_model", "data")}


def model_identity(ctx: Context, m) -> dict:
    """A model as a unit's key names it: its id, and the starting model (made outside the run's training
    units, whose keys otherwise stand for the models they made) by what it is."""
    return {"model": m.model_id, **({"checkpoint": ctx.identity["model"]} if m.model_id == ids.START_ID else {})}


def judge_config(ctx: Context):
    """The judge stage's config for this run (the judge: section, with the backend decided)."""
    from benchmarks.judge.config import JudgeConfig

    j = ctx.cfg.judge
    model = (j.local_model or ctx.base_model) if get_judge_backend(ctx.judge_kind).local else j.model
    return stage_config(JudgeConfig, j, backend=ctx.judge_kind, model=model)


def judge_name(ctx: Context) -> str:
    from benchmarks.judge.config import judge_name as name

    return name(judge_config(ctx))


def generation_config(ctx: Context, model: ModelEntry | None = None):
    """The answers' config; a model trained with seed k samples with bench.seed + k (its seed sets its
    answers' sampling too, and seed 0 keeps bench.seed)."""
    from benchmarks.answers import GenerationConfig

    seed = ctx.cfg.bench.seed + ((model.seed or 0) if model is not None else 0)
    return stage_config(GenerationConfig, ctx.cfg.bench, seed=seed)


def leaderboard_config(ctx: Context):
    from benchmarks.leaderboard import LeaderboardConfig

    return stage_config(LeaderboardConfig, ctx.cfg.leaderboard)


def delta_config(ctx: Context):
    from benchmarks.delta import DeltaConfig

    return stage_config(DeltaConfig, ctx.cfg.delta)


def selection(ctx: Context) -> dict:
    """Which questions of a bench the run answers and judges (benchmarks.fastchat_data.select_questions)."""
    return {"limit": ctx.cfg.bench.limit, "per_category": ctx.cfg.bench.per_category}


def bench_data_dir(ctx: Context, bench: str) -> str:
    from benchmarks.fastchat_data import resolve_data_dir

    return str(resolve_data_dir(ctx.cfg.bench.data_dir, bench))


def questions(ctx: Context, bench: str) -> list:
    from benchmarks.fastchat_data import load_selected_questions

    return load_selected_questions(bench_data_dir(ctx, bench), bench, **selection(ctx))


def launch_command(ctx: Context, tcfg, *, reference_only: bool = False) -> list[str] | None:
    """The command that runs ``srdpo-eval train`` for ``tcfg`` through ``train.launcher`` (a torchrun
    prefix), with the run's settings in ``<run>.launch.yaml`` beside its folder; None: in this process."""
    if not ctx.cfg.train.launcher:
        return None
    cfg_file = Path(tcfg.output).parent / f"{Path(tcfg.output).name}.launch.yaml"
    extra = ["--reference-only"] if reference_only else ["--resume", *(["--fsdp"] if tcfg.fsdp else [])]
    return [*shlex.split(ctx.cfg.train.launcher), "-m", "srdpo_eval", "train", "--config", str(cfg_file), *extra]


def launch_commands(ctx: Context) -> dict[str, list[str]]:
    """Unit name → the command ``train.launcher`` runs for it (empty when training runs in this process)."""
    if not ctx.cfg.train.launcher:
        return {}
    runs = [Run("sft", objectives.sft(), None, ctx.cfg.seeds[0])] if ctx.cfg.sft.enabled else []
    out = {f"train/{r[0]}": launch_command(ctx, train_config(ctx, *r)) for r in runs + run_names(ctx.cfg)}
    pref = [r for r in run_names(ctx.cfg) if objectives.get(r[1]).reference]
    if pref:
        out["reference"] = launch_command(ctx, train_config(ctx, *pref[0]), reference_only=True)
    return out
