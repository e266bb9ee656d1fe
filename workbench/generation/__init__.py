"""Generation: how tokens are chosen, the instrumented `generate`, and the loops that run it.

config.py (DecodeConfig, decode modes) -> generate.py (prompts in, records out) -> eager.py
(transformers' generate, watched) or static.py (static KV cache, CUDA graph) -> record.py.
"""

from .config import DECODE_MODES, STOP_REASONS, DecodeConfig, check_mode
from .generate import generate, generate_ids
from .inputs import input_device, left_pad
from .record import GenerationRecord, TopToken, load_records, records_frame, save_records

__all__ = ["DECODE_MODES", "STOP_REASONS", "DecodeConfig", "GenerationRecord", "TopToken", "check_mode", "generate",
           "generate_ids", "input_device", "left_pad", "load_records", "records_frame", "save_records"]
