"""The chaos lab's region scenario (chaos/regions_lab.py) on real processes: two regions, a
cut with writes on both sides, a heal, the model check, the loss of a region (issue 18)."""

from __future__ import annotations

import contextlib
import socket
import threading
from pathlib import Path

from phalanx.chaos import regions_lab
from phalanx.chaos.regions_lab import RegionLabConfig, plan_lab_regions, run_region_lab, summary
from phalanx.checker.aa_check import UNKNOWN
from phalanx.ops.ports import free_port


def _listeners(plans: dict[str, list]) -> set[str]:
    return {address for plan in plans.values() for node in plan
            for address in (node.config.me.resp, node.config.me.admin, node.config.me.peer)}


def test_two_runs_with_one_seed_do_not_plan_the_same_addresses(tmp_path: Path) -> None:
    """Session 9's "200 acknowledged add(s) missing": two runs of the test below at once (same
    seed) drew the same loopback addresses and ports from the seed, so both runs' clients wrote
    into one cluster. Ports are not part of the experiment: each run draws its own."""
    config = RegionLabConfig(regions=2, seed=7)
    first = _listeners(plan_lab_regions(config, tmp_path / "first"))
    second = _listeners(plan_lab_regions(config, tmp_path / "second"))
    assert len(first) == len(second) == 2 * 3 * 3
    assert not first & second, sorted(first & second)


def test_region_scenario_converges_to_the_model_and_measures_the_rpo() -> None:
    result = run_region_lab(RegionLabConfig(regions=2, linked_s=1.0, cut_s=3.0, loss_s=1.5,
                                            rate=30.0, seed=7))
    print(summary(result))
    assert result["check"]["ok"], result["check"]["problems"]
    assert result["converge_after_heal_s"] is not None
    # Active-active writes kept working in both regions during the cut ...
    cut = result["availability_during_cut"]
    assert cut["dc1"]["aa_ok"] > 0 and cut["dc2"]["aa_ok"] > 0
    # ... strong keys kept working at home and were refused in the cut-off region.
    assert cut["dc2"]["strong_ok"] == 0 and cut["dc2"]["strong_total"] > 0
    assert cut["dc1"]["strong_ok"] > 0
    assert result["strong_check"]["ok"], result["strong_check"]
    # The concurrent re-add of removed members won, and the counter was checked exactly.
    assert result["check"]["sets"]["aa:set"]["must_be_present"] > 0
    assert result["check"]["counters"]["aa:counter"]["acknowledged"] > 0
    # The region loss: strong writes forwarded to the home were never lost; the link's lag
    # was sampled while it was cut.
    loss = result["region_loss"]
    assert loss["strong"]["lost_writes"] == 0 and loss["active_active"]["acknowledged"] > 0
    assert any(row["lag_entries"] > 0 or not row["up"] for row in result["lag"])
    # `phalanx analyze` on each region speaks CAP: strong keys refused away from the home.
    assert result["analysis"]["dc1"]["strong"]["available_here_during_partition"] is True
    assert result["analysis"]["dc2"]["strong"]["available_here_during_partition"] is False
    assert result["analysis"]["dc2"]["active_active"]["prefixes"] == ["aa:"]
    assert result["passed"]


def test_the_labs_client_does_not_resend_a_command_that_timed_out() -> None:
    """A fake server that never answers the first INCRBY: the lab's call must come back
    "unknown" after ONE send. redis-py 8's default client re-sent it after the timeout and
    returned the second reply as the outcome: one acknowledged increment, applied twice."""
    port = free_port()
    server = socket.create_server(("127.0.0.1", port))
    received: list[bytes] = []
    release = threading.Event()

    def serve() -> None:
        with contextlib.suppress(OSError):
            while True:
                connection, _ = server.accept()
                threading.Thread(target=handle, args=(connection,), daemon=True).start()

    def handle(connection: socket.socket) -> None:
        with connection, contextlib.suppress(OSError):
            while data := connection.recv(65536):
                if b"HELLO" in data:       # RESP3 handshake of a default redis-py client
                    connection.sendall(b"%1\r\n+proto\r\n:3\r\n")
                elif b"INCRBY" in data:
                    received.append(data)
                    if len(received) == 1:
                        release.wait(30.0)     # never answered while the client waits
                    connection.sendall(b":%d\r\n" % (3 * len(received)))
                else:
                    connection.sendall(b"+OK\r\n")

    threading.Thread(target=serve, daemon=True).start()
    client = regions_lab._client(f"127.0.0.1:{port}", timeout=0.3)
    try:
        outcome, _ = regions_lab._call(client, "INCRBY", "aa:counter", 3)
        assert (outcome, len(received)) == (UNKNOWN, 1)
    finally:
        release.set()
        client.close()
        server.close()
