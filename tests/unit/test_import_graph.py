"""No module of capsa imports itself through others, at module level or lazily (imports under
TYPE_CHECKING left out): the layers stand on each other, never in a circle. Before the create
sequence had its own module, container.py and checkpoint.py imported each other (restore copied
create through container's private helpers, checkpoint called Container.load), and criu_rpc and
checkpoint too."""

from __future__ import annotations

import ast
from pathlib import Path

import capsa

PACKAGE = Path(capsa.__file__).parent


def test_no_import_cycle_in_capsa():
    assert _cycles(_graph(PACKAGE)) == []


def test_the_layers_below_the_container_do_not_import_it():
    graph = _graph(PACKAGE)
    for module in ("capsa.checkpoint", "capsa.create", "capsa.launch", "capsa.init", "capsa.criu_rpc"):
        assert "capsa.container" not in _reachable(graph, module), module


def test_the_check_sees_a_lazy_import_and_skips_type_checking(tmp_path):
    package = tmp_path / "capsa"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "container.py").write_text("def restore():\n    from capsa import checkpoint\n")
    (package / "checkpoint.py").write_text("def restore():\n    from capsa.container import Container\n")
    assert _cycles(_graph(package)) == ["capsa.checkpoint", "capsa.container"]
    (package / "checkpoint.py").write_text("TYPE_CHECKING = False\nif TYPE_CHECKING:\n    from capsa.container import Container\n")
    assert _cycles(_graph(package)) == []


def _graph(package: Path) -> dict[str, set[str]]:
    modules = {_name(path, package): path for path in package.rglob("*.py")}
    return {name: _imports(path, name, modules) for name, path in modules.items()}


def _name(path: Path, package: Path) -> str:
    parts = ["capsa", *path.relative_to(package).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, name: str, modules: dict[str, Path]) -> set[str]:
    tree = ast.parse(path.read_text())
    type_only = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING"
                 for statement in node.body for n in ast.walk(statement)}
    if name == "capsa":
        # The package's lazy facade (capsa.run and the rest of the Python API, capsa.api) runs
        # only when a program asks the package for one of those names; the modules that import
        # `capsa` for its constants never reach it.
        type_only |= {id(n) for node in tree.body if isinstance(node, ast.FunctionDef) and node.name == "__getattr__"
                      for n in ast.walk(node)}
    package = name if path.stem == "__init__" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if id(node) in type_only:
            continue
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base)
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
    return {module for module in found if module in modules and module != name}


def _reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen: set[str] = set()
    stack = list(graph[start])
    while stack:
        current = stack.pop()
        if current not in seen:
            seen.add(current)
            stack += graph.get(current, ())
    return seen


def _cycles(graph: dict[str, set[str]]) -> list[str]:
    """The modules that reach themselves again."""
    return sorted(module for module in graph if module in _reachable(graph, module))
