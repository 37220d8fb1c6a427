"""FastChat's judge rules (prompt choice, rendering, verdict parsing) and the reply cache."""

from __future__ import annotations

import pytest

from benchmarks.judge import prompts as P
from benchmarks.judge.cache import JudgeCache, request_key


@pytest.mark.parametrize("mode,category,turn,expected", [
    ("single", "writing", 1, "single-v1"),
    ("single", "writing", 2, "single-v1-multi-turn"),
    ("single", "math", 1, "single-math-v1"),
    ("single", "reasoning", 2, "single-math-v1-multi-turn"),
    ("single", "coding", 1, "single-math-v1"),
    ("pairwise", "roleplay", 1, "pair-v2"),
    ("pairwise", "humanities", 2, "pair-v2-multi-turn"),
    ("pairwise", "coding", 1, "pair-math-v1"),
    ("pairwise", "math", 2, "pair-math-v1-multi-turn"),
    ("pairwise", "fermi", 1, "pair-v2"),  # Vicuna-Bench category without reference
])
def test_prompt_choice_follows_fastchat(mode, category, turn, expected):
    assert P.prompt_name(mode, category, turn) == expected


def test_every_chosen_prompt_exists_with_matching_type_and_format(fastchat_data_dir):
    from benchmarks.fastchat_data import load_judge_prompts

    jp = load_judge_prompts(fastchat_data_dir)
    for mode, fmt in (("single", "[[rating]]"), ("pairwise", "[[A]]")):
        for cat in ("writing", "math"):
            for turn in (1, 2):
                p = jp[P.prompt_name(mode, cat, turn)]
                assert p.type == mode and p.output_format == fmt


def test_rendering_fills_every_placeholder(fastchat_data_dir):
    from benchmarks.fastchat_data import load_judge_prompts

    jp = load_judge_prompts(fastchat_data_dir)
    q, a, b, ref = ["Q1?", "Q2?"], ["a1", "a2"], ["b1", "b2"], ["r1", "r2"]
    for cat in ("writing", "math"):
        r = ref if P.needs_reference(cat) else None
        for turn in (1, 2):
            single = P.render_single(jp[P.prompt_name("single", cat, turn)].prompt_template, q, a, r, turn)
            pair = P.render_pair(jp[P.prompt_name("pairwise", cat, turn)].prompt_template, q, a, b, r, turn)
            for text in (single, pair):
                assert "{" + "question" not in text and "Q1?" in text
                assert ("Q2?" in text) == (turn == 2)
                assert ("r1" in text) == (r is not None)
            assert "a1" in single and ("a2" in single) == (turn == 2)
            # assistant A is the first answer given: it comes before B's in the rendered prompt
            assert pair.index("a1") < pair.index("b1")


@pytest.mark.parametrize("text,score", [
    ("Good. Rating: [[7]]", 7),
    ("Rating: [[8.5]]", 8.5),
    ("Rating: [9]", 9),  # FastChat's single-bracket fallback
    ("first [[3]] then [[9]]", 3),  # first match wins
    ("[[4]] and [6]", 4),  # double brackets take precedence over the fallback
    ("Rating: 7/10", -1),
    ("", -1),
])
def test_parse_rating(text, score):
    assert P.parse_rating(text) == score


@pytest.mark.parametrize("text,winner", [
    ("[[A]]", "A"), ("verdict [[B]]", "B"), ("[[C]]", "tie"),
    ("[[B]] ... [[A]]", "A"),  # FastChat checks [[A]] first, whatever the position
    ("[A]", "error"), ("A is better", "error"),
])
def test_parse_winner(text, winner):
    assert P.parse_winner(text) == winner


def test_request_key_covers_every_part_of_the_request():
    msgs = [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]
    base = dict(temperature=0.0, max_tokens=2048, prompt_version="v1")
    k = request_key("gpt-4", msgs, **base)
    assert k == request_key("gpt-4", [dict(m) for m in msgs], **base)
    variants = [
        request_key("gpt-4o", msgs, **base),
        request_key("gpt-4", [msgs[0], {"role": "user", "content": "u2"}], **base),
        request_key("gpt-4", msgs, **{**base, "temperature": 0.7}),
        request_key("gpt-4", msgs, **{**base, "max_tokens": 1024}),
        request_key("gpt-4", msgs, **{**base, "prompt_version": "v2"}),
    ]
    assert len({k, *variants}) == 6


def test_cache_persists_across_connections(tmp_path):
    path = tmp_path / "c.sqlite"
    with JudgeCache(path) as c:
        assert c.get("k") is None and "k" not in c
        c.put("k", "Rating: [[5]]", model="gpt-4")
        assert c.get("k") == "Rating: [[5]]"
    with JudgeCache(path) as c:  # committed at once: visible to a new connection
        assert c.get("k") == "Rating: [[5]]" and len(c) == 1
        with pytest.raises(TypeError):
            c.put("k2", None)
