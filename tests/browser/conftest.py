"""Fixtures for the browser tests.

- `lab_server`: one JupyterLab for this package's tests, on a free localhost port with a random
  token, serving a temporary folder that holds copies of notebooks/. It is always stopped, with
  every kernel it started, when the last browser test ends, failed or not.
- `lab`: a fresh Chromium tab (Debian's /usr/bin/chromium, headless, driven by Playwright; no
  browser download) wrapped in `LabPage`, which acts as a user would.
- `artifacts`: the test's output folder, tests/browser/_artifacts/<test name>/ (git-ignored,
  emptied when the test starts). Every step's screenshot goes there; a failing test adds
  failure.png, and every test writes browser-console.log and timings.json.

Without Chromium or Playwright the tests skip and say why, except in CI (CI=true), where they fail.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path

import psutil
import pytest

from . import server as lab_servers

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(__file__).resolve().parent / "_artifacts"
CHROMIUM = Path(os.environ.get("WORKBENCH_CHROMIUM", "/usr/bin/chromium"))
# Headless, and quiet on a machine without network: no background requests, no first-run UI.
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
VIEWPORT = {"width": 1400, "height": 1000}


def _require(ok: bool, reason: str) -> None:
    """Skip with `reason` on a developer's machine; fail in CI, where the suite must run."""
    if ok:
        return
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{reason} (CI=true: the browser tests must run here; .ci/run installs it)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="package", autouse=True)
def browser_requirements():
    """Checked first, before any slow fixture (the demo model, the server) is built."""
    _require(CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK),
             f"Chromium is not installed at {CHROMIUM}: 'apt-get install chromium' (Debian), "
             f"or set WORKBENCH_CHROMIUM to a Chromium binary")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        _require(False, "Playwright is not installed: pip install -e '.[test]'")


@pytest.fixture(scope="package")
def no_leftover_processes(browser_requirements):
    """Fails the last browser test's teardown if any process started during these tests
    (server, kernels, Chromium, Playwright's driver) outlives them; kills it first."""
    me = psutil.Process()
    before = {p.pid for p in me.children(recursive=True)}
    yield
    new = [p for p in me.children(recursive=True) if p.pid not in before]
    described = lab_servers.kill_survivors(new, wait_s=10)
    assert not described, "processes left behind by the browser tests (now killed):\n" + "\n".join(described)


@pytest.fixture(scope="package")
def lab_server(no_leftover_processes, tmp_path_factory):
    """JupyterLab serving a temporary folder with copies of notebooks/."""
    root = tmp_path_factory.mktemp("lab-root")
    for notebook in sorted((REPO / "notebooks").glob("*.ipynb")):
        shutil.copy2(notebook, root / notebook.name)
    ARTIFACTS.mkdir(exist_ok=True)
    server = lab_servers.start(root, tmp_path_factory.mktemp("lab-state"), ARTIFACTS / "jupyter-server.log")
    try:
        yield server
    finally:
        forced = lab_servers.stop(server)
        survivors = lab_servers.still_running(server)
        assert not survivors, "JupyterLab or its kernels survived the shutdown:\n" + "\n".join(survivors)
        assert not forced, ("JupyterLab did not stop everything it started; killed by force:\n"
                            + "\n".join(forced))


@pytest.fixture(scope="package")
def chromium(no_leftover_processes):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def artifacts(request) -> Path:
    """tests/browser/_artifacts/<test name>/, emptied for this run."""
    folder = ARTIFACTS / re.sub(r"[^\w.-]+", "_", request.node.name)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return folder


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    report = yield
    setattr(item, f"_report_{report.when}", report)
    return report


@pytest.fixture
def lab(request, lab_server, chromium, artifacts):
    """A new browser tab (own cookies and storage) on the server, as a `LabPage`."""
    from .lab import LabPage

    context = chromium.new_context(viewport=VIEWPORT)
    context.set_default_timeout(30_000)
    page = LabPage(context.new_page(), lab_server, artifacts)
    t0 = time.perf_counter()
    try:
        yield page
    finally:
        report = getattr(request.node, "_report_call", None)
        if report is not None and report.failed:
            try:
                page.page.screenshot(path=str(artifacts / "failure.png"))
            except Exception as exc:  # the page may be what broke; the failure itself matters more
                (artifacts / "failure.txt").write_text(f"no screenshot: {exc}\n")
        page.timings_s["test"] = time.perf_counter() - t0
        (artifacts / "timings.json").write_text(json.dumps({k: round(v, 2) for k, v in page.timings_s.items()},
                                                           indent=2))
        (artifacts / "browser-console.log").write_text("\n".join(page.console_errors) + "\n")
        context.close()
        # as a user closing the notebook would: its kernel goes, and with it the model's memory
        forced = lab_servers.shutdown_kernels(lab_server)
        assert not forced, "the notebook's kernel left processes running (now killed):\n" + "\n".join(forced)
