"""The context every result carries: device, driver, library versions, Python, CPU."""

from __future__ import annotations

import functools
import platform
from importlib import metadata


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


@functools.lru_cache(maxsize=None)
def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def collect_env(device="cpu") -> dict:
    """A JSON-ready description of where a result was obtained."""
    import os

    import torch

    device = torch.device(device)
    env = {
        "device": str(device),
        "device_name": cpu_name(),
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "transformers": _version("transformers"),
        "gptqmodel": _version("gptqmodel"),
        "auto_gptq": _version("auto-gptq") or _version("auto_gptq"),
        "workbench": _version("codefuse-workbench"),
        "cuda": torch.version.cuda,
        "driver": None,
        "gpu_count": torch.cuda.device_count() if torch.cuda.is_available() else 0,
    }
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        props = torch.cuda.get_device_properties(index)
        env.update(device_name=props.name, compute_capability=f"{props.major}.{props.minor}",
                   gpu_memory_gb=round(props.total_memory / 1024**3, 2), driver=_driver_version())
    return env


@functools.lru_cache(maxsize=None)
def _driver_version() -> str | None:
    import subprocess

    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10)
        return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None
    except (OSError, subprocess.TimeoutExpired):
        return None
