"""The report's HTML: each executed notebook rendered, and the index of all of them.
"""

from __future__ import annotations

import functools
import html
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

from ..cache import atomic_write_text

# nbconvert's lab template loads require.js, MathJax and mermaid from a CDN in <head> (and the
# widget renderer from unpkg when a notebook showed a widget, e.g. a tqdm bar); on a machine without
# network those block or fail, and the outputs (static HTML, base64 images) need none of them.
OFFLINE_TEMPLATE = """\
{%- extends 'index.html.j2' -%}
{%- block jupyter_widgets -%}{%- endblock jupyter_widgets -%}
{%- block html_head_js -%}{%- endblock html_head_js -%}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
"""


@functools.lru_cache(maxsize=1)
def _html_exporter():
    """One exporter for the whole report: importing nbconvert and compiling its template takes seconds."""
    from jinja2 import DictLoader
    from nbconvert import HTMLExporter

    return HTMLExporter(template_name="lab", template_file="workbench_offline.html.j2",
                        extra_loaders=[DictLoader({"workbench_offline.html.j2": OFFLINE_TEMPLATE})],
                        embed_images=True)


def render_html(nb, path: Path, title: str) -> None:
    body, _ = _html_exporter().from_notebook_node(nb, resources={"metadata": {"name": title}})
    atomic_write_text(path, body)


# --- index.html ---------------------------------------------------------------------------------

REFRESH_TAG = '<meta http-equiv="refresh" content="10">'  # only while the report's state is "running"

def format_value(value) -> str:
    """A headline value as the index shows it: floats to 4 significant digits, others as written."""
    if isinstance(value, float) and math.isfinite(value):
        return f"{value:.0f}" if abs(value) >= 1e4 else f"{value:.4g}"
    if isinstance(value, (str, int, float)) or value is None:
        return str(value)
    return json.dumps(value)


def headline_text(headline: Mapping, limit: int | None = None) -> str:
    items = list(headline.items())[:limit]
    return ", ".join(f"{k}={format_value(v)}" for k, v in items)


def _duration_text(seconds: float | None) -> str:
    if seconds is None:
        return ""
    return f"{seconds:.1f} s" if seconds < 120 else f"{int(seconds // 60)} min {seconds % 60:02.0f} s"


_INDEX_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
.banner { background: #fff3cd; border: 1px solid #e0b400; padding: .6em 1em; font-weight: bold; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: .35em .6em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
table.meta th { width: 11em; }
.status { font-weight: bold; text-transform: uppercase; }
.ok { color: #1a7f37; } .failed, .interrupted { color: #c62828; } .timeout { color: #b36b00; }
.lost { color: #c62828; }
.pending, .running { color: #777; }
pre { margin: 0; white-space: pre-wrap; max-width: 60em; font-size: .9em; }
.kv { white-space: nowrap; } .kv b { font-weight: 600; }
.notes { color: #666; font-size: .9em; }
.note { color: #c62828; font-weight: bold; }
"""


def render_index(summary: dict) -> str:
    """A self-contained page (no scripts, no external files) from report.json's content.

    Two optional keys extend it (the sweep uses both): `meta_extra`, a list of [name, text] rows
    added to the table at the top, and `columns`, names of columns shown after the notebook's
    name, whose text each run gives in `run["columns"][name]`.
    """
    e = html.escape
    config, env, model = summary["config"], summary["environment"], summary["model"]
    head = ['<!doctype html>', '<html lang="en"><head><meta charset="utf-8">',
            f"<title>{e(summary['title'])}</title>", f"<style>{_INDEX_CSS}</style>"]
    if summary["state"] == "running":  # watch a long run: the page reloads until it is done
        head.append(REFRESH_TAG)
    body = ["</head><body>"]
    if summary.get("banner"):
        body.append(f'<p class="banner">{e(summary["banner"])}</p>')
    body.append(f"<h1>{e(summary['title'])}</h1>")
    if summary.get("note"):  # e.g. why a report says interrupted
        body.append(f'<p class="note">{e(summary["note"])}</p>')
    counts = ", ".join(f"{n} {s}" for s, n in summary["counts"].items())
    folder = model.get("folder")
    model_text = config["model"] + (f" ({folder})" if folder and folder != config["model"] else "")
    meta = [("model", model_text), ("kernel", config["kernel"]), ("device", config["device"]),
            ("started", summary["started_at"]), ("duration", _duration_text(summary["duration_s"])),
            ("state", f"{summary['state']}: {counts}"),
            ("environment" if env.get("jupyter_kernel_in_runner_env", True) else "runner's environment",
             ", ".join(f"{k} {env[k]}" for k in ("python", "torch", "transformers", "gptqmodel") if env.get(k))),
            ("hardware", env.get("device_name", "?")),
            ("jupyter kernel", f"{config['jupyter_kernel']} ({env.get('jupyter_kernel_python', '?')})"),
            ("time limit", f"{config['timeout_s']:g} s per notebook")]
    if env.get("collect_env_error"):
        meta.append(("environment error", env["collect_env_error"]))
    meta += [tuple(row) for row in summary.get("meta_extra", ())]
    body.append('<table class="meta">' + "".join(f"<tr><th>{e(k)}</th><td>{e(str(v))}</td></tr>" for k, v in meta)
                + "</table>")
    columns = list(summary.get("columns", ()))
    body.append("<table><thead><tr><th>notebook</th>" + "".join(f"<th>{e(c)}</th>" for c in columns)
                + "<th>status</th><th>duration</th><th>headline</th><th>files</th><th>error</th></tr></thead><tbody>")
    for run in summary["notebooks"]:
        body.append(_index_row(run, columns))
    body.append("</tbody></table>")
    body.append('<p class="notes">Machine-readable: <a href="report.json">report.json</a>.</p></body></html>')
    return "\n".join(head + body) + "\n"


def _index_row(run: dict, columns: Sequence[str] = ()) -> str:
    e = html.escape
    status = run["status"]
    name = e(run["name"])
    title = f'<a href="{e(run["html"])}">{name}</a>' if run.get("html") else name
    headline = "<br>".join(f'<span class="kv"><b>{e(str(k))}</b> {e(format_value(v))}</span>'
                           for k, v in (run.get("headline") or {}).items())
    files = " ".join(f'<a href="{e(run[kind])}">{kind}</a>' for kind in ("html", "ipynb", "json", "log")
                     if run.get(kind))
    error = ""
    if run.get("error"):
        err = run["error"]
        text = f"{err['name']}: {err['message']}".strip()
        if err.get("source_head"):
            cell = f"In [{err['execution_count']}]" if err.get("execution_count") is not None else "cell"
            text += f"\n\n{cell}:\n{err['source_head']}"
        error = f"<pre>{e(text[:2000])}</pre>"
    if run.get("notes"):
        error += "".join(f'<div class="notes">{e(note)}</div>' for note in run["notes"])
    extra = "".join(_column_cell((run.get("columns") or {}).get(c, "")) for c in columns)
    return (f"<tr><td>{title}</td>{extra}<td class=\"status {e(status)}\">{e(status)}</td>"
            f"<td>{_duration_text(run.get('duration_s'))}</td><td>{headline}</td><td>{files}</td>"
            f"<td>{error}</td></tr>")


def _column_cell(text) -> str:
    """An extra column's cell: plain text, one line per line."""
    return "<td>" + "<br>".join(html.escape(line) for line in str(text).splitlines()) + "</td>"
