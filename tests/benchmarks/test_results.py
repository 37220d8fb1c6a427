"""Result tables: MT-Bench scores equal FastChat's show_result, the pairwise tie rule, bootstrap CIs over
questions, the Table-2 layout, and clear errors on malformed judgment files."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from benchmarks import results as R


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def capture_show_result(monkeypatch, func, **args) -> list:
    """Run a FastChat show_result function and return what it printed (the DataFrames themselves)."""
    from fastchat.llm_judge import show_result

    printed = []
    monkeypatch.setattr(show_result, "print", lambda *a, **k: printed.extend(a), raising=False)
    func(argparse.Namespace(**args))
    return [p for p in printed if isinstance(p, pd.DataFrame)]


@pytest.fixture
def single_file(tmp_path) -> Path:
    rng = np.random.default_rng(1)
    recs = []
    for model in ("m-a", "m-b", "m-c"):
        for qid in range(81, 161):
            for turn in (1, 2):
                score = float(rng.integers(1, 11)) if rng.random() > 0.1 else -1  # some "no verdict"
                if rng.random() < 0.2 and score > 0:
                    score -= 0.5  # FastChat scores can be fractional ([[7.5]])
                recs.append({"question_id": qid, "model": model, "judge": ["gpt-4", "single-v1"],
                             "user_prompt": "", "judgment": "", "score": score, "turn": turn, "tstamp": 0.0})
    return write_jsonl(tmp_path / "gpt-4_single.jsonl", recs)


def test_mt_bench_scores_equal_fastchat_show_result(single_file, monkeypatch):
    from fastchat.llm_judge.show_result import display_result_single

    first, second, average = capture_show_result(monkeypatch, display_result_single, input_file=str(single_file),
                                                 bench_name="mt_bench", model_list=None)
    ours = R.mt_bench_scores(R.load_single_judgments(single_file))
    assert set(ours.index) == {"m-a", "m-b", "m-c"}
    for model in ours.index:
        assert ours.loc[model, "turn_1"] == first.loc[(model, 1), "score"]
        assert ours.loc[model, "turn_2"] == second.loc[(model, 2), "score"]
        assert ours.loc[model, "overall"] == average.loc[model, "score"]
    raw = pd.read_json(single_file, lines=True)
    errors = raw[raw["score"] == -1].groupby("model").size()
    assert (ours["n_errors"] == errors.reindex(ours.index)).all() and errors.sum() > 0
    assert list(ours.index) == list(average.sort_values("score", ascending=False).index)  # best first


def test_mt_bench_scores_filter_by_judge(single_file):
    df = R.load_single_judgments(single_file)
    other = df.assign(judge_model="gpt-4o", score=10.0)
    both = pd.concat([df, other], ignore_index=True)
    assert R.mt_bench_scores(both, judge="gpt-4")["overall"].equals(R.mt_bench_scores(df)["overall"])
    assert (R.mt_bench_scores(both, judge="gpt-4o")["overall"] == 10.0).all()


def test_category_scores(tmp_path):
    from benchmarks.fastchat_data import Question

    qs = [Question(1, "writing", ["q"]), Question(2, "math", ["q"]), Question(3, "writing", ["q"])]
    recs = [{"question_id": q, "model": "m", "judge": ["gpt-4", "x"], "score": s, "turn": t}
            for q, s, t in ((1, 4, 1), (1, 6, 2), (3, 8, 1), (3, -1, 2), (2, 3, 1), (2, 5, 2))]
    cats = R.mt_bench_category_scores(R.load_single_judgments(write_jsonl(tmp_path / "s.jsonl", recs)), qs)
    assert list(cats.columns) == ["writing", "math"]
    assert cats.loc["m", "writing"] == pytest.approx(6.0) and cats.loc["m", "math"] == pytest.approx(4.0)


def pair(qid, turn, m1, m2, g1, g2):
    return {"question_id": qid, "model_1": m1, "model_2": m2, "g1_winner": g1, "g2_winner": g2,
            "judge": ["gpt-4", "pair-v2"], "turn": turn, "tstamp": 0.0}


PAIRS = [
    pair(1, 1, "A", "B", "model_1", "model_1"),  # A wins in both orders
    pair(1, 2, "A", "B", "model_2", "model_2"),  # B wins in both orders
    pair(2, 1, "A", "B", "tie", "tie"),
    pair(2, 2, "A", "B", "model_1", "model_2"),  # orders disagree: tie
    pair(3, 1, "A", "B", "model_1", "tie"),  # one order says tie: tie
    pair(3, 2, "A", "B", "error", "model_1"),  # an error game: left out
    pair(4, 1, "B", "A", "model_2", "model_2"),  # file names B first: A wins
    pair(4, 2, "B", "A", "model_1", "model_1"),  # B wins
    pair(5, 1, "A", "C", "model_1", "model_1"),  # another comparison
]


def test_pairwise_outcomes_and_tie_rule(tmp_path):
    df = R.load_pair_judgments(write_jsonl(tmp_path / "p.jsonl", PAIRS))
    out = R.pairwise_outcomes(df, "A", "B")
    got = {(r.question_id, r.turn): r.outcome for r in out.itertuples()}
    assert got == {(1, 1): "win", (1, 2): "loss", (2, 1): "tie", (2, 2): "tie", (3, 1): "tie",
                   (4, 1): "win", (4, 2): "loss"}
    assert out.attrs["n_errors"] == 1
    flipped = R.pairwise_outcomes(df, "B", "A")
    swap = {"win": "loss", "loss": "win", "tie": "tie"}
    assert [swap[o] for o in flipped["outcome"]] == list(out["outcome"])


def test_pairwise_counts_equal_fastchat_show_result(tmp_path, monkeypatch):
    from fastchat.llm_judge.show_result import display_result_pairwise

    path = write_jsonl(tmp_path / "p.jsonl", [p for p in PAIRS if "C" not in (p["model_1"], p["model_2"])])
    (table,) = capture_show_result(monkeypatch, display_result_pairwise, input_file=str(path), bench_name="mt_bench",
                                   model_list=None, baseline_model="B")
    r = R.win_rates(R.pairwise_outcomes(R.load_pair_judgments(path), "A", "B"))
    assert r["n"] == table.loc["A", ["win", "loss", "tie"]].sum()
    assert r["win"] == pytest.approx(table.loc["A", "win_rate"])
    assert r["loss"] == pytest.approx(table.loc["A", "loss_rate"])
    assert r["adjusted_win_rate"] == pytest.approx(table.loc["A", "win_rate_adjusted"])


def outcomes_frame(per_question: list[list[str]]) -> pd.DataFrame:
    return pd.DataFrame([{"question_id": q, "turn": t + 1, "outcome": o}
                         for q, turns in enumerate(per_question) for t, o in enumerate(turns)])


def test_win_rates_and_bootstrap_over_questions():
    rng = np.random.default_rng(0)
    choices = np.array(["win", "tie", "loss"])
    out = outcomes_frame([list(rng.choice(choices, 2, p=[0.45, 0.35, 0.2])) for _ in range(80)])
    r = R.win_rates(out, n_boot=2000, seed=3)
    counts = out["outcome"].value_counts()
    assert r["n"] == 160 and r["n_questions"] == 80
    assert r["win"] + r["tie"] + r["loss"] == pytest.approx(1.0)
    assert r["win_rate"] == r["win"] == counts["win"] / 160
    assert r["adjusted_win_rate"] == pytest.approx((counts["win"] + 0.5 * counts["tie"]) / 160)
    assert r["win_ci_low"] < r["win_rate"] < r["win_ci_high"]
    assert r["adjusted_ci_low"] < r["adjusted_win_rate"] < r["adjusted_ci_high"]

    # the same CI straight from scipy, on per-question counts resampled together
    g = out.groupby("question_id")["outcome"]
    w = g.apply(lambda s: (s == "win").sum()).to_numpy(float)
    t = g.apply(lambda s: (s == "tie").sum()).to_numpy(float)
    k = g.size().to_numpy(float)
    ci = stats.bootstrap((w, t, k), lambda w, t, k, axis: (w + 0.5 * t).sum(axis) / k.sum(axis), paired=True,
                         vectorized=True, n_resamples=2000, method="percentile",
                         rng=np.random.default_rng(3)).confidence_interval
    assert (r["adjusted_ci_low"], r["adjusted_ci_high"]) == pytest.approx((ci.low, ci.high))

    # and close to a plain NumPy bootstrap over questions
    idx = np.random.default_rng(7).integers(0, 80, size=(4000, 80))
    boot = (w[idx] + 0.5 * t[idx]).sum(1) / k[idx].sum(1)
    assert np.quantile(boot, [0.025, 0.975]) == pytest.approx([r["adjusted_ci_low"], r["adjusted_ci_high"]], abs=0.02)


def test_bootstrap_keeps_the_turns_of_a_question_together():
    # both turns always agree: 80 independent questions, not 160 independent outcomes
    out = outcomes_frame([[o, o] for o in ["win"] * 40 + ["loss"] * 40])
    r = R.win_rates(out, n_boot=2000, seed=0)
    rows = (out["outcome"] == "win").to_numpy(float)
    iid = stats.bootstrap((rows,), np.mean, n_resamples=2000, method="percentile",
                          rng=np.random.default_rng(0)).confidence_interval
    assert r["win_ci_high"] - r["win_ci_low"] > 1.25 * (iid.high - iid.low)  # about sqrt(2) wider


def test_win_rates_degenerate_and_empty():
    r = R.win_rates(outcomes_frame([["win", "win"]] * 5))
    assert r["win_rate"] == r["win_ci_low"] == r["win_ci_high"] == 1.0
    r = R.win_rates(outcomes_frame([]).reindex(columns=["question_id", "turn", "outcome"]))
    assert r["n"] == 0 and np.isnan(r["win_rate"]) and np.isnan(r["adjusted_ci_low"])


def test_pairwise_table_layout(tmp_path):
    df = R.load_pair_judgments(write_jsonl(tmp_path / "p.jsonl", PAIRS))
    table = R.pairwise_table(df, [("A", "B"), ("A", "C")], n_boot=500)
    assert list(table.columns[:7]) == ["comparison", "model_a", "model_b", "win", "tie", "loss", "n"]
    assert list(table["comparison"]) == ["A vs B", "A vs C"]
    ab = table.iloc[0]
    assert (ab["win"], ab["tie"], ab["loss"]) == pytest.approx((100 * 2 / 7, 100 * 3 / 7, 100 * 2 / 7))
    # one unit in the whole table: percent (the adjusted win rate is win + tie/2, in percent too)
    assert ab["adjusted_win_rate"] == pytest.approx(100 * 2 / 7 + 50 * 3 / 7)
    assert ab["adjusted_ci_low"] <= ab["adjusted_win_rate"] <= ab["adjusted_ci_high"] <= 100
    assert ab["n"] == 7 and ab["n_errors"] == 1
    assert (table["win"] + table["tie"] + table["loss"]).round(9).eq(100).all()
    base = R.baseline_table(df, ["A", "B"], "C")
    assert list(base["comparison"]) == ["A vs C", "B vs C"] and base.iloc[1]["n"] == 0
    assert "A vs B" in R.format_table(table)


def test_malformed_judgment_files_name_file_line_field(tmp_path):
    bad = write_jsonl(tmp_path / "s.jsonl", [{"question_id": 1, "model": "m", "score": 5, "turn": 1},
                                             {"question_id": 2, "model": "m", "turn": 1}])
    with pytest.raises(ValueError, match=r"s\.jsonl:2: missing field 'score'"):
        R.load_single_judgments(bad)
    bad = write_jsonl(tmp_path / "p.jsonl", [{**pair(1, 1, "A", "B", "model_1", "A")}])
    with pytest.raises(ValueError, match=r"p\.jsonl:1: field 'g2_winner'"):
        R.load_pair_judgments(bad)
    (tmp_path / "j.jsonl").write_text('{"question_id": 1}\n{not json\n')
    with pytest.raises(ValueError, match=r"j\.jsonl:2: invalid JSON"):
        R.load_single_judgments(tmp_path / "j.jsonl")


def test_duplicated_judgments_count_once_with_a_warning(tmp_path, caplog):
    # two runs appended into one file (or files concatenated by hand): each judgment must count once
    single = [{"question_id": q, "model": "m", "judge": ["gpt-4", "single-v1"], "score": s, "turn": 1}
              for q, s in ((81, 6), (82, 6))]
    path = write_jsonl(tmp_path / "s.jsonl", single + [{**single[0], "score": 10}])
    with caplog.at_level("WARNING"):
        scores = R.mt_bench_scores(R.load_single_judgments(path))
    assert scores.loc["m", "overall"] == 6.0  # not (6 + 6 + 10) / 3
    assert "1 duplicate single-grading judgments dropped" in caplog.text
    pair = {"question_id": 81, "model_1": "A", "model_2": "B", "g1_winner": "model_1", "g2_winner": "model_1",
            "judge": ["gpt-4", "pair-v2"], "turn": 1}
    swapped = {**pair, "model_1": "B", "model_2": "A", "g1_winner": "model_2", "g2_winner": "model_2"}
    caplog.clear()
    with caplog.at_level("WARNING"):
        df = R.load_pair_judgments(write_jsonl(tmp_path / "p.jsonl", [pair, pair, swapped]))
    assert len(R.pairwise_outcomes(df, "A", "B")) == 1
    assert "2 duplicate pairwise judgments dropped" in caplog.text
