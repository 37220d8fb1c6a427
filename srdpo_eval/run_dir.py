"""The run directory: where every stage reads and writes. One place for the layout.

    RUN_DIR/
      manifest.json                         resolved config, versions, hashes, stage states (reproduce)
      models.json                           one entry per evaluated checkpoint (ModelEntry)
      train/<run>/                          trainer output: config.yaml, log.jsonl, run_info.json,
                                            checkpoint-<step>/ (HF + srdpo_info.json), final/
      <bench>/model_answer/<model_id>.jsonl          FastChat answer files (bench: mt_bench, vicuna_bench)
      <bench>/model_judgment/<judge>_single.jsonl    FastChat single-grading judgments
      <bench>/model_judgment/<judge>_pair.jsonl      FastChat pairwise judgments
      leaderboard/<model_id>/<task>.json, leaderboard/scores.csv
      delta/<model_id>.csv                  Δπ, margins and ratings per preference pair
      figures/  tables/  report.md          analysis output
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, fields
from pathlib import Path

BENCHES = ("mt_bench", "vicuna_bench")


def safe_name(name: str) -> str:
    """A model or judge name usable as a file name (FastChat uses names in file names)."""
    return re.sub(r"[^A-Za-z0-9._@+-]+", "_", name).strip("_") or "model"


@dataclass(frozen=True)
class RunDir:
    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @property
    def manifest(self) -> Path:
        return self.root / "manifest.json"

    @property
    def models(self) -> Path:
        return self.root / "models.json"

    def train(self, run: str) -> Path:
        return self.root / "train" / run

    def bench(self, bench: str) -> Path:
        if bench not in BENCHES:
            raise ValueError(f"unknown benchmark {bench!r}: expected one of {', '.join(BENCHES)}")
        return self.root / bench

    def answers(self, bench: str, model_id: str) -> Path:
        return self.bench(bench) / "model_answer" / f"{safe_name(model_id)}.jsonl"

    def judgments(self, bench: str, judge: str, mode: str) -> Path:
        kind = {"single": "single", "pairwise": "pair", "pair": "pair"}[mode]
        return self.bench(bench) / "model_judgment" / f"{safe_name(judge)}_{kind}.jsonl"

    @property
    def leaderboard(self) -> Path:
        return self.root / "leaderboard"

    @property
    def delta(self) -> Path:
        return self.root / "delta"

    @property
    def figures(self) -> Path:
        return self.root / "figures"

    @property
    def tables(self) -> Path:
        return self.root / "tables"

    @property
    def report(self) -> Path:
        return self.root / "report.md"


@dataclass(frozen=True)
class ModelEntry:
    """One checkpoint that the benchmarks and the analysis know by ``model_id``."""

    model_id: str  # e.g. "sr-dpo" (final) or "sr-dpo-p128" (after 128 training pairs); "sft" for the start
    path: str  # Hugging Face checkpoint directory
    objective: str  # sft | dpo | ipo | sr-dpo | sr-ipo | base
    beta: float | None = None
    lam: float | None = None
    step: int | None = None
    pairs_seen: int | None = None
    run: str | None = None  # the train/<run> it comes from


def read_models(path: Path) -> list[ModelEntry]:
    """Read models.json; a bad entry fails naming the file, the entry and the field."""
    data = json.loads(Path(path).read_text())
    names = {f.name for f in fields(ModelEntry)}
    out = []
    for i, item in enumerate(data):
        missing = [k for k in ("model_id", "path", "objective") if k not in item]
        if missing:
            raise ValueError(f"{path}: entry {i}: missing field {missing[0]!r}")
        unknown = set(item) - names
        if unknown:
            raise ValueError(f"{path}: entry {i}: unknown field {sorted(unknown)[0]!r}")
        out.append(ModelEntry(**item))
    return out


def write_models(path: Path, entries: list[ModelEntry]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps([asdict(e) for e in entries], indent=2) + "\n")
    tmp.replace(path)
