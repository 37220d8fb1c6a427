"""What installs srdpo-eval: ranges in pyproject.toml (it must go beside what researchers already have),
the exact tested set in constraints.txt (what CI and the README install), the lower bounds tried."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")
from packaging.requirements import Requirement  # noqa: E402
from packaging.version import Version  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def _pins(path: Path) -> dict[str, Version]:
    out = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, version = line.split("==")
            out[re.sub(r"[-_.]+", "-", name).lower()] = Version(version)
    return out


def _requirements(dev: bool = True) -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [Requirement(r) for r in project["dependencies"] + (project["optional-dependencies"]["dev"] if dev else [])]


def test_dependencies_are_ranges_not_pins():
    pinned = [str(r) for r in _requirements() if any(s.operator == "==" for s in r.specifier)]
    assert not pinned, f"exact pins belong in constraints.txt, not in pyproject.toml: {pinned}"
    assert all(any(s.operator == ">=" for s in r.specifier) for r in _requirements()), "each needs a lower bound"


@pytest.mark.parametrize("pins", ["constraints.txt", "tests/lower-bounds.txt"])
def test_each_pinned_set_lies_within_the_ranges(pins):
    """constraints.txt (the tested set) and the lower bounds both satisfy pyproject.toml."""
    have = _pins(ROOT / pins)
    tested = pins == "constraints.txt"
    for r in _requirements(dev=tested):  # the lower bounds: of what srdpo-eval itself needs to run
        name = re.sub(r"[-_.]+", "-", r.name).lower()
        if name == "torch" and not tested:
            continue  # the lower-bound set keeps the local CPU wheel (an older torch pulls a CUDA build)
        assert name in have, f"{pins}: no pin for {r.name}"
        assert r.specifier.contains(have[name]), f"{pins}: {r.name}=={have[name]} outside {r.specifier}"
    if pins == "tests/lower-bounds.txt":  # the lower bounds themselves, not some version above them
        lows = {re.sub(r"[-_.]+", "-", r.name).lower(): Version(s.version) for r in _requirements()
                for s in r.specifier if s.operator == ">="}
        above = {n: str(have[n]) for n in have if n in lows and have[n].release[:len(lows[n].release)] != lows[n].release}
        assert not above, f"not the lower bound: {above}"


def test_ci_runs_the_readme_test_command_with_the_constraints():
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)\n```", readme, re.S)
    test_cmd = next(b for b in blocks if "pytest" in b)
    assert test_cmd.strip() in (ROOT / ".ci" / "run").read_text()
    for cmd in (test_cmd, next(b for b in blocks if "srdpo-eval reproduce" in b)):
        assert "-c constraints.txt" in cmd, cmd
