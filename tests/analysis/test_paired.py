"""The paired statistics (analysis/paired.py) against independent computations: the exact bootstrap
variance, scipy's t-test, statsmodels' Holm, power, logistic GLM and OLS; a constructed true difference is
found and constructed nulls are not, after correction."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy import stats

from analysis import paired as P

sm = pytest.importorskip("statsmodels.api")


def test_crossed_bootstrap_variance_equals_its_exact_value():
    """θ* = wᵀDv with w, v multinomial shares: E[ww'] = (J(1 − 1/S) + I)/S², so Var* = tr(A D B Dᵀ) − θ̂²."""
    rng = np.random.default_rng(1)
    D = rng.normal(size=(3, 7)) + rng.normal(size=(3, 1)) + rng.normal(size=(1, 7))
    S, I = D.shape
    A = (np.ones((S, S)) * (1 - 1 / S) + np.eye(S)) / S**2
    B = (np.ones((I, I)) * (1 - 1 / I) + np.eye(I)) / I**2
    exact = np.trace(A @ D @ B @ D.T) - D.mean() ** 2
    boot = P.crossed_means(D, n_boot=200_000, rng=np.random.default_rng(0))
    assert boot.mean() == pytest.approx(D.mean(), abs=3e-3)
    assert boot.var() == pytest.approx(exact, rel=0.02)
    # the generic resampler draws the same distribution
    gen = P.crossed(lambda s, i: D[np.ix_(s, i)].mean(), S, I, n_boot=40_000, rng=np.random.default_rng(2))
    assert gen.var() == pytest.approx(exact, rel=0.04)


def test_one_seed_is_the_paired_bootstrap_and_agrees_with_the_t_test():
    rng = np.random.default_rng(3)
    d = rng.normal(0.15, 1.0, 400)
    res = P.paired_difference(d, n_boot=20_000, seed=0)
    t = stats.ttest_1samp(d, 0.0)
    ci = t.confidence_interval(0.95)
    assert res.n_seeds == 1 and res.n_items == 400
    assert res.effect == pytest.approx(d.mean())
    assert res.se == pytest.approx(d.std(ddof=0) / np.sqrt(d.size), rel=0.03)  # the bootstrap's own SE
    width = ci.high - ci.low
    assert abs(res.ci_low - ci.low) < 0.05 * width and abs(res.ci_high - ci.high) < 0.05 * width
    assert res.p_value == pytest.approx(t.pvalue, rel=0.25, abs=2e-3)


def test_bootstrap_p_on_an_enumerable_sample():
    """Three items: all 27 equally likely resamples give the exact bootstrap p, which the Monte Carlo meets."""
    d = np.array([0.5, 1.0, -0.2])
    means = np.array([d[list(c)].mean() for c in itertools.product(range(3), repeat=3)])
    exact = np.mean(np.abs(means - d.mean()) >= abs(d.mean()) - 1e-12)
    res = P.paired_difference(d, n_boot=100_000, seed=1)
    assert res.p_value == pytest.approx(exact, abs=5e-3)
    assert res.ci_low == pytest.approx(np.quantile(means, 0.025, method="inverted_cdf"), abs=1e-9)


def test_a_true_difference_is_found_and_nulls_are_not_after_holm():
    rng = np.random.default_rng(4)
    seed_noise = rng.normal(0, 0.05, (3, 1))
    real = 0.25 + seed_noise + rng.normal(0, 1, (3, 300))
    nulls = [rng.normal(0, 0.05, (3, 1)) + rng.normal(0, 1, (3, 300)) for _ in range(3)]
    results = [P.paired_difference(D, n_boot=4000, seed=i) for i, D in enumerate([real, *nulls])]
    adjusted = P.holm([r.p_value for r in results])
    assert adjusted[0] < 0.05 and results[0].ci_low > 0
    assert all(a >= 0.05 for a in adjusted[1:])
    assert all(r.ci_low < 0 < r.ci_high for r in results[1:])
    # a null with a tiny sample is "underpowered", not "no difference"
    small = P.paired_difference(rng.normal(0, 1, 10), n_boot=4000)
    assert P.verdict(P.holm([small.p_value])[0], small.mdd, 0.2) == "underpowered"
    assert P.verdict(adjusted[1], results[1].mdd, 0.5) == "not significant"
    assert P.verdict(adjusted[0], results[0].mdd, 0.5) == "significant"


def test_seed_variance_widens_the_interval():
    """Seeds that disagree (a training effect that is not reproducible) must not look like many items."""
    rng = np.random.default_rng(5)
    items = rng.normal(0, 0.2, (1, 200))
    agree = 0.1 + items + np.zeros((3, 1))
    disagree = items + np.array([[0.6], [-0.3], [0.0]])
    a, b = P.paired_difference(agree, n_boot=4000), P.paired_difference(disagree, n_boot=4000)
    assert a.effect == pytest.approx(b.effect) and b.se > 5 * a.se


def test_holm_equals_statsmodels():
    from statsmodels.stats.multitest import multipletests

    p = np.array([0.01, 0.04, 0.03, 0.2, 0.005, np.nan])
    want = multipletests(p[:-1], method="holm")[1]
    got = P.holm(p)
    np.testing.assert_allclose(got[:-1], want)
    assert np.isnan(got[-1])


def test_mdd_equals_statsmodels_power():
    from statsmodels.stats.power import NormalIndPower

    n, sd = 64, 1.7
    d = NormalIndPower().solve_power(nobs1=n, alpha=0.05, power=0.8, ratio=0)  # one sample: ratio 0
    assert P.mdd(sd / np.sqrt(n)) == pytest.approx(d * sd, rel=1e-6)


def test_logistic_fit_equals_statsmodels_glm_with_ties():
    rng = np.random.default_rng(6)
    x = rng.normal(size=200)
    y = rng.choice([0.0, 0.5, 1.0], size=200, p=[0.3, 0.3, 0.4])
    y[x > 1] = 1.0
    a, b = P.logistic_fit(x, y)
    glm = sm.GLM(y, sm.add_constant(x), family=sm.families.Binomial()).fit()
    np.testing.assert_allclose([a, b], glm.params, rtol=1e-6)


def test_length_controlled_win_rate_removes_a_pure_length_preference():
    """A judge that prefers the longer answer: A wins where it is longer; at equal length, 50%."""
    rng = np.random.default_rng(7)
    la, lb = rng.integers(80, 260, 400), rng.integers(20, 200, 400)  # A is longer on the whole
    p = 1 / (1 + np.exp(-3 * P.length_feature(la, lb)))
    outcome = (rng.random(400) < p).astype(float)
    raw, lc = outcome.mean(), P.length_controlled_win_rate(outcome, la, lb)
    assert raw > 0.65 and abs(lc - 0.5) < 0.08
    # no length difference at all: the raw rate
    assert P.length_controlled_win_rate([1, 0.5, 0], [5, 5, 5], [5, 5, 5]) == pytest.approx(0.5)


def test_partial_correlation_equals_its_formula_and_the_ols_t_test():
    rng = np.random.default_rng(8)
    z = rng.normal(size=120)
    x = 0.6 * z + rng.normal(size=120)
    y = 0.5 * z + 0.3 * x + rng.normal(size=120)
    r = P.partial_correlation(x, y, z)
    rxy, rxz, ryz = (stats.pearsonr(a, b).statistic for a, b in ((x, y), (x, z), (y, z)))
    assert r == pytest.approx((rxy - rxz * ryz) / np.sqrt((1 - rxz**2) * (1 - ryz**2)), rel=1e-10)
    ols = sm.OLS(y, sm.add_constant(np.column_stack([x, z]))).fit()
    assert P.partial_p(r, 120) == pytest.approx(ols.pvalues[1], rel=1e-8)
    rs = P.partial_correlation(x, y, z, "spearman")
    rk = [stats.rankdata(v) for v in (x, y, z)]
    assert rs == pytest.approx(P.partial_correlation(*rk), rel=1e-12)


def test_partial_correlations_of_many_resamples_equal_one_at_a_time():
    """The bootstrap's vectorised form: each row equal to the residual-on-[1, z] form, ties and
    degenerate rows (a constant x, a constant z) included."""
    rng = np.random.default_rng(9)
    z = rng.integers(-20, 20, 64).astype(float)
    x, y = rng.normal(size=64) + 0.1 * z, rng.integers(-3, 3, 64) + 0.05 * z
    idx = rng.integers(0, 64, (40, 64))
    X, Y, Z = x[idx], y[idx], z[idx]
    X[0], Z[1] = 1.0, 2.0
    for method in ("pearson", "spearman"):
        many = P.partial_correlations(X, Y, Z, method)
        one = np.array([P.partial_correlation(a, b, c, method) for a, b, c in zip(X, Y, Z)])
        assert np.isnan(many[0]) and np.isnan(one[0])
        np.testing.assert_allclose(many[1:], one[1:], rtol=0, atol=1e-12)
