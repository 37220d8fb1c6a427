"""Shared fixtures: tiny local models (random weights, locally trained tokenizer) and the shared data."""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "fastchat_llm_judge"


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny Llama-style checkpoint with a ChatML chat template (random weights)."""
    from trainer.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def tiny_neox_dir(tmp_path_factory) -> Path:
    """A tiny GPT-NeoX (Pythia-style) checkpoint (random weights)."""
    from trainer.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-neox"), arch="gpt_neox")


@pytest.fixture(scope="session")
def fastchat_data_dir() -> Path:
    """FastChat's llm_judge data beside the checkout (../shared/data/fastchat_llm_judge)."""
    if not SHARED_DATA.is_dir():
        pytest.fail(f"benchmark data not found at {SHARED_DATA}")
    return SHARED_DATA
