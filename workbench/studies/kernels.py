"""The kernel study behind notebook 04: every kernel's speed, memory and agreement with a reference.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from ..errors import ConfigError, KernelUnavailable
from ..generation.config import DecodeConfig
from ..generation.generate import generate_ids
from ..generation.inputs import input_device
from ..measure import Latency, measure_copy_bandwidth_gbps, memory_snapshot, reset_peak_memory, timed_s
from ..model.attention import DEFAULT_ATTENTION, set_attention
from ..model.load import load_model, load_reference_model
from ..model.registry import resolve_device
from ..prompts.encoding import prompt_ids_of_length
from .decode_modes import breakdowns, compare_attention, measure_modes, prove_modes
from .floor import decode_bytes_per_token, floor_ms, kv_bytes_per_token

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
    decode: Latency  # inter-token latencies of a fixed-length greedy generation
    ttft_ms: float
    peak_generation: dict

    def to_dict(self) -> dict:
        d = asdict(self)
        d["decode"] = self.decode.to_dict() if self.decode else None
        return d


def measure_kernel(loaded, prefill_tokens: int = 128, decode_tokens: int = 32, repeats: int = 3,
                   warmup: int = 1) -> KernelMeasurement:
    """Prefill throughput (a plain forward pass) and decode latency (a greedy generation forced to
    `decode_tokens` new tokens). `warmup` untimed runs of each come first."""
    import torch


    device = input_device(loaded.model)
    ids = prompt_ids_of_length(loaded.tokenizer, prefill_tokens)
    x = torch.tensor([ids], device=device)  # [1, T]
    with torch.inference_mode():
        for _ in range(warmup):
            loaded.model(input_ids=x)
        times = [timed_s(lambda: loaded.model(input_ids=x), device)[1] for _ in range(repeats)]
    prefill_s = sorted(times)[len(times) // 2]
    config = DecodeConfig.forced(decode_tokens)
    reset_peak_memory(device)
    gaps, ttfts = [], []
    for record in (generate_ids(loaded, [ids], config, warmup=warmup if r == 0 else 0, logprobs=False)[0]
                   for r in range(repeats)):
        t = record.token_times_s
        gaps += [b - a for a, b in zip(t, t[1:])]
        ttfts.append(record.ttft_s)
    rec = loaded.load_record
    return KernelMeasurement(
        kernel=loaded.kernel, load_s=rec.load_s, first_forward_s=rec.first_forward_s,
        memory_after_load=rec.memory, prefill_tokens=prefill_tokens, prefill_ms=prefill_s * 1e3,
        prefill_tokens_per_s=prefill_tokens / prefill_s, decode_tokens=decode_tokens,
        decode=Latency.from_values(gaps), ttft_ms=sorted(ttfts)[len(ttfts) // 2] * 1e3,
        peak_generation=memory_snapshot(device).to_dict(),
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
    return [generate_ids(loaded, [p], config, logprobs=False)[0].token_ids for p in prompts_ids]


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

    def frame(self):
        import pandas as pd

        agree = {a.kernel: a for a in self.agreements}
        rows = []
        for m in self.measurements:
            a = agree.get(m.kernel)
            row = {"kernel": m.kernel, "dtype": self.dtype.get(m.kernel), "load_s": m.load_s,
                   "first_forward_s": m.first_forward_s,
                   "mem_after_load_gb": m.memory_after_load.get("allocated_gb") or m.memory_after_load.get("rss_gb"),
                   "prefill_tok_s": m.prefill_tokens_per_s, "decode_ms_p50": m.decode.p50_ms,
                   "decode_ms_p90": m.decode.p90_ms, "ttft_ms": m.ttft_ms}
            if self.floor_ms:
                row["floor_share"] = self.floor_ms / m.decode.p50_ms
            if a:
                row.update(max_abs_dlogit=a.max_abs_dlogit, mean_kl=a.mean_kl_nats,
                           top1_agree=a.top1_agreement, greedy_identical=a.greedy_identical)
            rows.append(row)
        return pd.DataFrame(rows).set_index("kernel") if rows else pd.DataFrame()

    def to_dict(self) -> dict:
        return {"device": self.device, "reference": self.reference, "attention": self.attention,
                "bandwidth_gbps": self.bandwidth_gbps, "decode_bytes": self.decode_bytes, "floor_ms": self.floor_ms,
                "measurements": [m.to_dict() for m in self.measurements],
                "agreements": [a.to_dict() for a in self.agreements], "skipped": self.skipped, "dtype": self.dtype,
                "modes": self.modes, "proofs": self.proofs, "splits": self.splits,
                "attention_rows": self.attention_rows}


def run_kernel_study(model_path, kernels, device: str, reference: str = "torch", *, dtype=None,
                     attention: str = DEFAULT_ATTENTION, n_prompts: int = 4, prompt_tokens: int = 48,
                     greedy_tokens: int = 16, prefill_tokens: int = 128, decode_tokens: int = 32,
                     repeats: int = 3, float_reference: bool = False, decode_modes=("eager",),
                     decode_contexts=None, prove_steps: int = 64, breakdown_steps: int = 0,
                     attentions=(), attention_kernels=(), log=print) -> KernelStudy:
    """Load the checkpoint with each kernel in turn (the reference first), measure it, compare its
    logits and greedy tokens with the reference's, and release it before the next one.
    `float_reference` also compares with the checkpoint dequantized to a dense float32 model.

    Per kernel, also: ms/token in each of `decode_modes` at each of `decode_contexts` (default:
    prefill_tokens), each fast mode proven against eager over `prove_steps` steps (0: not),
    the per-step time split of each mode over `breakdown_steps` steps (0: not), and for the
    kernels in `attention_kernels`, eager decoding with each of `attentions`."""


    device = resolve_device(device)
    order = [reference] + [k for k in kernels if k != reference]
    measurements, agreements, skipped, dtypes = [], [], {}, {}
    modes, proofs, splits, attention_rows = [], [], [], []
    ref_logits = ref_tokens = None
    prompts = None
    bandwidth = measure_copy_bandwidth_gbps(device)
    decode_bytes = floor = None
    for name in order:
        log(f"[{name}] loading")
        try:
            loaded = load_model(model_path, kernel=name, device=device, dtype=dtype)
        except KernelUnavailable as e:
            skipped[name] = str(e)
            log(f"[{name}] skipped: {e}")
            continue
        set_attention(loaded, attention)
        dtypes[loaded.kernel] = loaded.load_record.dtype  # what ran: AutoGPTQ's may name a fallback
        if prompts is None:
            prompts = [prompt_ids_of_length(loaded.tokenizer, prompt_tokens + 7 * i)[7 * i:] for i in range(n_prompts)]
            decode_bytes = decode_bytes_per_token(loaded) + kv_bytes_per_token(loaded.model.config) * prefill_tokens
            floor = floor_ms(decode_bytes, bandwidth)
        logits = prompt_logits(loaded, prompts)
        tokens = greedy_continuations(loaded, prompts, greedy_tokens)
        if ref_logits is None:
            ref_logits, ref_tokens, ref_name = logits, tokens, loaded.kernel
        else:
            agreements.append(agreement(ref_name, loaded.kernel, ref_logits, logits, ref_tokens, tokens))
        m = measure_kernel(loaded, prefill_tokens=prefill_tokens, decode_tokens=decode_tokens, repeats=repeats)
        measurements.append(m)
        log(f"[{name}] decode p50 {m.decode.p50_ms:.2f} ms/token, prefill {m.prefill_tokens_per_s:.0f} tok/s")
        contexts = list(decode_contexts or [prefill_tokens])
        if decode_modes and tuple(decode_modes) != ("eager",) or decode_contexts:
            rows = measure_modes(loaded, decode_modes, contexts, decode_tokens, repeats, bandwidth, attention)
            modes += rows
            log(f"[{name}] " + "; ".join(f"{r['mode_requested']}@{r['context_tokens']}: " +
                                         (f"{r['decode_ms_p50']:.2f} ms" if "why_not" not in r else "n/a") for r in rows))
        if prove_steps and any(mode != "eager" for mode in decode_modes):
            proofs += prove_modes(loaded, decode_modes, contexts[0], prove_steps, attention)
        if breakdown_steps:
            splits += breakdowns(loaded, decode_modes, contexts[0], breakdown_steps, attention)
        if attentions and name in attention_kernels:
            attention_rows += compare_attention(loaded, attentions, contexts[0], decode_tokens, repeats,
                                                            breakdown_steps or 8, bandwidth)
        loaded.release()
    if float_reference and ref_logits is not None:
        import torch

        dense = load_reference_model(model_path)
        with torch.inference_mode():
            dense_logits = [dense(input_ids=torch.tensor([p])).logits[0].float() for p in prompts]
        agreements.insert(0, agreement("float32-dequantized", ref_name, dense_logits, ref_logits, ref_tokens, ref_tokens))
        del dense
    return KernelStudy(device=device, reference=order[0], attention=attention, bandwidth_gbps=bandwidth,
                       decode_bytes=decode_bytes, floor_ms=floor, measurements=measurements,
                       agreements=agreements, skipped=skipped, dtype=dtypes, modes=modes, proofs=proofs,
                       splits=splits, attention_rows=attention_rows)


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
    import json
    from pathlib import Path

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
        rows += [{"kernel": row["kernel"], **run, **{k: v for k, v in row.items() if k != "kernel"}}
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
    import json

    agreements = study.get("agreements", [])
    refs = [a["reference"] for a in agreements if a["reference"] != "float32-dequantized"]
    refs += [a["kernel"] for a in agreements] + [m["kernel"] for m in study.get("measurements", [])]
    context = {"source": str(file.parent), "device": study.get("device"), "reference": refs[0] if refs else None,
               "jupyter_kernel": None, "python": None}
    try:
        report = json.loads((file.parent / "report.json").read_text(encoding="utf-8"))
        context.update(jupyter_kernel=report["config"]["jupyter_kernel"],
                       python=report["environment"].get("kernel_python"))
    except (OSError, ValueError, KeyError, TypeError):
        pass  # a notebook run by hand has no report.json beside it
    return context
