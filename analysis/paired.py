"""Paired comparisons of two models measured on the same items, over one or several training seeds.

A comparison is a matrix ``D[seed, item]`` of per-item differences A − B (a held-out pair's margin, a
judged turn's outcome, ...), NaN where an item is missing for a seed. Its effect is the mean over the cells.
Seeds and items are crossed (every seed's models meet the same items), so the uncertainty has both
sources: the CI and the p-value come from a two-way bootstrap that resamples seeds and items
independently (Owen 2007, "the pigeonhole bootstrap"; slightly conservative), which with one seed is the
ordinary paired bootstrap over items. docs/method.md#comparisons says why and how to read it.

- CI: the percentile interval of the resampled effects.
- p-value (two-sided, H0: no difference): the share of resampled effects at least as far from the
  estimate as the estimate is from 0 (the bootstrap distribution shifted to the null; Hall & Wilson 1991).
- MDD: the smallest true difference found with 80% power at α = 0.05: (z₀.₉₇₅ + z₀.₈)·SE, SE = the
  bootstrap standard error.
- Holm–Bonferroni adjusts the p-values of one report together.

Statistics that are not means (a correlation, a length-controlled win rate) go through ``crossed`` with a
function of the resampled seed and item indices.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy import stats

ALPHA, POWER = 0.05, 0.80


@dataclass(frozen=True)
class Paired:
    """One comparison's numbers (in the units of D)."""

    effect: float
    ci_low: float
    ci_high: float
    p_value: float
    se: float
    mdd: float  # minimum detectable difference at 80% power, α = 0.05
    n_items: int
    n_seeds: int


def _weights(rng: np.random.Generator, n: int, n_boot: int) -> np.ndarray:
    """[n_boot, n] resampling weights: how often each unit is drawn in n draws with replacement."""
    return rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot).astype(float)


def crossed_means(D: np.ndarray, *, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """The mean of D under ``n_boot`` two-way resamples (seeds and items drawn independently); a NaN cell
    is left out of its resample's mean."""
    D = np.atleast_2d(np.asarray(D, float))
    have = np.isfinite(D)
    W, V = _weights(rng, D.shape[0], n_boot), _weights(rng, D.shape[1], n_boot)
    num = np.einsum("bs,si,bi->b", W, np.where(have, D, 0.0), V)
    den = np.einsum("bs,si,bi->b", W, have.astype(float), V)
    with np.errstate(invalid="ignore", divide="ignore"):
        return num / den


def crossed(stat: Callable[[np.ndarray, np.ndarray], float], n_seeds: int, n_items: int, *, n_boot: int,
            rng: np.random.Generator) -> np.ndarray:
    """``stat(seed_indices, item_indices)`` under ``n_boot`` two-way resamples (any statistic)."""
    return np.array([stat(si, ii) for si, ii in crossed_indices(n_seeds, n_items, n_boot=n_boot, rng=rng)])


def crossed_indices(n_seeds: int, n_items: int, *, n_boot: int, rng: np.random.Generator) -> list:
    """The (seed indices, item indices) of ``n_boot`` two-way resamples, as :func:`crossed` draws them."""
    return [(rng.integers(0, n_seeds, n_seeds), rng.integers(0, n_items, n_items)) for _ in range(n_boot)]


def summarize(estimate: float, boot: np.ndarray, n_items: int, n_seeds: int, *,
              confidence: float = 0.95) -> Paired:
    """Effect, percentile CI, bootstrap p-value, SE and MDD from the resampled statistics."""
    b = boot[np.isfinite(boot)]
    if not np.isfinite(estimate) or b.size < 2:
        return Paired(estimate, np.nan, np.nan, np.nan, np.nan, np.nan, n_items, n_seeds)
    lo, hi = np.quantile(b, [(1 - confidence) / 2, (1 + confidence) / 2])
    se = float(b.std(ddof=1))
    # every item (and seed) agreeing exactly leaves nothing to estimate the noise from: no MDD to state
    return Paired(float(estimate), float(lo), float(hi), bootstrap_p(estimate, b), se, mdd(se) if se > 0 else np.nan,
                  n_items, n_seeds)


def bootstrap_p(estimate: float, boot: np.ndarray) -> float:
    """Two-sided p of H0 "no difference": the resampled statistics, shifted by −estimate, are the null
    distribution; p = (1 + #{|θ* − θ̂| ≥ |θ̂|}) / (B + 1), never 0."""
    far = np.abs(boot - estimate) >= abs(estimate) - 1e-12 * max(1.0, abs(estimate))
    return float((1 + far.sum()) / (boot.size + 1))


def paired_difference(D, *, n_boot: int = 2000, seed: int = 0, confidence: float = 0.95) -> Paired:
    """The mean of D[seed, item] (a 1-D D is one seed) with its two-way bootstrap CI, p, SE and MDD."""
    D = np.atleast_2d(np.asarray(D, float))
    rows = np.isfinite(D).any(1)
    D = D[rows][:, np.isfinite(D[rows]).any(0)]
    if D.size == 0:
        return Paired(np.nan, np.nan, np.nan, np.nan, np.nan, np.nan, 0, 0)
    boot = crossed_means(D, n_boot=n_boot, rng=np.random.default_rng(seed))
    return summarize(float(np.nanmean(D)), boot, D.shape[1], D.shape[0], confidence=confidence)


def mdd(se: float, alpha: float = ALPHA, power: float = POWER) -> float:
    """Minimum detectable difference of a two-sided z-test with standard error ``se``."""
    return float((stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power)) * se)


def holm(p_values) -> np.ndarray:
    """Holm–Bonferroni adjusted p-values (NaN stays NaN and is not counted in the family)."""
    p = np.asarray(p_values, float)
    out = np.full_like(p, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    m = ok.size
    order = ok[np.argsort(p[ok], kind="stable")]
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out


def verdict(p_adjusted: float, mdd_value: float, smallest_effect: float, alpha: float = ALPHA) -> str:
    """'significant' (adjusted p < α); else 'underpowered' when the sample could not have detected the
    smallest effect of interest with 80% power (or shows no variation to tell: MDD NaN); else 'not
    significant' (no effect of that size)."""
    if not np.isfinite(p_adjusted):
        return "n/a"
    if p_adjusted < alpha:
        return "significant"
    return "underpowered" if not np.isfinite(mdd_value) or mdd_value > smallest_effect else "not significant"


# ------------------------------------------------------------------------ length and partial correlation


def logistic_fit(x, y, *, iters: int = 50) -> tuple[float, float]:
    """(intercept, slope) of P(y) = σ(a + b·x) by Newton's method; ``y`` in [0, 1] (a tie is 0.5, as a
    quasi-binomial outcome). Perfectly separated data diverge; the fit stops at |a|, |b| ≤ 30."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    X = np.column_stack([np.ones_like(x), x])
    theta = np.zeros(2)
    for _ in range(iters):
        p = 1 / (1 + np.exp(-(X @ theta)))
        grad = X.T @ (y - p)
        hess = X.T @ (X * (p * (1 - p))[:, None]) + 1e-9 * np.eye(2)
        step = np.linalg.solve(hess, grad)
        theta = np.clip(theta + step, -30, 30)
        if np.abs(step).max() < 1e-10:
            break
    return float(theta[0]), float(theta[1])


def length_feature(len_a, len_b, scale: float | None = None) -> np.ndarray:
    """AlpacaEval 2's length term: tanh((len_A − len_B) / scale), scale = the SD of the differences."""
    d = np.asarray(len_a, float) - np.asarray(len_b, float)
    s = scale if scale is not None else (d.std() if d.size > 1 else 0.0)
    return np.tanh(d / s) if s > 0 else np.zeros_like(d)


def length_controlled_win_rate(outcome, len_a, len_b) -> float:
    """P(A preferred) at zero length difference, σ(intercept), from a logistic fit of the outcome (1, 0.5,
    0) on the length term (AlpacaEval 2's length-controlled win rate for one pair of models)."""
    x = length_feature(len_a, len_b)
    if np.ptp(x) == 0:  # no length difference to control for: the raw adjusted win rate
        return float(np.mean(outcome))
    a, _ = logistic_fit(x, outcome)
    return float(1 / (1 + np.exp(-a)))


def partial_correlations(x: np.ndarray, y: np.ndarray, z: np.ndarray, method: str = "pearson") -> np.ndarray:
    """:func:`partial_correlation` of each row of x, y, z (resamples × items, all finite) at once:
    (r_xy − r_xz·r_yz) / √((1 − r_xz²)(1 − r_yz²)), the correlation of the residuals on [1, z]."""
    from analysis.stats import _pearson

    if method == "spearman":
        x, y, z = (stats.rankdata(v, axis=-1) for v in (x, y, z))
    with np.errstate(invalid="ignore", divide="ignore"):
        rxy, rxz, ryz = _pearson(x, y), _pearson(x, z), _pearson(y, z)
        r = (rxy - rxz * ryz) / np.sqrt((1 - rxz**2) * (1 - ryz**2))
        z_flat = np.ptp(z, axis=-1) == 0  # z constant: nothing to remove, r is r_xy
        r = np.where(z_flat, rxy, r)
    bad = (np.ptp(x, axis=-1) == 0) | (np.ptp(y, axis=-1) == 0) | (x.shape[-1] < 4) | ~np.isfinite(r)
    return np.where(bad, np.nan, r)


def partial_correlation(x, y, z, method: str = "pearson") -> float:
    """corr(x, y) with z's linear effect removed from both (Spearman: on ranks)."""
    x, y, z = (np.asarray(v, float) for v in (x, y, z))
    ok = np.isfinite(x) & np.isfinite(y) & np.isfinite(z)
    x, y, z = x[ok], y[ok], z[ok]
    if method == "spearman":
        x, y, z = (stats.rankdata(v) for v in (x, y, z))
    if x.size < 4 or min(np.ptp(x), np.ptp(y)) == 0:
        return np.nan
    Z = np.column_stack([np.ones_like(z), z])
    rx = x - Z @ np.linalg.lstsq(Z, x, rcond=None)[0]
    ry = y - Z @ np.linalg.lstsq(Z, y, rcond=None)[0]
    den = np.sqrt((rx @ rx) * (ry @ ry))
    return float(rx @ ry / den) if den > 0 else np.nan


def partial_p(r: float, n: int) -> float:
    """Two-sided p of a partial correlation with one controlled variable: t = r·√((n−3)/(1−r²)), df n−3."""
    if not np.isfinite(r) or n < 4:
        return np.nan
    if abs(r) >= 1:
        return 0.0
    t = r * np.sqrt((n - 3) / (1 - r * r))
    return float(2 * stats.t.sf(abs(t), n - 3))
