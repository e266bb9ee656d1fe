"""Generation: how tokens are chosen, the instrumented `generate`, and the loops that run it.

config.py (DecodeConfig, decode modes) -> generate.py (prompts in, records out) -> eager.py
(transformers' generate, watched) or static.py (static KV cache, CUDA graph; the loop that also
drives fast.py's own step and ExLlamaV2's engine) -> record.py.
modes.py picks the loop for decode_mode="auto"; workload.py runs many prompts in refilled
batches (slots.py: a cache whose rows start at different times; sampling.py: per-row choices).
"""

from .config import DECODE_MODES, STOP_REASONS, DecodeConfig, check_mode
from .fast import FastConfig, set_fast_config
from .generate import generate, generate_ids
from .inputs import input_device, left_pad
from .modes import AUTO, DECODE_REQUESTS, resolve_mode
from .record import GenerationRecord, TopToken, load_records, records_frame, save_records
from .static import mode_problem
from .workload import WorkItem, WorkloadConfig, run_workload

__all__ = ["AUTO", "DECODE_MODES", "DECODE_REQUESTS", "STOP_REASONS", "DecodeConfig", "FastConfig", "GenerationRecord",
           "TopToken", "WorkItem", "WorkloadConfig", "check_mode", "generate", "generate_ids", "input_device",
           "left_pad", "load_records", "mode_problem", "records_frame", "resolve_mode", "run_workload", "save_records",
           "set_fast_config"]
