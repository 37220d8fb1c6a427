"""Table 4: how well a trained model's margin m(x) (and Δπ) follows the judge's rating difference.

Input: the Δπ tables RUN_DIR/delta/<model_id>.csv written by ``srdpo-eval delta``. The length
difference (chosen − rejected, tokens) is the naive baseline: a margin that only tracks length would
correlate no better than it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from analysis import paper_numbers, style
from analysis.inputs import PRODUCERS, Inputs
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


def table4(inputs: Inputs, *, n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """One row per (model, variable, method): n, estimate, p_value, 95% CI, and the paper's value for m(x)."""
    frames = []
    for model_id, df in inputs.delta.items():
        y = rating_diff(df)
        if y.isna().all():
            continue
        e = inputs.entry(model_id)
        cols = {"margin": df["margin"], "delta": df["delta"], "length_diff": length_diff(df)}
        for var, x in cols.items():
            if x.isna().all():
                continue
            c = correlations(x.to_numpy(float), y.to_numpy(float), n_boot=n_boot, seed=seed)
            c.insert(0, "variable", var)
            c.insert(0, "pairs_seen", e.pairs_seen if e else None)
            c.insert(0, "objective", e.objective if e else None)
            c.insert(0, "model_id", model_id)
            frames.append(c)
    cols = ["model_id", "objective", "pairs_seen", "variable", "method", "n", "estimate", "p_value",
            "ci_low", "ci_high", "paper"]
    if not frames:
        return pd.DataFrame(columns=cols)
    out = pd.concat(frames, ignore_index=True)
    idx = {m: i for i, m in enumerate(("pearson", "spearman", "kendall"))}
    out["paper"] = [paper_numbers.TABLE4[o][idx[m]] if v == "margin" and o in paper_numbers.TABLE4 else np.nan
                    for o, v, m in zip(out["objective"], out["variable"], out["method"])]
    return out[cols]


def table4_wide(t4: pd.DataFrame) -> pd.DataFrame:
    """The paper's layout: one row per model and variable, Pearson / Spearman / Kendall side by side."""
    key = ["model_id", "objective", "variable", "method"]
    w = t4.set_index(key)["estimate"].unstack("method")
    p = t4.set_index(key)["paper"].unstack("method").add_prefix("paper_")
    out = w.join(p).reset_index()
    keep = ["model_id", "objective", "variable", "pearson", "spearman", "kendall",
            "paper_pearson", "paper_spearman", "paper_kendall"]
    return out[[c for c in keep if c in out]]


@style.styled
def scatter_figure(inputs: Inputs, variables: tuple[str, ...] = ("margin", "delta")) -> Figure:
    """Rating difference against m(x) (top) and Δπ (bottom) per model, with least-squares lines."""
    models = [m for m, df in inputs.delta.items() if rating_diff(df).notna().any()]
    fig, axes = style.new_figure((3.6 * len(models), 3.0 * len(variables)), len(variables), len(models))
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
            if ok.sum() >= 2 and np.ptp(x[ok]) > 0:
                slope, icpt = linear_fit(x[ok], y[ok])
                xs = np.array([x[ok].min(), x[ok].max()])
                ax.plot(xs, slope * xs + icpt, color="black", lw=1.2, label=f"fit: slope {slope:.3g}")
                ax.legend()
            ax.set(xlabel=VARIABLES[var], ylabel="rating difference (chosen − rejected)",
                   title=f"{model_id} ({style.label(obj)})")
    return fig


def correlation_section(inputs: Inputs, *, n_boot: int = 2000, seed: int = 0) -> Section:
    """Table 4 and its scatter plots from delta/<model_id>.csv."""
    sec = Section("Margin and Δπ against the judge's ratings (Table 4)")
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
    sec.main_tables = ("table4_summary",)
    sec.figures["table4_scatter"] = scatter_figure(inputs)
    sec.text = ("Correlation with the rating difference (chosen − rejected) on the pairs in delta/; "
                "95% paired-bootstrap CIs and p-values in table4_correlation.csv. `paper_*`: the paper's "
                "Table 4 (m(x) vs GPT-4 ratings, 200 UltraFeedback pairs).")
    return sec
