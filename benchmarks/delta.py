"""Δπ, m(x) and the DPO reward margin of a checkpoint on preference pairs, through the trainer's code.

This is the stage that runs models for Table 4; the analysis reads the tables it writes
(delta/<model_id>.csv, columns: contracts.tables.DELTA_COLUMNS).

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
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from contracts.errors import UserError
from contracts.settings import option
from contracts.tables import DELTA_COLUMNS as COLUMNS


@dataclass
class DeltaConfig:
    """How ``compute_delta`` runs; the data options (lengths, placement of p) are a trainer DataConfig."""

    beta: float | None = option(None, gt=0, help="β (default: the checkpoint's, from its srdpo_info.json)")
    reduce: str | None = option(None, choices=("sum", "mean"), help="sequence log-prob as the trainer "
                                                                    "(default: the checkpoint's)")
    batch_size: int = option(8, ge=1, help="pairs per forward")
    chunk_size: int = option(64, ge=1, help="pairs per appended chunk (the resume granularity)")
    rating_fields: tuple[str, ...] = option(("chosen_rating", "rejected_rating"), metavar="CHOSEN,REJECTED",
                                            help="record fields with the two answers' ratings")
    max_pairs: int | None = option(None, ge=1, flags=("--limit",),
                                   help="a seeded random sample of this many pairs (the paper: 200)")
    seed: int = option(0, ge=0, help="seed of the --max-pairs sample")
    dtype: str = option("auto", choices=("auto", "fp32", "bf16"),
                        help="auto: as the trainer (fp32 weights, bf16 autocast on a bf16 GPU)")
    device: str = option("auto", choices=("auto", "cpu", "cuda"))
    packing: bool = option(True, help="score each pair as one packed sequence [x, y⁺, y⁻] where exact for the "
                                      "model (as the trainer); false: padded batches")
    progress: bool = option(True, cli=False)

    def check(self) -> None:
        if len(self.rating_fields) != 2:
            from contracts.settings import ConfigError

            raise ConfigError(f"rating_fields: give two names (chosen, rejected), got {list(self.rating_fields)}")


# Settings that do not change a table's values: batching, chunks, where it runs, packing (exact), progress.
EXECUTION_ONLY = ("batch_size", "chunk_size", "device", "packing", "progress")


def result_key(cfg: DeltaConfig) -> dict:
    """What decides a Δπ table besides its checkpoint and pairs: every setting but the execution-only ones,
    with the precision resolved on this machine. The one definition: reproduce keys its units by it."""
    from trainer.modeling import resolve_precision

    return {**{k: v for k, v in asdict(cfg).items() if k not in EXECUTION_ONLY},
            "precision": resolve_precision(cfg.device, cfg.dtype, "auto").key}


def _rating(rec: dict, name: str, where: str) -> float:
    v = rec.get(name)
    if v is None:
        return np.nan
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
        raise UserError(f"{where}: field {name!r} must be a number, got {v!r}")
    return float(v)


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
    """Rows appended as whole lines (the header first into an empty file); a full disk cuts nothing."""
    from contracts.files import Appender

    new = not path.is_file() or path.stat().st_size == 0
    with Appender(path) as out:
        out.write_text(df.to_csv(header=new, index=False))


def delta_for_records(policy: str | Path, reference: str | Path, records: list[dict], output: str | Path, *,
                      model_id: str, cfg: DeltaConfig | None = None, data_cfg=None,
                      source: str = "<pairs>", ref_cache_dir: str | Path | None = None) -> pd.DataFrame:
    """Write (or complete) the Δπ table ``output`` for ``records`` and return it in record order.

    ``records`` are preference records as trainer.data.load_preference_data returns them (with ``id``);
    ``reference`` is required (Δπ and m(x) are log-ratios against it).
    Rows already in ``output`` (same model_id, β, reduce and precision) are kept and not recomputed.
    ``ref_cache_dir``: the reference's log-probs come from (or go to) the trainer's reference cache there,
    so several policies scored against one reference on the same pairs compute them once. One process
    writes a table at a time (contracts.files.Lock).
    """
    from contracts.files import Lock
    from trainer.data import DataConfig
    from trainer.modeling import resolve_precision

    cfg = cfg or DeltaConfig()
    cfg = replace(cfg, beta=cfg.beta if cfg.beta is not None else 0.1, reduce=cfg.reduce or "sum")
    output = Path(output)
    ids = [str(r["id"]) for r in records]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise UserError(f"{source}: pair id {dup!r} occurs more than once; ids key the table")
    prec = resolve_precision(cfg.device, cfg.dtype, "auto")
    with Lock(output, what=f"Δπ table {output}"):
        done = _done_ids(output, model_id=model_id, beta=cfg.beta, reduce=cfg.reduce, precision=prec.key)
        todo = [r for r in records if str(r["id"]) not in done]
        if todo:
            _score(policy, reference, todo, output, model_id=model_id, cfg=cfg, data_cfg=data_cfg or DataConfig(),
                   source=source, ref_cache_dir=ref_cache_dir, prec=prec)
        table = read_existing(output)
    if table is None:
        return pd.DataFrame(columns=list(COLUMNS))
    order = {i: k for k, i in enumerate(ids)}
    table = table[table["id"].isin(order)]
    return table.sort_values("id", key=lambda s: s.map(order)).reset_index(drop=True)


def _done_ids(output: Path, **want) -> set[str]:
    """Pair ids already in the table; its rows must have been made the way this run makes them."""
    existing = read_existing(output)
    if existing is None:
        return set()
    for col, value in want.items():
        other = set(existing[col].dropna().unique()) - {value} if col in existing else set()
        if other:
            raise UserError(f"{output}: holds rows with {col} {sorted(map(str, other))[0]!r}, not {value!r}; write "
                            "to another --output")
    return set(existing["id"])


def _score(policy, reference, records: list[dict], output: Path, *, model_id: str, cfg: DeltaConfig, data_cfg,
           source: str, ref_cache_dir, prec) -> None:
    """Tokenize ``records`` as the trainer does, score them chunk by chunk, append each chunk's rows."""
    import torch
    from contracts.progress import bar as progress_bar

    from trainer.data import tokenize_pairs
    from trainer.modeling import load_causal_lm, load_tokenizer
    from trainer.scoring import pair_logps

    tokenizer = load_tokenizer(policy)
    pairs, report = tokenize_pairs(records, tokenizer, data_cfg, source=source)
    if report.dropped:
        print(f"{source}: {report.summary()}; dropped: " + ", ".join(f"{i} ({why})" for i, why in report.dropped[:5]))
    ratings = {}
    for r in records:
        where = f"{source}:" + (f"{r['_line']}" if "_line" in r else f" id {r['id']}")
        ratings[str(r["id"])] = tuple(_rating(r, name, where) for name in cfg.rating_fields)
    kw = dict(pad_id=tokenizer.pad_token_id, batch_size=cfg.batch_size, reduce=cfg.reduce, refine=True,
              progress=False, autocast_dtype=prec.autocast, packing=cfg.packing)
    cached = ref = None
    if ref_cache_dir is not None:
        from trainer.refcache import reference_logps

        cached, _ = reference_logps(reference, pairs, data_cfg, precision=prec, reduce=cfg.reduce, refine=True,
                                    cache_dir=ref_cache_dir, batch_size=cfg.batch_size, progress=False,
                                    packing=cfg.packing)
    else:
        ref, _ = load_causal_lm(reference, dtype=prec.weights, device=prec.device, with_tokenizer=False)
    pol, _ = load_causal_lm(policy, dtype=prec.weights, device=prec.device, with_tokenizer=False)
    bar = progress_bar(total=len(pairs), desc=f"Δπ {model_id}", unit="pair", enabled=cfg.progress)
    for s in range(0, len(pairs), cfg.chunk_size):
        chunk = pairs[s:s + cfg.chunk_size]
        lp = pair_logps(pol, chunk, **kw)
        lr = pair_logps(ref, chunk, **kw) if cached is None else cached.select(list(range(s, s + len(chunk))))
        _append(output, _rows(chunk, lp, lr, ratings, model_id=model_id, cfg=cfg, precision=prec.key))
        bar.update(len(chunk))
    bar.close()
    del pol, ref
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _rows(chunk, lp, lr, ratings: dict, *, model_id: str, cfg: DeltaConfig, precision: str) -> pd.DataFrame:
    """The table rows (contracts.tables.DELTA_COLUMNS) of a chunk of pairs from the policy's (``lp``) and
    the reference's (``lr``) log-probs."""
    from trainer.losses import margin, refinement

    m = margin(lp.chosen, lp.rejected, lr.chosen, lr.rejected)
    m_p = margin(lp.refine_chosen, lp.refine_rejected, lr.refine_chosen, lr.refine_rejected)
    d = refinement(lp.refine_chosen, lp.refine_rejected, lr.refine_chosen, lr.refine_rejected, cfg.beta)
    rc = np.array([ratings[str(p.id)][0] for p in chunk])
    rr = np.array([ratings[str(p.id)][1] for p in chunk])
    n_c, n_r = lp.n_chosen.numpy(), lp.n_rejected.numpy()
    return pd.DataFrame({
        "id": [str(p.id) for p in chunk], "model_id": model_id, "delta": d.numpy(), "margin": m.numpy(),
        "reward_margin": cfg.beta * m.numpy(), "margin_p": m_p.numpy(), "chosen_tokens": n_c,
        "rejected_tokens": n_r, "length_diff": n_c - n_r, "chosen_rating": rc, "rejected_rating": rr,
        "rating_diff": rc - rr, "logp_chosen": lp.chosen.numpy(), "logp_rejected": lp.rejected.numpy(),
        "ref_logp_chosen": lr.chosen.numpy(), "ref_logp_rejected": lr.rejected.numpy(),
        "logp_p_chosen": lp.refine_chosen.numpy(), "logp_p_rejected": lp.refine_rejected.numpy(),
        "ref_logp_p_chosen": lr.refine_chosen.numpy(), "ref_logp_p_rejected": lr.refine_rejected.numpy(),
        "beta": cfg.beta, "reduce": cfg.reduce, "prompt_truncated": [p.prompt_truncated for p in chunk],
        "completion_truncated": [p.completion_truncated for p in chunk], "precision": precision},
        columns=list(COLUMNS))


def compute_delta(checkpoint: str | Path, pairs: str | Path, output: str | Path, *, cfg: DeltaConfig | None = None,
                  ref_model: str | Path | None = None, model_id: str | None = None,
                  data_cfg=None, ref_cache_dir: str | Path | None = None) -> pd.DataFrame:
    """The Δπ table of ``checkpoint`` on the pairs file/dataset ``pairs``, written to ``output``.

    β, reduce, the reference and the data options (lengths, p and its placement) default to what the
    trainer recorded for the checkpoint (srdpo_info.json, the run's config.yaml), so Δπ is computed on
    exactly the tokens the trainer saw; ``cfg``, ``ref_model`` and ``data_cfg`` override them.
    ``cfg.max_pairs`` takes a seeded random sample (the paper: 200 random pairs).
    """
    from contracts.ids import model_id_for_checkpoint
    from trainer.data import DataConfig, load_preference_data

    cfg = cfg or DeltaConfig()
    cfg.check()
    defaults = checkpoint_defaults(checkpoint)
    ref = ref_model or defaults["ref_model"]
    if not ref:
        raise UserError(f"{checkpoint}: its srdpo_info.json names no ref_model; give --ref-model")
    cfg = replace(cfg, beta=cfg.beta if cfg.beta is not None else defaults["beta"],
                  reduce=cfg.reduce or defaults["reduce"])
    records = sample_records(load_preference_data(str(pairs)), cfg.max_pairs, cfg.seed)
    if records and not any(all(f in r for f in cfg.rating_fields) for r in records):
        fields = sorted(k for k in records[0] if not k.startswith("_"))
        raise UserError(f"rating_fields {','.join(cfg.rating_fields)}: no record of {pairs} has these fields "
                        f"(a record has: {', '.join(fields)}); name the two rating fields (--rating-fields)")
    return delta_for_records(checkpoint, ref, records, output, model_id=model_id or model_id_for_checkpoint(checkpoint),
                             cfg=cfg, data_cfg=data_cfg or defaults["data_cfg"] or DataConfig(), source=str(pairs),
                             ref_cache_dir=ref_cache_dir)


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
    from contracts.ids import read_checkpoint_info
    from contracts.run_dir import TRAIN_CONFIG

    info = read_checkpoint_info(checkpoint)
    out = {k: info.get(k) for k in ("ref_model", "beta", "reduce")}
    out["data_cfg"] = None
    cfg_path = Path(checkpoint).parent / TRAIN_CONFIG
    if cfg_path.is_file():
        from trainer.config import load_yaml_config

        out["data_cfg"] = load_yaml_config(cfg_path).data_config()
    return out


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
    from contracts.files import written

    out = Path(output)
    n = 0
    with written(out) as tmp, open(tmp, "w") as f:
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
    return n
