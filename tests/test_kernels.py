"""The kernel registry, load_model's refusals, and the CPU kernels checked against a float32
reference built from our own decoding of AutoGPTQ's packing."""

import importlib
import json

import pytest
import torch

from workbench.errors import ConfigError, KernelUnavailable, WorkbenchError
from workbench.model.checkpoint import Layout, checkpoint_hash
from workbench.model.load import load_model, load_reference_model
from workbench.model.registry import AUTO_ORDER, KERNELS, available_kernels, choose_kernel, main
from workbench.model.synthetic import write_synthetic_checkpoint

CPU_KERNELS = ["torch", "torch_aten", "torch_fused", "cpu_avx512"]
CUDA_KERNELS = ["torch", "triton", "exllamav2", "marlin", "machete", "bitblas"]
PROMPT = "<|role_start|>human<|role_end|>Write a function that returns the sum of a list.<|role_start|>bot<|role_end|>"
FORCED_TOKENS = 32  # the reference's greedy continuation, checked teacher-forced in one forward
GREEDY_TOKENS = 8  # generated token by token by each kernel

# The largest |logit - reference| over the prompt and its greedy continuation, as a share of the
# largest |reference logit|. Measured on three builds of the demo model (4 layers, logits up to
# ~13-15): torch 0.04-0.06%, torch_fused 0.04-0.17%, torch_aten 0.14-0.26%, cpu_avx512 0.16-0.33%.
# (torch and torch_aten compute in fp16; torch_fused and cpu_avx512 were measured in fp16 and in
# float32, their CPU default now.) All decode the same 4-bit weights; what is left is activation rounding and
# summation order (fp16 keeps 11 significant bits, ~0.05%). The ATen int4pack op behind torch_aten and torch_fused also
# keeps scales and zeros in bf16 (8 bits, ~0.4% each); cpu_avx512 re-quantizes the weights to
# per-channel int8. The bounds leave ~2x headroom over the worst build: tighter fails on harmless
# rounding, looser would miss a wrong group or zero (those move logits by whole units).
REL_TOLERANCE = {"torch": 0.002, "torch_fused": 0.005, "torch_aten": 0.005, "cpu_avx512": 0.008}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return write_synthetic_checkpoint(tmp_path_factory.mktemp("k") / "tiny", "tiny", Layout.AUTOGPTQ_BIN,
                                      progress=False)


# --- the registry ----------------------------------------------------------------------------------

def test_registry_lists_the_issue_kernels():
    assert all("cpu" in KERNELS[k].devices for k in CPU_KERNELS)
    assert all("cuda" in KERNELS[k].devices for k in CUDA_KERNELS)
    assert {k for k, s in KERNELS.items() if s.engine == "gptqmodel"} == set(CPU_KERNELS) | set(CUDA_KERNELS) | {"auto"}
    assert all(k in KERNELS for order in AUTO_ORDER.values() for k in order)


_QLINEAR_MODULES = {"TorchLinear": "torch", "TorchAtenLinear": "torch_aten_kernel", "TorchFusedLinear": "torch_fused",
                    "TorchInt8Linear": "torch_int8", "TritonV2Linear": "tritonv2", "ExllamaV2Linear": "exllamav2",
                    "MarlinLinear": "marlin", "MacheteLinear": "machete", "BitblasLinear": "bitblas"}


@pytest.mark.parametrize("name", [k for k, s in KERNELS.items() if k != "auto" and s.engine == "gptqmodel"])
def test_registry_matches_gptqmodel(name):
    """Our constraints are gptqmodel 7.6.0's own, so refusals happen before a load, for the same reasons."""
    from workbench.model.libraries import import_gptqmodel

    gptqmodel = import_gptqmodel()
    spec = KERNELS[name]
    module = importlib.import_module(f"gptqmodel.nn_modules.qlinear.{_QLINEAR_MODULES[spec.qlinear]}")
    cls = getattr(module, spec.qlinear)
    assert gptqmodel.BACKEND(spec.backend) in cls.SUPPORTS_BACKENDS
    assert set(spec.bits) == set(cls.SUPPORTS_BITS)
    assert set(spec.group_sizes) == set(cls.SUPPORTS_GROUP_SIZE)
    assert set(spec.desc_act) == set(cls.SUPPORTS_DESC_ACT)
    assert set(spec.sym) == set(cls.SUPPORTS_SYM)
    assert set(spec.dtypes) == {str(d).removeprefix("torch.") for d in cls.SUPPORTS_DTYPES}
    assert spec.features_multiple == (cls.SUPPORTS_IN_FEATURES_DIVISIBLE_BY[0],
                                      cls.SUPPORTS_OUT_FEATURES_DIVISIBLE_BY[0])
    devices = {d.value for d in cls.SUPPORTS_DEVICES}
    assert set(spec.devices) <= ({"cpu", "cuda"} if "all" in devices else devices)


def test_availability_on_this_cpu_machine():
    cpu = {a.kernel: a for a in available_kernels("cpu")}
    assert all(cpu[k].available for k in CPU_KERNELS + ["auto"])
    assert "AVX" in cpu["cpu_avx512"].reason
    for k in ("triton", "exllamav2", "marlin", "machete", "bitblas"):
        assert not cpu[k].available and "runs on cuda only" in cpu[k].reason
    if not torch.cuda.is_available():
        cuda = {a.kernel: a for a in available_kernels("cuda")}
        assert not any(a.available for k, a in cuda.items() if k != "auto")
        assert "no CUDA device" in cuda["exllamav2"].reason and "no CUDA device" in cuda["torch"].reason


def test_cli_prints_the_registry(capsys):
    assert main(["--device", "cpu"]) == 0
    out = capsys.readouterr().out
    for k in KERNELS:
        assert f"\n{k} " in out
    assert "no AVX-512-specific" in out


# --- refusals ------------------------------------------------------------------------------------

@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
@pytest.mark.parametrize("kernel", CUDA_KERNELS)
def test_cuda_kernel_without_cuda_is_refused(tiny, kernel):
    with pytest.raises(KernelUnavailable, match="no CUDA device is visible"):
        load_model(tiny, kernel=kernel, device="cuda")


@pytest.mark.parametrize("kernel", ["triton", "exllamav2", "marlin", "machete", "bitblas"])
def test_cuda_only_kernel_on_cpu_is_refused(tiny, kernel):
    with pytest.raises(KernelUnavailable, match=f"kernel '{kernel}' cannot run on cpu: runs on cuda only"):
        load_model(tiny, kernel=kernel, device="cpu")


def test_unknown_names_list_the_known_ones(tiny):
    with pytest.raises(KernelUnavailable, match="known: torch, torch_aten"):
        load_model(tiny, kernel="exllama")
    with pytest.raises(ConfigError, match="'auto', 'cpu', 'cuda' and 'cuda:N'"):
        load_model(tiny, device="gpu")
    assert issubclass(KernelUnavailable, WorkbenchError)


def test_checkpoint_constraints_are_refused(tmp_path, tiny):
    eight = write_synthetic_checkpoint(tmp_path / "8bit", "tiny", bits=8, progress=False)
    with pytest.raises(KernelUnavailable, match=r"torch_aten' cannot run on cpu: supports bits \(4,\); .* bits=8"):
        load_model(eight, kernel="torch_aten", device="cpu")
    with pytest.raises(KernelUnavailable, match="computes in float16, bfloat16; dtype=float32"):
        load_model(tiny, kernel="torch_aten", device="cpu", dtype=torch.float32)


def test_a_different_kernel_than_asked_is_refused(tiny, monkeypatch):
    import workbench.model.load as kernels

    monkeypatch.setattr(kernels, "kernel_in_use", lambda model: "torch")
    with pytest.raises(KernelUnavailable, match="asked for kernel 'torch_fused' but gptqmodel loaded 'torch'"):
        load_model(tiny, kernel="torch_fused", device="cpu")


# --- loading ------------------------------------------------------------------------------------

@pytest.mark.slow
def test_auto_picks_and_records(tiny):
    loaded = load_model(tiny, device="cpu")
    rec = loaded.load_record
    assert loaded.kernel == rec.kernel == AUTO_ORDER["cpu"][0]
    assert loaded.kernel_requested == rec.kernel_requested == "auto"
    assert rec.checkpoint_hash == checkpoint_hash(tiny) and rec.verified and rec.verify_source == "self-declared"
    assert rec.layout == "autogptq_bin" and rec.loaded_from != str(tiny) and rec.synthetic
    assert rec.settings["bits"] == 4 and rec.devices == ["cpu"]
    assert rec.dtype == ("float32" if "float32" in KERNELS[rec.kernel].dtypes else "float16")  # the CPU default
    assert rec.load_s > 0 and rec.first_forward_s > 0 and rec.memory["rss_gb"] > 0
    json.dumps(rec.to_dict())
    tok = loaded.tokenizer
    assert tok.padding_side == "left" and tok.pad_token_id == 0 and tok.eos_token_id == 2


def test_auto_skips_kernels_the_checkpoint_rules_out(tmp_path, tiny):
    eight = write_synthetic_checkpoint(tmp_path / "8bit", "tiny", bits=8, progress=False)
    assert choose_kernel(eight, "auto", "cpu").name == "torch"  # torch_fused and torch_aten are 4-bit only
    assert choose_kernel(tiny, "auto", "cpu").name == "torch_fused"
    assert choose_kernel(tiny, "auto", "cpu", torch.float32).name == "torch_fused"


# --- the CPU kernels on the demo model, against the float32 reference ------------------------------

@pytest.fixture(scope="module")
def demo_runs(demo_model_path):
    """For the reference and each CPU kernel: logits over the prompt followed by the reference's
    greedy continuation (teacher-forced), and a short greedy generation of its own."""
    from workbench.prompts.tokenizer import load_tokenizer

    prompt = load_tokenizer(demo_model_path)(PROMPT, add_special_tokens=False, return_tensors="pt").input_ids
    reference = load_reference_model(demo_model_path)
    with torch.no_grad():
        continuation = reference.generate(prompt, max_new_tokens=FORCED_TOKENS, do_sample=False, pad_token_id=0,
                                          attention_mask=torch.ones_like(prompt))
    runs = {"prompt_len": prompt.shape[1], "reference": _run(reference, continuation, prompt.shape[1])}
    for kernel in CPU_KERNELS:
        loaded = load_model(demo_model_path, kernel=kernel, device="cpu")
        runs[kernel] = _run(loaded.model, continuation, prompt.shape[1]) + (loaded.kernel, loaded.load_record)
        del loaded
    return runs


def _run(model, ids, prompt_len: int):
    """(logits [T, V] over ids, argmax at each continuation position, own greedy tokens)."""
    with torch.no_grad():
        logits = model(ids).logits[0].float()  # [T, V]
        prompt = ids[:, :prompt_len]
        out = model.generate(prompt, max_new_tokens=GREEDY_TOKENS, do_sample=False, pad_token_id=0,
                             attention_mask=torch.ones_like(prompt))
    return logits, logits[prompt_len - 1:-1].argmax(-1).tolist(), out[0, prompt_len:].tolist()


@pytest.mark.slow
@pytest.mark.parametrize("kernel", CPU_KERNELS)
def test_each_cpu_kernel_loads_the_demo_model(demo_runs, kernel):
    *_, in_use, record = demo_runs[kernel]
    assert in_use == record.kernel == kernel
    assert record.layout == "autogptq_bin" and not record.synthetic


@pytest.mark.slow
@pytest.mark.parametrize("kernel", CPU_KERNELS)
def test_logits_agree_with_the_float32_reference(demo_runs, kernel):
    ref = demo_runs["reference"][0]
    logits = demo_runs[kernel][0]
    rel = ((logits - ref).abs().max() / ref.abs().max()).item()
    assert rel <= REL_TOLERANCE[kernel], f"{kernel}: max |diff| is {rel:.4f} of the largest logit"


@pytest.mark.slow
def test_cpu_kernels_agree_with_each_other(demo_runs):
    exact = [k for k in CPU_KERNELS if k != "cpu_avx512"]
    scale = demo_runs["reference"][0].abs().max()
    for a in exact:
        for b in exact:
            rel = ((demo_runs[a][0] - demo_runs[b][0]).abs().max() / scale).item()
            assert rel <= REL_TOLERANCE[a] + REL_TOLERANCE[b], (a, b, rel)


@pytest.mark.slow
@pytest.mark.parametrize("kernel", CPU_KERNELS)
def test_same_greedy_tokens_as_the_reference(demo_runs, kernel):
    """Teacher-forced along the reference's greedy continuation, the kernel picks the same next
    token wherever the reference's choice is decided: its top-2 margin exceeds twice the logit
    tolerance (no kernel within tolerance can reverse it). A near-tie may go either way (demo
    builds have had margins of 0.001). Its own token-by-token generation (the KV-cache,
    one-token path) matches the reference up to the first near-tie."""
    ref_logits, forced_ref, greedy_ref = demo_runs["reference"]
    _, forced, greedy = demo_runs[kernel][:3]
    n = demo_runs["prompt_len"]
    top2 = ref_logits[n - 1:-1].topk(2, dim=-1).values  # [continuation, 2]
    decided = ((top2[:, 0] - top2[:, 1]) > 2 * REL_TOLERANCE[kernel] * ref_logits.abs().max()).tolist()
    assert sum(decided) >= len(decided) // 2  # not vacuous
    assert [a for a, d in zip(forced, decided) if d] == [b for b, d in zip(forced_ref, decided) if d]
    first_tie = decided.index(False) if False in decided else len(decided)
    assert greedy[:first_tie] == greedy_ref[:first_tie]
