"""`GenerationRecord`: everything measured about one generated sequence, and saving many of them.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from ..cache import atomic_write_json
from ..measure import Latency, current_keys, percentile
from .config import DecodeConfig


@dataclass(frozen=True)
class TopToken:
    """One of the likeliest alternatives at a step."""

    id: int
    piece: str
    logprob: float


@dataclass
class GenerationRecord:
    """Everything measured about one generated sequence, with the context to trust it later."""

    text: str  # the new text, without the prompt, cut before a stop string
    prompt_text: str
    prompt_tokens: int
    token_ids: list[int]  # new tokens, the final eos included when there is one
    new_tokens: int
    token_times_s: list[float]  # when each new token existed, from the start of generation
    ttft_s: float  # time to first token (= token_times_s[0]): prefill plus the first choice
    prefill_s: float  # start to the end of the first forward pass
    logprobs: list[float]  # log-probability of each new token under the model
    top_logprobs: list[list[TopToken]]
    stop_reason: str
    kernel: str | None
    kernel_requested: str | None
    config: DecodeConfig
    format: str
    batch_size: int = 1
    batch_index: int = 0
    warmup_runs: int = 0
    decode_mode: str = "eager"  # what ran: eager (transformers' generate), static, graph or fast (static.py),
    # or exllamav2 (ExLlamaV2's own forward loop, kernel exllamav2-engine)
    decode_mode_requested: str = "eager"
    decode_note: str = ""  # why decode_mode differs from the request, what the graph cost
    attention: str = ""  # the attention that ran (workbench.attention.attention_in_use); "" in older records
    queued_s: float | None = None  # in a workload: its start to this prompt's prefill, where its times count from
    memory: dict = field(default_factory=dict)  # {"load": {...}, "generation": {...}} in GB
    env: dict = field(default_factory=dict)
    model: str | None = None
    checkpoint_hash: str | None = None
    created: str = ""
    # Computed from token_times_s, saved with the record so a reader of its JSON need not:
    token_gaps_s: list[float] = field(init=False)  # the inter-token gaps (one fewer than the tokens)
    token_ms_p50: float | None = field(init=False)  # per-token latency: the gaps' median, in ms
    token_ms_p90: float | None = field(init=False)
    tokens_per_s: float | None = field(init=False)  # tokens after the first over the time they took

    def __post_init__(self):
        t = self.token_times_s
        self.token_gaps_s = [b - a for a, b in zip(t, t[1:])]
        ms = sorted(g * 1e3 for g in self.token_gaps_s)
        self.token_ms_p50 = percentile(ms, 50) if ms else None
        self.token_ms_p90 = percentile(ms, 90) if ms else None
        self.tokens_per_s = len(ms) / (t[-1] - t[0]) if len(t) > 1 and t[-1] > t[0] else None

    def token_latency(self) -> Latency | None:
        """The gaps' whole summary (mean, p50, p90, p99, min, max), None with fewer than two tokens."""
        return Latency.from_values(self.token_gaps_s)

    def headline(self) -> dict:
        """The record's numbers for a notebook's headline (notebook 01)."""
        return {"kernel": self.kernel, "ttft_ms": round(self.ttft_s * 1e3, 2),
                "tokens_per_s": round(self.tokens_per_s or 0, 1),
                "token_ms_p50": round(self.token_ms_p50, 2) if self.token_ms_p50 is not None else None,
                "new_tokens": self.new_tokens, "stop_reason": self.stop_reason}

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["config"] = self.config.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "GenerationRecord":
        """A record from its JSON, this version's or an older one's (results/ keeps both): the
        computed fields, and the old `itl` and `decode_tokens_per_s`, are computed again."""
        computed = {f.name for f in dataclasses.fields(cls) if not f.init} | {"itl"}
        d = {k: v for k, v in current_keys(d).items() if k not in computed}
        d["config"] = DecodeConfig.from_dict(d["config"])
        d["top_logprobs"] = [[TopToken(**t) for t in step] for step in d.get("top_logprobs", [])]
        return cls(**d)

    def save(self, path) -> Path:
        """Write this record as JSON, atomically."""
        atomic_write_json(Path(path), self.to_dict())
        return Path(path)

    @classmethod
    def load(cls, path) -> "GenerationRecord":
        return cls.from_dict(json.loads(Path(path).read_text()))


def save_records(path, records: Sequence[GenerationRecord]) -> Path:
    atomic_write_json(Path(path), [r.to_dict() for r in records])
    return Path(path)


def load_records(path) -> list[GenerationRecord]:
    return [GenerationRecord.from_dict(d) for d in json.loads(Path(path).read_text())]


def records_frame(records: Sequence[GenerationRecord]):
    """One row per record with its scalar measurements and settings: for tables and plots."""
    import pandas as pd

    rows = []
    for r in records:
        row = {
            "kernel": r.kernel, "format": r.format, "batch_size": r.batch_size, "batch_index": r.batch_index,
            "prompt_tokens": r.prompt_tokens, "new_tokens": r.new_tokens, "ttft_s": r.ttft_s,
            "prefill_s": r.prefill_s, "token_ms_p50": r.token_ms_p50, "token_ms_p90": r.token_ms_p90,
            "tokens_per_s": r.tokens_per_s, "stop_reason": r.stop_reason, "decode_mode": r.decode_mode,
            "attention": r.attention,
            "mean_logprob": sum(r.logprobs) / len(r.logprobs) if r.logprobs else None,
            "device": r.env.get("device_name"),
        }
        row.update({f"cfg_{k}": v for k, v in r.config.to_dict().items() if k != "stop"})
        gen_mem = r.memory.get("generation", {})
        row["peak_allocated_gb"] = gen_mem.get("peak_allocated_gb")
        row["device_used_gb"] = gen_mem.get("device_used_gb")  # the driver's total - free, after generating
        row["peak_rss_gb"] = gen_mem.get("peak_rss_gb")
        rows.append(row)
    return pd.DataFrame(rows)
