"""Packages depend one way, top to bottom, and every module stays small enough to read.

The graph is read from the source with `ast`: every import counts, including those inside
functions and under `TYPE_CHECKING` (a type-only import still ties one package to another).
Each module is folded to its top package (`research_service/web/handlers.py` is `web`); a
top-level module is its own node (`app`, `settings`), and `research_service/__init__.py` is
`research_service`.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import research_service

ROOT: Final = Path(research_service.__file__).resolve().parent
PACKAGE: Final = "research_service"
MAX_MODULE_LINES: Final = 400

#: The bottom layer: settings, errors, events and the formats every layer shares.
CORE: Final = frozenset(
    {
        PACKAGE,  # __version__
        "settings",
        "settings_fields",
        "defaults",
        "stats",
        "errors",
        "logs",
        "log_writer",
        "own_thread",
        "loop_turns",
        "collector",
        "events",
        "event_shapes",
        "net",
        "addresses",
        "hits",
        "records",
        "regular_files",
        "recording",
        "problem_json",
        "text",
        "sqlite_errors",
        "strict_json",
        "outage",
    }
)
#: Top to bottom: a node imports only nodes of its own layer or the layers below (and, by the
#: cycle test, never one that imports it back).
LAYERS: Final = (
    ("entry points", frozenset({"__main__", "cli"})),
    # The MCP server is a client of the service's HTTP API, as the terminal client is.
    ("MCP server", frozenset({"mcp"})),
    ("app assembly", frozenset({"app", "replay_app"})),
    ("web", frozenset({"web"})),
    (
        "auth, recordings, cluster, webhooks",
        frozenset({"auth", "recordings", "cluster", "webhooks"}),
    ),
    ("runs", frozenset({"runs"})),
    ("pipeline", frozenset({"pipeline"})),
    ("providers, reading", frozenset({"providers", "reading"})),
    ("corpus", frozenset({"corpus"})),
    ("core", CORE),
)
#: The terminal client talks to a service over HTTP only: it needs the core and nothing else.
CLIENT: Final = "client"


@dataclass(frozen=True, slots=True)
class Edge:
    """One import that crosses from one node to another, and where it is written."""

    source: str
    target: str
    where: str  # research_service/web/handlers.py:12


def _module_name(path: Path) -> tuple[str, ...]:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return parts[:-1] if parts[-1] == "__init__" else parts


def _node(module: tuple[str, ...]) -> str:
    return PACKAGE if len(module) == 1 else module[1]


def _is_module(name: str) -> bool:
    return (ROOT / name).is_dir() or (ROOT / f"{name}.py").is_file()


def _imported(
    node: ast.Import | ast.ImportFrom, module: tuple[str, ...], *, is_package: bool
) -> Iterator[tuple[str, ...]]:
    """The modules an import statement names, as tuples of name parts."""
    if isinstance(node, ast.Import):
        for alias in node.names:
            yield tuple(alias.name.split("."))
        return
    if node.level:
        package = module if is_package else module[:-1]
        base = package[: len(package) - (node.level - 1)]
    else:
        base = ()
    target = base + tuple(node.module.split(".") if node.module else ())
    if target == (PACKAGE,):
        # `from research_service import app` names a module; `import __version__` the root.
        for alias in node.names:
            yield (PACKAGE, alias.name) if _is_module(alias.name) else (PACKAGE,)
    else:
        yield target


def package_edges() -> list[Edge]:
    """Every import in the package from one node to another."""
    edges: list[Edge] = []
    for path in sorted(ROOT.rglob("*.py")):
        module = _module_name(path)
        source = _node(module)
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Import | ast.ImportFrom):
                continue
            for target in _imported(node, module, is_package=path.name == "__init__.py"):
                if target[0] != PACKAGE or _node(target) == source:
                    continue
                where = f"{path.relative_to(ROOT.parent)}:{node.lineno}"
                edges.append(Edge(source, _node(target), where))
    return edges


def find_cycles(edges: list[Edge]) -> list[list[Edge]]:
    """One cycle (as the edges that close it) through each strongly connected group of nodes."""
    graph: dict[str, dict[str, Edge]] = {}
    for edge in edges:
        graph.setdefault(edge.source, {}).setdefault(edge.target, edge)
    cycles: list[list[Edge]] = []
    seen: set[str] = set()
    for start in sorted(graph):
        if start in seen:
            continue
        # Depth-first from `start`, remembering the path, until an edge returns to it.
        stack: list[tuple[str, list[Edge]]] = [(start, [])]
        visited: set[str] = set()
        while stack:
            node, path = stack.pop()
            for target, edge in sorted(graph.get(node, {}).items()):
                if target == start:
                    cycle = [*path, edge]
                    cycles.append(cycle)
                    seen.update(e.source for e in cycle)
                    stack.clear()
                    break
                if target not in visited:
                    visited.add(target)
                    stack.append((target, [*path, edge]))
    return cycles


def _layer_of(node: str) -> int | None:
    return next((i for i, (_, nodes) in enumerate(LAYERS) if node in nodes), None)


def _show(edges: list[Edge]) -> str:
    return "\n".join(f"  {e.source} -> {e.target}  ({e.where})" for e in edges)


def test_the_graph_sees_imports_inside_functions() -> None:
    """The replay server loads the app inside a function; the graph still has that edge."""
    assert ("replay_app", "app") in {(e.source, e.target) for e in package_edges()}


def test_cycles_are_found_and_shown() -> None:
    edges = [Edge("a", "b", "a.py:1"), Edge("b", "c", "b.py:2"), Edge("c", "a", "c.py:3")]
    assert find_cycles([*edges, Edge("c", "d", "c.py:4")]) == [edges]


def test_no_package_imports_a_package_that_imports_it_back() -> None:
    cycles = find_cycles(package_edges())
    shown = "\n\n".join(_show(cycle) for cycle in cycles)
    assert not cycles, f"import cycles between packages:\n{shown}"


def test_every_package_has_a_layer() -> None:
    nodes = {e.source for e in package_edges()} | {e.target for e in package_edges()}
    unplaced = sorted(n for n in nodes if n != CLIENT and _layer_of(n) is None)
    assert not unplaced, f"place these in LAYERS (or CORE) of {__name__}: {unplaced}"


def test_packages_import_only_the_layers_below_them() -> None:
    upward = []
    for edge in package_edges():
        source, target = _layer_of(edge.source), _layer_of(edge.target)
        if source is None or target is None:
            continue  # the client has its own test; an unplaced node fails its own
        if target < source:
            upward.append(edge)
    names = " → ".join(name for name, _ in LAYERS)
    assert not upward, f"imports against the layers ({names}):\n{_show(upward)}"


def test_the_terminal_client_imports_only_the_core() -> None:
    """The client speaks the public HTTP API; `ask` without --server is the CLI's business."""
    outside = [e for e in package_edges() if e.source == CLIENT and e.target not in CORE]
    assert not outside, f"the client imports server packages:\n{_show(outside)}"


def test_the_mcp_server_imports_only_the_client_and_the_core() -> None:
    """The MCP server uses the public HTTP API, so it serves `serve`, `replay` and clusters."""
    allowed = CORE | {CLIENT}
    outside = [e for e in package_edges() if e.source == "mcp" and e.target not in allowed]
    assert not outside, f"the MCP server imports server packages:\n{_show(outside)}"


def test_every_module_is_short_enough_to_read_in_one_sitting() -> None:
    lengths = {
        str(path.relative_to(ROOT.parent)): len(path.read_text(encoding="utf-8").splitlines())
        for path in sorted(ROOT.rglob("*.py"))
    }
    long = {path: lines for path, lines in lengths.items() if lines >= MAX_MODULE_LINES}
    assert not long, f"modules of {MAX_MODULE_LINES} lines or more; split them: {long}"
