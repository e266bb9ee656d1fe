#!/usr/bin/env bash
# The GPU study, run from the repository root on an offline CUDA machine (the device tool's H100):
#   bash benchmarks/h100.sh PHASE...
# phases: check modes loadpath synthetic kernels curves overhead firstlengths attncheck prefill ttfthost (see the case below)
# Needs .wheelhouse and .gpu/kit (../shared/gpu-kit) and .gpu/demo (the demo model) beside it;
# .gpu/ext.tar.gz, when there, holds kernels built by an earlier call (this script packs them;
# on 2026-11-26 the exllamav2 + marlin .so files packed to more than the 16 MiB a returned file may
# have, so every call rebuilt them: about 170 s in the background on the H100).
# Writes everything under $OUT. Data lives in /tmp/wb-data, which a machine still warm keeps.
# Knobs: KERNELS_04 (space-separated), REFERENCE_04, ATTENTION_KERNELS_04, CURVES_KERNELS (space-separated),
# LOAD_KERNELS, OVERHEAD_RUNS (kernel:mode pairs), OVERHEAD_ROUNDS, PREFILL_KERNELS, PREFILL_ATTENTIONS,
# PREBUILD (kernels to build first), BUDGET_S.
set -uo pipefail
: "${OUT:?set OUT to a folder for the results}"
start=$(date +%s)
budget=${BUDGET_S:-560}  # stop starting new phases after this many seconds
elapsed() { echo $(( $(date +%s) - start )); }
say() { echo "[$(elapsed)s] $*"; }

source .gpu/kit/install.sh .wheelhouse >/dev/null
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
data=/tmp/wb-data
final=$OUT
OUT=$final/results  # packed into one archive at the end: the device tool returns at most 8 files
mkdir -p "$data/ext" "$OUT"
export JUPYTER_PATH=/tmp/site/share/jupyter WORKBENCH_CACHE=$data/cache GPTQMODEL_TORCH_EXTENSIONS_DIR=$data/ext
export MAX_JOBS=${MAX_JOBS:-16} TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0}  # build for Hopper only
syn=$data/codefuse-34b-synthetic
had_ext=0
if [ -f .gpu/ext.tar.gz ] && [ -z "$(ls -A "$data/ext")" ]; then
  tar -xzf .gpu/ext.tar.gz -C "$data/ext" && had_ext=1 && say "kernels built earlier: unpacked"
fi
pack() {
  # the built kernels come back for the next call (the .so files only; under 16 MiB or not at all)
  if [ "$had_ext" = 0 ] && [ -n "$(find "$data/ext" -name '*.so' 2>/dev/null)" ]; then
    (cd "$data/ext" && find . -name '*.so' -print0 | tar -czf "$final/ext.tar.gz" --null -T -)
  fi
  tar -czf "$final/results.tar.gz" -C "$final" results && rm -rf "$final/results"
}
trap pack EXIT

{ nvidia-smi; python3 -c 'import torch, transformers, platform; print(platform.python_version(), torch.__version__, torch.version.cuda, transformers.__version__)'
  python3 benchmarks/host_speed.py --device cuda; } > "$OUT/machine.txt" 2>&1  # the host speed: eager steps depend on it
python3 -m workbench kernels --device cuda > "$OUT/kernels.txt" 2>&1
# Kernels that compile on first use (PREBUILD) build in the background while the first phases run
# (its own output file, so it does not hold the caller's pipe open). A build takes every core, so
# the phases that time something wait for it first (`settle`): a host-bound decode step measured
# beside a compiler is measured slow.
( for k in ${PREBUILD-exllamav2 marlin}; do
    python3 -c "import sys, time; from workbench.report.notebook import setup; t = time.perf_counter(); l = setup('.gpu/demo', sys.argv[1], 'cuda'); print(sys.argv[1], 'built and loaded in', round(time.perf_counter() - t, 1), 's')" "$k"
  done ) > "$OUT/prebuild.log" 2>&1 < /dev/null &
prebuild=$!
settle() {
  if kill -0 "$prebuild" 2>/dev/null; then say "waiting for the kernel builds"; wait "$prebuild"; say "builds done"; fi
}

params() {  # a --params file for one notebook: params NOTEBOOK JSON
  echo "{\"$1\": $2}" > "$OUT/params_$1.json"; echo "$OUT/params_$1.json"
}
list() { python3 -c 'import json, sys; print(json.dumps(sys.argv[1:]))' "$@"; }

for phase in "$@"; do
  if [ "$(elapsed)" -ge "$budget" ]; then say "budget spent: skipping $phase"; continue; fi
  say "phase $phase"
  case $phase in
    check)  # issue 3: the demo model with each CUDA kernel, compared with torch and a float32 reference
      python3 benchmarks/kernel_check.py .gpu/demo --device cuda --kernels torch triton exllamav2 marlin \
        --float-reference --out "$OUT/kernel_check_demo.json" 2>&1 | tee "$OUT/kernel_check_demo.log" | grep -v "^\[" ;;
    modes)  # issue 9: static and graph decoding proven against eager, kernel by kernel, on the demo
      python3 benchmarks/mode_check.py .gpu/demo --device cuda --kernels torch triton exllamav2 marlin \
        --out "$OUT/mode_check_demo.json" 2>&1 | tee "$OUT/mode_check_demo.log" | grep '"kernel"' | cut -c1-400 ;;
    loadpath)  # issue 8: the model's own layout at full size: write the 19 GB .bin, verify, convert, load
      # (before `synthetic`: the .bin and its converted copy take 38 GB of the disk and are removed after)
      settle
      df -h /tmp | tail -1
      python3 benchmarks/load_path.py "$data/codefuse-34b-synthetic-bin" --device cuda --kernels ${LOAD_KERNELS:-torch marlin} \
        --out "$OUT/load_path_34b.json" --cleanup 2>&1 | grep -v "^\[" | tee "$OUT/load_path_34b.log" | cut -c1-400 ;;
    synthetic)  # issue 8: the 34B shapes, random weights (safetensors: no conversion needed)
      [ -f "$syn/SHA256SUMS" ] || python3 -m workbench synthetic "$syn" --arch codefuse-34b \
        --layout "${SYN_LAYOUT:-autogptq_safetensors}" 2>&1 | tail -2 | tee "$OUT/synthetic.txt" ;;
    kernels)  # issues 8 and 9: notebook 04 on the synthetic checkpoint through the report runner
      settle
      p=$(params 04_kernels "{\"KERNELS\": $(list ${KERNELS_04:-exllamav2 marlin}), \"REFERENCE\": \"${REFERENCE_04:-exllamav2}\",
        \"N_PROMPTS\": 2, \"GREEDY_TOKENS\": 16, \"PREFILL_TOKENS\": 128, \"DECODE_TOKENS\": ${DECODE_TOKENS_04:-32}, \"REPEATS\": 2,
        \"FLOAT_REFERENCE\": false, \"DECODE_MODES\": [\"eager\", \"static\", \"graph\"], \"DECODE_CONTEXTS\": [128, 2048],
        \"PROVE_STEPS\": 64, \"BREAKDOWN_STEPS\": ${BREAKDOWN_STEPS_04:-8}, \"ATTENTION_KERNELS\": $(list ${ATTENTION_KERNELS_04:-exllamav2}),
        \"ATTENTIONS\": [\"sdpa-no-cudnn\", \"sdpa\", \"sdpa-cudnn\", \"sdpa-flash\", \"sdpa-efficient\", \"sdpa-math\", \"eager\"]}")
      python3 -m workbench report --model "$syn" --device cuda --notebooks notebooks --only 04_kernels \
        --params "$p" --timeout "$(( budget - $(elapsed) + 20 ))" --out "$OUT/report" 2>&1 | tail -6 ;;
    curves)  # issues 8 and 9: notebook 05 per kernel, eager against graph decoding, and the card's memory cells
      settle
      p=$(params 05_latency_curves '{"PROMPT_LENGTHS": [128, 512, 2048], "LONG_PROMPT": 128, "LONG_NEW_TOKENS": 256,
        "BATCH_SIZES": [1, 2, 4, 8, 16], "BATCH_NEW_TOKENS": 32, "CONTEXTS": [512, 2048, 4096], "CARD_CELLS": true,
        "DECODE_MODES": ["eager", "graph"]}')
      for k in ${CURVES_KERNELS:-marlin}; do
        if [ "$(elapsed)" -ge "$budget" ]; then say "budget spent: skipping 05 with $k"; continue; fi
        say "05 with $k"
        python3 -m workbench report --model "$syn" --kernel "$k" --device cuda --notebooks notebooks \
          --only 05_latency_curves --params "$p" --timeout "$(( budget - $(elapsed) + 20 ))" --out "$OUT/05_$k" 2>&1 | tail -6
      done ;;
    overhead)  # issue 5: instrumentation cost against plain generation, on the 34B shapes, per kernel:mode
      settle
      for run in ${OVERHEAD_RUNS:-exllamav2:eager marlin:graph}; do
        k=${run%%:*} m=${run##*:}
        if [ "$(elapsed)" -ge "$budget" ]; then say "budget spent: skipping overhead $run"; continue; fi
        python3 -m workbench bench-overhead --model "$syn" --kernel "$k" --decode-mode "$m" --device cuda \
          --new-tokens 64 --rounds "${OVERHEAD_ROUNDS:-10}" --out "$OUT/overhead_34b_${k}_$m.json" 2>&1 \
          | grep -v "^\[" | tail -10 | tee "$OUT/overhead_34b_${k}_$m.txt"
      done ;;
    firstlengths)  # eager steps at cache lengths not decoded before, against a second run over the same lengths
      settle
      for conf in ${FIRST_LENGTHS_RUNS:-sdpa sdpa-flash sdpa-cudnn}; do
        python3 benchmarks/first_lengths.py "$syn" --kernel "${FIRST_LENGTHS_KERNEL:-exllamav2}" --attention "$conf" \
          --out "$OUT/first_lengths_34b_$conf.json" 2>&1 | grep "'run'" | sed "s/^/$conf /" | tee -a "$OUT/first_lengths_34b.txt"
      done ;;
    attncheck)  # attention settings proven against the default SDPA (logits per step), and the kernels each ran
      settle
      python3 benchmarks/attention_check.py "$syn" --kernel "${ATTN_CHECK_KERNEL:-torch}" --steps 32 \
        --attentions ${ATTN_CHECK:-sdpa-no-cudnn sdpa-flash eager} --out "$OUT/attention_check_34b.json" 2>&1 \
        | grep '^{\|^sdpa\|^eager' | cut -c1-600 | tee "$OUT/attention_check_34b.txt" ;;
    prefill)  # TTFT per length with every sample kept, lengths revisited, one prefill profiled per length
      settle
      for conf in ${PREFILL_ATTENTIONS:-sdpa-no-cudnn sdpa}; do
        python3 benchmarks/prefill_profile.py "$syn" --kernels ${PREFILL_KERNELS:-torch triton} --attention "$conf" \
          --lengths 128 512 2048 128 --out "$OUT/prefill_34b_$conf.json" 2>&1 | grep "^[a-z]" | sed "s/^/$conf /" \
          | cut -c1-400 | tee -a "$OUT/prefill_34b.txt"
      done ;;
    ttfthost)  # one short prefill repeated: the collector's time, CPU time and switches per sample, gc on and off
      settle
      python3 benchmarks/ttft_host.py "$syn" --kernels ${PREFILL_KERNELS:-torch triton} --prompt-tokens 128 --samples 16 \
        --out "$OUT/ttft_host_34b.json" 2>&1 | grep "^[a-z]" | cut -c1-700 | tee "$OUT/ttft_host_34b.txt" ;;
    *) say "unknown phase $phase" ;;
  esac
done
# the background build, if it is still going, gets what time is left (its kernels are packed for the next call)
while [ -n "$(jobs -pr)" ] && [ "$(elapsed)" -lt 580 ]; do sleep 5; done
say "done"
