"""A sweep's SPEC (report/sweep.py's docstring says what it holds) and its plan: the notebooks
found, every parameter name checked against their parameters cells, and the points expanded."""

from __future__ import annotations

import hashlib
import itertools
import json
import keyword
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from .. import humaneval
from ..errors import ConfigError
from ..generation.config import DecodeConfig
from .params import NOTEBOOK_NAME, default_notebooks_dir, load_params, notebook_parameters
from .runner import DEFAULT_TIMEOUT_S

SWEEP_KEYS = ("model", "kernel", "device", "notebooks", "notebooks_dir", "params", "grid", "humaneval",
              "gpus", "cpus", "timeout_s", "max_retries")
HUMANEVAL_KEYS = ("limit", "shards", "decode", "timeout_s")
RESERVED = ("MODEL", "KERNEL", "DEVICE", "OUTPUT_DIR")  # set from model/kernel/device and the sweep
DEVICES = ("auto", "cpu", "cuda")  # no cuda:N: Ray gives each task its GPUs and shows it only those
DEFAULT_MAX_RETRIES = 2


# --- the SPEC ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class HumanEvalShards:
    """One HumanEval run of a sweep, split into `shards` tasks of problems."""

    limit: int | None = None  # the first `limit` problems; None: all 164
    shards: int = 2
    decode: Mapping[str, Any] = field(default_factory=dict)  # DecodeConfig fields over .greedy()
    timeout_s: float = humaneval.DEFAULT_TIMEOUT_S  # per scored program

    def __post_init__(self) -> None:
        if self.limit is not None and (isinstance(self.limit, bool) or not isinstance(self.limit, int)
                                       or not 1 <= self.limit <= humaneval.N_PROBLEMS):
            raise ConfigError(f"humaneval.limit={self.limit!r}: must be an integer in [1, {humaneval.N_PROBLEMS}] "
                              "or left out for all problems")
        if isinstance(self.shards, bool) or not isinstance(self.shards, int) or self.shards < 1:
            raise ConfigError(f"humaneval.shards={self.shards!r}: must be an integer >= 1")
        if self.shards > (self.limit or humaneval.N_PROBLEMS):
            raise ConfigError(f"humaneval.shards={self.shards}: more shards than problems ({self.limit})")
        _check_seconds("humaneval.timeout_s", self.timeout_s)
        if not isinstance(self.decode, Mapping):
            raise ConfigError(f"humaneval.decode: must map DecodeConfig fields to values, got {self.decode!r}")
        self.decode_config()  # refuses unknown fields and bad values now, not on a node
        object.__setattr__(self, "decode", MappingProxyType(dict(self.decode)))

    def decode_config(self) -> DecodeConfig:
        try:
            return DecodeConfig.greedy(**self.decode)
        except TypeError as e:  # an unknown field
            fields = ", ".join(DecodeConfig.__dataclass_fields__)
            raise ConfigError(f"humaneval.decode: {e}; fields: {fields}") from None


@dataclass(frozen=True)
class SweepSpec:
    """What a sweep runs (module docstring); `load_spec` reads one from a file."""

    notebooks: tuple[str, ...] = ()  # names (01_quickstart) or numbers (01)
    model: tuple[str, ...] = ("demo",)
    kernel: tuple[str, ...] = ("auto",)
    device: tuple[str, ...] = ("auto",)
    params: Mapping[str, Any] = field(default_factory=dict)  # global NAME: value, or a notebook's section
    grid: Mapping[str, Any] | None = None  # NAME: [values], or a notebook's section of those
    humaneval: HumanEvalShards | None = None
    gpus: float = 1  # per point whose device is cuda
    cpus: float = 1  # per point
    timeout_s: float = DEFAULT_TIMEOUT_S  # per notebook render
    max_retries: int = DEFAULT_MAX_RETRIES  # per task, when its worker or node dies
    notebooks_dir: Path | None = None  # default: the repository's notebooks/

    def __post_init__(self) -> None:
        for name in ("notebooks", "model", "kernel", "device"):
            object.__setattr__(self, name, _names(name, getattr(self, name), allow_empty=name == "notebooks"))
        for device in self.device:
            if device not in DEVICES:
                raise ConfigError(f"device={device!r}: allowed values are {', '.join(DEVICES)} (Ray assigns each "
                                  "CUDA point its own GPUs, so a sweep cannot pick cuda:N)")
        if not self.notebooks and self.humaneval is None:
            raise ConfigError("notebooks: empty, and no humaneval section: the sweep has nothing to run")
        for name in ("gpus", "cpus"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                    or value <= 0 or (value > 1 and value != int(value)):
                raise ConfigError(f"{name}={value!r}: must be a fraction in (0, 1] or a whole number (Ray's rule)")
        _check_seconds("timeout_s", self.timeout_s)
        if isinstance(self.max_retries, bool) or not isinstance(self.max_retries, int) or self.max_retries < 0:
            raise ConfigError(f"max_retries={self.max_retries!r}: must be an integer >= 0")
        object.__setattr__(self, "params", _json_clean("params", self.params))
        if self.grid is not None:
            object.__setattr__(self, "grid", _json_clean("grid", self.grid))
        if self.notebooks_dir is not None:
            object.__setattr__(self, "notebooks_dir", Path(self.notebooks_dir).expanduser().absolute())

    @classmethod
    def from_dict(cls, data: Mapping, base: Path | None = None) -> SweepSpec:
        """A SPEC from its mapping; a relative notebooks_dir is taken from `base` (the SPEC's folder)."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"the SPEC must be a mapping of {', '.join(SWEEP_KEYS)}, got a {type(data).__name__}")
        _refuse_unknown("the SPEC", data, SWEEP_KEYS)
        fields = dict(data)
        if isinstance(fields.get("humaneval"), Mapping):
            _refuse_unknown("humaneval", fields["humaneval"], HUMANEVAL_KEYS)
            fields["humaneval"] = HumanEvalShards(**fields["humaneval"])
        elif "humaneval" in fields and fields["humaneval"] is not None:
            raise ConfigError(f"humaneval: must be a mapping of {', '.join(HUMANEVAL_KEYS)}")
        if fields.get("notebooks_dir") is not None and base is not None:
            fields["notebooks_dir"] = base / Path(fields["notebooks_dir"]).expanduser()
        return cls(**fields)


def load_spec(path: str | os.PathLike) -> SweepSpec:
    """Read a SPEC file: JSON when it ends in .json, otherwise YAML."""
    path = Path(path)
    try:
        data = load_params(path)  # the report runner's reader: same formats, same errors
    except ConfigError as e:
        raise ConfigError(str(e).replace("--params", "SPEC", 1)) from None
    return SweepSpec.from_dict(data, base=path.absolute().parent)


def _names(field_name: str, value, allow_empty: bool = False) -> tuple[str, ...]:
    values = (value,) if isinstance(value, (str, int)) and not isinstance(value, bool) else value
    if not isinstance(values, Sequence) or isinstance(values, str) or (not values and not allow_empty):
        raise ConfigError(f"{field_name}={value!r}: must be a name or a non-empty list of names")
    names = tuple(f"{v:02d}" if isinstance(v, int) and not isinstance(v, bool) else v for v in values)
    for name in names:
        if not isinstance(name, str) or not name.strip():
            raise ConfigError(f"{field_name}: {name!r} is not a non-empty string")
    if len(set(names)) != len(names):
        raise ConfigError(f"{field_name}: lists a value twice ({', '.join(names)})")
    return names


def _check_seconds(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{name}={value!r}: must be a positive number of seconds")


def _refuse_unknown(where: str, data: Mapping, known: Sequence[str]) -> None:
    unknown = [str(k) for k in data if k not in known]
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(known)}")


def _json_clean(where: str, mapping) -> Mapping[str, Any]:
    """A read-only copy of `mapping`, whose values papermill can write as Python literals."""
    if not isinstance(mapping, Mapping):
        raise ConfigError(f"{where}: must be a mapping of NAME: value, got a {type(mapping).__name__}")
    try:
        return MappingProxyType(json.loads(json.dumps(dict(mapping), allow_nan=False)))
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where}: every value must be a string, number, boolean, null, list or mapping ({e})") \
            from None


# --- the plan: notebooks found, parameters checked, points expanded ------------------------------

@dataclass(frozen=True)
class Point:
    """One task of the sweep: a notebook with its parameters, or one HumanEval shard."""

    id: str  # its folder under DIR, a hash of what defines it
    kind: str  # "notebook" or "humaneval-shard"
    name: str  # the notebook's name, or "humaneval"
    parameters: Mapping[str, Any]  # a notebook's MODEL, KERNEL, DEVICE and the rest, without OUTPUT_DIR
    shown: Mapping[str, Any]  # the parameters the index shows: those that vary, and model/kernel/device
    gpus: float
    cpus: float
    notebook: Path | None = None
    shard: tuple[int, int] | None = None  # (index from 0, count)
    task_ids: tuple[str, ...] = ()  # a shard's problems
    run: str | None = None  # a shard's HumanEval run: its folder under DIR

    def folder(self, out: Path) -> Path:
        return out.joinpath(*self.id.split("/"))


@dataclass(frozen=True)
class SweepPlan:
    """A checked SPEC: its notebooks and the parameters each declares."""

    spec: SweepSpec
    notebooks: Mapping[str, Path]  # name -> file, in the SPEC's order
    declared: Mapping[str, frozenset[str]]  # name -> the parameters its parameters cell declares

    def points(self, auto_device: str) -> list[Point]:
        """Every point, with device "auto" read as `auto_device` (cuda when the cluster has a GPU)."""
        points = [p for name in self.notebooks for p in self._notebook_points(name, auto_device)]
        if self.spec.humaneval is not None:
            points += self._shards(auto_device)
        return points

    def _notebook_points(self, name: str, auto_device: str) -> list[Point]:
        spec, declared = self.spec, self.declared[name]
        fixed = {**_applying(spec.params, declared), **(spec.params.get(name) or {})}
        axes = {**_applying(spec.grid or {}, declared), **((spec.grid or {}).get(name) or {})}
        base_axes = {"MODEL": spec.model, "KERNEL": spec.kernel,
                     "DEVICE": tuple(dict.fromkeys(auto_device if d == "auto" else d for d in spec.device))}
        all_axes = {**base_axes, **axes}
        points = []
        for values in itertools.product(*all_axes.values()):
            chosen = dict(zip(all_axes, values))
            parameters = {"MODEL": chosen["MODEL"], "KERNEL": chosen["KERNEL"], "DEVICE": chosen["DEVICE"],
                          **fixed, **{k: v for k, v in chosen.items() if k not in base_axes}}
            points.append(Point(id=_point_id(name, {"notebook": name, "parameters": parameters}), kind="notebook",
                                name=name, parameters=MappingProxyType(parameters), shown=MappingProxyType(chosen),
                                gpus=spec.gpus if chosen["DEVICE"] == "cuda" else 0, cpus=spec.cpus,
                                notebook=self.notebooks[name]))
        return points

    def _shards(self, auto_device: str) -> list[Point]:
        """One HumanEval run per model, kernel and device, each split into shards of problems."""
        spec, he = self.spec, self.spec.humaneval
        devices = dict.fromkeys(auto_device if d == "auto" else d for d in spec.device)
        task_ids = [p.task_id for p in humaneval.select_problems(he.limit)]
        points = []
        for model, kernel, device in itertools.product(spec.model, spec.kernel, devices):
            run = {"model": model, "kernel": kernel, "device": device, "decode": he.decode_config().to_dict(),
                   "limit": he.limit, "shards": he.shards}
            run_id = _point_id("humaneval", run)
            for k in range(he.shards):
                mine = tuple(task_ids[k::he.shards])  # round robin: long and short problems spread evenly
                shown = {"MODEL": model, "KERNEL": kernel, "DEVICE": device, "shard": f"{k + 1}/{he.shards}",
                         "problems": problems_text(mine)}
                points.append(Point(id=f"{run_id}/shards/{k + 1}-of-{he.shards}", kind="humaneval-shard",
                                    name="humaneval", parameters=MappingProxyType({**run, "task_ids": list(mine)}),
                                    shown=MappingProxyType(shown), gpus=spec.gpus if device == "cuda" else 0,
                                    cpus=spec.cpus, shard=(k, he.shards), task_ids=mine, run=run_id))
        return points


def plan_sweep(spec: SweepSpec) -> SweepPlan:
    """Find the SPEC's notebooks and check every parameter name against their parameters cells."""
    folder = spec.notebooks_dir or default_notebooks_dir()
    if not folder.is_dir():
        raise ConfigError(f"notebooks_dir {folder} is not a folder")
    found = sorted(p.absolute() for p in folder.glob("*.ipynb") if NOTEBOOK_NAME.match(p.stem))
    notebooks: dict[str, Path] = {}
    for want in spec.notebooks:
        match = [p for p in found if want in (p.stem, p.stem.split("_", 1)[0])]
        if not match:
            raise ConfigError(f"notebooks: {want!r} is not a notebook in {folder}; "
                              f"known: {', '.join(p.stem for p in found) or 'none'}")
        notebooks.update((p.stem, p) for p in match)
    declared = {name: frozenset(notebook_parameters(path)) for name, path in notebooks.items()}
    _check_names("params", spec.params, declared)
    if spec.grid is not None:
        _check_names("grid", spec.grid, declared)
        _check_grid(spec.grid, set(notebooks))
        overlap = _global_and_sections(spec.params, declared).keys() & _global_and_sections(spec.grid, declared).keys()
        if overlap:
            raise ConfigError(f"{', '.join(sorted(overlap))}: both in params and in grid; keep each in one")
    return SweepPlan(spec=spec, notebooks=MappingProxyType(notebooks), declared=MappingProxyType(declared))


def _check_names(where: str, mapping: Mapping, declared: Mapping[str, frozenset[str]]) -> None:
    """Every name is a parameter that a listed notebook declares (its own, in a notebook's section)."""
    for key, value in mapping.items():
        if key in declared:
            if not isinstance(value, Mapping):
                raise ConfigError(f"{where}.{key}: a notebook's section must map NAME: value, got {value!r}")
            for name in value:
                _check_name(f"{where}.{key}", name, declared[key], f"{key} declares")
        elif NOTEBOOK_NAME.match(str(key)):
            raise ConfigError(f"{where}.{key}: not one of the SPEC's notebooks ({', '.join(declared) or 'none'})")
        else:
            union = frozenset().union(*declared.values())
            _check_name(where, key, union, "the SPEC's notebooks declare")


def _check_name(where: str, name, known: frozenset[str], whose: str) -> None:
    if not isinstance(name, str) or not name.isidentifier() or keyword.iskeyword(name):
        raise ConfigError(f"{where}: {name!r} is not a valid parameter name (a Python identifier)")
    if name in RESERVED:
        raise ConfigError(f"{where}: {name} is set by the sweep; use the SPEC's "
                          f"{name.lower() if name != 'OUTPUT_DIR' else '--out'}")
    if name not in known:
        raise ConfigError(f"{where}: unknown parameter {name}; {whose}: {', '.join(sorted(known - set(RESERVED)))}")


def _check_grid(grid: Mapping, notebook_names: set[str]) -> None:
    if not grid:
        raise ConfigError("grid: empty; give each swept parameter a list of values, or leave grid out")
    for key, value in grid.items():
        axes = value if key in notebook_names else {key: value}
        where = f"grid.{key}." if key in notebook_names else "grid."
        if not axes:
            raise ConfigError(f"grid.{key}: empty section")
        for name, values in axes.items():
            if not isinstance(values, list):
                raise ConfigError(f"{where}{name}: must be a list of values, got {values!r}; "
                                  "put a single value under params")
            if not values:
                raise ConfigError(f"{where}{name}: an empty list, so the grid has no points")
            texts = [json.dumps(v, sort_keys=True) for v in values]
            if len(set(texts)) != len(texts):
                raise ConfigError(f"{where}{name}: lists a value twice ({values})")


def _global_and_sections(mapping: Mapping, declared: Mapping[str, frozenset[str]]) -> dict:
    names = {k: None for k in mapping if k not in declared}
    for key in declared:
        names.update(dict.fromkeys(mapping.get(key) or {}))
    return names


def _applying(mapping: Mapping, declared: frozenset[str]) -> dict:
    """The global entries of `mapping` that a notebook declaring `declared` takes."""
    return {k: v for k, v in mapping.items() if k in declared}


def _point_id(name: str, definition: Mapping) -> str:
    digest = hashlib.sha256(json.dumps(definition, sort_keys=True).encode()).hexdigest()
    return f"{name}-{digest[:12]}"


def task_number(task_id: str) -> int:
    return int(task_id.rpartition("/")[2])


def problems_text(task_ids: Sequence[str]) -> str:
    numbers = [t.rpartition("/")[2] for t in task_ids]
    return f"{len(numbers)}: HumanEval/{', '.join(numbers[:8])}{', ...' if len(numbers) > 8 else ''}"


def shown_text(shown: Mapping, sep: str = "\n") -> str:
    def short(value):
        text = value if isinstance(value, str) else json.dumps(value)
        return Path(text).name if os.sep in text and Path(text).is_absolute() else text

    return sep.join(f"{k}={short(v)}" for k, v in shown.items())
