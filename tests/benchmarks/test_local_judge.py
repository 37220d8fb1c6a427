"""The local judge: verdict probabilities from a causal LM, checked against a plain full-logit computation."""

from __future__ import annotations

import asyncio
import json
import math
import re

import pytest
import torch

from benchmarks.judge.backend import ChatBackend
from benchmarks.judge.local import PREFIX, JudgeScore, LocalJudge, detect_kind
from judge_reference import reference_probs

# FastChat's llm_judge patterns (common.py): single rating, and its verdict test for pairwise.
ONE_SCORE = re.compile(r"\[\[(\d+\.?\d*)\]\]")


def fastchat_pair_verdict(text: str) -> str:
    if "[[A]]" in text:
        return "A"
    if "[[B]]" in text:
        return "B"
    if "[[C]]" in text:
        return "tie"
    return "error"


def judge_prompts(data_dir) -> dict[str, dict]:
    return {p["name"]: p for p in map(json.loads, (data_dir / "judge_prompts.jsonl").read_text().splitlines())}


def single_messages(prompts, question="What is 2 + 2?", answer="2 + 2 = 4."):
    p = prompts["single-v1"]
    return [{"role": "system", "content": p["system_prompt"]},
            {"role": "user", "content": p["prompt_template"].format(question=question, answer=answer)}]


def pair_messages(prompts, question="Name a primary colour.", a="Red.", b="Potato."):
    p = prompts["pair-v2"]
    return [{"role": "system", "content": p["system_prompt"]},
            {"role": "user", "content": p["prompt_template"].format(question=question, answer_a=a, answer_b=b)}]


@pytest.fixture(scope="module")
def judge(tiny_model_dir):
    return LocalJudge(tiny_model_dir, device="cpu", dtype="fp32")


@pytest.fixture(scope="module")
def prompts(fastchat_data_dir):
    return judge_prompts(fastchat_data_dir)


def test_is_a_chat_backend(judge):
    assert isinstance(judge, ChatBackend)
    assert judge.model == f"local-{judge.model_path.name}"


def test_single_rating_is_the_expected_rating(judge, prompts, tiny_model_dir):
    msgs = single_messages(prompts)
    labels = [str(k) for k in range(1, 11)]
    ref = reference_probs(tiny_model_dir, msgs, "single", labels)
    score = judge.score(msgs)
    assert score.kind == "single" and list(score.labels) == labels
    assert score.probs == pytest.approx(ref, abs=1e-6)
    expected = sum((k + 1) * p for k, p in enumerate(ref))
    text = asyncio.run(judge.chat(msgs, temperature=0.0, max_tokens=2048))
    m = ONE_SCORE.search(text)
    assert m, text
    assert float(m.group(1)) == pytest.approx(expected, abs=0.006)
    assert 1.0 <= float(m.group(1)) <= 10.0
    assert len(ONE_SCORE.findall(text)) == 1  # the distribution must not look like a second rating


def test_ten_is_scored_over_all_its_tokens(judge):
    # "10]]" must be more tokens than "1]]" in this tokenizer, or the multi-token path is not exercised.
    ten, one = judge._cands["single"][9], judge._cands["single"][0]
    assert len(ten) > len(one)


def test_pairwise_verdict_is_the_argmax(judge, prompts, tiny_model_dir):
    msgs = pair_messages(prompts)
    ref = reference_probs(tiny_model_dir, msgs, "pairwise", ["A", "B", "C"])
    score = judge.score(msgs)
    assert score.kind == "pairwise"
    assert score.probs == pytest.approx(ref, abs=1e-6)
    best = "ABC"[max(range(3), key=ref.__getitem__)]
    text = asyncio.run(judge.chat(msgs, temperature=0.7, max_tokens=10))
    assert score.verdict == best
    assert fastchat_pair_verdict(text) == {"C": "tie"}.get(best, best)
    assert sum(f"[[{v}]]" in text for v in "ABC") == 1


def test_all_fastchat_judge_prompts_are_recognised(prompts):
    for name, p in prompts.items():
        msgs = [{"role": "system", "content": p["system_prompt"]}, {"role": "user", "content": p["prompt_template"]}]
        assert detect_kind(msgs) == ("pairwise" if p["type"] == "pairwise" else "single"), name


def test_unknown_prompt_is_a_clear_error(judge):
    with pytest.raises(ValueError, match=r"neither \"\[\[rating\]\]\""):
        asyncio.run(judge.chat([{"role": "user", "content": "Tell me a joke."}], temperature=0, max_tokens=5))


def test_answer_quoting_the_other_marker_does_not_flip_the_kind(prompts):
    assert detect_kind(single_messages(prompts, answer='Say "[[A]]" if A is better.')) == "single"


def test_concurrent_calls_match_sequential_ones(judge, prompts):
    msgs = [single_messages(prompts, question=f"What is {i} + {i}?", answer=f"It is {2 * i + i % 3}.")
            for i in range(6)] + [pair_messages(prompts, a=f"Answer {i}", b="No idea.") for i in range(6)]
    sequential = [judge.score(m).text() for m in msgs]

    async def run_all():
        return await asyncio.gather(*(judge.chat(m, temperature=0.0, max_tokens=64) for m in msgs))

    assert asyncio.run(run_all()) == sequential
    assert len(set(sequential)) > 1  # different prompts, different outputs: the test can tell them apart


def test_long_prompt_is_cut_from_the_left_not_crashed(tiny_model_dir, prompts):
    judge = LocalJudge(tiny_model_dir, device="cpu", dtype="fp32", max_length=256)
    long_answer = "word " * 2000
    msgs = single_messages(prompts, answer=long_answer)
    score = judge.score(msgs)
    assert score.truncated and judge.truncations == 1
    ids, cut = judge.prompt_ids(msgs, "single")
    assert cut and len(ids) + max(map(len, judge._cands["single"])) <= 256
    # the end of the prompt (the answer's end and the chat's generation prompt) is kept
    assert judge._tok.decode(ids).endswith(PREFIX["single"])
    assert ONE_SCORE.search(score.text())
    short = judge.score([{"role": "user", "content": 'Rate "ok" as "[[rating]]".'}])
    assert not short.truncated and judge.truncations == 2  # prompt_ids above counted once more


def test_judge_score_text_format():
    s = JudgeScore("single", tuple(str(k) for k in range(1, 11)), (-60.0,) * 9 + (0.0,))
    assert s.text().startswith("Rating: [[10.00]]")
    assert ONE_SCORE.findall(s.text()) == ["10.00"]  # the JSON line holds no second "[[number]]"
    p = JudgeScore("pairwise", ("A", "B", "C"), tuple(map(math.log, (0.2, 0.5, 0.3))))
    assert p.verdict == "B" and p.text().startswith("[[B]]") and fastchat_pair_verdict(p.text()) == "B"
    assert sum(f"[[{v}]]" in p.text() for v in "ABC") == 1
    with pytest.raises(ValueError):
        p.expected_rating


def test_reply_carries_the_exact_distribution(judge, prompts):
    for msgs in (single_messages(prompts), pair_messages(prompts)):
        score = judge.score(msgs)
        back = JudgeScore.from_reply(asyncio.run(judge.chat(msgs, temperature=0, max_tokens=8)))
        assert back == score  # log-probabilities round-trip exactly (JSON floats are repr-exact)
    with pytest.raises(ValueError, match="not a reply of the local judge"):
        JudgeScore.from_reply("Rating: [[5]]")


def test_gpt_neox_architecture_matches_reference(tiny_neox_dir, prompts):
    # Pythia's architecture: its KV cache must batch-expand the same way.
    msgs = single_messages(prompts, answer="Four.")
    score = LocalJudge(tiny_neox_dir, device="cpu", dtype="fp32").score(msgs)
    ref = reference_probs(tiny_neox_dir, msgs, "single", [str(k) for k in range(1, 11)])
    assert score.probs == pytest.approx(ref, abs=1e-6)
