"""phalanx.checker is pure: standard library only, and no clocks, sockets, threads or
module-level randomness (the rule of the pure layers in docs/architecture.md)."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import phalanx.checker

FORBIDDEN = {"asyncio", "socket", "time", "threading", "sqlite3", "random"}
PACKAGE = Path(phalanx.checker.__file__).parent


def _imports(path: Path) -> list[str]:
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module)
    return names


def test_checker_imports_only_the_standard_library_and_phalanx() -> None:
    files = sorted(PACKAGE.glob("*.py"))
    assert files
    for path in files:
        for name in _imports(path):
            top = name.split(".")[0]
            assert top not in FORBIDDEN, f"{path.name} imports {name}"
            assert top == "phalanx" or top in sys.stdlib_module_names, (
                f"{path.name} imports non-stdlib {name}"
            )
            if top == "phalanx":
                assert name.startswith(("phalanx.checker", "phalanx.errors")), (
                    f"{path.name} imports {name}: only phalanx.errors is allowed"
                )


def test_public_api_is_exported() -> None:
    for name in phalanx.checker.__all__:
        assert hasattr(phalanx.checker, name), name
