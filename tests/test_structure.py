"""The package's shape, checked: no import cycle, and modules and classes a reader can hold.

The import graph counts every import that runs (module level or inside a function); imports
under ``if TYPE_CHECKING:`` do not run and do not count. Sizes are physical lines. A module or
class allowed to be bigger says why in ``ALLOWED``.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "loopthread"
MODULE_LINES = 400
CLASS_LINES = 300

# name -> (limit, why it may be bigger than the default)
ALLOWED: dict[str, tuple[int, str]] = {
    "loopthread/_monitor.py": (
        560,
        "its docstring carries the watchdog's ordering proof, which belongs beside the code",
    ),
    "loopthread/metrics.py": (
        680,
        "the public metrics module: the family table in its docstring, the collector and serve()",
    ),
    "loopthread/_core/_facade.py:CallFacade": (
        320,
        "the blocking facade's whole surface (run, call, gather, submit) and its loop side",
    ),
    "loopthread/logging.py": (500, "LoopHandler and the dictConfig glue it needs, in one place"),
    "loopthread/logging.py:LoopHandler": (
        310,
        "a logging.Handler's surface (handle, emit, prepare, flush, close) plus its batch writer",
    ),
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _runtime_imports(path: Path, modules: set[str]) -> set[str]:
    here = _module_name(path)
    is_package = path.name == "__init__.py"
    found: set[str] = set()

    def resolve(module: str | None, level: int, names: list[str]) -> None:
        if level:
            base = here.split(".") if is_package else here.split(".")[:-1]
            base = base[: len(base) - (level - 1)]
            module = ".".join([*base, module] if module else base)
        if module is None:
            return
        hits = [f"{module}.{n}" for n in names if f"{module}.{n}" in modules]
        found.update(hits or ([module] if module in modules else []))

    def visit(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, ast.If) and _is_type_checking(node):
                visit(node.orelse)
                continue
            if isinstance(node, ast.Import):
                found.update(a.name for a in node.names if a.name in modules)
            elif isinstance(node, ast.ImportFrom):
                resolve(node.module, node.level, [a.name for a in node.names])
            visit([c for c in ast.iter_child_nodes(node) if isinstance(c, ast.stmt)])

    visit(ast.parse(path.read_text()).body)
    found.discard(here)
    return found


def _graph() -> dict[str, set[str]]:
    paths = sorted(PACKAGE.rglob("*.py"))
    modules = {_module_name(p) for p in paths}
    return {_module_name(p): _runtime_imports(p, modules) for p in paths}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def dfs(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            # A package importing its own submodules is not a cycle back into itself.
            if node.startswith(nxt + "."):
                continue
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (found := dfs(nxt)) is not None:
                return found
        stack.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := dfs(start)) is not None:
            return found
    return None


def test_the_package_has_no_import_cycle() -> None:
    """No chain of runtime imports leads from a module back to itself."""
    graph = _graph()
    assert "loopthread._core._loop" in graph  # the walk found the package
    assert _cycle(graph) is None, " -> ".join(_cycle(graph) or [])


def test_the_cycle_check_finds_a_cycle() -> None:
    """The checker itself reports a cycle when there is one (so the test above can fail)."""
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_the_core_imports_no_component() -> None:
    """loopthread._core knows channels, resources, chains, the monitor and metrics only
    through the Component protocol: it imports none of them."""
    components = (
        "loopthread._channel",
        "loopthread._resource",
        "loopthread._enrich",
        "loopthread._monitor",
        "loopthread.metrics",
        "loopthread._loopthread",
        "loopthread._default",
    )
    for module, imports in _graph().items():
        if module.startswith("loopthread._core"):
            bad = sorted(i for i in imports if i.startswith(components))
            assert not bad, f"{module} imports {bad}"


def test_process_state_imports_nothing_but_helpers() -> None:
    """loopthread._process, the owner of process-global state, imports only _util."""
    assert _graph()["loopthread._process"] <= {"loopthread._util"}


def test_modules_and_classes_stay_readable() -> None:
    """No module over 400 lines and no class over 300, except those allowed (with a reason)."""
    too_big: list[str] = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = str(path.relative_to(PACKAGE.parent))
        text = path.read_text()
        lines = len(text.splitlines())
        limit = ALLOWED.get(rel, (MODULE_LINES, ""))[0]
        if lines > limit:
            too_big.append(f"{rel}: {lines} lines > {limit}")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ClassDef) and node.end_lineno is not None:
                size = node.end_lineno - node.lineno + 1
                key = f"{rel}:{node.name}"
                class_limit = ALLOWED.get(key, (CLASS_LINES, ""))[0]
                if size > class_limit:
                    too_big.append(f"{key}: {size} lines > {class_limit}")
    assert not too_big, too_big
