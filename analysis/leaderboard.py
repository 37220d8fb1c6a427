"""From leaderboard/scores.csv: Table 3 (final models, beside the paper) and Figure 3 (tasks vs pairs)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from analysis import paper_numbers, style
from analysis.inputs import PRODUCERS, Inputs
from analysis.section import Section
from contracts import objectives
from contracts.benches import LEADERBOARD_TASKS
from contracts.tables import SCORES_AVERAGE, SCORES_INDEX

TASKS = tuple(t.name for t in LEADERBOARD_TASKS)


def annotated_scores(inputs: Inputs) -> pd.DataFrame:
    """scores.csv with each model's objective, λ and pairs seen (from models.json or the names)."""
    df = inputs.leaderboard.copy()
    meta = [inputs.entry(m) for m in df[SCORES_INDEX]]
    df.insert(1, "objective", [e.objective if e else None for e in meta])
    df.insert(2, "lam", [e.lam if e else None for e in meta])
    df.insert(3, "pairs_seen", [e.pairs_seen if e else None for e in meta])
    return df


def table3(inputs: Inputs, scores: pd.DataFrame) -> pd.DataFrame:
    """Table 3: one row per objective's final model (per seed), the six tasks and their mean, the paper's
    mean; with several seeds also their mean over seeds (seed 'all') and the average's SD over seeds."""
    rows = []
    for obj in objectives.OBJECTIVES:  # the registry's order: the paper's is SFT, DPO, IPO, Sr-DPO, Sr-IPO
        per_seed = []
        for s in inputs.seeds() if objectives.get(obj).preference else [None]:
            e = inputs.main(obj, s)
            hit = scores[scores[SCORES_INDEX] == e.model_id] if e else scores.iloc[0:0]
            if len(hit):
                r = hit.iloc[0]
                per_seed.append({"objective": obj, "seed": "" if s is None else s, "model_id": r[SCORES_INDEX],
                                 **{t: r[t] for t in TASKS}, SCORES_AVERAGE: r[SCORES_AVERAGE],
                                 "paper_average": paper_numbers.TABLE3_AVERAGE.get(obj, np.nan)})
        rows += per_seed
        if len(per_seed) > 1:
            mean = pd.DataFrame(per_seed)[[*TASKS, SCORES_AVERAGE]].mean()
            rows.append({**per_seed[0], "seed": "all", "model_id": "", **mean.to_dict(),
                         "average_sd_over_seeds": pd.DataFrame(per_seed)[SCORES_AVERAGE].std()})
    return pd.DataFrame(rows, columns=["objective", "seed", "model_id", *TASKS, SCORES_AVERAGE, "average_sd_over_seeds",
                                       "paper_average"])


@style.styled
def figure3(inputs: Inputs, scores: pd.DataFrame) -> Figure:
    """Figure 3: each task's score (%) against training pairs seen, one line per objective; the start dashed."""
    tasks = [t for t in LEADERBOARD_TASKS if scores[t.name].notna().any()]
    ncols = 3
    nrows = max(1, -(-len(tasks) // ncols))
    fig, axes = style.new_figure((11.0, 3.4 * nrows), nrows, ncols)
    start = inputs.start()
    start_row = scores[scores[SCORES_INDEX] == start.model_id] if start else scores.iloc[0:0]
    for ax, task in zip(axes.flat, tasks):
        for obj in objectives.order():
            if not objectives.get(obj).preference:
                continue
            ids = {e.model_id: e.pairs_seen for e in inputs.checkpoints(obj)}
            d = scores[scores[SCORES_INDEX].isin(ids)].assign(x=lambda f: f[SCORES_INDEX].map(ids)).sort_values("x")
            if len(d):
                ax.plot(d["x"], d[task.name], color=style.color(obj), marker="o", ms=3, label=style.label(obj))
        if len(start_row):
            ax.axhline(start_row[task.name].iloc[0], color=style.color(start.objective), ls="--", lw=1,
                       label=style.label(start.objective))
        ax.set(title=task.title, xlabel="training pairs seen", ylabel="score (%)")
        if ax.lines:
            ax.legend()
    for ax in list(axes.flat)[len(tasks):]:
        ax.set_axis_off()
    return fig


def leaderboard_section(inputs: Inputs) -> Section:
    """Table 3 and Figure 3 from leaderboard/scores.csv."""
    sec = Section("Open LLM Leaderboard (Table 3, Figure 3)")
    if inputs.leaderboard is None:
        sec.notes.append(f"skipped: no leaderboard scores; produced by {PRODUCERS['leaderboard']}")
        return sec
    scores = annotated_scores(inputs)
    sec.tables["leaderboard_scores"] = scores
    t3 = table3(inputs, scores)
    if len(t3):
        sec.tables["table3_leaderboard"] = t3
    else:
        sec.notes.append("Table 3 skipped: no final model of any objective in scores.csv")
    if any(inputs.checkpoints(o) for o in objectives.preference()):
        sec.figures["figure3_leaderboard"] = figure3(inputs, scores)
    else:
        sec.notes.append("Figure 3 skipped: no checkpoints with a known number of pairs seen")
    sec.text = ("Percent. `paper_average`: the paper's Table 3 (zephyr-7b-sft-full on UltraFeedback); "
                "comparable only when the run used the paper's configuration.")
    return sec
