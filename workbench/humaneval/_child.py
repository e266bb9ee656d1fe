"""The sandbox's child: confine one untrusted Python program, run it, and report how it ended.

`workbench.humaneval.sandbox` starts this file as `python -I -S -B _child.py`, with one line of
JSON settings and then the program's source on stdin, and one inherited pipe for reports. It
uses the standard library only and imports nothing from the workbench, so the confined
processes hold no more code than they need. docs/humaneval-sandbox.md says what is enforced.

Three processes, each forked from the one before (no new interpreter is started):

    supervisor  this process. Enters new user (unless root), mount, PID, network, IPC and UTS
                namespaces, makes the whole filesystem read-only, hides the homes and /run, gives
                /tmp, /var/tmp and /dev/shm empty private tmpfs, then forks init and waits for it.
                It stays outside the program's PID namespace, so the program cannot see it.
    init        pid 1 of the new PID namespace: mounts a /proc that shows only the namespace,
                forks the program, enforces the wall clock, kills what is left and reports.
                When it exits the kernel kills every process still in the namespace.
    program     takes the rlimits, drops every privilege, closes the report pipe, runs the source.

With `namespaces` false in the settings (the caller's choice where the kernel refuses them) the
supervisor is init itself and runs the program on the host, as a child subreaper.

Reports are JSON lines: {"setup_error", "stage"} when the sandbox could not be prepared;
{"started": true} once the program process is confined, just before it closes its copy of the
pipe and runs the source; and init's final report with "isolation".
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

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 0x4000, 1 << 18
MS_NOATIME, MS_NODIRATIME, MS_RELATIME, MS_STRICTATIME = 1024, 2048, 1 << 21, 1 << 24
PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_CAPBSET_DROP = 1, 4, 24
PR_SET_CHILD_SUBREAPER, PR_SET_NO_NEW_PRIVS = 36, 38
SYS_MOUNT_SETATTR = 442  # the same number on x86_64 and arm64 (Linux >= 5.12)
AT_FDCWD, AT_RECURSIVE = -100, 0x8000
MOUNT_ATTR_RDONLY, MOUNT_ATTR_NOSUID = 1, 2
_LINUX_CAPABILITY_VERSION_3 = 0x20080522

libc = ctypes.CDLL(None, use_errno=True)


def check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def mount(source, target: str, fstype, flags: int, data=None) -> None:
    def raw(text):
        return None if text is None else text.encode()

    check(libc.mount(raw(source), raw(target), raw(fstype), ctypes.c_ulong(flags), raw(data)),
          f"mount {fstype or source} on {target}")


def not_dumpable() -> None:
    """A process of the same user can then neither open our /proc files (the report pipe through
    /proc/<pid>/fd) nor ptrace us; our forks inherit this until they exec or drop it. (Not before
    the user namespace's id maps are written: that needs our /proc files to be our own.)"""
    check(libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0), "prctl(PR_SET_DUMPABLE)")


class Reporter:
    """Writes JSON lines on the report pipe."""

    def __init__(self, fd: int):
        self.fd = fd

    def __call__(self, **message) -> None:
        os.write(self.fd, (json.dumps(message) + "\n").encode())


# --- the supervisor: namespaces and the filesystem ------------------------------------------------


def enter_namespaces(settings: dict, isolation: dict) -> None:
    """Unshare the namespaces and prepare the program's view of the filesystem."""
    uid, gid = os.getuid(), os.getgid()
    userns = uid != 0  # root needs no user namespace to mount; the program drops to run_as instead
    flags = CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS
    flags |= CLONE_NEWNET if settings["isolate_network"] else 0
    flags |= CLONE_NEWUSER if userns else 0
    check(libc.unshare(flags), "unshare")
    if userns:  # the same ids inside as outside: only this user exists in the namespace
        for name, text in (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1"), ("gid_map", f"{gid} {gid} 1")):
            with open(f"/proc/self/{name}", "w") as f:
                f.write(text)
    not_dumpable()
    # Nothing mounted below may reach the host's mount namespace.
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    make_read_only()
    # The standard library may live under a folder hidden below, or one the program's user
    # cannot enter (a pyenv under a 0700 /root): the program imports through these descriptors.
    settings["path_fds"] = {entry: os.open(entry, os.O_PATH) for entry in sys.path if os.path.isdir(entry)}
    for path in settings["hide"]:
        if os.path.isdir(path):
            mount("tmpfs", path, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV, "size=4k,nr_inodes=1,mode=0755")
    for path in ("/tmp", "/var/tmp", "/dev/shm"):
        if os.path.isdir(path):
            mount("tmpfs", path, "tmpfs", MS_NOSUID | MS_NODEV, f"size={settings['scratch_bytes']},mode=1777")
    os.mkdir(settings["workdir"], 0o700)
    user = settings["user"]
    if user is not None:
        os.chown(settings["workdir"], user[1], user[2])
    os.chdir(settings["workdir"])
    isolation.update(user_ns=userns, pid_ns=True, net_ns=bool(flags & CLONE_NEWNET), mount_ns=True, ipc_ns=True,
                     fs="read-only; private /tmp, /var/tmp, /dev/shm; HOME is the working folder in /tmp",
                     hidden=[p for p in settings["hide"] if os.path.isdir(p)])


def make_read_only() -> None:
    """Every mount read-only and nosuid, in one call where the kernel has mount_setattr (5.12)."""
    attr = (ctypes.c_uint64 * 4)(MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID, 0, 0, 0)
    result = libc.syscall(ctypes.c_long(SYS_MOUNT_SETATTR), ctypes.c_int(AT_FDCWD), b"/",
                          ctypes.c_uint(AT_RECURSIVE), ctypes.byref(attr), ctypes.c_size_t(ctypes.sizeof(attr)))
    if result == 0:
        return
    if ctypes.get_errno() != 38:  # ENOSYS: an older kernel; remount each mount instead
        check(result, "mount_setattr / read-only")
    keep = {"nodev": MS_NODEV, "noexec": MS_NOEXEC, "noatime": MS_NOATIME, "nodiratime": MS_NODIRATIME,
            "relatime": MS_RELATIME, "strictatime": MS_STRICTATIME}
    with open("/proc/self/mountinfo") as f:
        mounts = [line.split() for line in f]
    for fields in mounts:
        target = fields[4].encode().decode("unicode_escape")  # spaces come as \040
        flags = MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID
        for option in fields[5].split(","):  # a user namespace may not clear the flags it inherited
            flags |= keep.get(option, 0)
        mount(None, target, None, flags)


def run_init(settings: dict, source: bytes, report: Reporter, isolation: dict) -> None:
    """Fork init, the PID namespace's first process, and wait for it; never returns."""
    pid = os.fork()
    if pid == 0:
        try:
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # the supervisor gone: the namespace goes
            mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
        except OSError as e:
            report(setup_error=str(e), stage="namespaces")
            os._exit(125)
        isolation["proc"] = "its own PID namespace only"
        isolation["reaper"] = "PID namespace init: everything left dies with it"
        supervise(settings, source, report, isolation)
    os.close(report.fd)  # init holds the only copy now
    _, status = os.waitpid(pid, 0)
    os._exit(0 if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0 else 1)


# --- init (or, without namespaces, the supervisor): run the program and watch it ------------------


def tasks_of(uid: int) -> int:
    """Threads that `uid` runs now, as this /proc shows them: RLIMIT_NPROC counts threads."""
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


def drop_privileges(settings: dict) -> None:
    """Become the program's user with no capabilities, for good (no setuid binary gives them back)."""
    user = settings["user"]
    if user is not None:
        os.setgroups([])
        os.setgid(user[2])
        os.setuid(user[1])  # from root: the kernel clears every capability
    elif os.getuid() != 0:  # the user namespace's creator: all its capabilities must go
        for cap in range(64):
            if libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
                break  # EINVAL past the last capability this kernel knows
        header = (ctypes.c_uint32 * 2)(_LINUX_CAPABILITY_VERSION_3, 0)
        data = (ctypes.c_uint32 * 6)()
        check(libc.capset(ctypes.byref(header), ctypes.byref(data)), "capset")
    check(libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(PR_SET_NO_NEW_PRIVS)")


def reach_path_through_descriptors(path_fds: dict) -> None:
    """Point sys.path entries the program cannot reach at descriptors opened before they were hidden.

    The descriptors are O_PATH: they read nothing themselves, and `..` from them stays inside
    the program's view (a hidden home reads as the empty folder mounted over it).
    """
    moved = {old: f"/proc/self/fd/{fd}" for old, fd in path_fds.items() if not os.access(old, os.R_OK | os.X_OK)}

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


def start_program(settings: dict, source: bytes, report: Reporter) -> None:
    """In the forked program process: confine it, then run the source; never returns."""
    try:
        os.setpgid(0, 0)
        nproc = settings["nproc_base"] + settings["processes"]
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
        drop_privileges(settings)
        reach_path_through_descriptors(settings["path_fds"])
        report(started=True)
        os.close(report.fd)
        libc.prctl(PR_SET_DUMPABLE, 1, 0, 0, 0)  # its own children may look at it; it holds no secret of ours
    except BaseException as e:
        report(setup_error=f"{type(e).__name__}: {e}", stage="program")
        os._exit(125)
    try:
        os._exit(run_program(source, settings["marker"].encode()))
    finally:  # nothing the program does may send this process on into the supervisor's code
        os._exit(1)


def children_of(pid: int) -> list:
    me = str(pid).encode()
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


def supervise(settings: dict, source: bytes, report: Reporter, isolation: dict) -> None:
    """Run the program under the wall clock, kill whatever it left, report how it ended; never returns."""
    program_pid = os.fork()
    if program_pid == 0:
        start_program(settings, source, report)
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
    # Kill whatever is left, generation by generation: the children of a killed process are
    # handed to this reaper, and found in the next round.
    me = os.getpid()
    for _ in range(10_000):
        left = children_of(me)
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


# --- the supervisor's start ----------------------------------------------------------------------


def main() -> None:
    raw = sys.stdin.buffer.read()
    header, _, source = raw.partition(b"\n")
    settings = json.loads(header)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)  # the program reads an empty stdin, not its own text
    os.close(null)
    report = Reporter(settings["report_fd"])
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # the workbench gone: this run goes too
    if os.getppid() != settings["parent_pid"]:  # it was gone before that took effect
        os._exit(1)
    user = settings["user"]
    program_uid = os.getuid() if user is None else user[1]
    isolation = {"user_ns": False, "pid_ns": False, "net_ns": False, "mount_ns": False, "ipc_ns": False,
                 "fs": "the host's, writable wherever the program's user may write", "hidden": [],
                 "proc": "the host's", "uid": program_uid, "user": settings["user_name"],
                 "rlimits": True, "process_limit": program_uid != 0,
                 "report_pipe": "closed by the program before it runs; the supervisor is not dumpable"}
    if settings["namespaces"]:
        try:
            if os.getuid() == 0:  # RLIMIT_NPROC counts the run_as user's tasks on the whole host
                settings["nproc_base"] = tasks_of(program_uid) + 1
            else:  # within a new user namespace it counts only the supervisor, init and the program
                settings["nproc_base"] = 3
            enter_namespaces(settings, isolation)
        except OSError as e:
            report(setup_error=str(e), stage="namespaces")
            os._exit(125)
        run_init(settings, source, report, isolation)
    not_dumpable()
    settings["nproc_base"] = tasks_of(program_uid) + 1  # the program itself, once it runs as that user
    settings["path_fds"] = {entry: os.open(entry, os.O_PATH) for entry in sys.path if os.path.isdir(entry)}
    os.chdir(settings["workdir"])
    # As a subreaper this process inherits the program's orphans, so the sweep also finds
    # processes that left the program's process group or session (setsid, double fork).
    isolation["reaper"] = "subreaper" if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0 else "none"
    supervise(settings, source, report, isolation)


if __name__ == "__main__":
    main()
