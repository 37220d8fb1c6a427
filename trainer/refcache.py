"""Reference log-probs on x and p ⊕ x, computed once and cached on disk by content.

Key = sha256 of (reference checkpoint content hash, tokenized data hash, DataConfig, reduce, precision).
Every objective and every β/λ that shares those reuses the same file, and when the cache is used
no reference model is held in memory while training. Files are safetensors (nothing is unpickled).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import asdict
from pathlib import Path

import torch

from trainer.data import DataConfig, TokenizedPair
from trainer.scoring import PairLogps, pair_logps

log = logging.getLogger(__name__)
CACHE_VERSION = 1
_FIELDS = ("chosen", "rejected", "refine_chosen", "refine_rejected", "n_chosen", "n_rejected")


def checkpoint_hash(path: str | Path) -> str:
    """sha256 over a checkpoint's weight and config files (names and bytes), in sorted order."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"reference model {path} is not a local checkpoint directory")
    files = sorted(p for p in path.iterdir() if p.is_file() and (
        p.suffix in (".safetensors", ".bin") or p.name in ("config.json", "model.safetensors.index.json")))
    if not files:
        raise FileNotFoundError(f"{path}: no model weights found")
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode())
        with f.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 24), b""):
                h.update(block)
    return h.hexdigest()


def pairs_hash(pairs: list[TokenizedPair]) -> str:
    """sha256 of the token sequences: covers the data, the tokenizer and the truncation together."""
    h = hashlib.sha256()
    for p in pairs:
        h.update(json.dumps([str(p.id), p.prompt_ids, p.chosen_ids, p.rejected_ids, p.refine_prompt_ids]).encode())
    return h.hexdigest()


def cache_key(model_hash: str, data_hash: str, data_cfg: DataConfig, reduce: str, precision: str) -> str:
    blob = json.dumps({"v": CACHE_VERSION, "model": model_hash, "data": data_hash, "cfg": asdict(data_cfg),
                       "reduce": reduce, "precision": precision}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def save_pair_logps(path: Path, lp: PairLogps, meta: dict) -> None:
    from safetensors.torch import save_file

    tensors = {k: getattr(lp, k).contiguous() for k in _FIELDS if getattr(lp, k) is not None}
    tmp = path.with_suffix(".tmp")
    save_file(tensors, str(tmp), metadata={k: str(v) for k, v in meta.items()})
    os.replace(tmp, path)  # atomic: a crash never leaves a half-written cache entry


def load_pair_logps(path: Path) -> PairLogps:
    from safetensors.torch import load_file

    t = load_file(str(path))
    return PairLogps(*(t.get(k) for k in _FIELDS))


def reference_logps(ref_model: str | Path, pairs: list[TokenizedPair], data_cfg: DataConfig, *,
                    reduce: str = "sum", cache_dir: str | Path | None, batch_size: int = 8,
                    dtype: str | torch.dtype = "auto", autocast_dtype: torch.dtype | None = None,
                    device=None, chunk_size: int = 1024, progress: bool = True,
                    trust_remote_code: bool = False) -> tuple[PairLogps, Path | None]:
    """Reference log-probs for ``pairs`` (on p ⊕ x too when ``data_cfg.refine``), from cache if there.

    Returns ``(logps, cache_file)``; ``cache_dir=None`` disables caching. The model is loaded only on a
    miss and freed before returning.
    """
    from trainer.modeling import load_causal_lm, resolve_dtype

    refine = data_cfg.refine
    precision = f"{resolve_dtype(dtype, device)}/{autocast_dtype}"
    path = None
    if cache_dir is not None:
        key = cache_key(checkpoint_hash(ref_model), pairs_hash(pairs), data_cfg, reduce, precision)
        path = Path(cache_dir) / f"ref-{key[:32]}.safetensors"
        if path.is_file():
            lp = load_pair_logps(path)
            if len(lp.chosen) == len(pairs) and (lp.refine_chosen is not None or not refine):
                log.info("reference log-probs from cache %s", path)
                return lp, path
            log.warning("cache entry %s does not match the data; recomputing", path)
    model, _ = load_causal_lm(ref_model, dtype=dtype, device=device, trust_remote_code=trust_remote_code,
                              with_tokenizer=False)
    pad_id = model.config.pad_token_id if model.config.pad_token_id is not None else 0
    lp = pair_logps(model, pairs, pad_id=pad_id, batch_size=batch_size, reduce=reduce, refine=refine,
                    progress=progress, chunk_size=chunk_size, autocast_dtype=autocast_dtype)
    del model
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        save_pair_logps(path, lp, {"ref_model": str(ref_model), "reduce": reduce, "pairs": len(pairs),
                                   "precision": precision})
    return lp, path
