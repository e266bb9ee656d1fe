"""A loaded model and the record of how it was loaded; the object owns its release.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from ..environment import collect_env
from ..measure import memory_snapshot, timed_s
from .checkpoint import (
    VerifyResult,
    checkpoint_hash,
    detect_layout,
    is_synthetic,
    read_generation_config,
    read_gptq_settings,
)


@dataclass
class LoadRecord:
    """How a model was loaded: what ran, how long each stage took, and the checkpoint's identity."""

    kernel: str
    kernel_requested: str
    backend: str
    device: str
    devices: list[str]  # where the parameters actually are (several for a model spread over GPUs)
    dtype: str
    path: str
    loaded_from: str  # the folder gptqmodel read: the checkpoint, or its converted copy
    layout: str
    settings: dict
    checkpoint_hash: str
    synthetic: bool
    verified: bool
    verify_source: str | None  # "card" (the published table) or "self-declared" (the folder's own SHA256SUMS)
    verify_s: float | None
    convert_s: float | None  # building the converted copy now; None when none was needed or it was cached
    load_s: float
    first_forward_s: float  # one-token forward right after loading: includes kernel builds/compiles
    memory: dict  # after load and the first forward, in GB (see workbench.measure.MemorySnapshot)
    env: dict
    attention: str = ""  # the attention set at load (workbench.attention); "" in records older than it
    # Which digests the verification took from the hash cache instead of re-hashing (None: not verified).
    verify_from_cache: list[str] | None = None
    # Whether the folder holds the card's weights: None (no file of that name, or not verified),
    # False (named like them but not them: verify_source is then "self-declared").
    card_weights: bool | None = None
    trust_remote_code: bool = False  # what the caller allowed
    code_hooks: list[str] = field(default_factory=list)  # the folder's code hooks, present only when trusted
    generation_config: dict | None = None  # the checkpoint's generation_config.json as read at load (None: none)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class LoadedModel:
    model: object  # a transformers LlamaForCausalLM whose linears are gptqmodel's quantized modules
    # (or, for kernel exllamav2-engine, exllamav2_engine.ExLlamaV2Runner)
    tokenizer: object
    kernel: str  # the kernel in use, read from the quantized modules' classes
    kernel_requested: str
    device: str
    dtype: object  # torch.dtype
    path: Path
    load_record: LoadRecord
    engine_handle: object = field(default=None, repr=False)  # gptqmodel's wrapper, kept alive with the model
    attention: str = ""  # the attention chosen last (load_model's, then set_attention's)
    # The static-cache decoder kept for the next generation: ((batch, cache length, mode), decoder).
    # generation/static.py makes it; it is kept here so that releasing the model releases it too.
    decoder: object = field(default=None, repr=False)
    # decode_mode="fast" (generation/fast.py): its FastConfig (None: the default) and the weights it built
    fast_config: object = None
    fast_weights: object = field(default=None, repr=False)
    # the workload runner's dense prefill (generation/fast.DensePrefill): packed copies of the 4-bit weights
    dense_prefill: object = field(default=None, repr=False)

    @property
    def generation_config(self) -> dict | None:
        """The checkpoint's generation_config.json, read at load (see DecodeConfig.from_generation_config)."""
        return self.load_record.generation_config

    def release_decoder(self) -> None:
        """Drop the kept decoder: its cache and its graph's memory pool go with the last reference."""
        self.decoder = None

    def release(self) -> None:
        """Drop the model and give its memory back (before the next kernel loads, say)."""
        import gc

        import torch

        self.release_decoder()  # a static cache and its CUDA graph
        self.fast_weights = None  # the fast step's fused copies
        self.dense_prefill = None  # the runner's packed copies
        if hasattr(self.model, "unload"):  # ExLlamaV2's engine frees its C++ matrices itself
            self.model.unload()
        self.model = None
        self.engine_handle = None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def time_first_forward(model, device: str) -> float:
    """One forward of one token: lazy kernel builds and torch.compile happen here, not in a benchmark."""
    import torch

    first = model.get_input_embeddings().weight.device
    ids = torch.tensor([[1]], device=first)  # [B=1, T=1]: <s>
    with torch.no_grad():
        _, seconds = timed_s(lambda: model(input_ids=ids), device)
    return seconds


def record_load(model, path, *, kernel: str, kernel_requested: str, backend: str, device: str, torch_dtype,
                loaded_from, verified: VerifyResult | None, convert_s: float | None, load_s: float,
                attention: str, env: dict | None = None, first_forward_s: float | None = None,
                settings=None, trust_remote_code: bool = False, code_hooks: list[str] | None = None) -> LoadRecord:
    """The `LoadRecord` of a model an engine has just loaded, the same for every engine: times the
    first forward (unless the engine timed its own: `first_forward_s`), then reads where the
    parameters are, memory (per GPU when the model is spread over several) and the checkpoint's
    identity. `env` adds engine-specific facts to the environment (AutoGPTQ's flags and
    fallbacks); `settings` the GPTQ settings the engine read, where not the checkpoint's own file;
    `trust_remote_code` what the caller allowed and `code_hooks` the folder's hooks it let through."""
    path = Path(path)
    if first_forward_s is None:
        first_forward_s = time_first_forward(model, device)
    primary = str(model.get_input_embeddings().weight.device)
    if hasattr(model, "parameters"):
        devices = sorted({str(p.device) for p in model.parameters()} | {str(b.device) for b in model.buffers()})
    else:  # an engine that is no torch module (ExLlamaV2's runner) works on its one device
        devices = [device]
    memory = memory_snapshot(primary).to_dict()
    if len(cuda_devices := [d for d in devices if d.startswith("cuda")]) > 1:
        memory["per_device"] = {d: memory_snapshot(d).to_dict() for d in cuda_devices}
    return LoadRecord(
        kernel=kernel, kernel_requested=kernel_requested, backend=backend, device=device, devices=devices,
        dtype=str(torch_dtype).removeprefix("torch."), path=str(path), loaded_from=str(loaded_from),
        layout=detect_layout(path).value, settings=dataclasses.asdict(settings or read_gptq_settings(path)),
        # the digest the verification just computed, where there was one: never an older cache entry
        checkpoint_hash=checkpoint_hash(path, digests=verified.sha256 if verified else None),
        synthetic=is_synthetic(path), verified=verified is not None,
        verify_source=verified.source if verified else None,
        verify_s=round(verified.seconds, 3) if verified else None, convert_s=convert_s,
        load_s=round(load_s, 3), first_forward_s=round(first_forward_s, 3),
        memory=memory, env={**collect_env(primary), **(env or {})}, attention=attention,
        verify_from_cache=list(verified.from_cache) if verified else None,
        card_weights=verified.card_weights if verified else None,
        trust_remote_code=trust_remote_code, code_hooks=list(code_hooks or []),
        generation_config=read_generation_config(path),
    )
