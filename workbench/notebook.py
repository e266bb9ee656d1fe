"""What every notebook does first and last: resolve and load the model, save its results.

Notebooks stay thin; the steps they share live here, where they are tested.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import sys
import time
import warnings
from pathlib import Path

from .cache import atomic_write_json


def quiet() -> None:
    """Keep notebook output readable: library chatter off, our own results on."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    warnings.filterwarnings("ignore", category=UserWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    for name in ("transformers", "torch", "torchao", "accelerate", "gptqmodel", "datasets"):
        logging.getLogger(name).setLevel(logging.ERROR)
    if importlib.util.find_spec("gptqmodel") is not None:  # the AutoGPTQ environment has none
        from .engine import import_gptqmodel

        import_gptqmodel()
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def resolve_model(model: str | os.PathLike) -> Path:
    """'demo' means the embedded demo model (built on first use); anything else is a folder."""
    if str(model) == "demo":
        from .demo import build

        return build(log=lambda msg: print(msg, file=sys.stderr))
    path = Path(model).expanduser()
    if not path.exists():
        from .errors import CheckpointError

        raise CheckpointError(f"MODEL={model!r}: no such folder. Use 'demo' or the path of a checkpoint folder.")
    return path


def setup(model="demo", kernel="auto", device="auto", dtype=None, verify=True):
    """Quiet the libraries, resolve MODEL and load it with KERNEL on DEVICE."""
    from .kernels import load_model

    quiet()
    return load_model(resolve_model(model), kernel=kernel, device=device, dtype=dtype, verify=verify)


def describe(loaded) -> str:
    """One line saying what is loaded, for the top of a notebook's output."""
    rec = loaded.load_record
    what = "SYNTHETIC checkpoint (random weights): speed and memory only" if rec.synthetic else \
        "demo model (not CodeFuse-34B)" if _is_demo(loaded.path) else "checkpoint"
    return (f"{what}: {loaded.path.name} | kernel {loaded.kernel} (asked: {loaded.kernel_requested}) | "
            f"{rec.env.get('device_name')} | {rec.dtype} | load {rec.load_s:.1f} s")


def _is_demo(path: Path) -> bool:
    try:
        return bool(json.loads((Path(path) / "config.json").read_text()).get("workbench_demo"))
    except (OSError, ValueError):
        return False


def printer(end="", file=None):
    """An `on_token` callback that prints each new piece of text as it arrives."""
    out = file or sys.stdout

    def on_token(token_id: int, text: str) -> None:
        out.write(text)
        out.flush()

    return on_token


def save_results(output_dir, name: str, *, headline: dict, loaded=None, records=(), data=None) -> Path:
    """Write OUTPUT_DIR/<name>.json: the headline numbers, the records, the figures' data and
    the context (what was loaded, where, when)."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    payload = {
        "notebook": name,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "headline": headline,
        "load": loaded.load_record.to_dict() if loaded is not None else None,
        "records": [r.to_dict() for r in records],
        "data": data or {},
    }
    path = out / f"{name}.json"
    atomic_write_json(path, payload)
    return path


def summary(record):
    """The record's measurements as a two-column table."""
    import pandas as pd

    gen = record.memory.get("generation") or {}
    rows = {
        "kernel (asked)": f"{record.kernel} ({record.kernel_requested})",
        "device": record.env.get("device_name"),
        "prompt tokens": record.prompt_tokens,
        "new tokens": record.new_tokens,
        "stop reason": record.stop_reason,
        "time to first token (ms)": round(record.ttft_s * 1e3, 2),
        "prefill (ms)": round(record.prefill_s * 1e3, 2),
        "decode tokens/s": round(record.decode_tokens_per_s, 1) if record.decode_tokens_per_s else None,
        "inter-token p50 / p90 / p99 (ms)": (f"{record.itl.p50_ms:.2f} / {record.itl.p90_ms:.2f} / {record.itl.p99_ms:.2f}"
                                             if record.itl else None),
        "mean log-prob": round(sum(record.logprobs) / len(record.logprobs), 3) if record.logprobs else None,
        "warm-up runs": record.warmup_runs,
        "decode mode (asked)": f"{record.decode_mode} ({record.decode_mode_requested})",
    }
    if record.decode_note:
        rows["decode mode note"] = record.decode_note
    if gen.get("peak_allocated_gb") is not None:
        rows["GPU peak allocated / reserved (GB)"] = f"{gen['peak_allocated_gb']:.2f} / {gen['peak_reserved_gb']:.2f}"
    else:
        rows["process RSS / peak (GB)"] = f"{gen.get('rss_gb', 0):.2f} / {gen.get('peak_rss_gb', 0):.2f}"
    return pd.DataFrame({"value": rows})


class DecodingGrid:
    """The records of a temperature x top-p sweep and one row of metrics per grid point."""

    def __init__(self, frame, records):
        self.frame, self.records = frame, records


def decoding_grid(loaded, problems, temperatures, top_ps, *, samples=2, top_k=0, repetition_penalty=1.0,
                  max_new_tokens=40, seed=0, pass_rate=False) -> DecodingGrid:
    """Sample every problem `samples` times (one seeded batch) at every grid point."""
    import pandas as pd

    from .analysis import distinct_n, parses
    from .generation import DecodeConfig, generate
    from .humaneval import build_prompt

    rows, records = [], []
    for t in temperatures:
        for p in top_ps:
            config = DecodeConfig(do_sample=True, temperature=t, top_p=p, top_k=top_k,
                                  repetition_penalty=repetition_penalty, max_new_tokens=max_new_tokens, seed=seed)
            point = []
            for problem in problems:
                point += generate(loaded, [build_prompt(problem)] * samples, config, format="raw")
            records += point
            lps = [lp for r in point for lp in r.logprobs]
            row = {"temperature": t, "top_p": p,
                   "distinct_2": distinct_n([r.token_ids for r in point], 2),
                   "mean_logprob": sum(lps) / len(lps) if lps else float("nan"),
                   "parses_share": sum(parses(r.text) for r in point) / len(point),
                   "mean_new_tokens": sum(r.new_tokens for r in point) / len(point)}
            if pass_rate:
                row["pass_rate"] = _pass_rate(problems, point, samples)
            rows.append(row)
    return DecodingGrid(pd.DataFrame(rows), records)


def _pass_rate(problems, records, samples: int) -> float:
    from .humaneval import evaluate, extract_completion

    completions = {}
    for i, problem in enumerate(problems):
        batch = records[i * samples:(i + 1) * samples]
        completions[problem.task_id] = [extract_completion(r.text) for r in batch]
    return evaluate(completions).pass_at_k(1)
