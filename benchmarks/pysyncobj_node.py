"""One PySyncObj node for `phalanx bench` (benchmarks/phalanx_bench.py): a replicated dict.

    python pysyncobj_node.py SELF_HOST:PORT PARTNER:PORT,PARTNER:PORT CONTROL_PORT

Default SyncObjConf (in-memory log, no journal: nothing is fsynced; autoTick every 50 ms, so a
synchronous write from one thread waits about two ticks, ~100 ms; election
timeout 0.4-1.4 s). The node answers on 127.0.0.1:CONTROL_PORT, one command per connection:
- `status`: {"self": "host:port", "leader": "host:port" | null}
- `load THREADS N`: N synchronous `set` calls (each waits until the entry is committed and applied
  here) from THREADS threads in this process; one JSON line: ops, ok, errors, seconds, rps,
  p50_ms, p99_ms;
- `gap INTERVAL_MS TIMEOUT_MS`: an open-loop writer: every interval a synchronous `set` in its
  own thread with that timeout; one line per write, "<start unix ns> <end unix ns> <0|1>", until
  the connection closes.
A follower forwards `set` to the leader (that is how PySyncObj clients work: in-process).
"""

from __future__ import annotations

import json
import random
import socket
import sys
import threading
import time

from pysyncobj import SyncObj, SyncObjConf, replicated


class Store(SyncObj):
    def __init__(self, self_address: str, partners: list[str]) -> None:
        super().__init__(self_address, partners, SyncObjConf(dynamicMembershipChange=False))
        self.data: dict[str, str] = {}

    @replicated
    def put(self, key: str, value: str) -> bool:
        self.data[key] = value
        return True


def status(store: Store) -> dict[str, str | None]:
    state = store.getStatus()
    leader = state.get("leader")
    return {"self": str(state.get("self")), "leader": str(leader) if leader else None}


def load(store: Store, threads: int, total: int) -> dict[str, float | int]:
    counter = iter(range(total))
    lock = threading.Lock()
    latencies: list[float] = []
    errors = [0]

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        while True:
            with lock:
                if next(counter, None) is None:
                    return
            began = time.perf_counter()
            try:
                store.put(f"key:{rng.randrange(100000):012d}", "xxx", sync=True, timeout=10)
            except Exception:  # SyncObjException and friends: a failed write
                with lock:
                    errors[0] += 1
                continue
            elapsed = time.perf_counter() - began
            with lock:
                latencies.append(elapsed)

    began = time.perf_counter()
    workers = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()
    seconds = time.perf_counter() - began
    latencies.sort()

    def pct(p: float) -> float:
        return latencies[int(p * (len(latencies) - 1))] * 1000 if latencies else 0.0

    return {"ops": total, "ok": len(latencies), "errors": errors[0], "seconds": seconds,
            "rps": len(latencies) / seconds, "p50_ms": pct(0.5), "p99_ms": pct(0.99)}


def gap(store: Store, connection: socket.socket, interval_ms: float, timeout_ms: float) -> None:
    stop = threading.Event()
    lock = threading.Lock()

    def watch() -> None:
        try:
            while connection.recv(1024):
                pass
        except OSError:
            pass
        stop.set()

    def one(sequence: int) -> None:
        began = time.time_ns()
        try:
            ok = bool(store.put(f"gap:{sequence}", "x", sync=True, timeout=timeout_ms / 1000))
        except Exception:
            ok = False
        line = f"{began} {time.time_ns()} {int(ok)}\n".encode()
        with lock:
            try:
                connection.sendall(line)
            except OSError:
                stop.set()

    threading.Thread(target=watch, daemon=True).start()
    sequence = 0
    while not stop.wait(interval_ms / 1000):
        sequence += 1
        threading.Thread(target=one, args=(sequence,), daemon=True).start()


def main() -> None:
    self_address, partners, control = sys.argv[1], sys.argv[2].split(","), int(sys.argv[3])
    store = Store(self_address, partners)
    server = socket.create_server(("127.0.0.1", control))
    while True:
        connection, _ = server.accept()
        threading.Thread(target=serve, args=(store, connection), daemon=True).start()


def serve(store: Store, connection: socket.socket) -> None:
    with connection:
        words = connection.makefile("r").readline().split()
        if not words:
            return
        if words[0] == "status":
            reply = status(store)
        elif words[0] == "load":
            reply = load(store, int(words[1]), int(words[2]))
        elif words[0] == "gap":
            gap(store, connection, float(words[1]), float(words[2]))
            return
        else:
            reply = {"error": f"unknown command {words[0]}"}
        connection.sendall((json.dumps(reply) + "\n").encode())


if __name__ == "__main__":
    main()
