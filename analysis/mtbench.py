"""From the single-grading judgments: MT-Bench scores per model and per category and objective."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from analysis import style
from analysis.inputs import PRODUCERS, Inputs
from analysis.section import Section
from contracts import objectives
from contracts.ids import safe_name

def score_table(inputs: Inputs, df: pd.DataFrame, *, n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Turn 1 / turn 2 / overall mean score (1–10) per model with the overall's bootstrap CI over
    questions, its objective and pairs seen."""
    from benchmarks import results

    t = results.mt_bench_scores(df, n_boot=n_boot, seed=seed).reset_index().rename(columns={"model": "model_id"})
    meta = [inputs.entry(m) for m in t["model_id"]]
    t.insert(1, "objective", [e.objective if e else None for e in meta])
    t.insert(2, "pairs_seen", [e.pairs_seen if e else None for e in meta])
    return t


def category_table(inputs: Inputs, df: pd.DataFrame, bench: str, data_dir=None) -> pd.DataFrame:
    """Mean score per question category (columns) for each objective's final model (rows)."""
    from benchmarks import results

    cats = results.mt_bench_category_scores(df, data_dir=data_dir, bench=bench)
    rows = []
    for obj in objectives.order():
        e = inputs.main(obj) if objectives.get(obj).trainable else None
        if e is not None and e.model_id in cats.index:
            rows.append(pd.Series(cats.loc[e.model_id], name=obj))
    out = pd.DataFrame(rows)
    out.index.name = "objective"
    return out


@style.styled
def category_figure(cats: pd.DataFrame, title: str) -> Figure:
    """Grouped bars: mean score (1–10) per category, one bar per objective in its colour."""
    fig, axes = style.new_figure(style.WIDE)
    ax = axes[0, 0]
    x = np.arange(len(cats.columns))
    width = 0.8 / max(1, len(cats))
    for i, (obj, row) in enumerate(cats.iterrows()):
        ax.bar(x + (i - (len(cats) - 1) / 2) * width, row.to_numpy(float), width, color=style.color(obj),
               label=style.label(obj))
    ax.set_xticks(x, [c.replace("_", " ") for c in cats.columns], rotation=20, ha="right")
    ax.set(ylabel="mean judge score (1–10)", ylim=(0, 10), title=title)
    ax.legend(ncols=len(cats))
    return fig


def mtbench_section(inputs: Inputs, data_dir=None, *, n_boot: int = 2000, seed: int = 0) -> Section:
    """MT-Bench / Vicuna-Bench single-grading scores per model and per category."""
    sec = Section("Single-grading scores (MT-Bench, Vicuna-Bench)")
    if not inputs.single:
        sec.notes.append(f"skipped: no single-grading judgments; produced by {PRODUCERS['single']}")
        return sec
    for (bench, judge), df in inputs.single.items():
        key = f"{bench}_scores_{safe_name(judge)}"
        sec.tables[key] = score_table(inputs, df, n_boot=n_boot, seed=seed)
        try:
            cats = category_table(inputs, df, bench, data_dir)
        except (FileNotFoundError, ValueError) as e:  # no question file to map ids to categories
            sec.notes.append(f"{bench} categories skipped: {e}")
            continue
        if len(cats):
            name = f"{bench}_categories_{safe_name(judge)}"
            sec.tables[name] = cats.reset_index()
            sec.figures[name] = category_figure(cats, style.judged_title(
                f"{style.BENCH_NAMES.get(bench, bench)} by category", judge))
        else:
            sec.notes.append(f"{bench} categories skipped: no final model of an objective was graded")
    sec.text = ("Mean judge score 1–10 (FastChat single grading; score −1 = no verdict, left out), overall with "
                "a 95% bootstrap CI over questions [`ci_low`, `ci_high`]. A local judge's score is its "
                "expected rating calibrated against a content-free answer (docs/method.md). The category "
                "table has one mean per category and no CI (as many questions per category as the run took).")
    return sec
