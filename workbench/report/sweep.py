"""`python -m workbench sweep SPEC --out DIR`: a grid of notebook renders, and HumanEval in shards, on Ray.

A sweep hands its work to a Ray cluster (the `cluster` extra: `pip install -e '.[cluster]'`)
instead of running it one notebook after another. Each *point*, one notebook with one set of
parameters, is one Ray task that renders the notebook with the report runner's `run_notebook` in
a temporary folder of whichever node Ray picked; a HumanEval run is split into shards of problems,
each one task. A task asks Ray for `gpus` GPUs when its device is CUDA (Ray then shows it only
those) and for `cpus` CPUs. Everything a task produced comes back to the driver through Ray, so
the nodes share no filesystem; the driver writes each point as it arrives:

    DIR/<point>/                  one finished point: renamed into place whole, never half-written
        point.json                status, parameters, node, GPU ids, attempts, duration, headline
        <notebook>.ipynb/.html/.json/.log   and whatever else the notebook wrote
    DIR/humaneval-<id>/shards/<k>-of-<n>/   a finished shard: point.json and its generations.jsonl
    DIR/humaneval-<id>/generations.jsonl    the shards' lines merged in task order, then scored
    DIR/humaneval-<id>/humaneval.json       as `workbench.humaneval.run` writes it in one process
    DIR/index.html, DIR/report.json         the report runner's index, with the sweep's columns

A point's folder name is a hash of everything that defines it (notebook and every parameter, or
the HumanEval config and shard), so running the same SPEC into the same DIR again schedules only
the points that have no folder yet. A notebook that fails is a result (status failed) and is not
run again unless `--retry-failed` says so. A task whose worker process or node dies is retried
by Ray, at most `max_retries` times; the index shows every attempt, and a point that died on every
attempt is "lost" and has no folder, so the next run schedules it again.

This module is the driver and the command line; `sweep_spec.py` reads and checks the SPEC and
expands its points, `sweep_cluster.py` joins the cluster and holds the tasks that run on it.

SPEC (YAML, or JSON when its name ends in .json):

    model: demo                  # or a list; "demo", or a checkpoint folder at that path on every node
    kernel: auto                 # or a list of GPTQ kernels
    device: cpu                  # cpu, cuda or auto (cuda when the cluster has a GPU), or a list
    notebooks: [01_quickstart]   # by name or number, from notebooks_dir (default: the repository's)
    params:                      # fixed parameters, for every notebook that declares them ...
      MAX_NEW_TOKENS: 32
      01_quickstart: {WARMUP: 0} # ... or in one notebook's own section
    grid:                        # lists of values: every combination is one point
      DECODING: [greedy, card]
      SEED: [0, 1]
    humaneval:                   # optional: one HumanEval run, split into shards of problems
      limit: 8                   # the first 8 problems; leave out for all 164
      shards: 2
      decode: {max_new_tokens: 128}   # DecodeConfig fields over DecodeConfig.greedy()
    gpus: 1                      # GPUs per CUDA point (HumanEval shards too)
    cpus: 1                      # CPUs per point
    timeout_s: 900               # wall clock per notebook render
    max_retries: 2               # Ray's retries of a task whose worker or node died

A name in `params` or `grid` must be declared in the parameters cell of at least one listed
notebook (papermill reads that cell) and applies to the notebooks that declare it; MODEL, KERNEL,
DEVICE and OUTPUT_DIR come from model/kernel/device and the sweep. Everything is checked before
Ray is started or joined; what depends on the cluster (a point asking for more GPUs or CPUs than
any node has) is checked after joining and before anything is scheduled.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from .. import humaneval
from ..cache import atomic_write_json, atomic_write_text, building_dir
from ..errors import ConfigError, WorkbenchError
from .html import render_index
from .lock import folder_lock
from .runner import BANNERS, describe_model
from .sweep_cluster import (
    DEFAULT_CONNECT_TIMEOUT_S,
    AttemptLog,
    check_fits,
    cluster_nodes,
    cluster_text,
    connect,
    error_dict,
    generate_shard,
    import_ray,
    now,
    render_point,
)
from .sweep_spec import (
    DEFAULT_MAX_RETRIES,
    Point,
    SweepPlan,
    SweepSpec,
    load_spec,
    plan_sweep,
    problems_text,
    shown_text,
    task_number,
)

POINT_FILE = "point.json"
STATUSES = ("ok", "failed", "timeout", "lost")  # lost: its worker or node died on every attempt
POLL_S = 0.5  # how often the driver looks for finished tasks and updates the progress display


# --- the driver ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class SweepResult:
    """What one run of the driver did, and what DIR holds for the SPEC now."""

    out: Path
    records: Mapping[str, dict]  # point id -> its point.json content (or its lost record)
    scheduled: tuple[str, ...]  # the point ids this run handed to Ray
    reused: tuple[str, ...]  # the point ids found finished in DIR
    humaneval: tuple[dict, ...]  # each HumanEval run's merged row
    exit_code: int
    index_html: Path


def run_sweep(spec: SweepSpec, out: str | os.PathLike, address: str = "auto", *, retry_failed: bool = False,
              connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S, progress: bool = True,
              spec_path: str | None = None) -> SweepResult:
    """Run every point of `spec` that `out` lacks on the Ray cluster at `address` (module docstring)."""
    plan = plan_sweep(spec)  # everything that can be checked without a cluster, before joining one
    out = Path(out).expanduser().absolute()
    if out.resolve() in {p.parent.resolve() for p in plan.notebooks.values()}:
        raise ConfigError(f"--out {out}: is the notebooks' folder; write the sweep to another folder")
    ray = import_ray()
    joined = connect(address, connect_timeout_s)
    try:
        nodes = cluster_nodes()
        points = plan.points(auto_device="cuda" if any(n.gpus for n in nodes) else "cpu")
        check_fits(points, nodes)
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ConfigError(f"--out {out}: cannot create the sweep's folder there ({e.strerror or e})") from None
        with folder_lock(out):  # the report runner's: one writer per folder, a dead one's lock taken over
            sweep = _Sweep(plan, points, out, f"{cluster_text(nodes)}; {joined}", spec_path, retry_failed)
            return sweep.run(ray, progress)
    finally:
        ray.shutdown()


class _Sweep:
    """One run of the driver: what DIR holds, what runs, and the index written as results arrive."""

    def __init__(self, plan: SweepPlan, points: list[Point], out: Path, cluster: str, spec_path: str | None,
                 retry_failed: bool) -> None:
        self.plan, self.points, self.out, self.cluster, self.spec_path = plan, points, out, cluster, spec_path
        self.started_at, self.t0 = now(), time.perf_counter()
        self.records: dict[str, dict] = {}  # finished points: their point.json
        for p in points:
            record = _read_json(p.folder(out) / POINT_FILE)
            if isinstance(record, dict) and (record.get("status") == "ok" or not retry_failed):
                self.records[p.id] = record
        self.reused = tuple(self.records)
        self.todo = [p for p in points if p.id not in self.records]
        self.starts: dict[str, list[dict]] = {}  # the attempt log's latest snapshot
        self.humaneval_rows: dict[str, dict] = {}  # HumanEval run id -> its merged row

    def run(self, ray, progress: bool) -> SweepResult:
        print(f"sweep: {len(self.points)} point(s), {len(self.reused)} already in {self.out}, {len(self.todo)} to run "
              f"on {self.cluster}", flush=True)
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        # on the driver's own node: whatever other node dies, the count of attempts survives
        here = NodeAffinitySchedulingStrategy(node_id=ray.get_runtime_context().get_node_id(), soft=False)
        attempts = ray.remote(num_cpus=0, scheduling_strategy=here)(AttemptLog).remote()
        tasks = {"notebook": ray.remote(render_point),
                 "humaneval-shard": ray.remote(max_calls=1)(generate_shard)}  # a GPU model leaves with its worker
        refs = {self._submit(tasks[p.kind], p, attempts): p for p in self.todo}
        for run in dict.fromkeys(p.run for p in self.points if p.run):
            self._merge_humaneval(run, force=False)
        self._write("running" if refs else "finished")
        bar = _progress_bar(len(self.todo), progress)
        try:
            while refs:
                ready, _ = ray.wait(list(refs), num_returns=1, timeout=POLL_S)
                starts = ray.get(attempts.snapshot.remote())
                if not ready and starts == self.starts:
                    continue  # nothing new to show
                self.starts = starts
                for ref in ready:
                    point = refs.pop(ref)
                    self._finish(point, self._outcome(ray, ref, point))
                    bar.update(1)
                    bar.write(self._line(point))
                    if point.run:
                        self._merge_humaneval(point.run, force=True)
                bar.set_postfix_str(self._counts_text(), refresh=True)
                self._write("running" if refs else "finished")
        except KeyboardInterrupt:
            self._write("interrupted")
            raise
        finally:
            bar.close()
        counts = self._counts()
        print(f"sweep: {', '.join(f'{n} {s}' for s, n in counts.items() if n)} in "
              f"{time.perf_counter() - self.t0:.1f} s; open {self.out / 'index.html'}", flush=True)
        failed = any(r["status"] != "ok" for r in [*self.records.values(), *self.humaneval_rows.values()])
        return SweepResult(out=self.out, records=dict(self.records), scheduled=tuple(p.id for p in self.todo),
                           reused=self.reused, humaneval=tuple(self.humaneval_rows.values()),
                           exit_code=1 if failed else 0, index_html=self.out / "index.html")

    # --- one task

    def _submit(self, task, point: Point, attempts):
        job = {"id": point.id, "name": point.name, "parameters": dict(point.parameters)}
        if point.kind == "notebook":  # the notebook travels with the task: the nodes need no copy of it
            job.update(notebook_bytes=point.notebook.read_bytes(), timeout_s=self.plan.spec.timeout_s)
        return task.options(num_cpus=point.cpus, num_gpus=point.gpus, max_retries=self.plan.spec.max_retries,
                            retry_exceptions=False,  # a failure in the work is a result, not a fault to retry
                            scheduling_strategy="SPREAD", name=f"sweep {point.id}").remote(job, attempts)

    def _outcome(self, ray, ref, point: Point) -> dict:
        """The task's result; a failure inside it as status failed; a worker or node that died on
        every attempt as status lost."""
        try:
            return ray.get(ref)
        except ray.exceptions.RayTaskError as e:
            cause = e.cause if isinstance(getattr(e, "cause", None), BaseException) else e
            return {"status": "failed", "error": error_dict(type(cause).__name__, str(cause).strip()[-2000:]),
                    "files": {}, "notes": []}
        except ray.exceptions.RayError as e:
            message = f"no attempt of {self.plan.spec.max_retries + 1} finished: {str(e).strip()[:1000]}"
            return {"status": "lost", "error": error_dict(type(e).__name__, message), "files": {}, "notes": []}

    def _finish(self, point: Point, result: dict) -> None:
        """Write a finished point into DIR, whole or not at all; a lost one is only remembered."""
        history = self.starts.get(point.id, [])
        record = {"id": point.id, "kind": point.kind, "name": point.name,
                  "notebook": str(point.notebook) if point.notebook else None,
                  "parameters": dict(point.parameters), "shown": dict(point.shown), "status": result["status"],
                  "duration_s": result.get("duration_s"), "headline": result.get("headline") or {},
                  "error": result.get("error"),
                  "notes": list(result.get("notes") or []) + _retry_notes(history, result),
                  "node_id": result.get("node_id"), "ip": result.get("ip"), "hostname": result.get("hostname"),
                  "pid": result.get("pid"), "gpu_ids": result.get("gpu_ids"),
                  "attempts": result.get("attempt") or len(history) or None, "attempt_history": history,
                  "finished_at": now(), "files": sorted(result.get("files") or {})}
        self.records[point.id] = record
        if record["status"] == "lost":
            return
        folder = point.folder(self.out)
        if folder.exists():  # --retry-failed: the new result replaces the old one
            shutil.rmtree(folder)
        with building_dir(folder) as tmp:
            for name, data in (result.get("files") or {}).items():
                path = _inside(tmp, name)
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)
            atomic_write_json(tmp / POINT_FILE, record)

    def _merge_humaneval(self, run: str, force: bool) -> None:
        """Once every shard of `run` is in, merge their generations in task order and score them as one run."""
        shards = [p for p in self.points if p.run == run]
        he, run_folder = self.plan.spec.humaneval, self.out / run
        records = [self.records.get(p.id) for p in shards]
        shown = {k: v for k, v in shards[0].shown.items() if k.isupper()}  # MODEL, KERNEL, DEVICE
        task_ids = sorted((t for p in shards for t in p.task_ids), key=task_number)
        row = {"id": run, "shown": {**shown, "shards": len(shards), "problems": problems_text(task_ids)}}
        bad = [(p, r) for p, r in zip(shards, records) if r is not None and r["status"] != "ok"]
        if bad:
            message = f"shard {bad[0][0].shard[0] + 1} of {len(shards)} {bad[0][1]['status']}; nothing merged"
            self.humaneval_rows[run] = {**row, "status": "failed", "error": error_dict("ShardFailed", message)}
            return
        if any(r is None for r in records):
            self.humaneval_rows[run] = {**row, "status": "pending"}
            return
        if force or not (run_folder / humaneval.SUMMARY_FILE).exists():
            lines = []
            for p in shards:
                text = (p.folder(self.out) / humaneval.GENERATIONS_FILE).read_text(encoding="utf-8")
                lines += [json.loads(x) for x in text.splitlines() if x.strip()]
            lines.sort(key=lambda line: task_number(line["task_id"]))
            atomic_write_text(run_folder / humaneval.GENERATIONS_FILE, "".join(json.dumps(x) + "\n" for x in lines))
            try:  # on the driver: the same scoring, in the same sandbox, as one process's run
                humaneval.score_answers(run_folder, he.limit, timeout_s=he.timeout_s)
            except WorkbenchError as e:
                self.humaneval_rows[run] = {**row, "status": "failed", "error": error_dict(type(e).__name__, str(e))}
                return
        summary = _read_json(run_folder / humaneval.SUMMARY_FILE) or {}
        kernels = sorted({str(r["headline"].get("kernel")) for r in records})
        notes = [f"{len(shards)} shards merged into {humaneval.GENERATIONS_FILE}, scored here"]
        if len(kernels) > 1:
            notes.append(f"the shards ran different kernels ({', '.join(kernels)}): not one run's result")
        self.humaneval_rows[run] = {**row, "status": "ok", "summary": summary, "notes": notes, "headline": {
            "pass_at_1": round(summary.get("pass_at_1", float("nan")), 4), "n_tasks": summary.get("n_tasks"),
            **{f"n_{k}": v for k, v in (summary.get("counts") or {}).items()}, "kernel": ", ".join(kernels)}}

    # --- what is shown

    def _status(self, point: Point) -> str:
        if point.id in self.records:
            return self.records[point.id]["status"]
        return "running" if self.starts.get(point.id) else "pending"

    def _counts(self) -> dict[str, int]:
        counts = dict.fromkeys((*STATUSES, "running", "pending"), 0)
        for p in self.points:
            counts[self._status(p)] += 1
        return counts

    def _counts_text(self) -> str:
        c = self._counts()
        return f"done {c['ok']}, running {c['running']}, failed {c['failed'] + c['timeout'] + c['lost']}"

    def _line(self, point: Point) -> str:
        r = self.records[point.id]
        detail = f"{r['error']['name']}: {r['error']['message'].splitlines()[0][:200]}" if r.get("error") else \
            ", ".join(f"{k}={v}" for k, v in list(r["headline"].items())[:4])
        where = f"node {r['node_id'][:8]}" if r.get("node_id") else "no node"
        shown = "ok" if r["status"] == "ok" else r["status"].upper()
        return (f"{point.id}: {shown} in {r.get('duration_s') or 0:.1f} s on {where}, attempt {r.get('attempts')}"
                f"{' - ' + detail if detail else ''}")

    def _write(self, state: str) -> None:
        summary = self._summary(state)
        atomic_write_json(self.out / "report.json", summary)
        atomic_write_text(self.out / "index.html", render_index(summary))

    def _summary(self, state: str) -> dict:
        """report.json: the report runner's summary, with the sweep's rows, columns and facts."""
        spec = self.plan.spec
        models = [describe_model(m) for m in spec.model]
        kinds = {m["kind"] for m in models}
        model = models[0] if len(models) == 1 else {"given": ", ".join(spec.model), "folder": None,
                                                      "kind": kinds.pop() if len(kinds) == 1 else "mixed"}
        rows = []
        for i, p in enumerate(self.points):
            rows.append(self._row(p))
            last_shard = p.run and (i + 1 == len(self.points) or self.points[i + 1].run != p.run)
            if last_shard and p.run in self.humaneval_rows:
                rows.append(self._humaneval_index_row(self.humaneval_rows[p.run]))
        counts = self._counts()
        failed = any(r["status"] != "ok" for r in [*self.records.values(), *self.humaneval_rows.values()])
        return {"title": "CodeFuse Workbench sweep", "state": state, "started_at": self.started_at,
                "duration_s": round(time.perf_counter() - self.t0, 3), "model": model,
                "banner": BANNERS.get(model["kind"]),
                "config": {"model": ", ".join(spec.model), "kernel": ", ".join(spec.kernel),
                           "device": ", ".join(spec.device), "jupyter_kernel": "python3",
                           "timeout_s": spec.timeout_s, "spec": self.spec_path, "out": str(self.out),
                           "max_retries": spec.max_retries, "gpus": spec.gpus, "cpus": spec.cpus},
                "counts": counts, "exit_code": (1 if failed else 0) if state == "finished" else None,
                "environment": self._environment(), "columns": ["point", "parameters", "node", "GPUs", "attempts"],
                "meta_extra": self._meta_rows(), "notebooks": rows}

    def _row(self, point: Point) -> dict:
        record = self.records.get(point.id) or {}
        status = self._status(point)
        starts = self.starts.get(point.id) or record.get("attempt_history") or []
        last = starts[-1] if starts else {}
        files = record.get("files", []) if status != "lost" else []
        prefix = point.id + "/"
        links = {kind: prefix + f"{point.name}.{kind}" if f"{point.name}.{kind}" in files else None
                 for kind in ("html", "ipynb", "json", "log")}
        if point.kind == "humaneval-shard" and status != "lost" and record:  # its record, and its answers
            links.update(json=prefix + POINT_FILE, log=prefix + humaneval.GENERATIONS_FILE
                         if humaneval.GENERATIONS_FILE in files else None)
        name = point.name if point.kind == "notebook" else f"humaneval shard {point.shard[0] + 1}/{point.shard[1]}"
        node_id = record.get("node_id") or last.get("node_id")
        return {"name": name, "status": status, "duration_s": record.get("duration_s"),
                "headline": record.get("headline") or {}, "error": record.get("error"),
                "notes": record.get("notes") or [], **links,
                "columns": {"point": point.id, "parameters": shown_text(point.shown),
                            "node": f"{node_id[:12]}\n{record.get('ip') or last.get('ip')}" if node_id else "",
                            "GPUs": ", ".join(record.get("gpu_ids") or last.get("gpu_ids") or []) or "none",
                            "attempts": str(record.get("attempts") or len(starts) or "")}}

    def _humaneval_index_row(self, row: dict) -> dict:
        ok = row["status"] == "ok"
        return {"name": "humaneval (merged)", "status": row["status"], "duration_s": None,
                "headline": row.get("headline") or {}, "error": row.get("error"), "notes": row.get("notes") or [],
                "json": f"{row['id']}/{humaneval.SUMMARY_FILE}" if ok else None,
                "log": f"{row['id']}/{humaneval.GENERATIONS_FILE}" if ok else None,
                "columns": {"point": row["id"], "parameters": shown_text(row["shown"]), "node": "driver (scoring)",
                            "GPUs": "", "attempts": ""}}

    def _environment(self) -> dict:
        env = {"python": sys.version.split()[0], "kernel_in_runner_env": False,
               "kernel_python": "each node's own python3 Jupyter kernel"}
        for dist in ("torch", "transformers", "gptqmodel", "ray"):
            try:
                env[dist] = metadata.version(dist)
            except metadata.PackageNotFoundError:
                env[dist] = None
        env["device_name"] = f"{self.cluster} (Ray {env['ray']})"  # the index's "hardware" row
        return env

    def _meta_rows(self) -> list[list[str]]:
        spec = self.plan.spec
        rows = [["this run", f"{len(self.todo)} point(s) scheduled, {len(self.reused)} found finished in this folder"],
                ["retries", f"at most {spec.max_retries} per task whose worker or node dies; "
                            "a notebook that fails is not retried"]]
        if self.spec_path:
            rows.insert(0, ["spec", self.spec_path])
        if spec.params:
            rows.append(["fixed parameters", json.dumps(dict(spec.params))])
        if spec.grid:
            rows.append(["grid", json.dumps(dict(spec.grid))])
        if spec.humaneval:
            he = spec.humaneval
            rows.append(["humaneval", f"first {he.limit or humaneval.N_PROBLEMS} problems in {he.shards} shards, "
                                      f"decode {json.dumps(he.decode_config().to_dict())}"])
        return rows


def _retry_notes(history: Sequence[dict], result: dict) -> list[str]:
    """One note per attempt that ended without a result (Ray retried it)."""
    finished = (result.get("node_id"), result.get("pid"))
    notes = []
    for i, start in enumerate(history, 1):
        if (start.get("node_id"), start.get("pid")) != finished:
            notes.append(f"attempt {i} on node {start['node_id'][:12]} ({start['ip']}, pid {start['pid']}) ended "
                         "without a result: its worker or node died")
    return notes


def _inside(folder: Path, name: str) -> Path:
    """folder/name, refusing a name that would leave the folder."""
    path = (folder / name).resolve()
    if folder.resolve() not in path.parents:
        raise WorkbenchError(f"a task returned a file named {name!r}, outside its point's folder")
    return path


def _read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _progress_bar(total: int, enabled: bool):
    from tqdm.auto import tqdm

    # disable=None: no bar where stderr is not a terminal (a log file, CI); the lines per point remain
    return tqdm(total=total, desc="sweep", unit="point", disable=None if enabled else True, dynamic_ncols=True,
                file=sys.stderr)


# --- the command line ---------------------------------------------------------------------------

def main(argv: Sequence[str] | None = None) -> int:
    """`python -m workbench sweep SPEC --out DIR`: run a SPEC's points on Ray; exit 1 if any failed."""
    parser = argparse.ArgumentParser(
        prog="workbench sweep", description=main.__doc__, epilog=__doc__[__doc__.index("SPEC (YAML"):],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("spec", metavar="SPEC", help="the sweep, YAML or JSON (below)")
    parser.add_argument("--out", required=True, metavar="DIR", help="where the points and the index go")
    parser.add_argument("--ray", default="auto", metavar="auto|local|ADDRESS",
                        help="auto (default): the cluster RAY_ADDRESS or `ray start` on this machine names; "
                             "local: start Ray here with this machine's GPUs; HOST:PORT: join that cluster's head")
    parser.add_argument("--max-retries", type=int, metavar="N",
                        help=f"retries of a task whose worker or node dies (default: the SPEC's, else "
                             f"{DEFAULT_MAX_RETRIES})")
    parser.add_argument("--retry-failed", action="store_true", help="run failed points again (default: keep them)")
    parser.add_argument("--notebooks", metavar="DIR", help="where the notebooks are (default: the SPEC's "
                                                           "notebooks_dir, else the repository's)")
    parser.add_argument("--connect-timeout", type=float, default=DEFAULT_CONNECT_TIMEOUT_S, metavar="S",
                        help=f"how long to wait for an ADDRESS to answer (default {DEFAULT_CONNECT_TIMEOUT_S:g})")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar, only a line per point")
    args = parser.parse_args(argv)
    spec = load_spec(args.spec)
    changes = {}
    if args.max_retries is not None:
        changes["max_retries"] = args.max_retries
    if args.notebooks:
        changes["notebooks_dir"] = Path(args.notebooks)
    if changes:
        spec = dataclasses.replace(spec, **changes)
    result = run_sweep(spec, args.out, args.ray, retry_failed=args.retry_failed,
                       connect_timeout_s=args.connect_timeout, progress=not args.no_progress,
                       spec_path=str(Path(args.spec).absolute()))
    return result.exit_code


if __name__ == "__main__":
    sys.exit(main())
