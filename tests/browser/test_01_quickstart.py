"""01_quickstart in JupyterLab: Run All Cells, watch the answer stream in, see the latency plot."""

import re

import pytest
from playwright.sync_api import expect

pytestmark = pytest.mark.browser


def test_quickstart_streams_the_answer_and_plots_latency(demo_model_path, lab):
    lab.open("01_quickstart.ipynb")
    lab.screenshot("opened")
    generate_code = "on_token=wb.notebook.printer()"
    lab.watch_output(generate_code)
    lab.run_all(timeout_s=150)

    # what was loaded, in one line
    described = lab.output_with_text("demo model (not CodeFuse-34B)", lab.cell("print(wb.notebook.describe(loaded))"))
    expect(described).to_have_count(1)

    # the answer arrived a piece at a time, and stayed as one block of text
    answer = lab.outputs(lab.cell(generate_code))
    expect(answer).to_have_count(1)
    text = answer.inner_text()
    assert text.strip(), "the streamed answer is empty"
    lengths = [n for n in lab.watched_lengths() if n > 0]
    assert len(lengths) >= 3 and lengths == sorted(lengths), \
        f"the answer did not stream in (output lengths seen while it ran: {lengths})"
    lab.screenshot("streamed-answer", show=answer)

    # what was measured: the summary table, then one latency plot
    expect(lab.output_with_text("time to first token (ms)", lab.cell("wb.notebook.summary(record)"))).to_have_count(1)
    plot = lab.images(lab.cell("plots.token_latency("))
    expect(plot, "exactly one latency plot").to_have_count(1)
    lab.expect_image_loaded(plot)
    lab.screenshot("latency-plot", show=plot)
    expect(lab.output_with_text(re.compile(r"'ttft_ms':"))).to_have_count(1)

    assert lab.flooding_outputs() == []
    assert lab.stderr_texts() == [], "the notebook shows warnings or log lines"
