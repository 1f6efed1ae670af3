"""The compiled hot path (phalanx/compiled.py): a fresh mypyc build is loaded, `PHALANX_PURE=1`
runs the sources, and an edited source never runs as its stale extension.

Each check runs in a fresh interpreter (the mode is decided once, at `import phalanx`). The
staleness checks run on a copy of the package in a temporary directory, so they never touch the
worktree's build; they need no compiler (a manifest is written by hand where no build exists).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import phalanx.compiled as compiled

SOURCE = Path(compiled.__file__).resolve().parent


def _run(code: str, *, path: Path | None = None, pure: bool = False) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["PHALANX_PURE"] = "1" if pure else "0"
    if path is not None:
        env["PYTHONPATH"] = str(path)
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=120, check=True)


_REPORT = (
    "import json, importlib, phalanx.compiled as c\n"
    "files = {m: importlib.import_module(m).__file__ for m in c.COMPILED_MODULES}\n"
    "print(json.dumps({'compiled': c.status().compiled, 'reason': c.status().reason,"
    " 'files': files}))\n"
)


def _has_build() -> bool:
    return (compiled.BUILD_DIR / "manifest.json").exists()


def test_pure_env_runs_every_module_from_source() -> None:
    report = json.loads(_run(_REPORT, pure=True).stdout)
    assert report["compiled"] is False and report["reason"] == "PHALANX_PURE=1"
    assert all(file.endswith(".py") for file in report["files"].values()), report["files"]


def test_a_fresh_build_is_loaded_and_the_version_says_so() -> None:
    if not _has_build():
        if os.environ.get("PHALANX_NO_SKIPS") == "1":
            pytest.fail("no compiled build: `make compile` must have run (CI tests both modes)")
        pytest.skip("no compiled build here (`make compile`)")
    report = json.loads(_run(_REPORT).stdout)
    if "stale" in report["reason"] and os.environ.get("PHALANX_NO_SKIPS") != "1":
        pytest.skip(report["reason"])  # a developer's old build; CI always builds afresh
    assert report["compiled"] is True, report["reason"]
    for module, file in report["files"].items():
        assert Path(file).is_relative_to(compiled.BUILD_DIR) and file.endswith(".so"), module
    version = subprocess.run([sys.executable, "-m", "phalanx", "--version"], capture_output=True,
                             text=True, timeout=120, check=True,
                             env={**os.environ, "PHALANX_PURE": "0"}).stdout
    assert f"compiled (mypyc, {len(compiled.COMPILED_MODULES)} modules)" in version


def _copy_package(tmp_path: Path) -> Path:
    copy = tmp_path / "phalanx"
    shutil.copytree(SOURCE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    fresh, _ = compiled._fresh_build()
    if not fresh:
        # No (fresh) build here: a manifest by hand, as `build` writes it, naming extension
        # files that do not exist (never loaded: the checks refuse the build before that).
        shutil.rmtree(copy / "_mypyc", ignore_errors=True)
        (copy / "_mypyc").mkdir()
        sources = {module: hashlib.sha256(
            copy.parent.joinpath(*module.split(".")).with_suffix(".py").read_bytes()).hexdigest()
            for module in compiled.COMPILED_MODULES}
        files = {module: module.replace(".", "/") + ".so" for module in compiled.COMPILED_MODULES}
        (copy / "_mypyc" / "manifest.json").write_text(json.dumps(
            {"tag": compiled._build_tag(), "sources": sources, "files": files}))
    return tmp_path


def test_an_edited_source_runs_as_source_not_as_its_stale_extension(tmp_path: Path) -> None:
    root = _copy_package(tmp_path)
    edited = root / "phalanx" / "resp" / "_parser.py"
    edited.write_text(edited.read_text() + "\nEDITED_AFTER_THE_BUILD = True\n")
    done = _run(_REPORT + "import phalanx.resp._parser as p; print(p.EDITED_AFTER_THE_BUILD)",
                path=root)
    report = json.loads(done.stdout.splitlines()[0])
    assert report["compiled"] is False
    assert "stale" in report["reason"] and "phalanx.resp._parser" in report["reason"]
    assert "phalanx.resp._parser changed since it was built" in done.stderr
    assert done.stdout.splitlines()[1] == "True"
    assert all(Path(file).is_relative_to(root) and file.endswith(".py")
               for file in report["files"].values()), report["files"]


def test_a_build_for_another_interpreter_is_not_loaded(tmp_path: Path) -> None:
    root = _copy_package(tmp_path)
    manifest_path = root / "phalanx" / "_mypyc" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["tag"] = "cpython-39-x86_64-linux-gnu.so"
    manifest_path.write_text(json.dumps(manifest))
    report = json.loads(_run(_REPORT, path=root).stdout)
    assert report["compiled"] is False and "this interpreter is" in report["reason"]
    assert all(file.endswith(".py") for file in report["files"].values())


def test_an_incomplete_build_is_not_loaded(tmp_path: Path) -> None:
    root = _copy_package(tmp_path)
    manifest_path = root / "phalanx" / "_mypyc" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["files"]["phalanx.resp._parser"] = "phalanx/resp/gone.so"
    manifest_path.write_text(json.dumps(manifest))
    done = _run(_REPORT, path=root)
    report = json.loads(done.stdout)
    assert report["compiled"] is False and "incomplete" in report["reason"]
    assert "incomplete" in done.stderr


def test_build_without_a_compiler_falls_back_to_pure(monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("CC", "no-such-compiler-phalanx")
    assert compiled.build(build_dir=Path("/nonexistent/never-written")) == 0
    assert "no C compiler 'no-such-compiler-phalanx'" in capsys.readouterr().err
    assert compiled.build(require=True, build_dir=Path("/nonexistent/never-written")) == 1
