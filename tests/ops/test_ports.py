"""phalanx.ops.ports: ports outside the ephemeral range, disjoint per xdist worker, no repeats."""
from __future__ import annotations

import socket

import pytest

from phalanx.ops import ports


def test_ports_are_below_the_ephemeral_range_and_in_this_workers_residue() -> None:
    picked = [ports.free_port() for _ in range(50)]
    assert len(set(picked)) == 50  # never the same port twice in a row of the walk
    assert all(ports.LOW <= port < min(ports.HIGH, ports.ephemeral_low()) for port in picked)
    assert {(port - ports.LOW) % ports.WORKER_SLOTS for port in picked} == {ports.worker_slot()}


def test_a_port_someone_listens_on_is_skipped() -> None:
    ports.free_port()  # make sure this process's walk exists
    upcoming = ports._sequence[ports._position]  # the walk's next candidate
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", upcoming))
        holder.listen()
        port = ports.free_port()
        assert port != upcoming
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", port))  # free right now: this must not raise


def test_worker_slot_follows_pytest_xdist(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw3")
    assert ports.worker_slot() == 3
    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw11")
    assert ports.worker_slot() == 11 % ports.WORKER_SLOTS
    monkeypatch.delenv("PYTEST_XDIST_WORKER")
    assert ports.worker_slot() == 0


def test_a_low_ephemeral_range_falls_back_to_the_kernels_choice(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # The walk's state is patched too, so the undo gives this worker its real walk back.
    for name, value in (("_sequence", []), ("_position", 0), ("_owner", 0)):
        monkeypatch.setattr(ports, name, value)
    monkeypatch.setattr(ports, "ephemeral_low", lambda: 1024)
    assert ports.free_port() >= 1024
    assert ports._sequence == []  # no range below the ephemeral one: the kernel chose
