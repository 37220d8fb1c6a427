"""From the pairwise judgments: Table 2, Figure 2a (λ), Figure 2b and win-rate curves over training,
win/tie/loss bars. Outcomes and bootstrap CIs come from benchmarks.results (one implementation)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from analysis import paper_numbers, style
from analysis.inputs import PRODUCERS, Inputs, is_final
from analysis.section import Section
from contracts import objectives
from contracts.run_dir import ModelEntry

# n_identical: judged turns where both answers are the same text (a tie whatever the judge); in percent
# from "win" on; p_a: a local judge's mean P(A better) over both orders (NaN for FastChat's records)
COLUMNS = ["bench", "judge", "model_a", "model_b", "n", "n_identical", "win", "tie", "loss", "win_rate",
           "adjusted_win_rate", "adjusted_ci_low", "adjusted_ci_high", "p_a", "p_a_ci_low", "p_a_ci_high"]
PERCENT = COLUMNS[COLUMNS.index("win"):]


def _judged(df: pd.DataFrame, a: str, b: str) -> bool:
    pairs = set(zip(df["model_1"], df["model_2"]))
    return (a, b) in pairs or (b, a) in pairs


def compare(df: pd.DataFrame, bench: str, judge: str, a: str, b: str, *, n_boot: int, seed: int) -> dict | None:
    """Win/tie/loss of model ``a`` against ``b`` (percent) with the adjusted win rate's CI; None if unjudged."""
    from benchmarks import results

    if a == b or not _judged(df, a, b):
        return None
    outcomes = results.pairwise_outcomes(df, a, b)
    if len(outcomes) == 0:
        return None
    r = results.win_rates(outcomes, n_boot=n_boot, seed=seed)
    row = {"bench": bench, "judge": judge, "model_a": a, "model_b": b, "n": int(r["n"]), "n_identical": r["n_identical"]}
    for k in PERCENT:
        row[k] = 100.0 * float(r[k])
    return row


def final_pairs(inputs: Inputs, df: pd.DataFrame) -> list[tuple[str, str]]:
    """(objective A, objective B) of every comparison judged between two objectives' final models, as judged
    (A = model_1): each Sr-X against X first, in the registry's order, then the rest."""
    final = {inputs.main(o).model_id: o for o in inputs.objectives()}
    judged = dict.fromkeys((final[a], final[b]) for a, b in zip(df["model_1"], df["model_2"])
                           if a in final and b in final)
    first = [p for p in objectives.sr_pairs() if p in judged]
    return first + [p for p in judged if p not in first]


def table2(inputs: Inputs, *, n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Table 2: the final models head to head (Sr-DPO vs DPO, ...) per benchmark/judge, beside the paper."""
    rows = []
    for (bench, judge), df in inputs.pair.items():
        for oa, ob in final_pairs(inputs, df):
            ea, eb = inputs.main(oa), inputs.main(ob)
            row = compare(df, bench, judge, ea.model_id, eb.model_id, n_boot=n_boot, seed=seed)
            if row is None:
                continue
            row.update(objective_a=oa, objective_b=ob)
            paper = paper_numbers.table2_row(oa, ob, bench)
            row.update(dict(zip(("paper_win", "paper_tie", "paper_loss"), paper or (np.nan,) * 3)))
            rows.append(row)
    return pd.DataFrame(rows, columns=COLUMNS + ["objective_a", "objective_b", "paper_win", "paper_tie",
                                                 "paper_loss"])


def lambda_table(inputs: Inputs, *, n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Figure 2a data: each final Sr-X model (one per λ, same β and pairs seen as X) against X."""
    rows = []
    for sr, base in objectives.sr_pairs():
        eb = inputs.main(base)
        if eb is None:
            continue
        finals: dict[float, ModelEntry] = {}
        for e in inputs.models:
            if e.objective != sr or e.lam is None:
                continue
            if eb.beta is not None and e.beta is not None and e.beta != eb.beta:
                continue
            if eb.pairs_seen is not None and e.pairs_seen is not None and e.pairs_seen != eb.pairs_seen:
                continue
            rank = lambda x: (x.pairs_seen or -1, is_final(x))
            if e.lam not in finals or rank(e) > rank(finals[e.lam]):
                finals[e.lam] = e
        for (bench, judge), df in inputs.pair.items():
            for lam, e in sorted(finals.items()):
                row = compare(df, bench, judge, e.model_id, eb.model_id, n_boot=n_boot, seed=seed)
                if row is not None:
                    rows.append({"objective": sr, "lam": lam, **row})
    return pd.DataFrame(rows, columns=["objective", "lam"] + COLUMNS)


def training_winrate_table(inputs: Inputs, baseline: str | None = None, *, n_boot: int = 2000,
                           seed: int = 0) -> pd.DataFrame:
    """Win-rate curves: every objective's checkpoints against a baseline model (default: SFT, else DPO)
    and, per matching pairs seen, Sr-X against X (the paper's Figure 2b, ``vs = 'X'``)."""
    rows = []
    if baseline is None:
        base = inputs.start() or next((inputs.main(o) for o in inputs.objectives()), None)
        baseline = base.model_id if base else None
    for (bench, judge), df in inputs.pair.items():
        for obj in inputs.objectives():
            for e in inputs.checkpoints(obj):
                if baseline is not None:
                    row = compare(df, bench, judge, e.model_id, baseline, n_boot=n_boot, seed=seed)
                    if row is not None:
                        rows.append({"objective": obj, "vs": "baseline", "pairs_seen": e.pairs_seen, **row})
        for sr, base_obj in objectives.sr_pairs():
            at = {e.pairs_seen: e for e in inputs.checkpoints(base_obj)}
            for e in inputs.checkpoints(sr):
                if e.pairs_seen in at:
                    row = compare(df, bench, judge, e.model_id, at[e.pairs_seen].model_id, n_boot=n_boot, seed=seed)
                    if row is not None:
                        rows.append({"objective": sr, "vs": "X", "pairs_seen": e.pairs_seen, **row})
    return pd.DataFrame(rows, columns=["objective", "vs", "pairs_seen"] + COLUMNS)


def _bench_judges(table: pd.DataFrame) -> list[tuple[str, str]]:
    return sorted(set(zip(table["bench"], table["judge"])))


def _bench_title(bench: str, judge: str) -> str:
    return f"{style.BENCH_NAMES.get(bench, bench)} (judge: {judge})"


@style.styled
def outcome_bars(t2: pd.DataFrame) -> Figure:
    """Stacked win/tie/loss bars (percent) per comparison, one panel per benchmark; ◆ = paper's win %."""
    panels = _bench_judges(t2)
    fig, axes = style.new_figure((5.5 * len(panels), 3.6), 1, len(panels))
    for ax, (bench, judge) in zip(axes[0], panels):
        d = t2[(t2["bench"] == bench) & (t2["judge"] == judge)].reset_index(drop=True)
        names = [f"{style.label(a)} vs {style.label(b)}" for a, b in zip(d["objective_a"], d["objective_b"])]
        left = np.zeros(len(d))
        for outcome in ("win", "tie", "loss"):
            ax.barh(names, d[outcome], left=left, color=style.OUTCOME_COLORS[outcome], label=outcome)
            left += d[outcome].to_numpy()
        if d["paper_win"].notna().any():
            ax.scatter(d["paper_win"], names, marker="D", color="black", zorder=3, label="paper win")
        ax.set(xlim=(0, 100), xlabel="share of judged turns (%)", title=_bench_title(bench, judge))
        ax.invert_yaxis()
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.22), ncols=4)
    return fig


@style.styled
def lambda_figure(lt: pd.DataFrame) -> Figure:
    """Figure 2a: adjusted win rate (%) of Sr-X vs X against λ, with bootstrap CIs; λ = 0 is X itself."""
    panels = _bench_judges(lt)
    fig, axes = style.new_figure((5.0 * len(panels), 3.8), 1, len(panels))
    for ax, (bench, judge) in zip(axes[0], panels):
        d = lt[(lt["bench"] == bench) & (lt["judge"] == judge)]
        for obj, base in objectives.sr_pairs():
            o = d[d["objective"] == obj].sort_values("lam")
            if len(o):
                err = [o["adjusted_win_rate"] - o["adjusted_ci_low"], o["adjusted_ci_high"] - o["adjusted_win_rate"]]
                ax.errorbar(o["lam"], o["adjusted_win_rate"], yerr=err, color=style.color(obj), marker="o",
                            capsize=3, label=f"{style.label(obj)} vs {style.label(base)}")
        # At λ = 0 the Sr objective is X itself, so its win rate against X is 50% by definition.
        ax.axhline(50, color="grey", ls="--", lw=1, label="λ = 0 (Sr-X ≡ X): 50%")
        ax.set(xlabel="λ", ylabel="adjusted win rate vs X (%)", title=_bench_title(bench, judge), ylim=(0, 100))
        ax.legend()
    return fig


@style.styled
def training_winrate_figure(wt: pd.DataFrame, vs: str) -> Figure:
    """Adjusted win rate (%) with CI bands against pairs seen, one line per objective, one panel per bench."""
    d_all = wt[wt["vs"] == vs]
    panels = _bench_judges(d_all)
    fig, axes = style.new_figure((5.0 * len(panels), 3.8), 1, len(panels))
    for ax, (bench, judge) in zip(axes[0], panels):
        d = d_all[(d_all["bench"] == bench) & (d_all["judge"] == judge)]
        for obj in objectives.order():
            o = d[d["objective"] == obj].sort_values("pairs_seen")
            if len(o):
                who = (f"vs {o['model_b'].iloc[0]}" if vs == "baseline"
                       else f"vs {style.label(objectives.OBJECTIVES[obj].base)}")
                ax.plot(o["pairs_seen"], o["adjusted_win_rate"], color=style.color(obj), marker="o",
                        label=f"{style.label(obj)} {who}")
                ax.fill_between(o["pairs_seen"], o["adjusted_ci_low"], o["adjusted_ci_high"],
                                color=style.color(obj), alpha=0.15, lw=0)
        ax.axhline(50, color="grey", ls="--", lw=1)
        ax.set(xlabel="training pairs seen", ylabel="adjusted win rate (%)", title=_bench_title(bench, judge),
               ylim=(0, 100))
        ax.legend()
    return fig


def winrate_section(inputs: Inputs, *, n_boot: int = 2000, seed: int = 0) -> Section:
    """Table 2, win/tie/loss bars, Figure 2a (λ), Figure 2b and the win-rate curves vs the baseline."""
    sec = Section("Pairwise win rates (Table 2, Figure 2)")
    if not inputs.pair:
        sec.notes.append(f"skipped: no pairwise judgments; produced by {PRODUCERS['pair']}")
        return sec
    sec.text = ("Percent of judged turns (FastChat: a verdict that flips when the answers are swapped counts "
                "as a tie; a local judge: its most probable verdict once both answer orders are pooled, "
                "docs/method.md). Adjusted win rate = win + tie/2, 95% bootstrap CI over questions. `p_a`: a "
                "local judge's mean probability (%) that A is the better answer, with its CI. `n_identical`: "
                "judged turns where both models gave the same text, a tie whatever the judge. "
                "`paper_*`: the paper's Table 2 (GPT-4 judge).")
    t2 = table2(inputs, n_boot=n_boot, seed=seed)
    if len(t2):
        sec.tables["table2_winrates"] = t2
        sec.main_tables = ("table2_winrates",)
        sec.figures["table2_outcomes"] = outcome_bars(t2)
    else:
        sec.notes.append("Table 2 skipped: no judgments between the final models of two objectives "
                         "(run `srdpo-eval judge --mode pairwise` on e.g. sr-dpo vs dpo)")
    lt = lambda_table(inputs, n_boot=n_boot, seed=seed)
    if len(lt):
        sec.tables["figure2a_lambda"] = lt
        sec.figures["figure2a_lambda"] = lambda_figure(lt)
    else:
        sec.notes.append("Figure 2a skipped: no judgments of Sr-X runs with a known λ against X")
    wt = training_winrate_table(inputs, n_boot=n_boot, seed=seed)
    if (wt["vs"] == "X").any():
        sec.tables["figure2b_training"] = wt[wt["vs"] == "X"].reset_index(drop=True)
        sec.figures["figure2b_training"] = training_winrate_figure(wt, "X")
    else:
        sec.notes.append("Figure 2b skipped: no judgments of Sr-X against X at the same number of pairs seen")
    if (wt["vs"] == "baseline").any():
        sec.tables["winrate_curves"] = wt[wt["vs"] == "baseline"].reset_index(drop=True)
        sec.figures["winrate_curves"] = training_winrate_figure(wt, "baseline")
    else:
        sec.notes.append("win-rate curves skipped: no judgments of checkpoints (models with pairs_seen) "
                         "against the baseline (SFT, else DPO)")
    return sec
