"""Every notebook runs headless on the demo model with small parameters, through the report
runner, and saves sane numbers; the decoding widgets' callbacks regenerate an answer."""

import ast
import json
import math
from pathlib import Path

import nbformat
import pytest
from papermill.translators import PythonTranslator

from workbench.report.runner import ReportConfig, run_report

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
SMALL = {
    "01_quickstart": {"MAX_NEW_TOKENS": 16},
    "02_prompt_formats": {"N_PROMPTS": 2, "MAX_NEW_TOKENS": 16},
    "03_decoding_parameters": {"TEMPERATURES": [0.2, 1.0], "TOP_PS": [0.9], "SAMPLES": 2, "N_PROMPTS": 1,
                               "MAX_NEW_TOKENS": 12, "PASS_RATE": True},
    "04_kernels": {"KERNELS": ["torch_fused", "torch"], "REFERENCE": "torch_fused", "N_PROMPTS": 2,
                   "GREEDY_TOKENS": 6, "PREFILL_TOKENS": 32, "DECODE_TOKENS": 6, "REPEATS": 2,
                   "DECODE_MODES": ["eager", "static", "graph"], "DECODE_CONTEXTS": [32], "PROVE_STEPS": 8,
                   "BREAKDOWN_STEPS": 3, "ATTENTIONS": ["sdpa", "eager"]},
    "05_latency_curves": {"PROMPT_LENGTHS": [8, 32], "LONG_PROMPT": 8, "LONG_NEW_TOKENS": 16,
                          "BATCH_SIZES": [1, 2], "BATCH_NEW_TOKENS": 6, "CONTEXTS": [16, 48],
                          "DECODE_MODES": ["eager", "static"]},
    "06_humaneval": {"LIMIT": 2, "MAX_NEW_TOKENS": 24},
}


def test_notebooks_are_committed_clean_with_one_parameters_cell():
    assert [p.stem for p in NOTEBOOKS] == list(SMALL)
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
        assert len(tagged) == 1, path.name
        for name in ("MODEL", "KERNEL", "DEVICE", "OUTPUT_DIR"):
            assert f"{name} = " in tagged[0].source, (path.name, name)
        # papermill (and `report --params`, which asks it) must see every parameter the cell assigns:
        # it skips a line whose comment holds "=", and such a parameter could not be given at all
        assigned = {t.id for node in ast.parse(tagged[0].source).body if isinstance(node, ast.Assign)
                    for t in node.targets}
        assert {p.name for p in PythonTranslator.inspect(tagged[0])} == assigned, path.name
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert not cell.outputs and cell.execution_count is None, f"{path.name} has outputs"


@pytest.fixture(scope="module")
def report(demo_model_path, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    config = ReportConfig(model=str(demo_model_path), kernel="auto", device="cpu", out=out, params=SMALL,
                          timeout_s=600)
    result = run_report(config, progress=print)
    return out, result


def _saved(out: Path, name: str) -> dict:
    return json.loads((out / f"{name}.json").read_text())


def test_every_notebook_ran(report):
    out, result = report
    failed = {r.name: r.error for r in result.runs if r.status != "ok"}
    assert not failed, failed
    index = (out / "index.html").read_text()
    for path in NOTEBOOKS:
        assert (out / f"{path.stem}.html").exists() and path.stem in index


def test_quickstart_numbers(report):
    d = _saved(report[0], "01_quickstart")
    rec = d["records"][0]
    assert 1 <= rec["new_tokens"] <= 16 and len(rec["token_times_s"]) == rec["new_tokens"]
    assert 0 < d["headline"]["ttft_ms"] < 60_000 and d["headline"]["kernel"] == "torch_fused"
    assert d["load"]["kernel"] == "torch_fused" and d["load"]["dtype"] == "float32"


def test_prompt_formats_numbers(report):
    d = _saved(report[0], "02_prompt_formats")
    stats = d["data"]["stats"]
    assert set(stats) == {"codefuse", "card", "card-diagram", "newline", "mftcoder-v2", "raw"}
    for s in stats.values():
        assert 0 <= s["eos_share"] <= 1 and 0 <= s["parses_share"] <= 1 and s["answers"] == 2
    kl = d["data"]["kl_nats"]
    assert kl["codefuse"] == pytest.approx(0, abs=1e-6) and all(v >= 0 for v in kl.values())
    assert max(kl.values()) > 0  # the formats do change the first-token distribution
    assert {row["part"] for row in d["data"]["token_view"]} >= {"role_tag", "content"}


def test_decoding_grid_numbers(report):
    d = _saved(report[0], "03_decoding_parameters")
    grid = d["data"]["grid"]
    assert len(grid) == 2
    for row in grid:
        assert 0 < row["distinct_2"] <= 1 and row["mean_logprob"] < 0
        assert 0 <= row["parses_share"] <= 1 and 0 <= row["pass_rate"] <= 1


def test_kernels_numbers(report):
    d = _saved(report[0], "04_kernels")
    table = {row["kernel"]: row for row in d["data"]["table"]}
    assert set(table) == {"torch_fused", "torch"}
    for row in table.values():
        assert row["token_ms_p50"] > 0 and row["prefill_tokens_per_s"] > 0
    agreements = {a["kernel"]: a for a in d["data"]["study"]["agreements"]}
    # torch_fused (float32) against torch (float16) and against the dense float32 model
    assert agreements["torch"]["top1_agreement"] > 0.9 and math.isfinite(agreements["torch"]["max_abs_dlogit"])
    assert "triton" in d["data"]["skipped"] and "cuda" in d["data"]["skipped"]["triton"]
    study = d["data"]["study"]
    ran = {(r["kernel"], r["decode_mode_requested"]): r for r in study["modes"]}
    assert set(ran) == {(k, m) for k in ("torch_fused", "torch") for m in ("eager", "static", "graph")}
    for kernel in ("torch_fused", "torch"):
        assert ran[kernel, "static"]["decode_mode"] == "static" and ran[kernel, "static"]["token_ms_p50"] > 0
        assert "needs a CUDA device" in ran[kernel, "graph"]["why_not"]  # said, not silently run as static
    proofs = {(p["kernel"], p.get("decode_mode_requested", p["decode_mode"])): p for p in study["proofs"]}
    assert proofs["torch_fused", "static"]["passed"] and proofs["torch_fused", "static"]["steps"] == 8
    assert proofs["torch", "static"]["tokens_identical"]
    splits = [s for s in study["splits"] if "why_not" not in s]
    assert {(s["kernel"], s["decode_mode"]) for s in splits} == \
        {(k, m) for k in ("torch_fused", "torch") for m in ("eager", "static")}
    assert all(s["wall_ms"] > 0 and s["qgemm_ms"] > 0 for s in splits)
    assert [r["attention"] for r in study["attention_rows"]] == ["sdpa", "eager"]  # on the reference kernel
    assert d["headline"]["fast_modes_proven"] is False  # the graph mode could not run on the CPU


def test_latency_curve_numbers(report):
    d = _saved(report[0], "05_latency_curves")
    assert [r["prompt_tokens"] for r in d["data"]["ttft"]] == [8, 32]
    assert all(r["ttft_ms"] > 0 for r in d["data"]["ttft"])
    assert [(r["decode_mode"], r["batch_size"]) for r in d["data"]["batch"]] == \
        [("eager", 1), ("eager", 2), ("static", 1), ("static", 2)]
    assert len(d["data"]["long_token_times_s"]) == 16
    by_mode = d["data"]["long_by_mode"]
    assert {m: v["decode_mode"] for m, v in by_mode.items()} == {"eager": "eager", "static": "static"}
    assert all(len(v["token_times_s"]) == 16 for v in by_mode.values())
    head = d["headline"]  # both by-mode figures under the same labels ("graph (ran static)" where refused)
    assert list(head["floor_share_by_mode"]) == list(head["token_ms_p50_by_mode"]) == ["eager", "static"]
    assert d["data"]["card_cells"] is None  # a CPU and a small model: the card's cells do not apply


def test_humaneval_numbers(report):
    d = _saved(report[0], "06_humaneval")
    assert d["headline"]["problems"] == 2 and 0 <= d["headline"]["pass_at_1"] <= 1
    assert d["headline"]["card_pass_at_1"] == 0.738
    assert d["data"]["decode_modes_ran"] == {"static": 2}  # the workload runner; "auto" is static on the CPU


def test_decoding_widget_callbacks_regenerate(demo_loaded):
    from workbench.report.widgets import DecodingExplorer

    explorer = DecodingExplorer(demo_loaded, "def add(a, b):\n", max_new_tokens=8)
    first = explorer.regenerate()
    explorer.sliders["temperature"].value = 1.5  # the observer regenerates, as a slider move does
    explorer.sliders["seed"].value = 3
    assert len(explorer.history) == 3
    assert explorer.history[-1].config.temperature == 1.5 and explorer.history[-1].config.seed == 3
    assert first.config.temperature != explorer.history[-1].config.temperature
    assert "answer #3" in explorer.status.value
    shown = [o for o in explorer.output.outputs if o.get("name") == "stdout"]
    assert len(shown) == 1 and shown[0]["text"].strip() == explorer.history[-1].text.strip()


def test_a_notebooks_fast_config_is_applied_or_refused_by_name(demo_loaded):
    """06's FAST_CONFIG: empty changes nothing; with DECODE_MODE = "fast" its fields become the
    loaded model's FastConfig; with another mode, or a wrong field, a ConfigError names it."""
    from workbench.errors import ConfigError
    from workbench.generation.fast import FastConfig, fast_config, set_fast_config
    from workbench.report.notebook import fast_step

    try:
        assert fast_step(demo_loaded, "auto", "  ") is None and fast_config(demo_loaded) == FastConfig()
        with pytest.raises(ConfigError, match="FAST_CONFIG='fuse=0' configures DECODE_MODE = 'fast'"):
            fast_step(demo_loaded, "auto", "fuse=0")
        with pytest.raises(ConfigError, match="narrow_to takes an integer"):
            fast_step(demo_loaded, "fast", "fuse=0 narrow_to=x")
        assert fast_step(demo_loaded, "fast", "fuse=0 narrow_to=4") == FastConfig(fuse=False, narrow_to=4) \
            == fast_config(demo_loaded)
    finally:
        set_fast_config(demo_loaded, FastConfig())
