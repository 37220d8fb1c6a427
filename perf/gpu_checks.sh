#!/usr/bin/env bash
# Every GPU check in one run (perf/gpu_checks.py says which): the GPU tests, FSDP2 with bf16 at world size 1,
# the ~0.5B bf16 trainer benchmark (TRL beside ours where trl is installed) and a bitwise resume with
# --deterministic; one JSON of results and one table. About 8 minutes on one H100.
#
# Needs only python3 with torch (CUDA), transformers, accelerate, safetensors, pandas, scipy, matplotlib,
# tokenizers, pyyaml, tqdm and pytest: the project runs from this checkout (PYTHONPATH), nothing is
# downloaded or installed. On a CPU, --rehearse runs the same steps at tiny sizes (minutes).
#
#   bash perf/gpu_checks.sh [--rehearse] [--out DIR] [--work DIR] [--only tests,fsdp,bench,determinism]
#   PYTHON=/path/to/python bash perf/gpu_checks.sh       # another interpreter (default: python3)
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" TOKENIZERS_PARALLELISM=false TQDM_DISABLE=1 PYTHONUNBUFFERED=1
exec "$PY" perf/gpu_checks.py "$@"
