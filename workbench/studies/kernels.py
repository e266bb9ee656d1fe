"""The kernel study behind notebook 04: every kernel's speed, memory and agreement with a reference.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..errors import ConfigError, KernelUnavailable
from ..generation.config import DECODE_MODES, DecodeConfig
from ..generation.generate import generate_ids
from ..generation.inputs import input_device
from ..measure import (
    current_keys,
    measure_copy_bandwidth_gbps,
    median,
    memory_snapshot,
    percentile,
    reset_peak_memory,
    timed_s,
)
from ..model.attention import DEFAULT_ATTENTION, check_attention, set_attention
from ..model.checkpoint import is_synthetic
from ..model.load import load_model, load_reference_model
from ..model.registry import AUTO, available_kernels, resolve_device
from ..prompts.encoding import prompt_ids_of_length
from .decode_modes import breakdowns, compare_attention, measure_modes, prove_modes
from .floor import decode_bytes_per_token, floor_ms, floor_share, kv_bytes_per_token

# --- one kernel -------------------------------------------------------------------------------

@dataclass
class KernelMeasurement:
    """Speed and memory of one loaded kernel."""

    kernel: str
    load_s: float
    first_forward_s: float
    memory_after_load: dict
    prefill_tokens: int
    prefill_ms: float  # median of the repeats
    prefill_tokens_per_s: float
    decode_tokens: int
    token_ms_p50: float | None  # per-token latency over every repeat's inter-token gaps
    token_ms_p90: float | None
    ttft_ms: float  # median of the repeats
    peak_generation: dict

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "KernelMeasurement":
        """A measurement from its JSON; older ones kept a `decode` latency summary (results/)."""
        d = dict(d)
        old = d.pop("decode", None) or {}
        d.setdefault("token_ms_p50", old.get("p50_ms"))
        d.setdefault("token_ms_p90", old.get("p90_ms"))
        return cls(**d)


def measure_kernel(loaded, prefill_tokens: int = 128, decode_tokens: int = 32, repeats: int = 3,
                   warmup: int = 1) -> KernelMeasurement:
    """Prefill throughput (a plain forward pass) and per-token latency (a greedy generation forced
    to `decode_tokens` new tokens). `warmup` untimed runs of each come first."""
    import torch

    device = input_device(loaded.model)
    ids = prompt_ids_of_length(loaded.tokenizer, prefill_tokens)
    x = torch.tensor([ids], device=device)  # [1, T]
    with torch.inference_mode():
        for _ in range(warmup):
            loaded.model(input_ids=x)
        prefill_s = median(timed_s(lambda: loaded.model(input_ids=x), device)[1] for _ in range(repeats))
    config = DecodeConfig.forced(decode_tokens)
    reset_peak_memory(device)
    records = [generate_ids(loaded, [ids], config, warmup=warmup if r == 0 else 0, logprobs=False,
                            decode_mode="eager")[0] for r in range(repeats)]
    gaps_ms = sorted(1e3 * g for r in records for g in r.token_gaps_s)
    rec = loaded.load_record
    return KernelMeasurement(
        kernel=loaded.kernel, load_s=rec.load_s, first_forward_s=rec.first_forward_s,
        memory_after_load=rec.memory, prefill_tokens=prefill_tokens, prefill_ms=prefill_s * 1e3,
        prefill_tokens_per_s=prefill_tokens / prefill_s, decode_tokens=decode_tokens,
        token_ms_p50=percentile(gaps_ms, 50), token_ms_p90=percentile(gaps_ms, 90),
        ttft_ms=median(r.ttft_s for r in records) * 1e3, peak_generation=memory_snapshot(device).to_dict(),
    )


def prompt_logits(loaded, prompts_ids: list[list[int]]):
    """Full-sequence logits for each prompt, float32 on the CPU: [T, V] per prompt."""
    import torch


    device = input_device(loaded.model)
    out = []
    with torch.inference_mode():
        for ids in prompts_ids:
            out.append(loaded.model(input_ids=torch.tensor([ids], device=device)).logits[0].float().cpu())
    return out


def greedy_continuations(loaded, prompts_ids: list[list[int]], new_tokens: int) -> list[list[int]]:
    """Greedy continuations, one prompt at a time (no padding, so kernels compare like for like)."""
    config = DecodeConfig.greedy(max_new_tokens=new_tokens)
    return [generate_ids(loaded, [p], config, logprobs=False, decode_mode="eager")[0].token_ids for p in prompts_ids]


@dataclass(frozen=True)
class Agreement:
    """How close one kernel's logits are to a reference's over a prompt set. Any non-finite logit
    makes every number NaN (and `nonfinite_share` says how many): NaN never passes."""

    reference: str
    kernel: str
    max_abs_dlogit: float
    mean_abs_dlogit: float
    mean_kl_nats: float  # KL(reference || kernel), averaged over positions
    top1_agreement: float  # share of positions with the same argmax
    greedy_identical: float  # share of prompts whose greedy continuation is identical
    nonfinite_share: float = 0.0  # share of logits (either side) that are NaN or infinite

    def to_dict(self) -> dict:
        return asdict(self)


def agreement(reference: str, kernel: str, ref_logits, logits, ref_tokens, tokens) -> Agreement:
    import torch

    total = sum(a.numel() for a in ref_logits)
    nonfinite = sum(int((~torch.isfinite(a)).sum() + (~torch.isfinite(b)).sum()) for a, b in zip(ref_logits, logits))
    if nonfinite:
        nan = float("nan")
        return Agreement(reference, kernel, nan, nan, nan, nan, nan, nonfinite_share=nonfinite / (2 * total))
    dmax, dsum, kl, top1 = 0.0, 0.0, 0.0, 0
    for a, b in zip(ref_logits, logits):
        d = (a - b).abs()
        dmax, dsum = max(dmax, float(d.max())), dsum + float(d.sum())
        la, lb = torch.log_softmax(a, -1), torch.log_softmax(b, -1)
        kl += float((la.exp() * (la - lb)).sum())
        top1 += int((a.argmax(-1) == b.argmax(-1)).sum())
    positions = sum(a.shape[0] for a in ref_logits)
    return Agreement(reference=reference, kernel=kernel, max_abs_dlogit=dmax, mean_abs_dlogit=dsum / total,
                     mean_kl_nats=kl / positions, top1_agreement=top1 / positions,
                     greedy_identical=sum(x == y for x, y in zip(ref_tokens, tokens)) / len(ref_tokens))


# --- the whole kernel comparison --------------------------------------------------------------

DTYPES = ("float32", "float16", "bfloat16")
REFERENCE_WORD = "reference"  # in attention_kernels: whichever kernel `reference` names


@dataclass(frozen=True)
class KernelStudyConfig:
    """What notebook 04 compares: one field per entry of its parameters cell (MODEL, DEVICE and
    OUTPUT_DIR apart), same names in lower case. The defaults are the plain kernel comparison;
    the notebook asks for the decode modes, proofs, profiles and attention comparison too."""

    kernels: str | tuple[str, ...] = "all"  # "all" registered kernels, or names; those that cannot run here are skipped
    reference: str = "torch"  # the kernel the others are compared with (the first that ran, if it cannot)
    dtype: str | None = None  # None: each kernel's default; "float32" | "float16" | "bfloat16"
    attention: str = DEFAULT_ATTENTION
    n_prompts: int = 4  # prompts for the agreement check
    prompt_tokens: int = 48  # their length (the i-th starts 7 * i tokens later)
    greedy_tokens: int = 16  # greedy continuation compared token by token
    prefill_tokens: int = 128
    decode_tokens: int = 32  # a forced-length greedy generation gives the per-token latencies
    repeats: int = 3
    float_reference: bool = False  # also compare with the checkpoint dequantized to dense float32 (small models)
    decode_modes: tuple[str, ...] = ("eager",)
    decode_contexts: tuple[int, ...] | None = None  # prompt lengths of the decode-mode table; None: prefill_tokens
    prove_steps: int = 64  # greedy steps each fast mode is compared with eager over; 0: no proof
    breakdown_steps: int = 0  # decode steps profiled for the time split; 0: none
    attentions: tuple[str, ...] = ()  # attention implementations compared, decoding eagerly
    attention_kernels: tuple[str, ...] = ()  # kernels that get that comparison ("reference": `reference`)

    def __post_init__(self):
        def bad(name, allowed):
            raise ConfigError(f"KernelStudyConfig.{name}={getattr(self, name)!r} is invalid: allowed {allowed}")

        for name in ("kernels", "decode_modes", "decode_contexts", "attentions", "attention_kernels"):
            value = getattr(self, name)
            if isinstance(value, (list, tuple)):  # lists from a notebook's parameters cell
                object.__setattr__(self, name, tuple(value))
        if self.kernels != "all" and not (isinstance(self.kernels, tuple) and self.kernels
                                          and all(isinstance(k, str) for k in self.kernels)):
            bad("kernels", '"all" or a non-empty list of kernel names')
        if self.dtype not in (None, *DTYPES):
            bad("dtype", f"None or one of {', '.join(DTYPES)}")
        check_attention(self.attention)
        for name in ("n_prompts", "prompt_tokens", "greedy_tokens", "prefill_tokens", "repeats"):
            if not (isinstance(getattr(self, name), int) and getattr(self, name) >= 1):
                bad(name, "an integer >= 1")
        if not (isinstance(self.decode_tokens, int) and self.decode_tokens >= 2):
            bad("decode_tokens", "an integer >= 2 (latencies are the gaps between tokens)")
        for name in ("prove_steps", "breakdown_steps"):
            if not (isinstance(getattr(self, name), int) and getattr(self, name) >= 0):
                bad(name, "an integer >= 0 (0: skip)")
        if not self.decode_modes or any(m not in DECODE_MODES for m in self.decode_modes):
            bad("decode_modes", f"a non-empty list of {', '.join(DECODE_MODES)}")
        if self.decode_contexts is not None and not (
                self.decode_contexts and all(isinstance(c, int) and c >= 1 for c in self.decode_contexts)):
            bad("decode_contexts", "None or a non-empty list of integers >= 1")
        for attention in self.attentions:
            check_attention(attention)

    @property
    def contexts(self) -> list[int]:
        return list(self.decode_contexts or [self.prefill_tokens])

    def compares_attention_on(self, kernel: str) -> bool:
        names = {self.reference if k == REFERENCE_WORD else k for k in self.attention_kernels}
        return bool(self.attentions) and kernel in names

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class KernelStudy:
    """Every kernel that ran (speed, memory, agreement) and every one that could not (why)."""

    device: str
    reference: str
    attention: str
    bandwidth_gbps: float | None
    decode_bytes: int | None
    floor_ms: float | None
    measurements: list[KernelMeasurement]
    agreements: list[Agreement]
    skipped: dict[str, str]
    dtype: dict[str, str]
    modes: list = field(default_factory=list)  # measure_modes rows: ms/token by mode and context
    proofs: list = field(default_factory=list)  # prove_modes rows: fast modes against eager
    splits: list = field(default_factory=list)  # breakdown.StepBreakdown dicts: where a step's time goes
    attention_rows: list = field(default_factory=list)  # compare_attention rows
    notes: list = field(default_factory=list)  # what the study left out and why
    config: dict = field(default_factory=dict)  # the KernelStudyConfig it ran with

    def frame(self):
        """One row per kernel that ran: speed, memory, the floor's share and agreement."""
        import pandas as pd

        agree = {a.kernel: a for a in self.agreements}
        rows = []
        for m in self.measurements:
            a = agree.get(m.kernel)
            row = {"kernel": m.kernel, "dtype": self.dtype.get(m.kernel), "load_s": m.load_s,
                   "first_forward_s": m.first_forward_s,
                   "mem_after_load_gb": m.memory_after_load.get("allocated_gb") or m.memory_after_load.get("rss_gb"),
                   "prefill_tokens_per_s": m.prefill_tokens_per_s, "token_ms_p50": m.token_ms_p50,
                   "token_ms_p90": m.token_ms_p90, "ttft_ms": m.ttft_ms}
            if self.floor_ms:
                row["floor_share"] = floor_share(self.floor_ms, m.token_ms_p50)
            if a:
                row.update(max_abs_dlogit=a.max_abs_dlogit, mean_kl=a.mean_kl_nats,
                           top1_agree=a.top1_agreement, greedy_identical=a.greedy_identical)
            rows.append(row)
        return pd.DataFrame(rows).set_index("kernel") if rows else pd.DataFrame()

    def headline(self) -> dict:
        """The numbers notebook 04 puts in the report's index."""
        ran = [m for m in self.measurements if m.token_ms_p50 is not None]
        best = min(ran, key=lambda m: m.token_ms_p50, default=None)
        share = floor_share(self.floor_ms, best.token_ms_p50) if best else None
        headline = {"kernels_run": len(self.measurements), "fastest_kernel": best.kernel if best else None,
                    "token_ms_p50": round(best.token_ms_p50, 3) if best else None,
                    "floor_share": round(share, 3) if share else None,
                    "worst_max_abs_dlogit": max((a.max_abs_dlogit for a in self.agreements), default=None)}
        timed = [r for r in self.modes if r.get("token_ms_p50") is not None]
        if timed:
            top = min(timed, key=lambda r: r["token_ms_p50"])
            headline.update(fastest_mode=f"{top['kernel']} · {top['decode_mode']} @ {top['context_tokens']}",
                            fastest_mode_token_ms_p50=round(top["token_ms_p50"], 3),
                            fastest_mode_floor_share=round(top["floor_share"], 3) if top.get("floor_share") else None)
        headline["fast_modes_proven"] = all(p.get("passed", False) for p in self.proofs) if self.proofs else None
        return headline

    def data(self) -> dict:
        """What notebook 04 saves under "data" (merge_kernel_reports reads it back)."""
        return {"study": self.to_dict(), "table": self.frame().reset_index().to_dict(orient="records"),
                "skipped": self.skipped}

    def to_dict(self) -> dict:
        return {"device": self.device, "reference": self.reference, "attention": self.attention,
                "bandwidth_gbps": self.bandwidth_gbps, "decode_bytes": self.decode_bytes, "floor_ms": self.floor_ms,
                "measurements": [m.to_dict() for m in self.measurements],
                "agreements": [a.to_dict() for a in self.agreements], "skipped": self.skipped, "dtype": self.dtype,
                "modes": self.modes, "proofs": self.proofs, "splits": self.splits,
                "attention_rows": self.attention_rows, "notes": self.notes, "config": self.config}

    @classmethod
    def from_dict(cls, d: dict) -> "KernelStudy":
        """A study from its JSON, this version's or an older one's (results/): old metric keys are
        renamed (measure.current_keys) and parts that older runs did not have come back empty."""
        d = dict(d)
        d["measurements"] = [KernelMeasurement.from_dict(m) for m in d.get("measurements", [])]
        d["agreements"] = [Agreement(**a) for a in d.get("agreements", [])]
        for rows in ("modes", "proofs", "splits", "attention_rows"):
            d[rows] = [current_keys(r) for r in d.get(rows) or []]
        return cls(**d)


def run_kernel_study(model_path, config: KernelStudyConfig = KernelStudyConfig(), device: str = "auto",
                     log=print) -> KernelStudy:
    """Load the checkpoint with each kernel of `config` in turn (the reference first), measure it,
    compare its logits and greedy tokens with the reference's, and release it before the next one.
    `skipped` says why every other registered kernel did not run: the registry's reason where it
    cannot run here, its error where it failed to load, or that it was not asked for.
    `float_reference` also compares with the checkpoint dequantized to a dense float32 model (not
    for a synthetic checkpoint: a dense copy of the real shapes would need 130 GB).

    Per kernel, also: ms/token in each of `decode_modes` at each of `decode_contexts`, each fast mode
    proven against eager over `prove_steps` steps, the per-step time split of each mode over
    `breakdown_steps` steps, and for the kernels in `attention_kernels`, eager decoding with each
    of `attentions`."""
    import torch

    device = resolve_device(device)
    path = Path(model_path)
    available = {a.kernel: a for a in available_kernels(device) if a.kernel != AUTO}
    wanted = list(available) if config.kernels == "all" else list(config.kernels)
    order = [config.reference] + [k for k in wanted if k != config.reference]
    skipped = {k: a.reason for k, a in available.items() if not a.available}
    skipped.update({k: "not asked for (KernelStudyConfig.kernels)" for k in available
                    if k not in order and k not in skipped})
    dtype = getattr(torch, config.dtype) if config.dtype else None
    bandwidth = measure_copy_bandwidth_gbps(device)
    study = KernelStudy(device=device, reference=config.reference, attention=config.attention,
                        bandwidth_gbps=bandwidth, decode_bytes=None, floor_ms=None, measurements=[], agreements=[],
                        skipped=skipped, dtype={}, config=config.to_dict())
    prompts = reference = None
    for name in (k for k in order if k not in skipped):  # a name the registry does not know fails to load
        log(f"[{name}] loading")
        try:
            loaded = load_model(path, kernel=name, device=device, dtype=dtype)
        except KernelUnavailable as e:
            study.skipped[name] = str(e)
            log(f"[{name}] skipped: {e}")
            continue
        if prompts is None:
            prompts = [prompt_ids_of_length(loaded.tokenizer, config.prompt_tokens + 7 * i)[7 * i:]
                       for i in range(config.n_prompts)]
            study.decode_bytes = (decode_bytes_per_token(loaded)
                                  + kv_bytes_per_token(loaded.model.config) * config.prefill_tokens)
            study.floor_ms = floor_ms(study.decode_bytes, bandwidth)
        reference = _measure_one(loaded, name, config, prompts, bandwidth, study, reference, log)
        loaded.release()
    if config.float_reference and reference is not None:
        if is_synthetic(path):
            study.notes.append("float_reference: not compared; the checkpoint is synthetic (random weights of "
                               "the real shapes: a dense float32 copy would not fit)")
        else:
            study.agreements.insert(0, _float_agreement(path, prompts, reference))
    return study


def _measure_one(loaded, name, config: KernelStudyConfig, prompts, bandwidth, study: KernelStudy, reference, log):
    """Everything the study measures on one loaded kernel; returns the reference's (name, logits,
    tokens): this kernel's when no kernel ran before it."""
    set_attention(loaded, config.attention)
    study.dtype[loaded.kernel] = loaded.load_record.dtype  # what ran: AutoGPTQ's may name a fallback
    logits = prompt_logits(loaded, prompts)
    tokens = greedy_continuations(loaded, prompts, config.greedy_tokens)
    if reference is None:
        reference = (loaded.kernel, logits, tokens)
    else:
        study.agreements.append(agreement(reference[0], loaded.kernel, reference[1], logits, reference[2], tokens))
    m = measure_kernel(loaded, prefill_tokens=config.prefill_tokens, decode_tokens=config.decode_tokens,
                       repeats=config.repeats)
    study.measurements.append(m)
    log(f"[{name}] {m.token_ms_p50:.2f} ms/token (p50), prefill {m.prefill_tokens_per_s:.0f} tokens/s")
    contexts, modes = config.contexts, config.decode_modes
    if modes != ("eager",) or config.decode_contexts:
        rows = measure_modes(loaded, modes, contexts, config.decode_tokens, config.repeats, bandwidth,
                             config.attention)
        study.modes += rows
        log(f"[{name}] " + "; ".join(f"{r['decode_mode_requested']}@{r['context_tokens']}: "
                                     + (f"{r['token_ms_p50']:.2f} ms" if "why_not" not in r else "n/a")
                                     for r in rows))
    if config.prove_steps and any(mode != "eager" for mode in modes):
        study.proofs += prove_modes(loaded, modes, contexts[0], config.prove_steps, config.attention)
    if config.breakdown_steps:
        study.splits += breakdowns(loaded, modes, contexts[0], config.breakdown_steps, config.attention)
    if config.compares_attention_on(name):
        study.attention_rows += compare_attention(loaded, config.attentions, contexts[0], config.decode_tokens,
                                                  config.repeats, config.breakdown_steps or 8, bandwidth)
    return reference


def _float_agreement(path, prompts, reference) -> Agreement:
    """The reference kernel against the checkpoint dequantized to a dense float32 model."""
    import torch

    ref_name, ref_logits, ref_tokens = reference
    dense = load_reference_model(path)
    with torch.inference_mode():
        dense_logits = [dense(input_ids=torch.tensor([p])).logits[0].float() for p in prompts]
    return agreement("float32-dequantized", ref_name, dense_logits, ref_logits, ref_tokens, ref_tokens)


# --- kernel reports of several environments -------------------------------------------------------

def merge_kernel_reports(paths):
    """One table from several runs of notebook 04, e.g. the main environment's (gptqmodel) and
    .venv-autogptq's (AutoGPTQ, run with `--jupyter-kernel codefuse-autogptq`).

    `paths`: 04_kernels.json files, or the report folders that hold them. One row per kernel that
    ran, with its run's context (`source` folder, `device`, `reference`, and `jupyter_kernel` and
    `python` from the report.json beside it, when there is one), then one row per kernel that ran
    in none of the runs, with each run's reason in `why_not`. The agreement columns compare a
    kernel with its own run's reference kernel: across runs only where the references agree.
    """
    import pandas as pd

    rows, why_not = [], {}
    for given in paths:
        file = Path(given) / "04_kernels.json" if Path(given).is_dir() else Path(given)
        try:
            data = json.loads(file.read_text(encoding="utf-8")).get("data") or {}
        except (OSError, ValueError, AttributeError) as e:
            raise ConfigError(f"{file}: not a readable 04_kernels.json ({e}); pass the files notebook 04 "
                              "saved, or the report folders that hold them") from None
        if not isinstance(data.get("table"), list):
            raise ConfigError(f"{file}: has no data.table; is it the 04_kernels.json that notebook 04 saves?")
        run = _kernel_run_context(file, data.get("study") or {})
        rows += [{"kernel": row["kernel"], **run, **{k: v for k, v in current_keys(row).items() if k != "kernel"}}
                 for row in data["table"]]
        for kernel, reason in (data.get("skipped") or {}).items():
            why_not.setdefault(kernel, []).append(f"{run['source']}: {reason}")
    # A kernel's recorded name may add what really ran: "autogptq-cuda-old (torch fallback: ...)".
    ran = {row["kernel"].split(" (")[0] for row in rows}
    rows += [{"kernel": k, "why_not": "; ".join(reasons)} for k, reasons in why_not.items() if k not in ran]
    return pd.DataFrame(rows)


def _kernel_run_context(file, study: dict) -> dict:
    """Where one 04_kernels.json came from. Its reference is read off its agreements, because the
    reference it asked for may not run in that environment (the first kernel that ran takes over)."""
    agreements = study.get("agreements", [])
    refs = [a["reference"] for a in agreements if a["reference"] != "float32-dequantized"]
    refs += [a["kernel"] for a in agreements] + [m["kernel"] for m in study.get("measurements", [])]
    context = {"source": str(file.parent), "device": study.get("device"), "reference": refs[0] if refs else None,
               "jupyter_kernel": None, "python": None}
    try:
        report = json.loads((file.parent / "report.json").read_text(encoding="utf-8"))
        env = report["environment"]  # reports before the vocabulary named it kernel_python
        context.update(jupyter_kernel=report["config"]["jupyter_kernel"],
                       python=env.get("jupyter_kernel_python", env.get("kernel_python")))
    except (OSError, ValueError, KeyError, TypeError):
        pass  # a notebook run by hand has no report.json beside it
    return context
