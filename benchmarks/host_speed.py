"""How fast is this machine's host at what eager decoding asks of it? One JSON line.

An eager decode step of the 34B shapes is host-bound (about 2000 kernel launches, each from
Python through torch's dispatcher), so two calls on the same kind of GPU can differ by half
when their hosts differ. benchmarks/h100.sh writes this beside nvidia-smi in machine.txt, so
every call's numbers can be read against its host: a pure-Python loop, and the host time of one
small torch op on the device (launch and dispatch; the op itself is tiny).

    python benchmarks/host_speed.py [--device cuda]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time


def python_loop_ms(n: int = 2_000_000, repeats: int = 5) -> float:
    """Median ms of a fixed pure-Python loop."""
    samples = []
    for _ in range(repeats):
        t = time.perf_counter()
        total = 0
        for i in range(n):
            total += i & 7
        samples.append((time.perf_counter() - t) * 1e3)
    return statistics.median(samples)


def op_launch_us(device: str, ops: int = 20_000, repeats: int = 5) -> float:
    """Median host µs per small torch op issued on `device` (the loop is timed, then synchronized)."""
    import torch

    x = torch.zeros(16, device=device)
    for _ in range(1000):  # warm the dispatcher and the allocator
        x.add_(1)
    samples = []
    for _ in range(repeats):
        if device.startswith("cuda"):
            torch.cuda.synchronize(device)
        t = time.perf_counter()
        for _ in range(ops):
            x.add_(1)
        samples.append((time.perf_counter() - t) * 1e6 / ops)
        if device.startswith("cuda"):
            torch.cuda.synchronize(device)
    return statistics.median(samples)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    args = parser.parse_args(argv)
    print(json.dumps({"host_python_loop_ms": round(python_loop_ms(), 1), "device": args.device,
                      "host_us_per_small_op": round(op_launch_us(args.device), 2)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
