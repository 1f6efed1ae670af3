"""SET/GET throughput and leader CPU per request: pure Python vs the mypyc build, one run.

    make compile && .venv/bin/python benchmarks/bench_compiled_cluster.py [--rounds 3]

Each round starts a 3-node cluster (node defaults, fsync on) in each mode, the order
alternating per round (`PHALANX_PURE=1` for pure; the node processes inherit it), checks the
mode through the leader's `INFO server` (`phalanx_compiled`), drives the leader with
redis-benchmark (SET, then GET; 50 clients, no pipelining) and reads the leader's CPU time
(utime + stime from /proc) before and after each test: CPU microseconds per request on the
leader. Prints the medians per mode and the ratios, with the load average. Stops every process
it started, by pid, also on error.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import resp_bench as rb  # noqa: E402
from bench_ratios import cut_up  # noqa: E402


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _info_compiled(host: str, port: int) -> str:
    with socket.create_connection((host, port), timeout=5) as sock:
        sock.sendall(b"*2\r\n$4\r\nINFO\r\n$6\r\nserver\r\n")
        data = b""
        while b"phalanx_compiled:" not in data or not data.endswith(b"\r\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    for line in data.decode(errors="replace").splitlines():
        if line.startswith("phalanx_compiled:"):
            return line.partition(":")[2]
    return "?"


def one_mode(mode: str, args: argparse.Namespace) -> dict[str, float]:
    os.environ["PHALANX_PURE"] = "1" if mode == "pure" else "0"
    root = Path(tempfile.mkdtemp(prefix="phalanx-compiled-bench-"))
    cluster = rb.Phalanx(root / "phalanx")
    result: dict[str, float] = {}
    try:
        cluster.data_dir.mkdir()
        cluster.start(3, timeout=120)
        leader = next(n for n, role in sorted(cluster.roles().items()) if role == "leader")
        pid = next(int(n["pid"]) for n in cluster.nodes if n["id"] == leader)
        host, port = cluster.address(leader)
        seen = _info_compiled(host, port)
        if seen != ("no" if mode == "pure" else "yes"):
            raise SystemExit(f"{mode}: the leader says phalanx_compiled:{seen}; run make compile")
        for test in ("SET", "GET"):
            before = _cpu_seconds(pid)
            ok, metrics, error, _elapsed = rb.run_benchmark(
                host, port, test, 1, args.clients, args.requests, 100_000, timeout=600)
            used = _cpu_seconds(pid) - before
            if not ok:
                raise SystemExit(f"{mode} {test}: {error}")
            result[f"{test} ops/s"] = metrics["rps"]
            result[f"{test} leader CPU us/op"] = used / args.requests * 1e6
            result[f"{test} p50 ms"] = metrics.get("p50_latency_ms", float("nan"))
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--requests", type=int, default=50_000)
    args = parser.parse_args()
    samples: dict[str, dict[str, list[float]]] = {"pure": {}, "compiled": {}}
    load_before = os.getloadavg()[0]
    for round_number in range(args.rounds):
        for mode in (("pure", "compiled") if round_number % 2 == 0 else ("compiled", "pure")):
            result = one_mode(mode, args)
            print(f"round {round_number} {mode}: {result} (load {os.getloadavg()[0]:.1f})",
                  file=sys.stderr)
            for name, value in result.items():
                samples[mode].setdefault(name, []).append(value)
    print(f"3 nodes, redis-benchmark -c {args.clients} -n {args.requests} -r 100000 against the "
          f"leader, {args.rounds} rounds alternating; load average {load_before:.1f} -> "
          f"{os.getloadavg()[0]:.1f}\n")
    print("| figure | pure | compiled | compiled / pure |")
    print("|---|---|---|---|")
    for name in samples["pure"]:
        pure = statistics.median(samples["pure"][name])
        compiled = statistics.median(samples["compiled"][name])
        print(f"| {name} | {pure:.1f} | {compiled:.1f} | {cut_up(compiled / pure, 3)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
