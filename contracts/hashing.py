"""Content hashes: of files, and of a checkpoint directory (what decides a model's outputs).

The checkpoint hash keys every result computed from a checkpoint (reference log-probs, answers,
leaderboard scores), so a retrained or replaced model never passes for the old one.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from contracts.errors import UserError

# Files that decide a checkpoint's outputs (weights, config, tokenizer); training state is not hashed.
CONTENT_PATTERNS = ("*.safetensors", "*.safetensors.index.json", "config.json", "generation_config.json",
                    "tokenizer*", "special_tokens_map.json", "vocab*", "merges.txt", "*.model",
                    "chat_template*", "added_tokens.json")


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def stat_digest(paths, root: Path | None = None) -> str:
    """SHA-256 over paths' names (relative to ``root``), sizes and modification times, an absent one as
    absent; the bytes are not read. Cheap, to tell whether anything was written there since."""
    h = hashlib.sha256()
    for p in sorted(set(map(Path, paths))):
        st = p.stat() if p.exists() else None
        h.update(f"{p.relative_to(root) if root else p}:{st and (st.st_size, st.st_mtime_ns)}\n".encode())
    return h.hexdigest()


def fingerprint(source: str | Path | None, cache_file: Path | None = None) -> str | None:
    """What a result computed from ``source`` depends on: a checkpoint directory by its content
    (:func:`checkpoint_hash`), a file by its sha256, anything else (a hub name, a path not made yet) by
    its name."""
    if source is None:
        return None
    p = Path(source)
    if p.is_dir() and any(p.glob("*.safetensors")):
        return checkpoint_hash(p, cache_file)
    return sha256_file(p) if p.is_file() else str(source)


def checkpoint_hash(path: str | Path, cache_file: Path | None = None) -> str:
    """SHA-256 over a checkpoint directory's content files (names and bytes).

    ``cache_file``: a JSON file remembering each file's hash by (path, size, mtime), so that hashing a
    7B checkpoint again costs nothing.
    """
    p = Path(path)
    if not p.is_dir():
        raise UserError(f"{p}: not a checkpoint directory (give a local Hugging Face checkpoint)")
    files = sorted({f for pat in CONTENT_PATTERNS for f in p.glob(pat) if f.is_file()})
    if not any(f.suffix == ".safetensors" for f in files):
        raise UserError(f"{p}: no *.safetensors weights (this project loads safetensors only; re-save the model "
                        "with save_pretrained(safe_serialization=True))")
    cache: dict = {}
    if cache_file is not None and cache_file.is_file():
        try:
            cache = json.loads(cache_file.read_text())
        except json.JSONDecodeError:
            cache = {}  # a damaged cache only costs a re-hash
    total = hashlib.sha256()
    changed = False
    for f in files:
        st = f.stat()
        key = str(f.resolve())
        hit = cache.get(key)
        if not (hit and hit["size"] == st.st_size and hit["mtime_ns"] == st.st_mtime_ns):
            hit = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": sha256_file(f)}
            cache[key], changed = hit, True
        total.update(f"{f.name}\0{hit['sha256']}\n".encode())
    if cache_file is not None and changed:
        from contracts.files import write_json  # workers and shards on other machines update it too

        write_json(cache_file, cache, indent=1)
    return total.hexdigest()
