"""The local judge's calibrated records: single grading against the content-free prior, pairwise pooled over
both orders, each checked against probabilities computed by hand on a tiny model; the order effect
cancels exactly; the tie rule; Table 2 from the records' own verdicts."""

from __future__ import annotations

import json
import math
import re

import pandas as pd
import pytest

from benchmarks import results as R
from benchmarks.fastchat_data import load_judge_prompts, load_questions
from benchmarks.judge import calibration as C
from benchmarks.judge.local import JudgeScore, LocalJudge
from benchmarks.judge.run import judge_pairwise, judge_single
from contracts.run_dir import RunDir
from contracts.tables import PAIR_CALIBRATED, SINGLE_CALIBRATED
from judge_reference import RATINGS, reference_probs

ONE_SCORE = re.compile(r"\[\[(\d+\.?\d*)\]\]")  # FastChat's rating pattern
QUESTIONS = (81, 111)  # writing (single-v1, pair-v2) and math (the reference-based prompts)
ANSWERS = {"alpha": "Here is a clear, correct and complete answer.", "beta": "Potato potato potato."}


def messages(prompt, **fields):
    return [{"role": "system", "content": prompt.system_prompt},
            {"role": "user", "content": prompt.prompt_template.format(**fields)}]


def write_answers(path, questions, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"question_id": q.question_id, "answer_id": str(q.question_id), "model_id": "x",
                                        "choices": [{"index": 0, "turns": [f"{text} ({i})" for i in (1, 2)]}],
                                        "tstamp": 0.0}) + "\n" for q in questions))


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    """A tiny judge whose context holds MT-Bench's longest judge prompts whole (the byte-level tokenizer
    spends many tokens on them): a cut prompt would differ from the hand-computed one."""
    from tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-long"), max_positions=8192)


@pytest.fixture(scope="module")
def judged(tiny_model_dir, fastchat_data_dir, tmp_path_factory):
    """A run with three models (``alpha-copy`` answers exactly as ``alpha``), judged by the tiny local judge
    on the first question of each category, limited to four: single grading and two pairs."""
    run = tmp_path_factory.mktemp("calibrated")
    questions = [q for q in load_questions(fastchat_data_dir, "mt_bench")]
    for model, text in {**ANSWERS, "alpha-copy": ANSWERS["alpha"]}.items():
        write_answers(RunDir(run).answers("mt_bench", model), questions, text)
    judge = LocalJudge(tiny_model_dir, device="cpu", dtype="fp32")
    kw = dict(data_dir=fastchat_data_dir, per_category=1, limit=4, progress=False)
    single = judge_single(run, "mt_bench", judge, **kw)
    pair = judge_pairwise(run, "mt_bench", judge, pairs=[("alpha", "beta"), ("alpha", "alpha-copy")], **kw)
    records = {mode: [json.loads(l) for l in RunDir(run).judgments("mt_bench", judge.model, mode).read_text().splitlines()]
               for mode in ("single", "pairwise")}
    return run, judge, records, single, pair, {q.question_id: q for q in questions}


def single_fields(q, turn, answer):
    """The fields of FastChat's single templates for turn 1 or 2 (the math prompt adds the references)."""
    if turn == 1:
        f = dict(question=q.turns[0], answer=answer[0])
    else:
        f = dict(question_1=q.turns[0], question_2=q.turns[1], answer_1=answer[0], answer_2=answer[1])
    if q.category == "math":
        f.update(ref_answer_1=q.reference[0], **({"ref_answer_2": q.reference[1]} if turn == 2 else {}))
    return f


def test_questions_are_the_first_of_each_category_then_limited(judged):
    _, _, records, single, _, questions = judged
    assert sorted({r["question_id"] for r in records["single"]}) == [81, 91, 101, 111]
    # 3 models x 4 questions x 2 turns graded; alpha-copy's prompts are alpha's, and the content-free prior
    # is the same for every model: each distinct prompt is asked once
    assert single.matches == 24 and single.calls_needed == single.calls_made == 2 * 8 + 8


def test_single_score_is_the_expected_rating_under_the_prior_corrected_distribution(judged, fastchat_data_dir,
                                                                                   tiny_model_dir):
    _, _, records, _, _, questions = judged
    prompts = load_judge_prompts(fastchat_data_dir)
    checked = 0
    for rec in records["single"]:
        if rec["question_id"] not in QUESTIONS or rec["model"] == "alpha-copy":
            continue
        q, turn = questions[rec["question_id"]], rec["turn"]
        prompt = prompts[rec["judge"][1]]
        answer = [f"{ANSWERS[rec['model']]} ({i})" for i in (1, 2)]
        p = reference_probs(tiny_model_dir, messages(prompt, **single_fields(q, turn, answer)), "single", RATINGS)
        p0 = reference_probs(tiny_model_dir, messages(prompt, **single_fields(q, turn, ["N/A", "N/A"])),
                             "single", RATINGS)
        ratio = [a / b for a, b in zip(p, p0)]
        cal = [r / sum(ratio) for r in ratio]
        score = sum(k * c for k, c in zip(range(1, 11), cal))
        assert rec["rating_probs"] == pytest.approx(p, abs=1e-6)
        assert rec["prior_probs"] == pytest.approx(p0, abs=1e-6)
        assert rec["calibrated_probs"] == pytest.approx(cal, abs=1e-6)
        assert rec["score"] == pytest.approx(score, abs=1e-6)
        assert float(ONE_SCORE.search(rec["judgment"]).group(1)) == pytest.approx(score, abs=0.006)
        assert abs(score - sum(k * x for k, x in zip(range(1, 11), p))) > 1e-4  # the calibration did something
        checked += 1
    assert checked == 2 * 2 * 2  # two models, two questions, two turns


def test_pairwise_pools_both_orders_by_hand(judged, fastchat_data_dir, tiny_model_dir):
    _, _, records, pair, _, questions = judged
    prompts = load_judge_prompts(fastchat_data_dir)
    checked = 0
    for rec in records["pairwise"]:
        if rec["question_id"] not in QUESTIONS or {rec["model_1"], rec["model_2"]} != {"alpha", "beta"}:
            continue
        q, turn = questions[rec["question_id"]], rec["turn"]
        prompt = prompts[rec["judge"][1]]
        a1 = [f"{ANSWERS[rec['model_1']]} ({i})" for i in (1, 2)]
        a2 = [f"{ANSWERS[rec['model_2']]} ({i})" for i in (1, 2)]

        def fields(a, b):
            f = (dict(question=q.turns[0], answer_a=a[0], answer_b=b[0]) if turn == 1 else
                 dict(question_1=q.turns[0], question_2=q.turns[1], answer_a_1=a[0], answer_b_1=b[0],
                      answer_a_2=a[1], answer_b_2=b[1]))
            if q.category == "math":
                f.update(ref_answer_1=q.reference[0], **({"ref_answer_2": q.reference[1]} if turn == 2 else {}))
            return f

        g1 = reference_probs(tiny_model_dir, messages(prompt, **fields(a1, a2)), "pairwise", ["A", "B", "C"])
        g2 = reference_probs(tiny_model_dir, messages(prompt, **fields(a2, a1)), "pairwise", ["A", "B", "C"])
        # model_1 is A in game 1 and B in game 2: geometric mean of its two probabilities, and so on
        q1, q2, qt = math.sqrt(g1[0] * g2[1]), math.sqrt(g1[1] * g2[0]), math.sqrt(g1[2] * g2[2])
        p = q1 / (q1 + q2)
        assert rec["g1_probs"] == pytest.approx(dict(zip("ABC", g1)), abs=1e-6)
        assert rec["g2_probs"] == pytest.approx(dict(zip("ABC", g2)), abs=1e-6)
        assert rec["g1_p_model_1"] == pytest.approx(g1[0] / (g1[0] + g1[1]), abs=1e-6)
        assert rec["g2_p_model_1"] == pytest.approx(g2[1] / (g2[0] + g2[1]), abs=1e-6)
        assert rec["p_model_1"] == pytest.approx(p, abs=1e-6)
        assert rec["p_tie"] == pytest.approx(qt / (q1 + q2 + qt), abs=1e-6)
        assert rec["winner"] == ("tie" if qt >= max(q1, q2) else "model_1" if q1 > q2 else "model_2")
        # FastChat's per-game fields stay the argmax of each game
        assert rec["g1_winner"] == {0: "model_1", 1: "model_2", 2: "tie"}[g1.index(max(g1))]
        checked += 1
    assert checked == 4
    assert all(set(PAIR_CALIBRATED) <= set(r) for r in records["pairwise"])


def test_identical_answers_are_an_exact_tie(judged):
    run, judge, records, *_ = judged
    same = [r for r in records["pairwise"] if {r["model_1"], r["model_2"]} == {"alpha", "alpha-copy"}]
    assert len(same) == 8 and all(r["p_model_1"] == 0.5 and r["winner"] == "tie" for r in same)
    df = R.load_pair_judgments(RunDir(run).judgments("mt_bench", judge.model, "pairwise"))
    t = R.pairwise_table(df, [("alpha", "alpha-copy"), ("alpha", "beta")], n_boot=100).set_index("model_b")
    assert t.loc["alpha-copy", "n_identical"] == 8 and t.loc["beta", "n_identical"] == 0


def test_a_rerun_asks_nothing_and_the_cache_keys_name_the_reply_version(judged, fastchat_data_dir):
    run, judge, records, *_ = judged
    kw = dict(data_dir=fastchat_data_dir, per_category=1, limit=4, progress=False)
    assert judge_single(run, "mt_bench", judge, **kw).calls_made == 0
    # a judge whose replies are of another version shares no cache entry with this one
    judge.reply_version, old = "other-version", judge.reply_version
    try:
        assert judge_single(run, "mt_bench", judge, dry_run=True, **kw).calls_cached == 0
    finally:
        judge.reply_version = old


def synthetic(logits) -> JudgeScore:
    z = math.log(sum(math.exp(x) for x in logits))
    return JudgeScore("pairwise", ("A", "B", "C"), tuple(x - z for x in logits))


@pytest.mark.parametrize("bias", [0.0, 1.5, -3.0, 8.0])
def test_an_order_effect_on_the_log_odds_cancels_exactly(bias):
    u1, u2, tie = 0.7, 0.2, -1.0  # model_1 is better by 0.5 nats; the judge favours slot A by ``bias``
    g1, g2 = synthetic([u1 + bias, u2, tie]), synthetic([u2 + bias, u1, tie])
    q = C.pooled(g1, g2)
    assert C.preference(q) == pytest.approx(1 / (1 + math.exp(-(u1 - u2))), abs=1e-12)
    naive = 0.5 * (C.game_preference(g1, "A") + C.game_preference(g2, "B"))
    if bias >= 8:  # averaging probabilities instead is pulled to ½ by a strong bias
        assert abs(naive - 0.5) < 0.01 < abs(C.preference(q) - 0.5)


def test_verdict_tie_rule():
    assert C.verdict({"model_1": 0.5, "model_2": 0.3, "tie": 0.2}) == "model_1"
    assert C.verdict({"model_1": 0.2, "model_2": 0.45, "tie": 0.35}) == "model_2"
    assert C.verdict({"model_1": 0.3, "model_2": 0.3, "tie": 0.4}) == "tie"  # the judge's own tie is the mode
    assert C.verdict({"model_1": 0.4, "model_2": 0.2, "tie": 0.4}) == "tie"  # a draw with the tie is a tie
    assert C.verdict({"model_1": 0.45, "model_2": 0.45, "tie": 0.1}) == "tie"  # P = ½ exactly
    near = {"model_1": 0.46, "model_2": 0.44, "tie": 0.1}  # P = 0.511
    assert C.verdict(near) == "model_1" and C.verdict(near, band=0.05) == "tie" and C.verdict(near, band=0.01) == "model_1"
    with pytest.raises(ValueError):
        C.verdict(near, band=0.5)


def test_table2_reads_the_records_verdicts(judged):
    run, judge, records, *_ = judged
    df = R.load_pair_judgments(RunDir(run).judgments("mt_bench", judge.model, "pairwise"))
    out = R.pairwise_outcomes(df, "beta", "alpha")  # A is model_2 in the records: outcomes and P flip
    recs = {(r["question_id"], r["turn"]): r for r in records["pairwise"] if r["model_2"] == "beta"}
    for row in out.itertuples():
        rec = recs[(row.question_id, row.turn)]
        want = {"model_2": "win", "model_1": "loss", "tie": "tie"}[rec["winner"]]
        assert row.outcome == want and row.p_a == pytest.approx(1 - rec["p_model_1"])
    t = R.pairwise_table(df, [("alpha", "beta")], n_boot=200)
    assert t["p_a"].iloc[0] == pytest.approx(100 * (1 - out["p_a"].mean()))  # the table is in percent
    assert t["p_a_ci_low"].iloc[0] <= t["p_a"].iloc[0] <= t["p_a_ci_high"].iloc[0]


def test_fastchat_and_local_records_do_not_mix(tmp_path):
    base = {"question_id": 1, "model_1": "a", "model_2": "b", "g1_winner": "model_1", "g2_winner": "model_2",
            "judge": ["j", "pair-v2"], "turn": 1}
    local = {**base, "turn": 2, **dict.fromkeys(PAIR_CALIBRATED, 0.5), "winner": "model_1"}
    path = tmp_path / "j_pair.jsonl"
    path.write_text(json.dumps(base) + "\n" + json.dumps(local) + "\n")
    with pytest.raises(ValueError, match="some records carry a local judge's verdict"):
        R.pairwise_outcomes(R.load_pair_judgments(path), "a", "b")
    path.write_text(json.dumps({**base, "winner": "model_1"}) + "\n")
    with pytest.raises(ValueError, match="needs field 'g1_probs'"):
        R.load_pair_judgments(path)
    # FastChat's rule where there is no local verdict: the two orders disagree, so a tie
    path.write_text(json.dumps(base) + "\n")
    assert list(R.pairwise_outcomes(R.load_pair_judgments(path), "a", "b")["outcome"]) == ["tie"]


def test_single_records_store_the_distributions(judged):
    _, _, records, *_ = judged
    for rec in records["single"]:
        assert set(SINGLE_CALIBRATED) <= set(rec)
        assert sum(rec["calibrated_probs"]) == pytest.approx(1.0) and 1 <= rec["score"] <= 10
    scores = R.mt_bench_scores(pd.DataFrame(records["single"]).assign(judge_model="x"))
    assert scores.loc["alpha", "overall"] == scores.loc["alpha-copy", "overall"]
    assert scores.loc["alpha", "overall"] != scores.loc["beta", "overall"]
    assert (scores["ci_low"] <= scores["overall"]).all() and (scores["overall"] <= scores["ci_high"]).all()
