"""How tokens are chosen (`DecodeConfig`) and which decode loop runs them (the decode modes).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError

STOP_REASONS = ("eos", "max_new_tokens", "stop_string")
# Logits are divided by the temperature in float32. Above this no real logit can overflow there
# (|logit| would need to pass 3e33); far below it inf - inf turns the softmax into NaN. Sampling
# this cold is greedy decoding in all but name: use do_sample=False for that.
MIN_TEMPERATURE = 1e-5
MAX_SEED = 2**64 - 1  # torch.manual_seed's range


def _is_number(x) -> bool:
    """A finite int or float (bool is not a number here, nor inf or nan)."""
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _is_integer(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)
GENERATION_CONFIG_FILE = "generation_config.json"
# Settings of a transformers generation config that DecodeConfig holds under the same name.
_SHARED_SETTINGS = ("do_sample", "temperature", "top_p", "top_k", "repetition_penalty", "num_beams", "max_new_tokens",
                    "min_new_tokens")
# Keys that name special tokens or record where the file came from: not how tokens are chosen.
_NOT_DECODING = {"bos_token_id", "eos_token_id", "pad_token_id", "decoder_start_token_id", "transformers_version",
                 "_from_model_config"}


@dataclass(frozen=True)
class DecodeConfig:
    """How tokens are chosen. Defaults are greedy; `card()` is the model card's quick-start."""

    do_sample: bool = False  # False = greedy (or beam search with num_beams > 1)
    temperature: float = 1.0  # < 1.0 sharpens the distribution, > 1.0 flattens it; sampling only
    top_p: float = 1.0  # nucleus: sample from the smallest set holding this much probability
    top_k: int = 0  # sample from the k likeliest tokens; 0 = no limit
    repetition_penalty: float = 1.0  # > 1.0 discourages tokens already in the sequence
    num_beams: int = 1
    max_new_tokens: int = 512
    min_new_tokens: int = 0  # eos is suppressed until this many tokens exist
    seed: int | None = None  # seeds torch before generating, so sampled runs repeat exactly
    stop: tuple[str, ...] = ()  # generation ends once the new text contains one of these

    def __post_init__(self):
        def bad(name, allowed):
            raise ConfigError(f"DecodeConfig.{name}={getattr(self, name)!r} is invalid: allowed {allowed}")

        if not isinstance(self.do_sample, bool):
            bad("do_sample", "True or False")
        if not (_is_number(self.temperature) and self.temperature >= MIN_TEMPERATURE):
            bad("temperature", f"a finite number >= {MIN_TEMPERATURE:g} (for greedy decoding use do_sample=False)")
        if not (_is_number(self.top_p) and 0 < self.top_p <= 1):
            bad("top_p", "a number in (0, 1]")
        if not (_is_integer(self.top_k) and self.top_k >= 0):
            bad("top_k", "an integer >= 0 (0 = off)")
        if not (_is_number(self.repetition_penalty) and self.repetition_penalty > 0):
            bad("repetition_penalty", "a finite number > 0 (1.0 = off)")
        if not (_is_integer(self.num_beams) and self.num_beams >= 1):
            bad("num_beams", "an integer >= 1")
        if not (_is_integer(self.max_new_tokens) and self.max_new_tokens >= 1):
            bad("max_new_tokens", "an integer >= 1 (generation also checks it against the model's context)")
        if not (_is_integer(self.min_new_tokens) and 0 <= self.min_new_tokens <= self.max_new_tokens):
            bad("min_new_tokens", f"an integer in [0, max_new_tokens={self.max_new_tokens}]")
        if self.seed is not None and not (_is_integer(self.seed) and 0 <= self.seed <= MAX_SEED):
            bad("seed", "None or an integer in [0, 2**64 - 1]")
        if not isinstance(self.stop, (list, tuple)) or not all(isinstance(s, str) and s for s in self.stop):
            bad("stop", "a sequence of non-empty strings")
        object.__setattr__(self, "stop", tuple(self.stop))

    @classmethod
    def greedy(cls, **overrides) -> "DecodeConfig":
        """Greedy decoding, as codefuse-ai evaluated HumanEval (at most 512 new tokens)."""
        return cls(**{"do_sample": False, "max_new_tokens": 512, **overrides})

    @classmethod
    def forced(cls, new_tokens: int, **overrides) -> "DecodeConfig":
        """Greedy decoding of exactly `new_tokens` tokens (eos suppressed until then): every timing
        run, kernel and mode compared over the same number of steps."""
        return cls.greedy(**{"max_new_tokens": new_tokens, "min_new_tokens": new_tokens, **overrides})

    @classmethod
    def card(cls, **overrides) -> "DecodeConfig":
        """The model card's quick-start settings."""
        return cls(**{"do_sample": True, "top_p": 0.95, "temperature": 0.1, "max_new_tokens": 512, **overrides})

    @classmethod
    def from_generation_config(cls, source, **overrides) -> "DecodeConfig":
        """The DecodeConfig that chooses tokens as a transformers generation config says.

        source: a GenerationConfig, the dict of a generation_config.json (as a LoadRecord keeps it:
        `loaded.load_record.generation_config`), or a folder or file holding one. Settings the
        source leaves out take DecodeConfig's defaults (greedy, 512 new tokens), not those of
        transformers, which differ between its versions; `overrides` win over both. A setting that
        DecodeConfig cannot express (max_length, typical_p, ...) raises ConfigError naming it,
        unless `overrides` set it aside: max_length by max_new_tokens, others by `ignore=[names]`.
        """
        ignore = set(overrides.pop("ignore", ()))
        settings = _generation_settings(source)
        if "max_new_tokens" in overrides:
            ignore.add("max_length")
        if unknown := sorted(set(unexpressed_settings(settings)) - ignore):
            raise ConfigError(f"the generation config sets {unknown}, which DecodeConfig cannot express (it has "
                              f"{', '.join(_SHARED_SETTINGS)}); pass max_new_tokens= for max_length, or "
                              f"ignore={unknown} to leave them out")
        chosen = {k: settings[k] for k in _SHARED_SETTINGS if settings.get(k) is not None}
        return cls(**{**chosen, **overrides})

    def replace(self, **changes) -> "DecodeConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["stop"] = list(self.stop)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "DecodeConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ConfigError(f"unknown DecodeConfig fields {sorted(unknown)}; known: {sorted(known)}")
        return cls(**{**d, "stop": tuple(d.get("stop", ()))})

    def generation_config(self, tokenizer):
        """The transformers GenerationConfig that means the same thing."""
        from transformers import GenerationConfig

        kwargs = dict(
            do_sample=self.do_sample, num_beams=self.num_beams, max_new_tokens=self.max_new_tokens,
            min_new_tokens=self.min_new_tokens, repetition_penalty=self.repetition_penalty,
            eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
            bos_token_id=tokenizer.bos_token_id,
        )
        if self.do_sample:
            kwargs.update(temperature=self.temperature, top_p=self.top_p, top_k=self.top_k or None)
        else:  # transformers warns when sampling knobs are set for greedy decoding
            kwargs.update(temperature=None, top_p=None, top_k=None)
        if self.stop:
            kwargs["stop_strings"] = list(self.stop)
        return GenerationConfig(**kwargs)


def unexpressed_settings(source) -> list[str]:
    """The settings of a generation config (see DecodeConfig.from_generation_config) that change how
    tokens are chosen but have no DecodeConfig field."""
    return sorted(set(_generation_settings(source)) - set(_SHARED_SETTINGS) - _NOT_DECODING)


def _generation_settings(source) -> dict:
    """The explicitly set values of a generation config given as an object, a dict, a file or a folder."""
    if hasattr(source, "to_diff_dict"):  # a transformers GenerationConfig: only what differs from its defaults
        return source.to_diff_dict()
    if isinstance(source, dict):
        return dict(source)
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        file = path / GENERATION_CONFIG_FILE if path.is_dir() else path
        try:
            settings = json.loads(file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise ConfigError(f"cannot read a generation config from {file}: {e}") from None
        if not isinstance(settings, dict):
            raise ConfigError(f"{file} does not hold a JSON object")
        return settings
    raise ConfigError(f"source={source!r}: allowed a GenerationConfig, a dict, or a path to generation_config.json "
                      "or its folder")


DECODE_MODES = ("eager", "static", "graph", "fast")


def check_mode(mode: str) -> str:
    if mode not in DECODE_MODES:
        raise ConfigError(f"decode_mode={mode!r}: allowed {', '.join(DECODE_MODES)}")
    return mode
