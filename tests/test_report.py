"""The report runner: tiny notebooks built on the fly, one that works, one that fails on purpose,
one that sleeps past its time limit; plus the config, params-file and index rules without a kernel."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import psutil
import pytest
from notebook_files import write_notebook

from workbench.__main__ import main as workbench_main
from workbench.errors import ConfigError
from workbench.report import html, runner
from workbench.report.lock import LOCK_NAME, Holder, folder_lock
from workbench.report.params import default_notebooks_dir, find_notebooks, load_params
from workbench.report.runner import NotebookRun, ReportConfig

REPO_ROOT = Path(__file__).resolve().parents[1]

PARAMETERS_CELL = 'MODEL = "demo"\nKERNEL = "auto"\nDEVICE = "auto"\nOUTPUT_DIR = "."\nGREETING = "default"\nEXTRA = 0'

OK_BODY = [
    'print("hello from the ok notebook")',
    "import json, os, sys\n"
    "headline = {'answer': 42, 'speed_tok_s': 123.456, 'kernel': KERNEL, 'greeting': GREETING,\n"
    "            'extra': EXTRA, 'python': sys.executable, 'cwd': os.getcwd()}\n"
    "with open(os.path.join(OUTPUT_DIR, '01_ok.json'), 'w') as f:\n"
    "    json.dump({'headline': headline, 'details': [1, 2, 3]}, f)",
]
FAILS_BODY = ['print("before the failure")', 'x = 1\nraise RuntimeError("failed on purpose")']
SLEEPS_BODY = ["import os, time\n"
               "with open(os.path.join(OUTPUT_DIR, 'kernel.pid'), 'w') as f:\n"
               "    f.write(str(os.getpid()))\n"
               "time.sleep(120)"]




def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.fixture
def notebooks_dir(tmp_path) -> Path:
    folder = tmp_path / "notebooks"
    write_notebook(folder / "01_ok.ipynb", PARAMETERS_CELL, OK_BODY)
    write_notebook(folder / "02_fails.ipynb", PARAMETERS_CELL, FAILS_BODY)
    return folder


# --- one real run, shared by the tests that read its outputs ------------------------------------

@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    folder = root / "notebooks"
    write_notebook(folder / "01_ok.ipynb", PARAMETERS_CELL, OK_BODY)
    write_notebook(folder / "02_fails.ipynb", PARAMETERS_CELL, FAILS_BODY)
    params = root / "params.yaml"
    params.write_text("GREETING: from the params file\n01_ok:\n  EXTRA: 7\n")
    out = root / "out"
    started = time.perf_counter()
    code = runner.main(["--notebooks", str(folder), "--out", str(out), "--params", str(params),
                        "--kernel", "torch", "--device", "cpu", "--timeout", "120"])
    return {"out": out, "exit_code": code, "seconds": time.perf_counter() - started,
            "report": json.loads((out / "report.json").read_text()),
            "index": (out / "index.html").read_text()}


@pytest.mark.slow
def test_a_failed_notebook_makes_the_exit_code_non_zero(suite):
    assert suite["exit_code"] == 1
    assert suite["report"]["exit_code"] == 1


@pytest.mark.slow
def test_index_lists_every_notebook_with_status_headline_and_error(suite):
    index = suite["index"]
    rows = {}
    for row in re.findall(r"<tr><td>.*?</tr>", index, re.S):
        name = re.search(r">(\d\d_\w+)<", row).group(1)
        rows[name] = row
    assert set(rows) == {"01_ok", "02_fails"}
    assert 'class="status ok">ok<' in rows["01_ok"]
    assert 'class="status failed">failed<' in rows["02_fails"]
    # the ok one's headline numbers, formatted; the failed one's exception and failing cell
    assert "<b>answer</b> 42" in rows["01_ok"] and "<b>speed_tok_s</b> 123.5" in rows["01_ok"]
    assert "RuntimeError: failed on purpose" in rows["02_fails"]
    assert "raise RuntimeError(&quot;failed on purpose&quot;)" in rows["02_fails"]
    assert index.index("01_ok") < index.index("02_fails")
    assert "DEMO MODEL" in index.split("<h1>")[0]  # the banner comes first
    assert "torch" in index and "cpu" in index
    # self-contained: no scripts, nothing fetched
    assert "<script" not in index and not re.search(r'(src|href)="https?:', index)


@pytest.mark.slow
def test_report_json_records_each_run(suite):
    data = suite["report"]
    assert data["state"] == "finished"
    assert data["counts"] == {"ok": 1, "failed": 1, "timeout": 0}
    assert data["model"]["kind"] == "demo" and data["banner"].startswith("DEMO MODEL")
    assert data["config"]["kernel"] == "torch" and data["config"]["device"] == "cpu"
    assert data["environment"]["jupyter_kernel_python"] == sys.executable
    ok, failed = data["notebooks"]
    assert (ok["name"], ok["status"], failed["name"], failed["status"]) == ("01_ok", "ok", "02_fails", "failed")
    assert ok["headline"]["answer"] == 42 and ok["error"] is None
    assert ok["duration_s"] > 0 and failed["duration_s"] > 0
    assert (ok["html"], ok["ipynb"], ok["json"]) == ("01_ok.html", "01_ok.ipynb", "01_ok.json")
    assert failed["json"] is None and failed["headline"] == {}
    assert failed["error"]["name"] == "RuntimeError"
    assert failed["error"]["message"] == "failed on purpose"
    assert "raise RuntimeError" in failed["error"]["source_head"]
    assert failed["error"]["execution_count"] is not None


@pytest.mark.slow
def test_parameters_working_folder_and_interpreter_reach_the_notebook(suite):
    headline = suite["report"]["notebooks"][0]["headline"]
    assert headline["greeting"] == "from the params file"  # global
    assert headline["extra"] == 7  # the notebook's own section
    assert headline["kernel"] == "torch"  # from --kernel
    assert Path(headline["cwd"]).resolve() == suite["out"].resolve()
    assert headline["python"] == sys.executable  # the kernel runs this very environment


@pytest.mark.slow
def test_each_notebook_is_written_executed_and_rendered(suite):
    out = suite["out"]
    for name in ("01_ok", "02_fails"):
        assert (out / f"{name}.ipynb").is_file() and (out / f"{name}.log").is_file()
    ok_html = (out / "01_ok.html").read_text()
    failed_html = (out / "02_fails.html").read_text()
    assert "hello from the ok notebook" in ok_html
    assert "before the failure" in failed_html and "failed on purpose" in failed_html
    for page in (ok_html, failed_html):  # renders offline: no CDN scripts
        assert not re.search(r'<script[^>]+src="https?:', page)
    executed = nbformat.read(out / "01_ok.ipynb", as_version=4)
    assert any("# Parameters" in cell.source for cell in executed.cells)


# --- the wall-clock limit -------------------------------------------------------------------------

@pytest.mark.slow
def test_a_notebook_past_its_time_limit_ends_as_timeout_with_its_kernel(tmp_path):
    nb = write_notebook(tmp_path / "notebooks" / "01_sleeps.ipynb", PARAMETERS_CELL, SLEEPS_BODY)
    config = ReportConfig(notebooks=(nb,), out=tmp_path / "out", timeout_s=5)
    started = time.perf_counter()
    run = runner.run_notebook(config, nb)
    assert time.perf_counter() - started < 5 + runner.KILL_WAIT_S + 5
    assert run.status == "timeout" and run.error.name == "Timeout"
    assert "5 s" in run.error.message
    pid_file = config.out / "kernel.pid"
    if pid_file.exists():  # the kernel got as far as the sleeping cell: it must be gone now
        assert "kernel.pid" in run.error.source_head  # the cell that was running
        assert _gone(int(pid_file.read_text()))
        assert "stopped this notebook" in run.html_path.read_text()


def test_ending_a_run_also_ends_what_runs_in_a_session_of_its_own():
    # jupyter_client starts the kernel in its own session, as this grandchild is: a process-group
    # kill of papermill's process would leave it running
    grandchild = ("import subprocess, sys, time\n"
                  "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'],\n"
                  "                     start_new_session=True)\n"
                  "print(p.pid, flush=True)\n"
                  "time.sleep(60)")
    child = subprocess.Popen([sys.executable, "-c", grandchild], stdout=subprocess.PIPE, text=True)
    pid = int(child.stdout.readline())
    runner._end_process_tree(child)
    assert child.returncode is not None
    deadline = time.monotonic() + 5
    while not _gone(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _gone(pid)


# --- stopping the runner, and one runner per folder ----------------------------------------------

def _start_runner(notebooks: Path, out: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "workbench", "report", "--notebooks", str(notebooks),
                             "--out", str(out), "--timeout", "300"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _family_once_the_kernel_sleeps(proc: subprocess.Popen, out: Path) -> list[psutil.Process]:
    """The runner's papermill process and kernel, once the kernel runs the sleeping cell."""
    deadline = time.monotonic() + 120
    while not (out / "kernel.pid").exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read() if proc.poll() else "slow"
        time.sleep(0.2)
    family = psutil.Process(proc.pid).children(recursive=True)
    kernel = int((out / "kernel.pid").read_text())
    assert kernel in [p.pid for p in family]
    return family


def _all_gone(family: list[psutil.Process], within_s: float) -> bool:
    deadline = time.monotonic() + within_s
    while any(not _gone(p.pid) for p in family) and time.monotonic() < deadline:
        time.sleep(0.1)
    return all(_gone(p.pid) for p in family)


@pytest.mark.slow
def test_sigterm_ends_papermill_and_its_kernel_and_a_second_runner_is_refused(tmp_path):
    write_notebook(tmp_path / "notebooks" / "01_sleeps.ipynb", PARAMETERS_CELL, SLEEPS_BODY)
    out = tmp_path / "out"
    first = _start_runner(tmp_path / "notebooks", out)
    try:
        family = _family_once_the_kernel_sleeps(first, out)
        # a second runner into the same folder stops before it writes anything, naming the first
        config = ReportConfig(notebooks=(tmp_path / "notebooks" / "01_sleeps.ipynb",), out=out)
        with pytest.raises(ConfigError, match=f"another report runner is writing there: pid {first.pid} on "
                                              f"{re.escape(socket.gethostname())}"):
            runner.run_report(config)
        first.send_signal(signal.SIGTERM)
        assert first.wait(timeout=runner.KILL_WAIT_S + 20) == 128 + signal.SIGTERM
    finally:
        first.kill()
    assert _all_gone(family, within_s=5)
    data = json.loads((out / "report.json").read_text())
    assert data["state"] == "interrupted" and data["notebooks"][0]["status"] == "interrupted"
    assert html.REFRESH_TAG not in (out / "index.html").read_text()  # the page stops reloading
    assert not (out / LOCK_NAME).exists()


@pytest.mark.slow
def test_a_runner_killed_outright_takes_papermill_and_its_kernel_with_it(tmp_path):
    write_notebook(tmp_path / "notebooks" / "01_sleeps.ipynb", PARAMETERS_CELL, SLEEPS_BODY)
    out = tmp_path / "out"
    doomed = _start_runner(tmp_path / "notebooks", out)
    try:
        family = _family_once_the_kernel_sleeps(doomed, out)
        doomed.kill()  # SIGKILL: the runner can clean nothing up itself
        doomed.wait()
    finally:
        doomed.kill()
    # papermill gets SIGKILL from the kernel (parent-death signal); ipykernel polls its parent each second
    assert _all_gone(family, within_s=10)
    index = (out / "index.html").read_text()
    assert html.REFRESH_TAG in index  # what the killed runner left: "running", reloading
    messages = []
    with runner.hold_out(out, progress=messages.append):  # what the next runner does first
        pass
    assert f"left by pid {doomed.pid}" in messages[0] and "taking it over" in messages[0]
    assert "marked it interrupted" in messages[1]
    assert json.loads((out / "report.json").read_text())["state"] == "interrupted"
    assert html.REFRESH_TAG not in (out / "index.html").read_text()


def test_one_runner_per_folder_and_the_error_names_the_holder(notebooks_dir, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c",
                               "import sys, time; from pathlib import Path\n"
                               "from workbench.report.lock import folder_lock\n"
                               "with folder_lock(Path(sys.argv[1])):\n"
                               "    print('held', flush=True)\n"
                               "    time.sleep(60)", str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        config = ReportConfig(notebooks=find_notebooks(notebooks_dir), out=out)
        with pytest.raises(ConfigError, match=rf"out={re.escape(str(out))}: another report runner is writing "
                                              rf"there: pid {holder.pid} on {re.escape(socket.gethostname())}, "
                                              r"started \d{4}-.*\(-c "):
            runner.run_report(config)
        assert not (out / "report.json").exists()
    finally:
        holder.kill()
        holder.wait()
    with folder_lock(out) as previous:  # the holder died: its lock is taken over, its name read
        assert previous.pid == holder.pid
        assert json.loads((out / LOCK_NAME).read_text())["pid"] == os.getpid()
    assert not (out / LOCK_NAME).exists()


def test_a_report_left_running_is_marked_interrupted_at_the_next_start(notebooks_dir, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    config = ReportConfig(notebooks=find_notebooks(notebooks_dir), out=out)
    summary = runner._summary(config, {"given": "demo", "folder": None, "kind": "demo"}, {}, [],
                              "2024-01-01T00:00:00+00:00", 6.0, "running")
    (out / "report.json").write_text(json.dumps(summary))
    (out / "index.html").write_text(html.render_index(summary))
    (out / LOCK_NAME).write_text(json.dumps(Holder(pid=2**22 + 1, host=socket.gethostname(),
                                                   started_at="2024-01-01T00:00:00+00:00", command="gone").__dict__))
    (tmp_path / "typo.yaml").write_text("GREETNG: hi\n")
    # even a start that then refuses its parameters marks it
    with pytest.raises(ConfigError, match="GREETNG is a parameter of no notebook"):
        runner.main(["--notebooks", str(notebooks_dir), "--out", str(out), "--params", str(tmp_path / "typo.yaml")])
    data = json.loads((out / "report.json").read_text())
    assert data["state"] == "interrupted" and data["notebooks"][0]["status"] == "interrupted"
    assert "stopped before it finished" in data["note"]
    index = (out / "index.html").read_text()
    assert html.REFRESH_TAG not in index and 'class="status interrupted">interrupted<' in index
    assert "stopped before it finished" in index
    assert not (out / LOCK_NAME).exists()  # released


# --- without a kernel ---------------------------------------------------------------------------

def test_params_file_json_or_yaml(tmp_path):
    (tmp_path / "p.json").write_text('{"N": 3, "01_ok": {"N": 4}}')
    (tmp_path / "p.yaml").write_text("N: 3\n01_ok:\n  N: 4\n")
    assert load_params(tmp_path / "p.json") == load_params(tmp_path / "p.yaml") == {"N": 3, "01_ok": {"N": 4}}
    (tmp_path / "empty.yaml").write_text("")
    assert load_params(tmp_path / "empty.yaml") == {}
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_params(tmp_path / "list.yaml")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_params(tmp_path / "bad.json")
    with pytest.raises(ConfigError, match="cannot read"):
        load_params(tmp_path / "missing.yaml")


def test_parameters_merge_global_then_the_notebooks_section(notebooks_dir, tmp_path):
    config = ReportConfig(notebooks=find_notebooks(notebooks_dir), out=tmp_path / "out",
                          params={"EXTRA": 1, "GREETING": "all", "01_ok": {"EXTRA": 2}}, kernel="torch")
    assert config.parameters_for("01_ok") == {"MODEL": "demo", "KERNEL": "torch", "DEVICE": "auto",
                                              "OUTPUT_DIR": str((tmp_path / "out").absolute()),
                                              "EXTRA": 2, "GREETING": "all"}
    assert config.parameters_for("02_fails")["EXTRA"] == 1


def test_a_global_parameter_reaches_only_the_notebooks_that_define_it(notebooks_dir, tmp_path):
    write_notebook(notebooks_dir / "03_other.ipynb", 'MODEL = "demo"\nOUTPUT_DIR = "."\nOTHER = 1', ["pass"])
    config = ReportConfig(notebooks=find_notebooks(notebooks_dir), out=tmp_path / "out",
                          params={"GREETING": "hi", "OTHER": 2})
    assert config.parameters_for("01_ok")["GREETING"] == "hi" and "OTHER" not in config.parameters_for("01_ok")
    assert config.parameters_for("03_other")["OTHER"] == 2 and "GREETING" not in config.parameters_for("03_other")


@pytest.mark.parametrize("params, message", [
    ({"GREETNG": "x"}, r"params: GREETNG is a parameter of no notebook; the notebooks run here take EXTRA, GREETING$"),
    ({"01_ok": {"EXTRA": 1, "EXTAR": 2}}, r"params\['01_ok'\]: EXTAR is not a parameter of 01_ok; "
                                          r"its parameters cell defines EXTRA, GREETING$"),
])
def test_a_name_no_parameters_cell_defines_is_refused_with_the_allowed_ones(notebooks_dir, tmp_path, params, message):
    with pytest.raises(ConfigError, match=message):
        ReportConfig(notebooks=find_notebooks(notebooks_dir), out=tmp_path / "out", params=params)


def test_a_typo_in_the_params_file_stops_the_command_before_any_notebook(notebooks_dir, tmp_path, capsys):
    (tmp_path / "p.yaml").write_text("MAX_NEW_TOKEN: 8\n")  # the notebooks take no such name
    code = workbench_main(["report", "--notebooks", str(notebooks_dir), "--out", str(tmp_path / "out"),
                           "--params", str(tmp_path / "p.yaml")])
    printed = capsys.readouterr()
    assert code == 1 and printed.out == ""
    assert printed.err.startswith("error: params: MAX_NEW_TOKEN is a parameter of no notebook")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("where", ["a file in the way", "a file below a file"])
def test_an_unwritable_out_is_an_error_line_not_a_traceback(notebooks_dir, tmp_path, capsys, where):
    (tmp_path / "file").write_text("x")
    out = tmp_path / "file" if where == "a file in the way" else tmp_path / "file" / "report"
    code = workbench_main(["report", "--notebooks", str(notebooks_dir), "--out", str(out)])
    assert code == 1
    assert capsys.readouterr().err.startswith(f"error: out={out}: cannot create the report folder there")


@pytest.mark.parametrize("params, message", [
    ({"07_typo": {"N": 1}}, "neither a parameter name nor a notebook"),
    ({"MODEL": "x"}, "use --model"),
    ({"01_ok": {"OUTPUT_DIR": "x"}}, "use --out"),
    ({"class": 1}, "not a valid parameter name"),
    ({"01_ok": 3}, "must map NAME: value"),
    ({"EXTRA": {1, 2}}, "every value must be"),
])
def test_bad_params_are_refused_with_the_reason(notebooks_dir, tmp_path, params, message):
    with pytest.raises(ConfigError, match=message):
        ReportConfig(notebooks=find_notebooks(notebooks_dir), out=tmp_path / "out", params=params)


def test_config_refuses_what_would_go_wrong(notebooks_dir, tmp_path):
    notebooks = find_notebooks(notebooks_dir)
    with pytest.raises(ConfigError, match="overwrite"):
        ReportConfig(notebooks=notebooks, out=notebooks_dir)
    with pytest.raises(ConfigError, match="timeout_s"):
        ReportConfig(notebooks=notebooks, out=tmp_path, timeout_s=0)
    with pytest.raises(ConfigError, match="not a folder"):
        ReportConfig(notebooks=notebooks, out=tmp_path, model=str(tmp_path / "no-such-model"))
    config = ReportConfig(notebooks=notebooks, out="rel-out", model=os.path.relpath(tmp_path))
    # notebooks run in OUT, so every path handed to them is absolute
    assert Path(config.model).is_absolute() and config.out.is_absolute()


def test_find_notebooks_by_pattern_name_or_number(notebooks_dir):
    (notebooks_dir / "scratch.ipynb").write_text("{}")  # not NN_name: not part of the suite
    assert [p.name for p in find_notebooks(notebooks_dir)] == ["01_ok.ipynb", "02_fails.ipynb"]
    assert [p.stem for p in find_notebooks(notebooks_dir, ["02"])] == ["02_fails"]
    assert [p.stem for p in find_notebooks(notebooks_dir, ["02_fails", "01"])] == ["01_ok", "02_fails"]
    with pytest.raises(ConfigError, match="known: 01_ok, 02_fails"):
        find_notebooks(notebooks_dir, ["09"])


def test_default_notebooks_folder_is_the_repositorys():
    assert default_notebooks_dir() == REPO_ROOT / "notebooks"


def test_default_jupyter_kernel_is_this_interpreter():
    assert runner.jupyter_kernel_python("python3") == sys.executable
    with pytest.raises(ConfigError, match="not installed"):
        runner.jupyter_kernel_python("no-such-kernel-here")


def test_model_kind_for_the_banner(tmp_path):
    def checkpoint(name, config):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "config.json").write_text(json.dumps(config))
        return str(folder)

    assert runner.describe_model(checkpoint("syn", {"workbench_synthetic": True}))["kind"] == "synthetic"
    assert runner.describe_model(checkpoint("demo", {"workbench_demo": True}))["kind"] == "demo"
    assert runner.describe_model(checkpoint("real", {"model_type": "llama"}))["kind"] == "checkpoint"
    assert runner.describe_model("demo")["kind"] == "demo"


def test_index_shows_timeouts_pending_runs_and_missing_headlines(notebooks_dir, tmp_path):
    config = ReportConfig(notebooks=find_notebooks(notebooks_dir), out=tmp_path / "out", timeout_s=5)
    run = NotebookRun(name="01_ok", notebook=config.notebooks[0], status="timeout", duration_s=5.2,
                      parameters={}, ipynb_path=None, html_path=None, json_path=None, log_path=None,
                      error=runner.NotebookError("Timeout", "stopped after its time limit of 5 s"),
                      notes=("the notebook wrote no 01_ok.json",))
    summary = runner._summary(config, {"given": "demo", "folder": None, "kind": "synthetic"}, {}, [run],
                              "2024-01-01T00:00:00+00:00", 6.0, "running")
    page = html.render_index(summary)
    assert page.splitlines()  # a page, with the banner before the title
    assert page.index("SYNTHETIC CHECKPOINT") < page.index("<h1>")
    assert 'class="status timeout">timeout<' in page and "stopped after its time limit" in page
    assert 'class="status running">running<' in page  # 02_fails, not finished yet
    assert "wrote no 01_ok.json" in page
    assert 'http-equiv="refresh"' in page  # reloads while running
    assert summary["exit_code"] is None


def test_headline_values_are_shown_readably():
    assert html.format_value(123.456) == "123.5"
    assert html.format_value(0.000123456) == "0.0001235"
    assert html.format_value(123456.7) == "123457"
    assert html.format_value(42) == "42"
    assert html.format_value("torch") == "torch"
    assert html.format_value([1, 2]) == "[1, 2]"


def test_pages_render_offline_even_with_widgets_and_math(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("The loss is $x^2$."),
                nbformat.v4.new_code_cell("bar", outputs=[nbformat.v4.new_output(
                    "display_data", data={"text/plain": "HBox()", "application/vnd.jupyter.widget-view+json":
                                          {"model_id": "abc", "version_major": 2, "version_minor": 0}})])]
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {}, "version_major": 2,
                                                                           "version_minor": 0}}
    page = tmp_path / "page.html"
    html.render_html(nb, page, "offline")
    text = page.read_text()
    assert "The loss is" in text
    assert not re.search(r"https?://(unpkg|cdnjs)", text)  # no renderer, require.js or MathJax fetched
