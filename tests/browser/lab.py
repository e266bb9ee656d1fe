"""What a user does in JupyterLab, as Playwright calls: open a notebook, Run > Run All Cells,
wait for the kernel, look at a cell's output, move a widget slider, take a screenshot.

Everything is found the way a user finds it: by the text of a cell's code, of an output or of a
slider's label, never by a cell's position, so the notebooks can grow without breaking the tests.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from urllib.parse import quote

from playwright.sync_api import Locator, Page, expect

from .server import LabServer

# One code cell's state, read in the page: its input prompt ("[ ]:", "[*]:", "[3]:") and whether it
# has an error output. Evaluated over every code cell of the open notebook.
_CELL_STATES_JS = """
(panel) => [...panel.querySelectorAll('.jp-CodeCell')].map(cell => ({
    prompt: (cell.querySelector('.jp-InputArea-prompt')?.textContent || '').trim(),
    error: [...cell.querySelectorAll('.jp-OutputArea-output')].some(o =>
        o.getAttribute('data-mime-type') === 'application/vnd.jupyter.stderr' &&
        /Traceback|Error|Exception/.test(o.textContent)),
    empty: !(cell.querySelector('.jp-InputArea-editor .cm-content')?.textContent || '').trim(),
}))
"""


# Records the text length of one cell's outputs at every change of the notebook's DOM.
_WATCH_OUTPUT_JS = """
(panel, code) => {
    const lengths = [];
    const cell = () => [...panel.querySelectorAll('.jp-CodeCell')].find(c =>
        (c.querySelector('.jp-InputArea-editor')?.textContent || '').includes(code));
    const observer = new MutationObserver(() => {
        const area = cell()?.querySelector('.jp-OutputArea');
        const n = area ? area.textContent.length : 0;
        if (lengths.length === 0 || lengths[lengths.length - 1] !== n) lengths.push(n);
    });
    observer.observe(panel, {childList: true, subtree: true, characterData: true});
    window.__workbenchWatch = {lengths, observer};
}
"""


class NotebookRunError(AssertionError):
    """Run All did not run every cell cleanly; the message carries the error output."""


class LabPage:
    """One browser tab on the test's JupyterLab server."""

    def __init__(self, page: Page, server: LabServer, artifacts: Path):
        self.page, self.server, self.artifacts = page, server, artifacts
        self.console_errors: list[str] = []
        self.timings_s: dict[str, float] = {}
        self._shots = 0
        page.on("console", lambda msg: msg.type == "error" and self.console_errors.append(msg.text))
        page.on("pageerror", lambda exc: self.console_errors.append(f"page error: {exc}"))

    # -- the notebook ----------------------------------------------------------------------

    @property
    def panel(self) -> Locator:
        """The notebook in the main area."""
        return self.page.locator(".jp-NotebookPanel:visible")

    def open(self, notebook: str, timeout_s: float = 90) -> None:
        """Open `notebook` (a path under the server's folder) in a fresh workspace and wait until
        its kernel is idle."""
        t0 = time.perf_counter()
        self.page.goto(f"{self.server.url}/lab/tree/{quote(notebook)}?reset&token={self.server.token}")
        tab = self.page.locator(".lm-DockPanel-tabBar .lm-TabBar-tab.lm-mod-current")
        expect(tab).to_contain_text(Path(notebook).name, timeout=timeout_s * 1e3)
        expect(self.panel.locator(".jp-Cell").first).to_be_visible(timeout=timeout_s * 1e3)
        self.wait_for_kernel_idle(timeout_s)
        self.timings_s[f"open {notebook}"] = time.perf_counter() - t0

    def wait_for_kernel_idle(self, timeout_s: float = 60) -> None:
        """The status bar says the kernel is idle, as a user would check."""
        expect(self.page.locator("#jp-main-statusbar")).to_contain_text(
            re.compile(r"\|\s*Idle"), timeout=timeout_s * 1e3)

    def run_all(self, timeout_s: float = 180) -> float:
        """Run > Run All Cells, then wait until no cell is queued or running and the kernel is idle.
        Raises NotebookRunError, with the error output, if a cell failed or was not run.
        Returns the seconds it took."""
        before = [c["prompt"] for c in self._cell_states()]
        t0 = time.perf_counter()
        self.page.locator(".lm-MenuBar-item", has_text=re.compile(r"^Run$")).click()
        self.page.locator('.lm-Menu-item[data-command="runmenu:run-all"]').click()
        deadline = t0 + timeout_s
        while True:
            states = self._cell_states()
            code = [s for s in states if not s["empty"]]
            running = any(s["prompt"] == "[*]:" for s in code)
            done = all(re.fullmatch(r"\[\d+\]:", s["prompt"]) for s in code) and \
                [s["prompt"] for s in states] != before
            failed = any(s["error"] for s in code)
            if not running and (done or failed) and self._indicator_idle():
                break
            if time.perf_counter() > deadline:
                self.screenshot("run-all-timeout")
                raise NotebookRunError(f"Run All Cells still running after {timeout_s:.0f} s; "
                                       f"cell prompts: {[s['prompt'] for s in code]}")
            time.sleep(0.25)
        took = time.perf_counter() - t0
        self.timings_s["run all"] = took
        if failed:
            self.screenshot("run-all-error")
            errors = self.panel.locator('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]')
            text = "\n---\n".join(t[-3000:] for t in errors.all_inner_texts() if re.search(r"Traceback|Error", t))
            raise NotebookRunError(f"a cell failed during Run All Cells:\n{text}")
        return took

    def _cell_states(self) -> list[dict]:
        return self.panel.evaluate(_CELL_STATES_JS)

    def _indicator_idle(self) -> bool:
        indicator = self.panel.locator(".jp-Notebook-ExecutionIndicator")
        return indicator.count() == 0 or indicator.first.get_attribute("data-status") == "idle"

    # -- finding things --------------------------------------------------------------------

    def cell(self, code: str) -> Locator:
        """The code cell whose source contains `code` (one line of it)."""
        editor = self.page.locator(".jp-InputArea-editor", has_text=code)
        found = self.panel.locator(".jp-CodeCell", has=editor)
        expect(found, f"no code cell contains {code!r}").to_have_count(1)
        return found

    def outputs(self, cell: Locator | None = None) -> Locator:
        """The rendered outputs of one cell (or of the whole notebook): text, HTML, images, and
        what a widget shows (an Output widget is an output that holds outputs: only the innermost
        count, so that a text is found once)."""
        return (cell or self.panel).locator(".jp-OutputArea-output:not(:has(.jp-OutputArea-output))")

    def output_with_text(self, text: str | re.Pattern, cell: Locator | None = None) -> Locator:
        return self.outputs(cell).filter(has_text=text)

    def images(self, cell: Locator | None = None) -> Locator:
        """The images (matplotlib PNGs) among the outputs."""
        return self.outputs(cell).locator("img")

    def expect_image_loaded(self, image: Locator, timeout_s: float = 30) -> dict:
        """The image decoded into real pixels (not a broken or empty <img>); returns its size."""
        image.scroll_into_view_if_needed()
        expect(image).to_be_visible(timeout=timeout_s * 1e3)
        size = image.evaluate("img => ({width: img.naturalWidth, height: img.naturalHeight, complete: img.complete})")
        assert size["complete"] and size["width"] > 50 and size["height"] > 50, f"image did not load: {size}"
        return size

    def watch_output(self, code: str) -> None:
        """Start recording, in the page, every length the output of the cell containing `code`
        goes through; `watched_lengths()` reads them. Shows whether text arrived as a stream."""
        self.panel.evaluate(_WATCH_OUTPUT_JS, code)

    def watched_lengths(self) -> list[int]:
        return self.page.evaluate("() => window.__workbenchWatch ? [...window.__workbenchWatch.lengths] : []")

    def flooding_outputs(self, max_lines: int = 40, max_chars: int = 5000) -> list[str]:
        """Text outputs longer than a reader can take in at a glance, each as its first line."""
        texts = self.outputs().evaluate_all("els => els.filter(e => !e.querySelector('img, table'))"
                                            ".map(e => e.innerText)")
        return [f"{len(t.splitlines())} lines / {len(t)} chars, starting {t.strip().splitlines()[0][:120]!r}"
                for t in texts if t.strip() and (len(t.splitlines()) > max_lines or len(t) > max_chars)]

    def stderr_texts(self) -> list[str]:
        """What the notebook printed to stderr (warnings, library chatter), shown in red boxes."""
        return self.panel.locator('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]'
                                  ).all_text_contents()

    # -- widgets ---------------------------------------------------------------------------

    def slider(self, label: str) -> Locator:
        """The rendered ipywidgets slider whose description is `label`."""
        name = self.page.locator(".widget-label", has_text=re.compile(rf"^\s*{re.escape(label)}\s*$"))
        return self.panel.locator(".widget-slider", has=name)

    def slider_readout(self, label: str) -> str:
        return self.slider(label).locator(".widget-readout").inner_text().strip()

    def press_on_slider(self, label: str, key: str, times: int = 1) -> None:
        """Focus the slider's handle and press `key` (ArrowRight, ArrowLeft, Home, End, PageUp...)."""
        handle = self.slider(label).locator(".noUi-handle")
        handle.scroll_into_view_if_needed()
        handle.focus()
        for _ in range(times):
            handle.press(key)

    def drag_slider(self, label: str, fraction: float) -> None:
        """Drag the slider's handle with the mouse to `fraction` (0..1) of its track, then release."""
        slider = self.slider(label)
        handle, track = slider.locator(".noUi-handle"), slider.locator(".noUi-target")
        handle.scroll_into_view_if_needed()
        h, t = handle.bounding_box(), track.bounding_box()
        assert h and t, f"slider {label!r} is not laid out on the page"
        y = h["y"] + h["height"] / 2
        self.page.mouse.move(h["x"] + h["width"] / 2, y)
        self.page.mouse.down()
        self.page.mouse.move(t["x"] + fraction * t["width"], y, steps=12)
        self.page.mouse.up()

    # -- evidence --------------------------------------------------------------------------

    def screenshot(self, name: str, show: Locator | None = None) -> Path:
        """Save the window as <artifacts>/NN-name.png, after scrolling `show` into view."""
        if show is not None:
            show.scroll_into_view_if_needed()
        self._shots += 1
        path = self.artifacts / f"{self._shots:02d}-{name}.png"
        self.page.screenshot(path=str(path))
        return path
