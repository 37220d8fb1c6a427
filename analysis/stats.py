"""Correlations with p-values and paired bootstrap confidence intervals (scipy.stats)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

METHODS = ("pearson", "spearman", "kendall")


def _pearson(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    # Vectorised over bootstrap resamples (scipy calls it with a batch axis).
    xm = x - x.mean(axis=axis, keepdims=True)
    ym = y - y.mean(axis=axis, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (xm * ym).sum(axis) / np.sqrt((xm**2).sum(axis) * (ym**2).sum(axis))


def _spearman(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    return _pearson(stats.rankdata(x, axis=axis), stats.rankdata(y, axis=axis), axis)


def _kendall(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    """Kendall's tau-b, vectorised over resamples: Σ sign(Δx)·sign(Δy) over pairs / √(pairs untied in x ·
    pairs untied in y), as scipy.stats.kendalltau computes it."""
    x, y = np.moveaxis(x, axis, -1), np.moveaxis(y, axis, -1)
    sx = np.sign(x[..., :, None] - x[..., None, :]).astype(np.int8)
    sy = np.sign(y[..., :, None] - y[..., None, :]).astype(np.int8)
    num = np.einsum("...ij,...ij->...", sx, sy, dtype=np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return num / np.sqrt(np.count_nonzero(sx, axis=(-2, -1)) * np.count_nonzero(sy, axis=(-2, -1)).astype(float))


_TESTS = {
    "pearson": (stats.pearsonr, _pearson, True),
    "spearman": (stats.spearmanr, _spearman, True),
    "kendall": (stats.kendalltau, _kendall, True),
}


def correlations(
    x,
    y,
    *,
    methods: tuple[str, ...] = METHODS,
    n_boot: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
    ci_method: str = "BCa",
) -> pd.DataFrame:
    """Correlate ``x`` with ``y``: one row per method with n, estimate, p_value, ci_low, ci_high.

    Pairs where either value is missing are dropped (``n`` counts what is left). The interval is a
    paired bootstrap over the pairs (scipy.stats.bootstrap, ``ci_method`` BCa by default); with fewer
    than 3 pairs or a constant input the row is NaN rather than an error.
    """
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"x and y must be 1-D of equal length, got shapes {x.shape} and {y.shape}")
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    rows = []
    for method in methods:
        if method not in _TESTS:
            raise ValueError(f"unknown correlation {method!r}: use {', '.join(METHODS)}")
        test, stat, vectorized = _TESTS[method]
        row = {"method": method, "n": len(x), "estimate": np.nan, "p_value": np.nan,
               "ci_low": np.nan, "ci_high": np.nan}
        if len(x) >= 3 and np.ptp(x) > 0 and np.ptp(y) > 0:
            res = test(x, y)
            row["estimate"], row["p_value"] = float(res.statistic), float(res.pvalue)
            if n_boot > 0:
                import warnings

                with warnings.catch_warnings():
                    # A resample of a tiny sample can be constant; its NaN statistic is expected.
                    warnings.simplefilter("ignore", category=RuntimeWarning)
                    warnings.simplefilter("ignore", category=stats.DegenerateDataWarning)
                    boot = stats.bootstrap(
                        (x, y), stat, paired=True, vectorized=vectorized, n_resamples=n_boot, batch=200,
                        confidence_level=confidence, method=ci_method, rng=np.random.default_rng(seed),
                    )
                lo, hi = boot.confidence_interval
                dist = boot.bootstrap_distribution[np.isfinite(boot.bootstrap_distribution)]
                if np.isnan(lo) and dist.size and np.ptp(dist) < 1e-9:
                    lo = hi = dist[0]  # every resample agrees (e.g. perfectly monotone data): BCa is undefined
                row["ci_low"], row["ci_high"] = float(lo), float(hi)
        rows.append(row)
    return pd.DataFrame(rows)


def linear_fit(x, y) -> tuple[float, float]:
    """Least-squares line ``y ≈ slope·x + intercept`` over finite pairs (scipy.stats.linregress)."""
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    keep = np.isfinite(x) & np.isfinite(y)
    res = stats.linregress(x[keep], y[keep])
    return float(res.slope), float(res.intercept)
