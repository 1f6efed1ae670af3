"""Pure Python vs the mypyc-compiled hot path, per module, interleaved in one run (issue 15).

Each round runs one worker process per mode (`PHALANX_PURE=1`, then the compiled build; the
order alternates per round), and every worker times the same microbenchmarks; the report gives
each benchmark's median microseconds per operation in both modes and their ratio, with the load
average before and after. Build first: `make compile`.

    .venv/bin/python benchmarks/bench_compiled.py [--rounds 5] [--only resp_parse,...]

Rules it keeps: every loop is bounded (a fixed operation count per benchmark), workers have a
timeout, nothing is left running.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

from bench_ratios import higher

Bench = Callable[[], tuple[Callable[[], None], int]]  # setup -> (run once, operations per run)


def _resp_parse() -> tuple[Callable[[], None], int]:
    from phalanx.resp import NEED_DATA, RespParser

    data = b"".join(b"*3\r\n$3\r\nSET\r\n$10\r\nkey:%06d\r\n$16\r\nvalue-%010d\r\n" % (i, i)
                    for i in range(1000))

    def run() -> None:
        parser = RespParser()
        parser.feed(data)
        while parser.next_command() is not NEED_DATA:
            pass
    return run, 1000


def _resp_parse_hiredis() -> tuple[Callable[[], None], int]:
    from phalanx.resp import NEED_DATA, HiredisRespParser

    data = b"".join(b"*3\r\n$3\r\nSET\r\n$10\r\nkey:%06d\r\n$16\r\nvalue-%010d\r\n" % (i, i)
                    for i in range(1000))

    def run() -> None:
        parser = HiredisRespParser()
        parser.feed(data)
        while parser.next_command() is not NEED_DATA:
            pass
    return run, 1000


def _resp_encode() -> tuple[Callable[[], None], int]:
    from phalanx.resp import encode

    replies: list[object] = [b"OK", b"value-0000000001", 42, None, [b"a", b"b", 3]]

    def run() -> None:
        for _ in range(200):
            for reply in replies:
                encode(reply)  # type: ignore[arg-type]
    return run, 1000


def _raft_propose() -> tuple[Callable[[], None], int]:
    from phalanx.testing.raft_harness import Network

    network = Network.create(3)
    network.elect("n1")
    payload = b"x" * 40

    def run() -> None:
        for _ in range(100):
            network.propose("n1", payload)
        network.stabilize()
        for applied in network.applied.values():
            applied.clear()
        for node in network.nodes:
            network.readies[node].clear()
            network.applied_entries[node].clear()
        network.delivered.clear()
    return run, 100


def _kv_apply_set() -> tuple[Callable[[], None], int]:
    from phalanx.kv.codec import Command, encode_command
    from phalanx.kv.machine import KVStateMachine

    machine = KVStateMachine()
    entries = [encode_command(Command(b"SET", (b"key:%06d" % i, b"value-%010d" % i), 1_000,
                                      7, i + 1)) for i in range(1000)]
    index = [0]

    def run() -> None:
        for data in entries:
            index[0] += 1
            machine.apply(index[0], data)
    return run, 1000


def _kv_read_get() -> tuple[Callable[[], None], int]:
    from phalanx.kv.codec import Command, encode_command
    from phalanx.kv.machine import KVStateMachine

    machine = KVStateMachine()
    for i in range(1000):
        machine.apply(i + 1, encode_command(Command(b"SET", (b"key:%06d" % i, b"v"), 1_000)))
    keys = [[b"key:%06d" % i] for i in range(1000)]

    def run() -> None:
        for args in keys:
            machine.read(b"GET", args, 1_000)
    return run, 1000


def _slots() -> tuple[Callable[[], None], int]:
    from phalanx.placement.slots import command_slot

    args = [[b"key:%06d" % i, b"value"] for i in range(1000)]

    def run() -> None:
        for arguments in args:
            command_slot(b"SET", arguments)
    return run, 1000


def _codec_append_entries() -> tuple[Callable[[], None], int]:
    from phalanx.raft.messages import AppendEntries
    from phalanx.raft.types import Entry, GroupId, Index, NodeId, Term
    from phalanx.transport.codec import FrameDecoder, encode_batch

    message = AppendEntries(source=NodeId("n1"), target=NodeId("n2"), term=Term(3),
                            prev_log_index=Index(100), prev_log_term=Term(3), commit=Index(99),
                            entries=(Entry(term=Term(3), index=Index(101), data=b"x" * 40),))
    batch = [(GroupId(1), message)]

    def run() -> None:
        for _ in range(1000):
            decoder = FrameDecoder()
            decoder.feed(encode_batch(batch))
            decoder.next_batch()
    return run, 1000


BENCHES: dict[str, Bench] = {
    "resp_parse": _resp_parse,
    "resp_parse_hiredis": _resp_parse_hiredis,
    "resp_encode": _resp_encode,
    "raft_propose": _raft_propose,
    "kv_apply_set": _kv_apply_set,
    "kv_read_get": _kv_read_get,
    "slots_command_slot": _slots,
    "codec_ae_roundtrip": _codec_append_entries,
}


def _worker(names: list[str], budget_s: float) -> None:
    import phalanx.compiled

    results: dict[str, object] = {"mode": phalanx.compiled.status().describe()}
    for name in names:
        run, operations = BENCHES[name]()
        run()  # warm up
        best = float("inf")
        deadline = time.perf_counter() + budget_s
        for _ in range(50):  # bounded: at most 50 timed runs, or the time budget
            start = time.perf_counter()
            run()
            best = min(best, time.perf_counter() - start)
            if time.perf_counter() > deadline:
                break
        results[name] = best / operations * 1e6
    print(json.dumps(results))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--only", default=",".join(BENCHES))
    parser.add_argument("--budget", type=float, default=1.0, help="seconds per benchmark")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    options = parser.parse_args()
    names = [name for name in options.only.split(",") if name]
    if options.worker:
        _worker(names, options.budget)
        return 0
    samples: dict[str, dict[str, list[float]]] = {"pure": {}, "compiled": {}}
    load_before = os.getloadavg()
    modes_seen: dict[str, str] = {}
    for round_number in range(options.rounds):
        modes = ["pure", "compiled"] if round_number % 2 == 0 else ["compiled", "pure"]
        for mode in modes:
            env = dict(os.environ)
            env["PHALANX_PURE"] = "1" if mode == "pure" else "0"
            done = subprocess.run(
                [sys.executable, __file__, "--worker", "--only", ",".join(names),
                 "--budget", str(options.budget)],
                env=env, capture_output=True, text=True, timeout=600, check=True,
            )
            result = json.loads(done.stdout.strip().splitlines()[-1])
            modes_seen[mode] = result.pop("mode")
            for name, value in result.items():
                samples[mode].setdefault(name, []).append(value)
    load_after = os.getloadavg()
    print(f"pure: {modes_seen.get('pure')}; compiled: {modes_seen.get('compiled')}")
    print(f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f}; "
          f"{options.rounds} rounds, best of each worker, median over rounds\n")
    print("| benchmark | pure us/op | compiled us/op | speed-up |")
    print("|---|---|---|---|")
    for name in names:
        pure = statistics.median(samples["pure"][name])
        compiled = statistics.median(samples["compiled"][name])
        print(f"| {name} | {pure:.3f} | {compiled:.3f} | {higher(pure / compiled)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
