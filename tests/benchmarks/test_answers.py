"""Answer generation on the tiny local model: batching, FastChat format, resume, temperatures, CLI."""

from __future__ import annotations

import argparse
import json

import pytest

from benchmarks.answers import GenerationConfig, generate_answers, temperature_for
from benchmarks.fastchat_data import Question, load_answers, load_questions

MAX_NEW = 10


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Two threads on two shared cores spin against each other; one is much faster here."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def hf(tiny_model_dir):
    from benchmarks.generation import HFGenerator

    return HFGenerator(tiny_model_dir, device="cpu", dtype="fp32")


class Recording:
    """Wraps a generator; records every generate call and can fail after a number of calls."""

    def __init__(self, inner, fail_after: int | None = None):
        self.inner, self.fail_after, self.calls = inner, fail_after, []
        self.checkpoint = inner.checkpoint

    def render(self, messages):
        return self.inner.render(messages)

    def prompt_length(self, prompt):
        return self.inner.prompt_length(prompt)

    def count_tokens(self, text):
        return self.inner.count_tokens(text)

    def generate(self, prompts, *, temperature, max_new_tokens, seed):
        if self.fail_after is not None and len(self.calls) >= self.fail_after:
            raise KeyboardInterrupt("simulated kill")
        self.calls.append((list(prompts), temperature))
        return self.inner.generate(prompts, temperature=temperature, max_new_tokens=max_new_tokens, seed=seed)

    @property
    def n_prompts(self):
        return sum(len(p) for p, _ in self.calls)


@pytest.fixture(scope="module")
def mt(fastchat_data_dir):
    return load_questions(fastchat_data_dir, "mt_bench")


def greedy_questions(mt, n=6):
    """Temperature-0 questions of different lengths (math, coding, reasoning, extraction)."""
    return [q for q in mt if temperature_for(q.category) == 0.0][::5][:n]


def test_fastchat_temperatures():
    assert [temperature_for(c) for c in ("writing", "roleplay", "stem", "humanities")] == [0.7, 0.7, 0.1, 0.1]
    assert all(temperature_for(c) == 0.0 for c in ("extraction", "math", "coding", "reasoning", "arena-hard-200"))
    # Vicuna-Bench categories FastChat does not list get its default 0.7
    assert all(temperature_for(c) == 0.7 for c in ("generic", "knowledge", "common-sense", "fermi", "counterfactual"))


def test_prompt_rendering_and_special_tokens(hf):
    tok = hf.tokenizer
    msgs = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"},
            {"role": "user", "content": "Again"}]
    prompt = hf.render(msgs)
    assert prompt.endswith("<|im_start|>assistant\n") and prompt.count("<|im_start|>") == 4
    assert hf.fmt.encode(prompt) == tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True)["input_ids"]
    eot, pad = tok.convert_tokens_to_ids(["<|im_end|>", "<pad>"])
    assert eot in hf.fmt.stop_ids
    ids = tok("The sea", add_special_tokens=False).input_ids
    junk = tok(" after the end", add_special_tokens=False).input_ids
    assert hf.fmt.decode(ids + [eot] + junk + [pad, pad]) == "The sea"
    assert hf.fmt.decode([tok.bos_token_id] + ids + [pad]) == "The sea"  # no special token text leaks


def test_fastchat_conv_template(tiny_model_dir):
    from benchmarks.generation import ChatFormat
    from trainer.modeling import load_tokenizer

    fmt = ChatFormat(load_tokenizer(tiny_model_dir), "vicuna_v1.1")
    prompt = fmt.render([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"},
                         {"role": "user", "content": "Again"}])
    assert prompt.endswith("USER: Hi ASSISTANT: Yo</s>USER: Again ASSISTANT:")
    one = ChatFormat(load_tokenizer(tiny_model_dir), "one_shot")  # stop string "###"
    assert one.stop_strs == ["###"]
    ids = one.tokenizer("fine ### Human: more", add_special_tokens=False).input_ids
    assert one.decode(ids) == "fine"


def test_batched_equals_one_at_a_time(hf, mt, tmp_path):
    qs = greedy_questions(mt)
    lengths = {hf.prompt_length(hf.render([{"role": "user", "content": q.turns[0]}])) for q in qs}
    assert len(lengths) > 3  # prompts differ in length, so the batch really is left-padded
    batched, single = Recording(hf), Recording(hf)
    cfg = GenerationConfig(max_new_tokens=MAX_NEW, batch_size=len(qs))
    a = generate_answers(None, qs, tmp_path / "b.jsonl", model_id="m", cfg=cfg, generator=batched, progress=False)
    cfg.batch_size = 1
    b = generate_answers(None, qs, tmp_path / "s.jsonl", model_id="m", cfg=cfg, generator=single, progress=False)
    assert len(batched.calls) == 2 and len(single.calls) == 2 * len(qs)  # one batch per turn vs one per prompt
    turns_a = {k: v["choices"][0]["turns"] for k, v in load_answers(a).items()}
    turns_b = {k: v["choices"][0]["turns"] for k, v in load_answers(b).items()}
    assert turns_a == turns_b
    assert sum(bool(t) for ts in turns_a.values() for t in ts) >= len(qs)  # not a vacuous match of empties


def test_batched_left_padding_neox(tiny_neox_dir):
    from benchmarks.generation import HFGenerator

    gen = HFGenerator(tiny_neox_dir, device="cpu", dtype="fp32")
    prompts = [gen.render([{"role": "user", "content": c}]) for c in ("Hi", "Explain how photosynthesis works " * 4)]
    together = gen.generate(prompts, temperature=0.0, max_new_tokens=MAX_NEW, seed=0)
    alone = [gen.generate([p], temperature=0.0, max_new_tokens=MAX_NEW, seed=0)[0] for p in prompts]
    assert together == alone


def test_long_prompts_fit_the_context(hf):
    from benchmarks.generation import fit_context

    ids, new = fit_context([list(range(7)), [1, 2]], context=10, max_new_tokens=8)
    assert ids == [[2, 3, 4, 5, 6], [1, 2]] and new == 5  # room min(8, 10 // 2) = 5: last 5 tokens kept
    ids, new = fit_context([[1, 2, 3]], context=10, max_new_tokens=4)
    assert ids == [[1, 2, 3]] and new == 4  # far from the limit nothing changes
    long = hf.render([{"role": "user", "content": "The quick brown fox. " * 300}])
    assert hf.prompt_length(long) > hf.context  # the tiny model has 1024 positions
    out = hf.generate([long, hf.render([{"role": "user", "content": "Hi"}])], temperature=0.0,
                      max_new_tokens=4, seed=0)
    assert len(out) == 2


def test_answer_file_is_fastchat_format(hf, mt, tmp_path):
    qs = greedy_questions(mt, 3)[::-1]  # out of order on purpose: the file ends sorted by question_id
    path = generate_answers(None, qs, tmp_path / "m.jsonl", model_id="tiny-sft",
                            cfg=GenerationConfig(max_new_tokens=4), generator=hf, progress=False)
    lines = path.read_text().splitlines()
    recs = [json.loads(line) for line in lines]
    assert [r["question_id"] for r in recs] == sorted(q.question_id for q in qs)
    for r in recs:
        # FastChat's fields, then what the answer depends on (FastChat ignores the extra key)
        assert list(r) == ["question_id", "answer_id", "model_id", "choices", "tstamp", "srdpo"]
        assert r["srdpo"]["max_new_tokens"] == 4 and len(r["srdpo"]["checkpoint_sha256"]) == 64
        assert isinstance(r["answer_id"], str) and len(r["answer_id"]) >= 16
        assert r["model_id"] == "tiny-sft" and isinstance(r["tstamp"], float)
        assert list(r["choices"][0]) == ["index", "turns", "tokens"] and r["choices"][0]["index"] == 0
        # each turn's length: its text in the model's tokens (the analysis' length control)
        assert r["choices"][0]["tokens"] == [len(hf.tokenizer.encode(t, add_special_tokens=False))
                                             for t in r["choices"][0]["turns"]]
        assert len(r["choices"]) == 1 and len(r["choices"][0]["turns"]) == 2
        assert all(isinstance(t, str) and "<|im_end|>" not in t and "<pad>" not in t for t in r["choices"][0]["turns"])
    assert len({r["answer_id"] for r in recs}) == len(recs)
    assert not (tmp_path / "m.jsonl.partial").exists()


def test_resume_generates_only_missing(hf, mt, tmp_path):
    qs = greedy_questions(mt, 5)
    path = tmp_path / "r.jsonl"
    full = generate_answers(None, qs, tmp_path / "full.jsonl", model_id="m",
                            cfg=GenerationConfig(max_new_tokens=4), generator=hf, progress=False)
    kept = full.read_text().splitlines()[:2]
    path.write_text("\n".join(kept) + "\n" + kept[0][:25])  # two records and a line torn by a kill
    rec = Recording(hf)
    generate_answers(None, qs, path, model_id="m", cfg=GenerationConfig(max_new_tokens=4), generator=rec,
                     progress=False)
    assert rec.n_prompts == 2 * (len(qs) - 2)  # both turns of the three missing questions, nothing else
    lines = path.read_text().splitlines()
    ids = [json.loads(line)["question_id"] for line in lines]
    assert ids == sorted(q.question_id for q in qs)  # each exactly once
    assert [json.loads(line) for line in lines[:2]] == [json.loads(line) for line in kept]  # untouched
    again = Recording(hf)
    generate_answers(None, qs, path, model_id="m", cfg=GenerationConfig(max_new_tokens=4), generator=again,
                     progress=False)
    assert again.calls == []


def test_kill_between_turns_keeps_first_turns(hf, mt, tmp_path):
    qs = greedy_questions(mt, 4)
    path = tmp_path / "k.jsonl"
    cfg = GenerationConfig(max_new_tokens=4, batch_size=2)
    dying = Recording(hf, fail_after=3)  # turn 1 (2 batches) done, one turn-2 batch done, then killed
    with pytest.raises(KeyboardInterrupt):
        generate_answers(None, qs, path, model_id="m", cfg=cfg, generator=dying, progress=False)
    assert len(load_answers(path)) == 2
    assert (tmp_path / "k.jsonl.partial").exists()
    rec = Recording(hf)
    generate_answers(None, qs, path, model_id="m", cfg=cfg, generator=rec, progress=False)
    assert rec.n_prompts == 2  # only the two second turns still missing
    assert all("<|im_start|>user" in p and p.count("<|im_start|>assistant") == 2 for p in rec.calls[0][0])
    final = load_answers(path)
    assert sorted(final) == sorted(q.question_id for q in qs)
    assert all(len(r["choices"][0]["turns"]) == 2 for r in final.values())
    assert not (tmp_path / "k.jsonl.partial").exists()


def test_per_category_temperatures_and_seeded_sampling(hf, mt, fastchat_data_dir, tmp_path):
    vic = load_questions(fastchat_data_dir, "vicuna_bench")
    pick = {}
    for q in mt + vic:
        pick.setdefault(q.category, q)
    qs = [Question(q.question_id + (1000 if q in vic else 0), q.category, q.turns[:1]) for q in pick.values()]
    rec = Recording(hf)
    cfg = GenerationConfig(max_new_tokens=6, batch_size=64, seed=3)
    p1 = generate_answers(None, qs, tmp_path / "t1.jsonl", model_id="m", cfg=cfg, generator=rec, progress=False)
    seen = {}
    for prompts, temp in rec.calls:
        for p in prompts:
            seen[next(q.category for q in qs if q.turns[0] in p)] = temp
    assert seen == {q.category: temperature_for(q.category) for q in qs}
    assert len(rec.calls) == len({temperature_for(q.category) for q in qs})  # one batch per temperature
    # sampling is seeded: same seed, same answers; another seed, other answers
    p2 = generate_answers(None, qs, tmp_path / "t2.jsonl", model_id="m", cfg=cfg, generator=hf, progress=False)
    cfg.seed = 4
    p3 = generate_answers(None, qs, tmp_path / "t3.jsonl", model_id="m", cfg=cfg, generator=hf, progress=False)
    turns = [{k: v["choices"][0]["turns"] for k, v in load_answers(p).items()} for p in (p1, p2, p3)]
    sampled = [q.question_id for q in qs if temperature_for(q.category) > 0.5]
    greedy = [q.question_id for q in qs if temperature_for(q.category) == 0.0]
    assert turns[0] == turns[1]
    assert [turns[0][i] for i in sampled] != [turns[2][i] for i in sampled]
    assert [turns[0][i] for i in greedy] == [turns[2][i] for i in greedy]


def _cli(argv):
    from benchmarks.cli import register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_answers(tiny_model_dir, fastchat_data_dir, tmp_path, capsys):
    import shutil

    final = tmp_path / "train" / "sr-dpo" / "final"
    shutil.copytree(tiny_model_dir, final)
    run = tmp_path / "run"
    argv = [str(final), "--bench", "vicuna_bench", "--output", str(run), "--data-dir", str(fastchat_data_dir),
            "--limit", "3", "--max-new-tokens", "3", "--dtype", "fp32"]
    assert _cli(["answers", *argv]) == 0
    out = run / "vicuna_bench" / "model_answer" / "sr-dpo.jsonl"
    recs = load_answers(out)
    assert sorted(recs) == [1, 2, 3] and all(r["model_id"] == "sr-dpo" for r in recs.values())
    bad = tmp_path / "bad"
    (bad / "vicuna_bench").mkdir(parents=True)
    (bad / "judge_prompts.jsonl").write_text("")
    (bad / "vicuna_bench" / "question.jsonl").write_text('{"question_id": 1, "category": "x"}\n')
    with pytest.raises(ValueError, match="question.jsonl:1: missing field 'turns'"):
        _cli(["answers", *argv[:-6], "--data-dir", str(bad)])


def test_backend_errors(tiny_model_dir):
    from benchmarks.answers import load_generator

    with pytest.raises(ValueError, match="backend 'tgi'"):
        load_generator(tiny_model_dir, GenerationConfig(backend="tgi"))
    try:
        import vllm  # noqa: F401
    except ImportError:
        with pytest.raises(RuntimeError, match=r"backend 'vllm' needs the vllm package"):
            load_generator(tiny_model_dir, GenerationConfig(backend="vllm"))


def test_answers_made_otherwise_are_never_mixed_in(hf, mt, tmp_path):
    qs = greedy_questions(mt, 3)
    path = generate_answers(None, qs[:2], tmp_path / "m.jsonl", model_id="m", cfg=GenerationConfig(max_new_tokens=4),
                            generator=hf, progress=False)
    path.write_bytes(path.read_bytes().rstrip(b"\n"))  # a valid last record without its newline: kept
    before = path.read_bytes()
    with pytest.raises(ValueError, match=r"m\.jsonl: its answers .* were made with max_new_tokens 4, not 5"):
        generate_answers(None, qs, path, model_id="m", cfg=GenerationConfig(max_new_tokens=5), generator=hf,
                         progress=False)
    assert path.read_bytes() == before  # refused, and nothing was changed
    rec = Recording(hf)
    generate_answers(None, qs, path, model_id="m", cfg=GenerationConfig(max_new_tokens=4), generator=rec,
                     progress=False)
    assert rec.n_prompts == 2  # only the third question; the unterminated record was kept, not redone
    recs = load_answers(path)
    assert sorted(recs) == sorted(q.question_id for q in qs)
    assert [json.loads(x)["answer_id"] for x in before.decode().splitlines()] == [
        recs[q.question_id]["answer_id"] for q in qs[:2]]


def test_answer_id_is_named_by_the_answer():
    from benchmarks.answers import answer_record

    key = {"checkpoint_sha256": "ab" * 32, "seed": 0}
    one, again = answer_record(81, "dpo", ["hi", "bye"], key), answer_record(81, "dpo", ["hi", "bye"], key)
    assert one["answer_id"] == again["answer_id"]  # the same answer in another run or worker: the same id
    others = [answer_record(82, "dpo", ["hi", "bye"], key), answer_record(81, "sft", ["hi", "bye"], key),
              answer_record(81, "dpo", ["hi", "ciao"], key), answer_record(81, "dpo", ["hi", "bye"], {**key, "seed": 1})]
    assert len({one["answer_id"], *(r["answer_id"] for r in others)}) == 5
