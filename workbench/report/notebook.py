"""What every notebook does first and last: resolve and load the model, save its results.

Notebooks stay thin; the steps they share live here, where they are tested.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from ..cache import atomic_write_json
from ..errors import ConfigError
from ..generation.config import DecodeConfig, unexpressed_settings
from ..generation.fast import parse_fast_config, set_fast_config
from ..generation.record import GenerationRecord
from ..model.checkpoint import model_kind
from ..model.libraries import quiet
from ..model.load import load_model, resolve_model


def setup(model="demo", kernel="auto", device="auto", dtype=None, verify=True):
    """Quiet the libraries, resolve MODEL and load it with KERNEL on DEVICE."""
    quiet()
    return load_model(resolve_model(model), kernel=kernel, device=device, dtype=dtype, verify=verify)


def fast_step(loaded, decode_mode: str, fields: str):
    """A notebook's FAST_CONFIG ("fuse=1 compile=1 ..." , FastConfig's fields) put on `loaded` for
    DECODE_MODE = "fast"; returns the FastConfig, or None when FAST_CONFIG is empty. Given with another
    decode mode, or with a field that is wrong, it is a ConfigError naming it."""
    if not fields.strip():
        return None
    if decode_mode != "fast":
        raise ConfigError(f"FAST_CONFIG={fields!r} configures DECODE_MODE = 'fast'; DECODE_MODE is {decode_mode!r}")
    return set_fast_config(loaded, parse_fast_config(fields.split()))


def describe(loaded) -> str:
    """One line saying what is loaded, for the top of a notebook's output."""
    rec = loaded.load_record
    what = {"synthetic": "SYNTHETIC checkpoint (random weights): speed and memory only",
            "demo": "demo model (not CodeFuse-34B)", "checkpoint": "checkpoint"}[model_kind(loaded.path)]
    return (f"{what}: {loaded.path.name} | kernel {loaded.kernel} (asked: {loaded.kernel_requested}) | "
            f"{rec.env.get('device_name')} | {rec.dtype} | load {rec.load_s:.1f} s")


def printer(end="", file=None):
    """An `on_token` callback that prints each new piece of text as it arrives."""
    out = file or sys.stdout

    def on_token(token_id: int, text: str) -> None:
        out.write(text)
        out.flush()

    return on_token


def save_results(output_dir, name: str, result=None, *, headline: dict | None = None, loaded=None,
                 records=None, data=None) -> dict:
    """Write OUTPUT_DIR/<name>.json: the headline numbers, the records, the figures' data and
    the context (what was loaded, where, when). Returns the headline, so that a notebook's last
    cell shows the numbers the report's index will show.

    `result` is what a notebook's study returned (or one GenerationRecord): it gives the headline
    (`headline()`), the data (`data()`) and the records (`records`); a keyword given wins."""
    if isinstance(result, GenerationRecord):
        records = [result] if records is None else records
    elif result is not None:
        data = result.data() if data is None and hasattr(result, "data") else data
        records = getattr(result, "records", None) if records is None else records
    if headline is None:
        if result is None:
            raise ConfigError(f"save_results({name!r}): give a result that builds its headline, or headline=")
        headline = result.headline()
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    payload = {
        "notebook": name,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "headline": headline,
        "load": loaded.load_record.to_dict() if loaded is not None else None,
        "records": [r.to_dict() for r in records or ()],
        "data": data or {},
    }
    atomic_write_json(out / f"{name}.json", payload)
    return headline


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
        "tokens/s (after the first)": round(record.tokens_per_s, 1) if record.tokens_per_s else None,
        "per-token p50 / p90 / p99 (ms)": (f"{lat.p50_ms:.2f} / {lat.p90_ms:.2f} / {lat.p99_ms:.2f}"
                                           if (lat := record.token_latency()) else None),
        "mean log-prob": round(sum(record.logprobs) / len(record.logprobs), 3) if record.logprobs else None,
        "warm-up runs": record.warmup_runs,
        "decode mode (asked)": f"{record.decode_mode} ({record.decode_mode_requested})",
    }
    if record.decode_note:
        rows["decode mode note"] = record.decode_note
    if gen.get("peak_allocated_gb") is not None:
        rows["GPU peak allocated / reserved (GB)"] = f"{gen['peak_allocated_gb']:.2f} / {gen['peak_reserved_gb']:.2f}"
        if gen.get("device_used_gb") is not None:  # records from before the field have none
            used, total = gen["device_used_gb"], gen["device_total_gb"]
            rows["GPU in use, device-wide (GB, driver)"] = f"{used:.2f} of {total:.2f}"
    else:
        rows["process RSS / peak (GB)"] = f"{gen.get('rss_gb', 0):.2f} / {gen.get('peak_rss_gb', 0):.2f}"
    return pd.DataFrame({"value": rows})


def decoding_settings(loaded, config: DecodeConfig):
    """This run's decoding settings beside the card's quick-start and the checkpoint's own
    generation_config.json (read at load), one column each; settings the file makes that a
    DecodeConfig cannot express are named in the last row."""
    import pandas as pd

    columns = {"this run": config, "card quick-start": DecodeConfig.card()}
    left_out = []
    if loaded.generation_config is not None:
        left_out = unexpressed_settings(loaded.generation_config)
        columns["checkpoint (generation_config.json)"] = DecodeConfig.from_generation_config(
            loaded.generation_config, ignore=left_out)
    table = pd.DataFrame({name: {k: str(v) for k, v in c.to_dict().items()} for name, c in columns.items()})
    if loaded.generation_config is not None:
        table.loc["not expressible (left out)"] = ["", "", ", ".join(left_out) or "none"]
    return table
