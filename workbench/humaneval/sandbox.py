"""Run an untrusted Python program in a confined child process and say how it ended.

Generated code is run here, never in the workbench's own process. Each program gets a fresh
interpreter (`-I -S -B`: no environment variables, no site-packages, no bytecode written), a
scrubbed environment, a new temporary working folder, and a supervisor that enforces a wall-clock
limit and kills everything the program started. Linux only; docs/humaneval-sandbox.md says
exactly what is enforced and what is not.

"Ran to its end" is proved, not inferred from the exit code: after the program's last statement
returns, the supervisor prints a random per-run marker that is never in the program's argv,
environment, files or source, and a run counts as completed only if the process then exits 0 with
that marker as the last thing on stdout. `sys.exit(0)`, `os._exit(0)` or a crash half way through
therefore never look like success.
"""

from __future__ import annotations

import inspect
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
)

_MARKER_PREFIX = "workbench-sandbox-end:"
_GRACE_S = 5.0  # the supervisor enforces timeout_s; this parent-side backstop only catches a stuck supervisor
_SAFE_PATH = "/usr/local/bin:/usr/bin:/bin"


class SandboxError(WorkbenchError):
    """The sandbox itself could not run a program (as opposed to: the program failed)."""


@dataclass(frozen=True)
class SandboxLimits:
    """What one program may use. Every limit applies to each of its processes separately."""

    cpu_s: float = 10.0  # CPU time (RLIMIT_CPU, rounded up to whole seconds); SIGXCPU, then SIGKILL 1 s later
    memory_mb: int = 1024  # address space (RLIMIT_AS); the interpreter needs ~60 MB before the program starts
    file_size_mb: int = 16  # largest file it may write, its stdout and stderr included (RLIMIT_FSIZE)
    processes: int = 16  # processes and threads it may add (RLIMIT_NPROC, above those its user already runs)
    open_files: int = 64  # file descriptors (RLIMIT_NOFILE)
    run_as: str | None = "nobody"  # when the workbench runs as root, the program runs as this user; None keeps root
    isolate_network: bool = True  # as root: a new network namespace with no interface up (skipped where not allowed)
    output_chars: int = 2000  # how much of the end of stdout and of stderr is kept in the result

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
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise ConfigError(f"SandboxLimits.{name} must be an integer in [{low}, {high}], got {value!r}")
        if self.run_as is not None and (not isinstance(self.run_as, str) or not self.run_as):
            raise ConfigError(f"SandboxLimits.run_as must be a user name or None, got {self.run_as!r}")
        if not isinstance(self.isolate_network, bool):
            raise ConfigError(f"SandboxLimits.isolate_network must be True or False, got {self.isolate_network!r}")

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
    isolation: tuple[str, ...]  # the protections that were in force; see docs/humaneval-sandbox.md
    workdir: str

    def __post_init__(self):
        if self.outcome not in OUTCOMES:
            raise ConfigError(f"SandboxResult.outcome must be one of {', '.join(OUTCOMES)}, got {self.outcome!r}")

    @property
    def completed(self) -> bool:
        return self.outcome == "completed"

    def to_dict(self) -> dict:
        return {**asdict(self), "isolation": list(self.isolation)}

    @classmethod
    def from_dict(cls, data: dict) -> SandboxResult:
        return cls(**{**data, "isolation": tuple(data["isolation"])})


def run_python(source: str, timeout_s: float = 10.0, limits: SandboxLimits | None = None) -> SandboxResult:
    """Run `source` as a Python program in the sandbox; return how it ended.

    Raises SandboxError only when the sandbox itself fails (the interpreter cannot start, the
    privilege drop is refused, ...); anything the program does is reported in the result.
    """
    if not sys.platform.startswith("linux"):
        raise SandboxError(f"the sandbox needs Linux (rlimits, /proc, prctl); this is {sys.platform}")
    if not isinstance(source, str):
        raise ConfigError(f"source must be a str, got {type(source).__name__}")
    if isinstance(timeout_s, bool) or not isinstance(timeout_s, (int, float)) or not 0 < timeout_s <= 3600:
        raise ConfigError(f"timeout_s must be a number of seconds in (0, 3600], got {timeout_s!r}")
    limits = limits if limits is not None else SandboxLimits()
    if not isinstance(limits, SandboxLimits):
        raise ConfigError(f"limits must be a SandboxLimits, got {type(limits).__name__}")

    user = _sandbox_user(limits)
    marker = _MARKER_PREFIX + _new_nonce()
    settings = {
        "marker": marker,
        "timeout_s": float(timeout_s),
        "cpu_s": math.ceil(limits.cpu_s),
        "memory_bytes": limits.memory_mb << 20,
        "file_size_bytes": limits.file_size_mb << 20,
        "processes": limits.processes,
        "open_files": limits.open_files,
        "user": None if user is None else [user.pw_name, user.pw_uid, user.pw_gid],
        "isolate_network": limits.isolate_network and os.geteuid() == 0,
    }
    workdir = Path(tempfile.mkdtemp(prefix="workbench-sandbox-"))
    try:
        if user is not None:
            os.chown(workdir, user.pw_uid, user.pw_gid)
        ended = _supervise(source, settings, workdir, timeout_s + _GRACE_S, tail_bytes=limits.output_chars * 4)
    finally:
        _remove_tree(workdir)

    ending = b"\n" + marker.encode() + b"\n"
    reached_end = ended.stdout.endswith(ending)
    stdout = ended.stdout[: -len(ending)] if reached_end else ended.stdout
    outcome, exit_code, signal_name, cpu_s, isolation = _how_it_ended(ended, reached_end, limits)
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


@dataclass(frozen=True)
class _Ended:
    """What the parent saw of one supervised run."""

    returncode: int  # the supervisor's
    stuck: bool  # the supervisor outlived the backstop and was killed
    reports: tuple[dict, ...]  # the supervisor's JSON lines
    stdout: bytes  # tails
    stderr: bytes
    wall_s: float


def _supervise(source: str, settings: dict, workdir: Path, backstop_s: float, tail_bytes: int) -> _Ended:
    """Start the supervisor on `source` in `workdir` and wait for its report."""
    report_r, report_w = os.pipe()
    try:
        # The program travels through a pipe on stdin, behind one line of settings: it never exists
        # as a file, and the marker is in neither argv nor the environment, where the program could
        # read it. stdout and stderr are anonymous files, so output never blocks the program.
        with tempfile.TemporaryFile() as stdout, tempfile.TemporaryFile() as stderr:
            started = time.perf_counter()
            try:
                proc = subprocess.Popen(
                    [sys.executable, "-I", "-S", "-B", "-c", _SUPERVISOR_SOURCE],
                    stdin=subprocess.PIPE,
                    stdout=stdout,
                    stderr=stderr,
                    cwd=workdir,
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
                    proc.stdin.write(header.encode() + b"\n" + source.encode("utf-8"))
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
            )
    finally:
        for fd in (report_r, report_w):
            if fd >= 0:
                os.close(fd)


def _how_it_ended(ended: _Ended, reached_end: bool, limits: SandboxLimits) -> tuple:
    """(outcome, exit_code, signal name, cpu_s, isolation) from the supervisor's report."""
    setup_errors = [r["setup_error"] for r in ended.reports if "setup_error" in r]
    if setup_errors:
        raise SandboxError(f"the sandbox could not prepare the program's process: {setup_errors[0]}")
    final = next((r for r in ended.reports if "isolation" in r), None)
    if ended.stuck:
        return "timeout", None, "SIGKILL", 0.0, ("session",)
    if final is None and ended.returncode < 0:
        # Only a program running as the supervisor's own user can kill it; count that as a kill.
        return "killed", None, _signal_name(-ended.returncode), 0.0, ("session",)
    if final is None or ended.returncode != 0:
        raise SandboxError(
            f"the sandbox's supervisor ended without a report (exit code {ended.returncode}); "
            f"its stderr ends with: {_tail_text(ended.stderr, 800)!r}"
        )
    exit_code, signum, cpu_s = final["exit_code"], final["signal"], final["cpu_s"]
    name = None if signum is None else _signal_name(signum)
    isolation = tuple(final["isolation"])
    if final["timed_out"] or signum == signal.SIGXCPU or (signum == signal.SIGKILL and cpu_s >= limits.cpu_s):
        return "timeout", exit_code, name, cpu_s, isolation
    if signum is not None:
        return "killed", exit_code, name, cpu_s, isolation
    if exit_code == 0 and reached_end:
        return "completed", exit_code, name, cpu_s, isolation
    return "exited", exit_code, name, cpu_s, isolation


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


# --- The supervisor: runs inside the sandbox's interpreter -------------------------------------


def _sandbox_supervisor() -> None:
    """Read settings and program from stdin, run the program confined, report how it ended.

    Shipped to the child interpreter as source text, so it uses the standard library only and
    nothing from this module. The supervisor stays the user it was started as; only the forked
    program process takes the limits and (as root) switches to the unprivileged user.
    """
    import builtins
    import ctypes
    import json
    import linecache
    import os
    import resource
    import signal
    import sys
    import traceback

    raw = sys.stdin.buffer.read()
    header, _, source = raw.partition(b"\n")
    settings = json.loads(header)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)  # the program reads an empty stdin, not its own text
    os.close(null)
    report_fd = settings["report_fd"]

    def report(**message) -> None:
        os.write(report_fd, (json.dumps(message) + "\n").encode())

    libc = ctypes.CDLL(None, use_errno=True)
    isolation = ["session", "rlimits"]
    # As a subreaper this process inherits the program's orphans, so the sweep below also finds
    # processes that left the program's process group or session (setsid, double fork).
    if libc.prctl(36, 1, 0, 0, 0) == 0:  # PR_SET_CHILD_SUBREAPER
        isolation.append("subreaper")
    if settings["isolate_network"] and libc.unshare(0x40000000) == 0:  # CLONE_NEWNET
        isolation.append("network-namespace")
    user = settings["user"]
    if user is not None:
        isolation.append(f"user:{user[0]}")
    if user is not None or os.getuid() != 0:  # root ignores RLIMIT_NPROC
        isolation.append("process-limit")

    def tasks_of(uid: int) -> int:
        """Threads that `uid` runs now, everywhere: RLIMIT_NPROC counts them all."""
        count = 0
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/status") as f:
                    status = dict(line.split(":", 1) for line in f if ":" in line)
            except (OSError, ValueError):
                continue
            if int(status["Uid"].split()[0]) == uid:
                count += int(status.get("Threads", "1"))
        return count

    def run_program(source: bytes, marker: bytes) -> int:
        """Run the program; print the marker and return 0 only if its last statement returned."""
        text = source.decode("utf-8", errors="replace")
        linecache.cache["<program>"] = (len(text), None, text.splitlines(True), "<program>")  # tracebacks show lines
        status = 1
        try:
            exec(compile(source, "<program>", "exec"), {"__name__": "__main__", "__builtins__": builtins})
            status = None
        except SystemExit as e:
            if e.code is None or isinstance(e.code, int):
                status = (e.code or 0) & 0xFF
            else:
                print(e.code, file=sys.stderr)
        except BaseException as e:
            traceback.print_exception(type(e), e, e.__traceback__.tb_next)  # without this frame
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except BaseException:
                pass
        if status is None:  # the last statement returned: say so with the marker
            os.write(1, b"\n" + marker + b"\n")
            return 0
        return status

    def reach_stdlib_as_any_user() -> None:
        """Point sys.path at descriptors opened now, while the supervisor's user can open them.

        Python may live where the unprivileged user cannot look (a pyenv under a 0700 /root);
        a path through /proc/self/fd reaches the folder itself, and its files are world-readable.
        """
        moved = {}
        for entry in sys.path:
            try:
                moved[entry] = f"/proc/self/fd/{os.open(entry, os.O_PATH)}"
            except OSError:
                pass

        def reachable(path: str) -> str:
            for old, new in moved.items():
                if path == old or path.startswith(old + "/"):
                    return new + path[len(old) :]
            return path

        sys.path[:] = [reachable(entry) for entry in sys.path]
        for module in list(sys.modules.values()):  # packages already imported (encodings) look in their own path
            if isinstance(getattr(module, "__path__", None), list):
                module.__path__[:] = [reachable(entry) for entry in module.__path__]
        sys.path_importer_cache.clear()

    program_pid = os.fork()
    if program_pid == 0:  # --- the program's process
        try:
            os.setpgid(0, 0)
            uid = os.getuid() if user is None else user[1]
            nproc = tasks_of(uid) + settings["processes"]
            cpu = settings["cpu_s"]
            for limit, soft, hard in (
                (resource.RLIMIT_CPU, cpu, cpu + 1),
                (resource.RLIMIT_AS, settings["memory_bytes"], settings["memory_bytes"]),
                (resource.RLIMIT_FSIZE, settings["file_size_bytes"], settings["file_size_bytes"]),
                (resource.RLIMIT_NOFILE, settings["open_files"], settings["open_files"]),
                (resource.RLIMIT_NPROC, nproc, nproc),
                (resource.RLIMIT_CORE, 0, 0),
            ):
                resource.setrlimit(limit, (soft, hard))
            if user is not None:
                reach_stdlib_as_any_user()
                os.setgroups([])
                os.setgid(user[2])
                os.setuid(user[1])
        except BaseException as e:
            report(setup_error=f"{type(e).__name__}: {e}")
            os._exit(125)
        os.close(report_fd)
        try:
            os._exit(run_program(source, settings["marker"].encode()))
        finally:  # nothing the program does may send this process on into the supervisor's code
            os._exit(1)

    # --- the supervisor
    try:
        os.setpgid(program_pid, program_pid)  # as the child does: the group exists before either goes on
    except OSError:
        pass
    timed_out = False

    def kill_program() -> None:
        # The process itself too: it may have moved to another group of its session.
        for kill, target in ((os.kill, program_pid), (os.killpg, program_pid)):
            try:
                kill(target, signal.SIGKILL)
            except OSError:
                pass

    def on_alarm(signum, frame) -> None:
        nonlocal timed_out
        timed_out = True
        kill_program()

    signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, settings["timeout_s"])
    # WNOWAIT leaves the program a zombie, which keeps its process-group id from being reused
    # while the group is killed below.
    os.waitid(os.P_PID, program_pid, os.WEXITED | os.WNOWAIT)
    signal.setitimer(signal.ITIMER_REAL, 0)
    kill_program()  # its group, that is: the program is a zombie by now
    _, wait_status, usage = os.wait4(program_pid, 0)

    def children() -> list:
        me = str(os.getpid()).encode()
        found = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    with open(f"/proc/{entry}/stat", "rb") as f:
                        after_name = f.read().rpartition(b")")[2].split()
                except OSError:
                    continue
                if len(after_name) > 1 and after_name[1] == me:
                    found.append(int(entry))
        return found

    # Kill whatever is left, generation by generation: the children of a killed process are
    # handed to this subreaper, and found in the next round.
    for _ in range(10_000):
        left = children()
        if not left:
            break
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        for pid in left:
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
    signaled = os.WIFSIGNALED(wait_status)
    report(
        isolation=isolation,
        timed_out=timed_out,
        exit_code=None if signaled else os.WEXITSTATUS(wait_status),
        signal=os.WTERMSIG(wait_status) if signaled else None,
        cpu_s=usage.ru_utime + usage.ru_stime,
    )
    os._exit(0)


_SUPERVISOR_SOURCE = inspect.getsource(_sandbox_supervisor) + "\n_sandbox_supervisor()\n"
