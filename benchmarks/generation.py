"""Turning chats into answers: prompt rendering and the batched generators (Hugging Face, vLLM).

A generator takes rendered prompts that share one temperature and returns the decoded answers, with
end-of-turn / EOS tokens and stop strings removed. ``answers.py`` above it decides what to ask, in
which batches, and writes the results.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from contracts.errors import UserError

log = logging.getLogger(__name__)


class Generator(Protocol):
    def render(self, messages: list[dict[str, str]]) -> str:
        """The prompt text for a chat ending with a user turn, ready for the assistant's reply."""
        ...

    def prompt_length(self, prompt: str) -> int:
        """Number of tokens of ``prompt`` as it will be fed to the model."""
        ...

    def count_tokens(self, text: str) -> int:
        """Number of tokens of an answer (no special tokens): its length in the model's own units."""
        ...

    def generate(self, prompts: list[str], *, temperature: float, max_new_tokens: int, seed: int) -> list[str]:
        """One answer per prompt (greedy when ``temperature`` is 0, else sampling seeded by ``seed``)."""
        ...


@dataclass
class ChatFormat:
    """How a chat becomes a prompt: the tokenizer's own chat template, or a named FastChat template."""

    tokenizer: object
    conv_template: str | None = None
    stop_ids: list[int] = field(default_factory=list)
    stop_strs: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        tok = self.tokenizer
        if self.conv_template is None and not getattr(tok, "chat_template", None):
            raise UserError(
                "the checkpoint's tokenizer has no chat template: name a FastChat conversation template "
                "with --conv-template (e.g. vicuna_v1.1, zephyr, chatml)"
            )
        ids = {tok.eos_token_id} if tok.eos_token_id is not None else set()
        if self.conv_template is not None:
            conv = self._conv()
            ids.update(conv.stop_token_ids or [])
            if conv.stop_str:
                self.stop_strs = [conv.stop_str] if isinstance(conv.stop_str, str) else list(conv.stop_str)
        else:
            eot = end_of_turn_id(tok)
            if eot is not None:
                ids.add(eot)
        self.stop_ids = sorted(ids | set(self.stop_ids))

    def _conv(self):
        from fastchat.conversation import get_conv_template  # only this module of fschat (no torch deps)

        return get_conv_template(self.conv_template)

    def render(self, messages: list[dict[str, str]]) -> str:
        if self.conv_template is None:
            return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        conv = self._conv()
        for m in messages:
            role = {"user": conv.roles[0], "assistant": conv.roles[1]}.get(m["role"])
            if role is None:  # system prompts belong to the template
                raise UserError(f"unsupported chat role {m['role']!r}")
            conv.append_message(role, m["content"])
        conv.append_message(conv.roles[1], None)
        return conv.get_prompt()

    def encode(self, prompt: str) -> list[int]:
        """Token ids of a rendered prompt, with BOS exactly once.

        A chat template writes its own BOS, so nothing is added; FastChat templates rely on the
        tokenizer to add it (as FastChat does) unless the rendered text already starts with it.
        """
        tok = self.tokenizer
        add = self.conv_template is not None and not (tok.bos_token and prompt.startswith(tok.bos_token))
        return tok(prompt, add_special_tokens=add).input_ids

    def decode(self, ids: list[int]) -> str:
        """Answer text: cut at the first stop token, drop special tokens, cut at stop strings, strip."""
        stop = set(self.stop_ids)
        for i, t in enumerate(ids):
            if t in stop:
                ids = ids[:i]
                break
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        cuts = [text.find(s) for s in self.stop_strs if s and text.find(s) >= 0]
        if cuts:
            text = text[: min(cuts)]
        return text.strip()


def end_of_turn_id(tokenizer) -> int | None:
    """The special token the chat template puts right after an assistant message (e.g. <|im_end|>)."""
    marker = "\u2063SRDPO\u2063"
    try:
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": "x"}, {"role": "assistant", "content": marker}], tokenize=False
        )
    except Exception:  # templates that reject this shape: fall back to EOS only
        return None
    after = text.split(marker, 1)[-1] if marker in text else ""
    ids = tokenizer(after, add_special_tokens=False).input_ids if after else []
    special = set(tokenizer.all_special_ids) | {
        i for i, t in getattr(tokenizer, "added_tokens_decoder", {}).items() if getattr(t, "special", False)
    }
    return ids[0] if ids and ids[0] in special else None


def fit_context(encoded: list[list[int]], context: int | None, max_new_tokens: int) -> tuple[list[list[int]], int]:
    """Make prompts and answer budget fit the model's context (positions) window.

    A prompt longer than ``context - room`` keeps its last tokens, FastChat's rule for long inputs,
    where ``room = min(max_new_tokens, context // 2)``; the batch's answer budget is then cut to what
    the longest prompt leaves. Both happen only near the context limit (a long second turn).
    """
    if not context:
        return encoded, max_new_tokens
    max_src = context - min(max_new_tokens, context // 2)
    cut = sum(len(ids) > max_src for ids in encoded)
    if cut:
        log.warning("%d prompt(s) longer than %d tokens keep only their last %d tokens", cut, max_src, max_src)
        encoded = [ids[-max_src:] for ids in encoded]
    return encoded, min(max_new_tokens, context - max(map(len, encoded)))


class HFGenerator:
    """Batched ``model.generate`` with left padding; greedy at temperature 0, seeded sampling otherwise."""

    def __init__(self, checkpoint: str | Path, *, dtype: str = "auto", device: str | None = None,
                 conv_template: str | None = None, trust_remote_code: bool = False):
        from trainer.modeling import load_causal_lm

        self.checkpoint = Path(checkpoint)  # what the answers depend on (benchmarks.answers.answers_key)
        self.model, self.tokenizer = load_causal_lm(
            checkpoint, dtype=dtype, device=device, trust_remote_code=trust_remote_code
        )
        self.tokenizer.padding_side = "left"  # new tokens must follow every prompt directly
        self.fmt = ChatFormat(self.tokenizer, conv_template)
        cfg = self.model.config
        self.context = getattr(cfg, "max_position_embeddings", None) or getattr(cfg, "n_positions", None)
        gen_eos = self.model.generation_config.eos_token_id
        extra = gen_eos if isinstance(gen_eos, list) else [gen_eos] if gen_eos is not None else []
        self.fmt.stop_ids = sorted(set(self.fmt.stop_ids) | set(extra))

    def render(self, messages: list[dict[str, str]]) -> str:
        return self.fmt.render(messages)

    def prompt_length(self, prompt: str) -> int:
        return len(self.fmt.encode(prompt))

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer.encode(text, add_special_tokens=False))

    def generate(self, prompts: list[str], *, temperature: float, max_new_tokens: int,
                 seed: int | list[int]) -> list[str]:
        """One answer per prompt: greedy at temperature 0, else sampled from softmax(logits / temperature)
        (plain temperature sampling, as FastChat and vLLM) with each prompt's own ``seed`` (one for all if an
        int), so an answer does not depend on the batch it was generated in."""
        import torch
        from transformers import GenerationConfig, LogitsProcessorList

        encoded, max_new_tokens = fit_context([self.fmt.encode(p) for p in prompts], self.context, max_new_tokens)
        batch = self.tokenizer.pad({"input_ids": encoded}, padding=True, return_tensors="pt").to(self.model.device)
        sample = temperature > 1e-4  # FastChat's threshold for greedy decoding
        seeds = seed if isinstance(seed, (list, tuple)) else [seed] * len(prompts)
        gcfg = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=self.fmt.stop_ids or None,
                                pad_token_id=self.tokenizer.pad_token_id)
        sampling = LogitsProcessorList([GumbelSampling(seeds, temperature, self.model.device)] if sample else [])
        with torch.inference_mode():
            out = self.model.generate(**batch, generation_config=gcfg, logits_processor=sampling)
        new = out[:, batch["input_ids"].shape[1]:].tolist()
        return [self.fmt.decode(ids) for ids in new]


class GumbelSampling:
    """A logits processor that turns greedy decoding into sampling from softmax(logits / T), each row with
    its own seeded generator: the argmax of logits / T + Gumbel(0, 1) noise is such a sample (Gumbel-max),
    so a row's draws depend on its seed alone, not on the other rows of its batch or on any global RNG."""

    def __init__(self, seeds: list[int], temperature: float, device):
        import torch

        self.gens = [torch.Generator(device=device).manual_seed(int(s)) for s in seeds]
        self.temperature = temperature

    def __call__(self, input_ids, scores):
        import torch

        u = torch.stack([torch.rand(scores.shape[-1], generator=g, device=scores.device) for g in self.gens])
        gumbel = -torch.log(-torch.log(u.clamp(1e-12, 1 - 1e-7)))
        return scores.float() / self.temperature + gumbel


class VLLMGenerator:
    """The same interface on vLLM (GPU); vLLM schedules its own batches."""

    def __init__(self, checkpoint: str | Path, *, dtype: str = "auto", conv_template: str | None = None,
                 trust_remote_code: bool = False, seed: int = 0):
        try:
            import vllm
        except ImportError as e:
            raise RuntimeError(
                "backend 'vllm' needs the vllm package (GPU only): pip install 'srdpo-eval[vllm]', "
                "or use --backend hf"
            ) from e
        from trainer.modeling import load_tokenizer

        self.checkpoint = Path(checkpoint)
        self.vllm = vllm
        self.tokenizer = load_tokenizer(checkpoint, trust_remote_code=trust_remote_code)
        self.fmt = ChatFormat(self.tokenizer, conv_template)
        names = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}  # vLLM spells dtypes in full
        self.llm = vllm.LLM(model=str(checkpoint), dtype=names.get(dtype, dtype), seed=seed,
                            trust_remote_code=trust_remote_code)
        self.context = getattr(getattr(self.llm.llm_engine, "model_config", None), "max_model_len", None)

    def render(self, messages: list[dict[str, str]]) -> str:
        return self.fmt.render(messages)

    def prompt_length(self, prompt: str) -> int:
        return len(self.fmt.encode(prompt))

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer.encode(text, add_special_tokens=False))

    def generate(self, prompts: list[str], *, temperature: float, max_new_tokens: int,
                 seed: int | list[int]) -> list[str]:
        sample = temperature > 1e-4
        encoded, max_new_tokens = fit_context([self.fmt.encode(p) for p in prompts], self.context, max_new_tokens)
        seeds = seed if isinstance(seed, (list, tuple)) else [seed] * len(prompts)
        params = [self.vllm.SamplingParams(  # a seed per request: an answer does not depend on its batch
            temperature=temperature if sample else 0.0, max_tokens=max_new_tokens, seed=s if sample else None,
            stop_token_ids=self.fmt.stop_ids, stop=self.fmt.stop_strs or None, skip_special_tokens=True,
        ) for s in seeds]
        # token ids, not text, so that BOS handling is ours and identical to the HF backend
        inputs = [{"prompt_token_ids": ids} for ids in encoded]
        outs = self.llm.generate(inputs, params, use_tqdm=False)
        return [self.fmt.decode(list(o.outputs[0].token_ids)) for o in outs]
