"""The comparisons, held-out metrics, length control and Table 4's partial correlations on constructed
results: each number equals its hand computation; a true difference over three seeds is found and a null is
not, after correction."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis import compare, paired
from analysis.correlation import table4
from analysis.heldout import heldout_table
from analysis.inputs import Inputs
from analysis.lengths import length_table
from analysis.winrates import table2
from contracts.ids import run_name
from contracts.run_dir import ModelEntry, RunDir

SEEDS = (0, 1, 2)
N = 150


def _delta(model_id, margin, rng):
    n = len(margin)
    rating = rng.integers(1, 10, (n, 2)).astype(float)
    return pd.DataFrame({"id": [f"p{i}" for i in range(n)], "model_id": model_id, "margin": margin,
                         "delta": 0.1 * margin, "reward_margin": 0.1 * margin, "margin_p": margin + 0.1,
                         "chosen_tokens": rng.integers(5, 50, n), "rejected_tokens": rng.integers(5, 50, n),
                         "chosen_rating": rating[:, 0], "rejected_rating": rating[:, 1]})


def _inputs(tmp_path, shift: dict[str, float]) -> Inputs:
    """dpo, sr-dpo, ipo and sr-ipo, three seeds each, on the same N held-out pairs: objective o's margin on
    pair i is item_i + shift[o] + noise (the same items for every model: a paired design)."""
    rng = np.random.default_rng(0)
    item = rng.normal(0, 1, N)
    inp = Inputs(run=RunDir(tmp_path))
    for s in SEEDS:
        for o, sh in shift.items():
            mid = run_name(o, seed=s)
            inp.models.append(ModelEntry(mid, "", o, beta=0.1, lam=0.5 if o.startswith("sr-") else None, step=4,
                                         pairs_seen=16, run=mid, seed=s))
            inp.delta[mid] = _delta(mid, item + sh + rng.normal(0, 0.3, N), np.random.default_rng(100 + s))
    return inp


def test_a_true_difference_over_seeds_is_found_and_a_null_is_not(tmp_path):
    inp = _inputs(tmp_path, {"dpo": 0.0, "sr-dpo": 0.4, "ipo": 0.0, "sr-ipo": 0.0})
    t = compare.comparisons_table(inp, n_boot=1000)
    fam = t[t["family"]].set_index(["comparison", "measure"])
    assert set(t.loc[t["family"], "seed"]) == {"all"} and set(t.loc[t["family"], "seeds"]) == {3}
    real, null = fam.loc[("Sr-DPO vs DPO", "heldout_margin")], fam.loc[("Sr-IPO vs IPO", "heldout_margin")]
    assert real["verdict"] == "significant" and real["ci_low"] > 0
    assert null["verdict"] in ("not significant", "underpowered") and null["p_holm"] >= 0.05
    assert null["ci_low"] < 0 < null["ci_high"]
    # the effect is the mean paired difference over seeds and pairs, by hand
    D = np.array([inp.delta[run_name("sr-dpo", seed=s)]["margin"] - inp.delta[run_name("dpo", seed=s)]["margin"]
                  for s in SEEDS])
    assert real["effect"] == pytest.approx(D.mean())
    acc = np.array([(inp.delta[run_name("sr-dpo", seed=s)]["margin"] > 0).astype(float)
                    - (inp.delta[run_name("dpo", seed=s)]["margin"] > 0) for s in SEEDS])
    assert fam.loc[("Sr-DPO vs DPO", "heldout_accuracy"), "effect"] == pytest.approx(100 * acc.mean())
    # a seed's row is the one-seed paired bootstrap of that seed's differences
    one = t[(t["comparison"] == "Sr-DPO vs DPO") & (t["measure"] == "heldout_margin") & (t["seed"] == "1")].iloc[0]
    ref = paired.paired_difference(D[1], n_boot=1000, seed=0)
    assert (one["effect"], one["ci_low"], one["p_value"]) == pytest.approx((ref.effect, ref.ci_low, ref.p_value))
    # the family's p-values are Holm-corrected together
    np.testing.assert_allclose(t.loc[t["family"], "p_holm"], paired.holm(t.loc[t["family"], "p_value"]))


def test_heldout_table_by_hand(tmp_path):
    inp = _inputs(tmp_path, {"dpo": 0.0, "sr-dpo": 0.4})
    h = heldout_table(inp, n_boot=200)
    row = h[h["model_id"] == "sr-dpo-s1"].iloc[0]
    m = inp.delta["sr-dpo-s1"]["margin"]
    assert row["accuracy"] == pytest.approx(100 * (m > 0).mean()) and row["margin"] == pytest.approx(m.mean())
    assert row["accuracy_p"] == pytest.approx(100 * (inp.delta["sr-dpo-s1"]["margin_p"] > 0).mean())
    pooled = h[(h["objective"] == "sr-dpo") & (h["seed"] == "all")].iloc[0]
    allm = np.concatenate([inp.delta[run_name("sr-dpo", seed=s)]["margin"] for s in SEEDS])
    assert pooled["margin"] == pytest.approx(allm.mean()) and pooled["margin_ci_low"] < allm.mean() < pooled["margin_ci_high"]


def test_table4_partial_correlation_and_pooled_rows(tmp_path):
    inp = _inputs(tmp_path, {"dpo": 0.0, "sr-dpo": 0.4})
    t4 = table4(inp, n_boot=100)
    df = inp.delta["dpo"]
    y = (df["chosen_rating"] - df["rejected_rating"]).to_numpy(float)
    z = (df["chosen_tokens"] - df["rejected_tokens"]).to_numpy(float)
    row = t4[(t4["model_id"] == "dpo") & (t4["variable"] == "margin") & (t4["method"] == "pearson | length")].iloc[0]
    assert row["estimate"] == pytest.approx(paired.partial_correlation(df["margin"], y, z))
    assert row["p_value"] == pytest.approx(paired.partial_p(row["estimate"], N))
    pooled = t4[(t4["seed"] == "all") & (t4["objective"] == "dpo") & (t4["variable"] == "margin")
                & (t4["method"] == "pearson")].iloc[0]
    per_seed = [np.corrcoef(inp.delta[run_name("dpo", seed=s)]["margin"],
                            inp.delta[run_name("dpo", seed=s)]["chosen_rating"]
                            - inp.delta[run_name("dpo", seed=s)]["rejected_rating"])[0, 1] for s in SEEDS]
    assert pooled["estimate"] == pytest.approx(np.mean(per_seed))


def _pair_records(a, b, outcomes):
    """FastChat pairwise records of A vs B (A as model_1), one per (question, turn)."""
    recs = []
    for (q, turn), won in outcomes.items():
        w = {"win": "model_1", "loss": "model_2", "tie": "tie"}[won]
        recs.append({"question_id": q, "model_1": a, "model_2": b, "g1_winner": w, "g2_winner": w,
                     "judge": ["gpt-4", "pair-v2"], "turn": turn})
    return pd.DataFrame(recs)


def test_table2_length_controlled_win_rate_by_hand(tmp_path):
    """A wins exactly where its answer is the longer one: a raw win rate far from 50%, an LC rate near it."""
    rng = np.random.default_rng(3)
    inp = Inputs(run=RunDir(tmp_path))
    for o in ("dpo", "sr-dpo"):
        inp.models.append(ModelEntry(o, "", o, beta=0.1, step=4, pairs_seen=16, run=o, seed=0))
    la, lb = {}, {}
    outcomes = {}
    for q in range(1, 61):
        for turn in (1, 2):
            la[(q, turn)], lb[(q, turn)] = rng.integers(40, 200), rng.integers(20, 120)
            longer = la[(q, turn)] > lb[(q, turn)]
            outcomes[(q, turn)] = "win" if longer and rng.random() < 0.9 else ("loss" if not longer else "tie")
    inp.pair[("mt_bench", "gpt-4")] = _pair_records("sr-dpo", "dpo", outcomes)
    for m, lens in (("sr-dpo", la), ("dpo", lb)):
        inp.answers[("mt_bench", m)] = pd.DataFrame(
            [{"question_id": q, "turn": t, "words": n, "tokens": n, "max_new_tokens": 1024} for (q, t), n in lens.items()])
    t2 = table2(inp, n_boot=300)
    row = t2.iloc[0]
    score = np.array([{"win": 1.0, "tie": 0.5, "loss": 0.0}[outcomes[k]] for k in sorted(outcomes)])
    lc = paired.length_controlled_win_rate(score, [la[k] for k in sorted(outcomes)], [lb[k] for k in sorted(outcomes)])
    assert row["lc_win_rate"] == pytest.approx(100 * lc)
    assert row["adjusted_win_rate"] == pytest.approx(100 * score.mean())
    assert row["lc_ci_low"] <= row["lc_win_rate"] <= row["lc_ci_high"]
    assert row["adjusted_win_rate"] > 65 and abs(row["lc_win_rate"] - 50) < abs(row["adjusted_win_rate"] - 50)
    lengths = length_table(inp).set_index("model_id")
    assert lengths.loc["sr-dpo", "mean_tokens"] == pytest.approx(np.mean(list(la.values())))
    assert lengths.loc["sr-dpo", "at_token_limit"] == 0
