"""What each analysis step returns: named tables, named figures and notes, for the report to write."""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd
from matplotlib.figure import Figure


@dataclass
class Section:
    """One part of the report (e.g. 'Training curves'): its tables, figures, notes and paper comparison."""

    title: str
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)  # name → table (saved as tables/<name>.csv)
    figures: dict[str, Figure] = field(default_factory=dict)  # name → figure (figures/<name>.png, .pdf)
    notes: list[str] = field(default_factory=list)  # missing inputs, caveats
    text: str = ""  # extra markdown (how to read the section)
    summary: str = ""  # how to read the section's headline table, where report.md puts it first
