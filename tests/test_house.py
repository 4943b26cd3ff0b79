"""The shape of the package: imports point down, with no circles, and nothing imports the
package root (whose lazy API table sits above everything)."""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).parent.parent / "clipdata"


def _module(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """Every clipdata module this file imports, at any depth of the file (lazy imports in
    functions count: a circle through them is still a circle)."""
    name = _module(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("clipdata"):
                continue
            for alias in node.names:  # `from .x import y` may import the submodule x.y
                sub = f"{target}.{alias.name}"
                found.add(sub if _exists(sub) else target)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("clipdata")}
    found.discard(name)
    return found


def _exists(module: str) -> bool:
    rel = Path(*module.split(".")[1:])
    return (PACKAGE / rel).with_suffix(".py").is_file() or (PACKAGE / rel / "__init__.py").is_file()


def _graph() -> dict[str, set[str]]:
    return {_module(p): _imports(p) for p in sorted(PACKAGE.rglob("*.py"))}


def test_no_module_imports_the_package_root():
    offenders = sorted(m for m, deps in _graph().items() if "clipdata" in deps)
    assert not offenders, f"these import the package root: {offenders}"


def test_the_import_graph_has_no_cycle():
    graph = _graph()
    # a package's __init__ runs before its modules: importing `a.b` imports `a` too
    for m, deps in graph.items():
        for d in list(deps):
            parts = d.split(".")
            deps |= {".".join(parts[:i]) for i in range(2, len(parts))}
        # a module's own packages are already running when it is imported: not an edge
        deps -= {p for p in deps if m.startswith(p + ".") or p == m}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for d in sorted(graph.get(m, ())):
            if d.startswith(m + "."):
                continue  # a package importing its own modules is how packages work
            if state.get(d) == 1:
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(d):] + [d]))
            if d not in state:
                visit(d)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)


def test_commands_do_not_import_each_other():
    """What two commands share lives below them; review apply writing through convert is the
    one sanctioned exception."""
    graph = _graph()
    allowed = {("clipdata.commands.review", "clipdata.commands.convert")}
    sideways = sorted((m, d) for m, deps in graph.items() if m.startswith("clipdata.commands.")
                      for d in deps if d.startswith("clipdata.commands.") and (m, d) not in allowed)
    assert not sideways, sideways
