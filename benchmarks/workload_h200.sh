#!/usr/bin/env bash
# Issue 19 on the GPU, in one call of the device tool (an H200): the HumanEval-shaped workload (`python -m workbench bench-workload`) on the
# synthetic 34B checkpoint with marlin (graph) and exllamav2 (auto: its graph replay is refused,
# so it runs static), each against today's one-at-a-time eager path in the same process.
# The first call (2026-11-30, results/h200/workload/) ran the demo check and exllamav2 but ran out of
# its budget waiting for marlin's build (332 s beside exllamav2's benchmark). For marlin alone:
#   KERNELS=marlin MAX_JOBS=16 EAGER_LIMIT=8 MARLIN_BATCHES="64 32 16" bash benchmarks/workload_h200.sh
# (about 8 minutes of command, 9-10 of device time). Both kernels: `bash benchmarks/workload_h200.sh`.
# The second session ran it as `HERE=.gpu/all KERNELS=marlin MAX_JOBS=16 EAGER_LIMIT=8
# MARLIN_BATCHES="64 32 16" BUDGET_S=420` on a machine left warm by benchmarks/peer_h200.sh (the
# checkpoint was reused, but marlin was built again, 208 s: the build here loaded the demo model
# where peer_h200.sh prewarms the fp16 extension, and why that loaded build did not reuse it was not
# checked; marlin is now built here the way peer_h200.sh builds it).
# DENSE_ROWS="0 32" runs each batch size with and without the runner's dense prefill; BENCH_ARGS adds
# bench-workload arguments, e.g. the fast step with slots (not yet run on a GPU):
#   BENCH_ARGS="--decode-mode fast --fast-config fuse=1 compile=1 dense_prefill_rows=32"
# Run from the folder the tool starts in, with $HERE (default .gpu/runner, relative to it) holding wheelhouse/ (the
# gpu-kit wheels), kit/ (../shared/gpu-kit), demo/ (the demo model), tokenizer.model (the real
# one: the synthetic checkpoint's tokenizer is a stand-in, so prompt and answer lengths come from
# the real one) and src/ (this repository's workbench/ and benchmarks/). Writes 8 files under $OUT.
# Staging from the repository root (the device tool sends /work/main's tree plus what `carry` names):
#   G=/work/main/.gpu/runner; mkdir -p $G/src && cp -r workbench benchmarks $G/src/ && cp -r ../shared/gpu-kit $G/kit
#   cp ../shared/codefuse/tokenizer.model $G/ && cp -r "$(python -m workbench demo --path-only)" $G/demo
#   (and the gpu-kit wheelhouse as $G/wheelhouse), then run it with carry [".gpu/runner"].
# Knobs: KERNELS (benchmarked in this order; default "marlin exllamav2"), BUDGET_S (start nothing new
# after this many seconds), MAX_JOBS (compiler jobs per build), MARLIN_BATCHES, EXL2_BATCHES,
# EAGER_LIMIT, DEMO_CHECK=1 (the runner on the demo model first, torch kernel).
set -uo pipefail
: "${OUT:?set OUT to a folder for the results}"
here=${HERE:-.gpu/runner}
start=$(date +%s)
budget=${BUDGET_S:-460}
elapsed() { echo $(( $(date +%s) - start )); }
say() { echo "[$(elapsed)s] $*"; }
left() { echo $(( budget - $(elapsed) )); }

source "$here/kit/install.sh" "$here/wheelhouse" >/dev/null
here=$(cd "$here" && pwd)
# `python -m` puts the working folder first on sys.path: run from src/, so its workbench is the one imported
cd "$here/src" || exit 1
export PYTHONPATH=$here/src:${PYTHONPATH:-} PYTHONUNBUFFERED=1
data=/tmp/wb-data
mkdir -p "$data/ext"
# $HERE/ext.tar.gz: marlin built by an earlier call (peer_h200.sh's $OUT/ext.tar.gz), loaded instead of built
if [ -f "$here/ext.tar.gz" ] && [ -z "$(ls -A "$data/ext")" ]; then
  tar -xzf "$here/ext.tar.gz" -C "$data/ext" && say "marlin built earlier: unpacked"
fi
export WORKBENCH_CACHE=$data/cache GPTQMODEL_TORCH_EXTENSIONS_DIR=$data/ext
# The builds leave cores to the benchmarks that run beside them (exllamav2's is host-bound).
export MAX_JOBS=${MAX_JOBS:-12} TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0}
syn=$data/codefuse-34b-synthetic
bench() { python3 -m workbench bench-workload --device cuda "$@"; }

{ nvidia-smi; python3 -c 'import platform, torch, transformers, workbench; print(platform.python_version(), torch.__version__, torch.version.cuda, transformers.__version__, workbench.__file__)'
  python3 "$here/src/benchmarks/host_speed.py" --device cuda; } > "$OUT/machine.txt" 2>&1
say "$(tail -n 1 "$OUT/machine.txt")"

# marlin and exllamav2 compile on first use: each kernel in $KERNELS builds in the background (on the
# demo model) while the synthetic checkpoint is written; each benchmark waits for its own build.
kernels=${KERNELS:-marlin exllamav2}
build() {
  if [ "$1" = marlin ]; then  # the fp16 extension the synthetic checkpoint loads with (peer_h200.sh builds the same)
    python3 -c "import time, torch; from workbench.model.libraries import import_gptqmodel; import_gptqmodel(); from gptqmodel.utils.marlin import prewarm_marlin_extension; t = time.perf_counter(); prewarm_marlin_extension(torch.float16); print('marlin built and loaded in', round(time.perf_counter() - t, 1), 's')"
    return
  fi
  python3 -c "import sys, time; from workbench.report.notebook import setup; t = time.perf_counter(); setup(sys.argv[1], sys.argv[2], 'cuda'); print(sys.argv[2], 'built and loaded in', round(time.perf_counter() - t, 1), 's')" "$here/demo" "$1"
}
declare -A builder
for k in $kernels; do
  ( build "$k" ) >> "$OUT/builds.log" 2>&1 < /dev/null &
  builder[$k]=$!
done
( [ -f "$syn/SHA256SUMS" ] || python3 -m workbench synthetic "$syn" --arch codefuse-34b --layout autogptq_safetensors 2>&1 \
  | tr '\r' '\n' | tail -n 1 ) > "$OUT/synthetic.txt" 2>&1 < /dev/null &
writer=$!
clean() { tr '\r' '\n' | grep -v "^\[\|Warning\|warn\|^writing gptq\|^sha256 gptq\|^ *$\|Configuration class"; }

if [ "${DEMO_CHECK:-0}" = 1 ]; then
  say "demo model, torch kernel: the runner on CUDA against one at a time (equality, graph capture)"
  bench --model "$here/demo" --kernel torch --limit 32 --eager-limit 12 --batch-sizes 8 16 2>&1 | clean > "$OUT/demo.txt"
  cat "$OUT/demo.txt"
fi
wait "$writer"; say "synthetic: $(cat "$OUT/synthetic.txt")"
n=0
for k in $kernels; do
  n=$((n + 1))
  wait "${builder[$k]}"; say "$k built: $(grep "^$k built" "$OUT/builds.log" | tail -n 1)"
  if [ "$(left)" -lt 60 ]; then say "budget spent: $k not run"; continue; fi
  # the last kernel gets what is left; an earlier one leaves 200 s for the next
  reserve=$([ "$n" -lt "$(echo $kernels | wc -w)" ] && echo 200 || echo 70)
  case $k in marlin) batches=${MARLIN_BATCHES:-64 32 96 16} ;; *) batches=${EXL2_BATCHES:-64 32} ;; esac
  say "$k on the synthetic 34B"
  bench --model "$syn" --tokenizer "$here/tokenizer.model" --kernel "$k" --eager-limit "${EAGER_LIMIT:-16}" \
    --batch-sizes $batches --dense-prefill-rows ${DENSE_ROWS:-0} ${BENCH_ARGS:-} --budget-s $(( $(left) - reserve )) --out "$OUT/workload_$k.json" 2>&1 | clean \
    | tee "$OUT/workload_$k.txt"
done
say "done"
