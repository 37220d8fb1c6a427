"""Tiny models built locally — random weights and a byte-level BPE tokenizer trained on the spot.

Used by the tests and perf/bench_generation.py: nothing is downloaded. A test fixture, not part of the
installed package.
The tokenizer has a ChatML chat template, so the chat-template code paths run as with real models.
"""

from __future__ import annotations

from pathlib import Path

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

_CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Please generate a response with a usefulness rating of 100 out of 100 for the following query.",
    "Human: What is the capital of France? Assistant: The capital of France is Paris.",
    "Write a short poem about the sea. Explain how photosynthesis works in plants.",
    "0 1 2 3 4 5 6 7 8 9 10 Rating: [[5]] [[A]] [[B]] [[C]] yes no good bad helpful harmless",
    "abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ .,;:!?'\"()[]{}<>-_=+*/\\|@#$%^&~`",
]


def build_tiny_tokenizer(vocab_size: int = 512):
    """A byte-level BPE tokenizer (any text encodes) with ChatML specials and chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<pad>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS * 4, trainer=trainer)
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|endoftext|>",
        eos_token="<|im_end|>",
        pad_token="<pad>",
        unk_token="<|endoftext|>",
    )
    hf.chat_template = CHATML_TEMPLATE
    return hf


TINY_ARCHS = ("llama", "gpt_neox", "qwen2", "gemma")


def build_tiny_model(
    out_dir: str | Path,
    *,
    arch: str = "llama",
    hidden_size: int = 32,
    num_layers: int = 2,
    num_heads: int = 4,
    vocab_size: int = 512,
    max_positions: int = 1024,
    seed: int = 0,
) -> Path:
    """Save a randomly initialised causal LM + tokenizer as a Hugging Face checkpoint; return its path."""
    import torch
    from transformers import AutoModelForCausalLM, GemmaConfig, GPTNeoXConfig, LlamaConfig, Qwen2Config

    out = Path(out_dir)
    tokenizer = build_tiny_tokenizer(vocab_size)
    common = dict(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        intermediate_size=hidden_size * 4,
        max_position_embeddings=max_positions,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    if arch == "llama":
        config = LlamaConfig(num_key_value_heads=num_heads, tie_word_embeddings=False, **common)
    elif arch == "gpt_neox":  # Pythia's architecture (the paper's pipeline A)
        config = GPTNeoXConfig(**common)
    elif arch == "qwen2":  # biases on q/k/v, grouped-query attention, tied embeddings
        config = Qwen2Config(num_key_value_heads=max(1, num_heads // 2), tie_word_embeddings=True, **common)
    elif arch == "gemma":  # scaled embeddings, multi-query attention, GeGLU, tied embeddings
        config = GemmaConfig(num_key_value_heads=1, head_dim=hidden_size // num_heads, **common)
    else:
        raise ValueError(f"unknown tiny architecture {arch!r}: use one of {', '.join(TINY_ARCHS)}")
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out
