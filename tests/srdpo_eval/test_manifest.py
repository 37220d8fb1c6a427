"""The unit engine behind `reproduce`: skip what finished, resume what was cut, invalidate downstream."""

from __future__ import annotations

import json

import pytest

from srdpo_eval.manifest import Manifest, Unit, execute, plan, unit_hashes


def make_units(calls, settings):
    def runner(name):
        def run():
            calls.append(name)
        return run

    return [
        Unit("train/a", "train", {"lr": settings["lr_a"]}, runner("train/a")),
        Unit("train/b", "train", {"lr": settings["lr_b"]}, runner("train/b")),
        Unit("answers/a", "answers", {"n": settings["n"]}, runner("answers/a"), deps=["train/a"]),
        Unit("answers/b", "answers", {"n": settings["n"]}, runner("answers/b"), deps=["train/b"]),
        Unit("judge/a__b", "judge", {}, runner("judge/a__b"), deps=["answers/a", "answers/b"]),
    ]


BASE = {"lr_a": 1.0, "lr_b": 2.0, "n": 3}


def test_second_run_skips_everything(tmp_path):
    calls = []
    m = Manifest.load(tmp_path / "manifest.json")
    execute(make_units(calls, BASE), m, log=lambda s: None)
    assert calls == ["train/a", "train/b", "answers/a", "answers/b", "judge/a__b"]
    calls.clear()
    taken = execute(make_units(calls, BASE), Manifest.load(tmp_path / "manifest.json"), log=lambda s: None)
    assert calls == [] and set(taken.values()) == {"skip"}


def test_changed_setting_invalidates_only_downstream(tmp_path):
    calls = []
    execute(make_units(calls, BASE), Manifest.load(tmp_path / "m.json"), log=lambda s: None)
    calls.clear()
    cleared = []
    units = make_units(calls, {**BASE, "lr_b": 5.0})
    for u in units:
        u.clear = (lambda n: (lambda: cleared.append(n)))(u.name)
    execute(units, Manifest.load(tmp_path / "m.json"), log=lambda s: None)
    assert calls == ["train/b", "answers/b", "judge/a__b"]
    assert cleared == calls  # each re-run unit cleared its stale outputs first


def test_interrupted_unit_resumes_and_earlier_units_are_kept(tmp_path):
    calls = []
    units = make_units(calls, BASE)

    def boom():
        calls.append("answers/a")
        raise KeyboardInterrupt

    units[2].run = boom
    with pytest.raises(KeyboardInterrupt):
        execute(units, Manifest.load(tmp_path / "m.json"), log=lambda s: None)
    saved = json.loads((tmp_path / "m.json").read_text())
    assert saved["units"]["answers/a"]["status"] == "started"
    calls.clear()
    taken = execute(make_units(calls, BASE), Manifest.load(tmp_path / "m.json"), log=lambda s: None)
    assert taken["train/a"] == "skip" and taken["train/b"] == "skip" and taken["answers/a"] == "resume"
    assert calls == ["answers/a", "answers/b", "judge/a__b"]


def test_hashes_fold_in_dependencies_and_unknown_deps_fail():
    h1 = unit_hashes(make_units([], BASE))
    h2 = unit_hashes(make_units([], {**BASE, "lr_a": 9.0}))
    assert h1["train/b"] == h2["train/b"] and h1["judge/a__b"] != h2["judge/a__b"]
    with pytest.raises(ValueError, match="unknown unit"):
        unit_hashes([Unit("x", "s", {}, lambda: None, deps=["nope"])])


def test_plan_reports_actions_without_running(tmp_path):
    calls = []
    actions = [a for _, a in plan(make_units(calls, BASE), Manifest.load(tmp_path / "m.json"))]
    assert actions == ["run"] * 5 and calls == []


def test_corrupt_manifest_names_the_file(tmp_path):
    p = tmp_path / "manifest.json"
    p.write_text("{not json")
    with pytest.raises(ValueError, match="manifest.json"):
        Manifest.load(p)


def test_only_runs_selected_units_and_skipped_units_are_retried(tmp_path):
    calls = []
    units = make_units(calls, BASE)
    units[0].run = lambda: (calls.append("train/a"), {"skipped": "offline"})[1]
    taken = execute(units, Manifest.load(tmp_path / "m.json"), only={"train/a", "train/b"}, log=lambda s: None)
    assert calls == ["train/a", "train/b"] and taken["answers/a"] == "not selected"
    saved = json.loads((tmp_path / "m.json").read_text())
    assert saved["units"]["train/a"]["status"] == "skipped" and "answers/a" not in saved["units"]
    calls.clear()
    taken = execute(make_units(calls, BASE), Manifest.load(tmp_path / "m.json"), log=lambda s: None)
    assert taken["train/a"] == "resume" and taken["train/b"] == "skip"


def test_unit_reading_other_files_is_skipped_while_they_and_its_dependencies_stay(tmp_path):
    """figures: its key is the analysis settings; the result files it reads are a digest taken when due."""
    calls, digest = [], {"v": "1"}
    units = lambda lr: make_units(calls, {**BASE, "lr_a": lr}) + [  # noqa: E731
        Unit("figures", "figures", {}, lambda: calls.append("figures"), deps=["judge/a__b"],
             inputs=lambda: digest["v"])]
    m = tmp_path / "m.json"
    execute(units(1.0), Manifest.load(m), log=lambda s: None)
    calls.clear()
    assert execute(units(1.0), Manifest.load(m), log=lambda s: None)["figures"] == "skip" and calls == []
    digest["v"] = "2"  # a result file changed
    assert execute(units(1.0), Manifest.load(m), log=lambda s: None)["figures"] == "run" and calls == ["figures"]
    calls.clear()
    saved = Manifest.load(m)
    saved.unit("judge/a__b")["status"] = "started"  # a dependency was cut: it resumes, and figures follows it
    saved.save()
    taken = execute(units(1.0), Manifest.load(m), log=lambda s: None)
    assert taken["judge/a__b"] == "resume" and taken["figures"] == "run" and calls == ["judge/a__b", "figures"]


def test_unit_skipped_for_a_reason_waits_until_what_it_needs_changes(tmp_path):
    """The leaderboard offline: skipped again, without running, while the caches are as they were; one
    line per stage, the reason once."""
    calls, cache = [], {"v": "empty"}
    units = make_units(calls, BASE)
    for u in units[:2]:
        u.run = (lambda n: lambda: (calls.append(n), {"skipped": "dataset not cached", "until": cache["v"]})[1])(u.name)
        u.recheck = lambda probe: cache["v"]
    m = tmp_path / "m.json"
    execute(units, Manifest.load(m), log=lambda s: None)
    calls.clear()
    said = []
    taken = execute(units, Manifest.load(m), log=said.append)
    assert calls == [] and set(taken.values()) == {"skip"}
    assert said == ["[skip]   train: 2 units as before, nothing they need has changed; 2 of them without "
                    "results: dataset not cached", "[skip]   answers: 2 units done with the same settings and inputs",
                    "[skip]   judge: judge/a__b done with the same settings and inputs"], said
    cache["v"] = "filled"
    taken = execute(units, Manifest.load(m), log=lambda s: None)
    assert taken["train/a"] == "resume" and calls[:2] == ["train/a", "train/b"]
