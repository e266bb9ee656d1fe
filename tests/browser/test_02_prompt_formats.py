"""02_prompt_formats in JupyterLab: Run All Cells and read the token table."""

import pytest
from playwright.sync_api import expect

from .notebooks import set_parameters

pytestmark = pytest.mark.browser

TOKEN_VIEW_COLUMNS = ["id", "piece", "text", "start", "end", "part", "role", "turn"]


def test_prompt_formats_shows_the_token_table(demo_model_path, lab_server, lab):
    # every format, on fewer and shorter answers than the notebook's defaults (time, not coverage)
    set_parameters(lab_server.root / "02_prompt_formats.ipynb", N_PROMPTS=1, MAX_NEW_TOKENS=16)
    lab.open("02_prompt_formats.ipynb")
    lab.run_all(timeout_s=150)

    table = lab.outputs(lab.cell("view = wb.token_view(")).locator("table")
    expect(table, "the token view renders as one table").to_have_count(1)
    # text_content, not inner_text: a tall table's rows outside the window are not laid out
    headers = [h.strip() for h in table.locator("thead th").all_text_contents()]
    missing = [c for c in TOKEN_VIEW_COLUMNS if c not in headers]
    assert not missing, f"token table lacks columns {missing}; it has {headers}"
    assert table.locator("tbody tr").count() >= 10, "the token table shows fewer than 10 tokens"
    body = table.locator("tbody")
    for shown in ["role_tag", "content", "human", "bot"]:
        expect(body, f"the token table names {shown!r}").to_contain_text(shown)
    lab.screenshot("token-table", show=table.locator("thead"))

    # every format is listed, and the figures of the later sections appear
    expect(lab.output_with_text("mftcoder-v2:", lab.cell("wb.render_prompt(messages, format=name)"))).to_have_count(1)
    for image in lab.images().all():
        lab.expect_image_loaded(image)
    assert lab.images().count() >= 2, "the first-token and end-of-answer plots did not appear"
    lab.screenshot("last-plot", show=lab.images().last)

    assert lab.flooding_outputs() == []
    assert lab.stderr_texts() == [], "the notebook shows warnings or log lines"
