"""MT-Bench / Vicuna-Bench answer generation in FastChat's answer format, batched and resumable.

All first turns are answered together (batched), then all second turns with the conversation so far.
Within a turn, prompts are grouped by temperature (FastChat's per-category values) and sorted by
length so that each batch pads little. Each question's record is appended (and flushed) as soon as
its last turn is answered; earlier turns of unfinished questions go to a side file
``<answers>.partial`` so that an interrupted run loses nothing. A rerun skips answered questions.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path

from benchmarks.fastchat_data import DataError, Question, load_answers
from contracts.errors import UserError
from contracts.settings import ConfigError, option

log = logging.getLogger(__name__)

# FastChat llm_judge/common.py temperature_config; any other category (e.g. most of Vicuna-Bench) gets 0.7.
CATEGORY_TEMPERATURE = {
    "writing": 0.7,
    "roleplay": 0.7,
    "extraction": 0.0,
    "math": 0.0,
    "coding": 0.0,
    "reasoning": 0.0,
    "stem": 0.1,
    "humanities": 0.1,
    "arena-hard-200": 0.0,
}
DEFAULT_TEMPERATURE = 0.7


def temperature_for(category: str) -> float:
    """FastChat's sampling temperature for a question category."""
    return CATEGORY_TEMPERATURE.get(category, DEFAULT_TEMPERATURE)


@dataclass
class GenerationConfig:
    """How answers are generated; every field but the execution-only ones is part of the answers' key
    (answers made with other settings are never mixed in)."""

    max_new_tokens: int = option(1024, ge=1, help="answer length limit per turn (tokens)")
    batch_size: int = option(16, ge=1, help="prompts per generate call")
    dtype: str = option("auto", choices=("auto", "fp32", "bf16", "fp16"), help="auto: bf16 on a capable GPU, else fp32")
    seed: int = option(0, ge=0, help="sampling seed (categories answered with temperature > 0)")
    conv_template: str | None = option(None, metavar="NAME", help="FastChat conversation template "
                                                                  "(default: the checkpoint's chat template)")
    backend: str = option("hf", choices=("hf", "vllm"))
    device: str | None = option(None, choices=("cpu", "cuda"), help="default: cuda if available")
    trust_remote_code: bool = option(False, action="store_true", help="run the model repository's own code")

    def check(self) -> None:
        if self.conv_template is not None:
            from fastchat.conversation import conv_templates  # only this module of fschat (no torch deps)

            if self.conv_template not in conv_templates:
                import difflib

                close = difflib.get_close_matches(self.conv_template, conv_templates, n=3)
                raise ConfigError(f"conv_template {self.conv_template!r}: not a FastChat conversation template"
                                  + (f" (did you mean {', '.join(close)}?)" if close else ""))


# Settings that do not change an answer: where and in what batches it is generated (a question's sampling
# seed is its own, benchmarks.generation.GumbelSampling), and whether remote code may run.
EXECUTION_ONLY = ("batch_size", "device", "trust_remote_code")


def resolved_dtype(cfg: GenerationConfig) -> str:
    """The dtype answers are generated in ("auto" resolved on this machine: bfloat16 on a bf16 GPU, else
    float32): part of the key, so answers of a CPU and of a GPU never share a file."""
    from trainer.modeling import resolve_dtype

    return str(resolve_dtype(cfg.dtype, cfg.device)).removeprefix("torch.")


def result_key(cfg: GenerationConfig) -> dict:
    """What decides an answer besides its checkpoint and question: every generation setting but the
    execution-only ones, the dtype resolved on this machine. The one definition (reproduce keys by it)."""
    return {**{k: v for k, v in asdict(cfg).items() if k not in EXECUTION_ONLY}, "dtype": resolved_dtype(cfg)}


def answers_key(checkpoint_sha256: str, cfg: GenerationConfig) -> dict:
    """What an answer depends on: the checkpoint's content and :func:`result_key`. Stored in every record
    (field ``srdpo``), so answers made another way are never mixed into a file."""
    return {"checkpoint_sha256": checkpoint_sha256, **result_key(cfg)}


def _check_key(path: Path, records: dict[int, dict], key: dict) -> None:
    for qid, rec in records.items():
        have = rec.get("srdpo")
        if isinstance(have, dict) and all(have.get(k) == v for k, v in key.items()):
            continue  # what else an older record holds (a setting that no longer decides answers) is ignored
        if not isinstance(have, dict):
            why = "were not made by this command (no 'srdpo' key)"
        else:
            diff = next(k for k in key if have.get(k) != key[k])
            why = ("were made from another checkpoint" if diff == "checkpoint_sha256"
                   else f"were made with {diff} {have.get(diff)!r}, not {key[diff]!r}")
        raise UserError(f"{path}: its answers (question {qid} first) {why}; give another --model-id, or "
                        "remove the file to answer again")


def load_generator(checkpoint: str | Path, cfg: GenerationConfig):
    """The generator for ``cfg.backend`` with the checkpoint loaded."""
    from benchmarks import generation

    if cfg.backend == "hf":
        return generation.HFGenerator(checkpoint, dtype=cfg.dtype, device=cfg.device,
                                      conv_template=cfg.conv_template, trust_remote_code=cfg.trust_remote_code)
    if cfg.backend == "vllm":
        return generation.VLLMGenerator(checkpoint, dtype=cfg.dtype, conv_template=cfg.conv_template,
                                        trust_remote_code=cfg.trust_remote_code, seed=cfg.seed)
    raise UserError(f"backend {cfg.backend!r}: use 'hf' or 'vllm'")


def answer_record(question_id: int, model_id: str, turns: list[str], key: dict | None = None,
                  tokens: list[int] | None = None) -> dict:
    """One line of a FastChat answer file (FastChat ignores the extra ``srdpo`` key and the choice's
    ``tokens``, each turn's length in the model's tokens: the analysis' length control). The answer_id is a
    name-based UUID of the answer's content, so the same answer gets the same id in every run (only
    ``tstamp`` tells runs apart)."""
    name = json.dumps([question_id, model_id, turns, key], sort_keys=True, ensure_ascii=False)
    try:
        import shortuuid  # what FastChat uses (installed with fschat)

        answer_id = shortuuid.uuid(name=name)
    except ImportError:
        answer_id = uuid.uuid5(uuid.NAMESPACE_URL, name).hex
    rec = {"question_id": question_id, "answer_id": answer_id, "model_id": model_id,
           "choices": [{"index": 0, "turns": turns, **({"tokens": tokens} if tokens is not None else {})}],
           "tstamp": time.time()}
    if key is not None:
        rec["srdpo"] = key
    return rec


def _read_partial(path: Path, questions: dict[int, Question], key: dict) -> dict[int, list[str]]:
    """Turns already answered for unfinished questions: ``question_id -> [turn 1, ...]`` (a side file of
    the same key only: made otherwise, it is discarded)."""
    from contracts.jsonl import read_jsonl_lines

    done: dict[int, list[str]] = {}
    if not path.is_file():
        return done
    for n, rec in read_jsonl_lines(path, repair_tail=True, error=DataError):
        qid, turn, text = rec.get("question_id"), rec.get("turn"), rec.get("text")
        if not (isinstance(qid, int) and isinstance(turn, int) and isinstance(text, str)):
            raise DataError(f"{path}:{n}: fields 'question_id' (int), 'turn' (int), 'text' (str) expected")
        if rec.get("srdpo") != key:
            log.warning("%s: turns made with other settings, discarded", path)
            path.unlink()
            return {}
        if qid in questions and turn == len(done.get(qid, [])):  # only contiguous turns are usable
            done.setdefault(qid, []).append(text)
    return done


def _batches(items: list, lengths: list[int], temps: list[float], batch_size: int):
    """Batches of indices with one temperature each, longest prompts first (OOM shows up at once)."""
    order = sorted(range(len(items)), key=lambda i: (temps[i], -lengths[i]))
    batch: list[int] = []
    for i in order:
        if batch and (len(batch) == batch_size or temps[batch[0]] != temps[i]):
            yield batch
            batch = []
        batch.append(i)
    if batch:
        yield batch


def _reorganize(path: Path) -> None:
    """Sort by question_id and keep one record per question (FastChat's reorg_answer_file), atomically."""
    from contracts.files import write_text

    recs = load_answers(path)
    write_text(path, "".join(json.dumps(recs[qid], ensure_ascii=False) + "\n" for qid in sorted(recs)))


def generate_answers(checkpoint: str | Path, questions: list[Question], out_path: str | Path, *,
                     model_id: str, cfg: GenerationConfig | None = None, generator=None,
                     progress: bool = True, hash_cache: Path | None = None) -> Path:
    """Answer every question not yet answered in ``out_path`` (FastChat answer JSONL); return the path.

    Answers already there are kept only if they were made from the same checkpoint content with the same
    settings (:func:`answers_key`); otherwise this refuses, naming the difference, and changes nothing.
    ``generator`` (optional) is an already loaded generator (see ``benchmarks.generation``) to reuse
    across benchmarks; by default the checkpoint is loaded with ``cfg.backend``. ``hash_cache``: where to
    remember checkpoint file hashes (contracts.hashing). One process writes a file at a time: a second
    one refuses, naming the first (contracts.files.Lock).
    """
    from contracts.files import Lock
    from contracts.hashing import checkpoint_hash
    from trainer.modeling import local_checkpoint

    cfg = cfg or GenerationConfig()
    cfg.check()
    out_path = Path(out_path)
    source = checkpoint if checkpoint is not None else getattr(generator, "checkpoint", None)
    if source is None:
        raise ValueError("generate_answers: give the checkpoint (or a generator that knows its checkpoint)")
    key = answers_key(checkpoint_hash(local_checkpoint(source), hash_cache), cfg)
    with Lock(out_path, what=f"answer file {out_path}"):
        existing = load_answers(out_path, repair_tail=True) if out_path.is_file() else {}
        _check_key(out_path, existing, key)
        by_id = {q.question_id: q for q in questions}
        todo = [q for q in questions if q.question_id not in existing
                or len(existing[q.question_id]["choices"][0]["turns"]) < len(q.turns)]
        partial_path = out_path.with_name(out_path.name + ".partial")
        if todo:
            answered = _read_partial(partial_path, by_id, key)
            log.info("%s: %d of %d questions to answer", out_path, len(todo), len(questions))
            gen = generator if generator is not None else load_generator(checkpoint, cfg)
            _answer(gen, todo, answered, out_path, partial_path, model_id=model_id, key=key, cfg=cfg,
                    progress=progress)
            _reorganize(out_path)
        partial_path.unlink(missing_ok=True)
    return out_path


def _prompt(gen, q: Question, turn: int, prior: list[str]) -> str:
    """The conversation up to ``turn`` (earlier turns with the model's own answers), rendered."""
    messages = []
    for t in range(turn + 1):
        messages.append({"role": "user", "content": q.turns[t]})
        if t < turn:
            messages.append({"role": "assistant", "content": prior[t]})
    return gen.render(messages)


def _answer(gen, todo: list[Question], answered: dict[int, list[str]], out_path: Path, partial_path: Path, *,
            model_id: str, key: dict, cfg: GenerationConfig, progress: bool) -> None:
    """Turn by turn, every question of ``todo`` in batches; a question's record is appended once its last
    turn is answered, earlier turns go to the side file (an interrupted run loses nothing)."""
    from contracts.progress import bar as progress_bar

    from contracts.files import Appender

    remaining = sum(len(q.turns) - len(answered.get(q.question_id, [])) for q in todo)
    with (progress_bar(total=remaining, desc=f"answers {model_id}", unit="turn", enabled=progress) as bar,
          Appender(out_path) as out, Appender(partial_path) as side):
        for turn in range(max(len(q.turns) for q in todo)):
            due = [q for q in todo if len(q.turns) > turn and len(answered.get(q.question_id, [])) == turn]
            prompts = [_prompt(gen, q, turn, answered.get(q.question_id, [])) for q in due]
            lengths = [gen.prompt_length(p) for p in prompts]
            temps = [temperature_for(q.category) for q in due]
            for idx in _batches(due, lengths, temps, cfg.batch_size):
                # a seed per question and turn: its answer is the same whatever batch it lands in
                seeds = [zlib.crc32(f"{cfg.seed}:{turn}:{due[i].question_id}".encode()) for i in idx]
                texts = gen.generate([prompts[i] for i in idx], temperature=temps[idx[0]],
                                     max_new_tokens=cfg.max_new_tokens, seed=seeds)
                if len(texts) != len(idx):
                    raise RuntimeError(f"generator returned {len(texts)} answers for {len(idx)} prompts")
                for i, text in zip(idx, texts):
                    q = due[i]
                    answered.setdefault(q.question_id, []).append(text)
                    if turn == len(q.turns) - 1:
                        turns = answered[q.question_id]
                        out.write(answer_record(q.question_id, model_id, turns, key,
                                                tokens=[gen.count_tokens(t) for t in turns]))
                    else:
                        side.write({"question_id": q.question_id, "turn": turn, "text": text, "srdpo": key})
                bar.update(len(idx))
