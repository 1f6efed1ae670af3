"""Reproduce (or not) the SIGSTOP failover hang (s8 note, "worth their own issues" item 1).

Starts a 3-node local cluster (integration harness), loads every node with redis-benchmark SET
clients, then per try: SIGSTOP the shard leader while an open-loop writer (a SET every 20 ms,
0.5 s socket timeout, fresh connection each) writes through a surviving node. A try "hangs"
when no write through the survivor is acknowledged within `--hang-s` seconds of the stop; then
the script saves both survivors' /status, a `py-spy dump` of each (if py-spy is installed) and
their log tails to `--out`, waits up to `--hang-extra-s` more for a write, then SIGCONTs.

    python benchmarks/sigstop_hang.py --tries 20 --load-clients 30 --out /tmp/hang

`--flood INTERVAL` measures the cause without any fault (docs/failure-detection.md, session
9): a fresh cluster, then an open-loop writer of one SET per new connection every INTERVAL
seconds (0.5 s timeout) through a follower for `--flood-s` seconds, then the same through the
leader; it prints the acknowledged and failed writes of every second.

    python benchmarks/sigstop_hang.py --flood 0.007 --flood-s 30

Every process it starts is stopped by pid (the cluster by the harness), every wait is bounded.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests" / "integration"))

from failover_timing import _Writer  # noqa: E402
from integration_harness import LocalCluster, wait_until  # noqa: E402


def start_load(cluster: LocalCluster, clients: int, seconds: int,
               log: Path) -> list[subprocess.Popen[bytes]]:
    if clients <= 0:
        return []
    per_node = max(1, clients // len(cluster.nodes))
    processes = []
    with open(log, "ab") as handle:
        for node in cluster.nodes:
            processes.append(subprocess.Popen(
                ["timeout", str(seconds), "redis-benchmark", "-h", node.host, "-p",
                 str(node.port), "-t", "set", "-c", str(per_node), "-n", "100000000", "-r",
                 "100000", "-q", "-l"],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=handle,
                start_new_session=True))
    return processes


def stop_load(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)


def settled_leader(cluster: LocalCluster) -> Any:
    """The leader every node names at one term (under load `wait_converged` never sees the
    applied index still), after the stopped node came back."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        seen = cluster.statuses()
        named = {(s or {}).get("leader") for s in seen.values()}
        terms = {(s or {}).get("term") for s in seen.values()}
        if len(named) == 1 and None not in named and "" not in named and len(terms) == 1:
            return cluster.node(str(named.pop()))
        time.sleep(0.2)
    raise AssertionError(f"no settled leader: {seen}")


def evidence(cluster: LocalCluster, nodes: list[Any], out: Path, label: str) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    found: dict[str, Any] = {}
    for node in nodes:
        status = cluster.status(node, timeout=5.0)
        (out / f"{label}-{node.id}-status.json").write_text(json.dumps(status, indent=1))
        found[node.id] = {k: (status or {}).get(k) for k in
                          ("role", "term", "leader", "commit_index", "applied_index",
                           "last_index")}
        spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        if Path(spy).exists():
            dump = subprocess.run([spy, "dump", "--pid", str(cluster.pid(node))],
                                  capture_output=True, text=True, timeout=60)
            (out / f"{label}-{node.id}-pyspy.txt").write_text(dump.stdout + dump.stderr)
    (out / f"{label}-logs.txt").write_text(cluster.logs(200))
    return found


def flood(host: str, port: int, interval: float, seconds: float,
          tag: str) -> list[tuple[int, int]]:
    """One SET per new connection every `interval` s for `seconds` (each in its own thread,
    0.5 s timeout, the bench's raw RESP writer): [acknowledged, failed] per second of start."""
    sys.path.insert(0, str(HERE))
    import phalanx_bench as pb

    events: list[tuple[float, bool]] = []
    lock = threading.Lock()

    def one(sequence: int) -> None:
        began = time.monotonic()
        try:
            ok = pb.resp_command(host, port, "SET", f"{tag}:{sequence}", "x",
                                 timeout=0.5).startswith(b"+OK")
        except (OSError, ValueError):
            ok = False
        with lock:
            events.append((began, ok))

    threads = []
    start = time.monotonic()
    sequence = 0
    while time.monotonic() < start + seconds:
        sequence += 1
        thread = threading.Thread(target=one, args=(sequence,), daemon=True)
        thread.start()
        threads.append(thread)
        time.sleep(interval)
    for thread in threads:
        thread.join(5)
    per: dict[int, list[int]] = {}
    with lock:
        for began, ok in events:
            per.setdefault(int(began - start), [0, 0])[0 if ok else 1] += 1
    return [(per[k][0], per[k][1]) for k in sorted(per)]


def run_flood(interval: float, seconds: float) -> int:
    with LocalCluster(3, name="sigstop-flood") as cluster:
        leader = settled_leader(cluster)
        follower = cluster.others(leader)[0]
        for label, node in (("follower", follower), ("leader", leader)):
            load = os.getloadavg()[0]
            counts = flood(node.host, node.port, interval, seconds, label)
            print(json.dumps({"through": label, "node": node.id, "load": load,
                              "ok": sum(c[0] for c in counts),
                              "failed": sum(c[1] for c in counts),
                              "seconds_with_none_ok": sum(1 for c in counts if c[0] == 0),
                              "per_second": counts}), flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tries", type=int, default=10)
    parser.add_argument("--load-clients", type=int, default=30)
    parser.add_argument("--hang-s", type=float, default=8.0)
    parser.add_argument("--hang-extra-s", type=float, default=12.0)
    parser.add_argument("--fault", choices=("stop", "kill"), default="stop")
    parser.add_argument("--writer-interval", type=float, default=0.02,
                        help="s between the gap writer's SETs (one connection each)")
    parser.add_argument("--out", type=Path, default=Path("/tmp/sigstop-hang"))
    parser.add_argument("--flood", type=float, default=0.0,
                        help="no fault: one SET per connection every FLOOD s (see above)")
    parser.add_argument("--flood-s", type=float, default=30.0)
    args = parser.parse_args(argv)
    if args.flood > 0:
        return run_flood(args.flood, args.flood_s)
    args.out.mkdir(parents=True, exist_ok=True)
    results = []
    with LocalCluster(3, name="sigstop-hang") as cluster:
        print("cluster at", cluster.root, flush=True)
        load = start_load(cluster, args.load_clients, int(args.tries * 60 + 120),
                          args.out / "load.log")
        try:
            for attempt in range(args.tries):
                leader = settled_leader(cluster)
                survivors = cluster.others(leader)
                via = survivors[0]
                writer = _Writer(via.host, via.port, 0.5, f"t{attempt}",
                                 interval_s=args.writer_interval)
                writer.start()
                hung = False
                info: dict[str, Any] = {"try": attempt, "old_leader": leader.id, "via": via.id,
                                        "load": os.getloadavg()[0]}
                try:
                    wait_until(lambda w=writer: w.successes() >= 20, 60, "writes before")
                    at = time.monotonic()
                    sig = signal.SIGSTOP if args.fault == "stop" else signal.SIGKILL
                    cluster.kill(leader, sig)
                    deadline = at + args.hang_s
                    while time.monotonic() < deadline and writer.first_success_after(at) is None:
                        time.sleep(0.05)
                    first = writer.first_success_after(at)
                    if first is None:
                        hung = True
                        info["hang_evidence"] = evidence(cluster, survivors, args.out,
                                                         f"try{attempt}")
                        deadline = time.monotonic() + args.hang_extra_s
                        while (time.monotonic() < deadline
                               and writer.first_success_after(at) is None):
                            time.sleep(0.1)
                        first = writer.first_success_after(at)
                        if first is None:
                            info["hang_evidence2"] = evidence(cluster, survivors, args.out,
                                                              f"try{attempt}-late")
                    info["after_fault_ms"] = (None if first is None
                                              else round((first - at) * 1000, 1))
                finally:
                    writer.close()
                    if args.fault == "stop":
                        cluster.kill(leader, signal.SIGCONT)
                    else:
                        cluster.restart(leader)
                info["hung"] = hung
                results.append(info)
                print(json.dumps(info), flush=True)
        finally:
            stop_load(load)
    hangs = sum(1 for r in results if r["hung"])
    print(f"hangs: {hangs} of {len(results)}", flush=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
