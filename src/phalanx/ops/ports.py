"""Free TCP ports for tests, labs and benchmarks, chosen where nothing else will take them.

Binding a probe to port 0 and releasing it is the usual way to find a free port, and it races:
the kernel draws that port from the ephemeral range (`net.ipv4.ip_local_port_range`,
32768-60999 by default), the same range it draws every outgoing connection's source port from.
Between the probe's close and the real bind, any `connect()` on the machine (another test
worker's client, a node's peer link) may be given that very port, and the real bind fails with
"address already in use". Session 8's CI run failed that way.

So `free_port` picks from a range *below* the ephemeral one (10000-19999 by default, narrowed if
the machine's ephemeral range starts lower), where the kernel never hands out source ports; it
probes that the port is free on the host right now; and one process never hands out the same
port twice until it has walked the whole range. Parallel pytest-xdist workers (PYTEST_XDIST_WORKER
= gw0, gw1, ...) draw from disjoint residues modulo `WORKER_SLOTS`, so two workers never pick the
same port either. Where no such range exists (an ephemeral range starting at or below 10000) it
falls back to the kernel's choice.

`pick_free_plan` (ops/launcher.py) solves the same problem for whole clusters differently: each
cluster gets its own loopback addresses (127.0.0.20+), which no outgoing connection uses as source.
"""
from __future__ import annotations

import os
import random
import socket
import threading
from pathlib import Path

LOW = 10000
HIGH = 20000            # exclusive
WORKER_SLOTS = 8
_EPHEMERAL_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")

_lock = threading.Lock()
_sequence: list[int] = []
_position = 0
_owner = 0              # the pid the walk belongs to: a forked child starts its own


def ephemeral_low() -> int:
    """The first port of the kernel's ephemeral range (32768 where it cannot be read)."""
    try:
        return int(_EPHEMERAL_FILE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def worker_slot() -> int:
    """This pytest-xdist worker's residue (gwN -> N mod WORKER_SLOTS); 0 outside xdist."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    digits = worker.removeprefix("gw")
    return int(digits) % WORKER_SLOTS if digits.isdigit() else 0


def _candidates() -> list[int]:
    high = min(HIGH, ephemeral_low())
    if high - LOW < WORKER_SLOTS * 16:
        return []
    slot = worker_slot()
    ports = list(range(LOW + slot, high, WORKER_SLOTS))
    # A per-process starting point: two processes of one worker (a test and a lab it starts)
    # rarely walk the same ports at the same time, and never the same port while it is bound.
    start = random.Random(os.getpid() ^ int.from_bytes(os.urandom(4), "little")).randrange(
        len(ports))
    return ports[start:] + ports[:start]


def _is_free(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def _kernel_port(host: str) -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on at `host` right now, outside the ephemeral range (see the
    module doc); never the same one twice in a row of this process's walk."""
    global _sequence, _position, _owner
    with _lock:
        if _owner != os.getpid():
            _sequence, _position, _owner = _candidates(), 0, os.getpid()
        for _ in range(len(_sequence)):
            port = _sequence[_position]
            _position = (_position + 1) % len(_sequence)
            if _is_free(host, port):
                return port
    return _kernel_port(host)


def refused_address(host: str = "127.0.0.1") -> str:
    """'host:port' where nothing listens: a connection to it is refused."""
    return f"{host}:{free_port(host)}"
