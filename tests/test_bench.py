"""`python -m workbench bench-overhead` and the load-path benchmark on the CPU: the numbers are
the GPU's business (results/h100/); here, that the comparisons are like with like and complete."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from workbench.errors import ConfigError
from workbench.measure import NullClock
from workbench.studies.overhead import VARIANTS, format_overhead, marking_cost_us, measure_overhead

REPO = Path(__file__).resolve().parents[1]


def test_the_null_clock_counts_marks_and_records_no_time():
    clock = NullClock()
    assert [clock.mark() for _ in range(3)] == [0, 1, 2]
    assert clock.seconds() == [0.0, 0.0, 0.0]


@pytest.mark.parametrize("mode", ["eager", "static"])
def test_overhead_compares_runs_that_made_the_same_tokens(demo_loaded, mode):
    result = measure_overhead(demo_loaded, prompt_tokens=16, new_tokens=6, rounds=2, decode_mode=mode)
    assert result["decode_mode"] == mode and result["rounds"] == 2
    assert all(len(result["runs_s"][v]) == 2 and min(result["runs_s"][v]) > 0 for v in VARIANTS)
    # CPU greedy decoding is deterministic: every variant made the plain run's tokens
    assert result["same_tokens_as_first_plain_run"] == {v: "2/2" for v in VARIANTS}
    for key in ("timing_only_call", "with_logprobs_call", "timing_only_loop", "with_logprobs_loop"):
        q = result["overhead_pct"][key]
        assert q["q1"] <= q["median"] <= q["q3"]
    assert 0 < result["marking_us_per_token"] < 1000
    result["env"] = {"device_name": "test CPU"}
    text = format_overhead(result)
    assert "plain again (A/A noise)" in text and f"decode_mode {mode}" in text


def test_overhead_refuses_a_single_round(demo_loaded):
    with pytest.raises(ConfigError, match="rounds"):
        measure_overhead(demo_loaded, new_tokens=2, rounds=1)


def test_marking_costs_microseconds_on_the_cpu():
    assert 0 < marking_cost_us("cpu", "eager", steps=200) < 1000
    assert 0 < marking_cost_us("cpu", "graph", steps=200) < 1000


def test_the_load_path_benchmark_converts_once_then_loads_and_cleans_up(tmp_path):
    folder, out = tmp_path / "tiny-bin", tmp_path / "load.json"
    _script("load_path.py", folder, "--arch", "tiny", "--device", "cpu", "--kernels", "torch", "torch",
            "--keep-page-cache", "--cleanup", "--out", out)
    result = json.loads(out.read_text())
    assert result["layout"] == "autogptq_bin" and result["synthetic"] is True
    assert result["write"]["weights_gb"] > 0
    first, second = result["loads"]
    assert first["convert_s"] is not None and first["convert_s"] >= 0  # converted here, timed
    assert second["convert_s"] is None  # the converted copy is reused
    assert first["kernel"] == second["kernel"] == "torch" and first["page_cache_dropped"] is False
    assert not folder.exists() and not Path(first["loaded_from"]).exists()  # --cleanup removed both


def _script(name: str, *args, timeout: int = 600) -> str:
    """Run benchmarks/NAME with ARGS; it must succeed. Its stdout."""
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / name), *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def test_the_prefill_benchmark_keeps_every_sample_in_the_order_given(demo_model_path, tmp_path):
    out = tmp_path / "prefill.json"
    _script("prefill_profile.py", demo_model_path, "--kernels", "torch", "--device", "cpu", "--lengths", 8, 24, 8,
            "--repeats", 2, "--out", out)
    (result,) = json.loads(out.read_text())["results"]
    assert result["kernel"] == "torch" and result["attention"]
    assert [(p["pass"], p["prompt_tokens"]) for p in result["passes"]] == [(0, 8), (1, 24), (2, 8)]
    assert all(len(p["ttft_ms"]) == 2 and min(p["ttft_ms"]) > 0 for p in result["passes"])
    assert set(result["profiles"]) == {"8", "24"}  # one profile per distinct length
    assert all(v["profiled_ttft_ms"] > 0 and v["top_gpu_ops_ms"] == [] for v in result["profiles"].values())  # no CUDA


def test_the_host_side_ttft_benchmark_runs_with_the_collector_on_and_off(demo_model_path, tmp_path):
    out = tmp_path / "host.json"
    _script("ttft_host.py", demo_model_path, "--kernels", "torch", "--device", "cpu", "--prompt-tokens", 16,
            "--samples", 3, "--out", out)
    results = json.loads(out.read_text())["results"]
    assert [r["gc"] for r in results] == ["on", "off"]
    for r in results:
        assert len(r["samples"]) == 3
        assert all(s["ttft_ms"] > 0 and s["cpu_ms"] > 0 and s["gc_ms"] >= 0 for s in r["samples"])
        assert r["summary"]["ttft_ms_min"] <= r["summary"]["ttft_ms_median"] <= r["summary"]["ttft_ms_max"]
    assert results[1]["summary"]["gc_ms_total"] == 0  # the collector was off


def test_the_gc_timer_measures_a_collection():
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        from ttft_host import GcTimer
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    import gc

    with GcTimer() as timer:
        gc.collect()
    assert timer.count >= 1 and timer.total_s > 0
    assert timer not in gc.callbacks


def test_the_host_speed_probe_prints_one_json_line():
    (line,) = _script("host_speed.py", "--device", "cpu", timeout=300).strip().splitlines()
    speed = json.loads(line)
    assert speed["device"] == "cpu" and speed["host_python_loop_ms"] > 0 and speed["host_us_per_small_op"] > 0
