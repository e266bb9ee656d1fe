"""`python -m workbench sweep SPEC --out DIR`: a grid of notebook renders, and HumanEval in shards, on Ray.

A sweep hands its work to a Ray cluster (the `cluster` extra: `pip install -e '.[cluster]'`)
instead of running it one notebook after another. Each *point*, one notebook with one set of
parameters, is one Ray task that renders the notebook with the report runner's `run_notebook` in
a temporary folder of whichever node Ray picked; a HumanEval run is split into shards of problems,
each one task. A task asks Ray for `gpus` GPUs when its device is CUDA (Ray then shows it only
those) and for `cpus` CPUs. Everything a task produced comes back to the driver through Ray, so
the nodes share no filesystem; the driver writes each point as it arrives:

    DIR/<point>/                  one finished point: renamed into place whole, never half-written
        point.json                status, parameters, node, GPU ids, attempts, duration, headline
        <notebook>.ipynb/.html/.json/.log   and whatever else the notebook wrote
    DIR/humaneval-<id>/shards/<k>-of-<n>/   a finished shard: point.json and its generations.jsonl
    DIR/humaneval-<id>/generations.jsonl    the shards' lines merged in task order, then scored
    DIR/humaneval-<id>/humaneval.json       as `workbench.humaneval.run` writes it in one process
    DIR/index.html, DIR/report.json         the report runner's index, with the sweep's columns

A point's folder name is a hash of everything that defines it (notebook and every parameter, or
the HumanEval config and shard), so running the same SPEC into the same DIR again schedules only
the points that have no folder yet. A notebook that fails is a result (status failed) and is not
run again unless `--retry-failed` says so. A task whose worker process or node dies is retried
by Ray, at most `max_retries` times; the index shows every attempt, and a point that died on every
attempt is "lost" and has no folder, so the next run schedules it again.

SPEC (YAML, or JSON when its name ends in .json):

    model: demo                  # or a list; "demo", or a checkpoint folder at that path on every node
    kernel: auto                 # or a list of GPTQ kernels
    device: cpu                  # cpu, cuda or auto (cuda when the cluster has a GPU), or a list
    notebooks: [01_quickstart]   # by name or number, from notebooks_dir (default: the repository's)
    params:                      # fixed parameters, for every notebook that declares them ...
      MAX_NEW_TOKENS: 32
      01_quickstart: {WARMUP: 0} # ... or in one notebook's own section
    grid:                        # lists of values: every combination is one point
      DECODING: [greedy, card]
      SEED: [0, 1]
    humaneval:                   # optional: one HumanEval run, split into shards of problems
      limit: 8                   # the first 8 problems; leave out for all 164
      shards: 2
      decode: {max_new_tokens: 128}   # DecodeConfig fields over DecodeConfig.greedy()
    gpus: 1                      # GPUs per CUDA point (HumanEval shards too)
    cpus: 1                      # CPUs per point
    timeout_s: 900               # wall clock per notebook render
    max_retries: 2               # Ray's retries of a task whose worker or node died

A name in `params` or `grid` must be declared in the parameters cell of at least one listed
notebook (papermill reads that cell) and applies to the notebooks that declare it; MODEL, KERNEL,
DEVICE and OUTPUT_DIR come from model/kernel/device and the sweep. Everything is checked before
Ray is started or joined; what depends on the cluster (a point asking for more GPUs or CPUs than
any node has) is checked after joining and before anything is scheduled.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import itertools
import json
import keyword
import logging
import math
import os
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from types import MappingProxyType
from typing import Any

from .. import humaneval
from ..cache import atomic_write_json, atomic_write_text, building_dir
from ..errors import ConfigError, WorkbenchError
from ..generation.config import DecodeConfig
from .html import render_index
from .notebook import setup
from .params import NOTEBOOK_NAME, default_notebooks_dir, load_params
from .runner import BANNERS, DEFAULT_TIMEOUT_S, ReportConfig, describe_model, run_notebook

RAY_SPEC = "ray==2.60.0"  # the cluster extra's pin, named in errors
SWEEP_KEYS = ("model", "kernel", "device", "notebooks", "notebooks_dir", "params", "grid", "humaneval",
              "gpus", "cpus", "timeout_s", "max_retries")
HUMANEVAL_KEYS = ("limit", "shards", "decode", "timeout_s")
RESERVED = ("MODEL", "KERNEL", "DEVICE", "OUTPUT_DIR")  # set from model/kernel/device and the sweep
DEVICES = ("auto", "cpu", "cuda")  # no cuda:N: Ray gives each task its GPUs and shows it only those
DEFAULT_MAX_RETRIES = 2
DEFAULT_CONNECT_TIMEOUT_S = 10.0
POINT_FILE = "point.json"
STATUSES = ("ok", "failed", "timeout", "lost")  # lost: its worker or node died on every attempt
POLL_S = 0.5  # how often the driver looks for finished tasks and updates the progress display


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
                         "problems": _problems_text(mine)}
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
    declared = {name: _declared_parameters(path) for name, path in notebooks.items()}
    _check_names("params", spec.params, declared)
    if spec.grid is not None:
        _check_names("grid", spec.grid, declared)
        _check_grid(spec.grid, set(notebooks))
        overlap = _global_and_sections(spec.params, declared).keys() & _global_and_sections(spec.grid, declared).keys()
        if overlap:
            raise ConfigError(f"{', '.join(sorted(overlap))}: both in params and in grid; keep each in one")
    return SweepPlan(spec=spec, notebooks=MappingProxyType(notebooks), declared=MappingProxyType(declared))


def _declared_parameters(path: Path) -> frozenset[str]:
    """The names papermill finds in the notebook's cell tagged `parameters`."""
    try:
        import papermill
    except ImportError:
        raise ConfigError("papermill is not installed: install the notebooks extra, pip install -e '.[notebooks]'") \
            from None
    try:
        return frozenset(papermill.inspect_notebook(str(path)))
    except Exception as e:  # an unreadable notebook: say which one
        raise ConfigError(f"{path}: papermill cannot read its parameters ({type(e).__name__}: {e})") from None


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


def _problems_text(task_ids: Sequence[str]) -> str:
    numbers = [t.rpartition("/")[2] for t in task_ids]
    return f"{len(numbers)} problems: HumanEval/{', '.join(numbers[:8])}{', ...' if len(numbers) > 8 else ''}"


# --- the cluster ----------------------------------------------------------------------------------

def import_ray():
    try:
        import ray
    except ImportError:
        raise ConfigError(f"Ray is not installed in {sys.executable}: install the cluster extra, "
                          f"pip install -e '.[cluster]' (it pins {RAY_SPEC})") from None
    return ray


def connect(address: str, timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S) -> str:
    """Join the cluster at `address` (auto, local or HOST:PORT of its head); say what was joined.

    The driver must run on a machine of the cluster (its head, usually): Ray's drivers join
    through the raylet of their own machine.
    """
    ray = import_ray()
    common = {"log_to_driver": False, "logging_level": logging.WARNING}  # logs come back with each result
    if address == "local":
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # a local instance reports nowhere
        ray.init(address="local", include_dashboard=False, **common)
        return "a local Ray instance on this machine"
    if address != "auto":
        _check_reachable(address, timeout_s)
    try:
        ray.init(address=address, **common)
    except ConnectionError as e:
        hint = ("no running cluster was found (RAY_ADDRESS is unset and no `ray start` runs on this machine): "
                "start one with `ray start --head`, pass its address, or use --ray local"
                if address == "auto" else "check the address and that the cluster runs the same Ray version")
        raise ConfigError(f"--ray {address}: cannot join a Ray cluster ({e}); {hint}") from None
    except RuntimeError as e:  # e.g. a Ray or Python version differing from the cluster's
        raise ConfigError(f"--ray {address}: Ray refused to join ({e})") from None
    return f"the Ray cluster at {address}"


def _check_reachable(address: str, timeout_s: float) -> None:
    """Fail in `timeout_s` with a clear error when nothing answers at HOST:PORT (ray.init would wait long)."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ConfigError(f"--ray {address!r}: not an address; use auto, local or HOST:PORT of the cluster's head")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as e:
        reason = "no answer" if isinstance(e, TimeoutError) else (e.strerror or str(e))
        raise ConfigError(f"--ray {address}: cannot reach a Ray cluster there within {timeout_s:g} s ({reason}); "
                          "check that `ray start --head` runs there and that the port is open") from None


@dataclass(frozen=True)
class Node:
    id: str
    ip: str
    cpus: float
    gpus: float


def cluster_nodes() -> list[Node]:
    """The cluster's live nodes and their CPUs and GPUs, as Ray counts them."""
    ray = import_ray()
    return [Node(id=n["NodeID"], ip=n.get("NodeManagerAddress", "?"), cpus=n["Resources"].get("CPU", 0),
                 gpus=n["Resources"].get("GPU", 0)) for n in ray.nodes() if n.get("Alive")]


def check_fits(points: Sequence[Point], nodes: Sequence[Node]) -> None:
    """Refuse a point no node can run: Ray would keep it waiting forever."""
    for p in points:
        if any(n.cpus >= p.cpus and n.gpus >= p.gpus for n in nodes):
            continue
        what = f"{p.gpus:g} GPU(s) and {p.cpus:g} CPU(s)" if p.gpus else f"{p.cpus:g} CPU(s)"
        largest = ", ".join(f"{n.ip} {n.cpus:g} CPUs {n.gpus:g} GPUs" for n in nodes) or "no live node"
        hint = "; set device: cpu, or join a cluster with GPUs" if p.gpus and not any(n.gpus for n in nodes) else ""
        raise ConfigError(f"point {p.id} ({_shown_text(p.shown, ', ')}) asks for {what}, more than any node of the "
                          f"cluster has ({largest}){hint}")


def _cluster_text(nodes: Sequence[Node]) -> str:
    return (f"{len(nodes)} node(s), {sum(n.cpus for n in nodes):g} CPUs, {sum(n.gpus for n in nodes):g} GPUs")


# --- what runs on a node ------------------------------------------------------------------------

class AttemptLog:
    """A Ray actor (one per sweep) told by every task when it starts: the driver's view of what is
    running, and of the attempts that died, which Ray retries without saying so."""

    def __init__(self) -> None:
        self.starts: dict[str, list[dict]] = {}

    def started(self, point_id: str, where: dict) -> int:
        self.starts.setdefault(point_id, []).append(where)
        return len(self.starts[point_id])

    def snapshot(self) -> dict[str, list[dict]]:
        return self.starts


def _started(attempts, point_id: str) -> tuple[dict, Any]:
    """This task's node, process and GPUs, sent to the attempt log; and the reply's reference.

    The reply is read only when the work is done: a task that waits in ray.get lends its CPUs to
    other tasks meanwhile, and two notebooks would then share one node's CPU.
    """
    import ray

    where = {"node_id": ray.get_runtime_context().get_node_id(), "ip": ray.util.get_node_ip_address(),
             "hostname": socket.gethostname(), "pid": os.getpid(),
             "gpu_ids": [str(g) for g in ray.get_gpu_ids()], "started_at": _now()}
    return where, attempts.started.remote(point_id, where)


def _attempt(reply) -> dict:
    """Which attempt this task was, from the attempt log's reply (None if the log did not answer)."""
    import ray

    try:
        return {"attempt": ray.get(reply, timeout=60)}
    except Exception as e:  # the count is for the index; the result stands without it
        return {"attempt": None, "attempt_error": f"{type(e).__name__}: {e}"}


def render_point(job: dict, attempts) -> dict:
    """Ray task: render one notebook in a temporary folder; return its files and outcome."""
    where, reply = _started(attempts, job["id"])
    with tempfile.TemporaryDirectory(prefix="workbench-sweep-") as tmp:
        source = Path(tmp, "notebook", f"{job['name']}.ipynb")
        source.parent.mkdir()
        source.write_bytes(job["notebook_bytes"])
        out = Path(tmp, "out")
        params = {k: v for k, v in job["parameters"].items() if k not in RESERVED}
        try:
            config = ReportConfig(model=job["parameters"]["MODEL"], kernel=job["parameters"]["KERNEL"],
                                  device=job["parameters"]["DEVICE"], out=out, params={job["name"]: params},
                                  notebooks=(source,), timeout_s=job["timeout_s"])
        except WorkbenchError as e:  # e.g. the checkpoint folder is not on this node
            return {**where, **_attempt(reply), **_failure(e, where), "files": {}}
        run = run_notebook(config, source).to_dict()
        files = {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    return {**where, **_attempt(reply), "status": run["status"], "duration_s": run["duration_s"],
            "headline": run["headline"], "error": run["error"], "notes": run["notes"], "files": files}


def generate_shard(job: dict, attempts) -> dict:
    """Ray task: load the model and answer one shard's HumanEval problems; return its generations."""
    where, reply = _started(attempts, job["id"])
    started = time.perf_counter()
    parameters = job["parameters"]
    try:
        loaded = setup(parameters["model"], parameters["kernel"], parameters["device"])
        problems = humaneval.load_problems()
        chosen = [problems[t] for t in parameters["task_ids"]]
        with tempfile.TemporaryDirectory(prefix="workbench-shard-") as tmp:
            done = humaneval.generate_answers(loaded, DecodeConfig.from_dict(parameters["decode"]), chosen, out=tmp)
            generations = Path(tmp, humaneval.GENERATIONS_FILE).read_bytes()
    except WorkbenchError as e:
        return {**where, **_attempt(reply), **_failure(e, where, time.perf_counter() - started), "files": {}}
    lines = [done[t] for t in parameters["task_ids"]]
    headline = {"problems": len(lines), "new_tokens": sum(line["new_tokens"] for line in lines),
                "kernel": lines[0]["record"].get("kernel")}
    return {**where, **_attempt(reply), "status": "ok", "duration_s": round(time.perf_counter() - started, 3),
            "headline": headline, "error": None, "notes": [], "files": {humaneval.GENERATIONS_FILE: generations}}


def _failure(e: BaseException, where: dict, duration_s: float = 0.0) -> dict:
    message = f"{e} (on node {where['ip']}, {where['hostname']})"
    return {"status": "failed", "duration_s": round(duration_s, 3), "headline": {}, "notes": [],
            "error": _error(type(e).__name__, message)}


def _error(name: str, message: str) -> dict:
    """An error as the report runner's index shows it."""
    return {"name": name, "message": message, "execution_count": None, "source_head": ""}


# --- the driver ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class SweepResult:
    out: Path
    records: Mapping[str, dict]  # point id -> its point.json content (or its lost record)
    scheduled: tuple[str, ...]  # the point ids this run handed to Ray
    reused: tuple[str, ...]  # the point ids found finished in DIR
    humaneval: tuple[dict, ...]  # each HumanEval run's merged row
    exit_code: int
    index_html: Path


def run_sweep(spec: SweepSpec, out: str | os.PathLike, address: str = "auto", *, retry_failed: bool = False,
              connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S, progress: bool = True,
              spec_path: str | None = None) -> SweepResult:
    """Run every point of `spec` that `out` lacks on the Ray cluster at `address` (module docstring)."""
    plan = plan_sweep(spec)  # everything that can be checked without a cluster, before joining one
    out = Path(out).expanduser().absolute()
    if out.resolve() in {p.parent.resolve() for p in plan.notebooks.values()}:
        raise ConfigError(f"--out {out}: is the notebooks' folder; write the sweep to another folder")
    ray = import_ray()
    joined = connect(address, connect_timeout_s)
    try:
        nodes = cluster_nodes()
        points = plan.points(auto_device="cuda" if any(n.gpus for n in nodes) else "cpu")
        check_fits(points, nodes)
        sweep = _Sweep(plan, points, out, f"{_cluster_text(nodes)}; {joined}", spec_path, retry_failed)
        return sweep.run(ray, progress)
    finally:
        ray.shutdown()


class _Sweep:
    """One run of the driver: what DIR holds, what runs, and the index written as results arrive."""

    def __init__(self, plan: SweepPlan, points: list[Point], out: Path, cluster: str, spec_path: str | None,
                 retry_failed: bool) -> None:
        self.plan, self.points, self.out, self.cluster, self.spec_path = plan, points, out, cluster, spec_path
        self.started_at, self.t0 = _now(), time.perf_counter()
        self.records: dict[str, dict] = {}  # finished points: their point.json
        for p in points:
            record = _read_json(p.folder(out) / POINT_FILE)
            if isinstance(record, dict) and (record.get("status") == "ok" or not retry_failed):
                self.records[p.id] = record
        self.reused = tuple(self.records)
        self.todo = [p for p in points if p.id not in self.records]
        self.starts: dict[str, list[dict]] = {}  # the attempt log's latest snapshot
        self.humaneval_rows: dict[str, dict] = {}  # HumanEval run id -> its merged row

    def run(self, ray, progress: bool) -> SweepResult:
        self.out.mkdir(parents=True, exist_ok=True)
        print(f"sweep: {len(self.points)} point(s), {len(self.reused)} already in {self.out}, {len(self.todo)} to run "
              f"on {self.cluster}", flush=True)
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        # on the driver's own node: whatever other node dies, the count of attempts survives
        here = NodeAffinitySchedulingStrategy(node_id=ray.get_runtime_context().get_node_id(), soft=False)
        attempts = ray.remote(num_cpus=0, scheduling_strategy=here)(AttemptLog).remote()
        tasks = {"notebook": ray.remote(render_point),
                 "humaneval-shard": ray.remote(max_calls=1)(generate_shard)}  # a GPU model leaves with its worker
        refs = {self._submit(tasks[p.kind], p, attempts): p for p in self.todo}
        for run in dict.fromkeys(p.run for p in self.points if p.run):
            self._merge_humaneval(run, force=False)
        self._write("running" if refs else "finished")
        bar = _progress_bar(len(self.todo), progress)
        try:
            while refs:
                ready, _ = ray.wait(list(refs), num_returns=1, timeout=POLL_S)
                starts = ray.get(attempts.snapshot.remote())
                if not ready and starts == self.starts:
                    continue  # nothing new to show
                self.starts = starts
                for ref in ready:
                    point = refs.pop(ref)
                    self._finish(point, self._outcome(ray, ref, point))
                    bar.update(1)
                    bar.write(self._line(point))
                    if point.run:
                        self._merge_humaneval(point.run, force=True)
                bar.set_postfix_str(self._counts_text(), refresh=True)
                self._write("running" if refs else "finished")
        except KeyboardInterrupt:
            self._write("interrupted")
            raise
        finally:
            bar.close()
        counts = self._counts()
        print(f"sweep: {', '.join(f'{n} {s}' for s, n in counts.items() if n)} in "
              f"{time.perf_counter() - self.t0:.1f} s; open {self.out / 'index.html'}", flush=True)
        failed = any(r["status"] != "ok" for r in [*self.records.values(), *self.humaneval_rows.values()])
        return SweepResult(out=self.out, records=dict(self.records), scheduled=tuple(p.id for p in self.todo),
                           reused=self.reused, humaneval=tuple(self.humaneval_rows.values()),
                           exit_code=1 if failed else 0, index_html=self.out / "index.html")

    # --- one task

    def _submit(self, task, point: Point, attempts):
        job = {"id": point.id, "name": point.name, "parameters": dict(point.parameters)}
        if point.kind == "notebook":  # the notebook travels with the task: the nodes need no copy of it
            job.update(notebook_bytes=point.notebook.read_bytes(), timeout_s=self.plan.spec.timeout_s)
        return task.options(num_cpus=point.cpus, num_gpus=point.gpus, max_retries=self.plan.spec.max_retries,
                            retry_exceptions=False,  # a failure in the work is a result, not a fault to retry
                            scheduling_strategy="SPREAD", name=f"sweep {point.id}").remote(job, attempts)

    def _outcome(self, ray, ref, point: Point) -> dict:
        """The task's result; a failure inside it as status failed; a worker or node that died on
        every attempt as status lost."""
        try:
            return ray.get(ref)
        except ray.exceptions.RayTaskError as e:
            cause = e.cause if isinstance(getattr(e, "cause", None), BaseException) else e
            return {"status": "failed", "error": _error(type(cause).__name__, str(cause).strip()[-2000:]),
                    "files": {}, "notes": []}
        except ray.exceptions.RayError as e:
            message = f"no attempt of {self.plan.spec.max_retries + 1} finished: {str(e).strip()[:1000]}"
            return {"status": "lost", "error": _error(type(e).__name__, message), "files": {}, "notes": []}

    def _finish(self, point: Point, result: dict) -> None:
        """Write a finished point into DIR, whole or not at all; a lost one is only remembered."""
        history = self.starts.get(point.id, [])
        record = {"id": point.id, "kind": point.kind, "name": point.name,
                  "notebook": str(point.notebook) if point.notebook else None,
                  "parameters": dict(point.parameters), "shown": dict(point.shown), "status": result["status"],
                  "duration_s": result.get("duration_s"), "headline": result.get("headline") or {},
                  "error": result.get("error"),
                  "notes": list(result.get("notes") or []) + _retry_notes(history, result),
                  "node_id": result.get("node_id"), "ip": result.get("ip"), "hostname": result.get("hostname"),
                  "pid": result.get("pid"), "gpu_ids": result.get("gpu_ids"),
                  "attempts": result.get("attempt") or len(history) or None, "attempt_history": history,
                  "finished_at": _now(), "files": sorted(result.get("files") or {})}
        self.records[point.id] = record
        if record["status"] == "lost":
            return
        folder = point.folder(self.out)
        if folder.exists():  # --retry-failed: the new result replaces the old one
            shutil.rmtree(folder)
        with building_dir(folder) as tmp:
            for name, data in (result.get("files") or {}).items():
                path = _inside(tmp, name)
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)
            atomic_write_json(tmp / POINT_FILE, record)

    def _merge_humaneval(self, run: str, force: bool) -> None:
        """Once every shard of `run` is in, merge their generations in task order and score them as one run."""
        shards = [p for p in self.points if p.run == run]
        he, run_folder = self.plan.spec.humaneval, self.out / run
        records = [self.records.get(p.id) for p in shards]
        shown = {k: v for k, v in shards[0].shown.items() if k.isupper()}
        row = {"id": run, "shown": {**shown, "shards": len(shards),
                                    "problems": _problems_text([t for p in shards for t in p.task_ids])}}
        bad = [(p, r) for p, r in zip(shards, records) if r is not None and r["status"] != "ok"]
        if bad:
            message = f"shard {bad[0][0].shard[0] + 1} of {len(shards)} {bad[0][1]['status']}; nothing merged"
            self.humaneval_rows[run] = {**row, "status": "failed", "error": _error("ShardFailed", message)}
            return
        if any(r is None for r in records):
            self.humaneval_rows[run] = {**row, "status": "pending"}
            return
        if force or not (run_folder / humaneval.SUMMARY_FILE).exists():
            lines = []
            for p in shards:
                text = (p.folder(self.out) / humaneval.GENERATIONS_FILE).read_text(encoding="utf-8")
                lines += [json.loads(x) for x in text.splitlines() if x.strip()]
            lines.sort(key=lambda line: int(line["task_id"].rpartition("/")[2]))
            atomic_write_text(run_folder / humaneval.GENERATIONS_FILE, "".join(json.dumps(x) + "\n" for x in lines))
            try:  # on the driver: the same scoring, in the same sandbox, as one process's run
                humaneval.score_answers(run_folder, he.limit, timeout_s=he.timeout_s)
            except WorkbenchError as e:
                self.humaneval_rows[run] = {**row, "status": "failed", "error": _error(type(e).__name__, str(e))}
                return
        summary = _read_json(run_folder / humaneval.SUMMARY_FILE) or {}
        kernels = sorted({str(r["headline"].get("kernel")) for r in records})
        notes = [f"{len(shards)} shards merged into {humaneval.GENERATIONS_FILE}, scored here"]
        if len(kernels) > 1:
            notes.append(f"the shards ran different kernels ({', '.join(kernels)}): not one run's result")
        self.humaneval_rows[run] = {**row, "status": "ok", "summary": summary, "notes": notes, "headline": {
            "pass_at_1": round(summary.get("pass_at_1", float("nan")), 4), "n_tasks": summary.get("n_tasks"),
            **{f"n_{k}": v for k, v in (summary.get("counts") or {}).items()}, "kernel": ", ".join(kernels)}}

    # --- what is shown

    def _status(self, point: Point) -> str:
        if point.id in self.records:
            return self.records[point.id]["status"]
        return "running" if self.starts.get(point.id) else "pending"

    def _counts(self) -> dict[str, int]:
        counts = dict.fromkeys((*STATUSES, "running", "pending"), 0)
        for p in self.points:
            counts[self._status(p)] += 1
        return counts

    def _counts_text(self) -> str:
        c = self._counts()
        return f"done {c['ok']}, running {c['running']}, failed {c['failed'] + c['timeout'] + c['lost']}"

    def _line(self, point: Point) -> str:
        r = self.records[point.id]
        detail = f"{r['error']['name']}: {r['error']['message'].splitlines()[0][:200]}" if r.get("error") else \
            ", ".join(f"{k}={v}" for k, v in list(r["headline"].items())[:4])
        where = f"node {r['node_id'][:8]}" if r.get("node_id") else "no node"
        shown = "ok" if r["status"] == "ok" else r["status"].upper()
        return (f"{point.id}: {shown} in {r.get('duration_s') or 0:.1f} s on {where}, attempt {r.get('attempts')}"
                f"{' - ' + detail if detail else ''}")

    def _write(self, state: str) -> None:
        summary = self._summary(state)
        atomic_write_json(self.out / "report.json", summary)
        atomic_write_text(self.out / "index.html", render_index(summary))

    def _summary(self, state: str) -> dict:
        """report.json: the report runner's summary, with the sweep's rows, columns and facts."""
        spec = self.plan.spec
        models = [describe_model(m) for m in spec.model]
        kinds = {m["kind"] for m in models}
        model = models[0] if len(models) == 1 else {"given": ", ".join(spec.model), "folder": None,
                                                      "kind": kinds.pop() if len(kinds) == 1 else "mixed"}
        rows = []
        for i, p in enumerate(self.points):
            rows.append(self._row(p))
            last_shard = p.run and (i + 1 == len(self.points) or self.points[i + 1].run != p.run)
            if last_shard and p.run in self.humaneval_rows:
                rows.append(self._humaneval_index_row(self.humaneval_rows[p.run]))
        counts = self._counts()
        failed = any(r["status"] != "ok" for r in [*self.records.values(), *self.humaneval_rows.values()])
        return {"title": "CodeFuse Workbench sweep", "state": state, "started_at": self.started_at,
                "duration_s": round(time.perf_counter() - self.t0, 3), "model": model,
                "banner": BANNERS.get(model["kind"]),
                "config": {"model": ", ".join(spec.model), "kernel": ", ".join(spec.kernel),
                           "device": ", ".join(spec.device), "jupyter_kernel": "python3",
                           "timeout_s": spec.timeout_s, "spec": self.spec_path, "out": str(self.out),
                           "max_retries": spec.max_retries, "gpus": spec.gpus, "cpus": spec.cpus},
                "counts": counts, "exit_code": (1 if failed else 0) if state == "finished" else None,
                "environment": self._environment(), "columns": ["point", "parameters", "node", "GPUs", "attempts"],
                "meta_extra": self._meta_rows(), "notebooks": rows}

    def _row(self, point: Point) -> dict:
        record = self.records.get(point.id) or {}
        status = self._status(point)
        starts = self.starts.get(point.id) or record.get("attempt_history") or []
        last = starts[-1] if starts else {}
        files = record.get("files", []) if status != "lost" else []
        prefix = point.id + "/"
        links = {kind: prefix + f"{point.name}.{kind}" if f"{point.name}.{kind}" in files else None
                 for kind in ("html", "ipynb", "json", "log")}
        if point.kind == "humaneval-shard" and status != "lost" and record:  # its record, and its answers
            links.update(json=prefix + POINT_FILE, log=prefix + humaneval.GENERATIONS_FILE
                         if humaneval.GENERATIONS_FILE in files else None)
        name = point.name if point.kind == "notebook" else f"humaneval shard {point.shard[0] + 1}/{point.shard[1]}"
        node_id = record.get("node_id") or last.get("node_id")
        return {"name": name, "status": status, "duration_s": record.get("duration_s"),
                "headline": record.get("headline") or {}, "error": record.get("error"),
                "notes": record.get("notes") or [], **links,
                "columns": {"point": point.id, "parameters": _shown_text(point.shown),
                            "node": f"{node_id[:12]}\n{record.get('ip') or last.get('ip')}" if node_id else "",
                            "GPUs": ", ".join(record.get("gpu_ids") or last.get("gpu_ids") or []) or "none",
                            "attempts": str(record.get("attempts") or len(starts) or "")}}

    def _humaneval_index_row(self, row: dict) -> dict:
        ok = row["status"] == "ok"
        return {"name": "humaneval (merged)", "status": row["status"], "duration_s": None,
                "headline": row.get("headline") or {}, "error": row.get("error"), "notes": row.get("notes") or [],
                "json": f"{row['id']}/{humaneval.SUMMARY_FILE}" if ok else None,
                "log": f"{row['id']}/{humaneval.GENERATIONS_FILE}" if ok else None,
                "columns": {"point": row["id"], "parameters": _shown_text(row["shown"]), "node": "driver (scoring)",
                            "GPUs": "", "attempts": ""}}

    def _environment(self) -> dict:
        env = {"python": sys.version.split()[0], "kernel_in_runner_env": False,
               "kernel_python": "each node's own python3 kernel"}
        for dist in ("torch", "transformers", "gptqmodel", "ray"):
            try:
                env[dist] = metadata.version(dist)
            except metadata.PackageNotFoundError:
                env[dist] = None
        env["device_name"] = f"{self.cluster} (Ray {env['ray']})"  # the index's "hardware" row
        return env

    def _meta_rows(self) -> list[list[str]]:
        spec = self.plan.spec
        rows = [["this run", f"{len(self.todo)} point(s) scheduled, {len(self.reused)} found finished in this folder"],
                ["retries", f"at most {spec.max_retries} per task whose worker or node dies; "
                            "a notebook that fails is not retried"]]
        if self.spec_path:
            rows.insert(0, ["spec", self.spec_path])
        if spec.params:
            rows.append(["fixed parameters", json.dumps(dict(spec.params))])
        if spec.grid:
            rows.append(["grid", json.dumps(dict(spec.grid))])
        if spec.humaneval:
            he = spec.humaneval
            rows.append(["humaneval", f"first {he.limit or humaneval.N_PROBLEMS} problems in {he.shards} shards, "
                                      f"decode {json.dumps(he.decode_config().to_dict())}"])
        return rows


def _retry_notes(history: Sequence[dict], result: dict) -> list[str]:
    """One note per attempt that ended without a result (Ray retried it)."""
    finished = (result.get("node_id"), result.get("pid"))
    notes = []
    for i, start in enumerate(history, 1):
        if (start.get("node_id"), start.get("pid")) != finished:
            notes.append(f"attempt {i} on node {start['node_id'][:12]} ({start['ip']}, pid {start['pid']}) ended "
                         "without a result: its worker or node died")
    return notes


def _shown_text(shown: Mapping, sep: str = "\n") -> str:
    def short(value):
        text = value if isinstance(value, str) else json.dumps(value)
        return Path(text).name if os.sep in text and Path(text).is_absolute() else text

    return sep.join(f"{k}={short(v)}" for k, v in shown.items())


def _inside(folder: Path, name: str) -> Path:
    """folder/name, refusing a name that would leave the folder."""
    path = (folder / name).resolve()
    if folder.resolve() not in path.parents:
        raise WorkbenchError(f"a task returned a file named {name!r}, outside its point's folder")
    return path


def _read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _progress_bar(total: int, enabled: bool):
    from tqdm.auto import tqdm

    # disable=None: no bar where stderr is not a terminal (a log file, CI); the lines per point remain
    return tqdm(total=total, desc="sweep", unit="point", disable=None if enabled else True, dynamic_ncols=True,
                file=sys.stderr)


# --- the command line ---------------------------------------------------------------------------

def main(argv: Sequence[str] | None = None) -> int:
    """`python -m workbench sweep SPEC --out DIR`: run a SPEC's points on Ray; exit 1 if any failed."""
    parser = argparse.ArgumentParser(
        prog="workbench sweep", description=main.__doc__, epilog=__doc__[__doc__.index("SPEC (YAML"):],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("spec", metavar="SPEC", help="the sweep, YAML or JSON (below)")
    parser.add_argument("--out", required=True, metavar="DIR", help="where the points and the index go")
    parser.add_argument("--ray", default="auto", metavar="auto|local|ADDRESS",
                        help="auto (default): the cluster RAY_ADDRESS or `ray start` on this machine names; "
                             "local: start Ray here with this machine's GPUs; HOST:PORT: join that cluster's head")
    parser.add_argument("--max-retries", type=int, metavar="N",
                        help=f"retries of a task whose worker or node dies (default: the SPEC's, else "
                             f"{DEFAULT_MAX_RETRIES})")
    parser.add_argument("--retry-failed", action="store_true", help="run failed points again (default: keep them)")
    parser.add_argument("--notebooks", metavar="DIR", help="where the notebooks are (default: the SPEC's "
                                                           "notebooks_dir, else the repository's)")
    parser.add_argument("--connect-timeout", type=float, default=DEFAULT_CONNECT_TIMEOUT_S, metavar="S",
                        help=f"how long to wait for an ADDRESS to answer (default {DEFAULT_CONNECT_TIMEOUT_S:g})")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar, only a line per point")
    args = parser.parse_args(argv)
    spec = load_spec(args.spec)
    changes = {}
    if args.max_retries is not None:
        changes["max_retries"] = args.max_retries
    if args.notebooks:
        changes["notebooks_dir"] = Path(args.notebooks)
    if changes:
        spec = dataclasses.replace(spec, **changes)
    result = run_sweep(spec, args.out, args.ray, retry_failed=args.retry_failed,
                       connect_timeout_s=args.connect_timeout, progress=not args.no_progress,
                       spec_path=str(Path(args.spec).absolute()))
    return result.exit_code


if __name__ == "__main__":
    sys.exit(main())
