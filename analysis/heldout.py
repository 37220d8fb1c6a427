"""Held-out preference metrics per checkpoint, from the Δπ tables (delta/<model_id>.csv): the share of
held-out pairs the model ranks right (m(x) > 0), the mean margin m(x) and β·m(x) (the numbers DPO model
cards report), and the same on p ⊕ x (m(p ⊕ x) > 0; Δπ/β) — per model, and pooled over seeds."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from analysis import style
from analysis.inputs import PRODUCERS, Inputs, seed_of
from analysis.paired import paired_difference
from analysis.section import Section
from contracts import objectives

# name → (Δπ-table column, per-pair value, label): accuracies in percent
MEASURES = {
    "accuracy": ("margin", lambda m: 100.0 * (m > 0), "accuracy: m(x) > 0 (%)"),
    "margin": ("margin", lambda m: m, "margin m(x) (nats)"),
    "reward_margin": ("reward_margin", lambda m: m, "β·m(x)"),
    "accuracy_p": ("margin_p", lambda m: 100.0 * (m > 0), "accuracy on p ⊕ x: m(p ⊕ x) > 0 (%)"),
    "margin_p": ("margin_p", lambda m: m, "margin on p ⊕ x (nats)"),
}
KEY = ["objective", "lam", "pairs_seen"]


def per_pair(df: pd.DataFrame, measure: str) -> pd.Series:
    """A measure's value on each held-out pair of one Δπ table, indexed by the pair id."""
    col, fn, _ = MEASURES[measure]
    return pd.Series(fn(df[col].to_numpy(float)), index=df["id"].astype(str)).where(df[col].notna().to_numpy())


def _row(frames: list[pd.DataFrame], *, n_boot: int, seed: int) -> dict:
    """Each measure's mean with its CI over pairs (and seeds: frames are one Δπ table per seed)."""
    row = {}
    for m in MEASURES:
        D = pd.concat([per_pair(f, m) for f in frames], axis=1).T.to_numpy(float)  # seeds × pairs
        r = paired_difference(D, n_boot=n_boot, seed=seed)
        row.update({"n": r.n_items, m: r.effect, f"{m}_ci_low": r.ci_low, f"{m}_ci_high": r.ci_high})
    return row


def heldout_table(inputs: Inputs, *, n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """One row per model (its seed), then with several seeds one pooled row (seed 'all') per objective, λ and
    pairs seen, its CI from the two-way bootstrap over seeds and pairs (analysis/paired.py)."""
    rows, groups = [], {}
    for model_id, df in inputs.delta.items():
        e = inputs.entry(model_id)
        if e is None or not len(df):
            continue
        rows.append({"model_id": model_id, "objective": e.objective, "lam": e.lam, "pairs_seen": e.pairs_seen,
                     "seed": seed_of(e), **_row([df], n_boot=n_boot, seed=seed)})
        groups.setdefault((e.objective, e.lam, e.pairs_seen), []).append(df)
    for (obj, lam, seen), frames in groups.items():
        if len(frames) > 1:
            rows.append({"model_id": "", "objective": obj, "lam": lam, "pairs_seen": seen, "seed": "all",
                         **_row(frames, n_boot=n_boot, seed=seed)})
    cols = ["model_id", *KEY, "seed", "n", *[c for m in MEASURES for c in (m, f"{m}_ci_low", f"{m}_ci_high")]]
    out = pd.DataFrame(rows, columns=cols)
    order = {o: i for i, o in enumerate(objectives.order())}
    # registry order, then training order, each seed before the pooled row
    rank = out.assign(_o=out["objective"].map(order), _s=[np.inf if s == "all" else s for s in out["seed"]])
    return out.loc[rank.sort_values(["_o", "lam", "pairs_seen", "_s"]).index].reset_index(drop=True)


def curves(table: pd.DataFrame, inputs: Inputs) -> dict[str, pd.DataFrame]:
    """Objective → its main run's rows over pairs seen (pooled when it has several seeds), with a band:
    the range over seeds, or with one seed the CI over pairs."""
    out = {}
    for obj in inputs.objectives():
        main = inputs.main(obj)
        t = table[(table["objective"] == obj) & table["pairs_seen"].notna()]
        t = t[t["lam"].isna()] if main is None or main.lam is None else t[t["lam"] == main.lam]
        seeds = t[t["seed"] != "all"]
        pooled = t[t["seed"] == "all"]
        if seeds["seed"].nunique() > 1 and len(pooled):
            spread = seeds.groupby("pairs_seen").agg(**{f"{m}_{s}": (m, s) for m in MEASURES for s in ("min", "max")})
            c = pooled.set_index("pairs_seen").join(spread).reset_index()
            c["band"] = "range over seeds"
        else:
            c = seeds.copy()
            for m in MEASURES:
                c[f"{m}_min"], c[f"{m}_max"] = c[f"{m}_ci_low"], c[f"{m}_ci_high"]
            c["band"] = "95% CI over pairs"
        if c["pairs_seen"].nunique() > 1:  # a curve needs two points
            out[obj] = c.sort_values("pairs_seen")
    return out


@style.styled
def heldout_figure(lines: dict[str, pd.DataFrame], measures=("accuracy", "margin")) -> Figure:
    """Held-out accuracy and margin against training pairs seen, one line per objective, with its band."""
    fig, axes = style.new_figure((5.5 * len(measures), 4.0), 1, len(measures))
    band = next(iter(lines.values()))["band"].iloc[0]
    for ax, m in zip(axes[0], measures):
        for obj, c in lines.items():
            ax.plot(c["pairs_seen"], c[m], color=style.color(obj), marker="o", label=style.label(obj))
            ax.fill_between(c["pairs_seen"], c[f"{m}_min"], c[f"{m}_max"], color=style.color(obj), alpha=0.15, lw=0)
        if m.startswith("accuracy"):
            ax.axhline(50, color="grey", ls="--", lw=1)
        ax.set(xlabel="training pairs seen", ylabel=MEASURES[m][2], title=f"Held-out {m.replace('_', ' ')} (band: {band})")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # pairs seen are whole numbers
        ax.legend()
    return fig


def heldout_section(inputs: Inputs, *, n_boot: int = 2000, seed: int = 0) -> Section:
    sec = Section("Held-out preference accuracy and margin")
    if not inputs.delta:
        sec.notes.append(f"skipped: no Δπ tables; produced by {PRODUCERS['delta']}")
        return sec
    table = heldout_table(inputs, n_boot=n_boot, seed=seed)
    sec.tables["heldout_preferences"] = table
    lines = curves(table, inputs)
    if lines:
        sec.figures["heldout_accuracy"] = heldout_figure(lines)
    else:
        sec.notes.append("held-out curves skipped: no objective has Δπ tables at two or more checkpoints "
                         "(reproduce: delta.checkpoints: all)")
    sec.text = ("On the held-out pairs of delta/: `accuracy` = share with m(x) > 0 (%), `margin` = mean m(x) in "
                "nats, `reward_margin` = mean β·m(x); `_p`: the same on p ⊕ x. 95% bootstrap CIs over pairs; "
                "`seed` = all: pooled over seeds, its CI from a two-way bootstrap over seeds and pairs. A model "
                "equal to its reference has m(x) = 0 on every pair, so accuracy 0%.")
    return sec
