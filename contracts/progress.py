"""Progress bars: on a terminal only. Written to a log file, a bar is a stream of carriage returns and
cursor codes; there the stages' own lines (`[run] ...`, the training log) tell the progress."""

from __future__ import annotations


def bar(iterable=None, *, enabled: bool = True, **kw):
    """A tqdm bar shown when ``enabled`` and stderr is a terminal (tqdm's ``disable=None``)."""
    from tqdm.auto import tqdm

    return tqdm(iterable, disable=None if enabled else True, **kw)


def write(line: str) -> None:
    """Print a line without breaking a bar that is showing (tqdm.write)."""
    from tqdm.auto import tqdm

    tqdm.write(line)
