"""Reference log-probs on x and p ⊕ x, computed once and cached on disk by content.

Key = sha256 of (reference checkpoint content hash, tokenized data hash, DataConfig, reduce, precision).
Every objective and every β/λ that shares those reuses the same file (an entry holding the p ⊕ x terms
serves the objectives without them too), and when the cache is used no reference model is held in
memory while training. Files are safetensors (nothing is unpickled). docs/method.md#the-refinement-function-δπ
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict
from pathlib import Path

import torch

from contracts.hashing import checkpoint_hash
from trainer.data import DataConfig, TokenizedPair
from trainer.modeling import Precision
from trainer.scoring import PairLogps, pair_logps

log = logging.getLogger(__name__)
CACHE_VERSION = 3  # 3: entries carry a content hash (verified on load)
_FIELDS = ("chosen", "rejected", "refine_chosen", "refine_rejected", "n_chosen", "n_rejected")


def pairs_hash(pairs: list[TokenizedPair]) -> str:
    """sha256 of the token sequences: covers the data, the tokenizer and the truncation together."""
    h = hashlib.sha256()
    for p in pairs:
        h.update(json.dumps([str(p.id), p.prompt_ids, p.chosen_ids, p.rejected_ids, p.refine_prompt_ids]).encode())
    return h.hexdigest()


def cache_key(model_hash: str, data_hash: str, data_cfg: DataConfig, reduce: str, precision: str) -> str:
    blob = json.dumps({"v": CACHE_VERSION, "model": model_hash, "data": data_hash,
                       "cfg": asdict(data_cfg.data_config()),
                       "reduce": reduce, "precision": precision}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


class DamagedCache(ValueError):
    """A cache entry that does not hold what it says (cut short, overwritten): recomputed, never trusted."""


def content_hash(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 of the tensors' names, dtypes, shapes and bytes, in name order."""
    h = hashlib.sha256()
    for k in sorted(tensors):
        t = tensors[k].contiguous()
        h.update(f"{k}|{t.dtype}|{tuple(t.shape)}\n".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def save_pair_logps(path: Path, lp: PairLogps, meta: dict) -> None:
    """The entry as safetensors, with the content hash in its metadata; written atomically."""
    from safetensors.torch import save_file

    from contracts.files import written

    tensors = {k: getattr(lp, k).contiguous() for k in _FIELDS if getattr(lp, k) is not None}
    meta = {**{k: str(v) for k, v in meta.items()}, "sha256": content_hash(tensors)}
    with written(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)


def load_pair_logps(path: Path) -> PairLogps:
    """An entry, verified: a readable header, the fields of a PairLogps of one length, and the content hash
    written with it; anything else raises :class:`DamagedCache` saying what is wrong."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # noqa: BLE001 — safetensors' errors for a bad header or a short file
        raise DamagedCache(f"unreadable ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
    missing = [k for k in ("chosen", "rejected", "n_chosen", "n_rejected") if k not in tensors]
    if missing or len({t.shape for t in tensors.values()}) != 1:
        raise DamagedCache(f"fields {missing or sorted(tensors)} do not make one table of pairs")
    if meta.get("sha256") != content_hash(tensors):
        raise DamagedCache("its content does not match the hash written with it")
    return PairLogps(*(tensors.get(k) for k in _FIELDS))


def cache_path(ref_model: str | Path, pairs: list[TokenizedPair], data_cfg: DataConfig, *, reduce: str,
               precision: Precision, cache_dir: str | Path) -> Path:
    from trainer.modeling import local_checkpoint

    key = cache_key(checkpoint_hash(local_checkpoint(ref_model)), pairs_hash(pairs), data_cfg, reduce, precision.key)
    return Path(cache_dir) / f"ref-{key[:32]}.safetensors"


def reference_logps(ref_model: str | Path, pairs: list[TokenizedPair], data_cfg: DataConfig, *,
                    precision: Precision, reduce: str = "sum", refine: bool = True,
                    cache_dir: str | Path | None, batch_size: int = 8, chunk_size: int = 1024,
                    progress: bool = True, trust_remote_code: bool = False, packing: bool = True,
                    verify: bool = True) -> tuple[PairLogps, Path | None]:
    """Reference log-probs for ``pairs`` (on p ⊕ x too when ``refine``), from cache if there.

    Returns ``(logps, cache_file)``; ``cache_dir=None`` disables caching. The model is loaded only on a
    miss and freed before returning. Under torch.distributed every process calls it: rank 0 looks the
    entry up and hands a hit to the others (no process loads the model); on a miss every process scores
    its share of the pairs, the shares are gathered, and rank 0 writes the one cache file.
    ``packing``/``verify``: as :func:`trainer.scoring.pair_logps` (packed and padded log-probs are equal,
    so the cache key does not depend on them).
    """
    from trainer import distributed as D

    path = hit = None
    if cache_dir is not None:
        if D.rank() == 0:  # one hash of the checkpoint, one look at the file system
            path = cache_path(ref_model, pairs, data_cfg, reduce=reduce, precision=precision, cache_dir=cache_dir)
            hit = _cached(path, len(pairs), refine)
        path, hit = D.broadcast((path, hit))
        if hit is not None:
            return hit, path
    lp = _score_shares(ref_model, pairs, precision=precision, reduce=reduce, refine=refine, batch_size=batch_size,
                       chunk_size=chunk_size, progress=progress, trust_remote_code=trust_remote_code,
                       packing=packing, verify=verify)
    if path is not None and D.rank() == 0:
        path.parent.mkdir(parents=True, exist_ok=True)
        save_pair_logps(path, lp, {"ref_model": str(ref_model), "reduce": reduce, "pairs": len(pairs),
                                   "precision": precision.key})
    D.barrier()  # the entry exists before any process goes on
    return lp, path


def _cached(path: Path, n: int, refine: bool) -> PairLogps | None:
    if not path.is_file():
        return None
    try:
        lp = load_pair_logps(path)
    except DamagedCache as e:
        log.warning("reference log-prob cache %s is damaged (%s); recomputing it", path, e)
        return None
    if len(lp.chosen) == n and (lp.refine_chosen is not None or not refine):
        log.info("reference log-probs from cache %s", path)
        return lp
    log.info("cache entry %s lacks what this run needs; recomputing", path)
    return None


def _score_shares(ref_model, pairs: list[TokenizedPair], *, precision: Precision, reduce: str, refine: bool,
                  batch_size: int, chunk_size: int, progress: bool, trust_remote_code: bool, packing: bool,
                  verify: bool) -> PairLogps:
    """This process's share of the pairs scored, every share gathered: the whole PairLogps on every process.

    Shares are strided over the pairs sorted by length, so that every process has about the same work.
    """
    from trainer import distributed as D
    from trainer.modeling import load_causal_lm

    order = sorted(range(len(pairs)), key=lambda i: -pairs[i].length)
    mine = order[D.rank()::D.world()]
    part = None
    if mine:
        model, _ = load_causal_lm(ref_model, dtype=precision.weights, device=precision.device,
                                  trust_remote_code=trust_remote_code, with_tokenizer=False)
        precision.cast_params(model)  # as FSDP gathers the policy's parameters (bf16), so m(x) = 0 at step 0
        pad_id = model.config.pad_token_id if model.config.pad_token_id is not None else 0
        part = pair_logps(model, [pairs[i] for i in mine], pad_id=pad_id, batch_size=batch_size, reduce=reduce,
                          refine=refine, progress=progress, chunk_size=chunk_size,
                          autocast_dtype=precision.autocast, packing=packing, verify=verify)
        del model
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    n = len(pairs)
    out = {k: torch.zeros(n, dtype=torch.float64) for k in _FIELDS[:4]}
    out.update(n_chosen=torch.zeros(n, dtype=torch.long), n_rejected=torch.zeros(n, dtype=torch.long))
    for idx, lp in D.all_gather((mine, part)):
        for k in _FIELDS:
            if lp is not None and getattr(lp, k) is not None:
                out[k][idx] = getattr(lp, k)
    return PairLogps(*(out[k] if refine or not k.startswith("refine") else None for k in _FIELDS))
