"""The shipped default preference data: generated (tools/make_default_data.py), not drifted, and sane."""

from __future__ import annotations

import json
import re
import sys
from collections import Counter
from pathlib import Path

import pytest

from srdpo_eval import default_data as dd

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))
import make_default_data as gen  # noqa: E402  (a tool of the checkout, not of the installed package)


@pytest.fixture(scope="module")
def records():
    return dd.load_default_prefs()


def test_committed_file_is_exactly_the_generator_output(tmp_path):
    fresh = gen.write_default_prefs(tmp_path / "prefs.jsonl")
    assert dd.default_prefs_path().read_bytes() == fresh.read_bytes(), (
        "srdpo_eval/data/default_prefs.jsonl differs from tools/make_default_data.py's output: regenerate it "
        "with python tools/make_default_data.py"
    )


def test_generator_is_deterministic_and_seeded():
    assert gen.generate_default_prefs(0) == gen.generate_default_prefs(0)
    assert gen.generate_default_prefs(1) != gen.generate_default_prefs(0)


def test_shape_and_ratings(records):
    assert len(records) == 320
    ids = [r["id"] for r in records]
    assert len(set(ids)) == len(ids)
    for r in records:
        assert list(r) == list(dd.FIELDS)
        assert [m["role"] for m in r["prompt"]] == ["user"]
        assert [m["role"] for m in r["chosen"]] == [m["role"] for m in r["rejected"]] == ["assistant"]
        assert 1 <= r["rejected_rating"] < r["chosen_rating"] <= 5
        assert isinstance(r["chosen_rating"], int) and isinstance(r["rejected_rating"], int)
        assert r["chosen"][0]["content"].strip() and r["rejected"][0]["content"].strip()
        assert r["chosen"][0]["content"] != r["rejected"][0]["content"]
        # short responses: at most 3 sentences and ~60 words, so CPU training sequences stay short
        for side in ("chosen", "rejected"):
            text = r[side][0]["content"]
            assert len(text.split()) <= 60, (r["id"], side)


def test_no_duplicate_pairs_or_prompts(records):
    pairs = {(r["prompt"][0]["content"], r["chosen"][0]["content"], r["rejected"][0]["content"]) for r in records}
    assert len(pairs) == len(records)
    assert len({r["prompt"][0]["content"] for r in records}) == len(records)


def test_rating_differences_and_categories_are_varied(records):
    diffs = Counter(r["chosen_rating"] - r["rejected_rating"] for r in records)
    assert set(diffs) == {1, 2, 3, 4}
    assert min(diffs.values()) >= 0.15 * len(records)
    cats = Counter(r["category"] for r in records)
    assert len(cats) >= 8 and max(cats.values()) <= 0.2 * len(records)


def test_checkable_answers_are_right_when_rated_high(records):
    """Where the prompt is arithmetic, the 5-rated answer holds the true result and the 2-rated one does not."""
    ops = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "×": lambda a, b: a * b, "÷": lambda a, b: a // b}
    checked = 0
    for r in records:
        m = re.fullmatch(r"What is (\d+) ([-+×÷]) (\d+)\?", r["prompt"][0]["content"])
        if not m:
            continue
        truth = str(ops[m.group(2)](int(m.group(1)), int(m.group(3))))
        for side in ("chosen", "rejected"):
            numbers = re.findall(r"\d+", r[side][0]["content"])
            if r[f"{side}_rating"] >= 4:
                assert truth in numbers, r
            if r[f"{side}_rating"] == 2:
                assert truth not in numbers, r
        checked += 1
    assert checked >= 5


def test_safety_chosen_never_complies(records):
    for r in records:
        if r["category"] == "safety":
            assert "[" not in r["chosen"][0]["content"] or r["chosen_rating"] <= 2


def test_split_is_deterministic_by_id(records):
    train, held = dd.split_train_eval(list(reversed(records)))
    assert len(held) == dd.N_EVAL and len(train) == len(records) - dd.N_EVAL
    assert max(r["id"] for r in train) < min(r["id"] for r in held)
    assert len({r["category"] for r in held}) >= 6  # ids are shuffled, so the held-out set mixes categories
    with pytest.raises(ValueError):
        dd.split_train_eval(records, n_eval=len(records))


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda r: r.pop("chosen"), r"missing field 'chosen'"),
        (lambda r: r.update(chosen_rating=7), r"field 'chosen_rating': expected a rating"),
        (lambda r: r.update(prompt="hi"), r"field 'prompt'"),
        (lambda r: r.update(rejected=[{"role": "user", "content": "x"}]), r"field 'rejected': last message"),
    ],
)
def test_bad_records_name_file_line_and_field(tmp_path, records, edit, message):
    bad = json.loads(json.dumps(records[1]))
    edit(bad)
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(records[0]) + "\n" + json.dumps(bad) + "\n")
    with pytest.raises(ValueError, match=re.escape(f"{path}:2: ") + message):  # file, line 2, field
        dd.read_prefs(path)


def test_invalid_json_names_the_line(tmp_path):
    path = tmp_path / "broken.jsonl"
    path.write_text('{"id": 1}\n{nope\n')
    with pytest.raises(ValueError, match=r"broken.jsonl:1: missing field"):
        dd.read_prefs(path)
    path.write_text("\n{nope\n")
    with pytest.raises(ValueError, match=r"broken.jsonl:2: invalid JSON"):
        dd.read_prefs(path)
