#!/usr/bin/env bash
# Issue 21 in one call on an offline one-GPU CUDA machine (the device tool's nvidia-h200):
# ExLlamaV2's own engine beside the workbench's graph mode and the fast path's ladder, on the
# synthetic CodeFuse-34B checkpoint, every path proven before it is timed.
#   bash benchmarks/peer_h200.sh          (from the repository root, with $KIT beside it)
# Needs $KIT (default .gpu/exl2): wheelhouse/ (../shared/gpu-kit/wheelhouse.sh), wheels/ (exllamav2
# 0.3.2 and its needs the machine lacks: fastparquet, cramjam, websockets, as cp312 wheels),
# kit/ (../shared/gpu-kit) and src/ (this checkout's workbench/ and benchmarks/, which run from
# there so that the checkout's own package does not shadow them; `repo/` in the first calls).
# The same folder serves benchmarks/workload_h200.sh when it also holds demo/ and tokenizer.model
# (both scripts keep the builds and the checkpoint under /tmp/wb-data, so a second call on a
# still-warm machine reuses them).
# DURING_BUILDS: a command run while the extensions build, from src/ (output: during_builds.txt),
# for example `python3 benchmarks/runner_check.py $KIT/demo --kernel torch --device cuda`.
# AFTER: a command run from src/ once bench-peer is done, with the machine's builds and checkpoint
# (output: after.txt), stopped CALL_S (default 585) seconds after the start so that the call still
# returns its files, for example bench-workload on the same checkpoint.
# Writes under $OUT (packed into results.tar.gz; seven files, so that a call cut short still returns
# them all): machine.txt (with the registry and the checkpoint), build_exllamav2.log,
# build_marlin.log, probe.txt/json (PROBE=0 skips the probe), bench_peer.txt/json.
# Timeline: both extensions build in the background (exllamav2 about 100 s, marlin several
# minutes) while the checkpoint is written and the GEMV/attention probe runs (GPU-timed inside
# CUDA graphs, so the compilers beside it do not move its numbers); bench-peer starts when both
# builds are done, with what is left of BUDGET_S as its deadline.
set -uo pipefail
: "${OUT:?set OUT to a folder for the results}"
start=$(date +%s)
budget=${BUDGET_S:-540}  # bench-peer starts no new measurement after this (the call's limit is 600 s)
say() { echo "[$(( $(date +%s) - start ))s] $*"; }
KIT=${KIT:-.gpu/exl2}
final=$OUT
OUT=$final/results
mkdir -p "$OUT" /tmp/wb-data/ext
# gptqmodel's marlin (the long build) comes back as $OUT/ext.tar.gz (its .so files, in their
# fingerprinted folders); put it at $KIT/ext.tar.gz and the next call loads it instead of building:
# gptqmodel loads a library it finds in the folder of its sources' fingerprint (and builds as
# usual when the fingerprint differs). Through the device tool it does not come back: in the
# fifth session's four calls (2026-11-30) ext.tar.gz was left out for its size (over the 16 MiB a
# returned file may have), as h100.sh found on 2026-11-26; a machine of your own keeps it.
had_ext=0
if [ -f "$KIT/ext.tar.gz" ] && [ -z "$(ls -A /tmp/wb-data/ext)" ]; then
  tar -xzf "$KIT/ext.tar.gz" -C /tmp/wb-data/ext && had_ext=1 && say "marlin built earlier: unpacked"
fi
pack() {
  if [ "$had_ext" = 0 ] && [ -n "$(find /tmp/wb-data/ext -name '*.so' 2>/dev/null)" ]; then
    (cd /tmp/wb-data/ext && find . -name '*.so' -print0 | tar -czf "$final/ext.tar.gz" --null -T -)
  fi
  tar -czf "$final/results.tar.gz" -C "$final" results && rm -rf "$final/results"
}
trap pack EXIT

source "$KIT/kit/install.sh" "$KIT/wheelhouse" >/dev/null
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site "$KIT"/wheels/*.whl \
  || { say "installing the exllamav2 wheels failed"; exit 1; }
say "wheels installed"
KIT=$(cd "$KIT" && pwd)
src=$KIT/src; [ -d "$src" ] || src=$KIT/repo
cd "$src" || exit 1
export PYTHONPATH=$PWD:/tmp/site PYTHONUNBUFFERED=1 WORKBENCH_CACHE=/tmp/wb-data/cache
export GPTQMODEL_TORCH_EXTENSIONS_DIR=/tmp/wb-data/ext TORCH_EXTENSIONS_DIR=/tmp/wb-data/torch-ext
export TORCH_CUDA_ARCH_LIST=9.0  # Hopper only
syn=/tmp/wb-data/codefuse-34b-synthetic

{ nvidia-smi; python3 -c 'import torch, transformers, triton, platform; print("python", platform.python_version(), "torch", torch.__version__, "cuda", torch.version.cuda, "transformers", transformers.__version__, "triton", triton.__version__)'
  python3 -m pip list 2>/dev/null | grep -iE "^(exllamav2|gptqmodel|safetensors|numpy) "; nvcc --version | tail -2; nproc; free -g | head -2
} > "$OUT/machine.txt" 2>&1

# both builds in the background, each with its own log and wall time
( t=$(date +%s); MAX_JOBS=8 python3 -c "import exllamav2, exllamav2.ext; print('exllamav2', exllamav2.__version__, 'built')" \
  > "$OUT/build_exllamav2.log" 2>&1; echo "exit $? after $(( $(date +%s) - t )) s" >> "$OUT/build_exllamav2.log" ) < /dev/null &
exl_build=$!
( t=$(date +%s); MAX_JOBS=10 python3 -c "
import torch
from workbench.model.libraries import import_gptqmodel
import_gptqmodel()
from gptqmodel.utils.marlin import prewarm_marlin_extension
print('marlin fp16 built:', prewarm_marlin_extension(torch.float16))" > "$OUT/build_marlin.log" 2>&1
  echo "exit $? after $(( $(date +%s) - t )) s" >> "$OUT/build_marlin.log" ) < /dev/null &
marlin_build=$!

say "writing the synthetic checkpoint"
python3 -m workbench synthetic "$syn" --arch codefuse-34b --layout autogptq_safetensors 2>&1 | tr '\r' '\n' \
  | tail -1 | tee -a "$OUT/machine.txt"
if [ "${PROBE:-1}" = 1 ]; then
  say "probe: the GEMV configurations and the decode attention, per shape"
  timeout 200 python3 benchmarks/gemv_probe.py "$syn" --out "$OUT/probe.json" 2>&1 | grep -v "^\s*$" | tee "$OUT/probe.txt"
fi
if [ -n "${DURING_BUILDS:-}" ]; then
  say "during the builds: $DURING_BUILDS"
  timeout "${DURING_BUILDS_S:-240}" bash -c "$DURING_BUILDS" 2>&1 | grep -v "^\s*$\|%|\|^WARN\|^INFO" \
    | tee "$OUT/during_builds.txt"
fi
say "waiting for the builds"
wait "$exl_build"; tail -1 "$OUT/build_exllamav2.log"
wait "$marlin_build"; tail -1 "$OUT/build_marlin.log"
python3 -m workbench kernels --device cuda --checkpoint "$syn" >> "$OUT/machine.txt" 2>&1
grep -E "^(marlin|exllamav2-engine) " "$OUT/machine.txt"
left=$(( budget - ($(date +%s) - start) ))
# BENCH_ARGS: more bench-peer arguments, e.g. --ladder fused +compile --no-graph-split; PEER=0 skips bench-peer
if [ "${PEER:-1}" = 1 ]; then
  say "bench-peer with ${left} s left"
  python3 -m workbench bench-peer --model "$syn" --device cuda --deadline-s "$left" --out "$OUT/bench_peer.json" \
    ${BENCH_ARGS:-} 2>&1 | tr '\r' '\n' | grep -v "^\s*$\|%|" | tee "$OUT/bench_peer.txt"
fi
if [ -n "${AFTER:-}" ]; then
  left=$(( ${CALL_S:-585} - ($(date +%s) - start) ))
  say "after bench-peer, ${left} s left: $AFTER"
  timeout "$left" bash -c "$AFTER" 2>&1 | tr '\r' '\n' | grep -v "^\s*$\|%|\|^WARN\|^INFO" | tee "$OUT/after.txt"
fi
say "done"
