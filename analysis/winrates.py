"""From the pairwise judgments: Table 2, Figure 2a (λ), Figure 2b and win-rate curves over training,
win/tie/loss bars. Outcomes and bootstrap CIs come from benchmarks.results (one implementation)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from analysis import paper_numbers, style
from analysis.inputs import PRODUCERS, Inputs, is_final, seed_of
from analysis.section import Section
from contracts import objectives
from contracts.run_dir import ModelEntry

# n_identical: judged turns where both answers are the same text (a tie whatever the judge); in percent
# from "win" on; p_a: a local judge's mean P(A better) over both orders (NaN for FastChat's records)
COLUMNS = ["bench", "judge", "model_a", "model_b", "n", "n_identical", "win", "tie", "loss",
           "adjusted_win_rate", "adjusted_ci_low", "adjusted_ci_high", "p_a", "p_a_ci_low", "p_a_ci_high"]
PERCENT = COLUMNS[COLUMNS.index("win"):]


def _judged(df: pd.DataFrame, a: str, b: str) -> bool:
    pairs = set(zip(df["model_1"], df["model_2"]))
    return (a, b) in pairs or (b, a) in pairs


def compare_models(df: pd.DataFrame, bench: str, judge: str, a: str, b: str, *, n_boot: int, seed: int) -> dict | None:
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


def _lc_columns(frames: list[pd.DataFrame], *, n_boot: int, seed: int) -> dict:
    """The length-controlled win rate (%) with its CI, and the unit lengths were counted in."""
    from analysis import compare

    lc = next(m for m in compare.MEASURES if m.name == "lc_win_rate")
    r = compare.measure(lc, frames, n_boot=n_boot, seed=seed)
    return {"lc_win_rate": 50 + r.effect, "lc_ci_low": 50 + r.ci_low, "lc_ci_high": 50 + r.ci_high}


def _pooled_row(rows: list[dict], frames: list[pd.DataFrame], *, n_boot: int, seed: int) -> dict:
    """Table 2 over seeds: counts summed, the adjusted win rate's and P(A better)'s CIs from the two-way
    bootstrap over seeds and questions (analysis/paired.py)."""
    from analysis import compare

    n = sum(r["n"] for r in rows)
    row = {**rows[0], "seed": "all", "n": n, "n_identical": sum(r["n_identical"] for r in rows)}
    for k in ("win", "tie", "loss"):
        row[k] = sum(r[k] * r["n"] for r in rows) / n
    wr = compare.mean_over(frames, "d", n_boot=n_boot, seed=seed)
    row.update(adjusted_win_rate=50 + wr.effect, adjusted_ci_low=50 + wr.ci_low, adjusted_ci_high=50 + wr.ci_high)
    if all(f["p_a"].notna().all() for f in frames):  # a local judge's P(A better)
        pa = compare.mean_over(frames, "p_a", n_boot=n_boot, seed=seed)
        row.update(p_a=pa.effect, p_a_ci_low=pa.ci_low, p_a_ci_high=pa.ci_high)
    return {**row, **_lc_columns(frames, n_boot=n_boot, seed=seed)}


def table2(inputs: Inputs, *, n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Table 2: the final models head to head (Sr-DPO vs DPO, ...) per benchmark/judge and seed, beside the
    paper, with the length-controlled win rate; with several seeds also pooled over them (seed 'all')."""
    from analysis import compare

    rows = []
    for (bench, judge), df in inputs.pair.items():
        per_pair: dict[tuple[str, str], list] = {}
        for s in inputs.seeds():
            for oa, ob in compare.judged_pairs(inputs, df, s):
                ea, eb = inputs.main(oa, s), inputs.main(ob, s)
                row = compare_models(df, bench, judge, ea.model_id, eb.model_id, n_boot=n_boot, seed=seed)
                frame = compare._judged(inputs, (bench, judge), ea, eb)
                if row is None or frame is None:
                    continue
                row.update(objective_a=oa, objective_b=ob, seed=s, **_lc_columns([frame], n_boot=n_boot, seed=seed))
                paper = paper_numbers.table2_row(oa, ob, bench)
                row.update(dict(zip(("paper_win", "paper_tie", "paper_loss"), paper or (np.nan,) * 3)))
                per_pair.setdefault((oa, ob), []).append((row, frame))
        for done in per_pair.values():
            rows += [r for r, _ in done]
            if len(done) > 1:
                rows.append(_pooled_row([r for r, _ in done], [f for _, f in done], n_boot=n_boot, seed=seed))
    return pd.DataFrame(rows, columns=COLUMNS + ["lc_win_rate", "lc_ci_low", "lc_ci_high", "objective_a", "objective_b",
                                                 "seed", "paper_win", "paper_tie", "paper_loss"])


def _lambda_finals(inputs: Inputs, sr: str, eb: ModelEntry, seed: int) -> dict[float, ModelEntry]:
    """λ → the final Sr-X model of that λ with X's β and pairs seen, of one seed."""
    finals: dict[float, ModelEntry] = {}
    for e in inputs.models:
        if e.objective != sr or e.lam is None or seed_of(e) != seed:
            continue
        if eb.beta is not None and e.beta is not None and e.beta != eb.beta:
            continue
        if eb.pairs_seen is not None and e.pairs_seen is not None and e.pairs_seen != eb.pairs_seen:
            continue
        rank = lambda x: (x.pairs_seen or -1, is_final(x))  # noqa: E731
        if e.lam not in finals or rank(e) > rank(finals[e.lam]):
            finals[e.lam] = e
    return finals


def lambda_table(inputs: Inputs, *, n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Figure 2a data: each final Sr-X model (one per λ, same β and pairs seen as X) against X, per seed."""
    rows = []
    for s in inputs.seeds():
        for sr, base in objectives.sr_pairs():
            eb = inputs.main(base, s)
            if eb is None:
                continue
            finals = _lambda_finals(inputs, sr, eb, s)
            for (bench, judge), df in inputs.pair.items():
                for lam, e in sorted(finals.items()):
                    row = compare_models(df, bench, judge, e.model_id, eb.model_id, n_boot=n_boot, seed=seed)
                    if row is not None:
                        rows.append({"objective": sr, "lam": lam, "seed": s, **row})
    return pd.DataFrame(rows, columns=["objective", "lam", "seed"] + COLUMNS)


def training_winrate_table(inputs: Inputs, baseline: str | None = None, *, n_boot: int = 2000,
                           seed: int = 0) -> pd.DataFrame:
    """Win-rate curves, per seed: every objective's checkpoints against a baseline model (default: SFT,
    else DPO) and, per matching pairs seen, Sr-X against X (the paper's Figure 2b, ``vs = 'X'``)."""
    rows = []
    if baseline is None:
        base = inputs.start() or next((inputs.main(o) for o in inputs.objectives()), None)
        baseline = base.model_id if base else None
    for (bench, judge), df in inputs.pair.items():
        for s in inputs.seeds():
            for obj in inputs.objectives():
                for e in inputs.checkpoints(obj, s) if baseline is not None else []:
                    row = compare_models(df, bench, judge, e.model_id, baseline, n_boot=n_boot, seed=seed)
                    if row is not None:
                        rows.append({"objective": obj, "vs": "baseline", "pairs_seen": e.pairs_seen, "seed": s, **row})
            for sr, base_obj in objectives.sr_pairs():
                at = {e.pairs_seen: e for e in inputs.checkpoints(base_obj, s)}
                for e in inputs.checkpoints(sr, s):
                    if e.pairs_seen in at:
                        row = compare_models(df, bench, judge, e.model_id, at[e.pairs_seen].model_id, n_boot=n_boot,
                                             seed=seed)
                        if row is not None:
                            rows.append({"objective": sr, "vs": "X", "pairs_seen": e.pairs_seen, "seed": s, **row})
    return pd.DataFrame(rows, columns=["objective", "vs", "pairs_seen", "seed"] + COLUMNS)


def _bench_judges(table: pd.DataFrame) -> list[tuple[str, str]]:
    return sorted(set(zip(table["bench"], table["judge"])))


def _bench_title(bench: str, judge: str, which: str = "") -> str:
    return style.judged_title(style.BENCH_NAMES.get(bench, bench) + which, judge)


@style.styled
def outcome_bars(t2: pd.DataFrame) -> Figure:
    """Stacked win/tie/loss bars (percent) per comparison, one panel per benchmark; ◆ = paper's win %."""
    panels = _bench_judges(t2)
    fig, axes = style.new_figure((5.5 * len(panels), 3.6), 1, len(panels))
    for ax, (bench, judge) in zip(axes[0], panels):
        d = t2[(t2["bench"] == bench) & (t2["judge"] == judge)].reset_index(drop=True)
        several = t2["seed"].astype(str).nunique() > 1
        names = [f"{style.label(a)} vs {style.label(b)}" + (f" ({'pooled' if s == 'all' else f'seed {s}'})" if several else "")
                 for a, b, s in zip(d["objective_a"], d["objective_b"], d["seed"])]
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


def first_seed(t: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """The rows of the table's first seed (figures over λ or training draw one seed; the tables hold all),
    and a title suffix naming it when there are several."""
    seeds = sorted(t["seed"].unique())
    return t[t["seed"] == seeds[0]], (f", seed {seeds[0]} of {len(seeds)}" if len(seeds) > 1 else "")


def has_curve(t: pd.DataFrame, x: str, by: list[str]) -> bool:
    """Whether some line of the figure would have two points or more (a single point is no curve)."""
    return bool(len(t)) and bool((t.groupby(by)[x].nunique() > 1).any())


@style.styled
def lambda_figure(lt: pd.DataFrame) -> Figure:
    """Figure 2a: adjusted win rate (%) of Sr-X vs X against λ, with bootstrap CIs; λ = 0 is X itself."""
    lt, which = first_seed(lt)
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
        ax.set(xlabel="λ", ylabel="adjusted win rate vs X (%)", title=_bench_title(bench, judge, which), ylim=(0, 100))
        ax.legend()
    return fig


@style.styled
def training_winrate_figure(wt: pd.DataFrame, vs: str) -> Figure:
    """Adjusted win rate (%) with CI bands against pairs seen, one line per objective, one panel per bench."""
    d_all, which = first_seed(wt[wt["vs"] == vs])
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
        ax.set(xlabel="training pairs seen", ylabel="adjusted win rate (%)", title=_bench_title(bench, judge, which),
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
                "local judge's mean probability (%) that A is the better answer, with its CI; it can disagree with "
                "the verdicts, which count each turn's most probable verdict where `p_a` averages the probabilities "
                "(a few clear wins beside many even turns leaning slightly to B: more wins than losses, `p_a` "
                "under 50%). `n_identical`: "
                "judged turns where both models gave the same text, a tie whatever the judge. "
                "`paper_*`: the paper's Table 2 (GPT-4 judge).")
    t2 = table2(inputs, n_boot=n_boot, seed=seed)
    if len(t2):
        sec.tables["table2_winrates"] = t2
        sec.figures["table2_outcomes"] = outcome_bars(t2)
    else:
        sec.notes.append("Table 2 skipped: no judgments between the final models of two objectives "
                         "(run `srdpo-eval judge --mode pairwise` on e.g. sr-dpo vs dpo)")
    _curve_figures(sec, inputs, n_boot=n_boot, seed=seed)
    return sec


def _curve_figures(sec: Section, inputs: Inputs, *, n_boot: int, seed: int) -> None:
    """Figure 2a (over λ), Figure 2b and the win-rate curves (over pairs seen): their tables whenever there
    are judgments, their figures only where a line has two points or more (one point is no curve)."""
    lt = lambda_table(inputs, n_boot=n_boot, seed=seed)
    wt = training_winrate_table(inputs, n_boot=n_boot, seed=seed)
    parts = (("figure2a_lambda", lt, "lam", lambda_figure, "Sr-X runs at two or more λ judged against X "
                                                           "(train.lam_sweep)"),
             ("figure2b_training", wt[wt["vs"] == "X"], "pairs_seen", lambda t: training_winrate_figure(t, "X"),
              "Sr-X judged against X at two or more numbers of pairs seen (bench.checkpoints: all)"),
             ("winrate_curves", wt[wt["vs"] == "baseline"], "pairs_seen",
              lambda t: training_winrate_figure(t, "baseline"),
              "checkpoints judged against the baseline at two or more numbers of pairs seen (bench.checkpoints: all)"))
    for name, t, x, draw, needs in parts:
        t = t.reset_index(drop=True)
        if len(t):
            sec.tables[name] = t
        if has_curve(t, x, ["bench", "judge", "objective", "seed"]):
            sec.figures[name] = draw(t)
        else:
            sec.notes.append(f"{name} figure skipped: it needs {needs}" + (f"; its table has {len(t)} rows" if len(t) else ""))
