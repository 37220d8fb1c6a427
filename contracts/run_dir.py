"""The run directory: where every stage reads and writes. One place for the layout and the file names.

    RUN_DIR/
      manifest.json                         resolved config, versions, hashes, unit states (reproduce)
      manifest.shard-<i>-of-<n>.json        the states of a shard's units until a plain reproduce merges them
      logs/<unit>.log                       the output of a unit run in a worker process (reproduce --workers)
      models.json                           one entry per evaluated checkpoint (ModelEntry)
      data/                                 the default data split (reproduce)
      refcache/                             reference log-probs on x and p ⊕ x, shared by every run
      train/<run>/                          trainer output: config.yaml, log.jsonl, run_info.json,
                                            checkpoint-<step>/ (HF + srdpo_info.json), final/
      <bench>/model_answer/<model_id>.jsonl          FastChat answer files (bench: mt_bench, vicuna_bench)
      <bench>/model_judgment/<judge>_single.jsonl    FastChat single-grading judgments
      <bench>/model_judgment/<judge>_pair.jsonl      FastChat pairwise judgments
      judge_cache.sqlite                    raw judge replies keyed by request
      leaderboard/<model_id>/<task>.json, leaderboard/scores.csv
      delta/<model_id>.csv                  Δπ, margins and ratings per preference pair
      tables/judge/*.csv                    the judge command's result tables
      tables/*.csv  figures/  report.md     analysis output (`srdpo-eval figures`)

Each stage deletes only files it wrote: the analysis records its outputs in ``tables/.made.json``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from contracts.benches import get_bench
from contracts.errors import UserError
from contracts import ids
from contracts.ids import safe_name

# train/<run>/ files
TRAIN_CONFIG = "config.yaml"
TRAIN_LOG = "log.jsonl"
RUN_INFO = "run_info.json"
SCORES_CSV = "scores.csv"


@dataclass(frozen=True)
class RunDir:
    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @property
    def manifest(self) -> Path:
        return self.root / "manifest.json"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    def unit_log(self, unit: str) -> Path:
        """The output of a unit that ran in a worker process (``answers/mt_bench/dpo`` → answers.mt_bench.dpo.log)."""
        return self.logs / f"{safe_name(unit.replace('/', '.'))}.log"

    @property
    def models(self) -> Path:
        return self.root / "models.json"

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def refcache(self) -> Path:
        return self.root / "refcache"

    def train(self, run: str) -> Path:
        return self.root / "train" / run

    def bench(self, bench: str) -> Path:
        return self.root / get_bench(bench).name

    def answers(self, bench: str, model_id: str) -> Path:
        return self.bench(bench) / "model_answer" / f"{safe_name(model_id)}.jsonl"

    def judgments(self, bench: str, judge: str, mode: str) -> Path:
        kind = {"single": "single", "pairwise": "pair", "pair": "pair"}[mode]
        return self.bench(bench) / "model_judgment" / f"{safe_name(judge)}_{kind}.jsonl"

    @property
    def hash_cache(self) -> Path:
        """Checkpoint file hashes by (path, size, mtime) (contracts.hashing), shared by every stage."""
        return self.root / ".checkpoint_hashes.json"

    @property
    def judge_cache(self) -> Path:
        return self.root / "judge_cache.sqlite"

    @property
    def leaderboard(self) -> Path:
        return self.root / "leaderboard"

    def leaderboard_model(self, model_id: str) -> Path:
        return self.leaderboard / safe_name(model_id)

    def leaderboard_result(self, model_id: str, task: str) -> Path:
        return self.leaderboard_model(model_id) / f"{task}.json"

    @property
    def scores(self) -> Path:
        return self.leaderboard / SCORES_CSV

    @property
    def leaderboard_unavailable(self) -> Path:
        return self.leaderboard / "unavailable.json"

    @property
    def delta(self) -> Path:
        return self.root / "delta"

    def delta_table(self, model_id: str) -> Path:
        return self.delta / f"{safe_name(model_id)}.csv"

    @property
    def figures(self) -> Path:
        return self.root / "figures"

    @property
    def tables(self) -> Path:
        return self.root / "tables"

    @property
    def judge_tables(self) -> Path:
        return self.tables / "judge"

    @property
    def analysis_made(self) -> Path:
        return self.tables / ".made.json"

    @property
    def report(self) -> Path:
        return self.root / "report.md"


@dataclass(frozen=True)
class ModelEntry:
    """One checkpoint that the benchmarks and the analysis know by ``model_id`` (contracts.ids)."""

    model_id: str  # "sr-dpo" (final), "sr-dpo-p128" (after 128 training pairs), "sft" (the start)
    path: str  # Hugging Face checkpoint directory
    objective: str  # a name of contracts.objectives
    beta: float | None = None
    lam: float | None = None
    step: int | None = None
    pairs_seen: int | None = None
    run: str | None = None  # the train/<run> it comes from
    seed: int | None = None  # the training seed (None: not trained here, or recorded before seeds were)

    @property
    def is_final(self) -> bool:
        """A run's final model is named after its run (checkpoints carry a -p<pairs> suffix)."""
        return self.model_id in (self.run, self.objective)


def checkpoints_of_run(train_dir: str | Path) -> list[ModelEntry]:
    """Every checkpoint a training run wrote (checkpoint-<step>/ by step, then final/), as models.json
    entries named by contracts.ids, from the srdpo_info.json the trainer put in each."""
    d = Path(train_dir)
    steps = []
    for c in d.glob(ids.CHECKPOINT_PREFIX + "*"):
        suffix = c.name[len(ids.CHECKPOINT_PREFIX):]
        if suffix.isdigit():
            steps.append((int(suffix), c))
    out = []
    for ck in [c for _, c in sorted(steps)] + [d / ids.FINAL_DIR]:
        info = ids.read_checkpoint_info(ck)
        if info:
            out.append(ModelEntry(ids.model_id_for_checkpoint(ck), str(ck), info.get("objective", "base"),
                                  beta=info.get("beta"), lam=info.get("lam"), step=info.get("step"),
                                  pairs_seen=info.get("pairs_seen"), run=d.name, seed=info.get("seed")))
    return out


def read_models(path: Path) -> list[ModelEntry]:
    """Read models.json; a bad entry fails naming the file, the entry and the field."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path} not found: run `srdpo-eval reproduce` (it writes it) or list checkpoints") from None
    except json.JSONDecodeError as e:
        raise UserError(f"{path}:{e.lineno}: not valid JSON ({e.msg}); rerun the stage that writes it") from None
    if not isinstance(data, list):
        raise UserError(f"{path}: expected a list of model entries")
    names = {f.name for f in fields(ModelEntry)}
    out = []
    for i, item in enumerate(data):
        if not isinstance(item, dict):
            raise UserError(f"{path}: entry {i}: expected an object")
        missing = [k for k in ("model_id", "path", "objective") if k not in item]
        if missing:
            raise UserError(f"{path}: entry {i}: missing field {missing[0]!r}")
        unknown = set(item) - names
        if unknown:
            raise UserError(f"{path}: entry {i}: unknown field {sorted(unknown)[0]!r}")
        out.append(ModelEntry(**item))
    return out


def write_models(path: Path, entries: list[ModelEntry]) -> None:
    from contracts.files import write_json

    write_json(path, [asdict(e) for e in entries])
