"""Which notebooks a report renders and the parameters each is given, checked before anything runs:
the params file's shape (`checked_params`), then every name against the notebooks' own parameters
cells as papermill reads them (`notebook_parameters`, `check_declared`).
"""

from __future__ import annotations

import json
import keyword
import os
import re
from collections.abc import Collection, Mapping, Sequence
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


def notebook_parameters(notebook: str | os.PathLike) -> dict[str, dict]:
    """The names `notebook`'s parameters cell defines, read by papermill's own `inspect_notebook`:
    name -> {"name", "inferred_type_name", "default", "help"}; empty without a parameters cell."""
    try:
        import papermill
    except ImportError:
        raise ConfigError("papermill is not installed, so the notebooks' parameters cannot be checked; "
                          "install the notebooks extra: pip install -e '.[notebooks]'") from None
    try:
        return dict(papermill.inspect_notebook(str(notebook)))
    except Exception as e:  # a notebook papermill cannot parse would fail the same way when it runs
        raise ConfigError(f"{notebook}: papermill cannot read its parameters cell ({type(e).__name__}: {e})") from None


def declared_parameters(params: Mapping, notebooks: Mapping[str, Path], running: Collection[str]) -> dict:
    """notebook name -> the parameters its cell defines, for the notebooks `check_declared` needs.

    Those being run and those the params give a section are read (an unreadable one is an
    error: it would fail when run); the others of `notebooks` (the suite beside them) only when
    a global name is found in none of those, and where they can be read.
    """
    wanted = [name for name in notebooks if name in running or name in params]
    declared = {name: frozenset(notebook_parameters(notebooks[name])) for name in wanted}
    found = set().union(*declared.values())
    if any(key.isidentifier() and key not in found for key in params):
        for name, path in notebooks.items():
            if name not in declared and NOTEBOOK_NAME.match(name):
                try:
                    declared[name] = frozenset(notebook_parameters(path))
                except ConfigError:  # not part of this run; its own run would say what is wrong
                    continue
    return declared


def check_declared(params: Mapping, declared: Mapping[str, Collection[str]], running: Collection[str]) -> None:
    """Refuse a name no notebook's parameters cell defines (a typo would otherwise be ignored).

    `declared` maps each notebook's name to the parameters its cell defines. A global name must
    be a parameter of at least one notebook that it could reach (`declared`'s); a notebook's
    section may hold only that notebook's parameters. The error lists the allowed names: those
    of the notebooks being run (`running`) for a global name.
    """
    for key, value in params.items():
        if key in declared:
            unknown = sorted(set(value) - set(declared[key]))
            if unknown:
                raise ConfigError(f"params[{key!r}]: {', '.join(unknown)} {_is_not(unknown)} a parameter of {key}; "
                                  f"its parameters cell defines {_allowed(declared[key])}")
        elif key.isidentifier() and not any(key in names for names in declared.values()):
            allowed = set().union(*(declared[name] for name in running if name in declared))
            raise ConfigError(f"params: {key} is a parameter of no notebook; the notebooks run here take "
                              f"{_allowed(allowed)}")


def _is_not(names: Sequence[str]) -> str:
    return "is not" if len(names) == 1 else "are not"


def _allowed(names: Collection[str]) -> str:
    user = sorted(set(names) - set(RESERVED_PARAMETERS))
    return ", ".join(user) if user else "no parameters of its own"
