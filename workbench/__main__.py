"""`python -m workbench COMMAND ...`: the command line.

Each command is a `main(argv) -> int` function in the module that owns the work; this file
only dispatches, so `python -m workbench COMMAND --help` is answered by that module.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import sys

from .errors import WorkbenchError

DISTRIBUTION = "codefuse-workbench"  # the name pyproject.toml gives the package

# command -> (module, function, one-line help)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "demo": ("workbench.model.demo", "main", "build (or reuse) the embedded demo model and print its folder"),
    "bench-overhead": ("workbench.studies.overhead", "main",
                       "measure what instrumented generation costs against model.generate"),
    "bench-modes": ("workbench.studies.decode_modes", "main",
                    "ms/token per kernel and decode mode beside the floor, with proofs"),
    "bench-peer": ("workbench.studies.peer", "main",
                   "ExLlamaV2's own engine beside the workbench's graph and fast paths"),
    "bench-workload": ("workbench.studies.workload_bench", "main",
                       "HumanEval-shaped workload: one at a time against the batched runner"),
    "humaneval": ("workbench.humaneval.runner", "main", "score HumanEval the authors' way, batched and resumable"),
    "kernels": ("workbench.model.registry", "main", "list the GPTQ kernels, their constraints and which can run here"),
    "verify": ("workbench.model.checkpoint", "main", "check a checkpoint's files against the card's or its SHA256SUMS"),
    "synthetic": ("workbench.model.synthetic", "main",
                  "write a random GPTQ checkpoint of a Llama shape (not a trained model)"),
    "report": ("workbench.report.runner", "main", "render the notebooks into a report (papermill + HTML + index)"),
    "sweep": ("workbench.report.sweep", "main", "run a grid of notebooks, and HumanEval in shards, on a Ray cluster"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: python -m workbench COMMAND [ARGS...]", "       python -m workbench --version", "", "commands:"]
    lines += [f"  {name:<{width}}  {help_}" for name, (_, _, help_) in COMMANDS.items()]
    lines += ["", "`python -m workbench COMMAND --help` explains a command's arguments."]
    return "\n".join(lines)


def print_version() -> int:
    """Print the installed package's version, as pip knows it (importlib.metadata)."""
    try:
        print(f"{DISTRIBUTION} {importlib.metadata.version(DISTRIBUTION)}")
    except importlib.metadata.PackageNotFoundError:
        print(f"error: {DISTRIBUTION} is not installed (this is a source tree on sys.path); "
              "install it with 'pip install -e .' or 'make setup'", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    if argv[0] == "--version":
        return print_version()
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"unknown command {name!r}; known: {', '.join(COMMANDS)}\n\n{usage()}", file=sys.stderr)
        return 2
    module, func, _ = COMMANDS[name]
    try:
        return int(getattr(importlib.import_module(module), func)(rest) or 0)
    except WorkbenchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
