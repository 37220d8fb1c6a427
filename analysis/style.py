"""One look for every figure: fonts, sizes, and one colour per objective kept across all figures.

Figures are made with the object API on the Agg backend (no display, no global pyplot state) and saved
at a fixed size (no tight bounding box), so a figure of ``size`` inches at ``DPI`` is always
``size × DPI`` pixels — the tests check that.
"""

from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure

from contracts import objectives
from contracts.benches import BENCHES

DPI = 150
SINGLE = (6.4, 4.0)  # one panel
WIDE = (11.0, 4.0)  # a row of panels
GRID = (11.0, 7.5)  # 2 × 2 or 2 × 3 panels

# One colour and one display name per objective, from the registry (contracts.objectives).
BENCH_NAMES = {b.name: b.label for b in BENCHES.values()}
OUTCOME_COLORS = {"win": "#1b9e77", "tie": "#bdbdbd", "loss": "#d95f02"}

RC = {
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.labelsize": 10,
    "legend.fontsize": 8.5,
    "xtick.labelsize": 9,
    "ytick.labelsize": 9,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "lines.linewidth": 1.6,
}


def judged_title(title: str, judge: str) -> str:
    """A title and, on its own line, the judge (a local judge's id is long enough to cut a one-line title)."""
    return f"{title}\njudge: {judge}"


color = objectives.color  # the objective's colour (unknown objectives get black)
label = objectives.label  # the objective's display name, e.g. 'Sr-DPO'


def new_figure(size: tuple[float, float] = SINGLE, nrows: int = 1, ncols: int = 1, **kw):
    """A figure in the project style and its axes array (always 2-D), without pyplot's global state."""
    import matplotlib

    with matplotlib.rc_context(RC):
        fig = Figure(figsize=size, dpi=DPI, layout="constrained")
        axes = fig.subplots(nrows, ncols, squeeze=False, **kw)
    return fig, axes


def styled(fn):
    """Decorator: build the figure inside the project's rc context (fonts, grid, spines)."""
    import functools

    import matplotlib

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with matplotlib.rc_context(RC):
            return fn(*args, **kwargs)

    return wrapper


def save_figure(fig: Figure, out_dir: Path, name: str) -> list[Path]:
    """Write ``name``.png and ``name``.pdf under ``out_dir``; return both paths."""
    import matplotlib

    from contracts.files import written

    out_dir = Path(out_dir)
    paths = [out_dir / f"{name}.png", out_dir / f"{name}.pdf"]
    with matplotlib.rc_context(RC):
        for p in paths:
            with written(p) as tmp:
                fig.savefig(tmp, dpi=DPI, format=p.suffix[1:])
    return paths
