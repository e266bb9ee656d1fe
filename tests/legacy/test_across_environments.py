"""What crosses between the main environment and the AutoGPTQ one: the registry names the
engine's kernels everywhere, the engine imports without auto_gptq, the report runner takes
another environment's Jupyter kernel, and notebook 04's results of both merge into one table."""

import json
import subprocess
import sys

import pandas as pd
import pytest

from workbench.errors import ConfigError, KernelUnavailable
from workbench.model.load import load_model
from workbench.model.registry import KERNELS, available_kernels
from workbench.studies.kernels import merge_kernel_reports

from .conftest import HAS_AUTOGPTQ

AUTOGPTQ_KERNELS = ["autogptq-exllama", "autogptq-exllamav2", "autogptq-cuda-old", "autogptq-cuda", "autogptq-triton"]
MAIN_ONLY = "runs where auto_gptq is not installed: the main environment's side"


def test_the_engine_module_imports_without_loading_auto_gptq():
    code = ("import sys, workbench.model.autogptq_engine, workbench.model.registry as k; k.available_kernels('cpu'); "
            "sys.exit('auto_gptq' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == 0


def test_the_registry_has_autogptqs_kernels():
    assert all(KERNELS[k].engine == "autogptq" for k in AUTOGPTQ_KERNELS)
    assert {KERNELS[k].backend for k in AUTOGPTQ_KERNELS} == {"exllama", "exllamav2", "cuda-old", "cuda", "triton"}


@pytest.mark.skipif(HAS_AUTOGPTQ, reason=MAIN_ONLY)
@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_main_environment_lists_them_as_needing_the_legacy_env(device):
    found = {a.kernel: a for a in available_kernels(device)}
    for k in AUTOGPTQ_KERNELS:
        assert not found[k].available and found[k].reason == "needs the auto-gptq environment (make legacy-env)"


@pytest.mark.skipif(HAS_AUTOGPTQ, reason=MAIN_ONLY)
def test_main_environment_refuses_to_load_them(act_order_checkpoint):
    with pytest.raises(KernelUnavailable, match=r"needs the auto-gptq environment \(make legacy-env\)"):
        load_model(act_order_checkpoint, kernel="autogptq-cuda", device="cpu")


@pytest.mark.skipif(HAS_AUTOGPTQ, reason=MAIN_ONLY)
def test_report_runner_takes_another_jupyter_kernel(tmp_path):
    from workbench.report.runner import main

    with pytest.raises(ConfigError, match="Jupyter kernel 'no-such-kernel' is not installed"):
        main(["--jupyter-kernel", "no-such-kernel", "--only", "04", "--out", str(tmp_path / "out")])


def _save_04(folder, table, skipped, agreements, jupyter_kernel=None):
    folder.mkdir()
    data = {"study": {"device": "cpu", "reference": "torch", "agreements": agreements,
                      "measurements": [{"kernel": row["kernel"]} for row in table]},
            "table": table, "skipped": skipped}
    (folder / "04_kernels.json").write_text(json.dumps({"notebook": "04_kernels", "headline": {}, "data": data}))
    if jupyter_kernel:
        report = {"config": {"jupyter_kernel": jupyter_kernel},
                  "environment": {"jupyter_kernel_python": f"/{jupyter_kernel}/python"}}
        (folder / "report.json").write_text(json.dumps(report))
    return folder


def test_kernel_reports_of_both_environments_merge(tmp_path):
    fallback = "autogptq-cuda-old (torch fallback: extension not loaded)"
    # the rows use the keys of reports saved before the vocabulary (decode_ms_p50): the reader renames them
    main_env = _save_04(tmp_path / "main", [{"kernel": "torch", "decode_ms_p50": 5.0},
                                            {"kernel": "torch_aten", "token_ms_p50": 3.0, "top1_agree": 1.0}],
                        {"autogptq-cuda-old": "needs the auto-gptq environment (make legacy-env)",
                         "exllamav2": "runs on cuda only"},
                        [{"reference": "float32-dequantized", "kernel": "torch"},
                         {"reference": "torch", "kernel": "torch_aten"}],
                        jupyter_kernel="python3")
    legacy = _save_04(tmp_path / "autogptq", [{"kernel": fallback, "decode_ms_p50": 40.0}],
                      {"torch": "needs the main environment", "exllamav2": "runs on cuda only"},
                      [{"reference": "float32-dequantized", "kernel": "autogptq-cuda-old"}])
    merged = merge_kernel_reports([main_env, legacy / "04_kernels.json"]).set_index("kernel")
    assert list(merged.index) == ["torch", "torch_aten", fallback, "exllamav2"]
    assert merged.loc[fallback, "token_ms_p50"] == 40.0 and merged.loc["torch", "token_ms_p50"] == 5.0
    assert merged.loc["torch_aten", "top1_agree"] == 1.0
    assert merged.loc["torch", "jupyter_kernel"] == "python3" and pd.isna(merged.loc[fallback, "jupyter_kernel"])
    assert merged.loc["torch_aten", "reference"] == "torch" and merged.loc[fallback, "reference"] == "autogptq-cuda-old"
    assert merged.loc["exllamav2", "why_not"].count("runs on cuda only") == 2  # ran in neither run


def test_merging_something_else_says_what_it_wants(tmp_path):
    (tmp_path / "04_kernels.json").write_text(json.dumps({"data": {}}))
    with pytest.raises(ConfigError, match="no data.table"):
        merge_kernel_reports([tmp_path])
    with pytest.raises(ConfigError, match="not a readable 04_kernels.json"):
        merge_kernel_reports([tmp_path / "missing"])
