"""Write requirements.lock: the main environment resolved, for every supported Python.

`make lock` runs this in a throwaway venv where pyproject.toml was just installed afresh (no
constraints) on the lowest supported Python. That venv's `pip freeze` is the base; for each other
supported Python, `uv pip compile` resolves pyproject.toml again with the base as constraints (so
the shared packages keep their versions) for Linux x86_64, without installing anything or
downloading torch. A package that only some Pythons need gets a `python_version` marker. A base
package that needs a later patch release than the lowest supported Python's first (soupsieve
4.1.3 needs 3.11.5; Debian 12 has 3.11.2) gets a `python_full_version` marker, and the version uv
resolves for that first release (3.11.0) is locked beside it for the earlier patch releases.

torch and what only a torch build brings (nvidia-*, cuda-*, triton) are left out: the torch build
is the user's choice (README, "The torch build"). So is pip, the installer itself.
"""

from __future__ import annotations

import argparse
import platform
import re
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

LEFT_OUT = re.compile(r"^(torch|triton|pip|(nvidia|cuda)-.*)$")
EXTRAS = ("notebooks", "cluster", "test")  # what the Makefile installs: -e ".[notebooks,cluster,test]"
UV_PLATFORM = "x86_64-unknown-linux-gnu"  # CI's, the GPU hosts' and this project's machines'


def pins(lines: list[str]) -> dict[str, str]:
    """`name==version` lines -> {canonical name: version}, leaving out LEFT_OUT."""
    found = {}
    for line in lines:
        if not line.strip() or line.lstrip().startswith(("#", "-e")):
            continue
        req = Requirement(line)
        name = canonicalize_name(req.name)
        (spec,) = req.specifier
        if spec.operator != "==":
            raise SystemExit(f"lock: expected name==version, got {line!r}")
        if not LEFT_OUT.match(name):
            found[name] = spec.version
    return found


def freeze() -> dict[str, str]:
    """This venv's packages (the fresh resolution on this Python)."""
    out = subprocess.run([sys.executable, "-m", "pip", "freeze", "--all", "--exclude-editable"],
                         check=True, capture_output=True, text=True).stdout
    return pins(out.splitlines())


def constraints(path: Path, pinned: dict[str, str], torch: str) -> Path:
    path.write_text("".join(f"{n}=={v}\n" for n, v in sorted(pinned.items())) + f"{torch}\n")
    return path


def compile_for(python: str, constraints: Path, uv: str, root: Path) -> dict[str, str]:
    """pyproject.toml resolved by uv for `python` on Linux x86_64 under `constraints`."""
    cmd = [uv, "pip", "compile", "pyproject.toml", *[a for e in EXTRAS for a in ("--extra", e)],
           "--python-version", python, "--python-platform", UV_PLATFORM,
           "-c", str(constraints), "--no-header", "--no-annotate", "--quiet"]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=root).stdout
    return pins(out.splitlines())


def needs_later_patch(base: dict[str, str], first: str) -> dict[str, str]:
    """Base packages whose Requires-Python excludes `first` -> the Python they need at least."""
    later = {}
    for name in base:
        requires = SpecifierSet(metadata.metadata(name).get("Requires-Python") or "")
        if Version(first) not in requires:
            (floor,) = [s.version for s in requires if s.operator == ">="] or [None]
            if floor is None or Version(floor).release[:2] != Version(first).release[:2]:
                raise SystemExit(f"lock: {name} {base[name]} requires Python {requires}; a patch-release "
                                 f"split cannot express that for {first}")
            later[name] = floor
    return later


def patch_split(lines: list[str], base: dict[str, str], early: dict[str, str], later: dict[str, str]) -> list[str]:
    """Mark each `later` package's line for the patch releases that have it, and add the early one."""
    changed = {n for n in early if early[n] != base.get(n)} | {n for n in base if n not in early}
    if changed != set(later):
        raise SystemExit(f"lock: on the first patch release {sorted(changed)} differ, expected {sorted(later)}")
    out = []
    for line in lines:
        name = line.split("==")[0]
        if name not in later:
            out.append(line)
            continue
        if ";" in line:
            raise SystemExit(f"lock: {name} needs both a python_version and a patch-release marker")
        out.append(f'{line} ; python_full_version >= "{later[name]}"')
        if name in early:
            out.append(f'{name}=={early[name]} ; python_full_version < "{later[name]}"')
    return out


def merge(per_python: dict[str, dict[str, str]]) -> list[str]:
    """One line per package and version; a marker where only some Pythons need it."""
    needed: dict[tuple[str, str], list[str]] = {}
    for python, found in per_python.items():
        for name, version in found.items():
            needed.setdefault((name, version), []).append(python)
    names = [name for name, _ in needed]
    clashes = sorted({n for n in names if names.count(n) > 1})
    if clashes:  # the base constrains every shared package, so this means the resolvers disagree
        raise SystemExit(f"lock: {clashes} resolve to different versions on different Pythons")
    lines = []
    for (name, version), pythons in sorted(needed.items()):
        marker = " or ".join(f'python_version == "{p}"' for p in pythons)
        lines.append(f"{name}=={version}" + ("" if len(pythons) == len(per_python) else f" ; {marker}"))
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pythons", required=True, help="the supported Pythons, e.g. '3.11 3.12 3.13'")
    parser.add_argument("--torch", required=True, help="the torch the base was made with, e.g. torch==2.13.0")
    parser.add_argument("--uv", required=True, help="the uv executable")
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args(argv)
    root = Path(__file__).resolve().parents[1]
    here = "%d.%d" % sys.version_info[:2]
    pythons = args.pythons.split()
    if here != pythons[0]:
        raise SystemExit(f"lock: run on Python {pythons[0]}, the lowest supported; this is {here}")
    base = freeze()
    first = f"{pythons[0]}.0"
    later = needs_later_patch(base, first)
    per_python = {here: base}
    with tempfile.TemporaryDirectory() as tmp:
        # uv gets the base's versions and the same torch (it reads torch's metadata, never the wheel)
        everything = constraints(Path(tmp) / "all.txt", base, args.torch)
        for python in pythons[1:]:
            per_python[python] = compile_for(python, everything, args.uv, root)
        allowed = {n: v for n, v in base.items() if n not in later}
        early = compile_for(first, constraints(Path(tmp) / "early.txt", allowed, args.torch), args.uv, root) \
            if later else {}
    header = [
        "# The main environment resolved: what `make` installs, as pip constraints (-c requirements.lock).",
        f"# Written by `make lock`: pip freeze of a fresh install on Python {platform.python_version()}, "
        f"{platform.system()} {platform.machine()};",
        f"# {', '.join(pythons[1:])} resolved with uv pip compile for Linux x86_64 "
        "(a marker names the Pythons that alone need a package).",
        *([f"# {', '.join(sorted(later))}: a later {pythons[0]} release needed (python_full_version); "
           f"for those before it, uv pip compile for {first}."] if later else []),
        "# Left out: torch, nvidia-*, cuda-*, triton (the user's torch build) and pip. Do not edit.",
    ]
    lines = patch_split(merge(per_python), base, early, later)
    args.out.write_text("\n".join(header + lines) + "\n")
    marked = sum(";" in line for line in lines)
    print(f"wrote {args.out}: {len(lines)} packages, {marked} of them for some Pythons only")
    return 0


if __name__ == "__main__":
    sys.exit(main())
