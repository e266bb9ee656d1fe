"""AutoGPTQ 0.7.1 on the CPU: the demo's `.bin` loaded directly, generation, and an honest record.

On a CPU AutoGPTQ can only run the old CUDA kernels' torch fallback (dequantize, then matmul);
its extensions (built for torch 2.2.1 + CUDA 12.1) do not load. These tests check that the
record says exactly that, that nothing is converted, and that the fallback computes the same
logits as the workbench's own decoding of the checkpoint.
"""

import pytest

from .conftest import NEEDS_AUTOGPTQ

pytest.importorskip("auto_gptq", reason=NEEDS_AUTOGPTQ)

import torch  # noqa: E402

from workbench.errors import KernelUnavailable  # noqa: E402
from workbench.generation import generate  # noqa: E402
from workbench.generation.config import DecodeConfig
from workbench.model.autogptq_engine import (
    AUTOGPTQ_FLAGS,
    CARD_FLAGS,
    load_autogptq,  # noqa: E402
)
from workbench.model.load import (
    load_model,
    load_reference_model,  # noqa: E402
)
from workbench.model.registry import KERNELS, available_kernels

FALLBACK = "autogptq-cuda-old (torch fallback: extension not loaded)"
PROMPT = "Write a function that returns the sum of a list."
CUDA_ONLY = ("autogptq-exllama", "autogptq-exllamav2", "autogptq-triton")
no_gpu = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU machine's fallback")


@pytest.fixture(scope="module")
def loaded(legacy_demo_path):
    return load_model(legacy_demo_path, kernel="autogptq-cuda-old", device="cpu", dtype="float32")


@pytest.fixture(scope="module")
def reference_logits(legacy_demo_path, prompt_ids):
    with torch.inference_mode():
        return load_reference_model(legacy_demo_path)(input_ids=prompt_ids).logits[0]


@pytest.fixture(scope="module")
def prompt_ids():
    return torch.tensor([list(range(1, 41))])  # [1, 40]


def test_the_registry_in_this_environment():
    cpu = {a.kernel: a for a in available_kernels("cpu")}
    assert cpu["autogptq-cuda-old"].available and "torch fallback" in cpu["autogptq-cuda-old"].reason
    assert cpu["autogptq-cuda"].available
    for name in CUDA_ONLY:
        assert not cpu[name].available and "runs on cuda only" in cpu[name].reason
    for name in (k for k, s in KERNELS.items() if s.engine == "gptqmodel" and k != "auto"):
        assert not cpu[name].available and "main environment" in cpu[name].reason, name
    assert cpu["auto"].available and cpu["auto"].reason.startswith("would pick autogptq-cuda-old")


@no_gpu
def test_auto_picks_the_autogptq_kernel_that_runs_here(legacy_demo_path, act_order_checkpoint):
    from workbench.model.registry import choose_kernel

    assert choose_kernel(legacy_demo_path, "auto", "cpu").name == "autogptq-cuda-old"
    assert choose_kernel(act_order_checkpoint, "auto", "cpu").name == "autogptq-cuda"  # act-order: cuda, not cuda-old
    loaded = load_model(legacy_demo_path, kernel="auto", device="cpu")
    assert (loaded.kernel, loaded.kernel_requested) == (FALLBACK, "auto")
    assert loaded.load_record.kernel_requested == "auto" and loaded.dtype == torch.float32


@no_gpu
def test_demo_bin_loads_directly_and_the_fallback_is_recorded(loaded, legacy_demo_path):
    rec = loaded.load_record
    assert loaded.kernel == rec.kernel == FALLBACK
    assert rec.kernel_requested == "autogptq-cuda-old" and rec.backend == "cuda-old"
    assert rec.layout == "autogptq_bin" and rec.loaded_from == str(legacy_demo_path) and rec.convert_s is None
    engine = rec.env["autogptq"]
    assert engine["qlinear"] == "auto_gptq.nn_modules.qlinear.qlinear_cuda_old.QuantLinear"
    assert engine["fallback_layers"] == engine["layers"] == 7 * 4  # every linear of the 4 blocks
    assert engine["from_quantized"] == {"device": "cpu", "use_safetensors": False,
                                        "model_basename": "gptq_model-4bit-64g",
                                        **AUTOGPTQ_FLAGS["autogptq-cuda-old"], **CARD_FLAGS,
                                        "trust_remote_code": False}  # a folder's code never runs here
    assert engine["use_cuda_fp16"] is False  # AutoGPTQ turns it off for any dtype but float16
    assert all(error for error in engine["extensions"].values())  # none loads without CUDA
    assert rec.env["auto_gptq"] == "0.7.1" and rec.env["transformers"].startswith("4.57.")


def test_the_fallback_computes_the_checkpoints_own_weights(loaded, reference_logits, prompt_ids):
    """float32 AutoGPTQ fallback against our float32 dequantization of the same .bin."""
    with torch.inference_mode():
        logits = loaded.model(input_ids=prompt_ids).logits[0]
    scale = reference_logits.abs().max()
    assert float((logits - reference_logits).abs().max() / scale) < 1e-4
    assert torch.equal(logits.argmax(-1), reference_logits.argmax(-1))


@no_gpu
def test_generation_record_names_the_fallback(loaded):
    record = generate(loaded, PROMPT, DecodeConfig.greedy(max_new_tokens=6))
    assert record.kernel == FALLBACK and record.kernel_requested == "autogptq-cuda-old"
    assert 1 <= record.new_tokens <= 6 and len(record.token_times_s) == record.new_tokens
    assert record.env["auto_gptq"] == "0.7.1"
    assert record.to_dict()["kernel"] == FALLBACK


@no_gpu
def test_bfloat16(legacy_demo_path, reference_logits, prompt_ids):
    bf16 = load_model(legacy_demo_path, kernel="autogptq-cuda-old", device="cpu", dtype="bfloat16", verify=False)
    assert bf16.kernel == FALLBACK and bf16.load_record.dtype == "bfloat16"
    with torch.inference_mode():
        logits = bf16.model(input_ids=prompt_ids).logits[0].float()
    assert float((logits - reference_logits).abs().max() / reference_logits.abs().max()) < 0.03
    assert generate(bf16, PROMPT, DecodeConfig.greedy(max_new_tokens=3)).kernel == FALLBACK


@no_gpu
def test_a_silent_substitution_is_recorded_as_what_ran(legacy_demo_path):
    """Bypassing the registry's refusal: asked for exllama, AutoGPTQ quietly runs cuda-old's
    torch fallback, and the record says so."""
    loaded = load_autogptq(legacy_demo_path, KERNELS["autogptq-exllama"], "autogptq-exllama", "cpu",
                           torch.float32, verify=False)
    assert loaded.kernel == FALLBACK and loaded.kernel_requested == "autogptq-exllama"
    assert any("Exllama kernel is not installed" in line for line in loaded.load_record.env["autogptq"]["log"])


@pytest.mark.parametrize("kernel", CUDA_ONLY)
def test_cuda_only_kernels_are_refused_on_cpu(legacy_demo_path, kernel):
    with pytest.raises(KernelUnavailable, match="runs on cuda only"):
        load_model(legacy_demo_path, kernel=kernel, device="cpu")


def test_cuda_is_for_act_order_checkpoints_only(legacy_demo_path):
    with pytest.raises(KernelUnavailable, match=r"runs act-order \(desc_act=True\) checkpoints only"):
        load_model(legacy_demo_path, kernel="autogptq-cuda", device="cpu")


def test_act_order_selects_cuda_not_cuda_old(act_order_checkpoint, prompt_ids):
    """AutoGPTQ uses qlinear_cuda for act-order checkpoints with groups, cuda-old otherwise."""
    with pytest.raises(KernelUnavailable, match="act-order"):
        load_model(act_order_checkpoint, kernel="autogptq-cuda-old", device="cpu", dtype="float32")
    loaded = load_model(act_order_checkpoint, kernel="autogptq-cuda", device="cpu", dtype="float32")
    assert loaded.kernel.startswith("autogptq-cuda (torch fallback: ")
    assert loaded.load_record.env["autogptq"]["qlinear"].endswith("qlinear_cuda.QuantLinear")
    with torch.inference_mode():
        logits = loaded.model(input_ids=prompt_ids).logits[0]
        reference = load_reference_model(act_order_checkpoint)(input_ids=prompt_ids).logits[0]
    assert float((logits - reference).abs().max() / reference.abs().max()) < 1e-4


@no_gpu
def test_the_kernel_study_runs_here_and_names_what_ran(legacy_demo_path):
    """Notebook 04's study under transformers 4.57: gptqmodel's reference is skipped, the fallback
    takes its place, and its row says what ran."""
    from workbench.studies.kernels import KernelStudyConfig, run_kernel_study

    config = KernelStudyConfig(kernels=["autogptq-cuda-old"], reference="torch", dtype="float32", n_prompts=1,
                               prompt_tokens=8, greedy_tokens=2, prefill_tokens=8, decode_tokens=2, repeats=1,
                               float_reference=True)
    study = run_kernel_study(legacy_demo_path, config, "cpu", log=lambda *_: None)
    assert "main environment" in study.skipped["torch"]
    table = study.frame()
    assert list(table.index) == [FALLBACK] and study.decode_bytes > 0
    assert table.loc[FALLBACK, "dtype"] == "float32"
    assert table.loc[FALLBACK, "max_abs_dlogit"] == 0.0  # against the float32 dequantized model
