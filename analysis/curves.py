"""From the trainer's logs: Figure 1 (margin and accuracy vs pairs seen), training curves, Table 5."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from analysis import paper_numbers, style
from contracts import objectives
from analysis.inputs import PRODUCERS, Inputs, TrainRun
from analysis.section import Section
from contracts.tables import LOG_FIELDS, PARAM_FIELDS, TOKEN_FIELDS

# (log column, panel title, axis label, scale, runs): accuracies are logged as shares and plotted in percent;
# each objective's loss over its loss at the first step, so that losses of different scales share one axis;
# a reference-free objective's margin is ā⁺ − ā⁻ (per-token means, no reference), another quantity than
# β·m(x), so it gets panels of its own
TRAIN_METRICS = (
    ("loss", "Loss, relative to the first step", "loss ÷ loss at step 1", 1.0, "all"),
    ("rewards/margins", "Reward margin", "β·m(x)", 1.0, "reference"),
    ("rewards/accuracies", "Reward accuracy", "pairs with β·m(x) > 0 (%)", 100.0, "reference"),
    ("delta/mean", "Refinement Δπ (Sr- runs)", "mean Δπ = β·m(p⊕x)", 1.0, "reference"),
    ("rewards/margins", "Reward margin, reference-free objectives", "β·(ā⁺ − ā⁻)", 1.0, "free"),
    ("rewards/accuracies", "Reward accuracy, reference-free objectives", "pairs with ā⁺ > ā⁻ (%)", 100.0, "free"),
)
LOG_COLUMNS = LOG_FIELDS


def figure1_groups(objectives_in_run) -> list[tuple[str, ...]]:
    """Figure 1's columns: each (X, Sr-X) present, then the other trained objectives together."""
    have = list(objectives_in_run)
    pairs = [(b, s) for s, b in objectives.sr_pairs() if s in have and b in have]
    rest = [o for o in have if not any(o in p for p in pairs) and objectives.get(o).preference]
    groups = [tuple(o for o in rest if objectives.get(o).reference), tuple(o for o in rest if not objectives.get(o).reference)]
    return pairs + [g for g in groups if g]  # the reference-free apart: their margin is another quantity


def training_table(runs: dict[str, TrainRun]) -> pd.DataFrame:
    """All runs' logs in one long table: run, objective, lam, beta and the logged metrics per step."""
    frames = []
    for name, tr in runs.items():
        cols = [c for c in LOG_COLUMNS if c in tr.log]
        df = tr.log[cols].copy()
        df.insert(0, "beta", tr.info.get("beta"))
        df.insert(0, "lam", tr.lam)
        df.insert(0, "objective", tr.objective)
        df.insert(0, "run", name)
        frames.append(df)
    if not frames:
        return pd.DataFrame(columns=["run", "objective", "lam", "beta", *LOG_COLUMNS])
    return pd.concat(frames, ignore_index=True).sort_values(["run", "pairs_seen"], kind="stable").reset_index(drop=True)


def run_label(table: pd.DataFrame, run: str) -> str:
    """'Sr-DPO', or 'Sr-DPO (λ=0.5)' when the objective has runs with several λ, or the run name."""
    rows = table[table["run"] == run]
    obj = rows["objective"].iloc[0]
    same = table[table["objective"] == obj]
    lab = style.label(obj)
    if same["lam"].nunique(dropna=True) > 1:
        lab += f" (λ={rows['lam'].iloc[0]:g})"
    elif same["run"].nunique() > 1:
        lab += f" ({run})"
    return lab


def _runs_of(table: pd.DataFrame, objective: str) -> list[str]:
    return sorted(table.loc[table["objective"] == objective, "run"].unique())


def _linestyle(table: pd.DataFrame, run: str) -> str:
    obj = table.loc[table["run"] == run, "objective"].iloc[0]
    return ("-", "--", ":", "-.")[_runs_of(table, obj).index(run) % 4]


@style.styled
def figure1_margin_accuracy(table: pd.DataFrame) -> Figure:
    """Figure 1: average m(x) (nats) and accuracy (% with m(x) > 0) vs pairs seen, X beside Sr-X (and a
    column for the other objectives)."""
    groups = figure1_groups([o for o in objectives.order() if o in set(table["objective"])]) or [()]
    fig, axes = style.new_figure((5.5 * max(2, len(groups)), 7.5), 2, max(2, len(groups)))
    for col, pair in enumerate(groups):
        for obj in pair:
            for run in _runs_of(table, obj):
                d = table[table["run"] == run].dropna(subset=["pairs_seen"])
                kw = dict(color=style.color(obj), ls=_linestyle(table, run), label=run_label(table, run))
                if "margin" in d:
                    axes[0, col].plot(d["pairs_seen"], d["margin"], **kw)
                if "accuracy" in d:
                    axes[1, col].plot(d["pairs_seen"], 100 * d["accuracy"], **kw)
        title = " vs ".join(map(style.label, pair))
        free = bool(pair) and not objectives.get(pair[0]).reference
        m = "ā⁺ − ā⁻" if free else "m(x)"
        axes[0, col].set(title=title, ylabel=f"average margin {m} (nats{'/token' if free else ''})")
        axes[1, col].set(title=title, ylabel=f"accuracy: {m} > 0 (%)", xlabel="training pairs seen")
        axes[0, col].set_xlabel("training pairs seen")
        for ax in axes[:, col]:
            if ax.lines:
                ax.legend()
    for ax in axes[:, len(groups):].flat:
        ax.set_axis_off()
    return fig


@style.styled
def figure1_prompted_accuracy(table: pd.DataFrame) -> Figure:
    """Figure 1 (right): for Sr runs, accuracy on x (solid) vs on p⊕x (dashed) against pairs seen."""
    refined = [o for o in objectives.refined() if o in set(table["objective"])]
    fig, axes = style.new_figure((5.5 * max(2, len(refined)), 4.0), 1, max(2, len(refined)))
    for ax in axes[0, len(refined):]:
        ax.set_axis_off()
    for ax, obj in zip(axes[0], refined):
        for run in _runs_of(table, obj):
            d = table[table["run"] == run].dropna(subset=["pairs_seen"])
            lab = run_label(table, run)
            if "accuracy" in d:
                ax.plot(d["pairs_seen"], 100 * d["accuracy"], color=style.color(obj), ls="-", label=f"{lab}: x")
            if "accuracy_p" in d:
                ax.plot(d["pairs_seen"], 100 * d["accuracy_p"], color=style.color(obj), ls="--",
                        label=f"{lab}: p⊕x")
        ax.set(title=f"{style.label(obj)}: accuracy with and without the quality prompt",
               xlabel="training pairs seen", ylabel="accuracy: m > 0 (%)")
        if ax.lines:
            ax.legend()
    return fig


@style.styled
def training_curves(table: pd.DataFrame) -> Figure:
    """Loss (relative to its first step: losses of different objectives differ in scale), reward margin,
    reward accuracy and mean Δπ against pairs seen, one line per run, one titled panel per metric."""
    free = {o for o in table["objective"].unique() if o in objectives.OBJECTIVES and not objectives.get(o).reference}
    panels = [m for m in TRAIN_METRICS if m[4] != "free" or free]
    fig, axes = style.new_figure((style.GRID[0] * len(panels) / 4, style.GRID[1]) if len(panels) > 4 else style.GRID,
                                 2, (len(panels) + 1) // 2)
    for ax, (col, title, ylabel, scale, runs) in zip(axes.T.flat, panels):
        for run in sorted(table["run"].unique()):
            d = table[table["run"] == run].dropna(subset=["pairs_seen"])
            obj = d["objective"].iloc[0]
            if col not in d or d[col].isna().all() or (runs != "all" and (obj in free) != (runs == "free")):
                continue
            y = d[col] / d[col].iloc[0] if col == "loss" and d[col].iloc[0] else scale * d[col]
            ax.plot(d["pairs_seen"], y, color=style.color(obj), ls=_linestyle(table, run), label=run_label(table, run))
        ax.set(xlabel="training pairs seen", ylabel=ylabel, title=title)
        if ax.lines:
            ax.legend()
        else:
            ax.text(0.5, 0.5, f"no '{col}' in the logs", ha="center", va="center", transform=ax.transAxes)
    return fig


def model_flops(log: pd.DataFrame, info: dict) -> pd.Series:
    """Model FLOPs of each step from its token counts: 6 per parameter and token forward and backward, 2
    without gradient; the body's parameters count for every token, the LM head's for target tokens only
    (attention's own FLOPs, ~T/(6·d) of a token's at these lengths, are left out). NaN without counts."""
    if any(c not in log for c in TOKEN_FIELDS) or any(info.get(k) is None for k in PARAM_FIELDS):
        return pd.Series(np.nan, index=log.index)
    body, head = (float(info[k]) for k in PARAM_FIELDS)
    grad = body * log["tokens/grad"] + head * log["targets/grad"]
    no_grad = body * log["tokens/no_grad"] + head * log["targets/no_grad"]
    return 6 * grad + 2 * no_grad


def _step_time_ratio(sr: pd.DataFrame, base: pd.DataFrame) -> tuple[float, float, float]:
    """Median and interquartile range over steps of step_time_s(Sr-X) / step_time_s(X), step by step (both
    runs see the same pairs at the same step)."""
    if "step_time_s" not in sr or "step_time_s" not in base:
        return np.nan, np.nan, np.nan
    both = sr.set_index("step")["step_time_s"].to_frame("sr").join(base.set_index("step")["step_time_s"].rename("x"),
                                                                   how="inner").dropna()
    if both.empty:
        return np.nan, np.nan, np.nan
    r = both["sr"] / both["x"]
    return float(r.median()), float(r.quantile(0.25)), float(r.quantile(0.75))


def table5_training_time(runs: dict[str, TrainRun]) -> pd.DataFrame:
    """Table 5: the cost of each run and of Sr-X relative to X, twice.

    From the token counts (what a busy machine cannot distort): tokens forwarded per pair with and without
    gradient and model FLOPs per pair; ``flops_ratio`` is Sr-X's FLOPs per pair over X's. From the clock:
    wall time and the median step time; ``time_ratio`` is the median over steps of Sr-X's step time over
    X's at the same step, with its interquartile range (``time_ratio_q25``/``q75``). X = the run named after
    the base objective (else the mean over its runs). The paper: GPU-hours on 8×A100, Sr-DPO/DPO =
    20.8/16.8 ≈ 1.24.
    """
    rows = []
    for name, tr in runs.items():
        log, info = tr.log, tr.info
        pairs = float(log["pairs_seen"].max()) if log["pairs_seen"].notna().any() else np.nan
        wall = info.get("wall_time_s")
        if wall is None and "elapsed_s" in log:
            wall = float(log["elapsed_s"].max())
        per_pair = lambda col: float(log[col].sum()) / pairs if col in log and pairs > 0 else np.nan  # noqa: E731
        rows.append({
            "run": name, "objective": tr.objective, "lam": tr.lam,
            "steps": int(log["step"].max()) if "step" in log else len(log), "pairs_seen": pairs,
            "tokens_grad_per_pair": per_pair("tokens/grad"), "tokens_no_grad_per_pair": per_pair("tokens/no_grad"),
            "gflops_per_pair": float(model_flops(log, info).sum()) / pairs / 1e9 if pairs > 0 else np.nan,
            "wall_time_h": np.nan if wall is None else float(wall) / 3600,
            "step_time_s": float(log["step_time_s"].median()) if "step_time_s" in log else np.nan,
            "device": info.get("device"), "dtype": info.get("dtype"), "finished": info.get("finished"),
        })
    df = pd.DataFrame(rows, columns=["run", "objective", "lam", "steps", "pairs_seen", "tokens_grad_per_pair",
                                     "tokens_no_grad_per_pair", "gflops_per_pair", "wall_time_h", "step_time_s",
                                     "device", "dtype", "finished"])
    flops = {o: d["gflops_per_pair"].mean() for o, d in df.groupby("objective")}
    base_of = {sr: base for sr, base in objectives.sr_pairs()}
    ratios = []
    for r in df.itertuples():
        base = base_of.get(r.objective)
        x = runs.get(base) if base else None
        ratios.append((r.gflops_per_pair / flops[base] if base in flops else np.nan,
                       *(_step_time_ratio(runs[r.run].log, x.log) if x is not None else (np.nan,) * 3)))
    df[["flops_ratio", "time_ratio", "time_ratio_q25", "time_ratio_q75"]] = pd.DataFrame(ratios, index=df.index)
    paper = paper_numbers.TABLE5_GPU_HOURS
    df["paper_gpu_hours"] = df["objective"].map(paper)
    df["paper_ratio"] = df["objective"].map({"sr-dpo": paper["sr-dpo"] / paper["dpo"], "dpo": 1.0})
    return df


def training_section(inputs: Inputs) -> Section:
    """Figure 1, the training curves and Table 5 from train/<run>/log.jsonl and run_info.json."""
    sec = Section("Training (Figure 1, training curves, Table 5)")
    if not inputs.train:
        sec.notes.append(f"skipped: no training logs; produced by {PRODUCERS['train']}")
        return sec
    table = training_table(inputs.train)
    sec.tables["training_log"] = table
    sec.tables["table5_training_time"] = table5_training_time(inputs.train)
    sec.figures["figure1_margin_accuracy"] = figure1_margin_accuracy(table)
    if table["objective"].isin(objectives.refined()).any():
        sec.figures["figure1_prompted_accuracy"] = figure1_prompted_accuracy(table)
    else:
        sec.notes.append("no Sr-DPO / Sr-IPO run: the accuracy on p⊕x panel is skipped")
    sec.figures["training_curves"] = training_curves(table)
    unpaired = [s for s, b in objectives.sr_pairs() if (s in set(table["objective"])) != (b in set(table["objective"]))]
    if unpaired:
        sec.notes.append(f"trained without its Sr- partner or base: {', '.join(map(style.label, unpaired))}")
    sec.text = ("Margins m(x) are in nats (no β); accuracies are shares of the batch with m > 0. "
                "Table 5: `flops_ratio` is Sr-X's model FLOPs per pair over X's, from the tokens each step "
                "forwarded (with gradient: 6 FLOPs per parameter and token; the no-grad p ⊕ x pass: 2), "
                "which a busy machine does not change; `time_ratio` is the median over steps of the step-time "
                "ratio with its interquartile range [`time_ratio_q25`, `time_ratio_q75`], which it does. "
                "The paper measured GPU-hours on 8×A100 with FSDP; compare ratios, not hours.")
    return sec
