"""The set-up files agree: pyproject.toml, requirements.lock, environment.yml and the Makefile.

Fast and offline: everything is read from the files themselves and from the installed packages'
metadata (importlib.metadata), never from an index.
"""

from __future__ import annotations

import ast
import importlib.metadata as metadata
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "requirements.lock"
EXTRAS_INSTALLED = {"notebooks", "cluster", "test"}  # what the Makefile's `-e ".[notebooks,cluster,test]"` installs
# Extras the Makefile leaves to the user, and why: the lock does not speak for them.
USER_EXTRAS = {"exllamav2": "ExLlamaV2's own engine: its wheel compiles a CUDA extension on first import (README)"}

# Left out of the lock on purpose: the torch build is the user's (CPU or CUDA, README), and these
# come only with a build (the CUDA one's libraries); pip is the installer itself.
LEFT_OUT = re.compile(r"^(torch|triton|pip|(nvidia|cuda)-.*)$")

# Imported but deliberately not a main-environment requirement, and why.
UNDECLARED_IMPORTS = {
    "auto_gptq": "the AutoGPTQ environment's (environment-autogptq.yml), not the main one's",
    "logbar": "optional: engine.py quiets gptqmodel's LogBar when gptqmodel brings it, else does without",
    "triton": "comes with torch's CUDA build; the workbench's own kernels (model/triton_kernels.py) run only there",
}


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def declared(user_extras: bool = False) -> list[Requirement]:
    """Every requirement pyproject.toml names: the dependencies and the extras `make` installs
    (with `user_extras`, the ones it leaves to the user too)."""
    project = pyproject()["project"]
    extras = [v for k, v in project["optional-dependencies"].items() if user_extras or k not in USER_EXTRAS]
    return [Requirement(line) for line in project["dependencies"] + sum(extras, [])]


def lock_lines() -> list[Requirement]:
    """requirements.lock's entries; fails on one that is not `name==version`, with or without a marker."""
    entries = []
    for line in LOCK.read_text().splitlines():
        if not line or line.startswith("#"):
            continue
        req = Requirement(line)
        assert len(req.specifier) == 1 and next(iter(req.specifier)).operator == "==" and not req.extras, \
            f"requirements.lock: {line!r} is not name==version"
        entries.append(req)
    return entries


def lock(environment: dict[str, str] | None = None) -> dict[str, Version]:
    """The lock's pins that apply on this Python (or `environment`), by canonical name."""
    pins: dict[str, Version] = {}
    for req in lock_lines():
        if req.marker and not req.marker.evaluate(environment):
            continue
        name = canonicalize_name(req.name)
        assert name not in pins, f"requirements.lock pins {name} twice for {environment or 'this Python'}"
        pins[name] = Version(next(iter(req.specifier)).version)
    return pins


def makefile_var(name: str) -> str:
    found = re.search(rf"^{name}\s*[:?]?=\s*(.*)$", (ROOT / "Makefile").read_text(), re.M)
    assert found, f"the Makefile sets no {name}"
    return found.group(1).strip()


def environment_yml(name: str = "environment.yml") -> tuple[str, list[str]]:
    """An environment file's Python spec and its pip lines."""
    deps = yaml.safe_load((ROOT / name).read_text())["dependencies"]
    (python,) = [d for d in deps if isinstance(d, str) and re.match(r"python\b", d)]
    (pip,) = [d["pip"] for d in deps if isinstance(d, dict)]
    return python, pip


def minors(spec: SpecifierSet) -> list[str]:
    return [f"3.{m}" for m in range(30) if Version(f"3.{m}") in spec]


def test_one_python_range_everywhere():
    makefile = makefile_var("PYTHONS").split()
    assert makefile == ["3.11", "3.12", "3.13"]
    assert minors(SpecifierSet(pyproject()["project"]["requires-python"])) == makefile
    python, _ = environment_yml()
    assert minors(SpecifierSet(python.removeprefix("python"))) == makefile, python
    # AutoGPTQ 0.7.1 has wheels for cp311 only (README, Makefile)
    assert environment_yml("environment-autogptq.yml")[0] == "python=3.11"
    assert makefile_var("LEGACY_PYTHON") == "python3.11"


def test_environment_yml_installs_what_make_installs():
    _, pip = environment_yml()
    (editable,) = [p for p in pip if p.startswith("-e .")]
    extras = set(re.fullmatch(r"-e \.\[(.*)\]", editable).group(1).split(","))
    assert extras == set(pyproject()["project"]["optional-dependencies"]) - set(USER_EXTRAS) == EXTRAS_INSTALLED
    assert '-e ".[notebooks,cluster,test]"' in (ROOT / "Makefile").read_text()
    assert f"-c {LOCK.name}" in pip and makefile_var("LOCK") == LOCK.name
    torch = [p for p in pip if p.startswith("torch")]
    assert torch == [makefile_var("TORCH_SPEC")] == ["torch==2.13.0"]


def test_every_declared_requirement_agrees_with_the_lock():
    pins = lock()
    for req in declared():
        name = canonicalize_name(req.name)
        if LEFT_OUT.match(name):
            assert name not in pins, f"requirements.lock pins {name}, which it leaves to the user"
            continue
        assert name in pins, f"pyproject requires {req}, requirements.lock has no {name}: run `make lock`"
        assert pins[name] in req.specifier, f"pyproject requires {req}, requirements.lock has {pins[name]}"
        if str(req.specifier).startswith("=="):
            assert str(req.specifier) == f"=={pins[name]}", f"pyproject pins {req}, requirements.lock {pins[name]}"


def test_the_lock_leaves_the_torch_build_to_the_user():
    assert not [req.name for req in lock_lines() if LEFT_OUT.match(canonicalize_name(req.name))]
    torch = next(r for r in declared() if r.name == "torch")
    assert Version(makefile_var("TORCH_SPEC").removeprefix("torch==")) in torch.specifier


def test_the_lock_speaks_for_every_supported_python():
    """Its markers name only supported Pythons, and each of them gets one version of a package."""
    pythons = makefile_var("PYTHONS").split()
    for marker in {str(req.marker) for req in lock_lines() if req.marker}:
        for version in re.findall(r'python(?:_full)?_version [<>=!]+ "([\d.]+)"', marker):
            assert ".".join(version.split(".")[:2]) in pythons, f"requirements.lock: {marker} names Python {version}"
    for python in pythons:
        for full in (f"{python}.0", f"{python}.99"):
            lock({"python_version": python, "python_full_version": full, "extra": ""})


def reachable(roots: list[Requirement]) -> dict[str, str]:
    """Every distribution the roots need on this Python, found through the installed metadata."""
    found: dict[str, str] = {}
    done: set[tuple[str, frozenset[str]]] = set()
    todo = [(r, "") for r in roots]  # (requirement, the extra its marker is evaluated for)
    while todo:
        req, extra = todo.pop()
        key = (canonicalize_name(req.name), frozenset(req.extras))
        if key in done or (req.marker and not req.marker.evaluate({"extra": extra})):
            continue
        done.add(key)
        try:
            dist = metadata.distribution(req.name)
        except metadata.PackageNotFoundError:
            pytest.fail(f"{req.name} (needed as {req}) is not installed: run `make setup`")
        found[key[0]] = dist.version
        todo += [(Requirement(r), e) for r in dist.requires or [] for e in ["", *req.extras]]
    return found


def test_the_lock_is_exactly_what_pyproject_needs():
    """Nothing missing, nothing stray: the lock's pins for this Python are the closure of pyproject's."""
    roots = [r for r in declared() if not r.marker]
    needed = {name for name in reachable(roots) if not LEFT_OUT.match(name)}
    pins = set(lock())
    assert not needed - pins, f"needed but not in requirements.lock (run `make lock`): {sorted(needed - pins)}"
    assert not pins - needed, f"in requirements.lock but needed by nothing: {sorted(pins - needed)}"


def test_installed_versions_are_the_lock_versions():
    """What `make` installed is what the lock says (it catches a venv made before a lock change)."""
    pins = lock()
    installed = reachable([r for r in declared() if not r.marker])
    wrong = {n: f"{v} installed, lock {pins[n]}" for n, v in installed.items()
             if n in pins and Version(v) != pins[n]}
    assert not wrong, f"run `make setup`: {wrong}"


FOLDERS = ("workbench", "tests", "benchmarks", "tools")  # their .py files, and notebooks/*.ipynb


def third_party_imports() -> dict[str, set[str]]:
    """Top-level modules imported by the package, tests, benchmarks, tools and notebooks -> where."""
    sources = {str(p.relative_to(ROOT)): p.read_text()
               for folder in FOLDERS for p in (ROOT / folder).rglob("*.py")}
    for nb in (ROOT / "notebooks").glob("*.ipynb"):
        cells = [c["source"] for c in json.loads(nb.read_text())["cells"] if c["cell_type"] == "code"]
        lines = "\n".join(map("".join, cells)).splitlines()
        sources[str(nb.relative_to(ROOT))] = "\n".join(s for s in lines if not s.lstrip().startswith(("%", "!")))
    # the package, and the scripts and test helpers that import each other from their own folder
    local = {"workbench"} | {p.stem for folder in FOLDERS[1:] for p in (ROOT / folder).rglob("*.py")}
    found: dict[str, set[str]] = {}
    for where, text in sources.items():
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.Import):
                modules = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [node.module]
            else:
                continue
            for top in {m.split(".")[0] for m in modules} - local - set(sys.stdlib_module_names):
                found.setdefault(top, set()).add(where)
    return found


def test_direct_imports_are_declared():
    names = {canonicalize_name(r.name) for r in declared(user_extras=True)}
    owners = metadata.packages_distributions()
    undeclared = {}
    for module, where in sorted(third_party_imports().items()):
        if module in UNDECLARED_IMPORTS:
            continue
        # a module not installed here (a user extra's) counts as the distribution of its own name
        dists = {canonicalize_name(d) for d in owners.get(module, [])} or {canonicalize_name(module)}
        if not dists & names:
            undeclared[module] = (sorted(dists) or "not installed", sorted(where)[:3])
    assert not undeclared, f"imported but not in pyproject.toml: {undeclared}"


def test_build_metadata():
    (backend,) = [Requirement(r) for r in pyproject()["build-system"]["requires"]]
    # an SPDX license string (PEP 639) needs setuptools 77 or later
    assert isinstance(pyproject()["project"]["license"], str)
    assert backend.name == "setuptools" and "76.99" not in backend.specifier and "77.0.3" in backend.specifier
    package_data = pyproject()["tool"].get("setuptools", {}).get("package-data", {})
    for package, patterns in package_data.items():
        for pattern in patterns:
            assert list((ROOT / package).glob(pattern)), f"package-data {package}: {pattern!r} matches no file"


def test_version_flag_prints_the_installed_version():
    out = subprocess.run([sys.executable, "-m", "workbench", "--version"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout == f"codefuse-workbench {metadata.version('codefuse-workbench')}\n"
    assert metadata.version("codefuse-workbench") == pyproject()["project"]["version"]
