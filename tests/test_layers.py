"""The package's layers, read from its source: no import cycles, no layer importing a higher one,
and workbench imports at module level only (docs/architecture.md)."""

from __future__ import annotations

import ast
import textwrap
from collections import defaultdict
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "workbench"

# Low to high. A module may import from its own layer and the ones below it, never from above.
LAYERS = (
    ("errors", "cache", "environment", "measure"),
    ("prompts",),
    ("model",),
    ("generation",),
    ("humaneval",),
    ("studies",),
    ("report",),
    ("__init__", "__main__"),
)


def module_name(root: Path, file: Path) -> str:
    parts = [root.name, *file.relative_to(root).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(package: str, module: str) -> int:
    parts = module.split(".")
    top = parts[1] if len(parts) > 1 else "__init__"
    for i, names in enumerate(LAYERS):
        if top in names:
            return i
    raise AssertionError(f"{module} belongs to no layer: add its first name to LAYERS in {__file__}")


def _absolute(module: str, is_package: bool, node: ast.ImportFrom) -> list[str]:
    """The modules an import statement names, absolute (`from . import x` names the submodule x)."""
    if node.level == 0:
        return [node.module] if node.module else []
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    target = ".".join(base + ([node.module] if node.module else []))
    return [target] if node.module else [f"{target}.{a.name}" for a in node.names]


def import_graph(root: Path) -> tuple[dict[str, set[str]], list[str]]:
    """Each module's imports of the package's own modules, and the imports placed inside functions."""
    files = {module_name(root, f): f for f in root.rglob("*.py")}
    graph: dict[str, set[str]] = defaultdict(set)
    nested: list[str] = []
    for module, file in files.items():
        tree = ast.parse(file.read_text(encoding="utf-8"))
        for node, in_function in _imports(tree):
            if isinstance(node, ast.ImportFrom):
                targets = _absolute(module, file.name == "__init__.py", node)
            else:
                targets = [a.name for a in node.names]
            for target in (t for t in targets if t == root.name or t.startswith(root.name + ".")):
                while target not in files and "." in target:  # `from .x import name`: the module is x
                    target = target.rsplit(".", 1)[0]
                graph[module].add(target)
                if in_function:
                    nested.append(f"{module} imports {target} inside a function (line {node.lineno})")
        graph.setdefault(module, set())
    return graph, nested


def _imports(tree: ast.Module):
    """Every import statement with whether it sits inside a function or class body."""
    def walk(node, in_function):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                yield child, in_function
            yield from walk(child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef,
                                                                         ast.ClassDef, ast.Lambda)))
    return walk(tree, False)


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of two or more modules (Tarjan), plus self-imports."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                out.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def layer_violations(root: Path, graph: dict[str, set[str]]) -> list[str]:
    package = root.name
    return [f"{a} (layer {layer_of(package, a)}) imports {b} (layer {layer_of(package, b)})"
            for a, targets in sorted(graph.items()) for b in sorted(targets)
            if b != package and layer_of(package, b) > layer_of(package, a)]


def problems(root: Path) -> list[str]:
    graph, nested = import_graph(root)
    found = [f"import cycle: {' -> '.join(group)}" for group in cycles(graph)]
    return found + layer_violations(root, graph) + nested


def test_the_package_has_no_cycles_no_upward_imports_and_no_nested_workbench_imports():
    found = problems(PACKAGE)
    assert found == [], "\n".join(found)


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "workbench"
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root


def test_the_check_fails_on_a_reintroduced_cycle(tmp_path):
    """The generation <-> decode cycle of the flat package, written again inside one layer."""
    root = _tree(tmp_path, {
        "__init__.py": "",
        "generation/__init__.py": "",
        "generation/generate.py": "from .static import static_generate\n",
        "generation/static.py": "from .generate import generate_ids\n",
    })
    assert problems(root) == ["import cycle: workbench.generation.generate -> workbench.generation.static"]


def test_the_check_fails_on_a_lower_layer_importing_a_higher_one(tmp_path):
    root = _tree(tmp_path, {
        "__init__.py": "",
        "model/__init__.py": "",
        "model/load.py": "from ..studies.floor import floor_ms\n",
        "studies/__init__.py": "",
        "studies/floor.py": "floor_ms = 1\n",
    })
    assert problems(root) == ["workbench.model.load (layer 2) imports workbench.studies.floor (layer 5)"]


def test_the_check_fails_on_a_workbench_import_hidden_in_a_function(tmp_path):
    root = _tree(tmp_path, {
        "__init__.py": "",
        "errors.py": "class E(Exception): pass\n",
        "cache.py": "def f():\n    from .errors import E\n    return E\n",
    })
    assert problems(root) == ["workbench.cache imports workbench.errors inside a function (line 2)"]
