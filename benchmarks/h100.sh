#!/usr/bin/env bash
# The GPU study, run from the repository root on an offline CUDA machine (the device tool's H100):
#   bash benchmarks/h100.sh PHASE...     phases: check overhead synthetic kernels curves
# Needs .wheelhouse and .gpu/kit (../shared/gpu-kit) and .gpu/demo (the demo model) beside it.
# Writes everything under $OUT. Each phase skips work that is already there, so a second call on
# a machine that is still warm reuses the built kernels and the synthetic checkpoint.
set -uo pipefail
: "${OUT:?set OUT to a folder for the results}"
start=$(date +%s)
budget=${BUDGET_S:-570}  # stop starting new phases after this many seconds
elapsed() { echo $(( $(date +%s) - start )); }
say() { echo "[$(elapsed)s] $*"; }

source .gpu/kit/install.sh .wheelhouse >/dev/null
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
data=$PWD/.gpu-data
final=$OUT
OUT=$final/results  # packed into one archive at the end: the device tool returns at most 8 files
mkdir -p "$data" "$OUT"
trap 'tar -czf "$final/results.tar.gz" -C "$final" results && rm -rf "$final/results"' EXIT
export JUPYTER_PATH=/tmp/site/share/jupyter WORKBENCH_CACHE=$data/cache GPTQMODEL_TORCH_EXTENSIONS_DIR=$data/ext MAX_JOBS=${MAX_JOBS:-16}
syn=$data/codefuse-34b-synthetic

{ nvidia-smi; python3 -c 'import torch, transformers, platform; print(platform.python_version(), torch.__version__, torch.version.cuda, transformers.__version__)'; } > "$OUT/machine.txt" 2>&1
python3 -m workbench kernels --device cuda > "$OUT/kernels.txt" 2>&1
# Kernels that compile on first use build in the background while the first phases run
# (its own output file, so it does not hold the caller's pipe open).
case " $* " in *" check "*|*" kernels "*)
  ( for k in exllamav2 marlin; do
      python3 -c "import sys, time; from workbench.notebook import setup; t = time.perf_counter(); l = setup('.gpu/demo', sys.argv[1], 'cuda'); print(sys.argv[1], 'built and loaded in', round(time.perf_counter() - t, 1), 's')" "$k"
    done ) > "$OUT/prebuild.log" 2>&1 < /dev/null &
esac

for phase in "$@"; do
  if [ "$(elapsed)" -ge "$budget" ]; then say "budget spent: skipping $phase"; continue; fi
  say "phase $phase"
  case $phase in
    check)  # issue 3: the demo model with each CUDA kernel, compared with torch and a float32 reference
      python3 benchmarks/kernel_check.py .gpu/demo --device cuda --kernels torch triton exllamav2 marlin \
        --float-reference --out "$OUT/kernel_check_demo.json" 2>&1 | tee "$OUT/kernel_check_demo.log" | grep -v "^\[" ;;
    overhead)  # issue 5: instrumentation cost against plain model.generate
      python3 -m workbench bench-overhead --model .gpu/demo --kernel exllamav2 --device cuda --new-tokens 128 \
        --rounds 7 --out "$OUT/overhead_demo.json" 2>&1 | tail -8 | tee "$OUT/overhead_demo.txt" ;;
    synthetic)  # issue 8: the 34B shapes, random weights, in the original .bin layout
      [ -f "$syn/SHA256SUMS" ] || python3 -m workbench synthetic "$syn" --arch codefuse-34b --layout "${SYN_LAYOUT:-autogptq_bin}" 2>&1 | tail -2 | tee "$OUT/synthetic.txt"
      python3 - "$syn" <<'PY' 2>&1 | tee "$OUT/convert.txt"
import sys, time
from workbench.checkpoint import prepare_checkpoint, verify_checkpoint
t = time.perf_counter(); verify_checkpoint(sys.argv[1], progress=False); v = time.perf_counter() - t
t = time.perf_counter(); out = prepare_checkpoint(sys.argv[1], progress=False); c = time.perf_counter() - t
print(f"verify (SHA256 of 19 GB) {v:.1f} s; .bin -> safetensors conversion {c:.1f} s -> {out}")
PY
      ;;
    kernels)  # issue 8: notebook 04 on the synthetic checkpoint through the report runner
      python3 -m workbench report --model "$syn" --device cuda --notebooks notebooks --only 04_kernels \
        --params benchmarks/h100_kernels.json --out "$OUT/report" 2>&1 | tail -15 ;;
    curves)
      python3 -m workbench report --model "$syn" --kernel "${CURVES_KERNEL:-exllamav2}" --device cuda \
        --notebooks notebooks --only 05_latency_curves --params benchmarks/h100_curves.json \
        --out "$OUT/report" 2>&1 | tail -15 ;;
    *) say "unknown phase $phase" ;;
  esac
done
say "done"
