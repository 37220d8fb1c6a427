"""The parallel unit engine with real worker processes (small Python children, no models): dependency
order, one writer per shared file, GPU pinning, a failed or killed worker, shards of a manifest."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from contracts.errors import UserError
from srdpo_eval.manifest import Manifest, Unit, UnitFailed, execute, shard_path
from srdpo_eval.shards import check_not_running, parse_shard, running_entry, share
from srdpo_eval.workers import RESULT_ENV, Workers

# A worker: logs its start and end (with its pinned device) to trace.jsonl, then does what spec.json says.
CHILD = r"""
import json, os, sys, time
name, folder = sys.argv[1], sys.argv[2]
spec = json.load(open(os.path.join(folder, "spec.json"))).get(name, {})
def trace(event):
    with open(os.path.join(folder, "trace.jsonl"), "a") as f:
        f.write(json.dumps({"unit": name, "event": event, "t": time.time(),
                            "device": os.environ.get("CUDA_VISIBLE_DEVICES")}) + "\n")
trace("start")
time.sleep(spec.get("sleep", 0.1))
if "user_error" in spec:
    json.dump({"user_error": spec["user_error"]}, open(os.environ["%s"], "w"))
    sys.exit(2)
if spec.get("exit"):
    print("boom: something broke")
    sys.exit(spec["exit"])
trace("end")
json.dump({"result": {"unit": name}}, open(os.environ["%s"], "w"))
""" % (RESULT_ENV, RESULT_ENV)


def pool(tmp_path, slots=2, devices=("7", "9")):
    return Workers(slots, lambda u: [sys.executable, "-c", CHILD, u.name, str(tmp_path)],
                   lambda name: tmp_path / "logs" / f"{name}.log", devices=list(devices))


def unit(name, deps=(), **kw):
    def never():
        raise AssertionError(f"{name} ran in the parent")

    return Unit(name, "answers", {"n": name}, never, deps=list(deps), worker=True, **kw)


def trace(tmp_path):
    p = tmp_path / "trace.jsonl"
    return [json.loads(x) for x in p.read_text().splitlines()] if p.exists() else []


def intervals(tmp_path):
    ev = {}
    for r in trace(tmp_path):
        ev.setdefault(r["unit"], {})[r["event"]] = r["t"]
    return ev


def test_units_start_when_their_deps_end_and_one_unit_at_a_time_writes_a_shared_file(tmp_path):
    (tmp_path / "spec.json").write_text(json.dumps({"a": {"sleep": 0.6}, "b": {"sleep": 0.2}, "j1": {"sleep": 0.4},
                                                    "j2": {"sleep": 0.4}}))
    order = []
    units = [unit("a"), unit("b"), unit("c", deps=["a"]), unit("j1", deps=["b"], shared_file="f.jsonl"),
             unit("j2", deps=["b"], shared_file="f.jsonl"),
             Unit("final", "figures", {}, lambda: order.append(sorted(intervals(tmp_path))), deps=["c", "j1", "j2"])]
    m = Manifest.load(tmp_path / "manifest.json")
    with pool(tmp_path, slots=3) as w:  # 3 slots: without the shared file, j1 and j2 would run together
        taken = execute(units, m, workers=w, log=lambda s: None)
    assert set(taken.values()) == {"run"}
    ev = intervals(tmp_path)
    assert ev["c"]["start"] >= ev["a"]["end"] and ev["j1"]["start"] >= ev["b"]["end"]
    j1, j2 = sorted((ev["j1"], ev["j2"]), key=lambda e: e["start"])
    assert j2["start"] >= j1["end"], "two units appended to the same file at once"
    # never more than three running at once
    points = sorted([(e["start"], 1) for e in ev.values()] + [(e["end"], -1) for e in ev.values()])
    running = [sum(d for _, d in points[: i + 1]) for i in range(len(points))]
    assert max(running) <= 3
    # each worker pinned to one of the devices (3 slots on 2 GPUs: round robin); both used
    assert {r["device"] for r in trace(tmp_path)} == {"7", "9"}
    assert order == [["a", "b", "c", "j1", "j2"]]  # the parent's unit ran last, after every worker unit
    saved = json.loads((tmp_path / "manifest.json").read_text())["units"]
    assert saved["c"]["status"] == "done" and saved["c"]["result"] == {"unit": "c"}
    assert saved["c"]["device"] in ("7", "9") and (tmp_path / "logs" / "c.log").is_file()


def test_a_failed_worker_stops_the_phase_and_a_rerun_resumes_it(tmp_path):
    (tmp_path / "spec.json").write_text(json.dumps({"ok": {"sleep": 1.0}, "bad": {"sleep": 0.2, "exit": 1}}))
    units = [unit("ok"), unit("bad"), unit("later"), unit("after_bad", deps=["bad"])]
    with pool(tmp_path) as w, pytest.raises(UnitFailed, match=r"unit bad failed: exit status 1 \(boom: "):
        execute(units, Manifest.load(tmp_path / "m.json"), workers=w, log=lambda s: None)
    saved = json.loads((tmp_path / "m.json").read_text())["units"]
    assert saved["ok"]["status"] == "done"  # running when bad failed: it finished and was kept
    assert saved["bad"]["status"] == "failed" and "boom" in saved["bad"]["error"]
    assert "later" not in saved and "after_bad" not in saved  # nothing new started after the failure

    (tmp_path / "spec.json").write_text("{}")
    (tmp_path / "trace.jsonl").unlink()
    with pool(tmp_path) as w:
        taken = execute(units, Manifest.load(tmp_path / "m.json"), workers=w, log=lambda s: None)
    assert taken == {"ok": "skip", "bad": "resume", "later": "run", "after_bad": "run"}
    assert sorted(intervals(tmp_path)) == ["after_bad", "bad", "later"]


def test_a_user_error_in_a_worker_is_one_line_naming_the_unit(tmp_path):
    (tmp_path / "spec.json").write_text(json.dumps({"x": {"user_error": "data.jsonl:3: missing field 'prompt'"}}))
    with pool(tmp_path) as w, pytest.raises(UserError, match=r"unit x failed: data.jsonl:3: missing field"):
        execute([unit("x")], Manifest.load(tmp_path / "m.json"), workers=w, log=lambda s: None)


def test_a_killed_worker_is_redone_on_rerun_and_the_others_are_not(tmp_path):
    (tmp_path / "spec.json").write_text(json.dumps({"slow": {"sleep": 60}, "quick": {"sleep": 0.1},
                                                    "next": {"sleep": 0.3}}))
    units = [unit("slow"), unit("quick"), unit("next", deps=["quick"])]
    path = tmp_path / "m.json"

    def kill_slow_once_the_others_are_done():
        for _ in range(600):
            recs = json.loads(path.read_text())["units"] if path.exists() else {}
            if recs.get("next", {}).get("status") == "done" and "pid" in recs.get("slow", {}):
                os.kill(recs["slow"]["pid"], signal.SIGKILL)
                return
            time.sleep(0.05)

    killer = threading.Thread(target=kill_slow_once_the_others_are_done)
    killer.start()
    with pool(tmp_path) as w, pytest.raises(UnitFailed, match="unit slow failed: killed by SIGKILL"):
        execute(units, Manifest.load(path), workers=w, log=lambda s: None)
    killer.join()
    saved = json.loads(path.read_text())["units"]
    assert saved["slow"]["status"] == "failed" and saved["quick"]["status"] == saved["next"]["status"] == "done"

    (tmp_path / "spec.json").write_text("{}")
    (tmp_path / "trace.jsonl").unlink()
    with pool(tmp_path) as w:
        taken = execute(units, Manifest.load(path), workers=w, log=lambda s: None)
    assert taken == {"slow": "resume", "quick": "skip", "next": "skip"}
    assert sorted(intervals(tmp_path)) == ["slow"]


def test_one_worker_runs_every_unit_in_order_in_this_process(tmp_path):
    calls = []
    units = [Unit(n, "answers", {}, (lambda n=n: calls.append(n)), worker=True) for n in ("a", "b", "c")]
    execute(units, Manifest.load(tmp_path / "m.json"), log=lambda s: None)
    assert calls == ["a", "b", "c"]


# ------------------------------------------------------------------------------------------- shards


def test_shards_write_their_own_files_and_a_plain_load_merges_them(tmp_path):
    main = tmp_path / "manifest.json"
    base = Manifest.load(main)
    base.record("train/a", {"status": "done", "key": "k", "started": 1.0})
    base.save()
    before = main.read_bytes()
    for i, name in enumerate(["answers/x", "answers/y"]):
        m = Manifest.load(main, shard=(i, 2))
        assert m.unit("train/a")["status"] == "done"  # a shard sees the training records
        m.record(name, {"status": "done", "key": "k", "started": time.time()})
        m.save()
        part = json.loads(shard_path(main, (i, 2)).read_text())["units"]
        assert set(part) == {name}  # only its own units
    assert main.read_bytes() == before  # no shard touched manifest.json

    # a stale record of answers/x in manifest.json loses against the shard's newer one
    base = json.loads(main.read_text())
    base["units"]["answers/x"] = {"status": "started", "key": "old", "started": 0.5}
    main.write_text(json.dumps(base))
    merged = Manifest.load(main)
    assert merged.unit("answers/x")["key"] == "k" and merged.unit("answers/y")["status"] == "done"
    merged.save()
    assert not list(tmp_path.glob("manifest.shard-*")) and json.loads(main.read_text())["units"]["answers/x"]["key"] == "k"


def test_a_running_shard_is_not_merged_and_a_stopped_one_is(tmp_path):
    main = tmp_path / "manifest.json"
    m = Manifest.load(main, shard=(1, 3))
    m.data["running"] = running_entry()  # this process: alive
    m.save()
    with pytest.raises(UserError, match=r"shard 1/3 is running on .* \(pid %d" % os.getpid()):
        check_not_running(Manifest.load(main))
    with pytest.raises(UserError, match="shard 1/3 is running"):
        check_not_running(Manifest.load(main, shard=(1, 3)))  # the same shard twice
    check_not_running(Manifest.load(main, shard=(0, 3)))  # other shards run alongside
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    m.data["running"]["pid"] = int(dead.stdout)
    m.save()
    check_not_running(Manifest.load(main))  # its process is gone: a plain run takes over


def test_shares_are_disjoint_cover_the_independent_worker_units_and_are_deterministic():
    units = [unit(f"answers/{i}") for i in range(5)] + [unit("judge/p", deps=["answers/0", "answers/1"]),
                                                        Unit("models", "models", {}, lambda: None)]
    shares = [share(units, (i, 3)) for i in range(3)]
    assert set().union(*shares) == {f"answers/{i}" for i in range(5)}
    assert sum(map(len, shares)) == 5 and [sorted(s) for s in shares] == [sorted(share(units, (i, 3))) for i in range(3)]
    assert sorted(len(s) for s in shares) == [1, 2, 2]


@pytest.mark.parametrize("text,ok", [("0/1", (0, 1)), ("3/4", (3, 4)), ("4/4", None), ("-1/2", None), ("1", None),
                                     ("a/b", None), ("0/0", None)])
def test_parse_shard(text, ok):
    if ok:
        assert parse_shard(text) == ok
    else:
        with pytest.raises(UserError):
            parse_shard(text)


@pytest.mark.parametrize("flag,value,words", [("--workers", "0", "worker processes >= 1"),
                                              ("--shard", "2/2", "I counts from 0")])
def test_bad_flags_are_one_line_and_exit_2(flag, value, words, capsys):
    from srdpo_eval.cli import main

    with pytest.raises(SystemExit) as e:
        main(["reproduce", flag, value])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and len(err.splitlines()) == 1 and words in err and flag in err


def test_the_judge_reply_cache_takes_writers_in_several_processes_at_once(tmp_path):
    """Judge units in parallel workers share RUN_DIR/judge_cache.sqlite (WAL, busy timeout)."""
    script = ("import sys; from benchmarks.judge.cache import JudgeCache\n"
              "c = JudgeCache(sys.argv[1]); w = sys.argv[2]\n"
              "for i in range(300):\n"
              "    c.put(f'{w}-{i}', 'reply ' * 50); c.put(f'both-{i}', 'same'); assert c.get(f'{w}-{i}')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[2]),
                                                         os.environ.get("PYTHONPATH", "")])}
    procs = [subprocess.Popen([sys.executable, "-c", script, str(tmp_path / "c.sqlite"), w], env=env,
                              stderr=subprocess.PIPE, text=True) for w in ("a", "b", "c")]
    errors = [p.communicate()[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], errors
    from benchmarks.judge.cache import JudgeCache

    with JudgeCache(tmp_path / "c.sqlite") as c:
        assert len(c) == 3 * 300 + 300
