"""The latency curves behind notebook 05: TTFT, per-token latency, batch size, memory.
"""

from __future__ import annotations

from ..generation.config import DecodeConfig
from ..generation.generate import generate_ids
from ..generation.inputs import input_device
from ..measure import memory_snapshot, reset_peak_memory
from ..prompts.encoding import prompt_ids_of_length
from .floor import kv_bytes_per_token, step_floor_ms

# --- latency curves ---------------------------------------------------------------------------

def first_token_records(loaded, ids: list[int], repeats: int = 3) -> list:
    """`repeats` one-token generations of one prompt, the first after one warm-up: their records."""
    config = DecodeConfig.greedy(max_new_tokens=1)
    return [generate_ids(loaded, [ids], config, warmup=1 if r == 0 else 0, logprobs=False)[0] for r in range(repeats)]


def ttft_curve(loaded, lengths: list[int], repeats: int = 3) -> list[dict]:
    """Time to first token against prompt length (median of `repeats`, after one warm-up)."""
    rows = []
    for n in lengths:
        recs = first_token_records(loaded, prompt_ids_of_length(loaded.tokenizer, n), repeats)
        ttfts = sorted(r.ttft_s for r in recs)
        rows.append({"prompt_tokens": n, "ttft_ms": ttfts[len(ttfts) // 2] * 1e3,
                     "prefill_ms": sorted(r.prefill_s for r in recs)[len(recs) // 2] * 1e3})
    return rows


def long_generation(loaded, prompt_tokens: int, new_tokens: int, decode_mode: str = "eager"):
    """One greedy generation forced to `new_tokens`: per-token latency against position."""
    ids = prompt_ids_of_length(loaded.tokenizer, prompt_tokens)
    config = DecodeConfig.forced(new_tokens)
    return generate_ids(loaded, [ids], config, warmup=1, logprobs=False, decode_mode=decode_mode)[0]


def batch_curve(loaded, batch_sizes: list[int], prompt_tokens: int = 64, new_tokens: int = 32,
                decode_mode: str = "eager", bandwidth_gbps: float | None = None) -> list[dict]:
    """Decode ms per step and tokens/s against batch size, and the step's floor (the cache
    midway through the run) with the share of it reached, when a bandwidth is given."""
    ids = prompt_ids_of_length(loaded.tokenizer, prompt_tokens)
    config = DecodeConfig.forced(new_tokens)
    rows = []
    for b in batch_sizes:
        rec = generate_ids(loaded, [ids] * b, config, warmup=1, logprobs=False, decode_mode=decode_mode)[0]
        step_ms = rec.itl.p50_ms if rec.itl else float("nan")
        floor = step_floor_ms(loaded, prompt_tokens + new_tokens / 2, b, bandwidth_gbps)
        rows.append({"batch_size": b, "mode": rec.decode_mode, "decode_ms_per_step": step_ms, "tokens_per_s": b * 1e3 / step_ms,
                     "itl_p90_ms": rec.itl.p90_ms if rec.itl else None, "floor_ms": floor,
                     "floor_share": floor / step_ms if floor and step_ms == step_ms else None})
    return rows


def memory_curve(loaded, contexts: list[int], new_tokens: int = 8) -> list[dict]:
    """Peak GPU memory against context length (prompt + new tokens). On the CPU the allocator
    keeps no peak that can be reset, so only the KV cache's computed size is reported."""

    device = input_device(loaded.model)
    kv = kv_bytes_per_token(loaded.model.config)
    rows = []
    for n in contexts:
        ids = prompt_ids_of_length(loaded.tokenizer, n)
        reset_peak_memory(device)
        config = DecodeConfig.forced(new_tokens)
        generate_ids(loaded, [ids], config, logprobs=False)
        snap = memory_snapshot(device)
        rows.append({"context_tokens": n + new_tokens, "kv_cache_gb": kv * (n + new_tokens) / 1024**3,
                     "peak_allocated_gb": snap.peak_allocated_gb, "peak_reserved_gb": snap.peak_reserved_gb})
    return rows


# The model card's int4 memory cells (GB), measured by the card on its GPU.
CARD_INT4_MEMORY_GB = {"idle": 19.09, "2048+1024": 22.19, "1024+2048": 20.78}


def card_memory_cells(loaded) -> list[dict]:
    """The card's cells measured here: idle after load, encode 2048 + generate 1024, and
    encode 1024 + generate 2048, each beside the card's number. Meaningful on a GPU."""
    rows = [{"cell": "idle", "measured_allocated_gb": (loaded.load_record.memory or {}).get("allocated_gb"),
             "measured_reserved_gb": (loaded.load_record.memory or {}).get("reserved_gb"),
             "card_gb": CARD_INT4_MEMORY_GB["idle"]}]

    device = input_device(loaded.model)
    for prompt, new in ((2048, 1024), (1024, 2048)):
        ids = prompt_ids_of_length(loaded.tokenizer, prompt)
        reset_peak_memory(device)
        config = DecodeConfig.forced(new)
        rec = generate_ids(loaded, [ids], config, logprobs=False)[0]
        snap = memory_snapshot(device)
        rows.append({"cell": f"{prompt}+{new}", "measured_allocated_gb": snap.peak_allocated_gb,
                     "measured_reserved_gb": snap.peak_reserved_gb, "card_gb": CARD_INT4_MEMORY_GB[f"{prompt}+{new}"],
                     "decode_ms_p50": rec.itl.p50_ms if rec.itl else None})
    return rows
