"""Reading what the other stages wrote into a run directory (the layout: contracts/run_dir.py).

Every loader returns data plus nothing else; a missing input is ``None``/empty, and the caller says
which stage produces it. Malformed input fails with the file, the line and the field.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from contracts.benches import BENCHES
from contracts.errors import UserError
from contracts.ids import parse_model_id
from contracts.run_dir import RUN_INFO, TRAIN_LOG, ModelEntry, RunDir, checkpoints_of_run, read_models
from contracts.tables import DELTA_REQUIRED, SCORES_COLUMNS, SCORES_INDEX

# Which command writes each input: quoted in the notes about missing inputs.
PRODUCERS = {
    "models": "`srdpo-eval train` / `srdpo-eval reproduce` (models.json)",
    "train": "`srdpo-eval train` (train/<run>/log.jsonl, run_info.json)",
    "pair": "`srdpo-eval judge --mode pairwise` (<bench>/model_judgment/<judge>_pair.jsonl)",
    "single": "`srdpo-eval judge --mode single` (<bench>/model_judgment/<judge>_single.jsonl)",
    "leaderboard": "`srdpo-eval leaderboard` (leaderboard/scores.csv)",
    "delta": "`srdpo-eval delta CHECKPOINT --pairs FILE` (delta/<model_id>.csv)",
    "answers": "`srdpo-eval answers` (<bench>/model_answer/<model_id>.jsonl)",
}


def read_jsonl(path: Path, *, allow_partial_tail: bool = False) -> list[dict]:
    """Parse a JSONL file; a bad line fails naming the file and the line number.

    With ``allow_partial_tail`` an unterminated last line (a writer still running or killed mid-write)
    is dropped instead of failing; complete lines are never dropped.
    """
    from contracts.jsonl import read_jsonl_lines

    return [rec for _, rec in read_jsonl_lines(path, skip_cut_tail=allow_partial_tail)]


def guess_entry(model_id: str) -> ModelEntry | None:
    """A ModelEntry from a model id alone (contracts.ids.parse_model_id), or None.

    Used only when models.json is absent; objective, λ and pairs seen come from the name.
    """
    parsed = parse_model_id(model_id)
    if parsed is None:
        return None
    return ModelEntry(model_id=model_id, path="", objective=parsed.objective, lam=parsed.lam,
                      pairs_seen=parsed.pairs_seen, seed=parsed.seed)


def is_final(e: ModelEntry) -> bool:
    return e.is_final


@dataclass
class TrainRun:
    """One training run: its run_info.json and its per-step log as a DataFrame."""

    name: str
    info: dict
    log: pd.DataFrame

    @property
    def objective(self) -> str:
        return str(self.info.get("objective", guess_entry(self.name).objective if guess_entry(self.name) else "?"))

    @property
    def lam(self) -> float | None:
        lam = self.info.get("lam")
        return None if lam is None else float(lam)


def load_train_run(path: Path) -> TrainRun | None:
    """train/<run>/: log.jsonl (required) and run_info.json (optional); None without a log."""
    path = Path(path)
    log_path = path / TRAIN_LOG
    if not log_path.is_file():
        return None
    records = read_jsonl(log_path, allow_partial_tail=True)
    for i, r in enumerate(records, 1):
        if "pairs_seen" not in r and "step" not in r:
            raise UserError(f"{log_path}: record {i}: missing field 'pairs_seen' (and 'step')")
    log = pd.DataFrame(records)
    if "pairs_seen" not in log:
        log["pairs_seen"] = float("nan")
    info_path = path / RUN_INFO
    info = {}
    if info_path.is_file():
        try:
            info = json.loads(info_path.read_text())
        except json.JSONDecodeError as e:
            raise UserError(f"{info_path}:{e.lineno}: not valid JSON ({e.msg})") from None
    return TrainRun(name=path.name, info=info, log=log)


@dataclass
class Inputs:
    """Everything the analysis reads from one run directory."""

    run: RunDir
    models: list[ModelEntry] = field(default_factory=list)
    models_from_names: bool = False  # True when models.json was absent and names were parsed
    train: dict[str, TrainRun] = field(default_factory=dict)
    pair: dict[tuple[str, str], pd.DataFrame] = field(default_factory=dict)  # (bench, judge) → judgments
    single: dict[tuple[str, str], pd.DataFrame] = field(default_factory=dict)
    leaderboard: pd.DataFrame | None = None
    delta: dict[str, pd.DataFrame] = field(default_factory=dict)  # model_id → Δπ table
    # (bench, model_id) → one row per answered turn: question_id, turn, words, tokens (NaN when the answer
    # file predates token counts), max_new_tokens
    answers: dict[tuple[str, str], pd.DataFrame] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def entry(self, model_id: str) -> ModelEntry | None:
        """The models.json entry of ``model_id`` (or one parsed from the name)."""
        for e in self.models:
            if e.model_id == model_id:
                return e
        return guess_entry(model_id)

    def main(self, objective: str, seed: int | None = None) -> ModelEntry | None:
        """The final model of an objective's main run (not a λ-sweep run) of ``seed`` (default: the first
        seed it was trained with): the entry named after that run, else its latest checkpoint."""
        from contracts.ids import run_name

        same = [e for e in self.models if e.objective == objective]
        if not same:
            return None
        seed = min(seed_of(e) for e in same) if seed is None else seed
        same = [e for e in same if seed_of(e) == seed]
        for e in same:
            if e.model_id == run_name(objective, seed=seed):
                return e
        if not same:
            return None
        return max(same, key=lambda e: (e.pairs_seen or -1, is_final(e), e.step or -1))

    def seeds(self) -> list[int]:
        """The training seeds of the run's trained models (one seed: [0])."""
        from contracts import objectives

        return sorted({seed_of(e) for e in self.models if objectives.get(e.objective).preference} or {0})

    def start(self) -> ModelEntry | None:
        """The model training started from (contracts.ids.START_ID), if the run has it."""
        from contracts.ids import START_ID

        return next((e for e in self.models if e.model_id == START_ID), None)

    def objectives(self) -> list[str]:
        """The trained objectives of the run that have a final model, in the registry's order."""
        from contracts import objectives

        have = {e.objective for e in self.models}
        return [o for o in objectives.order() if o in have and objectives.get(o).preference]

    def checkpoints(self, objective: str, seed: int | None = None) -> list[ModelEntry]:
        """The main run's checkpoints of an objective (of ``seed``: default the first) with a known
        pairs_seen, in training order."""
        main = self.main(objective, seed)
        if main is None:
            return []
        same = [e for e in self.models if e.objective == objective and e.pairs_seen is not None]
        if main.run is not None:
            same = [e for e in same if e.run == main.run]
        else:
            same = [e for e in same if e.lam == main.lam and e.beta == main.beta]
        # A last checkpoint and final/ can hold the same weights at the same pairs seen: keep the final.
        by_pairs: dict[int, ModelEntry] = {}
        for e in sorted(same, key=is_final):
            by_pairs[e.pairs_seen] = e
        return [by_pairs[k] for k in sorted(by_pairs)]


DELTA_NUMERIC = ("delta", "margin", "reward_margin", "margin_p", "chosen_tokens", "rejected_tokens", "length_diff",
                 "chosen_rating", "rejected_rating", "rating_diff")


def _numbers(df: pd.DataFrame, path: Path, columns: list[str]) -> None:
    """Make ``columns`` numeric in place; a value that is not a number fails naming the file, line and column."""
    for col in columns:
        values = pd.to_numeric(df[col], errors="coerce")
        bad = values.isna() & df[col].notna()
        if bad.any():
            i = int(bad.to_numpy().nonzero()[0][0])
            raise UserError(f"{path}:{i + 2}: column {col!r}: expected a number, got {df[col].iloc[i]!r}; fix the value "
                            "or rerun the stage that wrote the table")
        df[col] = values


def seed_of(e: ModelEntry) -> int:
    """A model's training seed (0 for entries recorded before seeds were, as their names say)."""
    return e.seed if e.seed is not None else 0


def _known_ids(inputs: Inputs) -> set[str]:
    ids = set(inputs.delta)
    if inputs.leaderboard is not None:
        ids |= set(inputs.leaderboard["model_id"].astype(str))
    for df in inputs.pair.values():
        for col in ("model_1", "model_2"):
            ids |= set(df[col].astype(str)) if col in df else set()
    for df in inputs.single.values():
        ids |= set(df["model"].astype(str)) if "model" in df else set()
    return ids


def load_inputs(root: str | Path) -> Inputs:
    """Load every stored result under ``root``; absent inputs are recorded in ``notes``."""
    run = RunDir(Path(root))
    inp = Inputs(run=run)

    train_root = run.root / "train"
    if train_root.is_dir():
        for d in sorted(p for p in train_root.iterdir() if p.is_dir()):
            tr = load_train_run(d)
            if tr is not None:
                inp.train[d.name] = tr
    if not inp.train:
        inp.notes.append(f"no training logs under {train_root}: produced by {PRODUCERS['train']}")

    _load_judgments(inp)
    _load_answers(inp)

    scores = run.scores
    if scores.is_file():
        df = pd.read_csv(scores)
        missing = [c for c in SCORES_COLUMNS if c not in df]
        if missing:
            raise UserError(f"{scores}: missing column {missing[0]!r} (columns: contracts.tables.SCORES_COLUMNS); "
                            "rerun `srdpo-eval leaderboard` to rewrite it")
        df[SCORES_INDEX] = df[SCORES_INDEX].astype(str)
        inp.leaderboard = df
    elif run.leaderboard_unavailable.is_file():  # the leaderboard stage said why it made no scores
        why = json.loads(run.leaderboard_unavailable.read_text()).get("reason", "")
        inp.notes.append(f"no leaderboard scores: the leaderboard was skipped ({why})")
    else:
        inp.notes.append(f"no {scores}: produced by {PRODUCERS['leaderboard']}")

    if run.delta.is_dir():
        for p in sorted(run.delta.glob("*.csv")):
            df = pd.read_csv(p, dtype={"id": str})
            for col in DELTA_REQUIRED:
                if col not in df:
                    raise UserError(f"{p}: missing column {col!r} (columns: contracts.tables.DELTA_COLUMNS); "
                                    "rerun `srdpo-eval delta` to rewrite it")
            _numbers(df, p, [c for c in DELTA_NUMERIC if c in df])
            model_id = str(df["model_id"].iloc[0]) if "model_id" in df and len(df) else p.stem
            inp.delta[model_id] = df
    if not inp.delta:
        inp.notes.append(f"no Δπ tables under {run.delta}: produced by {PRODUCERS['delta']}")

    if run.models.is_file():
        inp.models = read_models(run.models)
    else:  # the trainer's own record of each checkpoint, else what the model names say
        inp.models_from_names = True
        trained = [e for d in sorted(train_root.glob("*")) if d.is_dir() for e in checkpoints_of_run(d)]
        known = {e.model_id for e in trained}
        inp.models = trained + [e for e in map(guess_entry, sorted(_known_ids(inp) - known)) if e is not None]
        inp.notes.append(f"no {run.models} ({PRODUCERS['models']}): models were read from the checkpoints' "
                         "srdpo_info.json under train/, else from their names")
    return inp


def inputs_digest(root: str | Path) -> str:
    """The files :func:`load_inputs` reads (by name, size and modification time), this package's analysis
    code and whether the last report is still all there: `reproduce` draws the figures again only when
    this changes."""
    import hashlib

    from contracts.hashing import stat_digest

    run = RunDir(Path(root))
    files = [run.models, run.scores, run.leaderboard_unavailable, *run.root.glob("train/*/*.json*"),
             *run.root.glob("train/*/*/srdpo_info.json"), *run.delta.glob("*.csv")]
    for bench in BENCHES:
        files += [*run.bench(bench).glob("model_answer/*.jsonl"), *run.bench(bench).glob("model_judgment/*.jsonl")]
    h = hashlib.sha256(stat_digest(files, run.root).encode())
    for f in sorted(Path(__file__).parent.glob("*.py")):
        h.update(f.read_bytes())
    made = json.loads(run.analysis_made.read_text()) if run.analysis_made.is_file() else []
    h.update(str(run.report.is_file() and all((run.root / m).is_file() for m in made)).encode())
    return h.hexdigest()


def load_answer_lengths(path: Path) -> pd.DataFrame:
    """One row per answered turn of a FastChat answer file: its length in words and (when the file has
    them) the model's tokens, and the token limit it was generated with."""
    rows, records = [], read_jsonl(path, allow_partial_tail=True)
    for rec in records:
        choice = (rec.get("choices") or [{}])[0]
        tokens = choice.get("tokens") or []
        limit = (rec.get("srdpo") or {}).get("max_new_tokens", float("nan"))
        for t, text in enumerate(choice.get("turns") or []):
            rows.append({"question_id": rec.get("question_id"), "turn": t + 1, "words": len(str(text).split()),
                         "tokens": tokens[t] if t < len(tokens) else float("nan"), "max_new_tokens": limit})
    out = pd.DataFrame(rows, columns=["question_id", "turn", "words", "tokens", "max_new_tokens"])
    out.attrs["model_id"] = str(records[0].get("model_id", path.stem)) if records else path.stem
    return out


def _load_answers(inp: Inputs) -> None:
    for bench in BENCHES:
        adir = inp.run.bench(bench) / "model_answer"
        for p in sorted(adir.glob("*.jsonl")) if adir.is_dir() else []:
            df = load_answer_lengths(p)
            if len(df):
                inp.answers[(bench, df.attrs["model_id"])] = df


def _load_judgments(inp: Inputs) -> None:
    found = {"pair": False, "single": False}
    for bench in BENCHES:
        jdir = inp.run.bench(bench) / "model_judgment"
        if not jdir.is_dir():
            continue
        for kind, suffix in (("pair", "_pair.jsonl"), ("single", "_single.jsonl")):
            for p in sorted(jdir.glob(f"*{suffix}")):
                found[kind] = True
                from benchmarks import results

                load = results.load_pair_judgments if kind == "pair" else results.load_single_judgments
                df = load(p)
                judge = p.name[: -len(suffix)]
                if len(df):
                    getattr(inp, kind)[(bench, judge)] = df
    for kind in ("pair", "single"):
        if not found[kind]:
            inp.notes.append(f"no {kind} judgments under <bench>/model_judgment/: produced by {PRODUCERS[kind]}")
