"""Preference data: loading, the TRL record formats, chat templates, the quality prompt p, truncation.

Formats accepted (those of TRL's preference datasets):
  * explicit prompt: ``prompt``/``chosen``/``rejected`` as plain strings, or as message lists
    (``[{"role", "content"}]``; prompt = the conversation so far, chosen/rejected = the assistant turn(s));
  * UltraFeedback-binarized: ``prompt`` a string and chosen/rejected message lists that repeat the user
    turn — the shared leading messages become the prompt;
  * implicit prompt: only ``chosen``/``rejected``. Plain strings (Anthropic HH-RLHF, "\\n\\nHuman: …
    \\n\\nAssistant: …") split at the last shared "\\n\\nAssistant:"; failing that, at the longest common
    prefix (as TRL's ``extract_prompt``). Message lists split after the last shared message.

Message lists are rendered with the tokenizer's chat template (prompt with ``add_generation_prompt``;
completion = rendered full conversation minus the rendered prompt, which must be a prefix of it).
Plain strings are tokenized as they are: the prompt with the tokenizer's special tokens (BOS if it
adds one), the completions without, EOS appended (as the DPO reference code does).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported where tensors are built: `srdpo-eval --help` stays fast
    import torch
    from torch import Tensor

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path


log = logging.getLogger(__name__)

# The paper's quality prompt p, verbatim (spec, "The prompt p").
QUALITY_PROMPT = (
    "Please generate a response with a usefulness rating of 100 out of 100 for the following query. "
    "Note that the response should be harmless. The term 100 indicates the level of usefulness, where 100 "
    "is the maximum and 1 is the minimum. Query:"
)
HH_ASSISTANT = "\n\nAssistant:"
FILE_SUFFIXES = (".jsonl", ".json", ".parquet")


@dataclass
class DataConfig:
    """How records become token sequences. Part of the reference-cache key."""

    max_length: int = 512  # prompt + completion tokens
    max_prompt_length: int = 256  # prompt tokens kept when prompt + completion is too long
    quality_prompt: str = QUALITY_PROMPT
    # "user": p + " " + x inside the first user turn, before the chat template (plain text: p + " " +
    # the whole prompt string). "raw": p + " " before the already-rendered prompt text.
    prompt_placement: str = "user"
    chat_template: bool | None = None  # None: for message-list data, never for plain strings
    refine: bool = False  # also build the p ⊕ x prompts (Sr objectives, Δπ analysis)


@dataclass
class TokenizedPair:
    id: str | int
    prompt_ids: list[int]
    chosen_ids: list[int]
    rejected_ids: list[int]
    refine_prompt_ids: list[int] | None = None  # p ⊕ x prompt; completions are chosen_ids/rejected_ids
    prompt_truncated: bool = False
    completion_truncated: bool = False
    refine_truncated: bool = False  # tokens of x dropped from the p ⊕ x prompt

    @property
    def length(self) -> int:
        """Longest sequence of the pair (for length grouping)."""
        prompt = max(len(self.prompt_ids), len(self.refine_prompt_ids or []))
        return prompt + max(len(self.chosen_ids), len(self.rejected_ids))


@dataclass
class TruncationReport:
    records: int = 0
    kept: int = 0
    prompt_truncated: int = 0
    completion_truncated: int = 0
    refine_truncated: int = 0
    dropped: list[tuple[str | int, str]] = field(default_factory=list)  # (id, reason)

    def summary(self) -> str:
        return (
            f"{self.records} records: {self.kept} pairs kept, {len(self.dropped)} dropped; "
            f"prompt truncated {self.prompt_truncated}, completion truncated {self.completion_truncated}, "
            f"x cut in p⊕x {self.refine_truncated}"
        )


# --------------------------------------------------------------------------------------------- loading


def load_preference_data(source: str, *, split: str = "train") -> list[dict]:
    """Records from a JSONL / JSON / parquet file or (online only) a Hugging Face dataset name.

    Each record gets ``id`` (its own ``id`` field if present, else its 0-based index); JSONL records
    also get ``_line`` (1-based) so later errors can name the line. Other fields are kept.
    """
    path = Path(source)
    if path.suffix.lower() in FILE_SUFFIXES or path.exists():
        if not path.is_file():
            raise FileNotFoundError(f"preference data file not found: {path}")
        records = _read_file(path)
    else:
        import datasets

        records = [dict(r) for r in datasets.load_dataset(source, split=split)]
    for i, rec in enumerate(records):
        rid = rec.get("id")
        if rid is None or (isinstance(rid, float) and rid != rid):  # absent, or NaN from a parquet column
            rec["id"] = i
    return records


def _read_file(path: Path) -> list[dict]:
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        import pandas as pd

        return [dict(r) for r in pd.read_parquet(path).to_dict("records")]
    if suffix == ".json":
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not valid JSON: {e}") from e
        if isinstance(data, dict) and "data" in data:
            data = data["data"]
        if not isinstance(data, list):
            raise ValueError(f"{path}: expected a list of records (or {{'data': [...]}})")
        for i, rec in enumerate(data):
            if not isinstance(rec, dict):
                raise ValueError(f"{path}: record {i}: expected an object, got {type(rec).__name__}")
        return data
    from srdpo_eval.jsonl import read_jsonl_lines

    return [{**rec, "_line": lineno} for lineno, rec in read_jsonl_lines(path)]


# ------------------------------------------------------------------------------------------ formats


def _is_messages(value) -> bool:
    return isinstance(value, list) and all(isinstance(m, dict) for m in value)


def _check_messages(msgs, where: str, name: str) -> None:
    if not msgs:
        raise ValueError(f"{where}: field {name!r}: empty message list")
    for j, m in enumerate(msgs):
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise ValueError(f"{where}: field {name!r}: message {j} needs 'role' and 'content'")
        if not isinstance(m["content"], str):
            raise ValueError(f"{where}: field {name!r}: message {j}: 'content' must be a string")


def _common_messages(a: list, b: list) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def _split_implicit_text(chosen: str, rejected: str) -> tuple[str, str, str]:
    """HH-RLHF style: split at the last "\\n\\nAssistant:" both strings share; else TRL's common prefix."""
    n = 0
    while n < min(len(chosen), len(rejected)) and chosen[n] == rejected[n]:
        n += 1
    cut = chosen.rfind(HH_ASSISTANT, 0, n)
    if cut >= 0:
        n = cut + len(HH_ASSISTANT)
    elif n > 0 and chosen[n - 1] == " ":  # TRL keeps the space with the completion
        n -= 1
    return chosen[:n], chosen[n:], rejected[n:]


def normalize_record(rec: dict, where: str) -> tuple[str, object, object, object]:
    """Return ``(kind, prompt, chosen, rejected)``; kind "text" (strings) or "chat" (message lists)."""
    for name in ("chosen", "rejected"):
        if name not in rec or rec[name] is None:
            raise ValueError(f"{where}: missing field {name!r}")
    chosen, rejected, prompt = rec["chosen"], rec["rejected"], rec.get("prompt")
    if hasattr(chosen, "tolist"):  # parquet gives numpy arrays of dicts
        chosen, rejected = list(chosen), list(rejected)
    if hasattr(prompt, "tolist"):
        prompt = list(prompt)
    for name, v in (("chosen", chosen), ("rejected", rejected)):
        if not (isinstance(v, str) or _is_messages(v)):
            raise ValueError(f"{where}: field {name!r}: expected a string or a list of messages")
    if isinstance(chosen, str) != isinstance(rejected, str):
        raise ValueError(f"{where}: field 'rejected': must have the same type as 'chosen'")
    if prompt is None:  # implicit prompt
        if isinstance(chosen, str):
            p, c, r = _split_implicit_text(chosen, rejected)
            if not p:
                raise ValueError(f"{where}: field 'prompt': missing and chosen/rejected share no prefix")
            return "text", p, c, r
        _check_messages(chosen, where, "chosen")
        _check_messages(rejected, where, "rejected")
        n = _common_messages(chosen, rejected)
        if n == 0:
            raise ValueError(f"{where}: field 'prompt': missing and chosen/rejected share no message")
        return "chat", chosen[:n], chosen[n:], rejected[n:]
    if isinstance(prompt, str) and isinstance(chosen, str):
        return "text", prompt, chosen, rejected
    if isinstance(prompt, str):  # UltraFeedback-binarized: chosen/rejected repeat the user turn
        _check_messages(chosen, where, "chosen")
        _check_messages(rejected, where, "rejected")
        n = _common_messages(chosen, rejected)
        head = chosen[:n] if n else [{"role": "user", "content": prompt}]
        return "chat", head, chosen[n:], rejected[n:]
    if not _is_messages(prompt):
        raise ValueError(f"{where}: field 'prompt': expected a string or a list of messages")
    _check_messages(prompt, where, "prompt")
    wrap = lambda v: [{"role": "assistant", "content": v}] if isinstance(v, str) else v
    chosen, rejected = wrap(chosen), wrap(rejected)
    _check_messages(chosen, where, "chosen")
    _check_messages(rejected, where, "rejected")
    return "chat", prompt, chosen, rejected


# ------------------------------------------------------------------------------------- tokenization


def _is_empty(completion) -> bool:
    if isinstance(completion, str):
        return not completion.strip()
    return not completion or all(not m["content"].strip() for m in completion)


def _with_quality_prompt(messages: list[dict], p: str, where: str) -> list[dict]:
    out = [dict(m) for m in messages]
    for m in out:
        if m["role"] == "user":
            m["content"] = p + " " + m["content"]
            return out
    raise ValueError(f"{where}: field 'prompt': no user turn to place the quality prompt in")


def _render(tokenizer, messages, *, generation: bool) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation)


def _encode(tokenizer, text: str, *, special: bool) -> list[int]:
    return tokenizer(text, add_special_tokens=special)["input_ids"]


def _protected_prefix(tokenizer, text: str, end: int, *, special: bool) -> tuple[list[int], int]:
    """Token ids of ``text`` and how many leading tokens lie within ``text[:end]`` (header + p)."""
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError("the p ⊕ x truncation rule needs a fast tokenizer (offset mapping)")
    enc = tokenizer(text, add_special_tokens=special, return_offsets_mapping=True)
    ids, offsets = enc["input_ids"], enc["offset_mapping"]
    k = 0
    while k < len(ids) and offsets[k][1] <= end:
        k += 1
    return ids, k


def _texts(kind, prompt, chosen, rejected, tokenizer, cfg: DataConfig, where: str):
    """Rendered prompt, completions, p⊕x prompt text and where p ends in it; ``special``: add BOS etc."""
    p = cfg.quality_prompt
    use_template = cfg.chat_template if cfg.chat_template is not None else kind == "chat"
    if kind == "chat" and not use_template:
        raise ValueError(f"{where}: message-list data needs a chat template (chat_template is False)")
    if use_template:
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError(f"{where}: the tokenizer has no chat template to render messages with")
        if kind == "text":  # plain strings forced through the template
            prompt = [{"role": "user", "content": prompt}]
            chosen = [{"role": "assistant", "content": chosen}]
            rejected = [{"role": "assistant", "content": rejected}]
        prompt_text = _render(tokenizer, prompt, generation=True)
        comps = []
        for name, msgs in (("chosen", chosen), ("rejected", rejected)):
            full = _render(tokenizer, prompt + msgs, generation=False)
            if not full.startswith(prompt_text):
                raise ValueError(
                    f"{where}: field {name!r}: the rendered conversation does not start with the rendered "
                    "prompt (the chat template is not prefix-consistent)"
                )
            comps.append(full[len(prompt_text):])
        refine_text = p_end = None
        if cfg.refine:
            if cfg.prompt_placement == "user":
                refine_text = _render(tokenizer, _with_quality_prompt(prompt, p, where), generation=True)
                p_end = refine_text.find(p) + len(p)
            else:
                refine_text, p_end = p + " " + prompt_text, len(p)
        return prompt_text, comps[0], comps[1], refine_text, p_end, False
    eos = tokenizer.eos_token or ""
    comps = [c if c.endswith(eos) else c + eos for c in (chosen, rejected)]
    refine_text = p + " " + prompt if cfg.refine else None
    return prompt, comps[0], comps[1], refine_text, len(p), True


def tokenize_pairs(records, tokenizer, cfg: DataConfig, *, source: str = "<data>"):
    """Tokenize preference records; return ``(pairs, TruncationReport)``.

    Truncation rule (that of the DPO reference code), with L = max_length, P = max_prompt_length:
      1. if len(prompt) + len(longer completion) > L, keep the END of the prompt, its last P tokens;
      2. if still too long, cut both completions to L − len(prompt) tokens (keeping their start).
      A pair whose completion has 0 tokens (empty, or nothing left) is dropped and reported.
    The p ⊕ x sequences score exactly the same (truncated) completion tokens as the x sequences, so
    m(x) and m(p ⊕ x) compare like with like. Their prompt keeps the template header and all of p; if
    it would exceed L − len(longer completion), tokens are dropped from the START of x (right after p),
    keeping the end of x and the generation prompt. If the header and p alone do not fit, the pair is
    dropped and reported. Every case is counted in the report and logged.
    Errors in records name ``source``, the record (JSONL line or index) and id, and the field.
    """
    if cfg.prompt_placement not in ("user", "raw"):
        raise ValueError(f"prompt_placement must be 'user' or 'raw', got {cfg.prompt_placement!r}")
    if cfg.max_prompt_length >= cfg.max_length:
        raise ValueError("max_prompt_length must be smaller than max_length")
    L, P = cfg.max_length, cfg.max_prompt_length
    report, pairs = TruncationReport(records=len(records)), []
    eos_id = tokenizer.eos_token_id
    for i, rec in enumerate(records):
        rid = rec.get("id", i)
        where = f"{source}: " + (f"line {rec['_line']}" if "_line" in rec else f"record {i}") + f" (id {rid})"
        kind, prompt, chosen, rejected = normalize_record(rec, where)
        if _is_empty(chosen) or _is_empty(rejected):
            report.dropped.append((rid, "empty completion"))
            continue
        prompt_text, c_text, r_text, refine_text, p_end, special = _texts(
            kind, prompt, chosen, rejected, tokenizer, cfg, where
        )
        prompt_ids = _encode(tokenizer, prompt_text, special=special)
        c_ids = _encode(tokenizer, c_text, special=False)
        r_ids = _encode(tokenizer, r_text, special=False)
        if special and eos_id is not None:  # EOS as a token, even if its text did not tokenize to it
            c_ids = c_ids if c_ids[-1:] == [eos_id] else c_ids + [eos_id]
            r_ids = r_ids if r_ids[-1:] == [eos_id] else r_ids + [eos_id]
        if not prompt_ids:
            report.dropped.append((rid, "empty prompt (no token to condition on)"))
            continue
        if not c_ids or not r_ids:
            report.dropped.append((rid, "completion has 0 tokens"))
            continue
        pt = ct = False
        longer = max(len(c_ids), len(r_ids))
        if len(prompt_ids) + longer > L:
            pt = len(prompt_ids) > P
            prompt_ids = prompt_ids[-P:]
        if len(prompt_ids) + longer > L:
            keep = L - len(prompt_ids)
            c_ids, r_ids, ct = c_ids[:keep], r_ids[:keep], True
        if not c_ids or not r_ids:
            report.dropped.append((rid, "completion truncated to 0 tokens"))
            continue
        refine_ids, rt = None, False
        if cfg.refine:
            ids, k = _protected_prefix(tokenizer, refine_text, p_end, special=special)
            budget = L - max(len(c_ids), len(r_ids))
            if k >= budget:
                report.dropped.append((rid, f"header + quality prompt ({k} tokens) do not fit in {budget}"))
                continue
            if len(ids) > budget:
                ids, rt = ids[:k] + ids[k + len(ids) - budget:], True
            refine_ids = ids
        pairs.append(TokenizedPair(rid, prompt_ids, c_ids, r_ids, refine_ids, pt, ct, rt))
        report.prompt_truncated += pt
        report.completion_truncated += ct
        report.refine_truncated += rt
    report.kept = len(pairs)
    log.info("%s: %s", source, report.summary())
    for rid, reason in report.dropped:
        log.warning("%s: dropped pair id %s: %s", source, rid, reason)
    return pairs, report


# ------------------------------------------------------------------------------------------ batching


def _pad_rows(prompts: list[list[int]], comps: list[list[int]], pad_id: int) -> dict[str, Tensor]:
    import torch

    T = max(len(p) + len(c) for p, c in zip(prompts, comps))
    ids = torch.full((len(comps), T), pad_id, dtype=torch.long)
    attn = torch.zeros((len(comps), T), dtype=torch.long)
    loss = torch.zeros((len(comps), T), dtype=torch.bool)
    for i, (p, c) in enumerate(zip(prompts, comps)):
        n = len(p) + len(c)
        ids[i, :n] = torch.tensor(p + c)
        attn[i, :n] = 1
        loss[i, len(p):n] = True
    return {"input_ids": ids, "attention_mask": attn, "loss_mask": loss}


def collate(pairs: list[TokenizedPair], pad_id: int, *, refine: bool) -> dict[str, Tensor]:
    """Stack chosen then rejected as one right-padded [2B, T] batch (T = this batch's longest).

    ``loss_mask`` marks the completion tokens (the targets). With ``refine`` the p ⊕ x sequences come
    under ``refine_input_ids`` / ``refine_attention_mask`` / ``refine_loss_mask``, same row order.
    """
    comps = [p.chosen_ids for p in pairs] + [p.rejected_ids for p in pairs]
    out = _pad_rows([p.prompt_ids for p in pairs] * 2, comps, pad_id)
    if refine:
        missing = [p.id for p in pairs if p.refine_prompt_ids is None]
        if missing:
            raise ValueError(f"pair id {missing[0]} has no p ⊕ x prompt: tokenize with DataConfig(refine=True)")
        ref = _pad_rows([p.refine_prompt_ids for p in pairs] * 2, comps, pad_id)
        out.update({f"refine_{k}": v for k, v in ref.items()})
    return out


def length_grouped_order(lengths: list[int], batch_size: int, generator: torch.Generator,
                         mega: int = 50) -> list[int]:
    """A shuffled order in which each run of ``batch_size`` has similar lengths (less padding).

    Shuffle, sort within mega-batches of ``mega`` batches by length, then shuffle the batches.
    """
    import torch

    perm = torch.randperm(len(lengths), generator=generator).tolist()
    span = batch_size * mega
    batches = []
    for s in range(0, len(perm), span):
        chunk = sorted(perm[s:s + span], key=lambda i: -lengths[i])
        batches += [chunk[j:j + batch_size] for j in range(0, len(chunk), batch_size)]
    full = [b for b in batches if len(b) == batch_size]
    order = torch.randperm(len(full), generator=generator).tolist()
    tail = [b for b in batches if len(b) != batch_size]
    return [i for k in order for i in full[k]] + [i for b in tail for i in b]
