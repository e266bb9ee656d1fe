"""Memory readings: the allocator's figures and, beside them, the device-wide use from the driver."""

import pytest
import torch

from workbench.measure import MemorySnapshot, memory_snapshot

GB = 1024**3


def test_cpu_readings_have_rss_and_no_device_figures():
    snap = memory_snapshot("cpu")
    assert snap.rss_gb > 0 and snap.peak_rss_gb >= snap.rss_gb * 0.5
    assert snap.device_used_gb is None and snap.allocated_gb is None and snap.outside_allocator_gb is None


def test_a_cuda_reading_takes_total_minus_free_from_the_driver(monkeypatch):
    # No GPU here: the CUDA calls are replaced by what a driver and allocator would report.
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (60 * GB, 80 * GB))
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: 17 * GB)
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device=None: 18 * GB)
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: 19 * GB)
    monkeypatch.setattr(torch.cuda, "max_memory_reserved", lambda device=None: 19.5 * GB)
    snap = memory_snapshot("cuda:0")
    assert (snap.device, snap.device_used_gb, snap.device_total_gb) == ("cuda:0", 20, 80)
    assert (snap.allocated_gb, snap.reserved_gb, snap.peak_allocated_gb, snap.peak_reserved_gb) == (17, 18, 19, 19.5)
    assert snap.outside_allocator_gb == 2  # the context and workspaces the allocator leaves out
    assert snap.to_dict()["device_used_gb"] == 20


def test_old_readings_without_device_figures_still_load():
    old = {"device": "cuda:0", "allocated_gb": 1.0, "reserved_gb": 2.0, "peak_allocated_gb": 1.5,
           "peak_reserved_gb": 2.0, "rss_gb": 3.0, "peak_rss_gb": 3.0}
    snap = MemorySnapshot(**old)
    assert snap.device_used_gb is None and snap.outside_allocator_gb is None


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU: the driver's reading is checked against it")
def test_on_a_gpu_the_device_figure_covers_the_allocator():
    x = torch.empty(256 * 1024**2, dtype=torch.uint8, device="cuda")
    snap = memory_snapshot("cuda")
    assert snap.device_used_gb >= snap.reserved_gb >= x.numel() / GB
    del x
