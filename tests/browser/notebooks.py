"""Edit a notebook's `parameters` cell before it is opened, as a user would type new values into it
(and as papermill does): the browser tests run the real notebooks on small settings."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat


def set_parameters(path: Path, **values) -> None:
    """Give each NAME in the notebook's cell tagged `parameters` the value repr(values[NAME]),
    keeping the line's comment. An unknown NAME is an error that lists the known ones."""
    nb = nbformat.read(path, as_version=4)
    cells = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    if len(cells) != 1:
        raise ValueError(f"{path.name}: expected one cell tagged 'parameters', found {len(cells)}")
    cell = cells[0]
    for name, value in values.items():
        line = re.compile(rf"^{re.escape(name)}\s*=\s*.*?(?P<comment>\s+#.*)?$", re.M)
        if not line.search(cell.source):
            known = re.findall(r"^([A-Z][A-Z0-9_]*)\s*=", cell.source, re.M)
            raise KeyError(f"{path.name} has no parameter {name}; its parameters are {known}")
        cell.source = line.sub(lambda m: f"{name} = {value!r}{m.group('comment') or ''}", cell.source, count=1)
    nbformat.write(nb, path)
