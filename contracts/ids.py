"""Model, checkpoint and judge ids: how a model is named in answer files, judgments, tables and figures.

    <run>                 a training run's final model (train/<run>/final)
    <run>-p<pairs_seen>   a checkpoint of that run after ``pairs_seen`` training pairs
    sft                   the starting policy π_ref (the SFT model, trained here or given)
    local-<model id>      a local judge (an openai-compatible judge is named by its model, e.g. gpt-4)

Run names are ``<objective>[-lam<λ>][-s<seed>]``: the objective, with the λ of an extra run of a λ sweep
and the training seed when it is not 0 (seed 0 keeps the plain name, so a one-seed run reads as before
and adding seeds to a finished run retrains nothing of seed 0).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from contracts.objectives import OBJECTIVES

START_ID = "sft"
CHECKPOINT_INFO = "srdpo_info.json"  # written by the trainer into every checkpoint it saves
FINAL_DIR = "final"
CHECKPOINT_PREFIX = "checkpoint-"


def safe_name(name: str) -> str:
    """A model or judge name usable as a file name (FastChat puts names in file names)."""
    return re.sub(r"[^A-Za-z0-9._@+-]+", "_", name).strip("_") or "model"


def run_name(objective: str, lam: float | None = None, main_lam: float | None = None, seed: int = 0) -> str:
    """The run of ``objective``: its name, ``-lam<λ>`` for a λ other than the main one, ``-s<seed>`` for a
    seed other than 0."""
    name = objective if lam is None or main_lam is None or lam == main_lam else f"{objective}-lam{lam:g}"
    return name if not seed else f"{name}-s{seed}"


def final_id(run: str) -> str:
    return run


def checkpoint_id(run: str, pairs_seen: int) -> str:
    return f"{run}-p{pairs_seen}"


def read_checkpoint_info(path: str | Path) -> dict:
    """The trainer's srdpo_info.json of a checkpoint directory ({} when it has none)."""
    f = Path(path) / CHECKPOINT_INFO
    if not f.is_file():
        return {}
    try:
        return json.loads(f.read_text())
    except json.JSONDecodeError as e:
        from contracts.errors import UserError

        raise UserError(f"{f}:{e.lineno}: not valid JSON ({e.msg}); the checkpoint is damaged") from None


def model_id_for_checkpoint(path: str | Path) -> str:
    """The id of a checkpoint directory, the same whichever command meets it first.

    ``train/<run>/final`` → ``<run>``; ``train/<run>/checkpoint-<step>`` → ``<run>-p<pairs seen>`` (from its
    srdpo_info.json); any other directory → its name.
    """
    p = Path(path).resolve()
    if p.name == FINAL_DIR:
        return final_id(p.parent.name)
    if p.name.startswith(CHECKPOINT_PREFIX):
        seen = read_checkpoint_info(p).get("pairs_seen")
        if isinstance(seen, int):
            return checkpoint_id(p.parent.name, seen)
        return f"{p.parent.name}-{p.name}"
    return p.name


PRECISION_SUFFIX = {"bfloat16": "bf16", "float16": "fp16"}  # a local judge run in another dtype than float32


def judge_id(backend: str, model: str | Path, precision: str | None = None) -> str:
    """The judge's name in judgment files: the API model name, or ``local-<model id>`` for a local judge,
    with ``-bf16`` / ``-fp16`` when it runs in that ``precision`` (its probabilities differ from float32's,
    so a GPU's and a CPU's judgments never share a file or a table)."""
    from contracts.judges import get_judge_backend

    if get_judge_backend(backend).local:
        suffix = PRECISION_SUFFIX.get(precision or "float32", "")
        return f"local-{safe_name(model_id_for_checkpoint(model))}" + (f"-{suffix}" if suffix else "")
    return short_name(str(model))


MODEL_FILE_SUFFIXES = (".gguf", ".bin", ".safetensors", ".pt", ".pth")


def short_name(name: str, limit: int = 64) -> str:
    """A served model's id as a judge name: unchanged when short, else (a file path, as llama.cpp reports
    without --model_alias, or any id over ``limit`` characters) its last part without a model-file suffix,
    file-safe, with 8 hex digits of the whole id so that two such ids stay apart."""
    if not (name.startswith(("/", "~", ".")) or "\\" in name or len(name) > limit):
        return name
    import hashlib

    stem = re.split(r"[\\/]", name.rstrip("/\\"))[-1]
    for suffix in MODEL_FILE_SUFFIXES:
        stem = stem[: -len(suffix)] if stem.lower().endswith(suffix) else stem
    return f"{safe_name(stem)[: limit - 9]}-{hashlib.sha1(name.encode()).hexdigest()[:8]}"


@dataclass(frozen=True)
class ParsedId:
    objective: str
    lam: float | None
    pairs_seen: int | None
    seed: int = 0


def parse_model_id(model_id: str) -> ParsedId | None:
    """Objective, λ, seed and pairs seen read back from an id ('sr-dpo', 'dpo-p1024', 'sr-ipo-lam0.3-s2-p256').

    Only for results whose models.json is missing; None when the id names no known objective.
    """
    name = model_id.lower()
    objective = next((o for o in sorted(OBJECTIVES, key=len, reverse=True)
                      if name == o or name.startswith(o + "-")), None)
    if objective is None:
        return None
    pairs = re.search(r"-p(\d+)$", name)
    lam = re.search(r"-lam(\d+(?:\.\d+)?)(?:$|-)", name)
    seed = re.search(r"-s(\d+)(?:$|-p\d+$)", name)
    return ParsedId(objective, float(lam.group(1)) if lam else None, int(pairs.group(1)) if pairs else None,
                    int(seed.group(1)) if seed else 0)
