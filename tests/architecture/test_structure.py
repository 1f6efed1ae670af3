"""The shape of the source tree (docs/architecture.md, "Layers and rooms"), checked on every run.

- No import cycle between modules of `src/phalanx`, counting every import: module level, inside
  functions, and under `TYPE_CHECKING` (a cycle hidden behind a lazy import is still two rooms
  that cannot be understood one without the other).
- The chaos lab sees the system only from outside: nothing under `chaos/` imports `server/`.
- The RESP front end never imports the node that composes it.
- No source file is over 1,000 lines (a file past ~800 wants a second room), in `src/phalanx`
  and in `benchmarks/` (the bench suite and its sections) alike.
"""

from __future__ import annotations

import ast
from pathlib import Path

SOURCE = Path(__file__).resolve().parents[2] / "src" / "phalanx"
BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
MAX_LINES = 1000


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SOURCE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(path): path for path in sorted(SOURCE.rglob("*.py"))}


def _resolve(module: str, node: ast.ImportFrom, is_package: bool) -> str:
    """The absolute module an `ImportFrom` names (relative imports resolved)."""
    if node.level == 0:
        return node.module or ""
    base = module.split(".")
    if not is_package:
        base = base[:-1]
    if node.level > 1:
        base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(module: str, path: Path, known: set[str]) -> set[str]:
    """Every phalanx module `module` imports, anywhere in the file (functions and TYPE_CHECKING
    blocks included). `from pkg import name` counts as importing `pkg.name` when that is a
    module, else `pkg`."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(module, node, path.name == "__init__.py")
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
                       for alias in node.names]
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != module and target.startswith("phalanx"):
                found.add(target)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {name: imports_of(name, path, known) for name, path in modules.items()}


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = 0

    def visit(start: str) -> None:
        nonlocal counter
        work = [(start, iter(sorted(graph.get(start, ()))))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            advanced = False
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                    advanced = True
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            if advanced:
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    cycles.append(sorted(component))

    for name in sorted(graph):
        if name not in index:
            visit(name)
    return cycles


def _package_cycle_edges(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """Module edges, but a package's `__init__` re-exporting its own submodules is not a cycle
    with them: drop edges from a package to modules inside it."""
    return {name: {t for t in targets if not t.startswith(name + ".")}
            for name, targets in graph.items()}


def test_no_import_cycles() -> None:
    cycles = find_cycles(_package_cycle_edges(_graph()))
    assert not cycles, "import cycles (TYPE_CHECKING and function-level imports count):\n" + \
        "\n".join(" <-> ".join(cycle) for cycle in cycles)


def test_the_cycle_finder_finds_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert find_cycles(graph) == [["a", "b", "c"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_type_checking_imports_count(tmp_path: Path) -> None:
    path = tmp_path / "mod.py"
    path.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                    "    from phalanx.server.node import Node\n"
                    "def f():\n    import phalanx.raft\n")
    known = {"phalanx.server.node", "phalanx.raft", "phalanx.x.mod"}
    assert imports_of("phalanx.x.mod", path, known) == {"phalanx.server.node", "phalanx.raft"}


def test_chaos_never_imports_the_server() -> None:
    graph = _graph()
    violations = sorted(f"{name} imports {target}" for name, targets in graph.items()
                        if name.startswith("phalanx.chaos") for target in targets
                        if target.startswith("phalanx.server"))
    assert not violations, "the chaos lab must see the system from outside:\n" + \
        "\n".join(violations)


def test_front_end_never_imports_the_node() -> None:
    graph = _graph()
    front = [name for name in graph if name.startswith("phalanx.server.front")]
    assert front, "the RESP front end lives in phalanx.server.front"
    violations = sorted(f"{name} imports {target}" for name in front for target in graph[name]
                        if target == "phalanx.server.node")
    assert not violations, "\n".join(violations)


def _too_long(root: Path) -> list[str]:
    return sorted(f"{path.relative_to(root.parent)}: {lines} lines"
                  for path in root.rglob("*.py")
                  if (lines := len(path.read_text().splitlines())) > MAX_LINES)


def test_no_source_file_over_the_limit() -> None:
    too_long = _too_long(SOURCE)
    assert not too_long, f"files over {MAX_LINES} lines (split them into rooms):\n" + \
        "\n".join(too_long)


def test_no_benchmark_file_over_the_limit() -> None:
    # The bench suite is code we run and read like src/ (issue 15's figures come from it).
    assert sorted(BENCHMARKS.glob("*.py")), f"no benchmark sources under {BENCHMARKS}"
    too_long = _too_long(BENCHMARKS)
    assert not too_long, f"files over {MAX_LINES} lines (split them along a seam):\n" + \
        "\n".join(too_long)


def test_the_line_limit_check_sees_a_long_file(tmp_path: Path) -> None:
    room = tmp_path / "room"
    room.mkdir()
    (room / "short.py").write_text("x = 1\n")
    (room / "long.py").write_text("x = 1\n" * (MAX_LINES + 1))
    assert _too_long(room) == [f"room/long.py: {MAX_LINES + 1} lines"]
