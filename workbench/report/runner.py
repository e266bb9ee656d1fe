"""`python -m workbench report`: run every notebook with papermill and render a browsable report.

Each notebook `NN_name.ipynb` runs in a fresh process of this same interpreter that executes it
with papermill, under a wall-clock limit that, when reached, ends that process and the Jupyter
kernel it started. A crash or a hang in one notebook therefore cannot stop the others. The runner then
renders the executed notebook to an HTML page that makes no network requests, and writes, into
the output folder OUT:

    OUT/<name>.ipynb   the executed notebook (partial when it failed or timed out)
    OUT/<name>.html    the same, rendered, images embedded
    OUT/<name>.json    written by the notebook itself; its "headline" dict is shown in the index
    OUT/<name>.log     what the papermill process and the Jupyter kernel printed on stdout/stderr
    OUT/index.html     one table: status, duration, headline numbers, error excerpt, links
    OUT/report.json    the same, machine-readable, with the config and the environment

Both summaries are rewritten after every notebook, so a long run can be watched in a browser
(index.html reloads itself while the state is "running").

One runner at a time writes into OUT: it holds OUT/.workbench-report.lock (report/lock.py), and a
second one stops with an error naming the first. Stopping the runner stops everything it started:
Ctrl-C, SIGTERM and SIGHUP end papermill and its kernel and mark the report "interrupted"; if the
runner is killed outright (SIGKILL, the out-of-memory killer), papermill dies with it (the parent-
death signal) and its kernel follows within a second (ipykernel exits when its parent changes),
and the next runner started on OUT marks the report it left "running" as "interrupted".

Every notebook receives the parameters MODEL, KERNEL, DEVICE and OUTPUT_DIR (OUT, absolute), plus
those of the params file, and runs with OUT as its working folder: whatever it writes with a
relative path lands in the report rather than in the source tree, and a report never depends on
where it was started from.

The params file (JSON when it ends in .json, otherwise YAML) holds one mapping. A key that is a
Python identifier is a parameter for every notebook whose parameters cell defines it. A key that
names a notebook (its file name without .ipynb; such names start with digits, so they can never
be parameters) holds a mapping of parameters for that notebook only, which win over the global
ones:

    MAX_NEW_TOKENS: 32            # every notebook that has MAX_NEW_TOKENS
    05_latency_curves:            # this notebook only
      PROMPT_LENGTHS: [16, 64, 256]

Every name is checked against the notebooks' parameters cells (papermill's own reading) before
anything runs: a name that no notebook defines, or that a notebook's section gives a notebook
without it, is refused with the names allowed. MODEL, KERNEL, DEVICE and OUTPUT_DIR come from
the command line and cannot be set there.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from ..cache import atomic_write_json, atomic_write_text
from ..environment import collect_env
from ..errors import ConfigError, WorkbenchError
from ..model.checkpoint import model_kind
from ..model.demo import default_path
from ..model.registry import resolve_device
from .html import REFRESH_TAG, headline_text, render_html, render_index
from .lock import folder_lock
from .params import check_declared, checked_params, declared_parameters, find_notebooks, load_params

DEFAULT_TIMEOUT_S = 900.0
DEFAULT_JUPYTER_KERNEL = "python3"
STATUSES = ("ok", "failed", "timeout")
KILL_WAIT_S = 10.0  # how long killed processes get to disappear before the runner moves on
SOURCE_HEAD_LINES = 3  # lines of the failing cell shown in the index

# The child process: papermill writes the output notebook as each cell starts and ends, so a
# failed or killed run still leaves the cells that ran. The error itself is in that notebook;
# the exit message only feeds the log. On Linux the child asks to be killed when the runner dies:
# a runner killed outright (SIGKILL, the out-of-memory killer, a sweep's Ray worker that died)
# cannot end it, and it would finish the notebook as an orphan; its kernel follows it, since
# ipykernel exits when its parent changes.
_CHILD_SCRIPT = """\
import json, sys
spec = json.loads(sys.argv[1])
if sys.platform == "linux":
    import ctypes, os, signal
    ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # 1: PR_SET_PDEATHSIG
    if os.getppid() != spec["runner_pid"]:  # the runner died before that took effect
        sys.exit("the report runner is gone")
import papermill
from papermill.exceptions import PapermillExecutionError
try:
    papermill.execute_notebook(spec["input"], spec["output"], parameters=spec["parameters"],
                               kernel_name=spec["kernel_name"], cwd=spec["cwd"],
                               progress_bar=spec["progress_bar"], log_output=False)
except PapermillExecutionError as e:
    sys.exit(f"{e.ename}: {e.evalue}")
"""


@dataclass(frozen=True)
class ReportConfig:
    """What `run_report` runs, where it writes, and with which parameters."""

    model: str = "demo"  # a checkpoint folder, or "demo": each notebook builds or reuses the demo model
    kernel: str = "auto"  # a workbench GPTQ kernel, or "auto"; the notebooks check it
    device: str = "auto"  # auto, cpu, cuda or cuda:N
    out: Path = Path("reports")  # the report folder, made absolute
    params: Mapping[str, Any] = field(default_factory=dict)  # the params file's mapping (module docstring)
    notebooks: tuple[Path, ...] = field(default_factory=find_notebooks)
    timeout_s: float = DEFAULT_TIMEOUT_S  # wall clock per notebook, Jupyter kernel start included
    jupyter_kernel: str = DEFAULT_JUPYTER_KERNEL  # python3 = the Jupyter kernel of this interpreter
    progress_bars: bool = False  # papermill's per-cell progress bars, on stderr
    # notebook name -> the names its parameters cell defines (papermill's reading); set from the files
    declared: Mapping[str, frozenset[str]] = field(init=False, repr=False, compare=False, default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("model", "kernel", "device", "jupyter_kernel"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise ConfigError(f"{name}={value!r}: must be a non-empty string")
        if self.model != "demo":
            folder = Path(self.model).expanduser()
            if not folder.is_dir():
                raise ConfigError(f"model={self.model!r}: not a folder; pass a checkpoint folder or 'demo'")
            # absolute, because each notebook runs with OUT as its working folder
            object.__setattr__(self, "model", str(folder.absolute()))
        if isinstance(self.timeout_s, bool) or not isinstance(self.timeout_s, (int, float)) \
                or not math.isfinite(self.timeout_s) or self.timeout_s <= 0:
            raise ConfigError(f"timeout_s={self.timeout_s!r}: must be a positive number of seconds")
        out = Path(self.out).expanduser().absolute()
        object.__setattr__(self, "out", out)
        notebooks = tuple(Path(p).expanduser().absolute() for p in self.notebooks)
        object.__setattr__(self, "notebooks", notebooks)
        if not notebooks:
            raise ConfigError("notebooks: nothing to run")
        for nb in notebooks:
            if nb.suffix != ".ipynb" or not nb.is_file():
                raise ConfigError(f"notebooks: {nb} is not a notebook file")
            if nb.parent.resolve() == out.resolve():
                raise ConfigError(f"out={out}: holds the notebook {nb.name} itself, which the executed "
                                  "copy would overwrite; write the report to another folder")
        names = [nb.stem for nb in notebooks]
        if len(set(names)) != len(names):
            raise ConfigError(f"notebooks: two share a name ({', '.join(names)}); their outputs would collide")
        beside = {p.stem: p for folder in {nb.parent for nb in notebooks} for p in folder.glob("*.ipynb")}
        beside.update((nb.stem, nb) for nb in notebooks)
        params = checked_params(self.params, set(beside))
        declared = declared_parameters(params, beside, running=names)
        check_declared(params, declared, running=names)
        object.__setattr__(self, "params", params)
        object.__setattr__(self, "declared", declared)

    def parameters_for(self, name: str) -> dict[str, Any]:
        """The parameters papermill injects into notebook `name`."""
        common = {k: v for k, v in self.params.items() if k.isidentifier() and k in self.declared.get(name, ())}
        return {"MODEL": self.model, "KERNEL": self.kernel, "DEVICE": self.device,
                "OUTPUT_DIR": str(self.out), **common, **self.params.get(name, {})}

    def to_dict(self) -> dict:
        return {"model": self.model, "kernel": self.kernel, "device": self.device, "out": str(self.out),
                "params": dict(self.params), "notebooks": [str(p) for p in self.notebooks],
                "timeout_s": self.timeout_s, "jupyter_kernel": self.jupyter_kernel,
                "progress_bars": self.progress_bars}


# --- what one run produced ----------------------------------------------------------------------

@dataclass(frozen=True)
class NotebookError:
    """Why a notebook did not finish: the exception, and where."""

    name: str  # the exception's class, e.g. ValueError; "Timeout" when the wall clock ran out
    message: str
    execution_count: int | None = None  # the failing cell's "In [n]"
    source_head: str = ""  # its first lines

    def one_line(self) -> str:
        first = self.message.strip().splitlines()[0] if self.message.strip() else ""
        return f"{self.name}: {first}" if first else self.name


@dataclass(frozen=True)
class NotebookRun:
    """One notebook's outcome; paths are None for files that were not written."""

    name: str
    notebook: Path  # the input
    status: str  # ok, failed or timeout
    duration_s: float
    parameters: Mapping[str, Any]
    ipynb_path: Path | None
    html_path: Path | None
    json_path: Path | None
    log_path: Path | None
    headline: Mapping[str, Any] = field(default_factory=dict)
    error: NotebookError | None = None
    notes: tuple[str, ...] = ()  # things worth knowing that are not errors, e.g. no results file

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ConfigError(f"status={self.status!r}: allowed values are {', '.join(STATUSES)}")

    def to_dict(self) -> dict:
        def rel(path: Path | None) -> str | None:  # relative, so the report folder can be moved
            return None if path is None else path.name

        return {"name": self.name, "notebook": str(self.notebook), "status": self.status,
                "duration_s": round(self.duration_s, 3), "parameters": dict(self.parameters),
                "ipynb": rel(self.ipynb_path), "html": rel(self.html_path), "json": rel(self.json_path),
                "log": rel(self.log_path), "headline": dict(self.headline),
                "error": None if self.error is None else dataclasses.asdict(self.error), "notes": list(self.notes)}


@dataclass(frozen=True)
class ReportResult:
    config: ReportConfig
    runs: tuple[NotebookRun, ...]
    started_at: str  # ISO 8601, UTC
    duration_s: float
    index_html: Path
    report_json: Path

    @property
    def ok(self) -> bool:
        return all(run.status == "ok" for run in self.runs)

    @property
    def exit_code(self) -> int:
        return 0 if self.ok else 1


# --- the model, the kernel and the environment the report describes ------------------------------

def describe_model(model: str) -> dict:
    """The model's folder and kind (demo, synthetic, checkpoint, or unknown when its config.json
    cannot be read), for the index's banner. "demo" names the demo model even before it is built."""
    folder = default_path() if model == "demo" else Path(model)
    try:
        kind = model_kind(folder) if (folder / "config.json").is_file() else "unknown"
    except WorkbenchError:  # a config.json that is not JSON: the notebooks will say more
        kind = "unknown"
    if model == "demo":
        kind = "demo"
    return {"given": model, "folder": str(folder), "kind": kind}


BANNERS = {
    "synthetic": "SYNTHETIC CHECKPOINT: random weights in the real checkpoint's layout. The numbers "
                 "measure speed and memory, not what the model writes.",
    "demo": "DEMO MODEL: the small stand-in that `python -m workbench demo` builds, not "
            "CodeFuse-CodeLlama-34B. The numbers show that the workbench runs, not how the real model does.",
}


def jupyter_kernel_python(jupyter_kernel: str) -> str:
    """The interpreter that Jupyter kernel `jupyter_kernel` runs, as jupyter_client will launch it."""
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    manager = KernelSpecManager()
    try:
        argv = manager.get_kernel_spec(jupyter_kernel).argv
    except NoSuchKernel:
        known = ", ".join(sorted(manager.find_kernel_specs())) or "none"
        raise ConfigError(f"Jupyter kernel {jupyter_kernel!r} is not installed (installed: {known}); "
                          "for this environment's own Jupyter kernel install ipykernel here "
                          "(pip install -e '.[notebooks]')") from None
    # jupyter_client's own rule: a bare "python" in a kernelspec means the launching interpreter
    major, minor = sys.version_info[:2]
    if argv[0] in ("python", f"python{major}", f"python{major}.{minor}"):
        return sys.executable
    return shutil.which(argv[0]) or argv[0]


def _same_environment(python_a: str, python_b: str) -> bool:
    # A venv's python is a symlink to the base interpreter, so compare the bin folders, not the files.
    return os.path.realpath(os.path.dirname(python_a)) == os.path.realpath(os.path.dirname(python_b))


def _check_jupyter_kernel(config: ReportConfig) -> str:
    python = jupyter_kernel_python(config.jupyter_kernel)
    if config.jupyter_kernel == DEFAULT_JUPYTER_KERNEL and not _same_environment(python, sys.executable):
        raise ConfigError(
            f"the Jupyter kernel {DEFAULT_JUPYTER_KERNEL!r} runs {python}, not this interpreter "
            f"({sys.executable}), so the notebooks would run in another environment. A kernelspec of "
            "that name earlier on the Jupyter path shadows this environment's: find it with "
            "`jupyter kernelspec list` and remove it, or run the report with that environment's python.")
    return python


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def report_environment(config: ReportConfig, python_path: str) -> dict:
    """Where the report ran: `workbench.environment.collect_env()` plus the runner's own tools."""
    env = {"runner_python": sys.executable, "jupyter_kernel": config.jupyter_kernel,
           "jupyter_kernel_python": python_path, "papermill": _version("papermill"),
           "nbconvert": _version("nbconvert"), "ipykernel": _version("ipykernel"),
           # with --jupyter-kernel of another environment, the versions below are not the notebooks'
           "jupyter_kernel_in_runner_env": _same_environment(python_path, sys.executable)}
    try:

        try:

            device = resolve_device(config.device)
        except ImportError:
            device = "cpu" if config.device == "auto" else config.device
        env.update(collect_env(device))
    except Exception as e:  # the report is still worth having without it; say why it is missing
        env["collect_env_error"] = f"{type(e).__name__}: {e}"
    return env


# --- running one notebook -----------------------------------------------------------------------

def run_notebook(config: ReportConfig, notebook: Path) -> NotebookRun:
    """Execute one notebook in a child process under the wall-clock limit, then render it."""
    name = notebook.stem
    out = config.out
    out.mkdir(parents=True, exist_ok=True)
    paths = {kind: out / f"{name}.{kind}" for kind in ("ipynb", "html", "json", "log")}
    for path in paths.values():  # a file left by an earlier report would pass for this run's
        path.unlink(missing_ok=True)
    parameters = config.parameters_for(name)
    spec = {"input": str(notebook), "output": str(paths["ipynb"]), "parameters": parameters,
            "kernel_name": config.jupyter_kernel, "cwd": str(out), "progress_bar": config.progress_bars,
            "runner_pid": os.getpid()}
    start = time.perf_counter()
    with open(paths["log"], "wb") as log:
        child = subprocess.Popen([sys.executable, "-c", _CHILD_SCRIPT, json.dumps(spec)],
                                 stdin=subprocess.DEVNULL, stdout=log,
                                 stderr=None if config.progress_bars else subprocess.STDOUT)
        timed_out = False
        try:
            child.wait(timeout=config.timeout_s)
        except subprocess.TimeoutExpired:
            timed_out = True
        finally:  # after a timeout or Ctrl-C: end papermill and its Jupyter kernel
            _end_process_tree(child)
    duration_s = time.perf_counter() - start

    nb = _read_notebook(paths["ipynb"])
    status, error = _outcome(nb, timed_out, child.returncode, paths["log"], config.timeout_s)
    if status == "timeout" and nb is not None:
        _mark_timeout(nb, paths["ipynb"], config.timeout_s)
    notes: list[str] = []
    html_path = None
    if nb is not None:
        try:
            render_html(nb, paths["html"], name)
            html_path = paths["html"]
        except Exception as e:  # the run's outcome stands; only its page is missing
            notes.append(f"HTML rendering failed: {type(e).__name__}: {e}")
    else:
        notes.append("no executed notebook was written")
    headline, json_notes = _read_headline(paths["json"], expected=status == "ok")
    notes += json_notes
    return NotebookRun(name=name, notebook=notebook, status=status, duration_s=duration_s,
                       parameters=parameters, ipynb_path=paths["ipynb"] if nb is not None else None,
                       html_path=html_path, json_path=paths["json"] if paths["json"].exists() else None,
                       log_path=paths["log"], headline=headline, error=error, notes=tuple(notes))


def _outcome(nb, timed_out: bool, returncode: int, log: Path, timeout_s: float) -> tuple[str, NotebookError | None]:
    """The status, and the error from the executed notebook when it holds one, else from the log."""
    if timed_out:
        return "timeout", _timeout_error(nb, timeout_s)
    if returncode == 0:
        return "ok", None
    return "failed", (_error_from_notebook(nb) if nb is not None else None) or _error_from_log(log, returncode)


def _end_process_tree(child: subprocess.Popen) -> None:
    """Kill a still-running papermill process and all it started.

    The Jupyter kernel runs in a session of its own (jupyter_client starts it so), so killing the
    child's process group would miss it: the tree is collected by parenthood instead.
    """
    if child.poll() is not None:
        return
    import psutil

    try:
        parent = psutil.Process(child.pid)
        family = [parent, *parent.children(recursive=True)]
    except psutil.NoSuchProcess:
        family = []
    for proc in family:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()
    psutil.wait_procs(family, timeout=KILL_WAIT_S)
    child.wait()


def _read_notebook(path: Path):
    """The executed notebook, or None when it was never written or was cut off mid-write."""
    import nbformat

    try:
        return nbformat.read(path, as_version=4)
    except (OSError, ValueError):
        return None


def _cell_state(cell) -> str | None:
    return cell.get("metadata", {}).get("papermill", {}).get("status")


def _source_head(cell) -> str:
    lines = [line for line in cell.get("source", "").splitlines() if line.strip()]
    head = lines[:SOURCE_HEAD_LINES] + (["..."] if len(lines) > SOURCE_HEAD_LINES else [])
    return "\n".join(head)


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def _error_from_notebook(nb) -> NotebookError | None:
    """The first error output, or the cell papermill marked failed (e.g. the Jupyter kernel died in it)."""
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error":
                return NotebookError(name=output.get("ename", "Error"),
                                     message=_ANSI.sub("", output.get("evalue", "")),
                                     execution_count=cell.get("execution_count"),
                                     source_head=_source_head(cell))
    for cell in nb.cells:
        if cell.get("cell_type") == "code" and _cell_state(cell) in ("failed", "running"):
            return NotebookError(name="Error", message="the cell did not finish (see the log)",
                                 execution_count=cell.get("execution_count"), source_head=_source_head(cell))
    return None


def _error_from_log(log: Path, returncode: int) -> NotebookError:
    """For failures outside any cell: the last line papermill's process wrote, e.g. NoSuchKernel."""
    if returncode < 0:
        with contextlib.suppress(ValueError):
            return NotebookError(name=signal.Signals(-returncode).name,
                                 message="the papermill process was killed by this signal (out of memory?)")
    try:
        lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        lines = []
    last = _ANSI.sub("", lines[-1]).strip() if lines else f"exit code {returncode}, nothing logged"
    exc, sep, message = last.partition(": ")
    if sep and re.fullmatch(r"[\w.]+", exc):
        return NotebookError(name=exc.rsplit(".", 1)[-1], message=message)
    return NotebookError(name="Error", message=last)


def _running_cell(nb):
    return next((c for c in nb.cells if c.get("cell_type") == "code" and _cell_state(c) == "running"), None)


def _timeout_error(nb, timeout_s: float) -> NotebookError:
    cell = _running_cell(nb) if nb is not None else None
    where = " while this cell ran" if cell is not None else ""
    return NotebookError(name="Timeout", message=f"stopped after its time limit of {timeout_s:g} s{where}",
                         execution_count=cell.get("execution_count") if cell else None,
                         source_head=_source_head(cell) if cell else "")


def _mark_timeout(nb, path: Path, timeout_s: float) -> None:
    """Say at the top of the executed notebook that it was stopped, as papermill does for errors."""
    import nbformat

    nb.cells.insert(0, nbformat.v4.new_markdown_cell(
        f'<span style="color:#b36b00; font-size:1.5em;">The report runner stopped this notebook after '
        f"its time limit of {timeout_s:g} s; the cells below show what had run by then.</span>"))
    atomic_write_text(path, nbformat.writes(nb))


def _read_headline(path: Path, expected: bool) -> tuple[dict, list[str]]:
    """The notebook's `headline` dict, and notes when it is missing or malformed."""
    if not path.exists():
        return {}, [f"the notebook wrote no {path.name}"] if expected else []
    data = _read_json_or_none(path)
    if not isinstance(data, dict):
        return {}, [f"{path.name} is not a JSON object"]
    headline = data.get("headline")
    if headline is None:
        return {}, [f"{path.name} has no 'headline'"]
    if not isinstance(headline, dict):
        return {}, [f"{path.name}: 'headline' is a {type(headline).__name__}, not a mapping"]
    return headline, []


def _read_json_or_none(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


# --- the whole suite ----------------------------------------------------------------------------

def _print_now(line: str) -> None:
    print(line, flush=True)  # flushed, so progress shows in CI logs and under `make` as it happens


def run_report(config: ReportConfig, progress: Callable[[str], None] = _print_now) -> ReportResult:
    """Run every notebook of `config`, one after another, and write the report into `config.out`.

    Holds `config.out` for the whole run (ConfigError naming the holder if another runner has
    it). Ctrl-C, SIGTERM and SIGHUP (in the main thread) end the running notebook and its
    kernel, mark the report "interrupted" and raise KeyboardInterrupt (`Stopped` for a signal).
    """
    for tool in ("papermill", "nbconvert", "psutil"):
        if _version(tool) is None:
            raise ConfigError(f"{tool} is not installed in {sys.executable}; "
                              "install the notebooks extra: pip install -e '.[notebooks]'")
    python = _check_jupyter_kernel(config)
    with hold_out(config.out, progress), _stopped_by_signals():
        return _run_all(config, python, progress)


def _run_all(config: ReportConfig, python: str, progress: Callable[[str], None]) -> ReportResult:
    started_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    t0 = time.perf_counter()
    model = describe_model(config.model)
    total = len(config.notebooks)
    if model["kind"] in BANNERS:
        progress(BANNERS[model["kind"]])
    progress(f"report: {total} notebook(s) into {config.out}; model {config.model}, kernel {config.kernel}, "
             f"device {config.device}, at most {config.timeout_s:g} s each")
    env = report_environment(config, python)

    runs: list[NotebookRun] = []

    def write(state: str) -> None:
        summary = _summary(config, model, env, runs, started_at, time.perf_counter() - t0, state)
        atomic_write_json(config.out / "report.json", summary)
        atomic_write_text(config.out / "index.html", render_index(summary))

    try:
        for i, notebook in enumerate(config.notebooks, 1):
            tag = f"[{i}/{total}] {notebook.stem}"
            progress(f"{tag}: running  [{time.perf_counter() - t0:.0f} s elapsed]")
            write("running")
            run = run_notebook(config, notebook)
            runs.append(run)
            detail = run.error.one_line() if run.error else headline_text(run.headline, limit=4)
            shown = "ok" if run.status == "ok" else run.status.upper()  # failures stand out in a long log
            progress(f"{tag}: {shown} in {run.duration_s:.1f} s"
                     f"{' - ' + detail if detail else ''}  [{time.perf_counter() - t0:.0f} s elapsed]")
    except KeyboardInterrupt:  # Ctrl-C, or Stopped: run_notebook has ended papermill and its kernel
        write("interrupted")
        raise
    write("finished")
    counts = _counts(runs)
    progress(f"report: {', '.join(f'{n} {s}' for s, n in counts.items())} in {time.perf_counter() - t0:.1f} s; "
             f"open {config.out / 'index.html'}")
    return ReportResult(config=config, runs=tuple(runs), started_at=started_at,
                        duration_s=time.perf_counter() - t0, index_html=config.out / "index.html",
                        report_json=config.out / "report.json")


# --- owning the report folder, and stopping --------------------------------------------------------

STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)
_held_outs: set[Path] = set()  # report folders this process holds now (main() takes OUT before run_report)


class Stopped(KeyboardInterrupt):
    """SIGTERM or SIGHUP reached the runner: it stops as after Ctrl-C, and exits 128 + the signal."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@contextlib.contextmanager
def _stopped_by_signals() -> Iterator[None]:
    """While the block runs, SIGTERM and SIGHUP raise Stopped, once: the cleanup that follows is
    not interrupted by a second one. Python delivers signals to the main thread only."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        for signum_ in STOP_SIGNALS:
            signal.signal(signum_, signal.SIG_IGN)
        raise Stopped(signum)

    previous = {signum: signal.signal(signum, stop) for signum in STOP_SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@contextlib.contextmanager
def hold_out(out: Path, progress: Callable[[str], None] = _print_now) -> Iterator[None]:
    """Own the report folder for the block: create it, take its lock (report/lock.py), and mark a
    report that a dead runner left "running" as interrupted. Reentrant within this process."""
    key = Path(os.path.realpath(out))
    if key in _held_outs:
        yield
        return
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"out={out}: cannot create the report folder there ({e.strerror or e})") from None
    with folder_lock(out) as previous:
        _held_outs.add(key)
        try:
            if previous is not None:
                progress(f"report: the lock in {out} was left by {previous.describe()}, which is gone; taking it over")
            mark_interrupted(out, progress)
            yield
        finally:
            _held_outs.discard(key)


def mark_interrupted(out: Path, progress: Callable[[str], None] = _print_now) -> bool:
    """Mark a report.json (and index.html) still "running" as interrupted; True if there was one.

    Called only by the folder's lock holder, so a "running" report there is one whose runner is
    gone: its index would otherwise reload itself forever.
    """
    summary = _read_json_or_none(out / "report.json")
    if not isinstance(summary, dict) or summary.get("state") != "running":
        return False
    summary["state"] = "interrupted"
    for run in summary.get("notebooks") or []:
        if isinstance(run, dict) and run.get("status") == "running":
            run["status"] = "interrupted"
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    summary["note"] = (f"The runner that wrote this report stopped before it finished; the next runner started "
                       f"on this folder marked it interrupted at {now}.")
    atomic_write_json(out / "report.json", summary)
    try:
        page = render_index(summary)
    except Exception:  # a summary of another version: at least stop the reloads
        page = (out / "index.html").read_text(encoding="utf-8") if (out / "index.html").exists() else ""
        page = page.replace(REFRESH_TAG, "")
    atomic_write_text(out / "index.html", page)
    progress(f"report: {out} held a report left running by a runner that is gone; marked it interrupted")
    return True


def _counts(runs: Sequence[NotebookRun]) -> dict[str, int]:
    return {status: sum(r.status == status for r in runs) for status in STATUSES}


def _summary(config: ReportConfig, model: dict, env: dict, runs: Sequence[NotebookRun], started_at: str,
             duration_s: float, state: str) -> dict:
    """report.json: everything index.html shows, and what it was computed from."""
    done = {r.notebook for r in runs}
    waiting = [nb for nb in config.notebooks if nb not in done]
    unfinished = [{"name": nb.stem, "notebook": str(nb),
                   "status": (state if j == 0 and state in ("running", "interrupted") else "pending")}
                  for j, nb in enumerate(waiting)]
    return {"title": "CodeFuse Workbench report", "state": state, "started_at": started_at,
            "duration_s": round(duration_s, 3), "model": model, "banner": BANNERS.get(model["kind"]),
            "config": config.to_dict(), "counts": _counts(runs),
            "exit_code": (0 if all(r.status == "ok" for r in runs) else 1) if state == "finished" else None,
            "notebooks": [r.to_dict() for r in runs] + unfinished, "environment": env}


# --- the command line ---------------------------------------------------------------------------

def main(argv: Sequence[str] | None = None) -> int:
    """`python -m workbench report`: render the notebooks into a report; exit 1 if any failed."""
    parser = argparse.ArgumentParser(
        prog="workbench report", description=main.__doc__, epilog=__doc__[__doc__.index("The params file"):],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="demo", help="a checkpoint folder, or 'demo' (default)")
    parser.add_argument("--kernel", default="auto", help="the GPTQ kernel the notebooks load (default auto)")
    parser.add_argument("--device", default="auto", help="auto (default), cpu, cuda or cuda:N")
    parser.add_argument("--params", metavar="FILE", help="extra notebook parameters, JSON or YAML (below)")
    parser.add_argument("--out", default="reports", metavar="DIR", help="the report folder (default reports)")
    parser.add_argument("--notebooks", metavar="DIR", help="where the notebooks are (default: the repository's)")
    parser.add_argument("--only", nargs="+", default=(), metavar="NAME",
                        help="run only these notebooks, by name (04_kernels) or number (04)")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, metavar="S",
                        help=f"wall-clock limit per notebook in seconds (default {DEFAULT_TIMEOUT_S:g})")
    parser.add_argument("--progress", action="store_true", help="show papermill's per-cell progress bars")
    parser.add_argument("--jupyter-kernel", default=DEFAULT_JUPYTER_KERNEL, metavar="NAME",
                        help="the Jupyter kernel the notebooks run in (default python3, this environment); "
                             "codefuse-autogptq is the AutoGPTQ environment's (make legacy-env)")
    args = parser.parse_args(argv)
    out = Path(args.out).expanduser().absolute()
    try:
        with contextlib.ExitStack() as stack:
            if out.is_dir():  # before the parameters are checked: a report left running is marked now
                stack.enter_context(hold_out(out))
            config = ReportConfig(model=args.model, kernel=args.kernel, device=args.device, out=out,
                                  params=load_params(args.params) if args.params else {},
                                  notebooks=find_notebooks(args.notebooks, args.only), timeout_s=args.timeout,
                                  progress_bars=args.progress, jupyter_kernel=args.jupyter_kernel)
            return run_report(config).exit_code
    except Stopped as e:
        print(f"stopped by {e}; the report says interrupted", file=sys.stderr)
        return 128 + e.signum


if __name__ == "__main__":
    sys.exit(main())
