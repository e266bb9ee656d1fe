"""Which notebooks a report renders and the parameters each is given, checked before anything runs.
"""

from __future__ import annotations

import json
import keyword
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any

from ..errors import ConfigError

RESERVED_PARAMETERS = {"MODEL": "--model", "KERNEL": "--kernel", "DEVICE": "--device", "OUTPUT_DIR": "--out"}
NOTEBOOK_NAME = re.compile(r"^\d+_\w+$")  # 01_quickstart: the number gives the order


# --- which notebooks, with which parameters ----------------------------------------------------

def default_notebooks_dir() -> Path:
    """The repository's notebooks/ folder: beside the package (editable install), else ./notebooks."""
    candidates = [Path(__file__).resolve().parents[1] / "notebooks", Path.cwd() / "notebooks"]
    for folder in candidates:
        if folder.is_dir():
            return folder
    raise ConfigError(f"no notebooks folder at {' or '.join(map(str, candidates))}; "
                      "pass --notebooks DIR, the repository's notebooks/ folder")


def find_notebooks(folder: str | os.PathLike | None = None, only: Sequence[str] = ()) -> tuple[Path, ...]:
    """The `NN_name.ipynb` notebooks of `folder` (default: the repository's), in order.

    `only` keeps those named by their full name (`04_kernels`) or their number (`04`).
    """
    folder = Path(folder) if folder is not None else default_notebooks_dir()
    if not folder.is_dir():
        raise ConfigError(f"notebooks folder {folder} does not exist")
    found = sorted(p.absolute() for p in folder.glob("*.ipynb") if NOTEBOOK_NAME.match(p.stem))
    if not found:
        raise ConfigError(f"{folder} holds no notebooks named like 01_name.ipynb")
    if not only:
        return tuple(found)
    picked = set()
    for want in only:
        match = [p for p in found if want in (p.stem, p.stem.split("_", 1)[0])]
        if not match:
            raise ConfigError(f"--only {want}: no such notebook in {folder}; "
                              f"known: {', '.join(p.stem for p in found)}")
        picked.update(match)
    return tuple(sorted(picked))


def load_params(path: str | os.PathLike) -> dict:
    """Read a params file (module docstring): JSON if it ends in .json, otherwise YAML."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"--params {path}: cannot read it ({e.strerror or e})") from None
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ConfigError(f"--params {path}: not valid JSON ({e})") from None
    else:
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise ConfigError(f"--params {path}: not valid YAML ({e})") from None
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise ConfigError(f"--params {path}: must hold a mapping of NAME: value, got a {type(data).__name__}")
    return data


def _check_parameter_name(name, where: str) -> None:
    if not isinstance(name, str) or not name.isidentifier() or keyword.iskeyword(name):
        raise ConfigError(f"{where}: {name!r} is not a valid parameter name (a Python identifier)")
    if name in RESERVED_PARAMETERS:
        raise ConfigError(f"{where}: {name} is set by the report runner; use {RESERVED_PARAMETERS[name]}")


def checked_params(params: Mapping, notebook_names: set[str]) -> Mapping[str, Any]:
    """Validate the params mapping's shape and return a read-only, JSON-clean copy."""
    if not isinstance(params, Mapping):
        raise ConfigError(f"params must be a mapping, got a {type(params).__name__}")
    for key, value in params.items():
        if isinstance(key, str) and key in notebook_names:
            if not isinstance(value, Mapping):
                raise ConfigError(f"params[{key!r}]: a notebook's section must map NAME: value, "
                                  f"got a {type(value).__name__}")
            for name in value:
                _check_parameter_name(name, f"params[{key!r}]")
        elif isinstance(key, str) and not key.isidentifier():
            raise ConfigError(f"params: {key!r} is neither a parameter name nor a notebook; "
                              f"notebooks: {', '.join(sorted(notebook_names))}")
        else:
            _check_parameter_name(key, "params")
    try:  # papermill writes the values as Python literals; anything JSON cannot hold would not survive
        clean = json.loads(json.dumps(params, allow_nan=False))
    except (TypeError, ValueError) as e:
        raise ConfigError(f"params: every value must be a string, number, boolean, null, list or "
                          f"mapping ({e})") from None
    return MappingProxyType(clean)
