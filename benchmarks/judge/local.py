"""A local judge: a Hugging Face causal LM scores the verdict with its own probabilities.

It stands in for GPT-4 when no API key is configured (offline default). Given FastChat's judge prompt
(system + user messages), it renders the chat with the model's chat template, appends the start of the
verdict ("Rating: [[" or "Verdict: [["), and scores every allowed ending ("1]]" … "10]]", or "A]]",
"B]]", "C]]") by its full log-probability, so multi-token endings such as "10]]" are exact. Nothing is
generated, so a verdict is always well-formed.

The reply is FastChat-parsable (the expected rating, or the most probable verdict, in ``[[…]]``) and
carries the whole distribution on a last line as JSON, which the judge stage reads back
(:meth:`JudgeScore.from_reply`) to calibrate: a single rating against a content-free answer, a pairwise
verdict over both answer orders (benchmarks/judge/calibration.py).

The prompt is scored once with a KV cache and the endings are then run as one batch on top of it, so a
call costs one forward of the prompt plus one small batched forward.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import math
import threading
from dataclasses import dataclass
from pathlib import Path

from contracts.errors import UserError

log = logging.getLogger(__name__)

RATING_LABELS = tuple(str(k) for k in range(1, 11))
VERDICT_LABELS = ("A", "B", "C")
PREFIX = {"single": "Rating: [[", "pairwise": "Verdict: [["}
SUFFIX = "]]"
# What the FastChat judge prompts ask the judge to output.
MARKERS = {"single": "[[rating]]", "pairwise": "[[A]]"}
# The reply's last line: the distribution as JSON (no "[[" in it, so FastChat's regexes never see it).
PROBS_TAG = "Local judge log-probabilities: "
# Part of the reply cache's key: bump when what a reply holds changes, so older replies are not reused.
REPLY_VERSION = "local-logprobs-v2"


@dataclass(frozen=True)
class JudgeScore:
    """The judge's distribution over the allowed verdicts for one prompt."""

    kind: str  # "single" | "pairwise"
    labels: tuple[str, ...]
    logprobs: tuple[float, ...]  # log-probabilities normalised over ``labels`` (exact even where exp underflows)
    truncated: bool = False

    @property
    def probs(self) -> tuple[float, ...]:
        return tuple(math.exp(x) for x in self.logprobs)

    @property
    def expected_rating(self) -> float:
        if self.kind != "single":
            raise ValueError("expected_rating is defined for single grading only")
        return expected_rating(self.probs)

    @property
    def verdict(self) -> str:
        return self.labels[max(range(len(self.logprobs)), key=self.logprobs.__getitem__)]

    def text(self) -> str:
        """The reply: the verdict first in FastChat's format, the distribution readable, then as JSON."""
        dist = ", ".join(f"{k}: {p:.3f}" for k, p in zip(self.labels, self.probs))
        note = " (prompt truncated to fit the judge's context)" if self.truncated else ""
        if self.kind == "single":
            head = (f"Rating: [[{self.expected_rating:.2f}]]\n\nLocal judge, expected rating over 1-10{note}. "
                    f"Probabilities: {dist}")
        else:
            head = f"[[{self.verdict}]]\n\nLocal judge, verdict probabilities (C = tie){note}: {dist}"
        data = {"kind": self.kind, "labels": list(self.labels), "logprobs": list(self.logprobs),
                "truncated": self.truncated}
        return f"{head}\n{PROBS_TAG}{json.dumps(data)}"

    @classmethod
    def from_reply(cls, text: str) -> "JudgeScore":
        """The distribution that :meth:`text` wrote into a reply; ValueError if the reply has none (it was
        not written by this version of the local judge)."""
        line = next((l for l in text.splitlines() if l.startswith(PROBS_TAG)), None)
        if line is None:
            raise ValueError(f"not a reply of the local judge ({REPLY_VERSION}): no line starting with "
                             f"{PROBS_TAG.strip()!r}")
        d = json.loads(line[len(PROBS_TAG):])
        return cls(d["kind"], tuple(d["labels"]), tuple(d["logprobs"]), bool(d["truncated"]))


def expected_rating(probs) -> float:
    """Σ k·p(k) over the ratings 1..10."""
    return sum(k * p for k, p in zip(range(1, 11), probs))


def detect_kind(messages: list[dict[str, str]]) -> str:
    """'single' if the prompt asks for "[[rating]]", 'pairwise' if it asks for "[[A]]"; the instruction
    comes before the answers, so if an answer happens to contain the other marker the first one wins."""
    text = "\n".join(m.get("content", "") for m in messages)
    found = {kind: text.find(marker) for kind, marker in MARKERS.items() if marker in text}
    if not found:
        raise ValueError(
            'local judge: the prompt asks for neither "[[rating]]" (single grading) nor "[[A]]"/"[[B]]"/"[[C]]" '
            "(pairwise); it only scores FastChat-style judge prompts"
        )
    return min(found, key=found.get)


def local_precision(dtype: str = "auto", device=None) -> str:
    """The dtype a local judge runs in ("auto": bfloat16 on a bf16 GPU, else float32)."""
    from trainer.modeling import resolve_dtype

    return str(resolve_dtype(dtype, device)).removeprefix("torch.")


def reply_version(precision: str) -> str:
    """The version of a local judge's replies in ``precision``: part of the reply cache's keys, so replies of
    another dtype (another machine) are never reused."""
    return REPLY_VERSION if precision == "float32" else f"{REPLY_VERSION}+{precision}"


class LocalJudge:
    """A ``ChatBackend`` scoring with a local causal LM (see the module docstring).

    Deterministic: ``temperature`` and ``max_tokens`` are ignored, since nothing is sampled or generated.
    ``reply_version`` and ``tie_band`` tell the judge stage how to turn replies into records
    (benchmarks/judge/calibration.py).
    Thread- and asyncio-safe: the forward passes run in a worker thread under a lock. A prompt longer
    than the model's context is cut from the left of the last user message, with a logged warning
    counted in ``truncations``.
    """

    def __init__(self, model_path: str | Path, *, device=None, dtype="auto", name: str | None = None,
                 max_length: int | None = None, tie_band: float = 0.0):
        from trainer.modeling import load_causal_lm

        from contracts.ids import judge_id

        self.model_path = Path(model_path)
        self.precision = local_precision(dtype, device)
        self.model = name or judge_id("local", self.model_path, self.precision)
        self._lm, self._tok = load_causal_lm(model_path, dtype=self.precision, device=device)
        if not self._tok.chat_template:
            raise UserError(f"{model_path}: the local judge needs a tokenizer with a chat template")
        limits = [getattr(self._lm.config, "max_position_embeddings", None), max_length]
        self.max_length = min(n for n in limits if n) if any(limits) else 2048
        self._cands = {kind: self._candidate_ids(kind) for kind in PREFIX}
        # the judge stage calibrates replies of this version; the dtype is part of it (and of the cache keys)
        self.reply_version = reply_version(self.precision)
        self.tie_band = tie_band  # pairwise: an extra tie band on P(model_1 better) (calibration.verdict)
        self._lock = threading.Lock()
        self.truncations = 0
        self._keeps_logits = "logits_to_keep" in inspect.signature(self._lm.forward).parameters

    def _candidate_ids(self, kind: str) -> list[list[int]]:
        # Tokenize each ending after its prefix, so the ids are the ones the model would see in context.
        labels = RATING_LABELS if kind == "single" else VERDICT_LABELS
        base = self._tok(PREFIX[kind], add_special_tokens=False).input_ids
        out = []
        for label in labels:
            joint = self._tok(PREFIX[kind] + label + SUFFIX, add_special_tokens=False).input_ids
            if joint[: len(base)] != base or len(joint) == len(base):
                raise UserError(f"{self.model_path}: tokenizer merges {PREFIX[kind]!r} with {label + SUFFIX!r}")
            out.append(joint[len(base):])
        return out

    def prompt_ids(self, messages: list[dict[str, str]], kind: str) -> tuple[list[int], bool]:
        """Token ids of the rendered chat plus the verdict prefix, cut to fit; and whether it was cut."""
        room = self.max_length - max(len(c) for c in self._cands[kind])
        ids = self._encode(messages, kind)
        if len(ids) <= room:
            return ids, False
        users = [i for i, m in enumerate(messages) if m.get("role") == "user"]
        if not users:
            raise UserError(f"local judge: prompt of {len(ids)} tokens exceeds {room} and has no user message to cut")
        i = users[-1]
        content = self._tok(messages[i]["content"], add_special_tokens=False).input_ids
        drop = len(ids) - room
        while True:
            if drop >= len(content):
                raise UserError(f"local judge: prompt exceeds the context ({self.max_length} tokens) "
                                 "even with the user message removed")
            cut = [*messages[:i], {**messages[i], "content": self._tok.decode(content[drop:])}, *messages[i + 1:]]
            ids = self._encode(cut, kind)
            if len(ids) <= room:
                break
            drop += len(ids) - room  # re-tokenizing the decoded text can shift a token or two
        self.truncations += 1
        log.warning("local judge: prompt cut by %d tokens from the left of the user message to fit %d "
                    "(%d prompts cut so far)", drop, self.max_length, self.truncations)
        return ids, True

    def _encode(self, messages, kind: str) -> list[int]:
        text = self._tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return self._tok(text + PREFIX[kind], add_special_tokens=False).input_ids

    def score(self, messages: list[dict[str, str]]) -> JudgeScore:
        """Distribution over the verdicts for one judge prompt (synchronous, thread-safe)."""
        kind = detect_kind(messages)
        with self._lock:
            ids, cut = self.prompt_ids(messages, kind)
            logps = self._candidate_logprobs(ids, self._cands[kind])
        import torch

        norm = torch.log_softmax(torch.tensor(logps, dtype=torch.float64), 0).tolist()
        labels = RATING_LABELS if kind == "single" else VERDICT_LABELS
        return JudgeScore(kind, labels, tuple(norm), cut)

    def _candidate_logprobs(self, ids: list[int], cands: list[list[int]]) -> list[float]:
        """log p(cand | ids) for each candidate: prompt once with a KV cache, then all candidates in one batch."""
        import torch

        dev = self._lm.device
        with torch.inference_mode():
            # logits of the last position only: the vocabulary projection of every prompt token is wasted work
            keep = {"logits_to_keep": 1} if self._keeps_logits else {}
            out = self._lm(input_ids=torch.tensor([ids], device=dev), use_cache=True, **keep)
            first = torch.log_softmax(out.logits[0, -1].float(), -1)
            logps = [first[c[0]].item() for c in cands]
            width = max(len(c) for c in cands) - 1
            if width == 0:
                return logps
            n, plen = len(cands), len(ids)
            cache = out.past_key_values
            cache.batch_repeat_interleave(n)
            pad = self._tok.pad_token_id or 0
            x = torch.full((n, width), pad, dtype=torch.long, device=dev)
            mask = torch.ones((n, plen + width), dtype=torch.long, device=dev)
            for i, c in enumerate(cands):  # feed every token but the last; right padding is masked
                x[i, : len(c) - 1] = torch.tensor(c[:-1])
                mask[i, plen + len(c) - 1:] = 0
            pos = torch.arange(plen, plen + width, device=dev).expand(n, width)
            lp = torch.log_softmax(
                self._lm(input_ids=x, attention_mask=mask, position_ids=pos, past_key_values=cache).logits.float(), -1
            )
            for i, c in enumerate(cands):
                logps[i] += sum(lp[i, j - 1, c[j]].item() for j in range(1, len(c)))
        return logps

    async def chat(self, messages: list[dict[str, str]], *, temperature: float = 0.0, max_tokens: int = 0) -> str:
        """The judge's reply text for a FastChat judge prompt (``temperature``/``max_tokens`` ignored)."""
        score = await asyncio.to_thread(self.score, messages)
        return score.text()
