"""A throw-away JupyterLab server for the browser tests: a free localhost port, a random token,
its own folder and its own Jupyter config/runtime/settings folders, so nothing of the user's
Jupyter set-up leaks in and nothing of the test's leaks out.

`stop()` always leaves no process behind: it asks the server to shut its kernels down, stops
the server's process group, then kills whatever the server had started that is still running
(kernels run in sessions of their own, so the group alone would miss them).
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import psutil

# The child asks the kernel for SIGTERM when pytest dies, then becomes JupyterLab: even a
# pytest killed with SIGKILL leaves no server behind (the server's kernels watch their parent).
_EXEC_WITH_PARENT_DEATH_SIGNAL = (
    "import ctypes, os, signal, sys; "
    "ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM); "  # 1 = PR_SET_PDEATHSIG
    "os.execv(sys.argv[1], sys.argv[1:])"
)

# JupyterLab's own network chatter and first-run toasts are off: this machine has no network
# and a toast over the notebook would hide what the screenshots are for.
_NOTIFICATION_SETTINGS = {"fetchNews": "false", "checkForUpdates": False}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class LabServer:
    """A running JupyterLab; `root` is the folder it serves, `log` its stdout and stderr."""

    root: Path
    port: int
    token: str
    log: Path
    process: subprocess.Popen
    started_s: float = 0.0
    _descendants: list = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def api(self, method: str, path: str, timeout_s: float = 10.0):
        """Call the server's REST API with the token; returns the decoded JSON (or None)."""
        request = urllib.request.Request(f"{self.url}{path}", method=method,
                                         headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            body = response.read()
        return json.loads(body) if body else None

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def start(root: Path, state_dir: Path, log: Path, timeout_s: float = 90.0) -> LabServer:
    """Start `jupyter lab` serving `root` and return once its API answers."""
    token = secrets.token_hex(16)
    port = free_port()
    env = dict(os.environ)
    for name, sub in [("JUPYTER_CONFIG_DIR", "config"), ("JUPYTER_DATA_DIR", "data"),
                      ("JUPYTER_RUNTIME_DIR", "runtime"), ("JUPYTERLAB_SETTINGS_DIR", "settings"),
                      ("JUPYTERLAB_WORKSPACES_DIR", "workspaces"), ("IPYTHONDIR", "ipython")]:
        env[name] = str(state_dir / sub)
        (state_dir / sub).mkdir(parents=True, exist_ok=True)
    notification = state_dir / "settings" / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    notification.parent.mkdir(parents=True, exist_ok=True)
    notification.write_text(json.dumps(_NOTIFICATION_SETTINGS))
    env["PYDEVD_DISABLE_FILE_VALIDATION"] = "1"  # debugpy's frozen-modules warning, once per kernel

    cmd = [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--allow-root",
           f"--IdentityProvider.token={token}", f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
           "--ServerApp.ip=127.0.0.1", f"--ServerApp.root_dir={root}",
           "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
    if sys.platform.startswith("linux"):
        cmd = [sys.executable, "-c", _EXEC_WITH_PARENT_DEATH_SIGNAL, *cmd]
    log_file = open(log, "wb")
    t0 = time.perf_counter()
    process = subprocess.Popen(cmd, cwd=root, env=env, stdin=subprocess.DEVNULL, stdout=log_file,
                               stderr=subprocess.STDOUT, start_new_session=True)
    log_file.close()
    server = LabServer(root=root, port=port, token=token, log=log, process=process)
    deadline = t0 + timeout_s
    while True:
        if process.poll() is not None:
            stop(server)
            raise RuntimeError(f"JupyterLab exited with code {process.returncode} before answering; "
                               f"its log ({log}) ends with:\n{server.log_tail()}")
        try:
            server.api("GET", "/api/status", timeout_s=2)
            break
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            pass
        if time.perf_counter() > deadline:
            stop(server)
            raise RuntimeError(f"JupyterLab did not answer on {server.url} within {timeout_s:.0f} s; "
                               f"its log ({log}) ends with:\n{server.log_tail()}")
        time.sleep(0.2)
    server.started_s = time.perf_counter() - t0
    return server


def shutdown_kernels(server: LabServer, grace_s: float = 15.0) -> list[str]:
    """Shut every kernel down through the API, as "Shut Down All Kernels" would, then kill by its
    id whatever a kernel had started that outlived it (a process in a session of its own is not
    stopped with its kernel). Returns a description of each process so killed."""
    # What the kernels started is recorded while they are still its parents (orphans lose the link).
    try:
        started = psutil.Process(server.process.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        started = []
    server._descendants += started
    if server.process.poll() is None:
        try:
            for kernel in server.api("GET", "/api/kernels", timeout_s=5) or []:
                server.api("DELETE", f"/api/kernels/{kernel['id']}", timeout_s=grace_s)
        except (urllib.error.URLError, OSError, ValueError):
            pass
    return kill_survivors(started)


def stop(server: LabServer, grace_s: float = 15.0) -> list[str]:
    """Stop the server and everything it started. Returns a description of every process that
    had to be killed by its id after its kernel or the server was gone (none, when all is well)."""
    process = server.process
    forced = shutdown_kernels(server, grace_s)
    try:
        started = psutil.Process(process.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        started = []
    server._descendants += started
    # The server's process group: SIGTERM (it then stops its kernels too), SIGKILL if it hangs.
    for sig, wait_s in [(signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)]:
        if process.poll() is not None:
            break
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            break
        try:
            process.wait(timeout=wait_s)
        except subprocess.TimeoutExpired:
            pass
    return forced + kill_survivors(started)


def kill_survivors(procs: list, wait_s: float = 5.0) -> list[str]:
    """Kill, by id, each of `procs` still running after `wait_s`; describe each one killed."""
    _, alive = psutil.wait_procs(procs, timeout=wait_s)
    killed = []
    for proc in alive:
        try:
            killed.append(f"pid {proc.pid}: {' '.join(proc.cmdline())[:200]}")
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=wait_s)
    return killed


def still_running(server: LabServer) -> list[str]:
    """The server and every process it had started that is still alive (should be none)."""
    alive = [] if server.process.poll() is not None else [f"pid {server.process.pid}: the server"]
    for proc in server._descendants:
        try:
            if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:  # is_running: same pid, same start
                alive.append(f"pid {proc.pid}: {' '.join(proc.cmdline())[:200]}")
        except psutil.NoSuchProcess:
            pass
    return alive
