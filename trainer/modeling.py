"""Loading a Hugging Face causal LM and its tokenizer, the same way in every stage."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from contracts.errors import UserError


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
        raise UserError(f"unknown dtype {dtype!r}: use one of auto, {', '.join(names)}")
    return names[dtype]


@dataclass(frozen=True)
class Precision:
    """How a model is run: device, weight dtype, autocast dtype (None: no autocast) and the dtype the
    parameters are cast to for the forward (None: used as stored; FSDP's bf16 gather: bf16)."""

    device: torch.device
    weights: torch.dtype
    autocast: torch.dtype | None
    params: torch.dtype | None = None

    @property
    def key(self) -> str:
        """What the numbers depend on (part of the reference-cache key)."""
        name = lambda t: str(t).removeprefix("torch.")  # noqa: E731
        return f"{name(self.weights)}/{name(self.autocast)}" + (f"/params-{name(self.params)}" if self.params else "")

    def cast_params(self, model) -> None:
        """Cast ``model``'s parameters (not its buffers: FSDP gathers parameters only) to ``params``, so that
        a model run outside FSDP computes what FSDP's mixed-precision forward computes."""
        if self.params is not None:
            for p in model.parameters():
                p.data = p.data.to(self.params)


def resolve_precision(device: str | None = "auto", dtype: str = "auto", mixed_precision: str = "auto", *,
                      fsdp: bool = False) -> Precision:
    """The one rule every stage uses to run a model as the trainer does (docs/method.md#defaults).

    ``dtype`` "auto": fp32 (master) weights; ``mixed_precision`` "auto": bf16 autocast on a GPU that has
    bf16, none elsewhere (this project's CPUs have no usable bf16). ``device`` "auto"/None: CUDA if
    available. ``fsdp``: FSDP2 gathers the parameters in the autocast dtype (its MixedPrecisionPolicy), so
    the forward's parameters are in that dtype, and the reference pass casts its parameters the same way.
    """
    if device in (None, "auto"):
        dev = default_device()
    else:
        dev = torch.device(device)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise UserError("device cuda: CUDA is not available on this machine; use device auto or cpu")
    if dev.type == "cuda" and dev.index is None and torch.distributed.is_available() and \
            torch.distributed.is_initialized():
        dev = torch.device("cuda", torch.cuda.current_device())
    cuda_bf16 = dev.type == "cuda" and torch.cuda.is_bf16_supported()
    mp = ("bf16" if cuda_bf16 else "no") if mixed_precision == "auto" else mixed_precision
    weights = torch.float32 if dtype == "auto" else resolve_dtype(dtype, dev)
    autocast = torch.bfloat16 if mp == "bf16" else None
    return Precision(dev, weights, autocast, autocast if fsdp and autocast not in (None, weights) else None)


def load_tokenizer(path: str | Path, *, trust_remote_code: bool = False):
    """Tokenizer with a pad token (falls back to EOS, as TRL does)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(local_checkpoint(path)), trust_remote_code=trust_remote_code)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def check_model_path(path: str | Path) -> Path:
    """A local Hugging Face checkpoint directory, or a user error naming the path (never a hub lookup of a
    mistyped local path: only names of the form ORG/NAME that are not local paths go to the hub)."""
    p = Path(str(path))
    if p.is_dir():
        if not (p / "config.json").is_file():
            raise UserError(f"{p}: not a Hugging Face model checkpoint (no config.json in it)")
        return p
    if p.exists() or str(path).count("/") != 1 or str(path).startswith((".", "/", "~")):
        raise UserError(f"{path}: model not found; give a local Hugging Face checkpoint directory "
                        "(or, online, a hub name ORG/NAME)")
    return p


def local_checkpoint(path: str | Path) -> Path:
    """A local checkpoint directory for ``path``: itself, or (online) the hub model ``ORG/NAME`` downloaded
    once into the Hugging Face cache. Results are keyed by a checkpoint's content (contracts.hashing), so
    a hub model is hashed from its local files like any other."""
    p = check_model_path(path)
    if p.is_dir():
        return p
    from contracts.hashing import CONTENT_PATTERNS
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(str(path), allow_patterns=list(CONTENT_PATTERNS)))
    except Exception as e:  # noqa: BLE001 — offline, gated, no such repository: all say the same to a user
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UserError(f"{path}: not a local directory, and getting it from the Hugging Face hub failed "
                        f"({first}); download it first (huggingface-cli download {path} --local-dir DIR) and "
                        "give DIR") from None


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

    path = local_checkpoint(path)
    dev = torch.device(device) if device is not None else default_device()
    model = AutoModelForCausalLM.from_pretrained(
        str(path), dtype=resolve_dtype(dtype, dev), trust_remote_code=trust_remote_code
    ).to(dev)
    model.eval()
    tok = load_tokenizer(path, trust_remote_code=trust_remote_code) if with_tokenizer else None
    return model, tok
