"""Which decode loop runs when the caller asks for `decode_mode="auto"`, and why.

The rules, each from a measurement:

- On CUDA: "graph" (a static KV cache, each step replayed as a CUDA graph). Its first replay is
  checked against the same step run eagerly (static.py); a kernel whose replay fails that check
  (exllamav2: its launches leave the capturing stream and the replay gives non-finite logits)
  goes on in "static", and the record's note says so. On the H100 with marlin the graph step
  took 14.24 ms against 51.0 ms eager (results/README.md).
- On the CPU, one prompt or a plain batch through `generate`: "eager". On this project's 2-core
  AMD EPYC with the demo model, 64 prompt + 128 new tokens, eager took 6.47 ms per token and
  static 6.96 (results/cpu/overhead_demo_*.txt): static is not faster there.
- On the CPU, a workload of many prompts (`run_workload`): "static", the loop that refills a finished
  row's slot and runs rows of different budgets and seeds together (eager batches cannot: such
  rows run one by one there). On the same 2-core machine, 24 HumanEval prompts each ending at its
  canonical solution's length, in one run (results/cpu/workload_demo.txt): one at a time 5.0 useful
  tokens/s, eager batches of 8 run to their longest row 12.8, the static runner 13.7 / 15.7 / 13.5
  at batch 4 / 8 / 16. The machine was shared (load average 9-12 on 2 cores), so read the runner
  and eager batches as close, and both well ahead of one at a time.
- Beam search (num_beams > 1) runs only in "eager", and so does ExLlamaV2's own engine
  (`kernel="exllamav2-engine"`), whose "eager" is its own loop.
- "fast" (fast.py) is never chosen by "auto": it is asked for by name.
"""

from __future__ import annotations

from ..errors import ConfigError
from ..model.exllamav2_engine import KERNEL as ENGINE_KERNEL
from ..model.exllamav2_engine import is_runner
from .config import DECODE_MODES, DecodeConfig

AUTO = "auto"
DECODE_REQUESTS = (AUTO, *DECODE_MODES)  # what a caller may ask for; DECODE_MODES is what can run

WORKLOAD_CPU_MODE = "static"  # measured: see above (python -m workbench bench-workload --model demo --device cpu)


def _check_requested(mode: str) -> str:
    """`mode` if it is a decode mode or "auto", else a ConfigError naming the allowed values."""
    if mode not in DECODE_REQUESTS:
        raise ConfigError(f"decode_mode={mode!r}: allowed {', '.join(DECODE_REQUESTS)}")
    return mode


def resolve_mode(requested: str, device, config: DecodeConfig, *, workload: bool = False,
                 model=None) -> tuple[str, str]:
    """(the mode to run, why it was chosen): `why` is "" unless `requested` was "auto"."""
    _check_requested(requested)
    if requested != AUTO:
        return requested, ""
    device_type = getattr(device, "type", str(device).split(":")[0])
    if model is not None and is_runner(model):
        return "eager", f"auto: eager (kernel '{ENGINE_KERNEL}' decodes with ExLlamaV2's own loop only)"
    if config.num_beams > 1:
        return "eager", "auto: eager (beam search runs only there)"
    if device_type == "cuda":
        return "graph", "auto: graph on CUDA (its first replay is checked against the eager step)"
    if workload:
        return WORKLOAD_CPU_MODE, (f"auto: {WORKLOAD_CPU_MODE} for a workload on {device_type} "
                                   "(refilled batches; results/cpu/workload_demo.txt)")
    return "eager", f"auto: eager on {device_type} (static is not faster there: results/cpu/overhead_demo_*.txt)"
