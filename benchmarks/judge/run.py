"""Judging a run directory's answers: FastChat's matches, played concurrently, written as they arrive.

A *match* is one judgment record: single grading of one (question, turn, model) with one call, or a
pairwise comparison of one (question, turn, model_1, model_2) with two calls (game 1: model_1 is
assistant A; game 2: model_2 is A). Records go to ``RunDir.judgments(bench, judge, mode)`` in FastChat's
formats, one flushed line each. A rerun reads that file first and only plays the matches it lacks; the
reply cache spares even the calls of matches that were cut off halfway.

A local judge (a backend with ``reply_version``) adds fields computed from its probabilities
(benchmarks/judge/calibration.py): single grading makes one more call per question and turn, the
content-free prior (shared by every model, so asked once), and its score is the calibrated one; a
pairwise record adds P(model_1 better) over both orders and the verdict ``winner``. An OpenAI judge's
records are FastChat's, unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from contracts.progress import bar as progress_bar

from benchmarks.judge import calibration
from benchmarks.judge import prompts as P
from benchmarks.judge.backend import ChatBackend
from benchmarks.judge.cache import JudgeCache, request_key
from benchmarks.judge import estimate as E
from benchmarks.judge.estimate import CostEstimate
from contracts.errors import UserError
from contracts.files import Appender, Lock, write_text
from contracts.jsonl import read_jsonl_lines, require
from contracts.run_dir import RunDir
from contracts.tables import PAIR_KEY as PAIR_FIELDS
from contracts.tables import SINGLE_KEY as SINGLE_FIELDS

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Call:
    """One request to the judge: the rendered prompt and its cache key."""

    messages: list[dict[str, str]]
    key: str

    @property
    def user_prompt(self) -> str:
        return self.messages[-1]["content"]


@dataclass(frozen=True)
class SingleMatch:
    question_id: int
    model: str
    turn: int
    prompt: str  # FastChat judge prompt name
    calls: tuple[Call, ...]  # the answer's; with a local judge also the content-free prior's
    calibrated: bool = False  # a local judge: score from the probabilities of both calls

    @property
    def key(self) -> tuple:
        return (self.question_id, self.model, self.turn)

    def record(self, judge_model: str, replies: list[str]) -> dict:
        """FastChat's single-grading record (score -1 when the reply has no rating); a local judge's
        score, judgment text and distributions from calibration.single_fields."""
        rec = {"question_id": self.question_id, "model": self.model, "judge": [judge_model, self.prompt],
               "user_prompt": self.calls[0].user_prompt, "judgment": replies[0],
               "score": P.parse_rating(replies[0]), "turn": self.turn, "tstamp": time.time()}
        if self.calibrated:
            rec.update(calibration.single_fields(replies[0], replies[1]))
        return rec


@dataclass(frozen=True)
class PairMatch:
    question_id: int
    model_1: str
    model_2: str
    turn: int
    prompt: str
    calls: tuple[Call, Call]  # game 1 (model_1 is A), game 2 (model_2 is A)
    tie_band: float | None = None  # a local judge: the verdict from both games' probabilities

    @property
    def key(self) -> tuple:
        return pair_key(self.question_id, self.model_1, self.model_2, self.turn)

    def record(self, judge_model: str, replies: list[str]) -> dict:
        """FastChat's pairwise record: both games' winners named model_1 / model_2 / tie / error; a local
        judge adds P(model_1 better) over both orders and its verdict (calibration.pair_fields)."""
        g1 = {"A": "model_1", "B": "model_2"}.get(w := P.parse_winner(replies[0]), w)
        g2 = {"A": "model_2", "B": "model_1"}.get(w := P.parse_winner(replies[1]), w)
        rec = {"question_id": self.question_id, "model_1": self.model_1, "model_2": self.model_2,
               "g1_winner": g1, "g2_winner": g2, "judge": [judge_model, self.prompt],
               "g1_user_prompt": self.calls[0].user_prompt, "g1_judgment": replies[0],
               "g2_user_prompt": self.calls[1].user_prompt, "g2_judgment": replies[1],
               "turn": self.turn, "tstamp": time.time()}
        if self.tie_band is not None:
            rec.update(calibration.pair_fields(replies[0], replies[1], self.tie_band))
        return rec


Match = SingleMatch | PairMatch


def pair_key(question_id: int, model_1: str, model_2: str, turn: int) -> tuple:
    # A vs B and B vs A are the same comparison: both orders are played inside each record
    return (question_id, *sorted((model_1, model_2)), turn)


@dataclass
class JudgeSummary:
    """What a judge run did (or, for a dry run, would do)."""

    path: Path
    mode: str
    matches: int  # judgment records the run needs in total
    already_done: int  # of those, already in the judgment file
    calls_needed: int  # calls of the missing records
    calls_cached: int  # of those, answered from the reply cache
    calls_made: int = 0  # calls asked of the backend (0 in a dry run): one per prompt not cached
    written: int = 0
    parse_errors: int = 0  # records written with score -1 / winner "error" (raw text kept)
    failed: list[str] = field(default_factory=list)  # matches that failed after retries (not written)
    too_long: int = 0  # of those, prompts the judge's context cannot hold (a rerun fails the same way)
    # an HTTP backend's own counts (OpenAIBackend.counts): attempts, retries by cause, concurrency reached
    http: dict = field(default_factory=dict)
    estimate: CostEstimate | None = None  # dry run only

    @property
    def total(self) -> int:
        """Judgment records the run needs in total (= ``matches``)."""
        return self.matches

    def describe(self) -> str:
        lines = [f"judgments: {self.path}",
                 f"  records needed {self.matches}, already in file {self.already_done}, "
                 f"missing {self.matches - self.already_done}",
                 f"  calls for the missing records {self.calls_needed}, cached {self.calls_cached}, "
                 f"to request {self.calls_needed - self.calls_cached}"]
        if self.estimate is not None:
            e = self.estimate
            lines.append(e.describe())
        else:
            lines.append(f"  calls made {self.calls_made}, written {self.written}, parse errors {self.parse_errors}, "
                         f"failed {len(self.failed)}" + (f" ({self.too_long} too long for the judge's context)"
                                                         if self.too_long else ""))
            if self.http:
                retries = ", ".join(f"{n} {c}" for c, n in sorted(self.http["retries"].items())) or "none"
                lines.append(f"  HTTP requests {self.http['attempts']} (retries: {retries}); {self.http['window']}")
        return "\n".join(lines)


class JudgeRunError(RuntimeError):
    """Some matches failed after all retries; everything else was written and a rerun retries them."""

    def __init__(self, summary: JudgeSummary):
        self.summary = summary
        n, long = len(summary.failed), summary.too_long
        then = ("rerun to retry them" if not long else "a rerun fails the same way: change the judge or --max-tokens"
                if long == n else f"a rerun retries the {n - long} others; the {long} too long fail again")
        super().__init__(f"{n} of {summary.matches - summary.already_done} judgments failed (first: {summary.failed[0]}); "
                         f"the {summary.written} others are written to {summary.path}; {then}")


# ----------------------------------------------------------------------------------------------- matches

def _load_inputs(run_dir: Path, bench: str, models: list[str], data_dir, limit: int | None = None,
                 per_category: int | None = None) -> tuple[list, dict, dict[str, dict]]:
    from benchmarks.fastchat_data import load_answers, load_judge_prompts, load_selected_questions, resolve_data_dir

    data = resolve_data_dir(data_dir, bench)
    # the same questions the answers stage took
    questions = load_selected_questions(data, bench, limit=limit, per_category=per_category)
    judge_prompts = load_judge_prompts(data)
    answers = {}
    for model in models:
        path = RunDir(run_dir).answers(bench, model)
        if not path.exists():
            raise UserError(f"judge: no answers for model {model!r} on {bench}: {path} is missing")
        answers[model] = load_answers(path)
    if limit is None and per_category is None:
        questions = _answered(questions, answers, RunDir(run_dir), bench)
    return questions, judge_prompts, answers


def _answered(questions: list, answers: dict[str, dict], rd: RunDir, bench: str) -> list:
    """No selection given: the questions of the selection the answer files were made with, when every model
    answered exactly the questions of one (--per-category N, --limit N, or both); otherwise every question,
    and a missing answer is an error naming the file and the question."""
    from benchmarks.fastchat_data import select_questions

    sets = [{q.question_id for q in questions} & set(a) for a in answers.values()]
    covered = sets[0] if sets and all(x == sets[0] for x in sets) else None
    if not covered or len(covered) == len(questions):
        return questions
    most = max(sum(q.category == c for q in questions) for c in {q.category for q in questions})
    for per_category in (None, *range(1, most + 1)):
        for limit in (None, len(covered)):
            picked = select_questions(questions, limit=limit, per_category=per_category)
            if {q.question_id for q in picked} == covered:
                flags = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in (("per_category", per_category),
                                                                             ("limit", limit)) if v)
                print(f"judge: {bench}: the {len(picked)} questions (of {len(questions)}) the answers were made for "
                      f"({flags})", file=sys.stderr)
                return picked
    return questions


def _answer_turns(answers: dict[str, dict], model: str, question, n_turns: int, run_dir: Path, bench: str) -> list[str]:
    record = answers[model].get(question.question_id)
    where = RunDir(run_dir).answers(bench, model)
    if record is None:
        raise UserError(f"{where}: no answer for question_id {question.question_id}; answer it, or judge the questions "
                        "the answers were made for (--per-category N / --limit N, as given to `answers`)")
    try:
        turns = record["choices"][0]["turns"]
    except (KeyError, IndexError, TypeError):
        raise UserError(f"{where}: question_id {question.question_id}: missing field 'choices[0].turns'") from None
    if len(turns) < n_turns:
        raise UserError(f"{where}: question_id {question.question_id}: field 'turns' has {len(turns)} "
                         f"turn(s), {n_turns} needed")
    return turns


def _turns_of(question) -> list[int]:
    # FastChat judges turn 2 only for two-turn questions (MT-Bench); Vicuna-Bench has one turn
    return [1, 2] if len(question.turns) == 2 else [1]


def _reference(question, turn: int, data_dir) -> list[str] | None:
    if not P.needs_reference(question.category):
        return None
    ref = question.reference
    if not ref or len(ref) < turn:
        raise UserError(f"judge: question {question.question_id} ({question.category}) needs a reference answer "
                         f"for turn {turn}; none in reference_answer/gpt-4.jsonl under {data_dir or 'the data dir'}")
    return ref


@dataclass(frozen=True)
class Judge:
    """Who answers the calls: the name in cache keys and files, and for a local judge the version of its
    replies (part of the cache key) and the tie band of its pairwise verdicts."""

    model: str
    reply_version: str | None = None  # None: an OpenAI-compatible judge, FastChat's rules
    tie_band: float = calibration.TIE_BAND
    max_tokens: int = P.MAX_TOKENS  # the longest reply asked for (a local judge generates none)

    @property
    def local(self) -> bool:
        return self.reply_version is not None

    @classmethod
    def of(cls, backend) -> "Judge":
        version = getattr(backend, "reply_version", None)
        return cls(backend.model, version, getattr(backend, "tie_band", calibration.TIE_BAND),
                   getattr(backend, "max_tokens", P.MAX_TOKENS))


def _call(judge: Judge, judge_prompt, user_prompt: str) -> Call:
    msgs = P.messages(judge_prompt.system_prompt, user_prompt)
    version = P.PROMPT_VERSION + (f"+{judge.reply_version}" if judge.local else "")
    return Call(msgs, request_key(judge.model, msgs, temperature=P.TEMPERATURE, max_tokens=judge.max_tokens,
                                  prompt_version=version))


def single_matches(questions, judge_prompts: dict, answers: dict[str, dict], judge: Judge, *,
                   run_dir: Path, bench: str, data_dir=None) -> list[SingleMatch]:
    """FastChat's single-grading matches: every model, question and turn (a local judge: with the prior)."""
    out = []
    for model in answers:
        for q in questions:
            for turn in _turns_of(q):
                name = P.prompt_name("single", q.category, turn)
                jp = judge_prompts[name]
                ans = _answer_turns(answers, model, q, turn, run_dir, bench)
                ref = _reference(q, turn, data_dir)
                calls = (_call(judge, jp, P.render_single(jp.prompt_template, q.turns, ans, ref, turn)),)
                if judge.local:  # every answer under judgment replaced by the content-free one
                    free = [calibration.CONTENT_FREE] * len(ans)
                    calls += (_call(judge, jp, P.render_single(jp.prompt_template, q.turns, free, ref, turn)),)
                out.append(SingleMatch(q.question_id, model, turn, name, calls, calibrated=judge.local))
    return out


def pair_matches(questions, judge_prompts: dict, answers: dict[str, dict], pairs: list[tuple[str, str]],
                 judge: Judge, *, run_dir: Path, bench: str, data_dir=None) -> list[PairMatch]:
    """FastChat's pairwise matches for each (model_1, model_2): every question and turn, both orders."""
    out = []
    for m1, m2 in pairs:
        for q in questions:
            for turn in _turns_of(q):
                name = P.prompt_name("pairwise", q.category, turn)
                jp = judge_prompts[name]
                a1 = _answer_turns(answers, m1, q, turn, run_dir, bench)
                a2 = _answer_turns(answers, m2, q, turn, run_dir, bench)
                ref = _reference(q, turn, data_dir)
                g1 = P.render_pair(jp.prompt_template, q.turns, a1, a2, ref, turn)
                g2 = P.render_pair(jp.prompt_template, q.turns, a2, a1, ref, turn)
                out.append(PairMatch(q.question_id, m1, m2, turn, name, (_call(judge, jp, g1), _call(judge, jp, g2)),
                                     tie_band=judge.tie_band if judge.local else None))
    return out


def done_keys(path: Path, mode: str, *, repair: bool = True) -> set[tuple]:
    """Keys of the records already in a judgment file.

    A last line cut off by a killed run is removed from the file first (``repair``) or just skipped.
    """
    fields = SINGLE_FIELDS if mode == "single" else PAIR_FIELDS
    keys = set()
    for line, rec in read_jsonl_lines(path, missing_ok=True, repair_tail=repair, skip_cut_tail=not repair):
        require(rec, fields, path, line)
        keys.add((rec["question_id"], rec["model"], rec["turn"]) if mode == "single"
                 else pair_key(rec["question_id"], rec["model_1"], rec["model_2"], rec["turn"]))
    return keys


# ----------------------------------------------------------------------------------------------- playing

OUTER_LIMIT = 64  # calls pending at once with concurrency auto (an HTTP backend's own window decides the rest)


async def _play(matches: list[Match], backend: ChatBackend, out: Appender, cache: JudgeCache | None,
                concurrency: int | None, summary: JudgeSummary, progress: bool) -> None:
    sem = asyncio.Semaphore(concurrency or OUTER_LIMIT)
    max_tokens = getattr(backend, "max_tokens", P.MAX_TOKENS)
    asked: dict[str, asyncio.Task] = {}  # one request per prompt, however many matches wait for it

    async def request(call: Call) -> str:
        if cache is not None and (hit := cache.get(call.key)) is not None:
            return hit
        async with sem:
            summary.calls_made += 1
            text = await backend.chat(call.messages, temperature=P.TEMPERATURE, max_tokens=max_tokens)
        if cache is not None:
            cache.put(call.key, text, model=backend.model)
        return text

    async def ask(call: Call) -> str:
        if call.key not in asked:
            asked[call.key] = asyncio.ensure_future(request(call))
        return await asyncio.shield(asked[call.key])

    async def play(match: Match, bar) -> None:
        # wait for both games even if one fails: the other's reply is cached for the rerun
        replies = await asyncio.gather(*(ask(c) for c in match.calls), return_exceptions=True)
        errors = [r for r in replies if isinstance(r, BaseException)]
        if errors:
            # cancellation, Ctrl-C, or an endpoint that is down (UserError): the run ends now
            fatal = [e for e in errors if not isinstance(e, Exception) or isinstance(e, UserError)]
            if fatal:
                raise fatal[0]
            e = errors[0]  # counted, and raised as JudgeRunError once the other matches are done
            log.error("judgment %s failed: %s", match.key, type(e).__name__)
            summary.failed.append(f"{match.key}: {type(e).__name__}: {e}")
            summary.too_long += any(type(x).__name__ == "ContextTooLong" for x in errors)
            return
        record = match.record(judge_label(backend), replies)
        out.write(record)
        summary.written += 1
        if record.get("score") == -1 or "error" in (record.get("g1_winner"), record.get("g2_winner")):
            summary.parse_errors += 1
            log.warning("judgment %s: verdict not found in the reply (recorded as an error)", match.key)
        bar.update(1)

    with progress_bar(total=len(matches), desc=f"judge {summary.mode}", unit="judgment", enabled=progress) as bar:
        await asyncio.gather(*(play(m, bar) for m in matches))


def _open_cache(cache, run_dir: Path, *, create: bool = True) -> JudgeCache | None:
    """The reply cache; ``create`` False (a dry run): only an existing one, and nothing is written to it."""
    if cache is False or cache is None:
        return None
    if isinstance(cache, JudgeCache):
        return cache
    path = Path(RunDir(run_dir).judge_cache if cache is True else cache)
    return JudgeCache(path, repair=create) if create or path.exists() else None


async def judge_async(run_dir, bench: str, backend: ChatBackend, *, mode: str, models: list[str] | None = None,
                      pairs: list[tuple[str, str]] | None = None, data_dir=None, concurrency: int | str = "auto",
                      cache: JudgeCache | str | Path | bool = True, dry_run: bool = False, progress: bool = True,
                      price_in: float | None = None, price_out: float | None = None,
                      limit: int | None = None, per_category: int | None = None) -> JudgeSummary:
    """Judge ``models`` (single) or ``pairs`` (pairwise) on ``bench``; see :func:`judge_single`."""
    if mode not in ("single", "pairwise"):
        raise UserError(f"unknown judge mode {mode!r}: expected single or pairwise")
    from benchmarks.judge.window import parse_concurrency

    try:
        in_flight = parse_concurrency(concurrency)
    except ValueError as e:
        raise UserError(str(e)) from None
    run_dir = Path(run_dir)
    if mode == "pairwise":
        if not pairs:
            raise UserError("pairwise judging needs at least one (model_a, model_b) pair")
        for a, b in pairs:
            if a == b:
                raise UserError(f"pairwise judging: a model against itself ({a!r})")
        models = list(dict.fromkeys(m for pair in pairs for m in pair))
    elif models is None:
        models = list_answer_models(run_dir, bench)
    if not models:
        raise UserError(f"judge: no models to judge (no answer files under {RunDir(run_dir).bench(bench)})")

    questions, judge_prompts, answers = _load_inputs(run_dir, bench, models, data_dir, limit, per_category)
    args = dict(run_dir=run_dir, bench=bench, data_dir=data_dir)
    judge = Judge.of(backend)
    matches: list[Match] = (single_matches(questions, judge_prompts, answers, judge, **args) if mode == "single"
                            else pair_matches(questions, judge_prompts, answers, pairs, judge, **args))
    path = RunDir(run_dir).judgments(bench, judge_label(backend), mode)
    # one writer per judgment file: a second judge on it stops here, before any request
    with contextlib.nullcontext() if dry_run else Lock(path, what=f"judgment file {path}"):
        done = done_keys(path, mode, repair=not dry_run)  # a dry run changes no file
        todo = [m for m in matches if m.key not in done]
        store = _open_cache(cache, run_dir, create=not dry_run)
        try:
            calls = list({c.key: c for m in todo for c in m.calls}.values())  # a shared prior is one call
            cached = sum(1 for c in calls if store is not None and c.key in store)
            summary = JudgeSummary(path, mode, len(matches), len(matches) - len(todo), len(calls), cached)
            if store is not None and store.damaged:
                print(f"judge reply cache {store.path}: damaged ({store.damaged}); started empty, so "
                      f"{len(calls) - cached} replies of this run are requested again", file=sys.stderr)
            if dry_run:
                missing = [c.messages for c in calls if store is None or c.key not in store]
                count, method = E.token_counter(backend.model, getattr(backend, "tokenizer", None))
                summary.estimate = E.estimate(backend.model, missing, count=count, method=method,
                                            max_tokens=judge.max_tokens, price_in=price_in, price_out=price_out,
                                            base_url=getattr(backend, "base_url", None))
                return summary
            with Appender(path) as out:
                try:
                    await _play(todo, backend, out, store, in_flight, summary, progress)
                finally:
                    summary.http = backend.counts() if hasattr(backend, "counts") else {}
            if summary.written:
                sort_judgments(path)
        finally:
            if store is not None and store is not cache:
                store.close()
    if summary.failed:
        raise JudgeRunError(summary)
    return summary


def judge_label(backend) -> str:
    """The judge's name in judgment files and records: the backend's ``name`` where it has one (an endpoint's
    model id may be a long path), else its model."""
    return getattr(backend, "name", None) or backend.model


def list_answer_models(run_dir, bench: str) -> list[str]:
    """Model ids with an answer file under RUN_DIR/<bench>/model_answer (the file stem, as FastChat)."""
    folder = RunDir(run_dir).bench(bench) / "model_answer"
    return sorted(p.stem for p in folder.glob("*.jsonl"))


def _run_sync(coro, backend: ChatBackend):
    """Run ``coro`` in a fresh event loop, closing the backend's connections before the loop ends."""

    async def main():
        try:
            return await coro
        finally:
            if hasattr(backend, "aclose"):
                await backend.aclose()

    return asyncio.run(main())


def judge_single(run_dir, bench: str, backend: ChatBackend, *, models: list[str] | None = None, data_dir=None,
                 concurrency: int | str = "auto", cache: JudgeCache | str | Path | bool = True, dry_run: bool = False,
                 progress: bool = True, **estimate_kw) -> JudgeSummary:
    """Single-answer grading (FastChat single-v1 / single-math-v1 and multi-turn variants) of ``models``.

    ``models`` defaults to every answer file in the run directory. Records go to
    ``RunDir(run_dir).judgments(bench, backend.model, "single")`` as they arrive; records already there
    are not requested again. ``cache``: True for RUN_DIR/judge_cache.sqlite, a path, a JudgeCache, or
    False. ``dry_run`` counts calls, cache hits, tokens and cost, and calls nothing. Raises
    :class:`JudgeRunError` after the run if some judgments failed after all retries.
    """
    return _run_sync(judge_async(run_dir, bench, backend, mode="single", models=models, data_dir=data_dir,
                                 concurrency=concurrency, cache=cache, dry_run=dry_run, progress=progress,
                                 **estimate_kw), backend)


def judge_pairwise(run_dir, bench: str, backend: ChatBackend, *, pairs: list[tuple[str, str]], data_dir=None,
                   concurrency: int | str = "auto", cache: JudgeCache | str | Path | bool = True, dry_run: bool = False,
                   progress: bool = True, **estimate_kw) -> JudgeSummary:
    """Pairwise comparison (FastChat pair-v2 / pair-math-v1 and multi-turn variants), both answer orders.

    Each (model_1, model_2) is judged on every question and turn (MT-Bench 160 records, Vicuna-Bench 80);
    a pair already judged in either order is not judged again. Otherwise as :func:`judge_single`.
    """
    return _run_sync(judge_async(run_dir, bench, backend, mode="pairwise", pairs=pairs, data_dir=data_dir,
                                 concurrency=concurrency, cache=cache, dry_run=dry_run, progress=progress,
                                 **estimate_kw), backend)


def judge_plan(run_dir, bench: str, judge_model: str, *, mode: str, models: list[str] | None = None,
               pairs: list[tuple[str, str]] | None = None, data_dir=None, limit: int | None = None,
               per_category: int | None = None, cache: JudgeCache | str | Path | bool = True,
               reply_version: str | None = None, name: str | None = None, max_tokens: int = P.MAX_TOKENS,
               base_url: str | None = None, tokenizer: str | None = None, **estimate_kw) -> JudgeSummary:
    """What judging would do now, without a backend: records needed and done, calls and cache hits,
    tokens and cost (a dry run; nothing is called, written or downloaded). ``judge_model``: what requests
    ask for (the cache keys'); ``name``: the judge's name in files (default the same); ``reply_version``: a
    local judge's (benchmarks.judge.config.reply_version), which its calls and cache keys depend on;
    ``tokenizer``: a local judge's checkpoint, to count tokens with; ``base_url``: an endpoint (no list
    price unless it is OpenAI's)."""

    class _Named:  # a dry run only names the judge, it never calls it
        model = judge_model

    _Named.name, _Named.reply_version, _Named.max_tokens = name or judge_model, reply_version, max_tokens
    _Named.base_url, _Named.tokenizer = base_url, tokenizer

    return _run_sync(judge_async(run_dir, bench, _Named(), mode=mode, models=models, pairs=pairs,
                                 data_dir=data_dir, cache=cache, dry_run=True, progress=False, limit=limit,
                                 per_category=per_category, **estimate_kw), _Named())


def _match_order(rec: dict) -> tuple:
    qid = rec["question_id"]
    q = (0, qid, "") if isinstance(qid, int) else (1, 0, str(qid))
    if "model" in rec:
        return (q, rec["model"], rec["turn"])
    return (q, *pair_key(0, rec["model_1"], rec["model_2"], rec["turn"])[1:], rec["model_1"])


def sort_judgments(path: str | Path) -> None:
    """Rewrite a judgment file in match order (question, model(s), turn), so that its content does not
    depend on the order in which replies arrived or judge units ran (FastChat's readers ignore the order).
    A file already in order is left untouched."""
    path = Path(path)
    recs = [rec for _, rec in read_jsonl_lines(path, missing_ok=True)]
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in sorted(recs, key=_match_order))
    if path.read_text(encoding="utf-8") != text:
        write_text(path, text)


def drop_judgments(path: str | Path, models: set[str]) -> int:
    """Remove the records of a judgment file that involve any of ``models`` (their answers changed);
    return how many were removed. The rest of the file is kept as it was."""
    path = Path(path)
    if not path.is_file():
        return 0
    keep, dropped = [], 0
    for _, rec in read_jsonl_lines(path, repair_tail=True):
        if {rec.get("model"), rec.get("model_1"), rec.get("model_2")} & set(models):
            dropped += 1
        else:
            keep.append(rec)
    write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in keep))
    return dropped
