"""`python -m workbench sweep`: the SPEC's rules without a cluster, then a real two-node Ray cluster
started on this machine's loopback (a head and a second node, one CPU each) for the sweep itself:
points spread over both nodes, a killed driver, a killed worker, a failing notebook, HumanEval in
shards against one process, and the errors that come before anything runs. The cluster is torn
down at the end and the test checks that none of its processes is left."""

import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
from notebook_files import write_notebook

from workbench import humaneval
from workbench.errors import ConfigError
from workbench.generation.config import DecodeConfig
from workbench.report import html as report_html
from workbench.report import sweep
from workbench.report.lock import folder_lock
from workbench.report.sweep_cluster import Node, check_fits, connect
from workbench.report.sweep_spec import HumanEvalShards, SweepSpec, load_spec, plan_sweep

REPO_ROOT = Path(__file__).resolve().parents[1]
# Ray rewrites 127.0.0.1 and localhost to the machine's network address; another loopback address
# keeps every connection of the test cluster on this machine's loopback device.
HOST = "127.0.0.2"
BASE = 'MODEL = "demo"\nKERNEL = "auto"\nDEVICE = "auto"\nOUTPUT_DIR = "."\n'




# 01_signal: on its first attempt it tells the test which processes run it (Jupyter kernel, papermill) and
# waits to be killed; on a later attempt the file is there and it finishes at once.
SIGNAL_BODY = ["import json, os, time\n"
               "first = not os.path.exists(READY)\n"
               "if first:\n"
               "    with open(READY + '.tmp', 'w') as f:\n"
               "        json.dump({'kernel': os.getpid(), 'papermill': os.getppid()}, f)\n"
               "    os.replace(READY + '.tmp', READY)\n"
               "    time.sleep(300)\n"
               "with open(os.path.join(OUTPUT_DIR, '01_signal.json'), 'w') as f:\n"
               "    json.dump({'headline': {'first_attempt': first}}, f)"]
FAILS_BODY = ["raise RuntimeError(f'failed on purpose with X={X}')"]


@pytest.fixture
def notebooks_dir(tmp_path) -> Path:
    folder = tmp_path / "notebooks"
    write_notebook(folder / "01_signal.ipynb", BASE + 'READY = ""\nX = 0', SIGNAL_BODY)
    write_notebook(folder / "02_fails.ipynb", BASE + "X = 0\nY = 0", FAILS_BODY)
    return folder


def spec(notebooks_dir: Path, **fields) -> SweepSpec:
    return SweepSpec(notebooks_dir=notebooks_dir, **{"notebooks": ["01_signal", "02_fails"], **fields})


# --- the SPEC, without a cluster ----------------------------------------------------------------

def test_the_grid_is_a_cartesian_product_per_notebook_with_stable_ids(notebooks_dir):
    plan = plan_sweep(spec(notebooks_dir, params={"X": 1}, grid={"Y": [1, 2, 3]}, device=["cpu", "cuda"]))
    points = plan.points(auto_device="cpu")
    by_name = {}
    for p in points:
        by_name.setdefault(p.name, []).append(p)
    # Y is 02's alone: 01 gets one point per device, 02 one per device and Y
    assert len(by_name["01_signal"]) == 2 and len(by_name["02_fails"]) == 6
    assert {p.parameters["X"] for p in points} == {1}  # X is declared by both
    assert all("Y" not in p.parameters for p in by_name["01_signal"])
    cuda = [p for p in points if p.parameters["DEVICE"] == "cuda"]
    assert len(cuda) == 4 and all(p.gpus == 1 for p in cuda)
    assert all(p.gpus == 0 for p in points if p.parameters["DEVICE"] == "cpu")
    ids = [p.id for p in points]
    assert len(set(ids)) == len(ids) and all(re.fullmatch(r"0\d_\w+-[0-9a-f]{12}", i) for i in ids)
    # the same SPEC written in another order gives the same points
    again = plan_sweep(spec(notebooks_dir, device=["cuda", "cpu"], grid={"Y": [3, 2, 1]}, params={"X": 1}))
    assert sorted(p.id for p in again.points("cpu")) == sorted(ids)


def test_device_auto_follows_the_cluster_and_a_section_wins_over_the_global_value(notebooks_dir):
    plan = plan_sweep(spec(notebooks_dir, notebooks=["02"], params={"X": 1, "02_fails": {"X": 9}}))
    (cpu,) = plan.points(auto_device="cpu")
    (gpu,) = plan.points(auto_device="cuda")
    assert cpu.parameters["DEVICE"] == "cpu" and cpu.gpus == 0
    assert gpu.parameters["DEVICE"] == "cuda" and gpu.gpus == 1 and gpu.id != cpu.id
    assert cpu.parameters["X"] == 9


def test_humaneval_shards_split_the_problems_round_robin_for_each_kernel():
    plan = plan_sweep(SweepSpec(humaneval=HumanEvalShards(limit=7, shards=3), device="cpu",
                                kernel=["torch", "triton"]))
    points = plan.points("cpu")
    assert len(points) == 6 and len({p.run for p in points}) == 2
    shards = [p for p in points if p.parameters["kernel"] == "torch"]
    assert [p.task_ids for p in shards] == [("HumanEval/0", "HumanEval/3", "HumanEval/6"),
                                            ("HumanEval/1", "HumanEval/4"), ("HumanEval/2", "HumanEval/5")]
    run_folder = {p.id.split("/")[0] for p in shards}
    assert len(run_folder) == 1 and all(p.id.endswith(f"{k}-of-3") for k, p in enumerate(shards, 1))
    assert shards[0].parameters["decode"] == DecodeConfig.greedy().to_dict()


def test_load_spec_reads_yaml_and_json_and_resolves_the_notebooks_folder(tmp_path, notebooks_dir):
    (tmp_path / "s.yaml").write_text("notebooks: [02]\nnotebooks_dir: notebooks\ngrid:\n  X: [1, 2]\n"
                                     "humaneval: {limit: 4, shards: 2, decode: {max_new_tokens: 16}}\ndevice: cpu\n")
    data = {"notebooks": ["02"], "notebooks_dir": "notebooks", "grid": {"X": [1, 2]}, "device": "cpu",
            "humaneval": {"limit": 4, "shards": 2, "decode": {"max_new_tokens": 16}}}
    (tmp_path / "s.json").write_text(json.dumps(data))
    a, b = load_spec(tmp_path / "s.yaml"), load_spec(tmp_path / "s.json")
    assert a == b and a.notebooks_dir == notebooks_dir and a.humaneval.decode_config().max_new_tokens == 16
    assert len(plan_sweep(a).points("cpu")) == 4


def test_the_example_spec_is_valid():
    plan = plan_sweep(load_spec(REPO_ROOT / "examples" / "sweep.yaml"))
    assert len(plan.points("cuda")) >= 4


@pytest.mark.parametrize("fields, message", [
    ({"notebooks": ["07"]}, r"notebooks: '07' is not a notebook in .*known: 01_signal, 02_fails"),
    ({"params": {"NOPE": 1}}, r"unknown parameter NOPE; the SPEC's notebooks declare: READY, X, Y"),
    ({"grid": {"NOPE": [1]}}, r"grid: unknown parameter NOPE"),
    ({"params": {"01_signal": {"Y": 1}}}, r"params.01_signal: unknown parameter Y; 01_signal declares: READY, X"),
    ({"grid": {}}, r"grid: empty"),
    ({"grid": {"X": []}}, r"grid.X: an empty list, so the grid has no points"),
    ({"grid": {"02_fails": {"Y": []}}}, r"grid.02_fails.Y: an empty list"),
    ({"grid": {"X": 3}}, r"grid.X: must be a list of values"),
    ({"grid": {"X": [1, 1]}}, r"grid.X: lists a value twice"),
    ({"grid": {"X": [1, 2]}, "params": {"X": 3}}, r"X: both in params and in grid"),
    ({"params": {"MODEL": "x"}}, r"MODEL is set by the sweep; use the SPEC's model"),
    ({"grid": {"OUTPUT_DIR": ["a"]}}, r"OUTPUT_DIR is set by the sweep; use the SPEC's --out"),
    ({"params": {"03_other": {"X": 1}}}, r"params.03_other: not one of the SPEC's notebooks"),
])
def test_bad_parameters_are_refused_with_the_reason(notebooks_dir, fields, message):
    with pytest.raises(ConfigError, match=message):
        plan_sweep(spec(notebooks_dir, **fields))


@pytest.mark.parametrize("fields, message", [
    ({"device": "cuda:1"}, r"device='cuda:1'.*cannot pick cuda:N"),
    ({"device": []}, r"device=\[\]: must be a name or a non-empty list"),
    ({"notebooks": [], "humaneval": None}, r"nothing to run"),
    ({"gpus": 1.5}, r"gpus=1.5: must be a fraction in \(0, 1\] or a whole number"),
    ({"gpus": 0}, r"gpus=0"),
    ({"max_retries": -1}, r"max_retries=-1"),
    ({"timeout_s": 0}, r"timeout_s=0"),
    ({"params": {"X": float("nan")}}, r"params: every value must be"),
])
def test_bad_specs_are_refused_with_the_field(notebooks_dir, fields, message):
    with pytest.raises(ConfigError, match=message):
        spec(notebooks_dir, **fields)


@pytest.mark.parametrize("data, message", [
    ({"notebook": ["01"]}, r"the SPEC: unknown key\(s\) notebook; known: model, kernel"),
    ({"humaneval": {"limit": 4, "shard": 2}}, r"humaneval: unknown key\(s\) shard"),
    ({"humaneval": {"limit": 0}}, r"humaneval.limit=0"),
    ({"humaneval": {"limit": 2, "shards": 3}}, r"humaneval.shards=3: more shards than problems"),
    ({"humaneval": {"decode": {"temprature": 0.5}}}, r"humaneval.decode: .*temprature"),
    ({"humaneval": {"decode": {"max_new_tokens": -1}}}, r"max_new_tokens"),
    ([1, 2], r"the SPEC must be a mapping"),
])
def test_bad_spec_files_are_refused_with_the_key(data, message):
    with pytest.raises(ConfigError, match=message):
        SweepSpec.from_dict(data)


def test_a_point_no_node_can_run_is_refused(notebooks_dir):
    points = plan_sweep(spec(notebooks_dir, notebooks=["02"], device="cuda", gpus=2)).points("cpu")
    one_gpu = [Node("a" * 56, "10.0.0.1", cpus=8, gpus=1)]
    with pytest.raises(ConfigError, match=r"asks for 2 GPU\(s\) and 1 CPU\(s\), more than any node"):
        check_fits(points, one_gpu)
    check_fits(points, one_gpu + [Node("b" * 56, "10.0.0.2", cpus=1, gpus=2)])  # one node fits
    with pytest.raises(ConfigError, match="the cluster has no GPU|set device: cpu"):
        check_fits(points, [Node("c" * 56, "10.0.0.3", cpus=8, gpus=0)])


def test_an_unreachable_address_fails_fast_with_its_name():
    pytest.importorskip("ray")
    port = _free_port()  # nothing listens there
    started = time.perf_counter()
    with pytest.raises(ConfigError, match=rf"--ray {HOST}:{port}: cannot reach a Ray cluster there within 2 s"):
        connect(f"{HOST}:{port}", timeout_s=2)
    assert time.perf_counter() - started < 5
    with pytest.raises(ConfigError, match="not an address"):
        connect("nowhere", timeout_s=2)


def test_the_index_shows_the_sweeps_columns_and_facts():
    summary = {"title": "CodeFuse Workbench sweep", "state": "finished", "started_at": "2026-01-01T00:00:00+00:00",
               "duration_s": 3.0, "model": {"given": "demo", "kind": "demo"}, "banner": None,
               "config": {"model": "demo", "kernel": "auto", "device": "cpu", "jupyter_kernel": "python3",
                          "timeout_s": 60}, "counts": {"ok": 1, "lost": 1}, "environment": {"device_name": "2 nodes"},
               "columns": ["point", "attempts"], "meta_extra": [["grid", '{"X": [1, 2]}']],
               "notebooks": [{"name": "01_x", "status": "ok", "duration_s": 1.0, "html": "p1/01_x.html",
                              "columns": {"point": "p1", "attempts": "2"}, "notes": ["attempt 1 died"]},
                             {"name": "01_x", "status": "lost", "columns": {"point": "p2", "attempts": "3"}}]}
    page = report_html.render_index(summary)
    assert "<th>point</th><th>attempts</th><th>status</th>" in page
    assert '<a href="p1/01_x.html">01_x</a></td><td>p1</td><td>2</td><td class="status ok">' in page
    assert '<td>p2</td><td>3</td><td class="status lost">lost<' in page
    assert "<th>grid</th><td>{&quot;X&quot;: [1, 2]}</td>" in page and "attempt 1 died" in page


# --- a real cluster ---------------------------------------------------------------------------------

@dataclass
class Cluster:
    address: str
    node_ids: set
    root: Path  # Ray's files, and the TMPDIR of everything the cluster starts
    env: dict  # what a driver needs: the token, and this checkout on PYTHONPATH


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _processes_of(root: Path, marker: str | None = None) -> list[psutil.Process]:
    """Every process a test cluster started (Ray's own, its workers, their papermill and Jupyter kernels),
    found by the TMPDIR they all inherit; with `marker`, those of one `ray start` only."""
    found = []
    for proc in psutil.process_iter():
        try:
            env = proc.environ()
            if env.get("TMPDIR", "").startswith(str(root)) and marker in (None, env.get(NODE_MARKER)):
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            pass
    return found


def _notebook_processes(root: Path) -> list[psutil.Process]:
    out = []
    for proc in _processes_of(root):
        try:
            if re.search(r"ipykernel|papermill", " ".join(proc.cmdline())):
                out.append(proc)
        except psutil.NoSuchProcess:
            pass
    return out


def _wait_for(condition, timeout_s: float, what: str, step_s: float = 0.2):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(step_s)
    raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")


NODE_MARKER = "WORKBENCH_TEST_RAY_NODE"  # which `ray start` a process descends from


class _StartFailed(Exception):
    pass


class LocalCluster:
    """`ray start --block` processes on HOST, one per node, all of whose descendants the test can find.

    On a loaded machine Ray gives a starting node 30 s to register and then gives up, so a node
    that did not come up is ended (with everything it started) and started again.
    """

    ATTEMPTS = 3

    def __init__(self) -> None:
        # short: Ray's socket paths live under it and must stay below 108 characters
        self.root = Path(tempfile.mkdtemp(prefix="wbray-", dir="/tmp"))
        (self.root / "w").mkdir()
        (self.root / "logs").mkdir()
        path = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
        # token authentication with a token of its own: only the test's drivers can use the cluster,
        # and no token file of this machine's user (~/.ray/auth_token) changes how it starts
        self.driver_env = {**os.environ, "PYTHONPATH": path, "RAY_USAGE_STATS_ENABLED": "0",
                           "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
        # every process of the cluster inherits these, so the test can find it again
        self.env = {**self.driver_env, "TMPDIR": str(self.root / "w"), "JUPYTER_RUNTIME_DIR": str(self.root / "j")}
        self.started: list[tuple[subprocess.Popen, str]] = []
        self.address = ""

    def start_head(self) -> None:
        def args():
            self.address = f"{HOST}:{_free_port()}"
            return ["--head", "--port", self.address.rpartition(":")[2], "--include-dashboard", "false"]

        self._start("head", args, alive_before=0)

    def add_node(self, name: str) -> None:
        self._start(name, lambda: ["--address", self.address], alive_before=len(self.started))

    def _start(self, name: str, args, alive_before: int) -> None:
        for attempt in range(1, self.ATTEMPTS + 1):
            marker = f"{name}-{attempt}"
            log = self.root / "logs" / f"{marker}.log"
            command = [sys.executable, "-m", "ray.scripts.scripts", "start", *args(), "--block",
                       "--node-ip-address", HOST, "--num-cpus", "1", "--num-gpus", "0",
                       "--temp-dir", str(self.root / "r"), "--object-store-memory", str(200 * 2**20),
                       "--disable-usage-stats"]
            with open(log, "wb") as f:
                proc = subprocess.Popen(command, env={**self.env, NODE_MARKER: marker}, stdin=subprocess.DEVNULL,
                                        stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
            try:
                _wait_for(lambda: self._up(proc, log), 300, f"{' '.join(command[3:])} (log: {log})")
                self.started.append((proc, marker))
                return
            except _StartFailed as e:
                self._end(proc, marker)
                if attempt == self.ATTEMPTS:
                    raise AssertionError(str(e)) from None
                if alive_before:  # the failed node may have registered: wait until it is known dead
                    _wait_for(lambda: len(self.alive_nodes()) == alive_before, 120, "the failed node to be dropped")

    @staticmethod
    def _up(proc: subprocess.Popen, log: Path) -> bool:
        text = log.read_text(errors="replace")
        if proc.poll() is not None:
            raise _StartFailed(f"`ray start` exited:\n{text[-3000:]}")
        return "Ray runtime started" in text

    def alive_nodes(self) -> list[str]:
        """The ids of the live nodes, asked by a driver of its own (Ray reads the token once per process)."""
        script = ("import json, ray\n"
                  f"ray.init(address={self.address!r}, logging_level='WARNING', log_to_driver=False)\n"
                  "print(json.dumps([n['NodeID'] for n in ray.nodes() if n['Alive']]))")
        ran = subprocess.run([sys.executable, "-c", script], env=self.driver_env, capture_output=True, text=True,
                             timeout=300)
        assert ran.returncode == 0, ran.stderr[-3000:]
        return json.loads(ran.stdout.strip().splitlines()[-1])

    def _end(self, proc: subprocess.Popen, marker: str) -> None:
        """Terminate one `ray start --block` (it ends what it started), then kill what is left of it."""
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        try:
            _wait_for(lambda: not _processes_of(self.root, marker), 30, f"the processes of {marker} to end")
        except AssertionError:
            for left in _processes_of(self.root, marker):  # only this node's processes, by pid
                left.kill()

    def stop(self) -> list[int]:
        """End every node, the head last; the pids of processes that outlived their node."""
        for proc, _ in reversed(self.started):
            proc.terminate()
        for proc, _ in reversed(self.started):
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
        left = []
        try:
            _wait_for(lambda: not _processes_of(self.root), 30, "the cluster's processes to end")
        except AssertionError:
            left = _processes_of(self.root)
            for proc in left:  # only processes of this test's cluster, by pid
                proc.kill()
        shutil.rmtree(self.root, ignore_errors=True)
        return [p.pid for p in left]


@pytest.fixture(scope="module")
def cluster():
    if os.environ.get("CI") != "true":
        pytest.importorskip("ray", reason="the cluster extra is not installed: pip install -e '.[cluster]'")
    local = LocalCluster()
    left = []
    try:
        local.start_head()
        local.add_node("node")
        nodes = _wait_for(lambda: (lambda alive: len(alive) == 2 and alive)(local.alive_nodes()), 300,
                          "two live nodes", step_s=2)
        yield Cluster(address=local.address, node_ids=set(nodes), root=local.root, env=local.driver_env)
    finally:
        # each `ray start --block` ends the processes it started when it is terminated; `ray stop`
        # is not used: it kills every Ray process on the machine, other users' clusters included
        left = local.stop()
    assert not left, f"processes of the test cluster outlived it: {left}"


def _sweep_cli(spec_path: Path, out: Path, cluster: Cluster, *extra: str, address: str | None = None,
               env: dict | None = None) -> subprocess.Popen:
    """The sweep's command line as a driver process of its own (each driver reads Ray's token once)."""
    return subprocess.Popen([sys.executable, "-m", "workbench", "sweep", str(spec_path), "--out", str(out),
                             "--ray", address or cluster.address, "--no-progress", *extra],
                            env=env or cluster.env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def _sweep(spec_path: Path, out: Path, cluster: Cluster, *extra: str, **kwargs) -> tuple[int, str]:
    driver = _sweep_cli(spec_path, out, cluster, *extra, **kwargs)
    try:
        log, _ = driver.communicate(timeout=900)
    finally:
        if driver.poll() is None:
            driver.kill()
    return driver.returncode, log


def _finished_points(out: Path) -> dict[str, bytes]:
    return {p.parent.name: p.read_bytes() for p in out.glob(f"*/{sweep.POINT_FILE}")}


@pytest.mark.slow
def test_a_sweep_spreads_over_both_nodes_and_a_killed_driver_loses_nothing(cluster, demo_model_path, tmp_path):
    # four renders of 01_quickstart on the demo model (built beforehand, so no node builds its own)
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text("model: demo\ndevice: cpu\nnotebooks: [01_quickstart]\n"
                         "params: {MAX_NEW_TOKENS: 4, WARMUP: 0}\ngrid: {DECODING: [greedy, card], SEED: [0, 1]}\n")
    out = tmp_path / "out"
    driver = _sweep_cli(spec_path, out, cluster)
    try:
        first = _wait_for(lambda: _finished_points(out), 600, "the first finished point", step_s=0.1)
        driver.kill()  # SIGKILL: no chance to tidy up
        driver.wait()
    finally:
        if driver.poll() is None:
            driver.kill()
    assert 1 <= len(first) < 4
    # the renders the driver had in flight end with its job: no papermill or kernel lives on
    _wait_for(lambda: not _notebook_processes(cluster.root), 60, "the killed driver's notebooks to end")

    code, log = _sweep(spec_path, out, cluster)
    assert code == 0, log
    assert f"4 point(s), {len(first)} already in {out}, {4 - len(first)} to run" in log, log
    for point_id, data in first.items():  # finished points were kept, not run again
        assert (out / point_id / sweep.POINT_FILE).read_bytes() == data
        assert f"{point_id}: ok" not in log

    summary = json.loads((out / "report.json").read_text())
    assert summary["state"] == "finished" and summary["exit_code"] == 0
    assert summary["counts"]["ok"] == 4
    records = [json.loads(data) for data in _finished_points(out).values()]
    assert len(records) == 4 and all(r["status"] == "ok" for r in records)
    assert {r["node_id"] for r in records} == cluster.node_ids  # both nodes did work
    assert {(r["parameters"]["DECODING"], r["parameters"]["SEED"]) for r in records} == \
        {("greedy", 0), ("greedy", 1), ("card", 0), ("card", 1)}
    for r in records:
        folder = out / r["id"]
        headline = json.loads((folder / "01_quickstart.json").read_text())["headline"]
        assert r["headline"] == headline and headline["new_tokens"] >= 1
        assert (folder / "01_quickstart.html").stat().st_size > 0 and r["attempts"] == 1 and r["gpu_ids"] == []
    index = (out / "index.html").read_text()
    assert index.count('class="status ok">ok<') == 4
    assert "<th>point</th><th>parameters</th><th>node</th><th>GPUs</th><th>attempts</th>" in index
    for r in records:
        assert f'<a href="{r["id"]}/01_quickstart.html">' in index and r["node_id"][:12] in index
    assert "DECODING=card<br>SEED=1" in index


@pytest.mark.slow
def test_a_killed_worker_is_retried_and_a_failing_notebook_is_not(cluster, notebooks_dir, tmp_path):
    ready = tmp_path / "ready.json"
    spec_path = tmp_path / "spec.json"
    spec_path.write_text(json.dumps({"notebooks": ["01", "02"], "notebooks_dir": str(notebooks_dir), "device": "cpu",
                                     "params": {"01_signal": {"READY": str(ready)}}, "max_retries": 1}))
    out = tmp_path / "out"
    driver = _sweep_cli(spec_path, out, cluster)
    try:
        pids = json.loads(_wait_for(lambda: ready.exists() and ready.read_text(), 300, "the notebook's signal"))
        papermill = psutil.Process(pids["papermill"])
        worker = papermill.parent()
        assert worker.name().startswith("ray::") and "01_signal" in worker.name()  # the Ray task's process
        worker.kill()
        # the render it ran dies with it, kernel included, rather than finishing as an orphan
        _wait_for(lambda: not psutil.pid_exists(pids["papermill"]) and not psutil.pid_exists(pids["kernel"]), 30,
                  "the killed worker's papermill and kernel to end")
        log, _ = driver.communicate(timeout=600)
    finally:
        if driver.poll() is None:
            driver.kill()
    assert driver.returncode == 1, log  # 02_fails failed
    records = {r["name"]: r for r in (json.loads(d) for d in _finished_points(out).values())}
    signal_point, failed = records["01_signal"], records["02_fails"]
    assert signal_point["status"] == "ok" and signal_point["headline"] == {"first_attempt": False}
    assert signal_point["attempts"] == 2 and len(signal_point["attempt_history"]) == 2
    assert signal_point["attempt_history"][0]["pid"] == worker.pid
    assert f"attempt 1 on node {signal_point['attempt_history'][0]['node_id'][:12]}" in signal_point["notes"][0]
    assert "worker or node died" in signal_point["notes"][0]
    assert failed["status"] == "failed" and failed["attempts"] == 1
    assert failed["error"]["name"] == "RuntimeError" and failed["error"]["message"] == "failed on purpose with X=0"
    index = (out / "index.html").read_text()
    assert re.search(r"01_signal</a></td>.*?<td>2</td><td class=\"status ok\">", index, re.S)
    assert "failed on purpose with X=0" in index and "ended without a result" in index

    # the same SPEC again: nothing is missing, nothing runs; --retry-failed runs the failed one only
    code, log = _sweep(spec_path, out, cluster)
    assert code == 1 and "2 point(s), 2 already in" in log and ", 0 to run" in log, log
    code, log = _sweep(spec_path, out, cluster, "--retry-failed")
    assert code == 1 and "2 point(s), 1 already in" in log and ", 1 to run" in log, log
    assert f"{failed['id']}: FAILED" in log and "01_signal" not in log


@pytest.mark.slow
def test_sharded_humaneval_equals_one_process(cluster, demo_loaded, tmp_path):
    decode = {"max_new_tokens": 32}
    single = humaneval.run(demo_loaded, DecodeConfig.greedy(**decode), limit=8, out=tmp_path / "single")

    spec_path = tmp_path / "spec.json"
    spec_path.write_text(json.dumps({"device": "cpu", "humaneval": {"limit": 8, "shards": 2, "decode": decode}}))
    out = tmp_path / "out"
    # --ray auto finds the cluster through RAY_ADDRESS
    code, log = _sweep(spec_path, out, cluster, address="auto", env={**cluster.env, "RAY_ADDRESS": cluster.address})
    assert code == 0 and "2 point(s), 0 already in" in log and ", 2 to run" in log, log
    summary = json.loads((out / "report.json").read_text())
    merged = summary["notebooks"][-1]
    assert merged["name"] == "humaneval (merged)" and merged["status"] == "ok"
    run_folder = out / merged["columns"]["point"]

    def lines(folder):
        return [json.loads(x) for x in (folder / humaneval.GENERATIONS_FILE).read_text().splitlines()]

    keys = ("task_id", "answer", "completion", "stop_reason", "new_tokens", "config")
    together, alone = lines(run_folder), lines(tmp_path / "single")
    assert [line["task_id"] for line in together] == [f"HumanEval/{i}" for i in range(8)]
    assert [{k: x[k] for k in keys} for x in together] == [{k: x[k] for k in keys} for x in alone]
    a = json.loads((run_folder / humaneval.SUMMARY_FILE).read_text())
    b = json.loads((tmp_path / "single" / humaneval.SUMMARY_FILE).read_text())
    for key in ("pass_at_1", "n_tasks", "counts", "stop_reasons", "config", "limit", "kernel", "checkpoint_hash"):
        assert a[key] == b[key], key
    assert [(r["task_id"], r["status"]) for r in a["report"]["results"]] == \
        [(r.task_id, r.status) for r in single.results]
    assert merged["headline"]["pass_at_1"] == round(b["pass_at_1"], 4)
    shard_records = [json.loads(d) for d in _finished_points(run_folder / "shards").values()]
    assert sorted(r["headline"]["problems"] for r in shard_records) == [4, 4]

    code, log = _sweep(spec_path, out, cluster)  # all there: nothing runs, the merged result stands
    assert code == 0 and "2 point(s), 2 already in" in log and ", 0 to run" in log, log


@pytest.mark.slow
def test_bad_input_on_a_cluster_is_refused_before_anything_runs(cluster, notebooks_dir, tmp_path):
    out = tmp_path / "out"
    for fields, message in [({"device": "cuda"}, r"asks for 1 GPU\(s\) and 1 CPU\(s\), more than any node .*"
                                                  r"set device: cpu"),
                            ({"device": "cpu", "cpus": 3}, r"asks for 3 CPU\(s\), more than any node")]:
        spec_path = tmp_path / "spec.json"
        spec_path.write_text(json.dumps({"notebooks": ["02"], "notebooks_dir": str(notebooks_dir), **fields}))
        code, log = _sweep(spec_path, out, cluster)
        assert code == 1 and re.search(rf"^error: point 02_fails-\w+ .*{message}", log, re.M), log
    assert not out.exists()
    # one writer per folder, as for reports: a second driver into the same DIR is refused
    spec_path.write_text(json.dumps({"notebooks": ["02"], "notebooks_dir": str(notebooks_dir), "device": "cpu"}))
    out.mkdir()
    with folder_lock(out):
        code, log = _sweep(spec_path, out, cluster)
    held = rf"^error: out={re.escape(str(out))}: another report runner is writing there: pid {os.getpid()}"
    assert code == 1 and re.search(held, log, re.M), log
    assert not _finished_points(out)
    # a bad parameter is refused before Ray is even joined
    with pytest.raises(ConfigError, match="unknown parameter NOPE"):
        sweep.run_sweep(spec(notebooks_dir, params={"NOPE": 1}), out, f"{HOST}:1", progress=False)
