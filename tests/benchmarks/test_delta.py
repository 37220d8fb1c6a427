"""`srdpo-eval delta`: Δπ, m(x) and β·m(x) on tiny local models, checked against plain transformers."""

from __future__ import annotations

import argparse
import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from trainer.data import QUALITY_PROMPT

RECORDS = [
    {"id": "a", "prompt": "Human: What is the capital of France? Assistant:", "chosen": " Paris.",
     "rejected": " The sea is big.", "chosen_rating": 5, "rejected_rating": 2},
    {"id": "b", "prompt": "Write a short poem about the sea.", "chosen": " Waves of blue",
     "rejected": " no", "chosen_rating": 4, "rejected_rating": 4},
    {"id": "c", "prompt": "Explain how photosynthesis works.", "chosen": " Plants use light.",
     "rejected": " The quick brown fox.", "chosen_rating": 3.5, "rejected_rating": 1},
    {"id": "d", "prompt": "0 1 2 3", "chosen": " 4 5 6", "rejected": " 9 9 9", "chosen_rating": 5,
     "rejected_rating": 1},
    {"id": "e", "prompt": "yes or no?", "chosen": " yes", "rejected": " no good bad", "chosen_rating": 2,
     "rejected_rating": 3},
]


@pytest.fixture(scope="module")
def models(tiny_model_dir, tmp_path_factory):
    """reference = the tiny model; 'same' = a copy of it (a separate load); 'other' = different weights."""
    from tiny import build_tiny_model

    root = tmp_path_factory.mktemp("delta-models")
    same = root / "same"
    shutil.copytree(tiny_model_dir, same)
    other = build_tiny_model(root / "other", seed=1)
    return {"ref": tiny_model_dir, "same": same, "other": other}


def _cfg(**kw):
    from benchmarks.delta import DeltaConfig

    return DeltaConfig(batch_size=2, chunk_size=2, dtype="fp32", device="cpu", progress=False, **kw)


def _context_ids(tok, prompt: str, with_p: bool) -> list[int]:
    """x's tokens; with p, the tokens of "p " inserted before them (after a BOS): docs/method.md."""
    ids = tok(prompt, add_special_tokens=True)["input_ids"]
    if not with_p:
        return ids
    k = 1 if ids and ids[0] == tok.bos_token_id else 0
    return ids[:k] + tok(QUALITY_PROMPT + " ", add_special_tokens=False)["input_ids"] + ids[k:]


def _seq_logp(model, tok, ctx: list[int], completion: str) -> tuple[float, int]:
    """log π(completion|context) summed over completion tokens (+ EOS), from the full logits in float64."""
    comp = tok(completion, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    ids = torch.tensor([ctx + comp])
    with torch.no_grad():
        logp = torch.log_softmax(model(ids).logits[0].double(), -1)
    targets = ids[0, len(ctx):]
    return float(logp[len(ctx) - 1:-1].gather(-1, targets[:, None]).sum()), len(comp)


def test_policy_equal_to_reference_gives_zero(models, tmp_path):
    from benchmarks.delta import delta_for_records

    t = delta_for_records(models["same"], models["ref"], [dict(r) for r in RECORDS], tmp_path / "d.csv",
                      model_id="same", cfg=_cfg())
    assert list(t["id"]) == [r["id"] for r in RECORDS]
    for col in ("delta", "margin", "reward_margin", "margin_p"):
        np.testing.assert_array_equal(t[col].to_numpy(), 0.0)
    assert (t["logp_chosen"] < 0).all()  # real log-probs were computed, not zeros
    np.testing.assert_allclose(t["rating_diff"], [r["chosen_rating"] - r["rejected_rating"] for r in RECORDS])


def test_values_match_an_independent_computation(models, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from benchmarks.delta import delta_for_records

    beta = 0.25
    t = delta_for_records(models["other"], models["ref"], [dict(r) for r in RECORDS], tmp_path / "d.csv",
                      model_id="other", cfg=_cfg(beta=beta)).set_index("id")
    tok = AutoTokenizer.from_pretrained(models["ref"])
    pol = AutoModelForCausalLM.from_pretrained(models["other"], dtype=torch.float32).eval()
    ref = AutoModelForCausalLM.from_pretrained(models["ref"], dtype=torch.float32).eval()
    for r in RECORDS:
        def m(with_p):
            context = _context_ids(tok, r["prompt"], with_p)
            (pc, nc), (pr, nr) = (_seq_logp(pol, tok, context, r[k]) for k in ("chosen", "rejected"))
            (rc, _), (rr, _) = (_seq_logp(ref, tok, context, r[k]) for k in ("chosen", "rejected"))
            return (pc - rc) - (pr - rr), nc, nr, pc

        m_x, nc, nr, pc = m(False)
        m_p, *_ = m(True)
        row = t.loc[r["id"]]
        assert abs(m_x) > 1e-4  # the two models really differ
        assert row["margin"] == pytest.approx(m_x, abs=2e-4)
        assert row["reward_margin"] == pytest.approx(beta * m_x, abs=1e-4)
        assert row["margin_p"] == pytest.approx(m_p, abs=2e-4)
        assert row["delta"] == pytest.approx(beta * m_p, abs=1e-4)
        assert row["logp_chosen"] == pytest.approx(pc, abs=2e-4)
        assert (row["chosen_tokens"], row["rejected_tokens"], row["length_diff"]) == (nc, nr, nc - nr)


def test_resume_computes_only_missing_ids(models, tmp_path, monkeypatch):
    import trainer.scoring
    from benchmarks.delta import delta_for_records

    out = tmp_path / "d.csv"
    full = delta_for_records(models["other"], models["ref"], [dict(r) for r in RECORDS], tmp_path / "full.csv",
                         model_id="other", cfg=_cfg())
    delta_for_records(models["other"], models["ref"], [dict(r) for r in RECORDS[:3]], out, model_id="other", cfg=_cfg())
    with open(out, "a") as f:  # a writer killed mid-line
        f.write("d,other,0.1")
    seen = []
    real = trainer.scoring.pair_logps

    def spy(model, pairs, **kw):
        seen.extend(str(p.id) for p in pairs)
        return real(model, pairs, **kw)

    monkeypatch.setattr(trainer.scoring, "pair_logps", spy)
    again = delta_for_records(models["other"], models["ref"], [dict(r) for r in RECORDS], out, model_id="other", cfg=_cfg())
    assert sorted(set(seen)) == ["d", "e"]  # policy and reference each scored only the missing pairs
    assert list(again["id"]) == [r["id"] for r in RECORDS]
    pd.testing.assert_frame_equal(again[["id", "delta", "margin"]], full[["id", "delta", "margin"]], atol=1e-9)
    seen.clear()
    delta_for_records(models["other"], models["ref"], [dict(r) for r in RECORDS], out, model_id="other", cfg=_cfg())
    assert seen == []  # complete: nothing recomputed, no model loaded
    with pytest.raises(ValueError, match="beta"):
        delta_for_records(models["other"], models["ref"], [dict(r) for r in RECORDS], out, model_id="other",
                      cfg=_cfg(beta=0.5))


def test_bad_rating_names_the_record_and_field(models, tmp_path):
    from benchmarks.delta import delta_for_records

    bad = [dict(RECORDS[0], chosen_rating="five", _line=7)]
    with pytest.raises(ValueError, match=r"pairs.jsonl:7.*'chosen_rating'"):
        delta_for_records(models["other"], models["ref"], bad, tmp_path / "d.csv", model_id="x", cfg=_cfg(),
                      source="pairs.jsonl")


def test_cli_uses_checkpoint_info_and_rating_fields(models, tmp_path):
    from benchmarks.cli import register_delta as register

    ckpt = tmp_path / "train" / "sr-dpo" / "final"
    shutil.copytree(models["other"], ckpt)
    (ckpt / "srdpo_info.json").write_text(json.dumps({"objective": "sr-dpo", "beta": 0.2, "lam": 0.5,
                                                      "ref_model": str(models["ref"]), "reduce": "sum"}))
    pairs = tmp_path / "uf.jsonl"
    pairs.write_text("".join(json.dumps({k: v for k, v in r.items() if "rating" not in k}
                                        | {"score_chosen": r["chosen_rating"], "score_rejected": r["rejected_rating"]})
                             + "\n" for r in RECORDS))
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["delta", str(ckpt), "--pairs", str(pairs), "--run-dir", str(tmp_path / "run"),
                              "--rating-fields", "score_chosen,score_rejected", "--device", "cpu", "--dtype", "fp32",
                              "--limit", "4"])
    assert args.func(args) == 0
    t = pd.read_csv(tmp_path / "run" / "delta" / "sr-dpo.csv")
    assert len(t) == 4 and set(t["model_id"]) == {"sr-dpo"} and set(t["beta"]) == {0.2}
    assert t["rating_diff"].notna().all()
    np.testing.assert_allclose(t["delta"], 0.2 * t["margin_p"])


def test_pairs_from_answers(tmp_path, fastchat_data_dir):
    from benchmarks.delta import pairs_from_answers
    from trainer.data import load_preference_data

    qids = [81, 82, 83]

    def answers(model, text):
        return "".join(json.dumps({"question_id": q, "answer_id": f"{model}{q}", "model_id": model,
                                   "choices": [{"index": 0, "turns": [f"{text} {q}", "second"]}], "tstamp": 0})
                       + "\n" for q in qids[: 2 if model == "b" else 3])

    (tmp_path / "a.jsonl").write_text(answers("a", "answer A"))
    (tmp_path / "b.jsonl").write_text(answers("b", "answer B"))
    single = [{"question_id": q, "model": m, "judge": ["gpt-4", "single-v1"], "user_prompt": "", "judgment": "",
               "score": s, "turn": t, "tstamp": 0}
              for q in qids for m, s in (("a", 8), ("b", 3 if q == 81 else -1)) for t in (1, 2)]
    (tmp_path / "s.jsonl").write_text("".join(json.dumps(r) + "\n" for r in single))
    n = pairs_from_answers(tmp_path / "a.jsonl", tmp_path / "b.jsonl", tmp_path / "s.jsonl", tmp_path / "p.jsonl",
                           bench="mt_bench", model_a="a", model_b="b", data_dir=fastchat_data_dir)
    assert n == 2  # question 83 has no answer from b
    recs = load_preference_data(str(tmp_path / "p.jsonl"))
    assert [r["id"] for r in recs] == ["mt_bench-81", "mt_bench-82"]
    assert recs[0]["chosen"][0]["content"] == "answer A 81" and recs[0]["rejected"][0]["content"] == "answer B 81"
    assert recs[0]["prompt"][0]["role"] == "user" and recs[0]["prompt"][0]["content"].startswith("Compose")
    assert (recs[0]["chosen_rating"], recs[0]["rejected_rating"]) == (8, 3)
    assert recs[1]["rejected_rating"] is None  # score −1: no verdict


def test_compute_delta_reads_defaults_from_the_checkpoint(models, tmp_path):
    from benchmarks.delta import compute_delta, delta_for_records

    ckpt = tmp_path / "train" / "sr-ipo" / "final"
    shutil.copytree(models["other"], ckpt)
    (ckpt / "srdpo_info.json").write_text(json.dumps({"beta": 0.3, "ref_model": str(models["ref"]), "reduce": "sum"}))
    pairs = tmp_path / "p.jsonl"
    pairs.write_text("".join(json.dumps(r) + "\n" for r in RECORDS))
    t = compute_delta(ckpt, pairs, tmp_path / "a.csv", cfg=_cfg(max_pairs=3))
    assert len(t) == 3 and set(t["model_id"]) == {"sr-ipo"} and set(t["beta"]) == {0.3}
    direct = delta_for_records(models["other"], models["ref"], [dict(r) for r in RECORDS if r["id"] in set(t["id"])],
                               tmp_path / "b.csv", model_id="sr-ipo", cfg=_cfg(beta=0.3))
    np.testing.assert_allclose(t["delta"], direct["delta"], atol=1e-9)


def test_reference_cache_is_shared_by_the_policies(models, tmp_path, monkeypatch):
    """With ref_cache_dir the reference is scored once for several policies on the same pairs, and the
    tables equal those scored without the cache."""
    import trainer.modeling
    from benchmarks.delta import delta_for_records

    plain = {m: delta_for_records(models[m], models["ref"], [dict(r) for r in RECORDS], tmp_path / f"{m}.csv",
                                  model_id=m, cfg=_cfg()) for m in ("other", "same")}
    loads = []
    real = trainer.modeling.load_causal_lm
    monkeypatch.setattr(trainer.modeling, "load_causal_lm", lambda path, **kw: loads.append(str(path)) or real(path, **kw))
    for m in ("other", "same"):
        cached = delta_for_records(models[m], models["ref"], [dict(r) for r in RECORDS], tmp_path / f"{m}-c.csv",
                                   model_id=m, cfg=_cfg(), ref_cache_dir=tmp_path / "refcache")
        cols = ["delta", "margin", "margin_p", "ref_logp_chosen", "ref_logp_p_rejected"]
        pd.testing.assert_frame_equal(cached[cols], plain[m][cols], atol=1e-5)
    assert loads.count(str(models["ref"])) == 1 and len(list((tmp_path / "refcache").glob("ref-*"))) == 1
