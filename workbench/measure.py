"""All timing and memory measurement lives here.

On CUDA a `Clock` records events on the current stream and reads them once, at the end, with
a single synchronize: marking a step adds no host-device synchronization. Elsewhere it reads
`perf_counter`, which is exact there because CPU work is synchronous.
"""

from __future__ import annotations

import math
import os
import resource
import time
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Latency:
    """Summary of a list of durations, in milliseconds."""

    n: int
    mean_ms: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    min_ms: float
    max_ms: float

    @classmethod
    def from_values(cls, values_s: list[float]) -> "Latency | None":
        if not values_s:
            return None
        ms = sorted(v * 1e3 for v in values_s)
        return cls(n=len(ms), mean_ms=sum(ms) / len(ms), p50_ms=percentile(ms, 50),
                   p90_ms=percentile(ms, 90), p99_ms=percentile(ms, 99), min_ms=ms[0], max_ms=ms[-1])

    def to_dict(self) -> dict:
        return asdict(self)


def percentile(sorted_values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default method)."""
    if not sorted_values:
        return math.nan
    pos = (len(sorted_values) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def median(values) -> float:
    """The median of repeated measurements: the middle value, or the mean of the two middle ones
    (the same number as `Latency.p50_ms`, numpy's and `statistics.median`'s). NaN for none."""
    return percentile(sorted(values), 50)


# --- one key per metric -----------------------------------------------------------------------
# Every saved number has one name, from a record to a study row, a headline, a DataFrame column
# and the JSON on disk:
#   token_ms_p50, token_ms_p90   per-token latency: the gaps between new tokens, in ms
#   tokens_per_s                 new tokens after the first over the time they took
#   prefill_tokens_per_s         prompt tokens over one plain forward pass
#   floor_share                  the bandwidth floor over the measured step (1.0 = at the floor)
#   decode_mode                  the decode loop that ran (eager, static, graph)
# Results saved before these names (results/) used the keys on the left; readers of saved rows
# pass them through `current_keys`.
OLD_KEYS = {
    "itl_p50_ms": "token_ms_p50", "decode_ms_p50": "token_ms_p50", "decode_ms_per_step": "token_ms_p50",
    "itl_p90_ms": "token_ms_p90", "decode_ms_p90": "token_ms_p90",
    "first_run_ms_p50": "first_run_token_ms_p50",
    "decode_tokens_per_s": "tokens_per_s", "decode_tok_s": "tokens_per_s",
    "prefill_tok_s": "prefill_tokens_per_s", "gpu_kernel_ms": "gpu_ops_ms",
    "mode": "decode_mode", "mode_requested": "decode_mode_requested",
    # CUDA kernel launches are "launches" and "GPU ops": "kernel" is the GPTQ kernel only
    "kernels_per_step": "launches_per_step", "top_kernels": "top_gpu_ops", "kernel_counts": "launches_by_op",
    "kernels_static_kernels_per_step": "launch_check_static_launches_per_step",
    "kernels_graph_kernels_per_step": "launch_check_graph_launches_per_step",
    "kernels_qgemm_launches_static": "launch_check_qgemm_launches_static",
    "kernels_qgemm_launches_graph": "launch_check_qgemm_launches_graph",
    "kernels_qgemm_kernel_names": "launch_check_qgemm_op_names",
    "kernels_missing": "launch_check_missing", "kernels_ok": "launch_check_ok",
}


def current_keys(row: dict) -> dict:
    """`row` with every old metric key renamed (a key present under both names keeps the new one)."""
    out = {}
    for key, value in row.items():
        new = OLD_KEYS.get(key, key)
        if new not in out or new == key:
            out[new] = value
    return out


class Clock:
    """Marks points in time on one device; `seconds()` turns the marks into offsets from the first."""

    def __init__(self, device):
        import torch

        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"
        self.marks: list = []

    def mark(self) -> int:
        """Record 'now' (on CUDA: when the GPU reaches this point of the stream); returns its index."""
        if self.cuda:
            import torch

            event = torch.cuda.Event(enable_timing=True)
            event.record()
            self.marks.append(event)
        else:
            self.marks.append(time.perf_counter())
        return len(self.marks) - 1

    def seconds(self) -> list[float]:
        """Offsets of every mark from the first, in seconds (synchronizes once on CUDA)."""
        if not self.marks:
            return []
        if self.cuda:
            self.marks[-1].synchronize()
            first = self.marks[0]
            return [first.elapsed_time(e) / 1e3 for e in self.marks]
        return [t - self.marks[0] for t in self.marks]

    def seconds_of(self, indices: list[int]) -> list[float]:
        """Offsets of some marks from the first, in seconds, once the work before them is done (on
        CUDA: after a synchronization the caller made); reading a few marks costs no sync."""
        if self.cuda:
            first = self.marks[0]
            return [first.elapsed_time(self.marks[i]) / 1e3 for i in indices]
        return [self.marks[i] - self.marks[0] for i in indices]


class NullClock:
    """A `Clock` that records nothing: the uninstrumented baseline that bench-overhead compares with."""

    def __init__(self):
        self.count = 0

    def mark(self) -> int:
        self.count += 1
        return self.count - 1

    def seconds(self) -> list[float]:
        return [0.0] * self.count


@dataclass(frozen=True)
class MemorySnapshot:
    """Memory in GB: on a GPU the CUDA allocator's statistics and, beside them, the device-wide use
    the driver reports (total minus free: the CUDA context, library workspaces, anything outside the
    allocator and other processes on the card, as nvidia-smi and the model card count); the
    process's RSS everywhere."""

    device: str
    allocated_gb: float | None = None
    reserved_gb: float | None = None
    peak_allocated_gb: float | None = None
    peak_reserved_gb: float | None = None
    rss_gb: float | None = None
    peak_rss_gb: float | None = None  # the process's high-water mark since it started
    device_used_gb: float | None = None  # total - free, from the driver (cudaMemGetInfo), at this moment
    device_total_gb: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def outside_allocator_gb(self) -> float | None:
        """Device-wide use the allocator does not hold: context, workspaces, other processes."""
        if self.device_used_gb is None or self.reserved_gb is None:
            return None
        return self.device_used_gb - self.reserved_gb


def reset_peak_memory(device) -> None:
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def memory_snapshot(device) -> MemorySnapshot:
    import torch

    device = torch.device(device)
    rss, peak_rss = process_rss_gb()
    if device.type == "cuda":
        gb = 1024**3
        free, total = torch.cuda.mem_get_info(device)
        return MemorySnapshot(
            device=str(device),
            allocated_gb=torch.cuda.memory_allocated(device) / gb,
            reserved_gb=torch.cuda.memory_reserved(device) / gb,
            peak_allocated_gb=torch.cuda.max_memory_allocated(device) / gb,
            peak_reserved_gb=torch.cuda.max_memory_reserved(device) / gb,
            rss_gb=rss, peak_rss_gb=peak_rss,
            device_used_gb=(total - free) / gb, device_total_gb=total / gb,
        )
    return MemorySnapshot(device=str(device), rss_gb=rss, peak_rss_gb=peak_rss)


def process_rss_gb() -> tuple[float, float]:
    """(current RSS, peak RSS) of this process in GB."""
    import psutil

    rss = psutil.Process(os.getpid()).memory_info().rss / 1024**3
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # Linux reports KiB
    return rss, peak


def synchronize(device) -> None:
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_s(fn, device) -> tuple[object, float]:
    """Run `fn()` and return (its result, wall seconds), synchronizing around it on CUDA."""
    synchronize(device)
    t0 = time.perf_counter()
    out = fn()
    synchronize(device)
    return out, time.perf_counter() - t0


def measure_copy_bandwidth_gbps(device, size_mb: int = 1024, repeats: int = 10) -> float | None:
    """Device-to-device copy bandwidth, counting bytes read plus bytes written (GB/s).

    The floor for one decode step is the bytes it must read over this number (docs/model-facts.md).
    Returns None on the CPU, where the question does not apply the same way.
    """
    import torch

    device = torch.device(device)
    if device.type != "cuda":
        return None
    n = size_mb * 1024**2 // 4
    src = torch.randn(n, device=device)
    dst = torch.empty_like(src)
    dst.copy_(src)  # warm up: allocation and the first launch stay out of the number
    clock = Clock(device)
    clock.mark()
    for _ in range(repeats):
        dst.copy_(src)
    clock.mark()
    elapsed = clock.seconds()[-1]
    return 2 * src.numel() * 4 * repeats / elapsed / 1e9
