"""The sandbox: how runs end, the limits, what is left behind, and what the program can reach.

The attacks of issue 18 are here as tests (a program that kills another task's program, reads
other processes' environment or the user's ~/.ssh, reaches 127.0.0.1, leaves a daemon, writes
into its supervisor's report pipe, or holds a lone surrogate). As root (CI) the whole file also
runs once more as the unprivileged user nobody (test_the_suite_holds_for_an_unprivileged_user),
which is how JupyterLab is usually run and where those attacks used to succeed.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from workbench.errors import ConfigError, WorkbenchError
from workbench.humaneval import sandbox
from workbench.humaneval.sandbox import SandboxError, SandboxLimits, SandboxResult, run_python

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="the sandbox needs Linux")

FAST = SandboxLimits(cpu_s=5)
IS_ROOT = os.geteuid() == 0
TESTS = Path(__file__).resolve().parent


def run(source: str, timeout_s: float = 5.0, limits: SandboxLimits = FAST) -> SandboxResult:
    result = run_python(textwrap.dedent(source), timeout_s=timeout_s, limits=limits)
    assert not os.path.exists(result.workdir), "the program's folder must be gone"
    return result


def alive(pid: int) -> bool:
    """True if `pid` runs; a zombie (dead, not yet reaped by whoever adopted it) counts as dead."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rpartition(b")")[2].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != b"Z"


def new_name() -> str:
    """A process name (15 characters at most) that a program gives its processes, to find them
    from here: pids printed inside a PID namespace mean nothing outside it."""
    return "wbt" + secrets.token_hex(6)


def named(name: str) -> str:
    """Source that names the calling process `name` (PR_SET_NAME: /proc/<pid>/comm, which anyone
    may read; prctl works where writing /proc/self/comm does not, in a process that is not dumpable)."""
    return f"__import__('ctypes').CDLL(None).prctl(15, {name.encode()!r})"


def running_named(name: str, wait_s: float = 2.0) -> list[int]:
    """Host pids of live processes called `name`, after giving killed ones `wait_s` to go; any
    found are killed, so that a failing test leaves nothing behind either."""
    deadline = time.monotonic() + wait_s
    while True:
        found = []
        for entry in os.listdir("/proc"):
            try:
                if entry.isdigit() and Path(f"/proc/{entry}/comm").read_text().strip() == name and alive(int(entry)):
                    found.append(int(entry))
            except OSError:
                continue
        if not found or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    for pid in found:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    return found


# --- How a run ends ----------------------------------------------------------------------------


def test_a_program_that_runs_to_its_end_completes():
    result = run("print('hello')\nprint('world', end='')")
    assert result.outcome == "completed" and result.completed
    assert result.exit_code == 0 and result.signal is None
    assert result.stdout_tail == "hello\nworld"  # the marker is not part of the output
    assert result.wall_s < 3


@pytest.mark.parametrize(
    "source",
    [
        "import sys\nprint('done?')\nsys.exit(0)\nprint('never')",
        "import os\nos._exit(0)\nprint('never')",
        "raise SystemExit",
    ],
    ids=["sys.exit(0)", "os._exit(0)", "SystemExit"],
)
def test_ending_early_with_status_0_is_not_completion(source):
    result = run(source)
    assert result.outcome == "exited"
    assert result.exit_code == 0


def test_exit_is_not_even_defined_without_site():
    result = run("exit()")
    assert result.outcome == "exited" and "NameError" in result.stderr_tail


def test_an_exception_is_reported_with_its_traceback():
    result = run("def f():\n    assert 1 == 2, 'wrong answer'\nf()")
    assert result.outcome == "exited" and result.exit_code == 1
    assert "AssertionError: wrong answer" in result.stderr_tail
    assert "<program>" in result.stderr_tail and "assert 1 == 2" in result.stderr_tail  # the line is shown
    assert "run_program" not in result.stderr_tail  # the supervisor's frame is left out


def test_a_syntax_error_exits():
    result = run("def f(:\n    pass")
    assert result.outcome == "exited" and "SyntaxError" in result.stderr_tail


def test_printing_a_marker_it_cannot_know_does_not_complete():
    result = run(f"import os\nprint('\\n{sandbox._MARKER_PREFIX}' + '0' * 32)\nos._exit(0)")
    assert result.outcome == "exited"


def test_output_after_the_end_is_impossible_because_the_process_ends_there():
    source = """
        import atexit, threading, time
        atexit.register(lambda: print('from atexit'))
        threading.Thread(target=time.sleep, args=(60,)).start()  # a non-daemon thread would block exit
        print('last statement')
    """
    result = run(source)
    assert result.outcome == "completed"
    assert result.wall_s < 3
    assert "from atexit" not in result.stdout_tail


# --- Limits ------------------------------------------------------------------------------------


def test_an_infinite_loop_times_out_on_the_wall_clock():
    result = run("while True:\n    pass", timeout_s=1.0)
    assert result.outcome == "timeout" and result.signal == "SIGKILL"
    assert 1.0 <= result.wall_s < 4


def test_a_program_that_leaves_its_process_group_still_times_out():
    source = "import os\nos.setpgid(0, os.getsid(0))  # join the supervisor's group\nwhile True:\n    pass"
    result = run(source, timeout_s=1.0)
    assert result.outcome == "timeout" and result.wall_s < 4


def test_a_sleeping_program_times_out():
    result = run("import time\ntime.sleep(60)", timeout_s=1.0)
    assert result.outcome == "timeout"
    assert result.wall_s < 4


def test_the_cpu_limit_stops_a_busy_program_before_the_wall_clock():
    result = run("while True:\n    pass", timeout_s=30, limits=SandboxLimits(cpu_s=1))
    assert result.outcome == "timeout"
    assert result.signal in ("SIGXCPU", "SIGKILL")
    assert result.cpu_s > 0.9 and result.wall_s < 15  # rusage is coarse


def test_the_memory_limit_turns_a_huge_allocation_into_memory_error():
    result = run("x = bytearray(4 << 30)", limits=SandboxLimits(cpu_s=5, memory_mb=256))
    assert result.outcome == "exited" and "MemoryError" in result.stderr_tail
    assert result.wall_s < 3


def test_the_file_size_limit_stops_a_big_write():
    result = run("open('big', 'wb').write(b'x' * (8 << 20))", limits=SandboxLimits(cpu_s=5, file_size_mb=1))
    assert result.outcome == "exited" and "File too large" in result.stderr_tail


def test_the_file_size_limit_also_bounds_a_flood_of_output():
    result = run("while True:\n    print('x' * 1000)", timeout_s=10, limits=SandboxLimits(cpu_s=5, file_size_mb=1))
    assert result.outcome == "exited" and "File too large" in result.stderr_tail
    assert result.wall_s < 5


def test_the_process_limit_refuses_a_fork_bomb():
    name = new_name()
    source = f"""
        import os, time
        made = 0
        try:
            for _ in range(40):
                if os.fork() == 0:
                    {named(name)}
                    time.sleep(60)
                    os._exit(0)
                made += 1
        finally:
            print(made, flush=True)
    """
    result = run(source, limits=SandboxLimits(cpu_s=5, processes=4))
    if not result.isolation["process_limit"]:
        pytest.skip("RLIMIT_NPROC does not bind root; run as a user or with run_as")
    assert result.outcome == "exited" and "BlockingIOError" in result.stderr_tail
    assert 0 < int(result.stdout_tail) <= 4
    assert running_named(name) == []


# --- Nothing left behind -----------------------------------------------------------------------


def test_a_child_of_a_looping_program_dies_with_it():
    name = new_name()
    source = f"""
        import os, time
        if os.fork() == 0:
            {named(name)}
            time.sleep(60)
            os._exit(0)
        while True:
            pass
    """
    result = run(source, timeout_s=1.0)
    assert result.outcome == "timeout" and result.wall_s < 4
    assert running_named(name) == []


def test_a_daemon_that_left_the_session_is_killed_too():
    # Double fork and setsid: the daemon is in neither the program's process group nor its session.
    name = new_name()
    source = f"""
        import os, time
        r, w = os.pipe()
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                {named(name)}
                os.write(w, b'up')
                time.sleep(60)
            os._exit(0)
        print(os.read(r, 2).decode(), flush=True)
    """
    result = run(source)
    assert result.outcome == "completed" and result.stdout_tail == "up\n"
    assert running_named(name) == []


def test_the_program_works_in_its_own_folder_which_is_then_removed():
    source = """
        import os, pathlib
        here = pathlib.Path.cwd()
        assert os.environ['HOME'] == str(here) and os.environ['TMPDIR'] == str(here)
        (here / 'sub').mkdir()
        (here / 'sub' / 'f.txt').write_text('x')
        os.chmod(here / 'sub', 0)  # and tries to make it hard to remove
        print(here)
    """
    result = run(source)
    assert result.outcome == "completed"
    assert result.stdout_tail.strip() == result.workdir
    assert not os.path.exists(result.workdir)


def test_the_folder_is_removed_after_a_timeout_too():
    result = run("open('x', 'w').write('x')\nwhile True:\n    pass", timeout_s=1.0)
    assert result.outcome == "timeout"  # run() asserts the folder is gone


@pytest.mark.skipif(not IS_ROOT, reason="run_as applies only when the workbench runs as root")
def test_as_root_the_program_runs_as_nobody():
    result = run("import os\nprint(os.getuid(), os.getgid(), os.getgroups())")
    assert result.isolation["user"] == "nobody" and result.isolation["uid"] == 65534
    assert result.stdout_tail == "65534 65534 []\n"


def test_the_program_sees_a_scrubbed_environment_and_no_marker(monkeypatch):
    nonce = "5ec2e7" * 5 + "ab"
    monkeypatch.setattr(sandbox, "_new_nonce", lambda: nonce)
    source = """
        import json, os, sys
        found = {'environ': dict(os.environ), 'argv': sys.argv, 'stdin': sys.stdin.read(),
                 'consts': repr(sys._getframe().f_code.co_consts), 'folder': os.listdir('.')}
        for name in ('cmdline', 'environ'):
            for pid in ('self', str(os.getppid())):
                try:
                    found[pid + '/' + name] = open(f'/proc/{pid}/{name}', 'rb').read().decode('latin-1')
                except OSError as e:
                    found[pid + '/' + name] = type(e).__name__
        print(json.dumps(found))
    """
    result = run(source, limits=SandboxLimits(cpu_s=5, output_chars=200_000))
    assert result.outcome == "completed"
    found = json.loads(result.stdout_tail)
    assert set(found["environ"]) == {"PATH", "LANG", "HOME", "TMPDIR"}
    assert found["stdin"] == "" and found["folder"] == []
    assert nonce not in result.stdout_tail


def test_unicode_output_and_source_survive():
    result = run("s = 'héllo → 世界'\nprint(s)")
    assert result.stdout_tail == "héllo → 世界\n"


# --- What the program can reach: the attacks of issue 18 ---------------------------------------


def test_isolation_says_what_was_in_force():
    result = run("pass")
    iso = result.isolation
    assert iso["pid_ns"] and iso["net_ns"] and iso["mount_ns"] and iso["ipc_ns"]
    assert iso["user_ns"] == (not IS_ROOT)  # root needs none to mount; the program drops to nobody
    assert iso["uid"] == (65534 if IS_ROOT else os.geteuid())
    assert iso["fs"].startswith("read-only") and "/root" in iso["hidden"]
    assert iso["proc"] == "its own PID namespace only"
    assert "namespaces_refused" not in iso


def test_a_program_cannot_kill_another_tasks_program():
    # Two programs at once, as HumanEval's workers run them. The attacker looks for the victim by
    # the name it gave itself (any process can read another's /proc/<pid>/comm) and kills it;
    # killing only what it finds keeps this test from hitting other processes when it fails.
    name = new_name()
    victim = f"import time\n{named(name)}\ntime.sleep(1.5)\nprint('survived')"
    attacker = f"""
        import os, signal, time
        time.sleep(0.5)
        found = []
        for pid in filter(str.isdigit, os.listdir('/proc')):
            try:
                if open(f'/proc/{{pid}}/comm').read().strip() == {name!r}:
                    os.kill(int(pid), signal.SIGKILL)
                    found.append(pid)
            except OSError:
                pass
        print('killed', found)
    """
    with ThreadPoolExecutor(2) as pool:
        victim_run = pool.submit(run, victim)
        attacker_run = pool.submit(run, attacker)
        victim_result, attacker_result = victim_run.result(), attacker_run.result()
    assert attacker_result.stdout_tail == "killed []\n"
    assert victim_result.outcome == "completed" and victim_result.stdout_tail == "survived\n"


def test_a_program_sees_only_its_own_processes():
    source = """
        import os
        print(sorted(int(p) for p in os.listdir('/proc') if p.isdigit()), os.getpid(), os.getppid())
    """
    result = run(source)
    pids, me, parent = result.stdout_tail.rsplit(" ", 2)
    assert json.loads(pids) == [1, int(me)] and int(parent) == 1  # init of its PID namespace, and itself


def test_a_program_reads_no_other_process_environment():
    source = """
        import os
        read = {}
        for pid in filter(str.isdigit, os.listdir('/proc')):
            if int(pid) != os.getpid():
                try:
                    read[pid] = open(f'/proc/{pid}/environ', 'rb').read().decode('latin-1')
                except OSError:
                    pass
        print(read)
    """
    result = run(source, limits=SandboxLimits(cpu_s=5, output_chars=100_000))
    assert result.outcome == "completed" and result.stdout_tail == "{}\n"


def test_a_program_cannot_read_its_users_home(monkeypatch):
    # As root, HOME is /root; under tests/as_nobody.py it is a /root that holds nobody's
    # .ssh/id_ed25519. Either way the program finds an empty folder there.
    home = os.environ["HOME"]
    source = f"""
        import os
        print(sorted(os.listdir({home!r})))
        try:
            print(open(os.path.join({home!r}, '.ssh', 'id_ed25519')).read())
        except OSError as e:
            print(type(e).__name__)
    """
    result = run(source)
    assert result.stdout_tail == "[]\nFileNotFoundError\n"
    assert home in result.isolation["hidden"]


def test_a_program_cannot_reach_127_0_0_1():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        server.settimeout(0.5)
        port = server.getsockname()[1]
        result = run(f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2)\nprint('connected')")
        assert result.outcome == "exited" and "connected" not in result.stdout_tail
        assert "OSError" in result.stderr_tail  # ENETUNREACH: no interface is up, not even lo
        with pytest.raises(socket.timeout):
            server.accept()
        assert result.isolation["net_ns"]


def test_a_daemon_dies_even_after_its_program_killed_the_supervisor():
    name = new_name()
    source = f"""
        import os, signal, time
        r, w = os.pipe()
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                {named(name)}
                os.write(w, b'up')
                time.sleep(60)
            os._exit(0)
        os.read(r, 2)
        try:  # its supervisor (not kill(-1): where the sandbox fails, that would hit the user's other processes)
            os.kill(os.getppid(), signal.SIGKILL)
        except OSError as e:
            print(type(e).__name__)
        print('still here')
    """
    result = run(source)
    assert running_named(name) == []
    assert result.outcome == "completed" and result.stdout_tail.endswith("still here\n")


def test_a_program_cannot_write_into_its_supervisors_report_pipe():
    # The supervisor's report pipe is what the workbench trusts; a forged setup error there used
    # to abort the whole evaluation (SandboxError). Every pipe the program can open, its
    # parent's first, gets a forged report.
    source = """
        import os, stat
        forged = b'{"setup_error": "forged", "stage": "program"}\\n'
        written = []
        pids = [os.getppid()] + [int(p) for p in os.listdir('/proc') if p.isdigit()]
        for pid in pids:
            if pid == os.getpid():
                continue
            try:
                fds = os.listdir(f'/proc/{pid}/fd')
            except OSError:
                continue
            for fd in fds:
                path = f'/proc/{pid}/fd/{fd}'
                try:
                    if stat.S_ISFIFO(os.stat(path).st_mode):
                        out = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
                        os.write(out, forged)
                        written.append(path)
                except OSError:
                    pass
        print('written', written)
    """
    result = run(source)
    assert result.outcome == "completed" and result.stdout_tail == "written []\n"


def test_a_program_cannot_kill_its_supervisor():
    # As root the program is nobody and may not signal it (PermissionError); as a user its
    # parent is init of its PID namespace, which ignores signals from inside.
    source = """
        import os, signal
        try:
            os.kill(os.getppid(), signal.SIGKILL)
        except PermissionError:
            pass
        print('still here')
    """
    result = run(source)
    assert result.outcome == "completed" and result.stdout_tail == "still here\n"


def test_a_program_leaves_no_files_and_writes_nothing_outside_its_private_tmp():
    name = new_name()
    host = {path: f"{path}/{name}" for path in ("/tmp", "/var/tmp", "/dev/shm", os.environ["HOME"], os.getcwd())}
    source = f"""
        written = []
        for path in {sorted(host.values())!r}:
            try:
                open(path, 'w').write('left behind')
                written.append(path)
            except OSError as e:
                print(path, type(e).__name__)
        print('written', written)
    """
    try:
        result = run(source)
    finally:
        leaked = [path for path in host.values() if os.path.exists(path)]
        for path in leaked:
            os.unlink(path)
    assert leaked == []
    # /tmp, /var/tmp and /dev/shm are its own tmpfs; HOME is hidden, the rest is read-only
    assert "written ['/dev/shm/" in result.stdout_tail
    # The working folder's write failed: read-only (OSError, PermissionError), or, where the checkout
    # itself lies under /tmp (a CI clone there), absent behind the private tmpfs (FileNotFoundError).
    failed = re.search(rf"^{re.escape(os.getcwd())}/{name} (OSError|PermissionError|FileNotFoundError)$",
                       result.stdout_tail, re.M)
    assert failed, result.stdout_tail


def test_a_lone_surrogate_fails_the_program_not_the_run():
    result = run("x = '\udc80'\nprint(x)")
    assert result.outcome == "exited" and "SyntaxError" in result.stderr_tail


def test_the_standard_library_is_importable_though_its_folder_is_hidden():
    # A pyenv under /root: the folder is hidden behind an empty tmpfs, and nobody could not
    # enter it anyway; the program imports through descriptors opened before.
    result = run("import fractions, json, math, decimal\nprint(math.comb(5, 2), fractions.Fraction(1, 3))")
    assert result.outcome == "completed" and result.stdout_tail == "10 1/3\n", result.stderr_tail


def _ended(reports, returncode=0, namespaces=True):
    return sandbox._Ended(returncode=returncode, stuck=False, reports=tuple(reports), stdout=b"", stderr=b"",
                          wall_s=0.1, marker=b"m", namespaces=namespaces)


FINAL = {"isolation": {"pid_ns": True}, "timed_out": False, "exit_code": 1, "signal": None, "cpu_s": 0.01}


def test_a_setup_error_after_the_program_started_counts_against_the_program():
    before = _ended([{"setup_error": "rlimit refused", "stage": "program"}], returncode=1)
    with pytest.raises(SandboxError, match="rlimit refused"):
        sandbox._how_it_ended(before, FAST)
    after = _ended([{"started": True}, {"setup_error": "forged", "stage": "program"}, FINAL])
    assert sandbox._how_it_ended(after, FAST)[0] == "interfered"
    twice = _ended([{"started": True}, FINAL, FINAL])
    assert sandbox._how_it_ended(twice, FAST)[0] == "interfered"
    killed = _ended([{"started": True}], returncode=-9, namespaces=False)
    assert sandbox._how_it_ended(killed, FAST)[0] == "interfered"
    assert sandbox._how_it_ended(_ended([{"started": True}, FINAL]), FAST)[0] == "exited"


def test_where_namespaces_are_refused_the_run_is_refused_unless_asked(monkeypatch):
    refused = _ended([{"setup_error": "unshare: Operation not permitted", "stage": "namespaces"}], returncode=1)
    monkeypatch.setattr(sandbox, "_run_once", lambda *args, **kwargs: (refused, Path("/nowhere")))
    with pytest.raises(SandboxError, match="refused the sandbox's namespaces .*unshare: Operation not permitted"):
        run_python("pass", limits=FAST)


def test_without_namespaces_by_request_the_result_says_so(monkeypatch):
    monkeypatch.setattr(sandbox, "_namespaces_refused", "unshare: Operation not permitted (the test's)")
    limits = SandboxLimits(cpu_s=5, require_namespaces=False)
    result = run("import os\nprint(len(os.listdir('/proc')) > 3)", limits=limits)
    assert result.outcome == "completed" and result.stdout_tail == "True\n"  # the host's processes are in view
    assert not result.isolation["pid_ns"] and result.isolation["namespaces_refused"].endswith("(the test's)")
    assert result.isolation["reaper"] == "subreaper"


# Tests of this file that must pass, not skip, when it runs as nobody.
UNPRIVILEGED_MUST_PASS = {
    "test_isolation_says_what_was_in_force", "test_a_program_cannot_kill_another_tasks_program",
    "test_a_program_sees_only_its_own_processes", "test_a_program_reads_no_other_process_environment",
    "test_a_program_cannot_read_its_users_home", "test_a_program_cannot_reach_127_0_0_1",
    "test_a_daemon_dies_even_after_its_program_killed_the_supervisor",
    "test_a_program_cannot_write_into_its_supervisors_report_pipe", "test_a_program_cannot_kill_its_supervisor",
    "test_a_program_leaves_no_files_and_writes_nothing_outside_its_private_tmp",
    "test_a_lone_surrogate_fails_the_program_not_the_run", "test_the_process_limit_refuses_a_fork_bomb",
    "test_a_daemon_that_left_the_session_is_killed_too",
    "test_the_standard_library_is_importable_though_its_folder_is_hidden",
}


@pytest.mark.skipif(not IS_ROOT, reason="drops from root to nobody; as a user this file runs unprivileged anyway")
def test_the_suite_holds_for_an_unprivileged_user():
    command = [sys.executable, str(TESTS / "as_nobody.py"), "--", sys.executable, "-m", "pytest", "-q", "-rA",
               "-p", "no:cacheprovider", str(TESTS / "test_sandbox.py"), "-k", "not unprivileged_user"]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=TESTS.parent)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-4000:]
    passed = set(re.findall(r"^PASSED \S+::(\w+)", proc.stdout, re.M))
    assert UNPRIVILEGED_MUST_PASS <= passed, (UNPRIVILEGED_MUST_PASS - passed, output[-3000:])


# --- Settings and results ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "field, value",
    [("cpu_s", 0), ("cpu_s", "1"), ("memory_mb", 8), ("file_size_mb", 0), ("processes", 0), ("processes", 2.5),
     ("open_files", 3), ("run_as", ""), ("isolate_network", "yes"), ("output_chars", -1)],
)  # fmt: skip
def test_bad_limits_name_the_field(field, value):
    with pytest.raises(ConfigError, match=f"SandboxLimits.{field}"):
        SandboxLimits(**{field: value})


def test_bad_arguments_are_refused():
    with pytest.raises(ConfigError, match="timeout_s"):
        run_python("pass", timeout_s=0)
    with pytest.raises(ConfigError, match="source"):
        run_python(b"pass")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="limits"):
        run_python("pass", limits={"cpu_s": 1})  # type: ignore[arg-type]


@pytest.mark.skipif(not IS_ROOT, reason="run_as is used only when the workbench runs as root")
def test_an_unknown_user_is_a_clear_error():
    with pytest.raises(ConfigError, match="not a user on this machine"):
        run_python("pass", limits=SandboxLimits(run_as="no-such-user-here"))


def test_limits_and_results_round_trip_through_json():
    limits = SandboxLimits(cpu_s=2.5, memory_mb=512, run_as=None)
    assert SandboxLimits.from_dict(json.loads(json.dumps(limits.to_dict()))) == limits
    with pytest.raises(ConfigError, match="cpu_seconds"):
        SandboxLimits.from_dict({"cpu_seconds": 1})
    result = run("print(1)")
    assert SandboxResult.from_dict(json.loads(json.dumps(result.to_dict()))) == result


def test_sandbox_error_is_a_workbench_error():
    assert issubclass(SandboxError, WorkbenchError)
