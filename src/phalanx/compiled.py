"""The compiled hot path: which modules mypyc compiles, where the build lives, and whether this
process runs it (issue 15, lever 2).

phalanx is pure Python first: `pip install` never needs a C compiler, and every module runs as
plain source. Where a compiler exists, `make compile` (`python -m phalanx.compiled build`)
compiles the modules of `COMPILED_MODULES` with mypyc into `src/phalanx/_mypyc/`, a directory of
its own, never next to the sources, together with a manifest of the SHA-256 of each source it
was built from. At `import phalanx` (`activate`, called by `phalanx/__init__.py`), the build is
used only if every compiled module's source still hashes to its manifest entry and the build
is for this interpreter; then a meta-path finder loads those modules from the build. Otherwise
every module runs from source, and a stale build says so once on stderr.

Rules of this file:
- A developer who edits a compiled module's `.py` runs the edited source, never a stale
  extension: the build is all or nothing (compiled modules reach each other's native classes
  directly, so a mix of a fresh and a stale build is never loaded).
- `PHALANX_PURE=1` runs pure Python even with a fresh build (CI runs the pure layers' tests so).
- The runtime part (`activate`, `status`) imports stdlib only and costs about a millisecond;
  the build (`build`) imports mypyc and setuptools, only when asked.
- A missing compiler or mypyc is not an error: `build` says so and leaves phalanx pure
  (`--require` turns that into a failure, for CI).
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Final

__all__ = ["COMPILED_MODULES", "CompiledStatus", "activate", "build", "status"]

#: The modules mypyc compiles, each measured to pay (benchmarks/bench_compiled.py, issue 15).
#: Modules compiled together see each other's classes as native classes.
COMPILED_MODULES: Final[tuple[str, ...]] = (
    "phalanx.resp._types",
    "phalanx.resp._inline",
    "phalanx.resp._parser",
    "phalanx.resp._reply_parser",
    "phalanx.resp._hiredis",
    "phalanx.raft.log",
    "phalanx.raft.progress",
    "phalanx.raft.quorum",
    "phalanx.raft.read_only",
    "phalanx.raft.replication",
    "phalanx.raft.raft",
    "phalanx.raft.node",
    "phalanx.raft.pipeline",
    "phalanx.raft.confchange",
    "phalanx.kv.machine",
    "phalanx.kv.keyspace",
    "phalanx.kv.codec",
    "phalanx.kv.commands.strings",
    "phalanx.placement.slots",
)

_PACKAGE_DIR: Final = Path(__file__).resolve().parent
BUILD_DIR: Final = _PACKAGE_DIR / "_mypyc"
_MANIFEST: Final = "manifest.json"
_GROUP: Final = "phalanx__mypyc"  # the name of the build's shared library module
_PURE_ENV: Final = "PHALANX_PURE"


@dataclass(frozen=True, slots=True)
class CompiledStatus:
    """Whether this process runs the compiled modules, and why not if it does not."""

    compiled: bool
    modules: tuple[str, ...]
    reason: str  # "" when compiled

    def describe(self) -> str:
        if self.compiled:
            return f"compiled (mypyc, {len(self.modules)} modules)"
        return f"pure Python ({self.reason})"


_status = CompiledStatus(False, (), "not activated")


def status() -> CompiledStatus:
    """This process's mode, as decided by `activate` at `import phalanx`."""
    return _status


def _source_path(module: str) -> Path:
    return _PACKAGE_DIR.parent.joinpath(*module.split(".")).with_suffix(".py")


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _build_tag() -> str:
    return f"{sys.implementation.cache_tag}-{importlib.machinery.EXTENSION_SUFFIXES[0]}"


class _BuildFinder(importlib.abc.MetaPathFinder):
    """Loads the modules of a fresh build from `BUILD_DIR`; every other module as usual."""

    def __init__(self, paths: dict[str, Path]) -> None:
        self._paths = paths

    def find_spec(
        self, fullname: str, path: object = None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        location = self._paths.get(fullname)
        if location is None:
            return None
        loader = importlib.machinery.ExtensionFileLoader(fullname, str(location))
        return importlib.util.spec_from_file_location(fullname, location, loader=loader)


def _fresh_build() -> tuple[dict[str, Path], str]:
    """The extension path of every module of a fresh build, or ({}, why not)."""
    manifest_path = BUILD_DIR / _MANIFEST
    if not manifest_path.exists():
        return {}, "no compiled build; `make compile` makes one"
    try:
        manifest = json.loads(manifest_path.read_text())
        sources: dict[str, str] = manifest["sources"]
        files: dict[str, str] = manifest["files"]
        tag: str = manifest["tag"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        return {}, f"unreadable build manifest {manifest_path}: {error!r}"
    if tag != _build_tag():
        return {}, f"the build is for {tag}, this interpreter is {_build_tag()}"
    stale = [module for module, digest in sources.items()
             if not _source_path(module).exists() or _digest(_source_path(module)) != digest]
    if stale:
        return {}, (f"the compiled build is stale: {', '.join(sorted(stale))} changed since it "
                    "was built; run `make compile` again")
    paths = {name: BUILD_DIR / relative for name, relative in files.items()}
    missing = [str(path) for path in paths.values() if not path.exists()]
    if missing:
        return {}, f"the compiled build is incomplete: {', '.join(missing)} missing"
    return paths, ""


def activate() -> CompiledStatus:
    """Decide this process's mode (once, at `import phalanx`): load a fresh build's modules."""
    global _status
    if _status.reason != "not activated":
        return _status
    if os.environ.get(_PURE_ENV, "") not in ("", "0"):
        _status = CompiledStatus(False, (), f"{_PURE_ENV}=1")
        return _status
    paths, reason = _fresh_build()
    if not paths:
        if "stale" in reason or "incomplete" in reason or "unreadable" in reason:
            print(f"phalanx: {reason}; running pure Python", file=sys.stderr)
        _status = CompiledStatus(False, (), reason)
        return _status
    sys.meta_path.insert(0, _BuildFinder(paths))
    modules = tuple(sorted(name for name in paths if name.startswith("phalanx.")))
    _status = CompiledStatus(True, modules, "")
    return _status


def build(*, require: bool = False, build_dir: Path = BUILD_DIR) -> int:
    """Compile `COMPILED_MODULES` into `build_dir` (the whole build is replaced). Returns an
    exit status: 0 built, or skipped without a compiler unless `require`."""
    import shutil
    import tempfile

    def give_up(why: str) -> int:
        print(f"phalanx: not compiled ({why}); phalanx runs pure Python", file=sys.stderr)
        return 1 if require else 0

    compiler = os.environ.get("CC", "cc")
    if shutil.which(compiler.split()[0]) is None:
        return give_up(f"no C compiler {compiler!r} on PATH")
    try:
        from mypyc.build import mypycify
        from setuptools import Distribution  # type: ignore[import-untyped]
    except ImportError as error:
        return give_up(f"mypyc or setuptools missing: {error}")
    src = _PACKAGE_DIR.parent
    sources = {module: _source_path(module) for module in COMPILED_MODULES}
    digests = {module: _digest(path) for module, path in sources.items()}
    shutil.rmtree(build_dir, ignore_errors=True)
    with tempfile.TemporaryDirectory(prefix="phalanx-mypyc-") as scratch:
        previous = Path.cwd()
        os.chdir(src)  # mypyc names modules after their paths relative to the current directory
        try:
            extensions = mypycify(
                # The project's mypy configuration applies; its sections for modules outside
                # this build are expected, not a mistake.
                ["--no-warn-unused-configs",
                 *(str(path.relative_to(src)) for path in sources.values())],
                opt_level="3", group_name=_GROUP, target_dir=str(Path(scratch) / "c"),
            )
            distribution = Distribution({"name": "phalanx-compiled", "ext_modules": extensions})
            command = distribution.get_command_obj("build_ext")
            command.build_lib = str(build_dir)
            command.build_temp = str(Path(scratch) / "temp")
            distribution.run_command("build_ext")
        except BaseException as error:  # a compiler or type error: stay pure, say why
            shutil.rmtree(build_dir, ignore_errors=True)
            if isinstance(error, KeyboardInterrupt):
                raise
            return give_up(f"the build failed: {error!r}")
        finally:
            os.chdir(previous)
    files: dict[str, str] = {}
    for path in build_dir.rglob("*" + importlib.machinery.EXTENSION_SUFFIXES[0]):
        relative = path.relative_to(build_dir)
        name = ".".join(relative.parts)[: -len(importlib.machinery.EXTENSION_SUFFIXES[0])]
        files[name] = str(relative)
    (build_dir / _MANIFEST).write_text(json.dumps(
        {"tag": _build_tag(), "sources": digests, "files": files}, indent=1, sort_keys=True))
    print(f"phalanx: compiled {len(COMPILED_MODULES)} modules into {build_dir}", file=sys.stderr)
    return 0


def main(argv: list[str]) -> int:
    if argv[:1] == ["build"]:
        return build(require="--require" in argv)
    if argv[:1] == ["clean"]:
        import shutil

        shutil.rmtree(BUILD_DIR, ignore_errors=True)
        return 0
    print(status().describe())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
