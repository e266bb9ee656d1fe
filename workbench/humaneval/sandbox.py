"""Run an untrusted Python program in a confined child process and say how it ended.

Generated code is run here, never in the workbench's own process. Each program runs in
`_child.py`, a stdlib-only program started as a fresh interpreter (`-I -S -B`: no environment
variables, no site-packages, no bytecode written) with a scrubbed environment. On Linux it puts
the program in new user (unless root), PID, network, mount and IPC namespaces: it sees only its
own processes, has no network at all, finds the filesystem read-only with the homes hidden and
a private /tmp, and everything it starts dies with it. docs/humaneval-sandbox.md says exactly
what is enforced and what is not; every result's `isolation` says what was in force.

"Ran to its end" is proved, not inferred from the exit code: after the program's last statement
returns, the supervisor prints a random per-run marker that is never in the program's argv,
environment, files or source, and a run counts as completed only if the process then exits 0 with
that marker as the last thing on stdout. `sys.exit(0)`, `os._exit(0)` or a crash half way through
therefore never look like success.
"""

from __future__ import annotations

import json
import math
import os
import pwd
import secrets
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from ..errors import ConfigError, WorkbenchError

# How a run ended, from the program's point of view.
OUTCOMES = (
    "completed",  # its last statement returned; the supervisor's marker was the last output
    "exited",  # it ended by itself before its end: exception, syntax error, sys.exit, os._exit
    "timeout",  # the wall-clock limit or the CPU-time limit stopped it
    "killed",  # another signal ended it: the file-size limit (SIGXFSZ), a crash (SIGSEGV), ...
    "interfered",  # it wrote into the sandbox's report channel or killed its supervisor
)

_MARKER_PREFIX = "workbench-sandbox-end:"
_GRACE_S = 5.0  # the supervisor enforces timeout_s; this parent-side backstop only catches a stuck supervisor
_SAFE_PATH = "/usr/local/bin:/usr/bin:/bin"
_CHILD = Path(__file__).with_name("_child.py")  # the supervisor's program, run by path
# Hidden from the program behind an empty read-only tmpfs: other users' homes and root's, and
# /run (sockets and session buses through which a program could ask a service to act for it).
# The workbench user's own HOME is added at each run.
_HIDDEN = ("/home", "/root", "/run")
_namespaces_refused: str | None = None  # why this kernel refused them, once seen (require_namespaces=False)


class SandboxError(WorkbenchError):
    """The sandbox itself could not run a program (as opposed to: the program failed)."""


@dataclass(frozen=True)
class SandboxLimits:
    """What one program may use. The rlimits apply to each of its processes separately."""

    cpu_s: float = 10.0  # CPU time (RLIMIT_CPU, rounded up to whole seconds); SIGXCPU, then SIGKILL 1 s later
    memory_mb: int = 1024  # address space (RLIMIT_AS); the interpreter needs ~60 MB before the program starts
    file_size_mb: int = 16  # largest file it may write, its stdout and stderr included (RLIMIT_FSIZE)
    processes: int = 16  # processes and threads it may add (RLIMIT_NPROC, above those its user already runs)
    open_files: int = 64  # file descriptors (RLIMIT_NOFILE)
    run_as: str | None = "nobody"  # when the workbench runs as root, the program runs as this user; None keeps root
    isolate_network: bool = True  # a new network namespace with no interface up: not even 127.0.0.1
    output_chars: int = 2000  # how much of the end of stdout and of stderr is kept in the result
    scratch_mb: int = 64  # size of each private tmpfs: /tmp (which holds HOME), /var/tmp, /dev/shm
    # Where the kernel refuses namespaces (a container without user namespaces): False runs the
    # program anyway with rlimits and a subreaper only, and `isolation` says so; True refuses.
    require_namespaces: bool = True

    def __post_init__(self):
        for name in ("cpu_s",):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 3600:
                raise ConfigError(f"SandboxLimits.{name} must be a number of seconds in (0, 3600], got {value!r}")
        for name, low, high in (
            ("memory_mb", 64, 1 << 20),
            ("file_size_mb", 1, 1 << 20),
            ("processes", 1, 100_000),
            ("open_files", 16, 1 << 20),
            ("output_chars", 0, 10_000_000),
            ("scratch_mb", 1, 1 << 20),
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise ConfigError(f"SandboxLimits.{name} must be an integer in [{low}, {high}], got {value!r}")
        if self.run_as is not None and (not isinstance(self.run_as, str) or not self.run_as):
            raise ConfigError(f"SandboxLimits.run_as must be a user name or None, got {self.run_as!r}")
        for name in ("isolate_network", "require_namespaces"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"SandboxLimits.{name} must be True or False, got {getattr(self, name)!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> SandboxLimits:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ConfigError(f"Unknown SandboxLimits fields {sorted(unknown)}; known fields: {sorted(known)}")
        return cls(**data)


@dataclass(frozen=True)
class SandboxResult:
    """How one run ended. `workdir` was removed before run_python returned; it is kept for checking."""

    outcome: str  # one of OUTCOMES
    exit_code: int | None  # None when a signal ended it
    signal: str | None  # e.g. "SIGKILL"; None when it exited
    wall_s: float  # from start to the end of the cleanup
    cpu_s: float  # user + system time of the program's main process (and children it waited for)
    stdout_tail: str  # the supervisor's marker removed
    stderr_tail: str
    isolation: dict  # the protections that were in force; see docs/humaneval-sandbox.md
    workdir: str  # where the program worked (in its private /tmp); gone when run_python returns

    def __post_init__(self):
        if self.outcome not in OUTCOMES:
            raise ConfigError(f"SandboxResult.outcome must be one of {', '.join(OUTCOMES)}, got {self.outcome!r}")

    @property
    def completed(self) -> bool:
        return self.outcome == "completed"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> SandboxResult:
        return cls(**data)


def run_python(source: str, timeout_s: float = 10.0, limits: SandboxLimits | None = None) -> SandboxResult:
    """Run `source` as a Python program in the sandbox; return how it ended.

    Raises SandboxError only when the sandbox itself fails (the interpreter cannot start, the
    kernel refuses the namespaces, ...); anything the program does is reported in the result,
    including a source that is not valid UTF-8 (a lone surrogate): that program fails to compile.
    """
    global _namespaces_refused
    if not sys.platform.startswith("linux"):
        raise SandboxError(f"the sandbox needs Linux (namespaces, rlimits, /proc, prctl); this is {sys.platform}")
    if not isinstance(source, str):
        raise ConfigError(f"source must be a str, got {type(source).__name__}")
    if isinstance(timeout_s, bool) or not isinstance(timeout_s, (int, float)) or not 0 < timeout_s <= 3600:
        raise ConfigError(f"timeout_s must be a number of seconds in (0, 3600], got {timeout_s!r}")
    limits = limits if limits is not None else SandboxLimits()
    if not isinstance(limits, SandboxLimits):
        raise ConfigError(f"limits must be a SandboxLimits, got {type(limits).__name__}")

    program = source.encode("utf-8", errors="surrogatepass")  # what cannot be UTF-8 fails to compile there
    namespaces = limits.require_namespaces or _namespaces_refused is None
    ended, workdir = _run_once(program, timeout_s, limits, namespaces)
    refused = _setup_errors(ended, stage="namespaces")
    if refused and limits.require_namespaces:
        raise SandboxError(
            f"the kernel refused the sandbox's namespaces ({refused[0]}), so the program was not run. "
            "The sandbox needs user (unless root), PID, network and mount namespaces; a container may "
            "forbid them (Docker's default seccomp profile does). SandboxLimits(require_namespaces=False) "
            "runs programs with rlimits only, and says so in every result's isolation.")
    if refused:
        _namespaces_refused = refused[0]
        ended, workdir = _run_once(program, timeout_s, limits, namespaces=False)
    outcome, exit_code, signal_name, cpu_s, isolation, reached_end = _how_it_ended(ended, limits)
    if not namespaces or refused:
        isolation["namespaces_refused"] = _namespaces_refused
    ending = b"\n" + ended.marker + b"\n"
    stdout = ended.stdout[: -len(ending)] if reached_end else ended.stdout
    return SandboxResult(
        outcome=outcome,
        exit_code=exit_code,
        signal=signal_name,
        wall_s=round(ended.wall_s, 4),
        cpu_s=round(cpu_s, 4),
        stdout_tail=_tail_text(stdout, limits.output_chars),
        stderr_tail=_tail_text(ended.stderr, limits.output_chars),
        isolation=isolation,
        workdir=str(workdir),
    )


def _run_once(program: bytes, timeout_s: float, limits: SandboxLimits, namespaces: bool) -> tuple[_Ended, Path]:
    """One start of the supervisor: in namespaces (the working folder exists only in the program's
    private /tmp), or on the host (a real temporary folder, removed afterwards)."""
    user = _sandbox_user(limits)
    marker = _MARKER_PREFIX + _new_nonce()
    if namespaces:
        workdir = Path("/tmp", f"workbench-sandbox-{secrets.token_hex(8)}")  # in its private /tmp, whatever TMPDIR says
    else:
        workdir = Path(tempfile.mkdtemp(prefix="workbench-sandbox-"))
        if user is not None:
            os.chown(workdir, user.pw_uid, user.pw_gid)
    settings = {
        "marker": marker,
        "timeout_s": float(timeout_s),
        "cpu_s": math.ceil(limits.cpu_s),
        "memory_bytes": limits.memory_mb << 20,
        "file_size_bytes": limits.file_size_mb << 20,
        "processes": limits.processes,
        "open_files": limits.open_files,
        "user": None if user is None else [user.pw_name, user.pw_uid, user.pw_gid],
        "user_name": user.pw_name if user is not None else _user_name(os.geteuid()),
        "namespaces": namespaces,
        "isolate_network": limits.isolate_network,
        "scratch_bytes": limits.scratch_mb << 20,
        "hide": _hidden_paths(),
        "workdir": str(workdir),
        "parent_pid": os.getpid(),
    }
    try:
        ended = _supervise(program, settings, workdir, timeout_s + _GRACE_S, tail_bytes=limits.output_chars * 4)
    finally:
        if not namespaces:
            _remove_tree(workdir)
    return ended, workdir


@dataclass(frozen=True)
class _Ended:
    """What the parent saw of one supervised run."""

    returncode: int  # the supervisor's
    stuck: bool  # the supervisor outlived the backstop and was killed
    reports: tuple[dict, ...]  # the supervisor's JSON lines
    stdout: bytes  # tails
    stderr: bytes
    wall_s: float
    marker: bytes
    namespaces: bool  # whether the supervisor was asked to confine the program in namespaces


def _supervise(program: bytes, settings: dict, workdir: Path, backstop_s: float, tail_bytes: int) -> _Ended:
    """Start the supervisor on `program` and wait for its report."""
    report_r, report_w = os.pipe()
    try:
        # The program travels through a pipe on stdin, behind one line of settings: the marker is
        # in neither argv nor the environment, where the program could read it. stdout and stderr
        # are anonymous files, so output never blocks the program.
        with tempfile.TemporaryFile() as stdout, tempfile.TemporaryFile() as stderr:
            started = time.perf_counter()
            try:
                proc = subprocess.Popen(
                    [sys.executable, "-I", "-S", "-B", str(_CHILD)],
                    stdin=subprocess.PIPE,
                    stdout=stdout,
                    stderr=stderr,
                    cwd=workdir if not settings["namespaces"] else "/",
                    env=_scrubbed_env(workdir),
                    start_new_session=True,
                    pass_fds=(report_w,),
                )
            except OSError as e:
                raise SandboxError(f"could not start {sys.executable} for the sandbox: {e}") from e
            header = json.dumps({**settings, "report_fd": report_w})  # pass_fds keeps the number
            os.close(report_w)
            report_w = -1
            try:
                with proc.stdin:
                    proc.stdin.write(header.encode() + b"\n" + program)
            except BrokenPipeError:
                pass  # the supervisor died before reading; its exit status tells why
            stuck = False
            try:
                proc.wait(timeout=backstop_s)
            except subprocess.TimeoutExpired:
                stuck = True
                _kill_session(proc.pid)
                proc.wait()
            if proc.returncode != 0:  # no supervisor swept up after the program: do what we can
                _kill_session(proc.pid)
            wall_s = time.perf_counter() - started
            marker_room = len(settings["marker"]) + 2
            return _Ended(
                returncode=proc.returncode,
                stuck=stuck,
                reports=tuple(_read_reports(report_r)),
                stdout=_tail_bytes(stdout, tail_bytes + marker_room),
                stderr=_tail_bytes(stderr, tail_bytes),
                wall_s=wall_s,
                marker=settings["marker"].encode(),
                namespaces=settings["namespaces"],
            )
    finally:
        for fd in (report_r, report_w):
            if fd >= 0:
                os.close(fd)


def _setup_errors(ended: _Ended, stage: str) -> list[str]:
    """The setup errors of `stage` reported before the program started."""
    errors = []
    for report in ended.reports:
        if report.get("started"):
            break
        if "setup_error" in report and report.get("stage") == stage:
            errors.append(str(report["setup_error"]))
    return errors


def _how_it_ended(ended: _Ended, limits: SandboxLimits) -> tuple:
    """(outcome, exit_code, signal name, cpu_s, isolation, reached_end) from the supervisor's report.

    Reports are trusted only up to the program's start: a setup error seen before it is the
    sandbox's (SandboxError); anything but init's one final report after it can only have come
    from the program, and counts against it.
    """
    before, after, started = [], [], False
    for report in ended.reports:
        if report.get("started") and not started:
            started = True
        else:
            (after if started else before).append(report)
    setup_errors = [r["setup_error"] for r in before if "setup_error" in r]
    if setup_errors:
        raise SandboxError(f"the sandbox could not prepare the program's process: {setup_errors[0]}")
    finals = [r for r in after if set(r) == {"isolation", "timed_out", "exit_code", "signal", "cpu_s"}]
    isolation = dict(finals[-1]["isolation"]) if finals else {"session": True}
    reached_end = ended.stdout.endswith(b"\n" + ended.marker + b"\n")
    if ended.stuck:
        return "timeout", None, "SIGKILL", 0.0, isolation, False
    if started and len(after) > len(finals) or len(finals) > 1:  # only the program can have written those
        return "interfered", None, None, 0.0, isolation, False
    if not finals and started and ended.returncode < 0 and not ended.namespaces:
        # Only a program running as the supervisor's own user, on the host, can kill it.
        return "interfered", None, _signal_name(-ended.returncode), 0.0, isolation, False
    if not finals or ended.returncode != 0:
        raise SandboxError(
            f"the sandbox's supervisor ended without a report (exit code {ended.returncode}); "
            f"its stderr ends with: {_tail_text(ended.stderr, 800)!r}"
        )
    final = finals[0]
    exit_code, signum, cpu_s = final["exit_code"], final["signal"], final["cpu_s"]
    name = None if signum is None else _signal_name(signum)
    if final["timed_out"] or signum == signal.SIGXCPU or (signum == signal.SIGKILL and cpu_s >= limits.cpu_s):
        return "timeout", exit_code, name, cpu_s, isolation, False
    if signum is not None:
        return "killed", exit_code, name, cpu_s, isolation, False
    if exit_code == 0 and reached_end:
        return "completed", exit_code, name, cpu_s, isolation, True
    return "exited", exit_code, name, cpu_s, isolation, False


# --- The parent's side --------------------------------------------------------------------------


def _new_nonce() -> str:
    return secrets.token_hex(16)


def _sandbox_user(limits: SandboxLimits) -> pwd.struct_passwd | None:
    """The user to run as: limits.run_as when we are root, else None (stay who we are)."""
    if os.geteuid() != 0 or limits.run_as is None:
        return None
    try:
        return pwd.getpwnam(limits.run_as)
    except KeyError:
        raise ConfigError(
            f"SandboxLimits.run_as={limits.run_as!r} is not a user on this machine; name an existing "
            "unprivileged user (e.g. 'nobody'), or None to run programs as root (not advised)"
        ) from None


def _hidden_paths() -> list[str]:
    """Folders to hide from the program: _HIDDEN and this user's home, as real paths."""
    homes = [os.environ.get("HOME", ""), pwd.getpwuid(os.geteuid()).pw_dir if _has_passwd_entry() else ""]
    hidden = []
    for path in (*_HIDDEN, *homes):
        real = os.path.realpath(path) if path and os.path.isabs(path) else ""
        if real not in ("", "/") and os.path.isdir(real) and real not in hidden:
            hidden.append(real)
    return hidden


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:  # a container's uid with no /etc/passwd line
        return str(uid)


def _has_passwd_entry() -> bool:
    try:
        pwd.getpwuid(os.geteuid())
    except KeyError:  # a container's uid with no /etc/passwd line
        return False
    return True


def _scrubbed_env(workdir: Path) -> dict[str, str]:
    # TMPDIR too, so that the tempfile module keeps the program's scratch files inside its folder.
    return {"PATH": _SAFE_PATH, "LANG": "C.UTF-8", "HOME": str(workdir), "TMPDIR": str(workdir)}


def _read_reports(fd: int) -> list[dict]:
    """The supervisor's JSON lines. All writers are gone by now, so this never blocks for long."""
    os.set_blocking(fd, False)
    chunks = []
    while True:
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    reports = []
    for line in b"".join(chunks).splitlines():
        try:
            reports.append(json.loads(line))
        except ValueError:
            continue
    return reports


def _tail_bytes(f, n: int) -> bytes:
    size = f.seek(0, os.SEEK_END)
    f.seek(max(0, size - n))
    return f.read()


def _tail_text(data: bytes, chars: int) -> str:
    text = data.decode("utf-8", errors="replace")
    return text[-chars:] if chars else ""


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def _kill_session(sid: int) -> None:
    """SIGKILL every process of session `sid` (the supervisor's group and the program's group)."""
    for pid in _session_members(sid):
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


def _session_members(sid: int) -> list[int]:
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                after_name = f.read().rpartition(b")")[2].split()
        except OSError:
            continue
        if len(after_name) > 3 and int(after_name[3]) == sid:  # fields: state ppid pgrp session ...
            members.append(int(entry))
    return members


def _remove_tree(path: Path) -> None:
    """Remove the program's folder even if it took away its own permissions on parts of it."""
    try:
        shutil.rmtree(path)
        return
    except FileNotFoundError:
        return
    except OSError:
        pass

    def unlock(p: str) -> None:
        os.chmod(p, stat.S_IRWXU)
        for entry in os.scandir(p):
            if entry.is_dir(follow_symlinks=False):
                unlock(entry.path)

    try:
        unlock(str(path))
        shutil.rmtree(path)
    except OSError as e:
        raise SandboxError(f"could not remove the sandbox folder {path}: {e}") from e
