"""Does A beat B? Every comparison of two objectives as paired differences on the items both were measured
on, within each seed and pooled over seeds, with a 95% CI, a p-value corrected together with the report's
other comparisons (Holm–Bonferroni), the minimum detectable difference and a verdict.

The measures are data (``MEASURES``): each says where it is measured (its scopes), how to get one seed's
per-item data for two models, and either the column whose mean is the effect or a statistic of the items.
The statistics themselves are analysis/paired.py; docs/method.md#comparisons says how to read them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from analysis import paired, style
from analysis.inputs import Inputs
from analysis.lengths import with_lengths
from analysis.section import Section
from contracts import objectives
from contracts.run_dir import ModelEntry

HELD_OUT = "held-out pairs"


@dataclass(frozen=True)
class Measure:
    name: str
    label: str
    unit: str  # pp = percentage points; the forest plot has one panel (one scale) per unit
    smallest: float  # smallest effect of interest, in ``unit``: below it "no difference" is not worth telling
    scopes: Callable[[Inputs], list]  # where it is measured: held-out pairs, or (bench, judge)
    frame: Callable  # (inputs, scope, A, B) → one seed's per-item data, or None
    # None: the effect is the mean of column "d"; else a statistic of the items' columns (numpy arrays)
    stat: Callable[[dict[str, np.ndarray]], float] | None = None


# ------------------------------------------------------------------------------- per-item data


def _delta_frame(inputs: Inputs, _scope, a: ModelEntry, b: ModelEntry, column="margin") -> pd.DataFrame | None:
    da, db = inputs.delta.get(a.model_id), inputs.delta.get(b.model_id)
    if da is None or db is None:
        return None
    from analysis.correlation import rating_diff

    fa = da.assign(y=rating_diff(da)).set_index(da["id"].astype(str))
    fb = db.set_index(db["id"].astype(str))
    return pd.DataFrame({"a": fa[column], "b": fb[column], "y": fa["y"]}).dropna(subset=["a", "b"])


def _accuracy(inputs, scope, a, b):
    f = _delta_frame(inputs, scope, a, b)
    return None if f is None else f.assign(d=100.0 * ((f["a"] > 0).astype(float) - (f["b"] > 0).astype(float)))


def _margin(inputs, scope, a, b):
    f = _delta_frame(inputs, scope, a, b)
    return None if f is None else f.assign(d=f["a"] - f["b"])


def _judged(inputs: Inputs, scope, a: ModelEntry, b: ModelEntry) -> pd.DataFrame | None:
    from benchmarks import results

    df = inputs.pair.get(scope)
    if df is None or not _were_judged(df, a.model_id, b.model_id):
        return None
    out = results.pairwise_outcomes(df, a.model_id, b.model_id)
    if not len(out):
        return None
    f, _ = with_lengths(inputs, scope[0], out, a.model_id, b.model_id)
    scores = out.set_index(["question_id", "turn"])["outcome"].map({"win": 1.0, "tie": 0.5, "loss": 0.0})
    p_a = out.set_index(["question_id", "turn"])["p_a"]
    return pd.DataFrame({"d": 100.0 * (scores - 0.5), "p_a": 100.0 * p_a}).join(f[["score", "len_a", "len_b"]])


def _single(inputs: Inputs, scope, a: ModelEntry, b: ModelEntry) -> pd.DataFrame | None:
    df = inputs.single.get(scope)
    if df is None:
        return None
    ok = df[df["score"] != -1].drop_duplicates(["model", "question_id", "turn"], keep="last")
    s = ok.set_index(["model", "question_id", "turn"])["score"].astype(float)
    if a.model_id not in s.index.get_level_values(0) or b.model_id not in s.index.get_level_values(0):
        return None
    d = (s.loc[a.model_id] - s.loc[b.model_id]).dropna()
    return pd.DataFrame({"d": d}) if len(d) else None


def _were_judged(df: pd.DataFrame, a: str, b: str) -> bool:
    pairs = set(zip(df["model_1"], df["model_2"]))
    return (a, b) in pairs or (b, a) in pairs


# ------------------------------------------------------------------------------------- statistics


def _r_difference(f: dict[str, np.ndarray]) -> float:
    """Pearson r(m_A, rating difference) − r(m_B, rating difference) on the same pairs."""
    ok = np.isfinite(f["a"]) & np.isfinite(f["b"]) & np.isfinite(f["y"])
    a, b, y = f["a"][ok], f["b"][ok], f["y"][ok]
    if a.size < 3 or min(np.ptp(a), np.ptp(b), np.ptp(y)) == 0:
        return np.nan
    return float(np.corrcoef(a, y)[0, 1] - np.corrcoef(b, y)[0, 1])


def _lc(f: dict[str, np.ndarray]) -> float:
    """Length-controlled win rate of A minus 50 (percentage points)."""
    ok = np.isfinite(f["score"]) & np.isfinite(f["len_a"]) & np.isfinite(f["len_b"])
    if not ok.any():
        return np.nan
    return 100.0 * (paired.length_controlled_win_rate(f["score"][ok], f["len_a"][ok], f["len_b"][ok]) - 0.5)


def _held_out(inputs: Inputs) -> list:
    return [HELD_OUT] if inputs.delta else []


MEASURES = (
    Measure("heldout_accuracy", "held-out accuracy", "pp", 5.0, _held_out, _accuracy),
    Measure("heldout_margin", "held-out margin m(x)", "nats", 0.5, _held_out, _margin),
    Measure("table4_r", "Pearson r of m(x) with the rating difference", "r", 0.1, _held_out,
            lambda i, s, a, b: _delta_frame(i, s, a, b), _r_difference),
    Measure("win_rate", "adjusted win rate − 50", "pp", 5.0, lambda i: list(i.pair), _judged),
    Measure("lc_win_rate", "length-controlled win rate − 50", "pp", 5.0, lambda i: list(i.pair),
            _judged, _lc),
    Measure("single_score", "judge score", "points (1–10)", 0.25, lambda i: list(i.single), _single),
)


# ------------------------------------------------------------------------------------- comparisons


def judged_pairs(inputs: Inputs, df: pd.DataFrame, seed: int | None = None) -> list[tuple[str, str]]:
    """(objective A, objective B) of every comparison judged between two objectives' final models of
    ``seed``, as judged (A = model_1): each Sr-X against X first, in the registry's order, then the rest."""
    final = {e.model_id: o for o in inputs.objectives() if (e := inputs.main(o, seed)) is not None}
    judged = dict.fromkeys((final[a], final[b]) for a, b in zip(df["model_1"], df["model_2"])
                           if a in final and b in final)
    first = [p for p in objectives.sr_pairs() if p in judged]
    return first + [p for p in judged if p not in first]


def comparison_pairs(inputs: Inputs) -> list[tuple[str, str]]:
    """Every Sr-X with X trained, then every other pair of objectives judged head to head."""
    have = set(inputs.objectives())
    out = [p for p in objectives.sr_pairs() if set(p) <= have]
    for df in inputs.pair.values():
        for seed in inputs.seeds():
            out += judged_pairs(inputs, df, seed)
    return list(dict.fromkeys(out))


def _scope_name(scope) -> str:
    return scope if isinstance(scope, str) else f"{style.BENCH_NAMES.get(scope[0], scope[0])} ({scope[1]})"


def aligned(frames: list[pd.DataFrame]) -> list[pd.DataFrame]:
    """The seeds' frames on one index: every item any seed has (NaN where a seed lacks it)."""
    items = frames[0].index
    for f in frames[1:]:
        items = items.union(f.index)
    return [f.reindex(items) for f in frames]


def _nanmean(values) -> float:
    v = np.asarray(values, float)
    return float(v[np.isfinite(v)].mean()) if np.isfinite(v).any() else np.nan


def mean_over(frames: list[pd.DataFrame], column: str, *, n_boot: int, seed: int) -> paired.Paired:
    """The mean of ``column`` over seeds and items with its two-way bootstrap CI (a question's turns
    averaged into one item)."""
    frames = aligned(frames)
    if isinstance(frames[0].index, pd.MultiIndex):
        frames = [f.groupby(level=0).mean(numeric_only=True) for f in frames]
    return paired.paired_difference(np.vstack([f[column].to_numpy(float) for f in frames]), n_boot=n_boot, seed=seed)


def measure(m: Measure, frames: list[pd.DataFrame], *, n_boot: int, seed: int) -> paired.Paired:
    """The measure over one or several seeds' frames. Judged turns (a (question_id, turn) index) are
    resampled by question: a question's two turns are one item, as in Table 2's intervals."""
    if m.stat is None:
        return mean_over(frames, "d", n_boot=n_boot, seed=seed)
    frames = aligned(frames)
    by_question = isinstance(frames[0].index, pd.MultiIndex)
    qid = frames[0].index.get_level_values(0) if by_question else np.arange(len(frames[0]))
    rows_of = [np.flatnonzero(qid == q) for q in pd.unique(qid)]
    cols = [{c: f[c].to_numpy(float) for c in f.select_dtypes("number").columns} for f in frames]
    est = _nanmean([m.stat(c) for c in cols])

    def stat(si, ii):
        rows = np.concatenate([rows_of[i] for i in ii])
        with np.errstate(all="ignore"):
            return _nanmean([m.stat({k: v[rows] for k, v in cols[s].items()}) for s in si])

    boot = paired.crossed(stat, len(frames), len(rows_of), n_boot=n_boot, rng=np.random.default_rng(seed))
    return paired.summarize(est, boot, len(rows_of), len(frames))


def _rows_of(inputs, m, scope, a, b, *, n_boot, seed) -> list[dict]:
    frames = {}
    for s in inputs.seeds():
        ea, eb = inputs.main(a, s), inputs.main(b, s)
        f = m.frame(inputs, scope, ea, eb) if ea is not None and eb is not None else None
        if f is not None and len(f):
            frames[s] = f
    base = {"comparison": f"{objectives.label(a)} vs {objectives.label(b)}", "objective_a": a, "objective_b": b,
            "measure": m.name, "label": m.label, "on": _scope_name(scope), "unit": m.unit, "smallest_effect": m.smallest}
    rows = []
    groups = [(str(s), [f]) for s, f in frames.items()]
    if len(frames) > 1:
        groups.append(("all", list(frames.values())))
    for name, fs in groups:
        r = measure(m, fs, n_boot=n_boot, seed=seed)
        rows.append({**base, "seed": name, "seeds": len(fs), "items": r.n_items, "effect": r.effect,
                     "ci_low": r.ci_low, "ci_high": r.ci_high, "p_value": r.p_value, "mdd": r.mdd})
    return rows


def comparisons_table(inputs: Inputs, *, n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Every comparison × measure × scope, per seed and pooled ('all'); the pooled rows (each seed's row
    when there is one seed) form the family whose p-values are Holm-corrected together."""
    rows = []
    for a, b in comparison_pairs(inputs):
        for m in MEASURES:
            for scope in m.scopes(inputs):
                rows += _rows_of(inputs, m, scope, a, b, n_boot=n_boot, seed=seed)
    cols = ["comparison", "objective_a", "objective_b", "measure", "label", "on", "unit", "seed", "seeds", "items",
            "effect", "ci_low", "ci_high", "p_value", "p_holm", "mdd", "smallest_effect", "verdict", "family"]
    t = pd.DataFrame(rows, columns=[c for c in cols if c not in ("p_holm", "verdict", "family")])
    t = t[np.isfinite(t["effect"].astype(float))].reset_index(drop=True)  # e.g. no answer lengths for the LC rate
    n_seeds = t.groupby(["comparison", "measure", "on"])["seed"].transform("count") if len(t) else t["seed"]
    t["family"] = (t["seed"] == "all") | (n_seeds == 1)
    t["p_holm"] = np.nan
    t.loc[t["family"], "p_holm"] = paired.holm(t.loc[t["family"], "p_value"])
    t["verdict"] = [paired.verdict(p, d, s) if fam else "" for p, d, s, fam in
                    zip(t["p_holm"], t["mdd"], t["smallest_effect"], t["family"])]
    return t[cols]


def opening_table(t: pd.DataFrame) -> pd.DataFrame:
    """The answer, before any detail: one row per comparison of the corrected family."""
    f = t[t["family"]]

    def fmt(v):
        return f"{v:+.3g}" if np.isfinite(v) else "n/a"

    return pd.DataFrame({
        "comparison": f["comparison"], "measure": f["label"], "on": f["on"],
        "seeds × items": [f"{s} × {n}" for s, n in zip(f["seeds"], f["items"])],
        "effect [95% CI]": [f"{fmt(e)} [{fmt(lo)}, {fmt(hi)}] {u}" for e, lo, hi, u in
                            zip(f["effect"], f["ci_low"], f["ci_high"], f["unit"])],
        "p (Holm)": [f"{p:.3g}" if np.isfinite(p) else "n/a" for p in f["p_holm"]],
        "MDD (80%)": [f"{d:.3g}" if np.isfinite(d) else "n/a" for d in f["mdd"]],
        "verdict": f["verdict"],
    }).reset_index(drop=True)


UNIT_NAMES = {"pp": "percentage points"}


@style.styled
def forest_figure(t: pd.DataFrame) -> Figure:
    """Each comparison's effect with its 95% CI, one panel per unit; filled: significant after correction."""
    f = t[t["family"]].reset_index(drop=True)
    units = list(dict.fromkeys(f["unit"]))
    heights = [max(1.6, 0.6 * (f["unit"] == u).sum() + 1.0) for u in units]  # whole pixels at the DPI
    fig, axes = style.new_figure((10.0, sum(heights) + 0.4), len(units), 1, gridspec_kw={"height_ratios": heights})
    fig.suptitle("Paired differences A − B with 95% CIs; filled: significant after Holm–Bonferroni")
    for ax, u in zip(axes[:, 0], units):
        d = f[f["unit"] == u].iloc[::-1]
        y = np.arange(len(d))
        for yi, r in zip(y, d.itertuples()):
            c = style.color(r.objective_a)
            ax.errorbar(r.effect, yi, xerr=[[r.effect - r.ci_low], [r.ci_high - r.effect]], fmt="o", color=c,
                        mfc=c if r.verdict == "significant" else "white", capsize=3)
        ax.axvline(0, color="grey", lw=1)
        ax.set_yticks(y, [f"{r.comparison}: {r.label}\n{r.on}" for r in d.itertuples()])
        ax.set_ylim(-0.6, len(d) - 0.4)
        ax.set(xlabel=f"A − B ({UNIT_NAMES.get(u, u)})")
    return fig


def comparisons_section(inputs: Inputs, *, n_boot: int = 2000, seed: int = 0) -> Section:
    sec = Section("Paired comparisons")
    t = comparisons_table(inputs, n_boot=n_boot, seed=seed)
    if not len(t):
        sec.notes.append("skipped: no two objectives measured on the same items (Δπ tables of both, or "
                         "judgments of one against the other)")
        return sec
    missing = [m.label for m in MEASURES if m.scopes(inputs) and m.name not in set(t["measure"])]
    if missing:
        sec.notes.append(f"not measured: {', '.join(missing)} (their inputs are missing: e.g. the answer files for "
                         "lengths, Δπ tables with ratings)")
    sec.tables["comparisons"] = t
    sec.tables["answer"] = opening_table(t)
    sec.figures["comparisons_forest"] = forest_figure(t)
    sec.text = "The opening table's comparisons per seed and pooled (`family`: the rows corrected together)."
    sec.summary = summary(t)
    return sec


def summary(t: pd.DataFrame) -> str:
    """How to read the opening table (report.md prints it under the table)."""
    return (f"Family: the {int(t['family'].sum())} comparisons above (pooled over seeds where there are several), "
            "Holm–Bonferroni corrected together. Effects are A − B on the same items (held-out pairs; judged "
            "questions, both turns together), per seed in tables/comparisons.csv; CIs and p-values from a "
            "bootstrap over items and seeds (docs/method.md#comparisons). MDD: the smallest difference this sample "
            "detects with 80% power; 'underpowered' = not significant and the MDD above the smallest effect of "
            "interest (`smallest_effect`: 5 pp, 0.5 nats, r 0.1, 0.25 points), or no variation to tell.")
