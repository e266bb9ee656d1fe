"""03_decoding_parameters in JupyterLab: Run All Cells, then move the temperature slider and see a
new answer replace the old one."""

import pytest
from playwright.sync_api import expect

from .notebooks import set_parameters

pytestmark = pytest.mark.browser


def test_temperature_slider_regenerates_the_answer(demo_model_path, lab_server, lab):
    # a 2-point grid on one prompt: the sweep is not what this test is about, the sliders are
    set_parameters(lab_server.root / "03_decoding_parameters.ipynb", TEMPERATURES=[0.1, 1.2], TOP_PS=[0.95],
                   SAMPLES=1, N_PROMPTS=1, MAX_NEW_TOKENS=24)
    lab.open("03_decoding_parameters.ipynb")
    lab.run_all(timeout_s=150)

    heatmaps = lab.images(lab.cell("plots.heatmap("))
    expect(heatmaps, "one heatmap per metric").to_have_count(4)
    for image in heatmaps.all():
        lab.expect_image_loaded(image)
    lab.screenshot("heatmaps", show=heatmaps.last)

    explorer = lab.cell("wb.widgets.DecodingExplorer(")
    for name in ["temperature", "top_p", "top_k (0 = off)", "repetition_penalty", "seed"]:
        expect(lab.slider(name), f"the {name!r} slider renders").to_be_visible()
    status = explorer.locator(".widget-html", has_text="answer #")
    answer = lab.outputs(explorer.locator(".workbench-answer"))
    expect(status).to_contain_text("answer #1 ·", timeout=60_000)  # the finished answer, not "generating answer #1 ..."
    expect(answer).to_have_count(1)
    first = answer.inner_text()
    assert first.strip(), "the explorer shows no first answer"
    lab.screenshot("first-answer", show=explorer)

    # drag temperature high with the mouse: one new answer, in place of the old one
    before = lab.slider_readout("temperature")
    lab.drag_slider("temperature", 0.9)
    expect(status).to_contain_text("answer #2 ·", timeout=60_000)
    after = lab.slider_readout("temperature")
    assert float(after) > float(before), f"temperature readout went from {before} to {after}"
    expect(status).to_contain_text(f"T={after}")
    expect(answer, "the new answer replaces the old one").to_have_count(1)
    assert answer.inner_text() != first, "the answer did not change after the temperature moved"
    lab.screenshot("answer-after-temperature", show=explorer)

    # one keyboard step on the seed: another sample at the same temperature
    lab.press_on_slider("seed", "ArrowRight")
    expect(status).to_contain_text("answer #3 ·", timeout=60_000)
    expect(status).to_contain_text("seed=1")
    expect(answer).to_have_count(1)
    lab.screenshot("answer-after-seed", show=explorer)

    assert lab.flooding_outputs() == []
    assert lab.stderr_texts() == [], "the notebook shows warnings or log lines"
