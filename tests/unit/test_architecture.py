"""The code's shape, as docs/architecture.md states it: checked, so it stays true."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2] / "edge_agent"
# The request path: every request runs through these modules.
REQUEST_PATH = ("extproc", "pipeline", "translate")


def _modules() -> dict[str, Path]:
    out = {}
    for path in ROOT.rglob("*.py"):
        if "_proto" in path.parts:
            continue  # generated
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _imports(path: Path, name: str, known: set[str]) -> set[str]:
    """The modules `path` imports when it runs: at the top and inside functions. Imports
    under `if TYPE_CHECKING:` never run and are left out (annotations only)."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                for stmt in child.orelse:
                    visit(stmt)
                continue
            if isinstance(child, ast.Import):
                found.update(a.name for a in child.names if a.name in known)
            elif isinstance(child, ast.ImportFrom) and child.module:
                base = child.module
                if child.level:
                    base = name.rsplit(".", child.level)[0] + "." + base
                candidates = [base, *(f"{base}.{a.name}" for a in child.names)]
                found.update(c for c in candidates if c in known)
            visit(child)

    visit(ast.parse(path.read_text()))
    found.discard(name)
    return found


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles() -> None:
    modules = _modules()
    graph = {name: _imports(path, name, set(modules)) for name, path in modules.items()}
    assert _cycles(graph) == []


def test_the_cycle_check_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def _schema_name_comparisons(path: Path) -> list[int]:
    lines = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
            if any(
                isinstance(o, ast.Constant) and o.value in ("openai", "anthropic") for o in operands
            ):
                lines.append(node.lineno)
    return lines


@pytest.mark.parametrize("package", REQUEST_PATH)
def test_no_string_comparison_on_the_client_schema(package: str) -> None:
    # The client schema is an object chosen once (edge_agent/api/schema.py).
    for path in (ROOT / package).glob("*.py"):
        assert _schema_name_comparisons(path) == [], path


def _reads_the_stream(loop: ast.AST) -> bool:
    """An `async for` over a stream, or a `while` whose condition awaits `*.read()`."""
    if isinstance(loop, ast.AsyncFor):
        return True
    if not isinstance(loop, ast.While):
        return False
    return any(
        isinstance(n, ast.Await)
        and isinstance(n.value, ast.Call)
        and isinstance(n.value.func, ast.Attribute)
        and n.value.func.attr == "read"
        for n in ast.walk(loop.test)
    )


def test_one_stream_loop_in_the_servicer() -> None:
    tree = ast.parse((ROOT / "extproc" / "servicer.py").read_text())
    loops = [n for n in ast.walk(tree) if _reads_the_stream(n)]
    assert len(loops) == 1


@pytest.mark.parametrize("package", REQUEST_PATH)
def test_request_path_modules_stay_small(package: str) -> None:
    for path in (ROOT / package).glob("*.py"):
        assert len(path.read_text().splitlines()) <= 550, path
