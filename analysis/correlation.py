"""Table 4: how well a trained model's margin m(x) (and Δπ) follows the judge's rating difference.

Input: the Δπ tables RUN_DIR/delta/<model_id>.csv written by ``srdpo-eval delta``. The length
difference (chosen − rejected, tokens) is the naive baseline: a margin that only tracks length would
correlate no better than it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from scipy import stats

from analysis import paper_numbers, style
from analysis.inputs import PRODUCERS, Inputs, seed_of
from analysis.section import Section
from analysis.stats import correlations, linear_fit

VARIABLES = {"margin": "margin m(x) (nats)", "delta": "Δπ = β·m(p⊕x)", "length_diff": "length difference (tokens)"}


def _difference(df: pd.DataFrame, column: str, chosen: str, rejected: str) -> pd.Series:
    """``column`` if the table has it, else ``chosen − rejected``, else NaN."""
    if column in df:
        return df[column].astype(float)
    if {chosen, rejected} <= set(df.columns):
        return df[chosen].astype(float) - df[rejected].astype(float)
    return pd.Series(np.nan, index=df.index)


def rating_diff(df: pd.DataFrame) -> pd.Series:
    """The table's rating difference (chosen − rejected), or NaN when it carries no ratings."""
    return _difference(df, "rating_diff", "chosen_rating", "rejected_rating")


def length_diff(df: pd.DataFrame) -> pd.Series:
    """The length difference in tokens (chosen − rejected): the naive baseline of Table 4."""
    return _difference(df, "length_diff", "chosen_tokens", "rejected_tokens")


PARTIAL = ("pearson", "spearman")  # partial correlations controlling for the length difference
COLUMNS = ["model_id", "objective", "seed", "pairs_seen", "variable", "method", "n", "estimate", "p_value",
           "ci_low", "ci_high", "paper"]


def partial_rows(x, y, z, *, n_boot: int, seed: int) -> pd.DataFrame:
    """corr(x, rating difference | length difference), Pearson and Spearman: estimate, p (t-test, n − 3 df)
    and a bootstrap CI over pairs."""
    from analysis import paired

    ok = np.isfinite(x) & np.isfinite(y) & np.isfinite(z)
    x, y, z = x[ok], y[ok], z[ok]
    rows = []
    for method in PARTIAL:
        r = paired.partial_correlation(x, y, z, method)
        boot = np.array([])
        if np.isfinite(r):  # every resample at once, drawn as paired.crossed draws them
            idx = np.array([i for _, i in paired.crossed_indices(1, len(x), n_boot=n_boot,
                                                                 rng=np.random.default_rng(seed))])
            boot = paired.partial_correlations(x[idx], y[idx], z[idx], method)
        b = boot[np.isfinite(boot)]
        lo, hi = np.quantile(b, [0.025, 0.975]) if b.size > 1 else (np.nan, np.nan)
        rows.append({"method": f"{method} | length", "n": int(ok.sum()), "estimate": r,
                     "p_value": paired.partial_p(r, int(ok.sum())), "ci_low": lo, "ci_high": hi})
    return pd.DataFrame(rows)


def _model_rows(model_id: str, df: pd.DataFrame, e, *, n_boot: int, seed: int) -> list[pd.DataFrame]:
    y, z = rating_diff(df).to_numpy(float), length_diff(df).to_numpy(float)
    frames = []
    for var, x in {"margin": df["margin"], "delta": df["delta"], "length_diff": length_diff(df)}.items():
        if x.isna().all():
            continue
        c = correlations(x.to_numpy(float), y, n_boot=n_boot, seed=seed)
        if var != "length_diff" and np.isfinite(z).any():
            c = pd.concat([c, partial_rows(x.to_numpy(float), y, z, n_boot=n_boot, seed=seed)], ignore_index=True)
        frames.append(c.assign(variable=var, model_id=model_id, objective=e.objective if e else None,
                               seed=seed_of(e) if e else None, pairs_seen=e.pairs_seen if e else None))
    return frames


def pooled_rows(inputs: Inputs, *, n_boot: int, seed: int) -> list[dict]:
    """With several seeds: Pearson and Spearman of m(x) and Δπ, the mean over seeds' models of one objective,
    λ and pairs seen, its CI and p from the two-way bootstrap over seeds and pairs (analysis/paired.py)."""
    from analysis import paired

    groups: dict[tuple, list[pd.DataFrame]] = {}
    for model_id, df in inputs.delta.items():
        e = inputs.entry(model_id)
        if e is not None and rating_diff(df).notna().any():
            groups.setdefault((e.objective, e.lam, e.pairs_seen), []).append(df.set_index(df["id"].astype(str)))
    rows = []
    for (obj, lam, seen), frames in groups.items():
        if len(frames) < 2:
            continue
        items = frames[0].index
        for g in frames[1:]:
            items = items.union(g.index)
        frames = [f.reindex(items) for f in frames]
        for var in ("margin", "delta"):
            for method in ("pearson", "spearman"):
                def stat(si, ii, var=var, method=method):
                    vals = [_corr(frames[s][var].to_numpy(float)[ii], rating_diff(frames[s]).to_numpy(float)[ii],
                                  method) for s in si]
                    return float(np.nanmean(vals)) if np.isfinite(vals).any() else np.nan
                est = stat(range(len(frames)), np.arange(len(frames[0])))
                boot = paired.crossed(stat, len(frames), len(frames[0]), n_boot=n_boot, rng=np.random.default_rng(seed))
                r = paired.summarize(est, boot, len(frames[0]), len(frames))
                rows.append({"model_id": "", "objective": obj, "seed": "all", "pairs_seen": seen, "variable": var,
                             "method": method, "n": r.n_items, "estimate": r.effect, "p_value": r.p_value,
                             "ci_low": r.ci_low, "ci_high": r.ci_high})
    return rows


def _corr(x: np.ndarray, y: np.ndarray, method: str) -> float:
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    if x.size < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return np.nan
    if method == "spearman":
        x, y = stats.rankdata(x), stats.rankdata(y)
    return float(np.corrcoef(x, y)[0, 1])


def table4(inputs: Inputs, *, n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """One row per (model, variable, method): n, estimate, p_value, 95% CI, and the paper's value for m(x);
    m(x) and Δπ also with the length difference partialled out; with several seeds, pooled rows."""
    frames = []
    for model_id, df in inputs.delta.items():
        if rating_diff(df).isna().all():
            continue
        frames += _model_rows(model_id, df, inputs.entry(model_id), n_boot=n_boot, seed=seed)
    pooled = pooled_rows(inputs, n_boot=n_boot, seed=seed)
    if not frames:
        return pd.DataFrame(columns=COLUMNS)
    out = pd.concat(frames + ([pd.DataFrame(pooled)] if pooled else []), ignore_index=True)
    idx = {m: i for i, m in enumerate(("pearson", "spearman", "kendall"))}
    out["paper"] = [paper_numbers.TABLE4[o][idx[m]] if v == "margin" and o in paper_numbers.TABLE4 and m in idx
                    else np.nan for o, v, m in zip(out["objective"], out["variable"], out["method"])]
    return out[COLUMNS]


def table4_wide(t4: pd.DataFrame) -> pd.DataFrame:
    """The paper's layout: one row per model and variable, Pearson / Spearman / Kendall side by side."""
    key = ["model_id", "objective", "seed", "pairs_seen", "variable", "method"]
    t4 = t4.assign(seed=t4["seed"].astype(str), pairs_seen=t4["pairs_seen"].fillna(-1))
    w = t4.set_index(key)["estimate"].unstack("method")
    p = t4.set_index(key)["paper"].unstack("method")[["pearson", "spearman", "kendall"]].add_prefix("paper_")
    out = w.join(p).reset_index()
    out["pairs_seen"] = out["pairs_seen"].where(out["pairs_seen"] >= 0)
    keep = ["model_id", "objective", "seed", "pairs_seen", "variable", "pearson", "spearman", "kendall",
            "pearson | length", "spearman | length", "paper_pearson", "paper_spearman", "paper_kendall"]
    return out[[c for c in keep if c in out]]


@style.styled
def scatter_models(inputs: Inputs) -> list[str]:
    """The models of the scatter plots: each objective's final model of the first seed (every checkpoint
    and seed is in the table), else whatever has rated Δπ tables."""
    rated = [m for m, df in inputs.delta.items() if rating_diff(df).notna().any()]
    finals = {e.model_id for o in inputs.objectives() if (e := inputs.main(o)) is not None}
    return [m for m in rated if m in finals] or rated


def scatter_figure(inputs: Inputs, variables: tuple[str, ...] = ("margin", "delta")) -> Figure:
    """Rating difference against m(x) (top) and Δπ (bottom) per final model, with least-squares lines
    (the slope in the panel's title: a legend would cover the points)."""
    models = scatter_models(inputs)
    fig, axes = style.new_figure((3.6 * len(models), 3.2 * len(variables)), len(variables), len(models))
    for j, model_id in enumerate(models):
        df = inputs.delta[model_id]
        e = inputs.entry(model_id)
        obj = e.objective if e else "?"
        y = rating_diff(df).to_numpy(float)
        for i, var in enumerate(variables):
            ax = axes[i, j]
            x = df[var].to_numpy(float)
            ok = np.isfinite(x) & np.isfinite(y)
            ax.scatter(x[ok], y[ok], s=10, alpha=0.6, color=style.color(obj))
            fit = "no fit (constant)"
            if ok.sum() >= 2 and np.ptp(x[ok]) > 0:
                slope, icpt = linear_fit(x[ok], y[ok])
                xs = np.array([x[ok].min(), x[ok].max()])
                ax.plot(xs, slope * xs + icpt, color="black", lw=1.2)
                fit = f"least-squares slope {slope:.3g}"
            ax.set(xlabel=VARIABLES[var], ylabel="rating difference (chosen − rejected)" if j == 0 else None,
                   title=f"{style.label(obj)} ({model_id})\n{fit}")
    return fig


def correlation_section(inputs: Inputs, *, n_boot: int = 2000, seed: int = 0) -> Section:
    """Table 4 and its scatter plots from delta/<model_id>.csv."""
    sec = Section("Margin and Δπ against the pairs' quality ratings (Table 4)")
    if not inputs.delta:
        sec.notes.append(f"skipped: no Δπ tables; produced by {PRODUCERS['delta']}")
        return sec
    unrated = [m for m, df in inputs.delta.items() if rating_diff(df).isna().all()]
    if unrated:
        sec.notes.append(f"no ratings in delta tables of {', '.join(unrated)}: pass pairs with "
                         "chosen_rating/rejected_rating (or --rating-fields) to `srdpo-eval delta`")
    t4 = table4(inputs, n_boot=n_boot, seed=seed)
    if not len(t4):
        return sec
    sec.tables["table4_correlation"] = t4
    sec.tables["table4_summary"] = table4_wide(t4)
    sec.figures["table4_scatter"] = scatter_figure(inputs)
    sec.text = ("Correlation with the rating difference (chosen − rejected) on the pairs in delta/; "
                "95% paired-bootstrap CIs and p-values in table4_correlation.csv. `paper_*`: the paper's "
                "Table 4 (m(x) vs GPT-4 ratings, 200 UltraFeedback pairs).")
    return sec
