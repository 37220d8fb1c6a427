#!/usr/bin/env bash
# GPU checks, for a machine with a CUDA GPU (a few minutes; nothing is downloaded):
#   1. the GPU-only tests (bf16 autocast, CUDA log-probs, generation) — pytest -m gpu
#   2. FSDP2 at world size 1 with bf16 for a few Sr-DPO steps on a ~0.5B random Llama-style model, its peak
#      CUDA memory and step time against DDP at world size 1 and a plain single process (perf/fsdp_memory.py)
#
#   bash perf/gpu_checks.sh [WORK_DIR]        # PYTHON=... to choose the interpreter (default: python)
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
WORK=${1:-$(mktemp -d "${TMPDIR:-/tmp}/gpu-checks-XXXXXX")}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" TOKENIZERS_PARALLELISM=false TQDM_DISABLE=1
status=0
step() { echo; echo "== $*"; }

step "GPU: $($PY -c 'import torch; print(torch.cuda.get_device_name(0), "| torch", torch.__version__)')"
nvidia-smi --query-gpu=name,memory.total,memory.used --format=csv,noheader || true

step "1. GPU-only tests"
timeout 300 $PY -m pytest -q -p no:cacheprovider -m gpu tests/ || status=1

step "2. FSDP at world size 1 (bf16) vs DDP and plain: ~0.5B Llama, Sr-DPO, work dir $WORK"
run() { timeout 300 "$@" 2>"$WORK/stderr.log" || { status=1; echo "FAILED: $*"; tail -40 "$WORK/stderr.log"; }; }
mkdir -p "$WORK"
run $PY perf/fsdp_memory.py build "$WORK"
run $PY perf/fsdp_memory.py run "$WORK" plain
run $PY -m torch.distributed.run --standalone --nproc_per_node 1 perf/fsdp_memory.py run "$WORK" ddp
run $PY -m torch.distributed.run --standalone --nproc_per_node 1 perf/fsdp_memory.py run "$WORK" fsdp
echo
$PY perf/fsdp_memory.py table "$WORK" || status=1

echo
[ $status -eq 0 ] && echo "gpu checks: all passed" || echo "gpu checks: FAILURES above"
exit $status
