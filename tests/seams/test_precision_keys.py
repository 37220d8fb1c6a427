"""The dtype a result was computed in is part of what it is: answers, the local judge, Δπ tables, the
leaderboard and the reference cache record the dtype actually used ("auto" resolved), so results of a CPU
(float32) and of a GPU (bfloat16) never share a file or a table."""

from __future__ import annotations

import pytest


def test_answers_key_holds_the_resolved_dtype(tiny_model_dir, fastchat_data_dir, tmp_path, monkeypatch):
    import benchmarks.answers as A
    from benchmarks.fastchat_data import load_questions
    from benchmarks.generation import HFGenerator

    cfg = A.GenerationConfig(max_new_tokens=2)
    assert A.answers_key("abc", cfg)["dtype"] == "float32"  # "auto" on a CPU
    qs = [q for q in load_questions(fastchat_data_dir, "mt_bench") if q.category == "math"][:1]
    gen = HFGenerator(tiny_model_dir, device="cpu", dtype="fp32")
    path = A.generate_answers(None, qs, tmp_path / "m.jsonl", model_id="m", cfg=cfg, generator=gen, progress=False)
    before = path.read_bytes()
    # the same settings on a bf16 GPU: "auto" resolves to bfloat16 there
    monkeypatch.setattr(A, "resolved_dtype", lambda c: "bfloat16")
    with pytest.raises(ValueError, match=r"m\.jsonl: its answers .* were made with dtype 'float32', not 'bfloat16'"):
        A.generate_answers(None, qs, path, model_id="m", cfg=cfg, generator=gen, progress=False)
    assert path.read_bytes() == before


def test_local_judge_names_and_cache_keys_carry_its_dtype(tiny_model_dir, monkeypatch):
    import benchmarks.judge.local as L
    from benchmarks.judge.config import JudgeConfig, judge_name, reply_version

    cfg = JudgeConfig(backend="local", model=str(tiny_model_dir))
    cpu = (judge_name(cfg), reply_version(cfg))
    judge = L.LocalJudge(tiny_model_dir, device="cpu")
    assert (judge.model, judge.reply_version) == cpu == (f"local-{tiny_model_dir.name}", L.REPLY_VERSION)
    monkeypatch.setattr(L, "local_precision", lambda dtype="auto", device=None: "bfloat16")  # as on a bf16 GPU
    gpu = (judge_name(cfg), reply_version(cfg))
    assert gpu == (f"local-{tiny_model_dir.name}-bf16", L.REPLY_VERSION + "+bfloat16")


def test_delta_tables_record_their_precision_and_refuse_another(tiny_model_dir, tmp_path):
    from benchmarks.delta import DeltaConfig, delta_for_records

    recs = [{"id": "a", "prompt": "sea?", "chosen": " yes", "rejected": " no", "chosen_rating": 5,
             "rejected_rating": 1}]
    out = tmp_path / "d.csv"
    cfg = DeltaConfig(device="cpu", progress=False)
    table = delta_for_records(tiny_model_dir, tiny_model_dir, recs, out, model_id="m", cfg=cfg)
    assert table["precision"].tolist() == ["float32/None"]
    text = out.read_text().replace("float32/None", "float32/bfloat16")  # rows a bf16 GPU wrote
    out.write_text(text)
    with pytest.raises(ValueError, match=r"d\.csv: holds rows with precision 'float32/bfloat16', not 'float32/None'"):
        delta_for_records(tiny_model_dir, tiny_model_dir, recs + [{**recs[0], "id": "b"}], out, model_id="m", cfg=cfg)


def test_reference_cache_and_leaderboard_keys_hold_the_precision():
    import torch

    from benchmarks.leaderboard import LeaderboardConfig, _resolved_dtype
    from trainer.modeling import resolve_precision

    assert _resolved_dtype(LeaderboardConfig()) == "float32"  # auto, resolved, in result_settings' "dtype"
    plain = resolve_precision("cpu", "auto", "bf16")
    fsdp = resolve_precision("cpu", "auto", "bf16", fsdp=True)
    assert plain.key == "float32/bfloat16" and fsdp.key == "float32/bfloat16/params-bfloat16"
    assert fsdp.params == torch.bfloat16 and resolve_precision("cpu", "auto", "no", fsdp=True).key == "float32/None"
