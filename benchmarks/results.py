"""Benchmark results from judgment files: MT-Bench scores and pairwise win / tie / lose with bootstrap CIs.

The numbers follow FastChat's show_result: single grading drops score -1 (no verdict) and averages
turn 1, turn 2 and all turns together; a pairwise comparison counts as a tie when either game says tie
or the two answer orders disagree, and comparisons with an "error" game are left out (and counted).
A local judge's pairwise records carry their own verdict over both orders (``winner``, from the
probabilities: benchmarks/judge/calibration.py) and P(model_1 better); those are used instead.
Every interval is a 95% percentile bootstrap over questions (both turns of a question together).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from contracts.errors import UserError
from contracts.jsonl import dedupe, read_jsonl_lines, require
from contracts.tables import PAIR_CALIBRATED, PAIR_FIELDS, SINGLE_FIELDS, WINNERS


def _judge_columns(df: pd.DataFrame) -> pd.DataFrame:
    judge = df["judge"] if "judge" in df else pd.Series([None] * len(df), index=df.index)
    df["judge_model"] = [j[0] if isinstance(j, (list, tuple)) else j for j in judge]
    df["judge_prompt"] = [j[1] if isinstance(j, (list, tuple)) and len(j) > 1 else None for j in judge]
    return df


def _judge_name(rec: dict):
    j = rec.get("judge")
    return j[0] if isinstance(j, (list, tuple)) and j else j


def load_single_judgments(path: str | Path) -> pd.DataFrame:
    """A FastChat single-grading file as a DataFrame (plus judge_model / judge_prompt columns).

    A (judge, question, model, turn) graded twice (two runs into one file, files concatenated by hand)
    counts once: the first record is kept and the duplicates are counted in a warning."""
    rows = []
    lines = read_jsonl_lines(path, missing_ok=True)
    for line, rec in lines:
        require(rec, SINGLE_FIELDS, path, line)
    key = lambda r: (_judge_name(r), r["question_id"], r["model"], r["turn"])  # noqa: E731
    for line, rec in dedupe(lines, key, path, what="single-grading judgments"):
        if not isinstance(rec["score"], (int, float)) or isinstance(rec["score"], bool):
            raise UserError(f"{path}:{line}: field 'score' must be a number, got {rec['score']!r}")
        if rec["turn"] not in (1, 2):
            raise UserError(f"{path}:{line}: field 'turn' must be 1 or 2, got {rec['turn']!r}")
        rows.append(rec)
    df = pd.DataFrame(rows, columns=list(dict.fromkeys([*SINGLE_FIELDS, *(k for r in rows for k in r)])))
    df["score"] = df["score"].astype(float)
    return _judge_columns(df)


def _valid_scores(df: pd.DataFrame, judge: str | None) -> pd.DataFrame:
    if judge is not None:
        df = df[df["judge_model"] == judge]
    return df[df["score"] != -1]


def mt_bench_scores(df: pd.DataFrame, *, judge: str | None = None, n_boot: int = 2000, seed: int = 0,
                    confidence: float = 0.95) -> pd.DataFrame:
    """Per model: mean score of turn 1, turn 2 and of all turns ("overall"), as FastChat's show_result,
    with a bootstrap CI of "overall" over questions (``ci_low``, ``ci_high``).

    Rows with score -1 (no verdict) are left out of the means and counted in ``n_errors``. Sorted by
    overall score, best first. ``judge`` keeps only that judge model's records.
    """
    sub = df if judge is None else df[df["judge_model"] == judge]
    ok = sub[sub["score"] != -1]
    out = pd.DataFrame(index=pd.Index(sorted(sub["model"].unique()), name="model"))
    out["turn_1"] = ok[ok["turn"] == 1].groupby("model")["score"].mean()
    out["turn_2"] = ok[ok["turn"] == 2].groupby("model")["score"].mean()
    out["overall"] = ok.groupby("model")["score"].mean()
    ci = {m: _question_ci(g, "score", n_boot=n_boot, seed=seed, confidence=confidence) for m, g in ok.groupby("model")}
    out["ci_low"] = pd.Series({m: c[0] for m, c in ci.items()}, dtype=float)
    out["ci_high"] = pd.Series({m: c[1] for m, c in ci.items()}, dtype=float)
    out["n"] = ok.groupby("model").size().reindex(out.index, fill_value=0)
    out["n_errors"] = (sub["score"] == -1).groupby(sub["model"]).sum().reindex(out.index, fill_value=0).astype(int)
    return out.sort_values("overall", ascending=False)


def _question_ci(rows: pd.DataFrame, column: str, *, n_boot: int, seed: int,
                 confidence: float) -> tuple[float, float]:
    """Bootstrap CI of the mean of ``column`` over rows, resampling questions (a question's turns stay
    together; the mean is the ratio of summed values to summed counts). NaN with fewer than 2 questions."""
    per_q = rows.groupby("question_id")[column].agg(["sum", "size"])
    if len(per_q) < 2:
        return np.nan, np.nan
    s, k = per_q["sum"].to_numpy(float), per_q["size"].to_numpy(float)
    if np.ptp(s / k) == 0:  # every question the same: nothing varies under resampling
        return float(s.sum() / k.sum()), float(s.sum() / k.sum())
    ci = stats.bootstrap((s, k), lambda s, k, axis: s.sum(axis) / k.sum(axis), paired=True, vectorized=True,
                         n_resamples=n_boot, confidence_level=confidence, method="percentile",
                         rng=np.random.default_rng(seed)).confidence_interval
    return float(ci.low), float(ci.high)


def mt_bench_category_scores(df: pd.DataFrame, questions=None, *, data_dir=None, bench: str = "mt_bench",
                             judge: str | None = None) -> pd.DataFrame:
    """Per model (rows) and question category (columns, in question-file order): mean score over turns.

    Categories come from ``questions`` (benchmarks.fastchat_data.Question list) or are loaded from
    ``data_dir`` (resolved as the data loader does).
    """
    if questions is None:
        from benchmarks.fastchat_data import load_questions, resolve_data_dir

        questions = load_questions(resolve_data_dir(data_dir, bench), bench)
    category = {q.question_id: q.category for q in questions}
    ok = _valid_scores(df, judge)
    unknown = sorted(set(ok["question_id"]) - set(category))
    if unknown:
        raise ValueError(f"judgments for question ids not in {bench}: {unknown[:5]}")
    ok = ok.assign(category=ok["question_id"].map(category))
    table = ok.pivot_table(index="model", columns="category", values="score", aggfunc="mean")
    order = [c for c in dict.fromkeys(category.values()) if c in table.columns]
    return table[order]


# ---------------------------------------------------------------------------------------------- pairwise

def load_pair_judgments(path: str | Path) -> pd.DataFrame:
    """A FastChat pairwise file as a DataFrame (plus judge_model / judge_prompt columns).

    A comparison judged twice (in either order of the two models) counts once: the first record is kept
    and the duplicates are counted in a warning."""
    rows = []
    lines = read_jsonl_lines(path, missing_ok=True)
    for line, rec in lines:
        require(rec, PAIR_FIELDS, path, line)
    key = lambda r: (_judge_name(r), r["question_id"], *sorted((r["model_1"], r["model_2"])), r["turn"])  # noqa: E731
    for line, rec in dedupe(lines, key, path, what="pairwise judgments"):
        for name in ("g1_winner", "g2_winner"):
            if rec[name] not in WINNERS:
                raise UserError(f"{path}:{line}: field {name!r} must be one of {WINNERS}, got {rec[name]!r}")
        if "winner" in rec:  # a local judge's record: its verdict over both orders and P(model_1 better)
            for name in PAIR_CALIBRATED:
                if name not in rec:
                    raise UserError(f"{path}:{line}: a record with 'winner' needs field {name!r} too")
            if rec["winner"] not in WINNERS[:3]:
                raise UserError(f"{path}:{line}: field 'winner' must be one of {WINNERS[:3]}, got {rec['winner']!r}")
        rows.append(rec)
    df = pd.DataFrame(rows, columns=list(dict.fromkeys([*PAIR_FIELDS, *(k for r in rows for k in r)])))
    return _judge_columns(df)


def pairwise_outcomes(df: pd.DataFrame, model_a: str, model_b: str, *, judge: str | None = None) -> pd.DataFrame:
    """One row per (question_id, turn) of A vs B: ``outcome`` win / tie / loss from A's point of view,
    ``p_a``, P(A better), where the judge gives one (a local judge; NaN otherwise), and ``identical``:
    the two answers are the same text (both orders showed the judge the same prompt), a tie by any rule.

    Records may name A as model_1 or model_2. FastChat's records: disagreement between the two answer
    orders is a tie. A local judge's records: their ``winner``. Comparisons with an "error" game are
    dropped and counted in ``.attrs["n_errors"]``; repeated (question, turn) records keep the last and
    are counted in ``.attrs["n_duplicates"]``.
    """
    if judge is not None:
        df = df[df["judge_model"] == judge]
    fwd = (df["model_1"] == model_a) & (df["model_2"] == model_b)
    rev = (df["model_1"] == model_b) & (df["model_2"] == model_a)
    sel = df[fwd | rev]
    calibrated = sel["winner"].notna() if "winner" in sel else pd.Series(False, index=sel.index)
    if calibrated.any() and not calibrated.all():
        raise UserError(f"judgments of {model_a} vs {model_b}: some records carry a local judge's verdict "
                        "('winner') and some do not; judge them again with one judge")
    is_error = ((sel["g1_winner"] == "error") | (sel["g2_winner"] == "error")) & ~calibrated
    n_errors = int(is_error.sum())
    sel = sel[~is_error]
    rows = []
    for rec in sel.to_dict("records"):
        a_slot = "model_1" if rec["model_1"] == model_a else "model_2"
        p_a = np.nan
        if calibrated.any():
            won = rec["winner"]
            p_a = rec["p_model_1"] if a_slot == "model_1" else 1.0 - rec["p_model_1"]
        else:
            won = "tie" if rec["g1_winner"] == "tie" or rec["g1_winner"] != rec["g2_winner"] else rec["g1_winner"]
        outcome = "tie" if won == "tie" else ("win" if won == a_slot else "loss")
        prompts = (rec.get("g1_user_prompt"), rec.get("g2_user_prompt"))
        identical = prompts[0] == prompts[1] if all(isinstance(p, str) for p in prompts) else np.nan
        rows.append({"question_id": rec["question_id"], "turn": rec["turn"], "outcome": outcome, "p_a": p_a,
                     "identical": identical})
    out = pd.DataFrame(rows, columns=["question_id", "turn", "outcome", "p_a", "identical"])
    n_all = len(out)
    out = out.drop_duplicates(["question_id", "turn"], keep="last").sort_values(["question_id", "turn"])
    out = out.reset_index(drop=True)
    out.attrs.update(model_a=model_a, model_b=model_b, n_errors=n_errors, n_duplicates=n_all - len(out))
    return out


def win_rates(outcomes: pd.DataFrame, *, n_boot: int = 2000, seed: int = 0, confidence: float = 0.95) -> dict:
    """Win / tie / loss shares, win rate, adjusted win rate (win + ½ tie) and bootstrap CIs; with a judge
    that gives P(A better) (``p_a``), also its mean ``p_a`` and CI.

    The bootstrap (scipy.stats.bootstrap, percentile method) resamples *questions*: both turns of a
    question stay together, and a rate is the ratio of summed counts over the resampled questions.
    """
    n = len(outcomes)
    counts = outcomes["outcome"].value_counts()
    win, tie, loss = (int(counts.get(k, 0)) for k in ("win", "tie", "loss"))
    if win + tie + loss != n:
        raise ValueError(f"outcomes must be win/tie/loss, got {sorted(set(outcomes['outcome']) - {'win', 'tie', 'loss'})}")
    same = outcomes["identical"] if "identical" in outcomes else pd.Series(np.nan, index=outcomes.index)
    res = {"n": n, "n_questions": int(outcomes["question_id"].nunique()),
           "n_identical": int(same.sum()) if same.notna().all() else np.nan, "win": np.nan, "tie": np.nan,
           "loss": np.nan, "win_rate": np.nan, "adjusted_win_rate": np.nan, "win_ci_low": np.nan,
           "win_ci_high": np.nan, "adjusted_ci_low": np.nan, "adjusted_ci_high": np.nan,
           "p_a": np.nan, "p_a_ci_low": np.nan, "p_a_ci_high": np.nan}
    if n == 0:
        return res
    if "p_a" in outcomes and outcomes["p_a"].notna().all():
        res["p_a"] = float(outcomes["p_a"].mean())
        res["p_a_ci_low"], res["p_a_ci_high"] = _question_ci(outcomes, "p_a", n_boot=n_boot, seed=seed,
                                                             confidence=confidence)
    res.update(win=win / n, tie=tie / n, loss=loss / n, win_rate=win / n, adjusted_win_rate=(win + 0.5 * tie) / n)
    per_q = outcomes.groupby("question_id")["outcome"].agg(
        w=lambda s: (s == "win").sum(), t=lambda s: (s == "tie").sum(), k="size")
    w, t, k = (per_q[c].to_numpy(float) for c in ("w", "t", "k"))
    for name, stat in (("win", lambda w, t, k, axis: w.sum(axis) / k.sum(axis)),
                       ("adjusted", lambda w, t, k, axis: (w + 0.5 * t).sum(axis) / k.sum(axis))):
        if len(per_q) < 2:  # nothing to resample
            lo = hi = res["win_rate" if name == "win" else "adjusted_win_rate"]
        else:
            ci = stats.bootstrap((w, t, k), stat, paired=True, vectorized=True, n_resamples=n_boot,
                                 confidence_level=confidence, method="percentile",
                                 rng=np.random.default_rng(seed)).confidence_interval
            lo, hi = float(ci.low), float(ci.high)
        res[f"{name}_ci_low"], res[f"{name}_ci_high"] = lo, hi
    return res


def pairwise_table(df: pd.DataFrame, pairs: list[tuple[str, str]], *, judge: str | None = None,
                   n_boot: int = 2000, seed: int = 0, confidence: float = 0.95) -> pd.DataFrame:
    """The paper's Table 2: one row per "A vs B" with win / tie / loss, the adjusted win rate (win + tie/2),
    P(A better) where the judge gives it and their 95% CIs, all in percent; ``n`` judged turns,
    ``n_errors`` comparisons left out because a game had no verdict."""
    rows = []
    pct = ("win", "tie", "loss", "adjusted_win_rate", "adjusted_ci_low", "adjusted_ci_high", "win_ci_low",
           "win_ci_high", "p_a", "p_a_ci_low", "p_a_ci_high")
    for a, b in pairs:
        out = pairwise_outcomes(df, a, b, judge=judge)
        r = win_rates(out, n_boot=n_boot, seed=seed, confidence=confidence)
        rows.append({"comparison": f"{a} vs {b}", "model_a": a, "model_b": b, **{k: 100 * r[k] for k in pct[:3]},
                     "n": r["n"], "n_identical": r["n_identical"], **{k: 100 * r[k] for k in pct[3:]},
                     "n_errors": out.attrs["n_errors"]})
    return pd.DataFrame(rows)


def baseline_table(df: pd.DataFrame, models: list[str], baseline: str, **kw) -> pd.DataFrame:
    """``pairwise_table`` of every model against one fixed baseline."""
    return pairwise_table(df, [(m, baseline) for m in models if m != baseline], **kw)


def format_table(table: pd.DataFrame) -> str:
    """A readable fixed-width rendering (2 decimals) for the terminal."""
    return table.to_string(float_format=lambda x: f"{x:.2f}")
