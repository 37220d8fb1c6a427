"""The project stands alone and its layers import one way: contracts ← trainer ← benchmarks ← analysis ←
srdpo_eval. Checked on the source (every import statement, at any depth), not on what a test imported."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LAYERS = ("contracts", "trainer", "benchmarks", "analysis", "srdpo_eval")  # bottom to top


def imported_packages(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.add(node.module.split(".")[0])
    return out


@pytest.mark.parametrize("layer", LAYERS)
def test_imports_flow_one_way(layer):
    above = set(LAYERS[LAYERS.index(layer) + 1:])
    bad = {str(p.relative_to(ROOT)): sorted(imported_packages(p) & above)
           for p in (ROOT / layer).rglob("*.py") if imported_packages(p) & above}
    assert not bad, f"{layer} imports layers above it: {bad}"


def test_analysis_reads_results_only():
    for p in (ROOT / "analysis").rglob("*.py"):
        assert "trainer" not in imported_packages(p), p  # no model runs in the analysis
        text = p.read_text()
        assert "torch" not in imported_packages(p) and "transformers" not in text, p


def test_nothing_names_the_team_folder_beside_the_checkout():
    needles = ("../" + "shared", "shared" + "/docs", "shared" + "/data", '"' + 'shared" /')  # and as Path parts
    suffixes = {".py", ".md", ".yaml", ".yml", ".toml", ".txt", ".cfg", ""}
    hits = []
    for p in ROOT.rglob("*"):
        rel = p.relative_to(ROOT)
        generated = rel.parts[0] in (".git", ".venv", "build", "dist", "runs") or rel.parts[0].endswith(".egg-info")
        if generated or "__pycache__" in rel.parts or not p.is_file():
            continue
        if p.suffix in suffixes or rel.parts[0] == ".ci":
            text = p.read_text(errors="ignore")
            hits += [f"{rel}: {n}" for n in needles if n in text]
    assert not hits, hits


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in LAYERS:
        for p in (ROOT / pkg).rglob("*.py"):
            parts = list(p.relative_to(ROOT).with_suffix("").parts)
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = p
    return out


def test_no_import_circle():
    """Imports at any depth (a function's too) between the project's modules never close a circle."""
    mods = _modules()
    graph = {}
    for m, p in mods.items():
        names = set()
        for node in ast.walk(ast.parse(p.read_text(), str(p))):
            if isinstance(node, ast.Import):
                names |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names |= {node.module, *(f"{node.module}.{a.name}" for a in node.names)}
        graph[m] = {n for n in names if n in mods and n != m}

    def reaches(start: str, goal: str) -> bool:
        seen, todo = set(), [start]
        while todo:
            m = todo.pop()
            if m == goal:
                return True
            if m not in seen:
                seen.add(m)
                todo += graph[m]
        return False

    circles = sorted((m, d) for m in graph for d in graph[m] if reaches(d, m))
    assert not circles, f"imports that close a circle (module, import): {circles}"


def test_no_function_is_longer_than_a_screen_or_so():
    """Outside the tests, a function of more than 80 lines is a sign to split it."""
    long = []
    for p in ROOT.rglob("*.py"):
        rel = p.relative_to(ROOT)
        if rel.parts[0] in ("tests", ".venv", ".git", "build", "runs") or rel.parts[0].endswith(".egg-info"):
            continue
        for node in ast.walk(ast.parse(p.read_text(), str(p))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 80:
                long.append(f"{rel}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)")
    assert not long, long


def test_progress_bars_go_through_one_place():
    """A bar written to a log file is a stream of cursor codes: every bar goes through contracts.progress,
    which shows it on a terminal only."""
    direct = [str(p.relative_to(ROOT)) for layer in LAYERS for p in (ROOT / layer).rglob("*.py")
              if "tqdm" in imported_packages(p) and p != ROOT / "contracts" / "progress.py"]
    assert not direct, f"tqdm used directly (use contracts.progress.bar): {direct}"


def test_progress_bar_is_silent_off_a_terminal():
    import io

    from contracts.progress import bar

    class Tty(io.StringIO):
        def isatty(self):
            return True

    log, tty = io.StringIO(), Tty()
    for f in (log, tty):
        for _ in bar(range(3), desc="x", file=f, mininterval=0):
            pass
    assert log.getvalue() == "" and "\r" in tty.getvalue() and "3/3" in tty.getvalue()
    off = Tty()
    list(bar(range(3), enabled=False, file=off))
    assert off.getvalue() == ""
