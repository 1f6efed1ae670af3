"""The layer rules of docs/architecture.md ("Layers and rooms"), checked on the source tree.

- Pure layers (raft, kv, resp, placement, checker, crdt) never import asyncio, socket, sqlite3,
  threading, time, or random at module level (randomness arrives as an injected
  `random.Random`; its type is named under TYPE_CHECKING).
- Nothing but tests and the CLI package (`phalanx.cli`) imports sim, chaos or testing.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SOURCE = Path(__file__).resolve().parents[2] / "src" / "phalanx"
PURE_LAYERS = ["raft", "kv", "resp", "placement", "checker", "crdt"]
BANNED = {"asyncio", "socket", "sqlite3", "threading", "time", "random"}
ALLOWED_IMPORTS: set[tuple[str, str]] = set()


def _module_level_imports(tree: ast.Module) -> list[tuple[str, int]]:
    found = []
    for node in tree.body:
        if isinstance(node, ast.Import):
            found += [(alias.name.split(".")[0], node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.module.split(".")[0], node.lineno))
    return found


def _files(layer: str) -> list[Path]:
    return sorted((SOURCE / layer).rglob("*.py"))


@pytest.mark.parametrize("layer", PURE_LAYERS)
def test_pure_layers_import_no_io(layer: str) -> None:
    violations = []
    for path in _files(layer):
        relative = path.relative_to(SOURCE).as_posix()
        tree = ast.parse(path.read_text(), filename=str(path))
        for module, line in _module_level_imports(tree):
            if module in BANNED and (relative, module) not in ALLOWED_IMPORTS:
                violations.append(f"{relative}:{line} imports {module}")
    assert not violations, "pure layer imports IO/clock/global random:\n" + "\n".join(violations)


@pytest.mark.parametrize("layer", PURE_LAYERS)
def test_pure_layers_never_call_global_random(layer: str) -> None:
    violations = []
    for path in _files(layer):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id in {"random", "time"}
                and node.func.attr != "Random"
            ):
                violations.append(f"{path.relative_to(SOURCE)}:{node.lineno} calls "
                                  f"{node.func.value.id}.{node.func.attr}()")
    assert not violations, "\n".join(violations)


def test_the_scanner_catches_a_violation(tmp_path: Path) -> None:
    tree = ast.parse("import asyncio\nimport os\nfrom time import monotonic\n")
    modules = {module for module, _ in _module_level_imports(tree)}
    assert modules & BANNED == {"asyncio", "time"}


def test_only_tests_and_cli_import_tools() -> None:
    violations = []
    for path in sorted(SOURCE.rglob("*.py")):
        relative = path.relative_to(SOURCE).as_posix()
        own_package = relative.split("/")[0]
        if own_package == "cli":
            continue
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            module = None
            if isinstance(node, ast.ImportFrom) and node.module:
                module = node.module
            elif isinstance(node, ast.Import):
                module = node.names[0].name
            if module is None:
                continue
            parts = module.split(".")
            is_tool = (len(parts) >= 2 and parts[0] == "phalanx"
                       and parts[1] in {"sim", "chaos", "testing"})
            allowed = is_tool and (parts[1] == own_package
                                   or (own_package == "sim" and parts[1] == "testing"))
            if is_tool and not allowed:
                violations.append(f"{relative}:{node.lineno} imports {module}")
    assert not violations, "\n".join(violations)
