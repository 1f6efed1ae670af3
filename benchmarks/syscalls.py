"""Syscalls per request (issue 15, lever 6): phalanx's 3 nodes vs one redis-server (AOF always).

    python benchmarks/syscalls.py [--requests 20000] [--clients 50]

For SET and GET: the same redis-benchmark run (no pipelining, keys random over 100,000; the
GET run after a SET run, so most keys exist) against phalanx's leader and against redis-server
`appendonly yes appendfsync always`, each server process under `strace -c -f` for the run
(every thread). Prints, per request: syscalls of the leader, of each follower, of redis-server,
and the top calls. strace slows the traced processes a lot: compare counts, never times.
Every process it starts is stopped by pid at the end, also on errors.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import resp_bench as rb  # noqa: E402

LINE = re.compile(r"^\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:(\d+)\s+)?(\w+)\s*$")


def parse_strace(text: str) -> dict[str, int]:
    """`strace -c` summary -> syscall name -> calls."""
    calls = {}
    for line in text.splitlines():
        match = LINE.match(line)
        if match and match.group(3) != "total":
            calls[match.group(3)] = int(match.group(1))
    return calls


def traced(pids: dict[str, int], work: Any, root: Path) -> tuple[dict[str, dict[str, int]], Any]:
    """Run `work()` with every pid under `strace -c -f`; the counts per name, and work's result."""
    tracers = {}
    for name, pid in pids.items():
        out = root / f"strace-{name}-{time.monotonic_ns()}.txt"
        tracers[name] = (subprocess.Popen(["strace", "-c", "-f", "-p", str(pid), "-o", str(out)],
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                          start_new_session=True), out)
    time.sleep(1.0)  # attached
    try:
        result = work()
    finally:
        for process, _out in tracers.values():
            with_signal(process, signal.SIGINT)
    counts = {}
    for name, (process, out) in tracers.items():
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        counts[name] = parse_strace(out.read_text() if out.exists() else "")
    return counts, result


def with_signal(process: subprocess.Popen[bytes], sig: int) -> None:
    if process.poll() is None:
        os.kill(process.pid, sig)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--top", type=int, default=8)
    args = parser.parse_args()
    if not shutil.which("strace"):
        print("needs strace (apt-get install strace)", file=sys.stderr)
        return 2
    root = Path(tempfile.mkdtemp(prefix="phalanx-syscalls-"))
    cluster = rb.Phalanx(root / "phalanx")
    redis: rb.RedisServer | None = None
    try:
        cluster.data_dir.mkdir()
        cluster.start(3, timeout=90)
        redis = rb.start_redis("redis-aof", root, ["--appendonly", "yes",
                                                   "--appendfsync", "always", "--save", ""])
        roles = cluster.roles()
        leader = next(n for n, role in sorted(roles.items()) if role == "leader")
        pids = {("leader" if n["id"] == leader else f"follower-{n['id']}"): int(n["pid"])
                for n in cluster.nodes}
        host, port = cluster.address(leader)
        for test in ("set", "get"):
            for target in ("phalanx", "redis"):
                address = (host, port) if target == "phalanx" else (redis.host, redis.port)
                watched = pids if target == "phalanx" else {"redis-server": redis.process.pid}

                def work(address: tuple[str, int] = address, test: str = test) -> Any:
                    return rb.run_benchmark(address[0], address[1], test.upper(), 1, args.clients,
                                            args.requests, 100000, 600)

                counts, (ok, _metrics, error, _elapsed) = traced(watched, work, root)
                if not ok:
                    print(f"{test} {target}: redis-benchmark failed: {error}")
                    continue
                for name, calls in counts.items():
                    total = sum(calls.values())
                    top = sorted(calls.items(), key=lambda item: -item[1])[:args.top]
                    shown = ", ".join(f"{call} {n / args.requests:.2f}" for call, n in top)
                    print(f"{test.upper()} {target:<8} {name:<14} {total / args.requests:6.2f} "
                          f"syscalls/request ({shown})", flush=True)
    finally:
        if redis is not None:
            rb.stop_process(redis.process)
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
