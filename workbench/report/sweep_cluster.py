"""A sweep's Ray side: joining the cluster, what it has, and the tasks that run on its nodes.

Ray is imported only here and only when called: the package works without the `cluster` extra.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .. import humaneval
from ..errors import ConfigError, WorkbenchError
from ..generation.config import DecodeConfig
from .notebook import setup
from .runner import ReportConfig, run_notebook
from .sweep_spec import RESERVED, Point, shown_text

RAY_SPEC = "ray==2.60.0"  # the cluster extra's pin, named in errors
DEFAULT_CONNECT_TIMEOUT_S = 10.0


# --- the cluster ----------------------------------------------------------------------------------

def import_ray():
    try:
        import ray
    except ImportError:
        raise ConfigError(f"Ray is not installed in {sys.executable}: install the cluster extra, "
                          f"pip install -e '.[cluster]' (it pins {RAY_SPEC})") from None
    return ray


def connect(address: str, timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S) -> str:
    """Join the cluster at `address` (auto, local or HOST:PORT of its head); say what was joined.

    The driver must run on a machine of the cluster (its head, usually): Ray's drivers join
    through the raylet of their own machine.
    """
    ray = import_ray()
    common = {"log_to_driver": False, "logging_level": logging.WARNING}  # logs come back with each result
    if address == "local":
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # a local instance reports nowhere
        ray.init(address="local", include_dashboard=False, **common)
        return "a local Ray instance on this machine"
    if address != "auto":
        _check_reachable(address, timeout_s)
    try:
        ray.init(address=address, **common)
    except ConnectionError as e:
        hint = ("no running cluster was found (RAY_ADDRESS is unset and no `ray start` runs on this machine): "
                "start one with `ray start --head`, pass its address, or use --ray local"
                if address == "auto" else "check the address and that the cluster runs the same Ray version")
        raise ConfigError(f"--ray {address}: cannot join a Ray cluster ({e}); {hint}") from None
    except RuntimeError as e:  # e.g. a Ray or Python version differing from the cluster's
        raise ConfigError(f"--ray {address}: Ray refused to join ({e})") from None
    return f"the Ray cluster at {address}"


def _check_reachable(address: str, timeout_s: float) -> None:
    """Fail in `timeout_s` with a clear error when nothing answers at HOST:PORT (ray.init would wait long)."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ConfigError(f"--ray {address!r}: not an address; use auto, local or HOST:PORT of the cluster's head")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as e:
        reason = "no answer" if isinstance(e, TimeoutError) else (e.strerror or str(e))
        raise ConfigError(f"--ray {address}: cannot reach a Ray cluster there within {timeout_s:g} s ({reason}); "
                          "check that `ray start --head` runs there and that the port is open") from None


@dataclass(frozen=True)
class Node:
    """A live node of the cluster, with the CPUs and GPUs Ray counts on it."""

    id: str
    ip: str
    cpus: float
    gpus: float


def cluster_nodes() -> list[Node]:
    """The cluster's live nodes and their CPUs and GPUs, as Ray counts them."""
    ray = import_ray()
    return [Node(id=n["NodeID"], ip=n.get("NodeManagerAddress", "?"), cpus=n["Resources"].get("CPU", 0),
                 gpus=n["Resources"].get("GPU", 0)) for n in ray.nodes() if n.get("Alive")]


def check_fits(points: Sequence[Point], nodes: Sequence[Node]) -> None:
    """Refuse a point no node can run: Ray would keep it waiting forever."""
    for p in points:
        if any(n.cpus >= p.cpus and n.gpus >= p.gpus for n in nodes):
            continue
        what = f"{p.gpus:g} GPU(s) and {p.cpus:g} CPU(s)" if p.gpus else f"{p.cpus:g} CPU(s)"
        largest = ", ".join(f"{n.ip} {n.cpus:g} CPUs {n.gpus:g} GPUs" for n in nodes) or "no live node"
        hint = "; set device: cpu, or join a cluster with GPUs" if p.gpus and not any(n.gpus for n in nodes) else ""
        raise ConfigError(f"point {p.id} ({shown_text(p.shown, ', ')}) asks for {what}, more than any node of the "
                          f"cluster has ({largest}){hint}")


def cluster_text(nodes: Sequence[Node]) -> str:
    return f"{len(nodes)} node(s), {sum(n.cpus for n in nodes):g} CPUs, {sum(n.gpus for n in nodes):g} GPUs"


# --- what runs on a node ------------------------------------------------------------------------

class AttemptLog:
    """A Ray actor (one per sweep) told by every task when it starts: the driver's view of what is
    running, and of the attempts that died, which Ray retries without saying so."""

    def __init__(self) -> None:
        self.starts: dict[str, list[dict]] = {}

    def started(self, point_id: str, where: dict) -> int:
        self.starts.setdefault(point_id, []).append(where)
        return len(self.starts[point_id])

    def snapshot(self) -> dict[str, list[dict]]:
        return self.starts


def _started(attempts, point_id: str) -> tuple[dict, Any]:
    """This task's node, process and GPUs, sent to the attempt log; and the reply's reference.

    The reply is read only when the work is done: a task that waits in ray.get lends its CPUs to
    other tasks meanwhile, and two notebooks would then share one node's CPU.
    """
    import ray

    where = {"node_id": ray.get_runtime_context().get_node_id(), "ip": ray.util.get_node_ip_address(),
             "hostname": socket.gethostname(), "pid": os.getpid(),
             "gpu_ids": [str(g) for g in ray.get_gpu_ids()], "started_at": now()}
    return where, attempts.started.remote(point_id, where)


def _attempt(reply) -> dict:
    """Which attempt this task was, from the attempt log's reply (None if the log did not answer)."""
    import ray

    try:
        return {"attempt": ray.get(reply, timeout=60)}
    except Exception as e:  # the count is for the index; the result stands without it
        return {"attempt": None, "attempt_error": f"{type(e).__name__}: {e}"}


def render_point(job: dict, attempts) -> dict:
    """Ray task: render one notebook in a temporary folder; return its files and outcome."""
    where, reply = _started(attempts, job["id"])
    with tempfile.TemporaryDirectory(prefix="workbench-sweep-") as tmp:
        source = Path(tmp, "notebook", f"{job['name']}.ipynb")
        source.parent.mkdir()
        source.write_bytes(job["notebook_bytes"])
        out = Path(tmp, "out")
        params = {k: v for k, v in job["parameters"].items() if k not in RESERVED}
        try:
            config = ReportConfig(model=job["parameters"]["MODEL"], kernel=job["parameters"]["KERNEL"],
                                  device=job["parameters"]["DEVICE"], out=out, params={job["name"]: params},
                                  notebooks=(source,), timeout_s=job["timeout_s"])
        except WorkbenchError as e:  # e.g. the checkpoint folder is not on this node
            return {**where, **_attempt(reply), **_failure(e, where), "files": {}}
        run = run_notebook(config, source).to_dict()
        files = {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    return {**where, **_attempt(reply), "status": run["status"], "duration_s": run["duration_s"],
            "headline": run["headline"], "error": run["error"], "notes": run["notes"], "files": files}


def generate_shard(job: dict, attempts) -> dict:
    """Ray task: load the model and answer one shard's HumanEval problems; return its generations."""
    where, reply = _started(attempts, job["id"])
    started = time.perf_counter()
    parameters = job["parameters"]
    try:
        loaded = setup(parameters["model"], parameters["kernel"], parameters["device"])
        problems = humaneval.load_problems()
        chosen = [problems[t] for t in parameters["task_ids"]]
        with tempfile.TemporaryDirectory(prefix="workbench-shard-") as tmp:
            done = humaneval.generate_answers(loaded, DecodeConfig.from_dict(parameters["decode"]), chosen, out=tmp)
            generations = Path(tmp, humaneval.GENERATIONS_FILE).read_bytes()
    except WorkbenchError as e:
        return {**where, **_attempt(reply), **_failure(e, where, time.perf_counter() - started), "files": {}}
    lines = [done[t] for t in parameters["task_ids"]]
    headline = {"problems": len(lines), "new_tokens": sum(line["new_tokens"] for line in lines),
                "kernel": lines[0]["record"].get("kernel")}
    return {**where, **_attempt(reply), "status": "ok", "duration_s": round(time.perf_counter() - started, 3),
            "headline": headline, "error": None, "notes": [], "files": {humaneval.GENERATIONS_FILE: generations}}


def _failure(e: BaseException, where: dict, duration_s: float = 0.0) -> dict:
    message = f"{e} (on node {where['ip']}, {where['hostname']})"
    return {"status": "failed", "duration_s": round(duration_s, 3), "headline": {}, "notes": [],
            "error": error_dict(type(e).__name__, message)}


def error_dict(name: str, message: str) -> dict:
    """An error as the report runner's index shows it."""
    return {"name": name, "message": message, "execution_count": None, "source_head": ""}


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
