"""analysis.stats: correlations and bootstrap intervals on data with a known answer, checked against scipy."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from analysis.stats import correlations, linear_fit


def test_perfectly_monotone_data():
    x = np.arange(1.0, 21.0)
    c = correlations(x, np.exp(x / 4), n_boot=300).set_index("method")
    assert c.loc["spearman", "estimate"] == pytest.approx(1.0)
    assert c.loc["kendall", "estimate"] == pytest.approx(1.0)
    assert c.loc["pearson", "estimate"] < 0.99  # monotone but not linear
    assert (c["p_value"] < 1e-3).all()
    # every resample is still monotone: the interval collapses onto 1
    assert c.loc["spearman", "ci_low"] == pytest.approx(1.0) and c.loc["kendall", "ci_high"] == pytest.approx(1.0)
    rev = correlations(x, -x, n_boot=0).set_index("method")
    np.testing.assert_allclose(rev["estimate"], -1.0)


def test_constructed_pearson_value():
    # y = r·z1 + sqrt(1−r²)·z2 with z1, z2 exactly standardised and orthogonal ⇒ corr(z1, y) = r exactly.
    rng = np.random.default_rng(3)
    z = rng.normal(size=(200, 2))
    z -= z.mean(0)
    q, _ = np.linalg.qr(z)  # orthonormal, zero-mean columns
    r = 0.37
    y = r * q[:, 0] + np.sqrt(1 - r**2) * q[:, 1]
    c = correlations(q[:, 0], y, n_boot=500).set_index("method")
    assert c.loc["pearson", "estimate"] == pytest.approx(r, abs=1e-12)
    assert c.loc["pearson", "p_value"] == pytest.approx(stats.pearsonr(q[:, 0], y).pvalue)
    assert c.loc["spearman", "estimate"] == pytest.approx(stats.spearmanr(q[:, 0], y).statistic)
    assert c.loc["kendall", "p_value"] == pytest.approx(stats.kendalltau(q[:, 0], y).pvalue)
    for m in ("pearson", "spearman", "kendall"):
        row = c.loc[m]
        assert row["ci_low"] < row["estimate"] < row["ci_high"], m
        assert row["ci_high"] - row["ci_low"] < 0.5
    assert (c["n"] == 200).all()


def test_ci_matches_scipy_bootstrap_and_is_seeded():
    rng = np.random.default_rng(0)
    x = rng.normal(size=60)
    y = x + rng.normal(size=60)
    x[:10] = np.round(x[:10])  # ties, which Kendall's tau-b corrects for
    a = correlations(x, y, n_boot=400, seed=7)
    b = correlations(x, y, n_boot=400, seed=7)
    assert a.equals(b)
    for i, test in enumerate((stats.pearsonr, stats.spearmanr, stats.kendalltau)):  # our vectorised statistics
        ref = stats.bootstrap((x, y), lambda u, v: test(u, v).statistic, paired=True, vectorized=False,
                              n_resamples=400, method="BCa", rng=np.random.default_rng(7)).confidence_interval
        assert a.loc[i, "ci_low"] == pytest.approx(ref.low, rel=1e-9), a.loc[i, "method"]
        assert a.loc[i, "ci_high"] == pytest.approx(ref.high, rel=1e-9), a.loc[i, "method"]


def test_missing_values_dropped_and_degenerate_input_is_nan():
    x = np.array([1.0, 2.0, np.nan, 4.0, 5.0, 6.0])
    y = np.array([2.0, 1.0, 3.0, np.nan, 6.0, 5.0])
    c = correlations(x, y, n_boot=100)
    assert (c["n"] == 4).all()
    assert c.set_index("method").loc["pearson", "estimate"] == pytest.approx(
        stats.pearsonr([1, 2, 5, 6], [2, 1, 6, 5]).statistic)
    const = correlations(np.ones(10), np.arange(10.0), n_boot=100)
    assert const["estimate"].isna().all()
    with pytest.raises(ValueError, match="unknown correlation"):
        correlations(x, y, methods=("pearsonn",))
    with pytest.raises(ValueError, match="equal length"):
        correlations(x, y[:3])


def test_linear_fit():
    x = np.array([0.0, 1.0, 2.0, 3.0, np.nan])
    slope, icpt = linear_fit(x, 2 * x + 1)
    assert (slope, icpt) == (pytest.approx(2.0), pytest.approx(1.0))
