"""JupyterLab, its kernel, matplotlib and ipywidgets work in the browser at all.

A tiny notebook written for the test: if this fails, the install (JupyterLab, ipywidgets'
front-end extension, the kernel) is broken, whatever the workbench's notebooks do.
"""

import nbformat
import pytest
from playwright.sync_api import expect

pytestmark = pytest.mark.browser

CELLS = [
    'print("hello from the kernel")',
    "import matplotlib.pyplot as plt\n"
    "plt.plot([1, 3, 2])\n"
    "plt.title('smoke plot')\n"
    "plt.show()",
    "import ipywidgets as widgets\n"
    "level = widgets.IntSlider(value=3, min=0, max=10, description='level')\n"
    "shown = widgets.Output()\n"
    "def on_level(change):\n"
    "    shown.clear_output(wait=True)\n"
    "    with shown:\n"
    "        print(f'level is {change.new}')\n"
    "level.observe(on_level, names='value')\n"
    "display(level, shown)",
]


def test_lab_runs_a_notebook_with_a_plot_and_a_slider(lab_server, lab):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(src) for src in CELLS])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
    nbformat.write(nb, lab_server.root / "smoke.ipynb")

    lab.open("smoke.ipynb")
    lab.screenshot("opened")
    lab.run_all(timeout_s=60)

    expect(lab.output_with_text("hello from the kernel")).to_have_count(1)
    lab.expect_image_loaded(lab.images(lab.cell("plt.title('smoke plot')")).first)
    lab.screenshot("text-and-plot", show=lab.images().first)

    slider = lab.slider("level")
    expect(slider).to_be_visible()
    assert lab.slider_readout("level") == "3"
    lab.press_on_slider("level", "ArrowRight")
    answer = lab.output_with_text("level is", lab.cell("level.observe"))
    expect(answer).to_have_text("level is 4")
    lab.screenshot("slider-moved-by-keyboard", show=slider)

    lab.drag_slider("level", 1.0)
    expect(answer).to_have_text("level is 10")
    assert lab.slider_readout("level") == "10"
    expect(answer, "each new value replaces the old one").to_have_count(1)
    lab.screenshot("slider-dragged", show=slider)
