"""Generation: how tokens are chosen, the instrumented `generate`, and the loops that run it.

config.py (DecodeConfig, decode modes) -> generate.py (prompts in, records out) -> eager.py
(transformers' generate, watched) or static.py (static KV cache, CUDA graph; the loop that also
drives fast.py's own step and ExLlamaV2's engine) -> record.py.
"""

from .config import DECODE_MODES, STOP_REASONS, DecodeConfig, check_mode
from .fast import FastConfig, set_fast_config
from .generate import generate, generate_ids
from .inputs import input_device, left_pad
from .record import GenerationRecord, TopToken, load_records, records_frame, save_records
from .static import mode_problem

__all__ = ["DECODE_MODES", "STOP_REASONS", "DecodeConfig", "FastConfig", "GenerationRecord", "TopToken", "check_mode",
           "generate", "generate_ids", "input_device", "left_pad", "load_records", "mode_problem", "records_frame",
           "save_records", "set_fast_config"]
