"""Regenerate every table (RUN_DIR/tables/*.csv), figure (RUN_DIR/figures/*.png|pdf) and report.md."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from analysis import paper_numbers
from analysis.inputs import Inputs, load_inputs
from analysis.section import Section
from contracts.errors import UserError
from contracts.files import write_json, write_text, written


@dataclass
class Report:
    """What ``build_report`` made: the sections (with their figure objects) and the files written."""

    inputs: Inputs
    sections: list[Section]
    tables: dict[str, Path] = field(default_factory=dict)  # name → CSV
    figures: dict[str, list[Path]] = field(default_factory=dict)  # name → [PNG, PDF]
    notes: list[str] = field(default_factory=list)


def make_sections(inputs: Inputs, *, n_boot: int = 2000, seed: int = 0, data_dir=None) -> list[Section]:
    """Run every analysis on the loaded inputs (pure: nothing is written)."""
    from analysis.compare import comparisons_section
    from analysis.correlation import correlation_section
    from analysis.curves import training_section
    from analysis.heldout import heldout_section
    from analysis.leaderboard import leaderboard_section
    from analysis.lengths import length_section
    from analysis.mtbench import mtbench_section
    from analysis.winrates import winrate_section

    return [
        comparisons_section(inputs, n_boot=n_boot, seed=seed),
        training_section(inputs),
        heldout_section(inputs, n_boot=n_boot, seed=seed),
        winrate_section(inputs, n_boot=n_boot, seed=seed),
        length_section(inputs),
        mtbench_section(inputs, data_dir=data_dir, n_boot=n_boot, seed=seed),
        leaderboard_section(inputs),
        correlation_section(inputs, n_boot=n_boot, seed=seed),
    ]


def _forget_old_outputs(run, made_now: set[Path]) -> None:
    """Delete what an earlier `figures` wrote and this one did not make again (a stale table must not
    linger beside fresh ones); files other stages wrote there (the judge's tables) are never touched."""
    import json

    record = run.analysis_made
    if record.is_file():
        for rel in json.loads(record.read_text()):
            p = run.root / rel
            if p not in made_now and p.is_file():
                p.unlink()
    write_json(record, sorted(str(p.relative_to(run.root)) for p in made_now), indent=1)


def build_report(root: str | Path, *, n_boot: int = 2000, seed: int = 0, data_dir=None) -> Report:
    """Load RUN_DIR, compute every section, write tables/, figures/ and report.md; return what was made."""
    from analysis.style import save_figure

    inputs = load_inputs(root)
    run = inputs.run
    if not (inputs.train or inputs.pair or inputs.single or inputs.delta or inputs.leaderboard is not None):
        raise UserError(f"{run.root}: no results to report (no train/ logs, judgments, leaderboard scores or Δπ "
                        "tables); give a run directory that a stage has written to")
    sections = make_sections(inputs, n_boot=n_boot, seed=seed, data_dir=data_dir)
    rep = Report(inputs=inputs, sections=sections, notes=list(inputs.notes))
    for sec in sections:
        for name, table in sec.tables.items():
            path = run.tables / f"{name}.csv"
            with written(path) as tmp:
                table.to_csv(tmp, index=False)
            rep.tables[name] = path
        for name, fig in sec.figures.items():
            rep.figures[name] = save_figure(fig, run.figures, name)
    _forget_old_outputs(run, {*rep.tables.values(), *(p for ps in rep.figures.values() for p in ps)})
    write_text(run.report, render_markdown(rep))
    return rep


def _fmt(df: pd.DataFrame) -> pd.DataFrame:
    def cell(v):
        if isinstance(v, float):
            return "" if v != v else (f"{v:.3g}" if abs(v) < 1 else f"{v:.2f}")
        return v

    return df.map(cell).astype(object)


def render_markdown(rep: Report) -> str:
    """report.md: notes on missing inputs, then per section its tables (markdown) and figure links."""
    from analysis.about import about

    root = rep.inputs.run.root
    lines = [f"# srdpo-eval report: {root.name}", ""] + _answer(rep) + [about(rep.inputs), "",
             f"Regenerate with `srdpo-eval figures {root}`. Paper numbers: {paper_numbers.SOURCE}.", ""]
    lines += [f"Figures made ({len(rep.figures)}): " + (", ".join(f"`{n}`" for n in rep.figures) or "none"), ""]
    if rep.notes:
        lines += ["## Missing inputs", ""] + [f"- {n}" for n in rep.notes] + [""]
    for sec in rep.sections:
        lines += [f"## {sec.title}", ""]
        lines += [f"- **note:** {n}" for n in sec.notes] + ([""] if sec.notes else [])
        if sec.text:
            lines += [sec.text, ""]
        for name, table in sec.tables.items():
            if name == ANSWER:
                continue  # at the top
            if name == "training_log" or len(table) > 60:
                lines += [f"Table `{name}`: {len(table)} rows, see [tables/{name}.csv](tables/{name}.csv).", ""]
                continue
            lines += [f"**Table `{name}`** ([csv](tables/{name}.csv))", "", _fmt(table).to_markdown(index=False), ""]
        for name in sec.figures:
            lines += [f"**Figure `{name}`** ([pdf](figures/{name}.pdf))", "", f"![{name}](figures/{name}.png)", ""]
    return "\n".join(lines)


ANSWER = "answer"  # the comparisons' opening table (analysis.compare)


def _answer(rep: Report) -> list[str]:
    """report.md opens with the answer: the comparisons, effect, CI, corrected p and verdict."""
    sec = next((s for s in rep.sections if ANSWER in s.tables), None)
    if sec is None:
        return ["**The answer:** no comparison could be made (no two objectives measured on the same items).", ""]
    return ["## The answer: does A beat B?", "", sec.tables[ANSWER].to_markdown(index=False), "", sec.summary,
            "Every number: [tables/comparisons.csv](tables/comparisons.csv) (per seed and pooled); "
            "the forest plot: [figures/comparisons_forest.png](figures/comparisons_forest.png).", ""]


def print_summary(rep: Report, console=None, *, notes: bool = True) -> None:
    """The answer, compactly, and where the rest is (every table, note and figure is in report.md);
    ``notes``: the missing inputs too (`reproduce` leaves them out: its stages said so as they ran)."""
    import sys

    out = console or sys.stdout
    for n in rep.notes if notes else ():
        print(f"missing: {n}", file=out)
    sec = next((s for s in rep.sections if ANSWER in s.tables), None)
    if sec is None:
        print("no comparison could be made (no two objectives measured on the same items)", file=out)
    else:
        t = sec.tables[ANSWER]
        cols = [c for c in ("comparison", "measure", "effect [95% CI]", "p (Holm)", "verdict") if c in t]
        print(t[cols].to_markdown(index=False, tablefmt="simple"), file=out)
    missing = f"; {len(rep.notes)} missing inputs listed there" if rep.notes else ""
    print(f"report: {rep.inputs.run.report} ({len(rep.tables)} tables, {len(rep.figures)} figures{missing})", file=out)
