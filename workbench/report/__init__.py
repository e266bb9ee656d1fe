"""Reports: the papermill runner, its parameters and HTML, and what notebooks call (helpers,
plots, widgets)."""

from .params import find_notebooks, load_params
from .runner import NotebookRun, ReportConfig, ReportResult, main, run_notebook, run_report

__all__ = ["NotebookRun", "ReportConfig", "ReportResult", "find_notebooks", "load_params", "main", "run_notebook",
           "run_report"]
