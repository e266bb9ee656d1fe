"""The sandbox: how runs end, the limits, what is left behind, and what the program can learn."""

from __future__ import annotations

import json
import os
import socket
import textwrap
from pathlib import Path

import pytest

from workbench.errors import ConfigError, WorkbenchError
from workbench.humaneval import sandbox
from workbench.humaneval.sandbox import SandboxError, SandboxLimits, SandboxResult, run_python

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="the sandbox needs Linux")

FAST = SandboxLimits(cpu_s=5)
IS_ROOT = os.geteuid() == 0


def run(source: str, timeout_s: float = 5.0, limits: SandboxLimits = FAST) -> SandboxResult:
    result = run_python(textwrap.dedent(source), timeout_s=timeout_s, limits=limits)
    assert not os.path.exists(result.workdir), "the program's folder must be removed"
    return result


def alive(pid: int) -> bool:
    """True if `pid` runs; a zombie (dead, not yet reaped by whoever adopted it) counts as dead."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rpartition(b")")[2].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != b"Z"


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
    result = run("import os\nos.setpgid(0, os.getsid(0))  # join the supervisor's group\nwhile True:\n    pass", timeout_s=1.0)
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
    source = """
        import os, time
        made = []
        try:
            for _ in range(40):
                pid = os.fork()
                if pid == 0:
                    time.sleep(60)
                    os._exit(0)
                made.append(pid)
        finally:
            print(' '.join(map(str, made)), flush=True)
    """
    result = run(source, limits=SandboxLimits(cpu_s=5, processes=4))
    if "process-limit" not in result.isolation:
        pytest.skip("RLIMIT_NPROC does not bind root; run as a user or with run_as")
    assert result.outcome == "exited" and "BlockingIOError" in result.stderr_tail
    children = [int(p) for p in result.stdout_tail.split()]
    assert 0 < len(children) <= 4
    assert not any(alive(pid) for pid in children)


# --- Nothing left behind -----------------------------------------------------------------------


def test_a_child_of_a_looping_program_dies_with_it():
    source = """
        import os, time
        pid = os.fork()
        if pid == 0:
            time.sleep(60)
            os._exit(0)
        print(pid, flush=True)
        while True:
            pass
    """
    result = run(source, timeout_s=1.0)
    assert result.outcome == "timeout" and result.wall_s < 4
    assert not alive(int(result.stdout_tail))


def test_a_daemon_that_left_the_session_is_killed_too():
    # Double fork and setsid: the daemon is in neither the program's process group nor its session.
    source = """
        import os, time
        r, w = os.pipe()
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                os.write(w, str(os.getpid()).encode())
                time.sleep(60)
            os._exit(0)
        print(os.read(r, 32).decode(), flush=True)
    """
    result = run(source)
    if "subreaper" not in result.isolation:
        pytest.skip("this kernel refused PR_SET_CHILD_SUBREAPER")
    assert result.outcome == "completed"
    daemon = int(result.stdout_tail)
    assert not alive(daemon)


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


@pytest.mark.skipif(not IS_ROOT, reason="without root there is no filesystem confinement beyond the working folder")
def test_as_root_the_program_runs_as_nobody_and_cannot_write_outside(tmp_path):
    watched = [tmp_path / "escaped.txt", Path.cwd() / "escaped-from-sandbox.txt"]
    source = f"""
        import os
        print(os.getuid(), os.getgid(), os.getgroups())
        for path in {[str(p) for p in watched]!r}:
            try:
                open(path, 'w').write('out')
                print('wrote', path)
            except OSError as e:
                print('refused', type(e).__name__)
    """
    try:
        result = run(source)
    finally:
        leaked = [p for p in watched if p.exists()]
        for p in leaked:
            p.unlink()
    assert "user:nobody" in result.isolation
    assert result.stdout_tail.splitlines()[0] == "65534 65534 []"
    assert result.stdout_tail.count("refused PermissionError") == 2
    assert leaked == []


@pytest.mark.skipif(not IS_ROOT, reason="the program can kill the supervisor when both are the same user")
def test_as_root_the_program_cannot_kill_its_supervisor():
    result = run("import os, signal\nos.kill(os.getppid(), signal.SIGKILL)")
    assert result.outcome == "exited" and "PermissionError" in result.stderr_tail


def test_as_root_the_network_is_gone():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        server.settimeout(0.5)
        port = server.getsockname()[1]
        result = run(f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2)\nprint('connected')")
        if "network-namespace" not in result.isolation:
            pytest.skip("no network namespace here (not root, or namespaces not allowed): the network is not confined")
        assert result.outcome == "exited" and "connected" not in result.stdout_tail
        with pytest.raises(socket.timeout):
            server.accept()


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
