"""Δπ, m(x) and the DPO reward margin of a checkpoint on preference pairs, through the trainer's code.

For every pair (x, y⁺, y⁻) — "chosen"/"rejected", or answers A/B of two models — with the policy π
(the checkpoint) and the frozen reference π_ref:
    margin   = m(x)    = [log π(y⁺|x) − log π_ref(y⁺|x)] − [log π(y⁻|x) − log π_ref(y⁻|x)]   (nats)
    margin_p = m(p⊕x), the same with the quality prompt p in front of x
    delta    = Δπ = β·m(p⊕x)        (trainer.losses.refinement)
    reward_margin = β·m(x)          (the DPO implicit reward margin)
Tokenization (truncation, chat template, placement of p) and log-probs are the trainer's own
(trainer.data.tokenize_pairs, trainer.scoring.pair_logps), so the values are those the trainer sees.

The table is appended chunk by chunk (flushed, fsynced); a rerun computes only the missing pair ids.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

COLUMNS = ["id", "model_id", "delta", "margin", "reward_margin", "margin_p", "chosen_tokens", "rejected_tokens",
           "length_diff", "chosen_rating", "rejected_rating", "rating_diff", "logp_chosen", "logp_rejected",
           "ref_logp_chosen", "ref_logp_rejected", "logp_p_chosen", "logp_p_rejected", "ref_logp_p_chosen",
           "ref_logp_p_rejected", "beta", "reduce", "prompt_truncated", "completion_truncated", "refine_truncated"]


@dataclass
class DeltaConfig:
    """How ``compute_delta`` runs; the data options (lengths, placement of p) are a trainer DataConfig."""

    beta: float = 0.1
    reduce: str = "sum"  # sequence log-prob as the trainer: "sum" (paper) or "mean" per token
    batch_size: int = 8
    chunk_size: int = 64  # pairs per appended chunk: the resume granularity
    rating_fields: tuple[str, str] = ("chosen_rating", "rejected_rating")
    dtype: str = "auto"  # auto: fp32 weights + bf16 autocast on a bf16 GPU (as the trainer); bf16 | fp16 | fp32
    device: str | None = None
    progress: bool = True


def _rating(rec: dict, name: str, where: str) -> float:
    v = rec.get(name)
    if v is None:
        return np.nan
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
        raise ValueError(f"{where}: field {name!r} must be a number, got {v!r}")
    return float(v)


def precision(dtype: str, device: str | None):
    """(weight dtype, autocast dtype) as the trainer computes log-probs: "auto" = fp32 weights with bf16
    autocast on a GPU that supports it (the trainer's mixed precision), fp32 on CPU; else as given."""
    import torch

    from trainer.modeling import default_device, resolve_dtype

    if dtype != "auto":
        return resolve_dtype(dtype, device), None
    dev = torch.device(device) if device is not None else default_device()
    amp = torch.bfloat16 if dev.type == "cuda" and torch.cuda.is_bf16_supported() else None
    return torch.float32, amp


def read_existing(path: Path) -> pd.DataFrame | None:
    """The table written so far (None if absent). A last line cut off by a killed writer is removed."""
    path = Path(path)
    if not path.is_file() or path.stat().st_size == 0:
        return None
    text = path.read_text()
    if not text.endswith("\n"):
        cut = text.rfind("\n") + 1
        with open(path, "r+") as f:
            f.truncate(len(text[:cut].encode()))
        if cut == 0:
            return None
    return pd.read_csv(path, dtype={"id": str})


def _append(path: Path, df: pd.DataFrame) -> None:
    new = not path.is_file() or path.stat().st_size == 0
    with open(path, "a", newline="") as f:
        df.to_csv(f, header=new, index=False)
        f.flush()
        os.fsync(f.fileno())


def delta_for_records(policy: str | Path, reference: str | Path, records: list[dict], output: str | Path, *,
                      model_id: str, cfg: DeltaConfig | None = None, data_cfg=None,
                      source: str = "<pairs>") -> pd.DataFrame:
    """Write (or complete) the Δπ table ``output`` for ``records`` and return it in record order.

    ``records`` are preference records as trainer.data.load_preference_data returns them (with ``id``);
    ``reference`` is required (Δπ and m(x) are log-ratios against it).
    Rows already in ``output`` (same model_id and β) are kept and not recomputed.
    """
    import torch
    from tqdm.auto import tqdm

    from trainer.data import DataConfig, tokenize_pairs
    from trainer.losses import margin, refinement
    from trainer.modeling import load_causal_lm, load_tokenizer
    from trainer.scoring import pair_logps

    cfg = cfg or DeltaConfig()
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    ids = [str(r["id"]) for r in records]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise ValueError(f"{source}: pair id {dup!r} occurs more than once; ids key the table")
    existing = read_existing(output)
    done: set[str] = set()
    if existing is not None:
        for col, want in (("model_id", model_id), ("beta", cfg.beta), ("reduce", cfg.reduce)):
            other = set(existing[col].dropna().unique()) - {want}
            if other:
                raise ValueError(f"{output}: holds rows with {col} {sorted(map(str, other))[0]!r}, not "
                                 f"{want!r}; write to another --output")
        done = set(existing["id"])
    todo_records = [r for r in records if str(r["id"]) not in done]
    if todo_records:
        dcfg = replace(data_cfg or DataConfig(), refine=True)
        tokenizer = load_tokenizer(policy)
        pairs, report = tokenize_pairs(todo_records, tokenizer, dcfg, source=source)
        if report.dropped:
            print(f"{source}: {report.summary()}; dropped: "
                  + ", ".join(f"{i} ({why})" for i, why in report.dropped[:5]))
        by_id = {str(r["id"]): r for r in todo_records}
        where = {str(r["id"]): f"{source}: " + (f"line {r['_line']}" if "_line" in r else f"id {r['id']}")
                 for r in todo_records}
        ratings = {i: (_rating(by_id[i], cfg.rating_fields[0], where[i]), _rating(by_id[i], cfg.rating_fields[1], where[i]))
                   for i in by_id}
        weights, amp = precision(cfg.dtype, cfg.device)
        pol, _ = load_causal_lm(policy, dtype=weights, device=cfg.device, with_tokenizer=False)
        ref, _ = load_causal_lm(reference, dtype=weights, device=cfg.device, with_tokenizer=False)
        pad = tokenizer.pad_token_id
        kw = dict(pad_id=pad, batch_size=cfg.batch_size, reduce=cfg.reduce, refine=True, progress=False,
                  autocast_dtype=amp)
        bar = tqdm(total=len(pairs), desc=f"Δπ {model_id}", unit="pair", disable=not cfg.progress)
        for s in range(0, len(pairs), cfg.chunk_size):
            chunk = pairs[s:s + cfg.chunk_size]
            lp, lr = pair_logps(pol, chunk, **kw), pair_logps(ref, chunk, **kw)
            m = margin(lp.chosen, lp.rejected, lr.chosen, lr.rejected)
            m_p = margin(lp.refine_chosen, lp.refine_rejected, lr.refine_chosen, lr.refine_rejected)
            d = refinement(lp.refine_chosen, lp.refine_rejected, lr.refine_chosen, lr.refine_rejected, cfg.beta)
            rc = np.array([ratings[str(p.id)][0] for p in chunk])
            rr = np.array([ratings[str(p.id)][1] for p in chunk])
            n_c, n_r = lp.n_chosen.numpy(), lp.n_rejected.numpy()
            rows = pd.DataFrame({
                "id": [str(p.id) for p in chunk], "model_id": model_id, "delta": d.numpy(), "margin": m.numpy(),
                "reward_margin": cfg.beta * m.numpy(), "margin_p": m_p.numpy(), "chosen_tokens": n_c,
                "rejected_tokens": n_r, "length_diff": n_c - n_r, "chosen_rating": rc, "rejected_rating": rr,
                "rating_diff": rc - rr, "logp_chosen": lp.chosen.numpy(), "logp_rejected": lp.rejected.numpy(),
                "ref_logp_chosen": lr.chosen.numpy(), "ref_logp_rejected": lr.rejected.numpy(),
                "logp_p_chosen": lp.refine_chosen.numpy(), "logp_p_rejected": lp.refine_rejected.numpy(),
                "ref_logp_p_chosen": lr.refine_chosen.numpy(), "ref_logp_p_rejected": lr.refine_rejected.numpy(),
                "beta": cfg.beta, "reduce": cfg.reduce, "prompt_truncated": [p.prompt_truncated for p in chunk],
                "completion_truncated": [p.completion_truncated for p in chunk],
                "refine_truncated": [p.refine_truncated for p in chunk]}, columns=COLUMNS)
            _append(output, rows)
            bar.update(len(chunk))
        bar.close()
        del pol, ref
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    table = read_existing(output)
    if table is None:
        return pd.DataFrame(columns=COLUMNS)
    order = {i: k for k, i in enumerate(ids)}
    table = table[table["id"].isin(order)]
    return table.sort_values("id", key=lambda s: s.map(order)).reset_index(drop=True)


def compute_delta(checkpoint: str | Path, pairs: str | Path, output: str | Path, *, ref_model: str | Path | None = None,
                  beta: float | None = None, model_id: str | None = None, batch_size: int = 8, chunk_size: int = 64,
                  max_pairs: int | None = None, seed: int = 0, rating_fields=("chosen_rating", "rejected_rating"),
                  max_length: int | None = None, max_prompt_length: int | None = None, dtype: str = "auto",
                  device: str | None = None, progress: bool = True) -> pd.DataFrame:
    """The Δπ table of ``checkpoint`` on the pairs file/dataset ``pairs``, written to ``output``.

    Defaults come from the checkpoint as the trainer recorded it (srdpo_info.json: ref_model, β,
    reduce; the run's config.yaml: data options), explicit arguments win. ``max_pairs`` takes a seeded
    random sample (the paper: 200 random pairs). See :func:`delta_for_records`.
    """
    from trainer.data import DataConfig, load_preference_data

    defaults = checkpoint_defaults(checkpoint)
    ref = ref_model or defaults["ref_model"]
    if not ref:
        raise ValueError(f"{checkpoint}: srdpo_info.json names no ref_model; pass the reference model")
    data_cfg = defaults["data_cfg"] or DataConfig()
    if max_length is not None:
        data_cfg = replace(data_cfg, max_length=max_length)
    if max_prompt_length is not None:
        data_cfg = replace(data_cfg, max_prompt_length=max_prompt_length)
    cfg = DeltaConfig(beta=beta if beta is not None else (defaults["beta"] or 0.1),
                      reduce=defaults["reduce"] or "sum", batch_size=batch_size, chunk_size=chunk_size,
                      rating_fields=tuple(rating_fields), dtype=dtype, device=device, progress=progress)
    records = sample_records(load_preference_data(str(pairs)), max_pairs, seed)
    return delta_for_records(checkpoint, ref, records, output, model_id=model_id or default_model_id(checkpoint),
                             cfg=cfg, data_cfg=data_cfg, source=str(pairs))


def sample_records(records: list[dict], limit: int | None, seed: int = 0) -> list[dict]:
    """A reproducible random sample of ``limit`` records in their original order (all if None)."""
    if limit is None or limit >= len(records):
        return records
    keep = np.sort(np.random.default_rng(seed).choice(len(records), size=limit, replace=False))
    return [records[i] for i in keep]


def checkpoint_defaults(checkpoint: str | Path) -> dict:
    """What the trainer recorded about a checkpoint: srdpo_info.json, and the run's data options.

    Returns keys ref_model, beta, reduce (None when unknown) and data_cfg (the DataConfig of the run's
    config.yaml beside the checkpoint, or None).
    """
    ckpt = Path(checkpoint)
    info_path = ckpt / "srdpo_info.json"
    info = json.loads(info_path.read_text()) if info_path.is_file() else {}
    out = {k: info.get(k) for k in ("ref_model", "beta", "reduce")}
    out["data_cfg"] = None
    cfg_path = ckpt.parent / "config.yaml"
    if cfg_path.is_file():
        from trainer.config import load_yaml_config

        out["data_cfg"] = load_yaml_config(cfg_path).data_cfg
    return out


def default_model_id(checkpoint: str | Path) -> str:
    """train/sr-dpo/final → 'sr-dpo'; train/sr-dpo/checkpoint-40 → 'sr-dpo-checkpoint-40'; else the dir name."""
    p = Path(checkpoint).resolve()
    if p.name == "final":
        return p.parent.name
    if p.name.startswith("checkpoint-"):
        return f"{p.parent.name}-{p.name}"
    return p.name


def delta_command(args) -> int:
    """`srdpo-eval delta`: resolve the output path, run :func:`compute_delta`, print a summary."""
    from srdpo_eval.run_dir import RunDir, safe_name

    model_id = args.model_id or default_model_id(args.checkpoint)
    if args.output:
        output = Path(args.output)
    elif args.run_dir:
        output = RunDir(args.run_dir).delta / f"{safe_name(model_id)}.csv"
    else:
        print("error: pass --output CSV or --run-dir RUN_DIR")
        return 2
    fields = tuple(f.strip() for f in args.rating_fields.split(","))
    if len(fields) != 2:
        print(f"error: --rating-fields needs two names separated by a comma, got {args.rating_fields!r}")
        return 2
    table = compute_delta(args.checkpoint, args.pairs, output, ref_model=args.ref_model, beta=args.beta,
                          model_id=model_id, batch_size=args.batch_size, chunk_size=args.chunk_size,
                          max_pairs=args.limit, seed=args.seed, rating_fields=fields, dtype=args.dtype,
                          device=args.device)
    print(f"{len(table)} pairs in {output} (model {model_id}, β={table['beta'].iloc[0] if len(table) else '?'}, "
          f"{table['reduce'].iloc[0] if len(table) else '?'} log-probs)")
    cols = [c for c in ("delta", "margin", "reward_margin", "margin_p", "rating_diff") if table[c].notna().any()]
    with pd.option_context("display.float_format", "{:.4f}".format):
        print(table[cols].describe().loc[["count", "mean", "std", "min", "max"]].to_string())
    return 0


def pairs_from_answers(answers_a: str | Path, answers_b: str | Path, single_judgments: str | Path,
                       output: str | Path, *, bench: str, model_a: str, model_b: str, data_dir=None,
                       questions=None) -> int:
    """Write a pairs JSONL from two models' FastChat answers to the same questions; return the count.

    One pair per question, on its first turn (a second turn's context differs between the two models):
    prompt = the user turn, "chosen" = A's answer, "rejected" = B's answer (chat messages, so the chat
    template applies as when the answers were generated), and the single-grading scores of both answers
    as chosen_rating / rejected_rating (missing or −1 → null). Questions one model did not answer are
    skipped.
    """
    from benchmarks.fastchat_data import load_answers, load_questions, resolve_data_dir
    from benchmarks.results import load_single_judgments

    if questions is None:
        questions = load_questions(resolve_data_dir(data_dir, bench), bench)
    a, b = load_answers(answers_a), load_answers(answers_b)
    scores = load_single_judgments(single_judgments)
    scores = scores[(scores["turn"] == 1) & (scores["score"] != -1)]
    score = {(m, q): s for m, q, s in zip(scores["model"], scores["question_id"], scores["score"])}
    out = Path(output)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".tmp")
    n = 0
    with open(tmp, "w") as f:
        for q in questions:
            if q.question_id not in a or q.question_id not in b:
                continue
            turn_a = a[q.question_id]["choices"][0]["turns"][0]
            turn_b = b[q.question_id]["choices"][0]["turns"][0]
            rec = {"id": f"{bench}-{q.question_id}", "question_id": q.question_id, "category": q.category,
                   "model_a": model_a, "model_b": model_b,
                   "prompt": [{"role": "user", "content": q.turns[0]}],
                   "chosen": [{"role": "assistant", "content": turn_a}],
                   "rejected": [{"role": "assistant", "content": turn_b}],
                   "chosen_rating": score.get((model_a, q.question_id)),
                   "rejected_rating": score.get((model_b, q.question_id))}
            f.write(json.dumps(rec) + "\n")
            n += 1
    tmp.replace(out)
    return n
