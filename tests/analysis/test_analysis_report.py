"""Tables, figures and report.md from a small synthetic run directory (no model, no API)."""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from contracts.run_dir import ModelEntry, RunDir, write_models

OBJ = ("dpo", "sr-dpo", "ipo", "sr-ipo")
STEPS = 8
BATCH = 4
QIDS = [81, 91, 101, 111, 121, 131, 141, 151, 82, 92]  # real MT-Bench ids, 8 categories


# ------------------------------------------------------------------------------ synthetic inputs

def _step_time(obj: str, step: int) -> float:
    """X: 1 s + 0.1 s·(step mod 3); Sr-X: that times 1.2 + 0.05·(step mod 4), so the ratio varies by step."""
    base = 1.0 + 0.1 * (step % 3)
    return base * (1.2 + 0.05 * (step % 4)) if obj.startswith("sr-") else base


# per pair: tokens forwarded with gradient (x ⊕ y⁺, x ⊕ y⁻), of them targets; Sr-X also p ⊕ x without gradient
TOKENS = {"tokens/grad": 100, "targets/grad": 40, "tokens/no_grad": 140, "targets/no_grad": 40}
PARAMS = {"params_body": 1000, "params_head": 100}


def _log_row(obj: str, step: int) -> dict:
    k = OBJ.index(obj) + 1
    row = {"step": step, "pairs_seen": step * BATCH, "loss": 0.7 - 0.01 * k * step, "lr": 1e-6,
           "grad_norm": 1.0, "rewards/chosen": 0.01 * step, "rewards/rejected": -0.01 * step,
           "rewards/margins": 0.02 * k * step, "rewards/accuracies": min(1.0, 0.5 + 0.05 * step),
           "logps/chosen": -50.0, "logps/rejected": -60.0, "margin": 0.2 * k * step,
           "accuracy": min(1.0, 0.4 + 0.06 * step), "step_time_s": _step_time(obj, step),
           "elapsed_s": sum(_step_time(obj, s) for s in range(1, step + 1)),
           **{k: BATCH * n * (obj.startswith("sr-") or k.endswith("/grad")) for k, n in TOKENS.items()}}
    if obj.startswith("sr-"):
        row.update({"delta/mean": 0.01 * step, "delta/std": 0.1, "margin_p": 0.3 * step,
                    "accuracy_p": min(1.0, 0.45 + 0.06 * step)})
    return row


def _pair_records(a: str, b: str, outcomes: list[str], judge=("gpt-4", "pair-v2")) -> list[dict]:
    """FastChat pairwise records: g1 with A as model_1, g2 with the order swapped ('model_1' = A's slot)."""
    recs = []
    for i, out in enumerate(outcomes):
        qid, turn = QIDS[i // 2], 1 + i % 2
        if out == "win":
            g1 = g2 = "model_1"
        elif out == "loss":
            g1 = g2 = "model_2"
        elif out == "tie":
            g1 = g2 = "tie"
        else:  # "flip": the verdict follows the position, which FastChat counts as a tie
            g1, g2 = "model_1", "model_2"
        recs.append({"question_id": qid, "model_1": a, "model_2": b, "g1_winner": g1, "g2_winner": g2,
                     "judge": list(judge), "g1_user_prompt": "u", "g1_judgment": "[[A]]",
                     "g2_user_prompt": "u", "g2_judgment": "[[B]]", "turn": turn, "tstamp": 0.0})
    return recs


def _outcomes(n_win: int, n_tie: int, n_flip: int, n_loss: int) -> list[str]:
    out = ["win"] * n_win + ["tie"] * n_tie + ["flip"] * n_flip + ["loss"] * n_loss
    assert len(out) == 2 * len(QIDS)
    return out


# expected win/tie/loss counts per comparison (20 judged turns each); flips count as ties
PAIRS = {
    ("sr-dpo", "dpo"): (9, 4, 3, 4),
    ("sr-ipo", "ipo"): (8, 2, 2, 8),
    ("sr-dpo", "ipo"): (10, 5, 0, 5),
    ("sr-ipo", "dpo"): (6, 6, 0, 8),
    ("sr-dpo-lam0.5", "dpo"): (12, 2, 0, 6),
    ("sr-dpo-p16", "dpo-p16"): (7, 6, 0, 7),
    ("sr-ipo-p16", "ipo-p16"): (5, 6, 0, 9),
}
SCORES = {"sft": 40.0, "dpo-p16": 42.0, "dpo": 44.0, "sr-dpo-p16": 43.0, "sr-dpo": 46.0, "ipo-p16": 41.0,
          "ipo": 42.5, "sr-ipo-p16": 41.5, "sr-ipo": 43.5}
TASKS = ("arc_challenge", "hellaswag", "truthfulqa_mc2", "mmlu", "winogrande", "gsm8k")


def _write_jsonl(path: Path, records: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def _delta_table(model_id: str, slope: float, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n = 40
    rating = rng.integers(1, 6, size=(n, 2)).astype(float)
    diff = rating[:, 0] - rating[:, 1]
    margin = slope * diff + rng.normal(size=n)
    return pd.DataFrame({"id": [f"p{i}" for i in range(n)], "model_id": model_id, "delta": 0.1 * margin + rng.normal(size=n) * 0.1,
                         "margin": margin, "reward_margin": 0.1 * margin, "margin_p": margin,
                         "chosen_tokens": rng.integers(5, 50, n), "rejected_tokens": rng.integers(5, 50, n),
                         "chosen_rating": rating[:, 0], "rejected_rating": rating[:, 1], "rating_diff": diff})


LONG_JUDGE = "local-smollm2-135m-instruct-b179c9523d0e"


def make_run_dir(root: Path) -> RunDir:
    run = RunDir(root)
    entries = [ModelEntry("sft", "/ckpt/sft", "sft", pairs_seen=0)]
    for obj in OBJ:
        lam = 0.1 if obj.startswith("sr-") else None
        entries.append(ModelEntry(obj, f"/ckpt/{obj}", obj, beta=0.1, lam=lam, step=STEPS, pairs_seen=STEPS * BATCH, run=obj))
        entries.append(ModelEntry(f"{obj}-p16", f"/ckpt/{obj}-p16", obj, beta=0.1, lam=lam, step=4, pairs_seen=16, run=obj))
    entries.append(ModelEntry("sr-dpo-lam0.5", "/ckpt/x", "sr-dpo", beta=0.1, lam=0.5, step=STEPS,
                              pairs_seen=STEPS * BATCH, run="sr-dpo-lam0.5"))
    write_models(run.models, entries)
    for obj in OBJ:
        d = run.train(obj)
        _write_jsonl(d / "log.jsonl", [_log_row(obj, s) for s in range(1, STEPS + 1)])
        (d / "run_info.json").write_text(json.dumps({
            "objective": obj, "beta": 0.1, "lam": 0.1 if obj.startswith("sr-") else 0.0, "steps": STEPS,
            "wall_time_s": sum(_step_time(obj, s) for s in range(1, STEPS + 1)), "device": "cpu", "dtype": "fp32",
            "finished": True, **PARAMS}))
    for bench in ("mt_bench", "vicuna_bench"):
        recs = []
        for (a, b), counts in PAIRS.items():
            recs += _pair_records(a, b, _outcomes(*counts))
        for m in SCORES:  # every checkpoint against SFT, SFT as model_1: SFT wins 4, ties 6, loses 10
            if m != "sft":
                recs += _pair_records("sft", m, _outcomes(4, 6, 0, 10))
        # Vicuna-Bench's judge has a long id (a local judge's): no figure title may be cut by it
        _write_jsonl(run.judgments(bench, "gpt-4" if bench == "mt_bench" else LONG_JUDGE, "pair"), recs)
    single = []
    for j, m in enumerate(("sft", *OBJ)):
        for q in QIDS:
            for turn in (1, 2):
                single.append({"question_id": q, "model": m, "judge": ["gpt-4", "single-v1"], "user_prompt": "u",
                               "judgment": "Rating: [[5]]", "score": float((q * (j + 1) + turn) % 10 + 1),
                               "turn": turn, "tstamp": 0.0})
    _write_jsonl(run.judgments("mt_bench", "gpt-4", "single"), single)
    run.leaderboard.mkdir(parents=True)
    rows = [{"model_id": m, **{t: v + i for i, t in enumerate(TASKS)}} for m, v in SCORES.items()]
    lb = pd.DataFrame(rows)
    lb["average"] = lb[list(TASKS)].mean(axis=1)
    lb.to_csv(run.leaderboard / "scores.csv", index=False)
    run.delta.mkdir()
    for i, m in enumerate(("dpo", "sr-dpo")):
        _delta_table(m, 0.5 + i, seed=i).to_csv(run.delta / f"{m}.csv", index=False)
    return run


@pytest.fixture(scope="module")
def built(tmp_path_factory, fastchat_data_dir):
    from analysis.report import build_report

    run = make_run_dir(tmp_path_factory.mktemp("run"))
    rep = build_report(run.root, n_boot=200, data_dir=fastchat_data_dir)
    return run, rep


def _png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", head[16:24])


def _figure(rep, name):
    for sec in rep.sections:
        if name in sec.figures:
            return sec.figures[name]
    raise KeyError(name)


def _lines(fig, label_re=None):
    out = {}
    for ax in fig.axes:
        for ln in ax.get_lines():
            if label_re is None or re.search(label_re, ln.get_label()):
                out.setdefault(ln.get_label(), []).append((ax, np.asarray(ln.get_xdata(), float),
                                                           np.asarray(ln.get_ydata(), float)))
    return out


# ------------------------------------------------------------------------------ tests

EXPECTED_FIGURES = {"figure1_margin_accuracy", "figure1_prompted_accuracy", "training_curves", "table2_outcomes",
                    "figure2a_lambda", "figure2b_training", "winrate_curves", "mt_bench_categories_gpt-4",
                    "figure3_leaderboard", "table4_scatter", "comparisons_forest"}


def test_every_figure_is_a_valid_png_and_pdf_of_its_size(built):
    from analysis.style import DPI

    run, rep = built
    assert set(rep.figures) == EXPECTED_FIGURES
    for name, (png, pdf) in rep.figures.items():
        fig = _figure(rep, name)
        w, h = fig.get_size_inches()
        assert _png_size(png) == (round(w * DPI), round(h * DPI)), name
        assert pdf.read_bytes()[:5] == b"%PDF-" and pdf.read_bytes().rstrip().endswith(b"%%EOF"), name


def test_report_lists_exactly_the_figures_made(built):
    run, rep = built
    text = run.report.read_text()
    linked = set(re.findall(r"!\[[^\]]*\]\(figures/([^)]+)\.png\)", text))
    on_disk = {p.stem for p in run.figures.glob("*.png")}
    assert linked == on_disk == set(rep.figures)
    assert {p.stem for p in run.tables.glob("*.csv")} == set(rep.tables)
    for name in ("table2_winrates", "table3_leaderboard", "table4_summary", "table5_training_time"):
        assert f"Table `{name}`" in text


def test_first_paragraph_says_what_the_run_is(built, tmp_path):
    from analysis.about import about
    from analysis.inputs import Inputs, TrainRun

    run, _ = built
    paragraphs = run.report.read_text().split("\n\n")
    assert paragraphs[1].startswith("## The answer")  # the answer first, then what the run is
    first = next(p for p in paragraphs if p.startswith("**What this run is"))
    assert first.startswith("**What this run is: a pipeline check at toy scale")
    assert f"{STEPS * BATCH} preference pairs each ({STEPS} optimizer steps)" in first
    assert re.search(rf"\b{len(QIDS)} MT-Bench questions( and \d+ [\w-]+ questions)? judged by gpt-4", first)
    assert "Table 4" in first
    # GPT-4 on all 80 questions after tens of thousands of pairs: no toy disclaimer ...
    log = pd.DataFrame({"step": [1000], "pairs_seen": [64000]})
    pair = pd.DataFrame({"question_id": range(81, 161), "model_1": "sr-dpo", "model_2": "dpo"})
    inp = Inputs(run=RunDir(tmp_path), train={"dpo": TrainRun("dpo", {"objective": "dpo"}, log)},
                 pair={("mt_bench", "gpt-4"): pair})
    assert "toy" not in about(inp) and "64,000 preference pairs" in about(inp)
    # ... but a local judge's records make any run a toy one
    inp.pair = {("mt_bench", "local-x"): pair.assign(winner="tie", p_model_1=0.5)}
    assert "toy scale" in about(inp) and "local model" in about(inp)


def test_figure1_lines_are_the_logged_values(built):
    _, rep = built
    lines = _lines(_figure(rep, "figure1_margin_accuracy"))
    for obj, label in (("dpo", "DPO"), ("sr-dpo", "Sr-DPO"), ("ipo", "IPO"), ("sr-ipo", "Sr-IPO")):
        (ax_m, x_m, y_m), (ax_a, x_a, y_a) = lines[label]
        logs = [_log_row(obj, s) for s in range(1, STEPS + 1)]
        np.testing.assert_allclose(x_m, [r["pairs_seen"] for r in logs])
        np.testing.assert_allclose(y_m, [r["margin"] for r in logs])
        np.testing.assert_allclose(y_a, [100 * r["accuracy"] for r in logs])
        assert "nats" in ax_m.get_ylabel() and "%" in ax_a.get_ylabel()
    prompted = _lines(_figure(rep, "figure1_prompted_accuracy"), r"p⊕x")
    (_, _, y), = prompted["Sr-DPO: p⊕x"]
    np.testing.assert_allclose(y, [100 * _log_row("sr-dpo", s)["accuracy_p"] for s in range(1, STEPS + 1)])


def test_one_colour_per_objective_across_figures(built):
    from matplotlib.colors import to_hex

    from contracts.objectives import OBJECTIVES

    COLORS = {name: o.color for name, o in OBJECTIVES.items()}

    _, rep = built
    seen = {}
    for name in ("figure1_margin_accuracy", "training_curves", "figure2b_training", "figure3_leaderboard"):
        for label, items in _lines(_figure(rep, name)).items():
            for ax, *_ in items:
                for ln in ax.get_lines():
                    if ln.get_label() == label:
                        seen.setdefault(label.split(" ")[0], set()).add(to_hex(ln.get_color()))
    assert seen["DPO"] == {COLORS["dpo"]} and seen["Sr-DPO"] == {COLORS["sr-dpo"]}
    assert seen["IPO"] == {COLORS["ipo"]} and seen["Sr-IPO"] == {COLORS["sr-ipo"]}


def test_table2_counts_match_the_judgments(built):
    run, rep = built
    t2 = pd.read_csv(run.tables / "table2_winrates.csv")
    assert "win_rate" not in t2  # it was `win` again
    assert len(t2) == 2 * 4  # two benches × four comparisons
    for r in t2.itertuples():
        w, t, f, l = PAIRS[(r.model_a, r.model_b)]
        n = w + t + f + l
        assert r.n == n
        assert r.win == pytest.approx(100 * w / n) and r.tie == pytest.approx(100 * (t + f) / n)
        assert r.loss == pytest.approx(100 * l / n)
        assert r.adjusted_ci_low <= r.adjusted_win_rate <= r.adjusted_ci_high
    row = t2[(t2.model_a == "sr-dpo") & (t2.model_b == "dpo") & (t2.bench == "vicuna_bench")].iloc[0]
    assert (row.paper_win, row.paper_tie, row.paper_loss) == (63.75, 13.75, 22.50)
    bars = _figure(rep, "table2_outcomes").axes[0].patches
    assert sorted(round(b.get_width(), 6) for b in bars) == sorted(
        round(v, 6) for v in t2[t2.bench == t2.bench.iloc[0]][["win", "tie", "loss"]].to_numpy().ravel())


def test_lambda_and_training_winrates(built):
    run, rep = built
    lt = pd.read_csv(run.tables / "figure2a_lambda.csv")
    assert set(lt["objective"]) == {"sr-dpo", "sr-ipo"}
    assert list(lt[(lt.bench == "mt_bench") & (lt.objective == "sr-ipo")]["lam"]) == [0.1]
    mt = lt[(lt.bench == "mt_bench") & (lt.objective == "sr-dpo")].sort_values("lam")
    assert list(mt["lam"]) == [0.1, 0.5]
    for r in mt.itertuples():
        w, t, f, l = PAIRS[(r.model_a, "dpo")]
        assert r.adjusted_win_rate == pytest.approx(100 * (w + 0.5 * (t + f)) / 20)
    ax = _figure(rep, "figure2a_lambda").axes[0]
    assert "MT-Bench" in ax.get_title()
    bars = next(c for c in ax.containers if c.get_label().startswith("Sr-DPO"))  # errorbar container
    np.testing.assert_allclose(np.asarray(bars.lines[0].get_xdata(), float), mt["lam"])
    np.testing.assert_allclose(np.asarray(bars.lines[0].get_ydata(), float), mt["adjusted_win_rate"])
    f2b = pd.read_csv(run.tables / "figure2b_training.csv")
    got = f2b[(f2b.bench == "mt_bench") & (f2b.objective == "sr-ipo")].sort_values("pairs_seen")
    assert list(got["pairs_seen"]) == [16, 32]
    assert list(got["model_b"]) == ["ipo-p16", "ipo"]
    curves = pd.read_csv(run.tables / "winrate_curves.csv")
    assert set(curves["model_b"]) == {"sft"} and len(curves) == 2 * 4 * 2
    # every checkpoint lost 10, tied 6, won 4 as model_1 = SFT → from the checkpoint's side 10/6/4
    assert np.allclose(curves["adjusted_win_rate"], 100 * (10 + 3) / 20)


def test_leaderboard_table_and_curves(built):
    run, rep = built
    t3 = pd.read_csv(run.tables / "table3_leaderboard.csv").set_index("objective")
    assert list(t3.index) == ["sft", "dpo", "ipo", "sr-dpo", "sr-ipo"]
    assert t3.loc["sr-dpo", "arc_challenge"] == SCORES["sr-dpo"]
    assert t3.loc["sr-dpo", "average"] == pytest.approx(SCORES["sr-dpo"] + 2.5)
    assert t3.loc["sft", "paper_average"] == 58.14
    fig = _figure(rep, "figure3_leaderboard")
    ax = next(a for a in fig.axes if a.get_title().startswith("GSM8K"))
    line = next(ln for ln in ax.get_lines() if ln.get_label() == "Sr-DPO")
    np.testing.assert_allclose(line.get_xdata(), [16, 32])
    np.testing.assert_allclose(line.get_ydata(), [SCORES["sr-dpo-p16"] + 5, SCORES["sr-dpo"] + 5])
    sft = next(ln for ln in ax.get_lines() if ln.get_label() == "SFT")
    np.testing.assert_allclose(sft.get_ydata(), [SCORES["sft"] + 5] * 2)


def test_table4_matches_scipy_and_the_scatter(built):
    run, rep = built
    t4 = pd.read_csv(run.tables / "table4_correlation.csv")
    for i, m in enumerate(("dpo", "sr-dpo")):
        d = _delta_table(m, 0.5 + i, seed=i)
        got = t4[(t4.model_id == m) & (t4.variable == "margin")].set_index("method")
        assert got.loc["pearson", "estimate"] == pytest.approx(stats.pearsonr(d.margin, d.rating_diff).statistic)
        assert got.loc["kendall", "estimate"] == pytest.approx(stats.kendalltau(d.margin, d.rating_diff).statistic)
        length = d.chosen_tokens - d.rejected_tokens
        got_len = t4[(t4.model_id == m) & (t4.variable == "length_diff")].set_index("method")
        assert got_len.loc["spearman", "estimate"] == pytest.approx(stats.spearmanr(length, d.rating_diff).statistic)
        assert got.loc["pearson", "paper"] == {"dpo": 0.21, "sr-dpo": 0.26}[m]
    fig = _figure(rep, "table4_scatter")
    pts = fig.axes[0].collections[0].get_offsets()
    d = _delta_table("dpo", 0.5, seed=0)
    np.testing.assert_allclose(np.asarray(pts), d[["margin", "rating_diff"]].to_numpy())


def test_table5_training_time(built):
    run, _ = built
    t5 = pd.read_csv(run.tables / "table5_training_time.csv").set_index("run")
    body, head = PARAMS["params_body"], PARAMS["params_head"]
    x = 6 * (body * TOKENS["tokens/grad"] + head * TOKENS["targets/grad"])  # FLOPs per pair
    sr = x + 2 * (body * TOKENS["tokens/no_grad"] + head * TOKENS["targets/no_grad"])
    assert t5.loc["dpo", "gflops_per_pair"] == pytest.approx(x / 1e9)
    assert t5.loc["sr-ipo", "flops_ratio"] == pytest.approx(sr / x) and t5.loc["dpo", "flops_ratio"] != t5.loc["dpo", "flops_ratio"]
    assert t5.loc["sr-dpo", "tokens_no_grad_per_pair"] == TOKENS["tokens/no_grad"]
    ratios = [_step_time("sr-dpo", s) / _step_time("dpo", s) for s in range(1, STEPS + 1)]
    assert t5.loc["sr-dpo", "time_ratio"] == pytest.approx(np.median(ratios))
    assert (t5.loc["sr-dpo", "time_ratio_q25"], t5.loc["sr-dpo", "time_ratio_q75"]) == pytest.approx(
        tuple(np.percentile(ratios, [25, 75])))
    assert t5.loc["sr-dpo", "paper_ratio"] == pytest.approx(20.8 / 16.8)


def test_missing_inputs_give_notes_not_a_crash(tmp_path, capsys):
    import argparse

    from analysis.cli import register

    from contracts.errors import UserError

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["figures", str(tmp_path)])
    with pytest.raises(UserError, match="no results to report"):  # an empty directory: nothing is written
        args.func(args)
    assert not list(tmp_path.iterdir())
    _write_jsonl(tmp_path / "train" / "dpo" / "log.jsonl", [_log_row("dpo", s) for s in range(1, 3)])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    text = (tmp_path / "report.md").read_text()
    for producer in ("srdpo-eval judge --mode pairwise", "srdpo-eval leaderboard", "srdpo-eval delta"):
        assert producer in text and producer in out


def test_partial_run_dir_skips_only_what_is_missing(tmp_path):
    from analysis.report import build_report

    run = make_run_dir(tmp_path)
    import shutil

    shutil.rmtree(run.root / "mt_bench")
    shutil.rmtree(run.root / "vicuna_bench")
    (run.leaderboard / "scores.csv").unlink()
    shutil.rmtree(run.root / "train")
    rep = build_report(run.root, n_boot=50)
    assert set(rep.figures) == {"table4_scatter", "comparisons_forest"}  # the Δπ tables still compare Sr-DPO, DPO
    for stage in ("leaderboard", "judge --mode pairwise", "judge --mode single", "train"):
        assert any(f"srdpo-eval {stage}" in n for n in rep.notes), stage
    assert "table4_summary" in rep.tables and "table3_leaderboard" not in rep.tables


def test_bad_log_line_names_file_and_line(tmp_path):
    from analysis.inputs import load_inputs

    d = tmp_path / "train" / "dpo"
    d.mkdir(parents=True)
    (d / "log.jsonl").write_text(json.dumps(_log_row("dpo", 1)) + "\n{not json\n" + json.dumps(_log_row("dpo", 2)) + "\n")
    with pytest.raises(ValueError, match=r"log\.jsonl:2"):
        load_inputs(tmp_path)
    # an unterminated last line (a writer cut off) is dropped, complete lines are kept
    (d / "log.jsonl").write_text(json.dumps(_log_row("dpo", 1)) + "\n" + '{"step": 2, "pairs')
    assert len(load_inputs(tmp_path).train["dpo"].log) == 1


def test_mt_bench_category_scores_match_the_judgments(built, fastchat_data_dir):
    from benchmarks.fastchat_data import load_questions

    run, rep = built
    cats = pd.read_csv(run.tables / "mt_bench_categories_gpt-4.csv").set_index("objective")
    category = {q.question_id: q.category for q in load_questions(fastchat_data_dir, "mt_bench")}
    for j, m in enumerate(("sft", *OBJ)):
        for cat in cats.columns:
            want = np.mean([(q * (j + 1) + turn) % 10 + 1 for q in QIDS if category[q] == cat for turn in (1, 2)])
            assert cats.loc[m, cat] == pytest.approx(want), (m, cat)
    fig = _figure(rep, "mt_bench_categories_gpt-4")
    bars = [b for b in fig.axes[0].patches]
    heights = sorted(round(b.get_height(), 9) for b in bars)
    assert heights == sorted(round(v, 9) for v in cats.to_numpy().ravel())
    scores = pd.read_csv(run.tables / "mt_bench_scores_gpt-4.csv").set_index("model_id")
    for j, m in enumerate(("sft", *OBJ)):
        t1 = np.mean([(q * (j + 1) + 1) % 10 + 1 for q in QIDS])
        assert scores.loc[m, "turn_1"] == pytest.approx(t1)


def test_real_trainer_logs_and_delta_tables(tiny_model_dir, tmp_path):
    """The trainer's own log.jsonl / run_info.json and a `delta` table feed the figures as written."""
    from benchmarks.delta import DeltaConfig, delta_for_records
    from analysis.report import build_report
    from trainer.data import load_preference_data
    from trainer.cli import register as register_train

    import argparse

    data = tmp_path / "pairs.jsonl"
    words = "the quick brown fox jumps over lazy dog paris sea plants light yes no good bad".split()
    rng = np.random.default_rng(0)
    say = lambda n: " ".join(rng.choice(words, n))
    data.write_text("".join(json.dumps({"id": f"q{i}", "prompt": say(5), "chosen": " " + say(4),
                                        "rejected": " " + say(6), "chosen_rating": int(rng.integers(1, 6)),
                                        "rejected_rating": int(rng.integers(1, 6))}) + "\n" for i in range(16)))
    run = RunDir(tmp_path / "run")
    parser = argparse.ArgumentParser()
    register_train(parser.add_subparsers())
    for obj in ("dpo", "sr-dpo"):
        args = parser.parse_args(["train", "--objective", obj, "--model", str(tiny_model_dir), "--data", str(data),
                                  "--output", str(run.train(obj)), "--batch-size", "4", "--warmup-steps", "0",
                                  "--learning-rate", "1e-3", "--device", "cpu", "--no-progress"])
        assert args.func(args) == 0
    delta_for_records(run.train("sr-dpo") / "final", tiny_model_dir, load_preference_data(str(data)),
                      run.delta / "sr-dpo.csv", model_id="sr-dpo",
                      cfg=DeltaConfig(batch_size=4, dtype="fp32", device="cpu", progress=False))
    rep = build_report(run.root, n_boot=100)
    assert {"figure1_margin_accuracy", "figure1_prompted_accuracy", "training_curves", "table4_scatter"} <= set(rep.figures)
    log = pd.read_json(run.train("sr-dpo") / "log.jsonl", lines=True)
    (_, x, y), _ = _lines(_figure(rep, "figure1_margin_accuracy"))["Sr-DPO"]
    np.testing.assert_allclose(x, log["pairs_seen"])
    np.testing.assert_allclose(y, log["margin"])
    t4 = pd.read_csv(run.tables / "table4_correlation.csv")
    d = pd.read_csv(run.delta / "sr-dpo.csv")
    got = t4[(t4.variable == "delta") & (t4.method == "pearson")]["estimate"].item()
    assert got == pytest.approx(stats.pearsonr(d["delta"], d["chosen_rating"] - d["rejected_rating"]).statistic)


def test_model_roles_from_models_json_and_from_names(tmp_path):
    from analysis.inputs import Inputs, guess_entry

    e = [ModelEntry("sr-dpo-p64", "", "sr-dpo", lam=0.5, pairs_seen=64, run="sr-dpo"),
         ModelEntry("sr-dpo", "", "sr-dpo", lam=0.5, pairs_seen=64, run="sr-dpo"),
         ModelEntry("sr-dpo-p32", "", "sr-dpo", lam=0.5, pairs_seen=32, run="sr-dpo"),
         ModelEntry("sr-dpo-lam1-p32", "", "sr-dpo", lam=1.0, pairs_seen=32, run="sr-dpo-lam1"),
         ModelEntry("sr-dpo-lam1", "", "sr-dpo", lam=1.0, pairs_seen=64, run="sr-dpo-lam1")]
    inp = Inputs(run=RunDir(tmp_path), models=e)
    assert inp.main("sr-dpo").model_id == "sr-dpo"
    assert [c.model_id for c in inp.checkpoints("sr-dpo")] == ["sr-dpo-p32", "sr-dpo"]  # final wins the tie
    assert inp.main("ipo") is None and inp.checkpoints("ipo") == []
    g = guess_entry("sr-ipo-lam0.3-p128")
    assert (g.objective, g.lam, g.pairs_seen) == ("sr-ipo", 0.3, 128)
    assert guess_entry("dpo").objective == "dpo" and guess_entry("dpo").pairs_seen is None
    assert guess_entry("llama-7b") is None


def test_reference_free_margins_never_share_an_axis_with_reference_margins():
    """SimPO logs ā⁺ − ā⁻ as its margin, another quantity than β·m(x): its own panels in both figures."""
    from analysis.curves import figure1_margin_accuracy, training_curves

    rows = []
    for obj in ("dpo", "sr-dpo", "simpo"):
        for s in (1, 2, 3):
            rows.append({"run": obj, "objective": obj, "lam": None, "beta": 0.1, "pairs_seen": 4 * s,
                         "loss": 0.7 - 0.01 * s, "rewards/margins": 0.01 * s, "rewards/accuracies": 0.5,
                         "margin": 0.1 * s, "accuracy": 0.5, **({"delta/mean": 0.001 * s} if obj == "sr-dpo" else {})})
    table = pd.DataFrame(rows)
    for fig in (training_curves(table), figure1_margin_accuracy(table)):
        for ax in fig.axes:
            labels = {ln.get_label() for ln in ax.get_lines()}
            if ax.get_title().startswith("Loss, relative"):
                continue  # each loss over its own first step: one scale by construction
            assert not ("SimPO" in labels and labels & {"DPO", "Sr-DPO"}), ax.get_title()
    titles = {ax.get_title(): {ln.get_label() for ln in ax.get_lines()} for ax in training_curves(table).axes}
    assert titles["Reward margin, reference-free objectives"] == {"SimPO"}
    assert titles["Reward margin"] == {"DPO", "Sr-DPO"} and "SimPO" in titles["Loss, relative to the first step"]
    simpo_ax = next(ax for ax in figure1_margin_accuracy(table).axes if ax.get_title() == "SimPO")
    assert "ā⁺ − ā⁻" in simpo_ax.get_ylabel()


def test_no_text_of_any_figure_is_cut_off(built):
    """Titles, labels, tick labels and legends lie inside their figure (a clipped title reads as a bug):
    the box of everything drawn (in inches) fits the figure."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    _, rep = built
    for name in rep.figures:
        fig = _figure(rep, name)
        renderer = FigureCanvasAgg(fig).get_renderer()
        fig.draw(renderer)
        drawn, (w, h) = fig.get_tightbbox(renderer), fig.get_size_inches()
        assert drawn.x0 >= -0.01 and drawn.y0 >= -0.01 and drawn.x1 <= w + 0.01 and drawn.y1 <= h + 0.01, \
            f"{name}: something drawn reaches outside the figure ({drawn} in a {w}x{h} inch figure)"


def test_a_word_in_a_number_column_names_file_line_and_column(tmp_path, capsys):
    """`figures` on a Δπ table whose rating holds a word: one line (file:line, column), exit 2, no traceback."""
    from srdpo_eval.cli import main

    (tmp_path / "delta").mkdir()
    df = _delta_table("dpo", 0.5, seed=0)
    df["chosen_rating"] = df["chosen_rating"].astype(object)
    df.loc[3, "chosen_rating"] = "five"
    df.to_csv(tmp_path / "delta" / "dpo.csv", index=False)
    assert main(["figures", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert re.search(r"delta/dpo\.csv:5: column 'chosen_rating': expected a number, got 'five'", err), err


def test_table4_scatter_shows_final_models_with_the_slope_in_the_title(built):
    """One column per final model (checkpoints are in the table), no legend over the points: the fitted
    slope is in each panel's title; the section names the pairs' ratings, not a judge."""
    run, rep = built
    fig = _figure(rep, "table4_scatter")
    titles = [ax.get_title() for ax in fig.axes]
    assert len(titles) == 2 * 2 and all(ax.get_legend() is None for ax in fig.axes)  # dpo, sr-dpo × m(x), Δπ
    assert all(re.fullmatch(r"(DPO \(dpo\)|Sr-DPO \(sr-dpo\))\nleast-squares slope -?[\d.e-]+", t) for t in titles), titles
    assert "## Margin and Δπ against the pairs' quality ratings (Table 4)" in run.report.read_text()
