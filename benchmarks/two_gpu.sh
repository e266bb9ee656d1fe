#!/usr/bin/env bash
# device="auto" on a two-GPU machine (issue 3): run from the repository root with OUT set, on the
# device tool's nvidia-h100-x2, carrying .wheelhouse .gpu/kit .gpu/demo.
set -uo pipefail
: "${OUT:?set OUT to a folder for the results}"
source .gpu/kit/install.sh .wheelhouse >/dev/null
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 WORKBENCH_CACHE=/tmp/wb-data/cache
nvidia-smi -L | tee "$OUT/gpus.txt"
python3 benchmarks/two_gpu.py .gpu/demo --kernel torch --out "$OUT/demo_two_gpus.json" 2>&1 | tail -1
CUDA_VISIBLE_DEVICES=0 python3 benchmarks/two_gpu.py .gpu/demo --kernel torch --out "$OUT/demo_one_gpu.json" 2>&1 | tail -1
python3 -m workbench synthetic /tmp/wb-data/syn --arch codefuse-34b --layout autogptq_safetensors 2>&1 | tr '\r' '\n' | tail -1
timeout 240 python3 benchmarks/two_gpu.py /tmp/wb-data/syn --kernel torch --new-tokens 8 --out "$OUT/syn34b_two_gpus.json" 2>&1 | tail -1
