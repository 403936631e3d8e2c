"""The package's imports form no circle: every module, package faces and imports made inside
functions included, can be read from the bottom up (a technique never needs the budget or the
trainer to be imported first)."""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _module_file(name: str) -> Path | None:
    path = ROOT.joinpath(*name.split("."))
    for candidate in (path / "__init__.py", path.with_suffix(".py")):
        if candidate.exists():
            return candidate
    return None


def _imports(path: Path) -> set[Path]:
    """The maskfx modules ``path`` imports anywhere in its body (``from maskfx.x import y``: the
    submodule ``maskfx.x.y`` when there is one, else ``maskfx.x``)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "maskfx":
            found |= {_module_file(f"{node.module}.{alias.name}") or _module_file(node.module) for alias in node.names}
        elif isinstance(node, ast.Import):
            found |= {_module_file(alias.name) for alias in node.names if alias.name.split(".")[0] == "maskfx"}
    return found - {None, path}


def _a_circle(graph: dict[Path, set[Path]]) -> list[Path] | None:
    state, stack = {}, []

    def visit(node: Path) -> list[Path] | None:
        state[node] = "open"
        stack.append(node)
        for after in sorted(graph[node]):
            if state.get(after) == "open":
                return stack[stack.index(after):] + [after]
            if after not in state and (circle := visit(after)):
                return circle
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state and (circle := visit(node)):
            return circle
    return None


def test_the_package_imports_form_no_circle():
    graph = {path: _imports(path) for path in (ROOT / "maskfx").rglob("*.py")}
    assert len(graph) > 50 and sum(map(len, graph.values())) > 100  # the whole package was read
    circle = _a_circle(graph)
    assert circle is None, " -> ".join(str(p.relative_to(ROOT)) for p in circle)


def test_the_check_finds_a_circle():
    a, b, c = Path("a"), Path("b"), Path("c")
    assert _a_circle({a: {b}, b: {c}, c: {a}}) == [a, b, c, a]
    assert _a_circle({a: {b}, b: {c}, c: set()}) is None
