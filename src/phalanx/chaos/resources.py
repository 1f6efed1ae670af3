"""What a long chaos run costs over time: every node's resident memory and data-directory size,
the lab's own memory, and the machine's load, sampled every `interval_s`.

Rules of this file:
- Read-only and local: /proc/<pid>/status (VmRSS) of the pids in the cluster's `cluster.json`,
  the size of every file under each node's data directory, /proc/self, `os.getloadavg()`.
  A node that is down (killed, restarting) has no RSS in that sample (None), never a guess.
- The sampler is a daemon thread that never raises into the run; `summary` is a pure function
  of the samples (unit-tested).
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

#: Seconds between two samples.
DEFAULT_INTERVAL_S = 10.0


def rss_mb(pid: int | None) -> float | None:
    """Resident memory of `pid` in MiB (None when it is not running)."""
    if not pid:
        return None
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return round(int(line.split()[1]) / 1024.0, 1)
    except (OSError, ValueError, IndexError):
        return None
    return None


def disk_mb(path: str | Path | None) -> float | None:
    """Total size of the files under `path` in MiB (None when it does not exist)."""
    if not path or not Path(path).exists():
        return None
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, name)).st_size
    return round(total / (1024.0 * 1024.0), 2)


def sample(at_s: float, nodes: Sequence[tuple[str, int | None, str | None]]) -> dict[str, Any]:
    """One sample: `nodes` are (id, pid, data_dir)."""
    load = os.getloadavg()
    return {"t_s": round(at_s, 1),
            "nodes": {node: {"rss_mb": rss_mb(pid), "disk_mb": disk_mb(path)}
                      for node, pid, path in nodes},
            "lab_rss_mb": rss_mb(os.getpid()),
            "load": [round(value, 2) for value in load]}


def summary(samples: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Per node: RSS and disk at the first and last sample and their maxima; the lab's RSS at
    the start, the end and its maximum; the load average (1 min) mean and maximum."""
    per_node: dict[str, dict[str, float | None]] = {}
    nodes = sorted({node for s in samples for node in (s.get("nodes") or {})})
    for node in nodes:
        rows = [s["nodes"][node] for s in samples if node in (s.get("nodes") or {})]
        entry: dict[str, float | None] = {}
        for measure in ("rss_mb", "disk_mb"):
            values = [float(row[measure]) for row in rows if row.get(measure) is not None]
            entry[f"{measure}_first"] = values[0] if values else None
            entry[f"{measure}_last"] = values[-1] if values else None
            entry[f"{measure}_max"] = max(values) if values else None
        per_node[node] = entry
    lab = [float(s["lab_rss_mb"]) for s in samples if s.get("lab_rss_mb") is not None]
    loads = [float(s["load"][0]) for s in samples if s.get("load")]
    return {"samples": len(samples), "nodes": per_node,
            "lab_rss_mb": {"first": lab[0] if lab else None, "last": lab[-1] if lab else None,
                           "max": max(lab) if lab else None},
            "load_1m": {"mean": round(sum(loads) / len(loads), 2) if loads else None,
                        "max": max(loads) if loads else None}}


class ResourceSampler:
    """Samples every `interval_s` until `stop()`; `nodes()` gives (id, pid, data_dir) now."""

    def __init__(self, nodes: Callable[[], Sequence[tuple[str, int | None, str | None]]],
                 clock: Callable[[], float], interval_s: float = DEFAULT_INTERVAL_S) -> None:
        self.nodes = nodes
        self.clock = clock
        self.interval_s = interval_s
        self.samples: list[dict[str, Any]] = []
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True, name="resources")

    def _run(self) -> None:
        while True:
            with contextlib.suppress(Exception):
                self.samples.append(sample(self.clock(), self.nodes()))
            if self.stop_event.wait(self.interval_s):
                return

    def start(self) -> ResourceSampler:
        self.thread.start()
        return self

    def stop(self) -> dict[str, Any]:
        self.stop_event.set()
        self.thread.join(10.0)
        with contextlib.suppress(Exception):
            self.samples.append(sample(self.clock(), self.nodes()))
        return {"interval_s": self.interval_s, "summary": summary(self.samples),
                "samples": list(self.samples)}
