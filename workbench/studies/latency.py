"""The latency curves behind notebook 05: TTFT, per-token latency, batch size, memory.

`run_latency_study(loaded, LatencyStudyConfig(...))` runs them all (the config's fields are the
notebook's parameters); each curve is also a function of its own.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from ..errors import ConfigError
from ..generation.config import DECODE_MODES, DecodeConfig
from ..generation.generate import generate_ids
from ..generation.inputs import input_device
from ..generation.record import GenerationRecord
from ..generation.static import mode_problem
from ..measure import current_keys, measure_copy_bandwidth_gbps, median, memory_snapshot, reset_peak_memory
from ..prompts.encoding import prompt_ids_of_length
from .floor import floor_share, kv_bytes_per_token, step_floor_ms

# --- latency curves ---------------------------------------------------------------------------

def first_token_records(loaded, ids: list[int], repeats: int = 3) -> list:
    """`repeats` one-token generations of one prompt, the first after one warm-up: their records."""
    config = DecodeConfig.greedy(max_new_tokens=1)
    return [generate_ids(loaded, [ids], config, warmup=1 if r == 0 else 0, logprobs=False, decode_mode="eager")[0]
            for r in range(repeats)]


def ttft_curve(loaded, lengths: list[int], repeats: int = 3) -> list[dict]:
    """Time to first token against prompt length (median of `repeats`, after one warm-up)."""
    rows = []
    for n in lengths:
        recs = first_token_records(loaded, prompt_ids_of_length(loaded.tokenizer, n), repeats)
        rows.append({"prompt_tokens": n, "ttft_ms": median(r.ttft_s for r in recs) * 1e3,
                     "prefill_ms": median(r.prefill_s for r in recs) * 1e3})
    return rows


def long_generation(loaded, prompt_tokens: int, new_tokens: int, decode_mode: str = "eager"):
    """One greedy generation forced to `new_tokens`: per-token latency against position."""
    ids = prompt_ids_of_length(loaded.tokenizer, prompt_tokens)
    config = DecodeConfig.forced(new_tokens)
    return generate_ids(loaded, [ids], config, warmup=1, logprobs=False, decode_mode=decode_mode)[0]


def batch_curve(loaded, batch_sizes: list[int], prompt_tokens: int = 64, new_tokens: int = 32,
                decode_mode: str = "eager", bandwidth_gbps: float | None = None) -> list[dict]:
    """Per-token latency (one decode step of the whole batch) and tokens/s of all sequences
    together against batch size, and the step's floor (the cache midway through the run) with the
    share of it reached, when a bandwidth is given."""
    ids = prompt_ids_of_length(loaded.tokenizer, prompt_tokens)
    config = DecodeConfig.forced(new_tokens)
    rows = []
    for b in batch_sizes:
        rec = generate_ids(loaded, [ids] * b, config, warmup=1, logprobs=False, decode_mode=decode_mode)[0]
        step_ms = rec.token_ms_p50 if rec.token_ms_p50 is not None else float("nan")
        floor = step_floor_ms(loaded, prompt_tokens + new_tokens / 2, b, bandwidth_gbps)
        rows.append({"batch_size": b, "decode_mode": rec.decode_mode, "token_ms_p50": step_ms,
                     "tokens_per_s": b * 1e3 / step_ms, "token_ms_p90": rec.token_ms_p90, "floor_ms": floor,
                     "floor_share": floor_share(floor, step_ms)})
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
        # A sweep over context length may pass the card's 4K (up to the model's positions) on purpose.
        generate_ids(loaded, [ids], DecodeConfig.forced(new_tokens), logprobs=False, decode_mode="eager",
                     max_context=n + new_tokens)
        snap = memory_snapshot(device)
        rows.append({"context_tokens": n + new_tokens, "kv_cache_gb": kv * (n + new_tokens) / 1024**3,
                     "peak_allocated_gb": snap.peak_allocated_gb, "peak_reserved_gb": snap.peak_reserved_gb})
    return rows


# The model card's int4 memory cells (GB), measured by the card on its GPU: whole-GPU figures
# (docs/model-facts.md).
CARD_INT4_MEMORY_GB = {"idle": 19.09, "2048+1024": 22.19, "1024+2048": 20.78}


def card_memory_cells(loaded) -> list[dict]:
    """The card's cells measured here: idle after load, encode 2048 + generate 1024, and
    encode 1024 + generate 2048, each beside the card's number. Meaningful on a GPU.

    The card's figures are the whole GPU's, so `measured_device_gb` is what compares with them:
    the device-wide use the driver reports (total - free). After a cell it is read with the
    allocator still holding the cell's blocks; the allocator's cache is emptied before each cell,
    so one cell's blocks do not count in the next. Device-wide figures include anything else
    running on the card. The allocator's peaks stand beside it: they leave out the CUDA context
    and library workspaces."""
    import torch

    memory = loaded.load_record.memory or {}
    rows = [{"cell": "idle", "card_gb": CARD_INT4_MEMORY_GB["idle"], "measured_device_gb": memory.get("device_used_gb"),
             "measured_allocated_gb": memory.get("allocated_gb"), "measured_reserved_gb": memory.get("reserved_gb")}]
    device = input_device(loaded.model)
    for prompt, new in ((2048, 1024), (1024, 2048)):
        ids = prompt_ids_of_length(loaded.tokenizer, prompt)
        if torch.device(device).type == "cuda":
            torch.cuda.empty_cache()
        reset_peak_memory(device)
        rec = generate_ids(loaded, [ids], DecodeConfig.forced(new), logprobs=False, decode_mode="eager")[0]
        snap = memory_snapshot(device)
        rows.append({"cell": f"{prompt}+{new}", "card_gb": CARD_INT4_MEMORY_GB[f"{prompt}+{new}"],
                     "measured_device_gb": snap.device_used_gb, "measured_allocated_gb": snap.peak_allocated_gb,
                     "measured_reserved_gb": snap.peak_reserved_gb, "token_ms_p50": rec.token_ms_p50})
    return rows


def has_card_shapes(loaded) -> bool:
    """Whether the loaded model has CodeFuse-34B's shapes (the real or the synthetic checkpoint)."""
    cfg = loaded.model.config
    return (cfg.hidden_size, cfg.num_hidden_layers) == (8192, 48)


# --- the whole notebook ----------------------------------------------------------------------

@dataclass(frozen=True)
class LatencyStudyConfig:
    """What notebook 05 measures: one field per entry of its parameters cell (MODEL, KERNEL,
    DEVICE and OUTPUT_DIR apart), same names in lower case."""

    prompt_lengths: tuple[int, ...] = (16, 64, 256)  # TTFT against these prompt lengths (tokens)
    long_prompt: int = 32  # prompt tokens of the long generation
    long_new_tokens: int = 128  # its length
    batch_sizes: tuple[int, ...] = (1, 2, 4)
    batch_new_tokens: int = 16
    contexts: tuple[int, ...] = (128, 512, 1024)  # memory against context (prompt tokens)
    card_cells: bool | str = "auto"  # the card's memory cells; "auto": on a GPU with the 34B shapes
    decode_modes: tuple[str, ...] = ("eager", "static")  # the long generation and the batch curve run in each

    def __post_init__(self):
        def bad(name, allowed):
            raise ConfigError(f"LatencyStudyConfig.{name}={getattr(self, name)!r} is invalid: allowed {allowed}")

        for name in ("prompt_lengths", "batch_sizes", "contexts", "decode_modes"):
            value = getattr(self, name)
            if isinstance(value, list):  # lists from a notebook's parameters cell
                object.__setattr__(self, name, tuple(value))
            if not (isinstance(getattr(self, name), tuple) and getattr(self, name)):
                bad(name, "a non-empty list")
        for name in ("prompt_lengths", "batch_sizes", "contexts"):
            if not all(isinstance(n, int) and n >= 1 for n in getattr(self, name)):
                bad(name, "a list of integers >= 1")
        for name in ("long_prompt", "batch_new_tokens"):
            if not (isinstance(getattr(self, name), int) and getattr(self, name) >= 1):
                bad(name, "an integer >= 1")
        if not (isinstance(self.long_new_tokens, int) and self.long_new_tokens >= 2):
            bad("long_new_tokens", "an integer >= 2 (latencies are the gaps between tokens)")
        if self.card_cells not in (True, False, "auto"):
            bad("card_cells", '"auto", True or False')
        if any(m not in DECODE_MODES for m in self.decode_modes):
            bad("decode_modes", f"a list of {', '.join(DECODE_MODES)}")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class LatencyStudy:
    """Notebook 05's curves, with what is needed to read them: the bandwidth and each long
    generation's floor. `longs` maps each decode mode asked for to its record (which says what ran)."""

    ttft: list[dict]
    longs: dict[str, GenerationRecord]
    batch: list[dict]
    memory: list[dict]
    card_cells: list[dict] | None = None
    bandwidth_gbps: float | None = None
    long_floor_ms: float | None = None  # one step of the long generation, its cache midway
    skipped_modes: dict = field(default_factory=dict)  # decode modes asked for that cannot run here, and why
    config: dict = field(default_factory=dict)

    @property
    def records(self) -> list[GenerationRecord]:
        return list(self.longs.values())

    def mode_labels(self) -> dict[str, str]:
        """Each mode asked for, as the tables and the headline name it: "graph (ran static)" where refused."""
        return {m: m if r.decode_mode == m else f"{m} (ran {r.decode_mode})" for m, r in self.longs.items()}

    def long_floor_shares(self) -> dict[str, float | None]:
        return {m: floor_share(self.long_floor_ms, r.token_ms_p50) for m, r in self.longs.items()}

    def headline(self) -> dict:
        """The numbers notebook 05 puts in the report's index."""
        label, shares = self.mode_labels(), self.long_floor_shares()
        first = next(iter(self.longs.values()), None)
        modes = [r.get("decode_mode") for r in self.batch]
        first_mode = [r for r in self.batch if r.get("decode_mode") == modes[0]] if self.batch else []

        def r3(x):
            return round(x, 3) if x is not None else None

        return {"ttft_ms_shortest": r3(self.ttft[0]["ttft_ms"]) if self.ttft else None,
                "ttft_ms_longest": r3(self.ttft[-1]["ttft_ms"]) if self.ttft else None,
                "token_ms_p50": r3(first.token_ms_p50) if first else None,
                "token_ms_p50_by_mode": {label[m]: r3(r.token_ms_p50) for m, r in self.longs.items()},
                "bandwidth_gbps": round(self.bandwidth_gbps, 1) if self.bandwidth_gbps else None,
                "floor_share_by_mode": {label[m]: r3(shares[m]) for m in self.longs},
                "batch_tokens_per_s_gain": round(first_mode[-1]["tokens_per_s"] / first_mode[0]["tokens_per_s"], 2)
                if first_mode else None}

    def data(self) -> dict:
        """What notebook 05 saves under "data" (`from_saved` reads it back)."""
        first = next(iter(self.longs.values()), None)
        return {"ttft": self.ttft, "batch": self.batch, "memory": self.memory, "card_cells": self.card_cells,
                "bandwidth_gbps": self.bandwidth_gbps, "long_token_times_s": first.token_times_s if first else [],
                "long_floor_ms": self.long_floor_ms,
                "long_by_mode": {m: {"decode_mode": r.decode_mode, "note": r.decode_note,
                                     "token_times_s": r.token_times_s} for m, r in self.longs.items()},
                "skipped_modes": self.skipped_modes, "config": self.config}

    @classmethod
    def from_saved(cls, saved: dict) -> "LatencyStudy":
        """The study from a saved 05_latency_curves.json, this version's or an older one's
        (results/): old metric keys are renamed and the long generations come from its records."""
        data = saved.get("data") or {}
        records = [GenerationRecord.from_dict(r) for r in saved.get("records") or []]
        rows = {name: [current_keys(r) for r in data.get(name) or []] for name in ("ttft", "batch", "memory")}
        return cls(ttft=rows["ttft"], batch=rows["batch"], memory=rows["memory"],
                   longs={r.decode_mode_requested: r for r in records},
                   card_cells=[current_keys(r) for r in data["card_cells"]] if data.get("card_cells") else None,
                   bandwidth_gbps=data.get("bandwidth_gbps", (saved.get("headline") or {}).get("bandwidth_gbps")),
                   long_floor_ms=data.get("long_floor_ms"), skipped_modes=data.get("skipped_modes") or {},
                   config=data.get("config") or {})


def run_latency_study(loaded, config: LatencyStudyConfig = LatencyStudyConfig(), log=print) -> LatencyStudy:
    """Every curve of notebook 05 on one loaded model. On a GPU the copy bandwidth is measured
    first, so every decode figure also comes as a share of its floor. A decode mode that cannot
    run on this model (a graph on the CPU, any but eager on ExLlamaV2's engine) is left out and
    named in `skipped_modes` with the reason."""
    skipped = {m: problem for m in config.decode_modes if (problem := mode_problem(loaded, m))}
    modes = [m for m in config.decode_modes if m not in skipped]
    log(f"decode modes not run: {skipped}" if skipped else f"decode modes: {', '.join(modes)}")
    bandwidth = measure_copy_bandwidth_gbps(loaded.device) if str(loaded.device).startswith("cuda") else None
    log(f"copy bandwidth {bandwidth:.0f} GB/s: decode figures are also shares of the floor" if bandwidth
        else "no GPU: no floor")
    ttft = ttft_curve(loaded, list(config.prompt_lengths))
    longs = {m: long_generation(loaded, config.long_prompt, config.long_new_tokens, decode_mode=m) for m in modes}
    batch = [row for m in modes
             for row in batch_curve(loaded, list(config.batch_sizes), new_tokens=config.batch_new_tokens,
                                    decode_mode=m, bandwidth_gbps=bandwidth)]
    memory = memory_curve(loaded, list(config.contexts))
    on_gpu = str(loaded.device).startswith("cuda")
    cells = config.card_cells is True or (config.card_cells == "auto" and on_gpu and has_card_shapes(loaded))
    return LatencyStudy(ttft=ttft, longs=longs, batch=batch, memory=memory,
                        card_cells=card_memory_cells(loaded) if cells else None, bandwidth_gbps=bandwidth,
                        long_floor_ms=step_floor_ms(loaded, config.long_prompt + config.long_new_tokens / 2, 1,
                                                    bandwidth),
                        skipped_modes=skipped, config=config.to_dict())
