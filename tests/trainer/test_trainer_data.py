"""trainer/data.py: formats, chat template, placement of p, truncation rules, errors, padding.

Expected token sequences are built by encoding hand-written strings (the ChatML layout written out),
never by calling the code under test.
"""

from __future__ import annotations

import json

import pytest
import torch

from trainer.data import (QUALITY_PROMPT, DataConfig, collate, load_preference_data, normalize_record,
                          tokenize_pairs)

P = QUALITY_PROMPT


@pytest.fixture(scope="module")
def tok(tiny_model_dir):
    from trainer.modeling import load_tokenizer

    return load_tokenizer(tiny_model_dir)


def enc(tok, text):
    return tok(text, add_special_tokens=False)["input_ids"]


def chatml(*turns, gen=False):
    s = "".join(f"<|im_start|>{r}\n{c}<|im_end|>\n" for r, c in turns)
    return s + ("<|im_start|>assistant\n" if gen else "")


def one(tok, rec, **cfg):
    pairs, report = tokenize_pairs([rec], tok, DataConfig(**cfg))
    assert report.kept == 1, report
    return pairs[0]


def test_quality_prompt_is_the_papers():
    assert P.startswith("Please generate a response with a usefulness rating of 100 out of 100")
    assert P.endswith("where 100 is the maximum and 1 is the minimum. Query:")
    assert "Note that the response should be harmless." in P


def test_plain_strings_eos_appended_and_placement(tok):
    rec = {"prompt": "Human: hi\n\nAssistant:", "chosen": " good", "rejected": " bad"}
    for placement in ("user", "raw"):  # plain text: both placements put p before the whole prompt
        pair = one(tok, rec, prompt_placement=placement)
        assert pair.prompt_ids == enc(tok, "Human: hi\n\nAssistant:")
        assert pair.chosen_ids == enc(tok, " good") + [tok.eos_token_id]
        assert pair.rejected_ids == enc(tok, " bad") + [tok.eos_token_id]
        # the tokens of "p " inserted, x's own tokens unchanged
        assert pair.refine_prompt_ids == enc(tok, P + " ") + enc(tok, "Human: hi\n\nAssistant:")


def test_messages_rendered_with_chat_template_and_p_in_user_turn(tok):
    rec = {"prompt": [{"role": "user", "content": "Hi there"}],
           "chosen": [{"role": "assistant", "content": "Hello"}],
           "rejected": [{"role": "assistant", "content": "Go away"}]}
    pair = one(tok, rec)
    head, rest = enc(tok, "<|im_start|>user\n"), enc(tok, "Hi there<|im_end|>\n<|im_start|>assistant\n")
    assert pair.prompt_ids == enc(tok, chatml(("user", "Hi there"), gen=True)) == head + rest
    assert pair.chosen_ids == enc(tok, "Hello<|im_end|>\n")
    assert pair.rejected_ids == enc(tok, "Go away<|im_end|>\n")
    assert pair.refine_prompt_ids == head + enc(tok, P + " ") + rest  # p at the start of the user content
    raw = one(tok, rec, prompt_placement="raw")
    assert raw.refine_prompt_ids == enc(tok, P + " ") + head + rest
    assert raw.chosen_ids == pair.chosen_ids


def test_p_goes_in_first_user_turn_of_a_conversation(tok):
    prompt = [{"role": "system", "content": "Be nice"}, {"role": "user", "content": "A"},
              {"role": "assistant", "content": "B"}, {"role": "user", "content": "C"}]
    rec = {"prompt": prompt, "chosen": [{"role": "assistant", "content": "D"}],
           "rejected": [{"role": "assistant", "content": "E"}]}
    pair = one(tok, rec)
    head = enc(tok, chatml(("system", "Be nice")) + "<|im_start|>user\n")
    rest = enc(tok, "A<|im_end|>\n" + chatml(("assistant", "B"), ("user", "C"), gen=True))
    assert pair.prompt_ids == head + rest
    assert pair.refine_prompt_ids == head + enc(tok, P + " ") + rest


def test_chat_template_forced_on_plain_strings(tok):
    rec = {"prompt": "Hi", "chosen": "Yes", "rejected": "No"}
    pair = one(tok, rec, chat_template=True)
    assert pair.prompt_ids == enc(tok, chatml(("user", "Hi"), gen=True))
    assert pair.chosen_ids == enc(tok, "Yes<|im_end|>\n")
    head = enc(tok, "<|im_start|>user\n")
    assert pair.refine_prompt_ids == head + enc(tok, P + " ") + enc(tok, "Hi<|im_end|>\n<|im_start|>assistant\n")


def test_ultrafeedback_binarized_strips_repeated_user_turn(tok):
    user = {"role": "user", "content": "Name a colour"}
    rec = {"prompt": "Name a colour", "chosen": [user, {"role": "assistant", "content": "Blue"}],
           "rejected": [user, {"role": "assistant", "content": "Seven"}], "score_chosen": 9.0}
    pair = one(tok, rec)
    assert pair.prompt_ids == enc(tok, chatml(("user", "Name a colour"), gen=True))
    assert pair.chosen_ids == enc(tok, "Blue<|im_end|>\n")
    assert pair.rejected_ids == enc(tok, "Seven<|im_end|>\n")


def test_implicit_prompt_messages_match_trl_extract_prompt():
    extract_prompt = pytest.importorskip("trl.data_utils").extract_prompt

    u1, a1 = {"role": "user", "content": "q1"}, {"role": "assistant", "content": "a1"}
    u2 = {"role": "user", "content": "q2"}
    rec = {"chosen": [u1, a1, u2, {"role": "assistant", "content": "yes"}],
           "rejected": [u1, a1, u2, {"role": "assistant", "content": "no"}]}
    kind, prompt, chosen, rejected = normalize_record(rec, "x")
    trl = extract_prompt(dict(rec))
    assert kind == "chat" and (prompt, chosen, rejected) == (trl["prompt"], trl["chosen"], trl["rejected"])


def test_implicit_prompt_hh_rlhf_strings_split_at_last_shared_assistant(tok):
    chosen = "\n\nHuman: Hi\n\nAssistant: Hello\n\nHuman: Tell me\n\nAssistant: Sure, here it is."
    rejected = "\n\nHuman: Hi\n\nAssistant: Hello\n\nHuman: Tell me\n\nAssistant: Sorry no."
    kind, prompt, c, r = normalize_record({"chosen": chosen, "rejected": rejected}, "x")
    assert (kind, prompt) == ("text", "\n\nHuman: Hi\n\nAssistant: Hello\n\nHuman: Tell me\n\nAssistant:")
    assert (c, r) == (" Sure, here it is.", " Sorry no.")
    # Shared words after "Assistant:" stay in the completions (the split is at the turn boundary)
    _, prompt, c, r = normalize_record({"chosen": "\n\nHuman: x\n\nAssistant: I think yes",
                                        "rejected": "\n\nHuman: x\n\nAssistant: I think no"}, "x")
    assert (prompt, c, r) == ("\n\nHuman: x\n\nAssistant:", " I think yes", " I think no")
    pair = one(tok, {"chosen": chosen, "rejected": rejected})
    assert pair.prompt_ids == enc(tok, "\n\nHuman: Hi\n\nAssistant: Hello\n\nHuman: Tell me\n\nAssistant:")


def test_truncation_long_prompt_keeps_its_end(tok):
    prompt = " ".join(f"w{i}" for i in range(60))
    full = enc(tok, prompt)
    c = enc(tok, " yes") + [tok.eos_token_id]
    L, Pm = len(full) + len(c) - 1, 10  # one token too long
    pairs, rep = tokenize_pairs([{"prompt": prompt, "chosen": " yes", "rejected": " no"}], tok,
                                DataConfig(max_length=L, max_prompt_length=Pm))
    assert pairs[0].prompt_ids == full[-Pm:]
    assert pairs[0].chosen_ids == c
    assert (rep.prompt_truncated, rep.completion_truncated) == (1, 0)
    assert pairs[0].prompt_truncated and not pairs[0].completion_truncated


def test_truncation_long_completion_cut_to_l_minus_p(tok):
    # the DPO reference code: completions are cut to max_length − max_prompt_length, even when the
    # prompt is shorter than max_prompt_length (so the pair may end shorter than max_length)
    long = " " + " ".join(["good"] * 50)
    c_full = enc(tok, long) + [tok.eos_token_id]
    pairs, rep = tokenize_pairs([{"prompt": "Hi", "chosen": long, "rejected": " no"}], tok,
                                DataConfig(max_length=20, max_prompt_length=8))
    assert pairs[0].prompt_ids == enc(tok, "Hi")  # shorter than max_prompt_length: untouched
    assert pairs[0].chosen_ids == c_full[:20 - 8]
    assert pairs[0].rejected_ids == enc(tok, " no") + [tok.eos_token_id]  # already short: unchanged
    assert rep.completion_truncated == 1 and rep.prompt_truncated == 0


def test_empty_completion_dropped_and_reported(tok, caplog):
    recs = [{"id": "a", "prompt": "Hi", "chosen": "", "rejected": " no"},
            {"id": "w", "prompt": "Hi", "chosen": " yes", "rejected": " \n\t "},  # whitespace only: the doc's rule 3
            {"id": "b", "prompt": [{"role": "user", "content": "Hi"}],
             "chosen": [{"role": "assistant", "content": "ok"}], "rejected": [{"role": "assistant", "content": " "}]},
            {"id": "c", "prompt": "Hi", "chosen": " yes", "rejected": " no"}]
    with caplog.at_level("WARNING"):
        pairs, rep = tokenize_pairs(recs, tok, DataConfig())
    assert [p.id for p in pairs] == ["c"]
    assert [d[0] for d in rep.dropped] == ["a", "w", "b"]
    assert {d[1] for d in rep.dropped} == {"empty or whitespace-only completion"}
    assert "dropped pair id a" in caplog.text and "dropped pair id b" in caplog.text


def test_p_is_inserted_after_truncation_and_may_exceed_max_length(tok):
    x = " ".join(f"w{i}" for i in range(40))
    rec = {"prompt": [{"role": "user", "content": x}], "chosen": [{"role": "assistant", "content": "ok"}],
           "rejected": [{"role": "assistant", "content": "no way"}]}
    full = one(tok, rec, max_length=10_000, max_prompt_length=9_000)
    longer = max(len(full.chosen_ids), len(full.rejected_ids))
    L, Pm = len(full.prompt_ids) + longer - 1, len(full.prompt_ids) - 5  # the prompt loses its first 5 tokens
    pairs, rep = tokenize_pairs([rec], tok, DataConfig(max_length=L, max_prompt_length=Pm))
    pair = pairs[0]
    assert rep.prompt_truncated == 1 and not rep.dropped
    assert pair.prompt_ids == full.prompt_ids[5:]  # the header is gone: p goes at the start of what is kept
    assert pair.refine_prompt_ids == enc(tok, P + " ") + full.prompt_ids[5:]
    assert (pair.chosen_ids, pair.rejected_ids) == (full.chosen_ids, full.rejected_ids)
    assert len(pair.refine_prompt_ids) + longer > L  # over max_length by |p|, never cut for it


def test_p_never_drops_a_pair(tok):
    # the header and p together are far longer than max_length: the pair is kept all the same
    rec = {"id": 7, "prompt": "Hi", "chosen": " yes", "rejected": " no"}
    pairs, rep = tokenize_pairs([rec], tok, DataConfig(max_length=12, max_prompt_length=6))
    assert [p.id for p in pairs] == [7] and not rep.dropped
    assert pairs[0].refine_prompt_ids == enc(tok, P + " ") + enc(tok, "Hi")


def test_p_plus_x_holds_the_x_tokens_unchanged(tok):
    # every pair, truncated or not, chat or plain text: removing p's tokens gives back x exactly
    p_ids = enc(tok, P + " ")
    words = lambda n: " ".join(f"v{i}" for i in range(n))  # noqa: E731
    recs = [{"prompt": words(n), "chosen": " " + words(m), "rejected": " no"} for n, m in ((3, 2), (30, 5), (8, 40))]
    recs += [{"prompt": [{"role": "system", "content": "S"}, {"role": "user", "content": words(n)}],
              "chosen": [{"role": "assistant", "content": words(m)}],
              "rejected": [{"role": "assistant", "content": "x"}]} for n, m in ((2, 2), (25, 3), (6, 30))]
    pairs, rep = tokenize_pairs(recs, tok, DataConfig(max_length=48, max_prompt_length=20))
    assert len(pairs) == len(recs) and rep.prompt_truncated >= 2 and rep.completion_truncated >= 2
    for p in pairs:
        r = p.refine_prompt_ids
        k = next(i for i in range(len(r)) if r[i:i + len(p_ids)] == p_ids)
        assert r[:k] + r[k + len(p_ids):] == p.prompt_ids


def test_malformed_records_name_file_line_and_field(tmp_path, tok):
    f = tmp_path / "d.jsonl"
    f.write_text(json.dumps({"prompt": "a", "chosen": "b", "rejected": "c"}) + "\n\n"
                 + json.dumps({"prompt": "a", "chosen": "b"}) + "\n")
    recs = load_preference_data(str(f))
    with pytest.raises(ValueError, match=r"d\.jsonl:3 \(id 1\): missing field 'rejected'"):
        tokenize_pairs(recs, tok, DataConfig(), source=str(f))
    f.write_text(json.dumps({"prompt": "a", "chosen": 3, "rejected": "c"}) + "\n")
    with pytest.raises(ValueError, match=r":1 \(id 0\): field 'chosen'"):
        tokenize_pairs(load_preference_data(str(f)), tok, DataConfig(), source=str(f))
    f.write_text(json.dumps({"prompt": [{"role": "user"}], "chosen": "b", "rejected": "c"}) + "\n")
    with pytest.raises(ValueError, match=r":1 \(id 0\): field 'prompt': message 0"):
        tokenize_pairs(load_preference_data(str(f)), tok, DataConfig(), source=str(f))
    f.write_text('{"prompt": "a"}\n{not json\n')
    with pytest.raises(ValueError, match=r"d\.jsonl:2: invalid JSON"):
        load_preference_data(str(f))
    with pytest.raises(ValueError, match="missing.jsonl: preference data file not found"):
        load_preference_data(str(tmp_path / "missing.jsonl"))
    f.write_text(json.dumps({"prompt": [{"role": "usr", "content": "a"}], "chosen": "b", "rejected": "c"}) + "\n")
    with pytest.raises(ValueError, match=r":1 \(id 0\): field 'prompt': message 0: role 'usr' is not one of"):
        tokenize_pairs(load_preference_data(str(f)), tok, DataConfig(), source=str(f))


def test_load_json_and_parquet_with_ids(tmp_path):
    import pandas as pd

    recs = [{"prompt": "a", "chosen": "b", "rejected": "c", "chosen_rating": 5},
            {"id": "x9", "prompt": "d", "chosen": "e", "rejected": "f", "chosen_rating": 2}]
    (tmp_path / "d.json").write_text(json.dumps(recs))
    pd.DataFrame(recs).to_parquet(tmp_path / "d.parquet")
    for name in ("d.json", "d.parquet"):
        out = load_preference_data(str(tmp_path / name))
        assert [r["id"] for r in out] == [0, "x9"]
        assert [r["chosen_rating"] for r in out] == [5, 2]


def test_collate_pads_to_batch_max_only(tok):
    recs = [{"prompt": "Hi", "chosen": " yes", "rejected": " no no no"},
            {"prompt": "Hello there you", "chosen": " ok", "rejected": " n"}]
    pairs, _ = tokenize_pairs(recs, tok, DataConfig())
    b = collate(pairs, pad_id=tok.pad_token_id, refine=True)
    lens = [len(p.prompt_ids) + len(c) for c, p in
            [(pairs[0].chosen_ids, pairs[0]), (pairs[1].chosen_ids, pairs[1]),
             (pairs[0].rejected_ids, pairs[0]), (pairs[1].rejected_ids, pairs[1])]]
    assert b["input_ids"].shape == (4, max(lens))
    assert b["attention_mask"].sum(1).tolist() == lens
    for row, (p, c) in enumerate([(pairs[0], pairs[0].chosen_ids), (pairs[1], pairs[1].chosen_ids),
                                  (pairs[0], pairs[0].rejected_ids), (pairs[1], pairs[1].rejected_ids)]):
        n = len(p.prompt_ids)
        assert b["input_ids"][row, :n + len(c)].tolist() == p.prompt_ids + c
        assert (b["input_ids"][row, n + len(c):] == tok.pad_token_id).all()
        assert b["loss_mask"][row].nonzero().flatten().tolist() == list(range(n, n + len(c)))
        rn = len(p.refine_prompt_ids)
        assert b["refine_input_ids"][row, :rn + len(c)].tolist() == p.refine_prompt_ids + c
        assert b["refine_loss_mask"][row].sum().item() == len(c)
    assert b["refine_input_ids"].shape[1] == max(len(p.refine_prompt_ids) + max(len(p.chosen_ids),
                                                                                 len(p.rejected_ids)) for p in pairs)
    assert b["loss_mask"].dtype == torch.bool


def test_raw_placement_with_smollm2s_tokenizer_goes_before_its_chat_marker():
    """SmolLM2's bos_token is <|im_start|>, which it never adds: a chat marker, not a sequence start. p goes
    before the whole rendered prompt, not inside its first header."""
    from transformers import AutoTokenizer

    from trainer import default_model as dm

    gguf = dm.find_gguf()
    smol = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    assert smol.bos_token == "<|im_start|>" and smol("hi")["input_ids"][0] != smol.bos_token_id
    rec = {"prompt": [{"role": "user", "content": "Hi there"}], "chosen": [{"role": "assistant", "content": "Hello"}],
           "rejected": [{"role": "assistant", "content": "Go away"}]}
    pair = one(smol, rec, prompt_placement="raw")
    rendered = smol.apply_chat_template(rec["prompt"], tokenize=False, add_generation_prompt=True)
    assert rendered.startswith("<|im_start|>system\n")
    assert pair.refine_prompt_ids == enc(smol, P + " ") + enc(smol, rendered)
