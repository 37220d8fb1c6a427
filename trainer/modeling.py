"""Loading a Hugging Face causal LM and its tokenizer, the same way in every stage."""

from __future__ import annotations

from pathlib import Path

import torch


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device | str | None = None) -> torch.dtype:
    """'auto' is bf16 on a GPU that supports it, else fp32 (this project's CPUs have no usable bf16)."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype in (None, "auto"):
        dev = torch.device(device) if device is not None else default_device()
        if dev.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    names = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16,
             "float16": torch.float16, "fp32": torch.float32, "float32": torch.float32}
    if dtype not in names:
        raise ValueError(f"unknown dtype {dtype!r}: use one of auto, {', '.join(names)}")
    return names[dtype]


def load_tokenizer(path: str | Path, *, trust_remote_code: bool = False):
    """Tokenizer with a pad token (falls back to EOS, as TRL does)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(path), trust_remote_code=trust_remote_code)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def load_causal_lm(
    path: str | Path,
    *,
    dtype: str | torch.dtype | None = "auto",
    device: torch.device | str | None = None,
    trust_remote_code: bool = False,
    with_tokenizer: bool = True,
):
    """Return ``(model, tokenizer)`` (tokenizer ``None`` unless ``with_tokenizer``), model in eval mode.

    ``path`` must be a local Hugging Face checkpoint directory or, online only, a hub name. A path that
    is not a model fails with a message naming it rather than a deep transformers trace.
    """
    from transformers import AutoModelForCausalLM

    p = Path(str(path))
    if p.exists() and not (p / "config.json").is_file():
        raise FileNotFoundError(f"{p} is not a Hugging Face model checkpoint (no config.json in it)")
    dev = torch.device(device) if device is not None else default_device()
    model = AutoModelForCausalLM.from_pretrained(
        str(path), dtype=resolve_dtype(dtype, dev), trust_remote_code=trust_remote_code
    ).to(dev)
    model.eval()
    tok = load_tokenizer(path, trust_remote_code=trust_remote_code) if with_tokenizer else None
    return model, tok
