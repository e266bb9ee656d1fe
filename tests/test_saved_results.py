"""The results committed under results/ stay readable after the vocabulary changed (one key per
metric, "kernel" for the GPTQ kernel only): each reader maps the old keys, and what it reads back
gives the numbers that were saved. Reads JSON only: no model, well under a second."""

import json
from pathlib import Path

import pytest

from workbench.generation.record import GenerationRecord
from workbench.measure import OLD_KEYS, current_keys
from workbench.studies.kernels import KernelStudy, merge_kernel_reports
from workbench.studies.latency import LatencyStudy

RESULTS = Path(__file__).resolve().parents[1] / "results"
KERNEL_REPORTS = sorted(RESULTS.rglob("04_kernels*.json"))
LATENCY_REPORTS = sorted(RESULTS.rglob("05_latency_curves.json"))
STUDIES = sorted(RESULTS.rglob("kernel_check_*.json"))


def _load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def test_the_committed_results_are_there():
    assert len(KERNEL_REPORTS) >= 5 and len(LATENCY_REPORTS) >= 5 and len(STUDIES) >= 2


def test_current_keys_renames_old_keys_and_keeps_new_ones():
    assert current_keys({"decode_ms_p50": 1.0, "prefill_tok_s": 2.0, "mode": "eager", "kernel": "torch"}) == \
        {"token_ms_p50": 1.0, "prefill_tokens_per_s": 2.0, "decode_mode": "eager", "kernel": "torch"}
    assert current_keys({"token_ms_p50": 2.0, "decode_ms_p50": 1.0}) == {"token_ms_p50": 2.0}
    assert "kernel" not in OLD_KEYS and "kernel" not in OLD_KEYS.values()  # the GPTQ kernel keeps its name


@pytest.mark.parametrize("path", LATENCY_REPORTS, ids=lambda p: str(p.relative_to(RESULTS)))
def test_saved_records_read_with_the_current_keys(path):
    saved = _load(path)
    for old in saved["records"]:
        rec = GenerationRecord.from_dict(old)
        if "itl" in old:  # saved before the vocabulary change (most committed renders)
            p50, p90, rate = old["itl"]["p50_ms"], old["itl"]["p90_ms"], old["decode_tokens_per_s"]
        else:  # saved with today's keys
            p50, p90, rate = old["token_ms_p50"], old["token_ms_p90"], old["tokens_per_s"]
        assert rec.token_gaps_s and rec.token_ms_p50 == pytest.approx(p50, rel=1e-9)
        assert rec.token_ms_p90 == pytest.approx(p90, rel=1e-9)
        assert rec.tokens_per_s == pytest.approx(rate, rel=1e-9)
        again = GenerationRecord.from_dict(rec.to_dict())  # and the new form reads back unchanged
        assert again.to_dict() == rec.to_dict() and "itl" not in rec.to_dict()


@pytest.mark.parametrize("path", LATENCY_REPORTS, ids=lambda p: str(p.relative_to(RESULTS)))
def test_saved_latency_curves_rebuild_their_headline(path):
    saved = _load(path)
    old, study = saved["headline"], LatencyStudy.from_saved(saved)
    new = study.headline()

    def saved_as(today: str, before: str):  # renders before the vocabulary change used the second name
        return old[today] if today in old else old.get(before)

    assert new["ttft_ms_shortest"] == old["ttft_ms_shortest"] and new["ttft_ms_longest"] == old["ttft_ms_longest"]
    assert new["token_ms_p50"] == pytest.approx(saved_as("token_ms_p50", "decode_ms_p50"), abs=1e-3)
    assert new["batch_tokens_per_s_gain"] == saved_as("batch_tokens_per_s_gain", "batch_tok_s_gain")
    by_mode = saved_as("token_ms_p50_by_mode", "decode_ms_p50_by_mode")
    if by_mode is not None:
        assert new["token_ms_p50_by_mode"] == pytest.approx(by_mode, abs=1e-3)
        # (renders before 2026-11-27 labelled a refused graph's floor share "graph": compare in order)
        assert list(new["floor_share_by_mode"].values()) == \
            pytest.approx(list(saved_as("floor_share_by_mode", "decode_floor_share_by_mode").values()), abs=1e-3)
    assert all("token_ms_p50" in row and "decode_ms_per_step" not in row for row in study.batch)


@pytest.mark.parametrize("path", KERNEL_REPORTS + STUDIES, ids=lambda p: str(p.relative_to(RESULTS)))
def test_saved_kernel_studies_read_with_the_current_keys(path):
    saved = _load(path)
    study = KernelStudy.from_dict(saved["data"]["study"] if "data" in saved else saved["study"])
    assert study.measurements and all(m.token_ms_p50 > 0 for m in study.measurements)
    table = study.frame()
    assert {"token_ms_p50", "token_ms_p90", "prefill_tokens_per_s"} <= set(table.columns)
    for row in study.modes:
        assert "decode_mode_requested" in row and ("token_ms_p50" in row or "why_not" in row)
    for split in study.splits:
        assert "decode_mode" in split and "kernels_per_step" not in split and "top_kernels" not in split
    for proof in study.proofs:
        assert "decode_mode" in proof and not any(k.startswith("kernels_") for k in proof)
    if "data" in saved:  # the notebook's own table and headline, under the old names or the current ones
        old_table = {row["kernel"]: current_keys(row) for row in saved["data"]["table"]}
        for kernel, row in table.iterrows():
            assert row["token_ms_p50"] == pytest.approx(old_table[kernel]["token_ms_p50"], rel=1e-9)
            assert row["prefill_tokens_per_s"] == pytest.approx(old_table[kernel]["prefill_tokens_per_s"], rel=1e-9)
        old, new = saved["headline"], study.headline()
        if "fastest_kernel" in old:  # rendered with the current names: read back as saved
            assert (new["fastest_kernel"], new["token_ms_p50"]) == (old["fastest_kernel"], old["token_ms_p50"])
            return
        assert (new["fastest_kernel"], new["token_ms_p50"]) == (old["fastest_decode"], old["fastest_decode_ms"])
        if "fastest_mode" in old:
            assert (new["fastest_mode"], new["fastest_mode_token_ms_p50"]) == \
                (old["fastest_mode"], old["fastest_mode_ms"])


def test_saved_kernel_reports_merge():
    merged = merge_kernel_reports([RESULTS / "h100", RESULTS / "h100" / "autogptq" / "demo"])
    ran = merged.dropna(subset=["token_ms_p50"])
    assert {"exllamav2", "marlin", "autogptq-exllama"} <= set(ran["kernel"])
    assert "decode_ms_p50" not in merged.columns and "prefill_tok_s" not in merged.columns


PEER_RUNS = sorted(RESULTS.rglob("bench_peer_call*.json"))


@pytest.mark.parametrize("path", PEER_RUNS, ids=lambda p: str(p.relative_to(RESULTS)))
def test_saved_bench_peer_runs_print_the_table_they_printed(path):
    from workbench.studies.peer import table

    printed = path.with_suffix(".txt").read_text(encoding="utf-8")
    lines = table(_load(path)).splitlines()  # rows saved with decode_ms_p50 and mode
    assert len(lines) >= 3 and all(line in printed for line in lines)
