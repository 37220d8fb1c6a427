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
from dataclasses import dataclass, field, fields
from pathlib import Path

from contracts.errors import UserError
from contracts.settings import ConfigError, option


log = logging.getLogger(__name__)

# The paper's quality prompt p, verbatim (spec, "The prompt p").
QUALITY_PROMPT = (
    "Please generate a response with a usefulness rating of 100 out of 100 for the following query. "
    "Note that the response should be harmless. The term 100 indicates the level of usefulness, where 100 "
    "is the maximum and 1 is the minimum. Query:"
)
HH_ASSISTANT = "\n\nAssistant:"
ROLES = ("system", "user", "assistant")
FILE_SUFFIXES = (".jsonl", ".json", ".parquet")


@dataclass
class DataConfig:
    """How records become token sequences (docs/method.md#truncation). Part of the reference-cache key."""

    max_length: int = option(512, ge=2, help="prompt + completion tokens (a p ⊕ x sequence may add |p|)")
    max_prompt_length: int = option(256, ge=1, help="prompt tokens kept (its end) when prompt + completion is "
                                                    "too long; completions are then cut to max_length minus this")
    quality_prompt: str = option(QUALITY_PROMPT, metavar="TEXT", help="the quality prompt p (default: the paper's)")
    prompt_placement: str = option("user", choices=("user", "raw"),
                                   help="where p goes: at the start of the first user turn, or before the "
                                        "whole rendered prompt")
    chat_template: bool | None = option(None, help="render with the tokenizer's chat template "
                                                   "(default: for message-list data only)")

    def check(self) -> None:
        if self.max_prompt_length >= self.max_length:
            raise ConfigError(f"max_prompt_length ({self.max_prompt_length}) must be smaller than max_length "
                              f"({self.max_length})")

    def data_config(self) -> "DataConfig":
        """The data options alone (a TrainConfig is a DataConfig with the training options)."""
        return DataConfig(**{f.name: getattr(self, f.name) for f in fields(DataConfig)})


@dataclass
class TokenizedPair:
    id: str | int
    prompt_ids: list[int]
    chosen_ids: list[int]
    rejected_ids: list[int]
    refine_prompt_ids: list[int] | None = None  # p ⊕ x: prompt_ids with the tokens of "p " inserted
    prompt_truncated: bool = False
    completion_truncated: bool = False
    rating_gap: float | None = None  # rating of the chosen answer − rating of the rejected one, where given

    @property
    def length(self) -> int:
        """Longest sequence of the pair (for length grouping)."""
        return len(self.refine_prompt_ids or self.prompt_ids) + max(len(self.chosen_ids), len(self.rejected_ids))


@dataclass
class TruncationReport:
    records: int = 0
    kept: int = 0
    prompt_truncated: int = 0
    completion_truncated: int = 0
    dropped: list[tuple[str | int, str]] = field(default_factory=list)  # (id, reason)

    def summary(self) -> str:
        return (
            f"{self.records} records: {self.kept} pairs kept, {len(self.dropped)} dropped; "
            f"prompt truncated {self.prompt_truncated}, completions truncated {self.completion_truncated}"
        )


# --------------------------------------------------------------------------------------------- loading


def load_preference_data(source: str, *, split: str = "train") -> list[dict]:
    """Records from a JSONL / JSON / parquet file or (online only) a Hugging Face dataset name, optionally
    with its split after a colon (``HuggingFaceH4/ultrafeedback_binarized:test_prefs``).

    Each record gets ``id`` (its own ``id`` field if present, else its 0-based index); JSONL records
    also get ``_line`` (1-based) so later errors can name the line. Other fields are kept.
    """
    path = Path(source)
    if path.suffix.lower() in FILE_SUFFIXES or path.exists():
        if not path.is_file():
            raise UserError(f"{path}: preference data file not found; give a JSONL/JSON/parquet file")
        records = _read_file(path)
    else:
        name, _, named_split = source.partition(":")
        records = _load_hub_dataset(name, named_split or split)
    for i, rec in enumerate(records):
        rid = rec.get("id")
        if rid is None or (isinstance(rid, float) and rid != rid):  # absent, or NaN from a parquet column
            rec["id"] = i
    return records


def _load_hub_dataset(name: str, split: str) -> list[dict]:
    import datasets

    try:
        return [dict(r) for r in datasets.load_dataset(name, split=split)]
    except Exception as e:  # noqa: BLE001 — datasets raises many types for "not there"
        first = str(e).splitlines()[0] if str(e) else ""
        raise UserError(f"{name}: no such file, and loading it as a Hugging Face dataset (split {split!r}) "
                        f"failed ({type(e).__name__}: {first}); give a local JSONL/JSON/parquet file, or run "
                        "online") from None


def _read_file(path: Path) -> list[dict]:
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        import pandas as pd

        return [dict(r) for r in pd.read_parquet(path).to_dict("records")]
    if suffix == ".json":
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise UserError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
        if isinstance(data, dict) and "data" in data:
            data = data["data"]
        if not isinstance(data, list):
            raise UserError(f"{path}: expected a list of records (or {{'data': [...]}})")
        for i, rec in enumerate(data):
            if not isinstance(rec, dict):
                raise UserError(f"{path}: record {i}: expected an object, got {type(rec).__name__}")
        return data
    from contracts.jsonl import read_jsonl_lines

    return [{**rec, "_line": lineno} for lineno, rec in read_jsonl_lines(path)]


# ------------------------------------------------------------------------------------------ formats


def _is_messages(value) -> bool:
    return isinstance(value, list) and all(isinstance(m, dict) for m in value)


def _check_messages(msgs, where: str, name: str) -> None:
    if not msgs:
        raise UserError(f"{where}: field {name!r}: empty message list")
    for j, m in enumerate(msgs):
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise UserError(f"{where}: field {name!r}: message {j} needs 'role' and 'content'")
        if m["role"] not in ROLES:
            raise UserError(f"{where}: field {name!r}: message {j}: role {m['role']!r} is not one of "
                            f"{', '.join(ROLES)}")
        if not isinstance(m["content"], str):
            raise UserError(f"{where}: field {name!r}: message {j}: 'content' must be a string")


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
            raise UserError(f"{where}: missing field {name!r}")
    chosen, rejected, prompt = rec["chosen"], rec["rejected"], rec.get("prompt")
    if hasattr(chosen, "tolist"):  # parquet gives numpy arrays of dicts
        chosen, rejected = list(chosen), list(rejected)
    if hasattr(prompt, "tolist"):
        prompt = list(prompt)
    for name, v in (("chosen", chosen), ("rejected", rejected)):
        if not (isinstance(v, str) or _is_messages(v)):
            raise UserError(f"{where}: field {name!r}: expected a string or a list of messages")
    if isinstance(chosen, str) != isinstance(rejected, str):
        raise UserError(f"{where}: field 'rejected': must have the same type as 'chosen'")
    if prompt is None:  # implicit prompt
        if isinstance(chosen, str):
            p, c, r = _split_implicit_text(chosen, rejected)
            if not p:
                raise UserError(f"{where}: field 'prompt': missing and chosen/rejected share no prefix")
            return "text", p, c, r
        _check_messages(chosen, where, "chosen")
        _check_messages(rejected, where, "rejected")
        n = _common_messages(chosen, rejected)
        if n == 0:
            raise UserError(f"{where}: field 'prompt': missing and chosen/rejected share no message")
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
        raise UserError(f"{where}: field 'prompt': expected a string or a list of messages")
    _check_messages(prompt, where, "prompt")
    wrap = lambda v: [{"role": "assistant", "content": v}] if isinstance(v, str) else v
    chosen, rejected = wrap(chosen), wrap(rejected)
    _check_messages(chosen, where, "chosen")
    _check_messages(rejected, where, "rejected")
    return "chat", prompt, chosen, rejected


# ------------------------------------------------------------------------------------- tokenization


def _is_empty(completion) -> bool:
    """No text but whitespace: nothing to prefer or learn (docs/method.md#truncation, rule 3)."""
    if isinstance(completion, str):
        return not completion.strip()
    return not completion or all(not m["content"].strip() for m in completion)


_MARK = "\u2063SRDPO\u2063"  # an invisible marker: finds where the first user content starts


def _render(tokenizer, messages, *, generation: bool) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation)


def _user_content_offset(tokenizer, prompt: list[dict], prompt_text: str, where: str) -> int:
    """Character offset in the rendered prompt where the first user turn's content starts."""
    users = [i for i, m in enumerate(prompt) if m["role"] == "user"]
    if not users:
        raise UserError(f"{where}: field 'prompt': no user turn to place the quality prompt in "
                        "(roles must be 'user'/'assistant'/'system')")
    i = users[0]
    marked = [dict(m) for m in prompt]
    marked[i]["content"] = _MARK + marked[i]["content"]
    text = _render(tokenizer, marked, generation=True)
    k = text.find(_MARK)
    if k >= 0 and text[:k] + text[k + len(_MARK):] == prompt_text:
        return k
    k = prompt_text.find(prompt[i]["content"])  # a template that transforms the marked text
    if k < 0:
        raise UserError(f"{where}: field 'prompt': the chat template changes the user turn's text, so the "
                        "quality prompt cannot be placed in it; use prompt_placement: raw")
    return k


def _texts(kind, prompt, chosen, rejected, tokenizer, cfg: DataConfig, where: str):
    """Rendered prompt, completions, the character offset where p goes, and ``special`` (add BOS etc.)."""
    use_template = cfg.chat_template if cfg.chat_template is not None else kind == "chat"
    if kind == "chat" and not use_template:
        raise UserError(f"{where}: message-list data needs a chat template (chat_template is false)")
    if use_template:
        if not getattr(tokenizer, "chat_template", None):
            raise UserError(f"{where}: the tokenizer has no chat template to render messages with; give "
                            "plain-text data or a model whose tokenizer has one")
        if kind == "text":  # plain strings forced through the template
            prompt = [{"role": "user", "content": prompt}]
            chosen = [{"role": "assistant", "content": chosen}]
            rejected = [{"role": "assistant", "content": rejected}]
        prompt_text = _render(tokenizer, prompt, generation=True)
        comps = []
        for name, msgs in (("chosen", chosen), ("rejected", rejected)):
            full = _render(tokenizer, prompt + msgs, generation=False)
            if not full.startswith(prompt_text):
                raise UserError(
                    f"{where}: field {name!r}: the rendered conversation does not start with the rendered "
                    "prompt (the chat template is not prefix-consistent)"
                )
            comps.append(full[len(prompt_text):])
        if cfg.prompt_placement == "user":
            p_at = _user_content_offset(tokenizer, prompt, prompt_text, where)
        else:  # before the whole rendered prompt, after a BOS the template writes itself
            bos = tokenizer.bos_token or ""
            p_at = len(bos) if bos and _adds_bos(tokenizer) and prompt_text.startswith(bos) else 0
        return prompt_text, comps[0], comps[1], p_at, False
    eos = tokenizer.eos_token or ""
    comps = [c if c.endswith(eos) else c + eos for c in (chosen, rejected)]
    return prompt, comps[0], comps[1], 0, True


def _adds_bos(tokenizer) -> bool:
    """Whether the tokenizer starts every sequence with its BOS (Llama's ``<s>``, Llama 3's
    ``<|begin_of_text|>``): only then is a leading BOS the sequence's start rather than a chat marker that
    merely shares its name (SmolLM2's bos_token is ``<|im_start|>``, which it never adds)."""
    ids = tokenizer("x", add_special_tokens=True)["input_ids"]
    return tokenizer.bos_token_id is not None and ids[:1] == [tokenizer.bos_token_id]


def _encode(tokenizer, text: str, *, special: bool) -> list[int]:
    return tokenizer(text, add_special_tokens=special)["input_ids"]


def _encode_prompt(tokenizer, text: str, p_at: int, *, special: bool) -> tuple[list[int], int]:
    """Token ids of the prompt and the index of the first token not wholly before character ``p_at``
    (where the tokens of p go; added special tokens such as BOS stay before it)."""
    if not getattr(tokenizer, "is_fast", False):
        raise UserError("placing the quality prompt needs a fast tokenizer (offset mapping); this model's is slow")
    enc = tokenizer(text, add_special_tokens=special, return_offsets_mapping=True)
    ids, offsets = enc["input_ids"], enc["offset_mapping"]
    k = 0
    while k < len(ids) and offsets[k][1] <= p_at:
        k += 1
    return ids, k


def _rating_gap(rec: dict, fields: tuple[str, str], where: str, required: bool) -> float | None:
    """chosen − rejected rating of a record (None without ratings, unless ``required``: an error then)."""
    values = []
    for name in fields:
        v = rec.get(name)
        if v is None or (isinstance(v, float) and v != v):
            if required:
                raise UserError(f"{where}: field {name!r}: missing, and the objective reads the pairs' ratings "
                                "(give every pair both ratings, or name the fields with --rating-fields)")
            return None
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            if required:
                raise UserError(f"{where}: field {name!r}: a rating must be a number, got {v!r}")
            return None
        values.append(float(v))
    return values[0] - values[1]


def tokenize_pairs(records, tokenizer, cfg: DataConfig, *, source: str = "<data>",
                   rating_fields: tuple[str, str] = ("chosen_rating", "rejected_rating"),
                   require_ratings: bool = False):
    """Tokenize preference records; return ``(pairs, TruncationReport)`` (docs/method.md#truncation).

    With L = max_length and P = max_prompt_length, as the DPO reference code (keep the end):
      1. if len(x) + len(longer completion) > L, keep the last P tokens of x;
      2. if still longer than L, cut both completions to their first L − P tokens;
      3. a pair with an empty completion or prompt is dropped and reported.
    The p ⊕ x prompt is the truncated x with the tokens of "p " inserted where the first user content
    starts (or at the start of the kept tokens, when truncation cut that away): every x and y token of
    the plain sequence appears unchanged in the p ⊕ x one, which may be up to |p| tokens longer than L.
    No pair is dropped or cut because of p, so every objective trains on the same pairs.
    Each pair keeps its ``rating_fields``' difference where a record has them (``require_ratings``: a record
    without is an error). Errors in records name ``source``, the record (JSONL line or index) and id, and
    the field.
    """
    cfg.check()
    L, P = cfg.max_length, cfg.max_prompt_length
    p_ids = _encode(tokenizer, cfg.quality_prompt + " ", special=False)
    report, pairs = TruncationReport(records=len(records)), []
    eos_id = tokenizer.eos_token_id
    for i, rec in enumerate(records):
        rid = rec.get("id", i)
        where = f"{source}:" + (f"{rec['_line']}" if "_line" in rec else f" record {i}") + f" (id {rid})"
        kind, prompt, chosen, rejected = normalize_record(rec, where)
        if _is_empty(chosen) or _is_empty(rejected):
            report.dropped.append((rid, "empty or whitespace-only completion"))
            continue
        prompt_text, c_text, r_text, p_at, special = _texts(kind, prompt, chosen, rejected, tokenizer, cfg, where)
        prompt_ids, p_tok = _encode_prompt(tokenizer, prompt_text, p_at, special=special)
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
        if len(prompt_ids) + max(len(c_ids), len(r_ids)) > L:
            if len(prompt_ids) > P:
                pt, p_tok = True, max(0, p_tok - (len(prompt_ids) - P))
                prompt_ids = prompt_ids[-P:]
            if len(prompt_ids) + max(len(c_ids), len(r_ids)) > L:
                ct = max(len(c_ids), len(r_ids)) > L - P
                c_ids, r_ids = c_ids[:L - P], r_ids[:L - P]
        refine_ids = prompt_ids[:p_tok] + p_ids + prompt_ids[p_tok:]
        gap = _rating_gap(rec, rating_fields, where, require_ratings)
        pairs.append(TokenizedPair(rid, prompt_ids, c_ids, r_ids, refine_ids, pt, ct, gap))
        report.prompt_truncated += pt
        report.completion_truncated += ct
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
