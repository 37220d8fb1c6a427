"""From leaderboard/scores.csv: Table 3 (final models, beside the paper) and Figure 3 (tasks vs pairs)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from analysis import paper_numbers, style
from analysis.inputs import LEADERBOARD_TASKS, PRODUCERS, Inputs
from analysis.section import Section

TASK_NAMES = {"arc_challenge": "ARC-c (25-shot, acc_norm)", "hellaswag": "HellaSwag (10-shot, acc_norm)",
              "truthfulqa_mc2": "TruthfulQA (0-shot, mc2)", "mmlu": "MMLU (5-shot, acc)",
              "winogrande": "Winogrande (5-shot, acc)", "gsm8k": "GSM8K (5-shot)"}


def annotated_scores(inputs: Inputs) -> pd.DataFrame:
    """scores.csv with each model's objective, λ and pairs seen (from models.json or the names)."""
    df = inputs.leaderboard.copy()
    df["model_id"] = df["model_id"].astype(str)
    meta = [inputs.entry(m) for m in df["model_id"]]
    df.insert(1, "objective", [e.objective if e else None for e in meta])
    df.insert(2, "lam", [e.lam if e else None for e in meta])
    df.insert(3, "pairs_seen", [e.pairs_seen if e else None for e in meta])
    return df


def table3(inputs: Inputs, scores: pd.DataFrame) -> pd.DataFrame:
    """Table 3: one row per objective's final model, the six tasks and their mean, the paper's mean."""
    tasks = [t for t in LEADERBOARD_TASKS if t in scores]
    rows = []
    for obj in ("sft", "dpo", "ipo", "sr-dpo", "sr-ipo", "base"):
        e = inputs.main(obj)
        hit = scores[scores["model_id"] == e.model_id] if e else scores.iloc[0:0]
        if len(hit):
            r = hit.iloc[0]
            row = {"objective": obj, "model_id": r["model_id"], **{t: r[t] for t in tasks}}
            row["average"] = r["average"] if "average" in r else float(np.mean([r[t] for t in tasks]))
            row["paper_average"] = paper_numbers.TABLE3_AVERAGE.get(obj, np.nan)
            rows.append(row)
    return pd.DataFrame(rows, columns=["objective", "model_id", *tasks, "average", "paper_average"])


@style.styled
def figure3(inputs: Inputs, scores: pd.DataFrame) -> Figure:
    """Figure 3: each task's score (%) against training pairs seen, one line per objective; SFT dashed."""
    tasks = [t for t in LEADERBOARD_TASKS if t in scores]
    ncols = 3
    nrows = max(1, -(-len(tasks) // ncols))
    fig, axes = style.new_figure((11.0, 3.4 * nrows), nrows, ncols)
    sft = inputs.main("sft")
    sft_row = scores[scores["model_id"] == sft.model_id] if sft else scores.iloc[0:0]
    for ax, task in zip(axes.flat, tasks):
        for obj in ("dpo", "sr-dpo", "ipo", "sr-ipo"):
            ids = {e.model_id: e.pairs_seen for e in inputs.checkpoints(obj)}
            d = scores[scores["model_id"].isin(ids)].assign(x=lambda f: f["model_id"].map(ids)).sort_values("x")
            if len(d):
                ax.plot(d["x"], d[task], color=style.color(obj), marker="o", ms=3, label=style.label(obj))
        if len(sft_row):
            ax.axhline(sft_row[task].iloc[0], color=style.color("sft"), ls="--", lw=1, label="SFT")
        ax.set(title=TASK_NAMES.get(task, task), xlabel="training pairs seen", ylabel="score (%)")
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
        sec.main_tables = ("table3_leaderboard",)
    else:
        sec.notes.append("Table 3 skipped: no final model of any objective in scores.csv")
    if any(inputs.checkpoints(o) for o in ("dpo", "sr-dpo", "ipo", "sr-ipo")):
        sec.figures["figure3_leaderboard"] = figure3(inputs, scores)
    else:
        sec.notes.append("Figure 3 skipped: no checkpoints with a known number of pairs seen")
    sec.text = ("Percent. `paper_average`: the paper's Table 3 (zephyr-7b-sft-full on UltraFeedback); "
                "comparable only when the run used the paper's configuration.")
    return sec
