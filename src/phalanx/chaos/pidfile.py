"""What a chaos run started, on disk, so that nothing outlives it: a run record (pid file) per
run, the reaping of a stale run's leftovers at the start of the next, and SIGTERM / SIGHUP
turned into an orderly stop.

Rules of this file:
- One JSON record per running lab process: `<run dir>/<lab pid>.json` (run dir:
  `$PHALANX_CHAOS_RUN_DIR`, else `<tmp>/phalanx-chaos-runs-<uid>`), rewritten atomically
  (temporary file + rename) whenever the lab starts a process (a node, a restarted node,
  HAProxy) or a directory. Each pid is kept with a MARKER, a string its command line must
  contain (the node's data directory, HAProxy's config directory): pids get reused, and other
  people run phalanx nodes on the same machine.
- A record is STALE when its lab process is gone (no such pid, or a pid whose start time is not
  the recorded one). `reap_stale` SIGKILLs every recorded process that is alive AND whose
  command line contains its marker, also the pids of the recorded clusters' `cluster.json`
  (nodes restarted before the record was rewritten), deletes the recorded temporary
  directories, and removes the record. A live run's record is never touched.
- `stop_on_signals()`: SIGTERM and SIGHUP raise `Interrupted` in the main thread (once; a
  second signal during the clean-up is ignored), so every `finally` of the run stops what it
  started. The caller exits 128 + the signal number.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

RUN_DIR_ENV = "PHALANX_CHAOS_RUN_DIR"


class Interrupted(BaseException):
    """SIGTERM or SIGHUP arrived during a run (a BaseException, like KeyboardInterrupt, so
    that no `except Exception` swallows it)."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"interrupted by {signal.Signals(signum).name}")
        self.signum = signum


def run_dir() -> Path:
    given = os.environ.get(RUN_DIR_ENV)
    return Path(given) if given else Path(tempfile.gettempdir()) / \
        f"phalanx-chaos-runs-{os.getuid()}"


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (/proc/<pid>/stat field 22)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rpartition(")")[2].split()
    return fields[19] if len(fields) > 19 else None


def _cmdline(pid: int) -> str | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return raw.replace(b"\0", b" ").decode(errors="replace")


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    state = stat.rpartition(")")[2].split()
    return bool(state) and state[0] not in ("Z", "X")


class RunRecord:
    """The record of this lab process's run (see the module rules)."""

    def __init__(self, directory: Path | None = None) -> None:
        self.directory = directory or run_dir()
        self.directory.mkdir(parents=True, exist_ok=True)
        self.path = self.directory / f"{os.getpid()}.json"
        self._lock = threading.Lock()
        self._data: dict[str, Any] = {"lab_pid": os.getpid(),
                                      "lab_start": _start_time(os.getpid()),
                                      "processes": [], "clusters": [], "temporary": []}
        self._write()

    def _write(self) -> None:
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text(json.dumps(self._data, indent=1))
        temporary.replace(self.path)

    def add_process(self, pid: int | None, marker: str, what: str) -> None:
        if not pid:
            return
        with self._lock:
            entry = {"pid": pid, "marker": marker, "what": what}
            if entry not in self._data["processes"]:
                self._data["processes"].append(entry)
                self._write()

    def add_cluster(self, data_dir: str | Path) -> None:
        with self._lock:
            self._data["clusters"].append(str(data_dir))
            self._write()

    def add_temporary(self, path: str | Path) -> None:
        with self._lock:
            self._data["temporary"].append(str(path))
            self._write()

    @property
    def data(self) -> dict[str, Any]:
        with self._lock:
            copied: dict[str, Any] = json.loads(json.dumps(self._data))
            return copied

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.path.unlink()


def _stale(record: dict[str, Any]) -> bool:
    pid = record.get("lab_pid")
    if not isinstance(pid, int) or pid == os.getpid():
        return False
    return not _alive(pid) or _start_time(pid) != record.get("lab_start")


def _cluster_pids(data_dir: str) -> list[tuple[int, str]]:
    """(pid, marker) of the nodes of a recorded cluster's `cluster.json`."""
    try:
        raw = json.loads((Path(data_dir) / "cluster.json").read_text())
    except (OSError, ValueError):
        return []
    found = []
    for node in raw.get("nodes") or []:
        pid, path = node.get("pid"), node.get("data_dir")
        if isinstance(pid, int) and isinstance(path, str) and path:
            found.append((pid, path))
    return found


def reap_stale(directory: Path | None = None) -> list[str]:
    """Reap every stale run's leftovers (see the module rules); what was done, in words."""
    directory = directory or run_dir()
    done: list[str] = []
    if not directory.is_dir():
        return done
    for path in sorted(directory.glob("*.json")):
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(record, dict) or not _stale(record):
            continue
        targets = [(int(p["pid"]), str(p["marker"])) for p in record.get("processes") or []
                   if isinstance(p, dict) and isinstance(p.get("pid"), int)]
        for data_dir in record.get("clusters") or []:
            targets.extend(_cluster_pids(str(data_dir)))
        killed = 0
        for pid, marker in sorted(set(targets)):
            command = _cmdline(pid) if _alive(pid) else None
            if command is None or not marker or marker not in command:
                continue
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGCONT)
                os.kill(pid, signal.SIGKILL)
                killed += 1
        for temporary in record.get("temporary") or []:
            shutil.rmtree(str(temporary), ignore_errors=True)
        with contextlib.suppress(OSError):
            path.unlink()
        done.append(f"reaped the stale run of lab pid {record.get('lab_pid')}: {killed} "
                    f"process(es) killed, {len(record.get('temporary') or [])} "
                    "temporary director(ies) removed")
    return done


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """SIGTERM / SIGHUP raise `Interrupted` once (main thread only; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    fired: list[int] = []

    def handler(signum: int, _frame: FrameType | None) -> None:
        if fired:
            return
        fired.append(signum)
        raise Interrupted(signum)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
