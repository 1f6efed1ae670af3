"""Entries released from memory (issue 15 lever 7, `release_applied_log`): a replica keeps the
entries it applied, and that every live follower holds, only in the node log's file. A
follower that was down while they were written still catches up (its leader reads them back
from the file), and a cluster killed with kill -9 replays them; nothing acknowledged is lost."""

from __future__ import annotations

import signal
from typing import Any

from integration_harness import LocalCluster, retry_write, wait_until

#: More SETs than the peer transport queues for a down follower (the leader's 256 inflight
#: appends, delivered when it reconnects: tests/integration/test_recovery.py): the rest must
#: be read back from the file.
WRITES = 600


def _local(c: LocalCluster, node: Any) -> dict[str, Any] | None:
    status = c.status(node)
    if status is None:
        return None
    group = status.get("local", {}).get("1")
    return group if isinstance(group, dict) else None


def _read_back(c: LocalCluster, nodes: list[Any]) -> int:
    total = 0
    for node in nodes:
        group = _local(c, node)
        assert group is not None and "log_read_back_entries" in group, group
        total += int(group["log_read_back_entries"])
    return total


def test_a_follower_catches_up_from_entries_no_longer_in_memory(cluster: Any) -> None:
    """Proves: with one follower killed (kill -9), 600 acknowledged SETs of 1 KB are released
    from the memory of both live replicas (their `log_released_index` reaches their applied
    index); the restarted follower catches up, which reads entries back from the node log's
    file, and serves every value with READONLY local reads; then the whole
    cluster is killed with kill -9 and restarted: the log replays and every value is there."""
    c: LocalCluster = cluster(3)
    leader = c.leader()
    follower = c.others(leader)[0]
    live = c.others(follower)
    writer = c.client(leader)
    assert retry_write(writer, "SET", "before", "1") in (True, "OK", b"OK")
    c.wait_converged()
    c.kill(follower, signal.SIGKILL)
    before = _read_back(c, live)

    values = {f"disk:{i}": f"{i}:" + "v" * 1000 for i in range(WRITES)}
    for key, value in values.items():
        # One entry each, acknowledged (SET is idempotent: resent after a lost leader).
        assert retry_write(writer, "SET", key, value) in (True, "OK", b"OK")

    def released_everywhere() -> bool:
        for node in live:
            group = _local(c, node)
            if group is None or group["applied_index"] < group["commit_index"] or \
                    group["log_released_index"] < group["applied_index"] or \
                    group["applied_index"] < WRITES:
                return False
        return True

    # (the leader waits for the stopped follower to count as inactive: an election timeout)
    wait_until(released_everywhere, 60, "both live replicas to release the applied entries")

    c.restart(follower)
    c.wait_converged()
    read_back = _read_back(c, live) - before
    print(f"\nentries read back from the file for the catch-up: {read_back}")
    assert read_back > 0
    ro = c.readonly_client(follower)
    keys = list(values)
    assert ro.mget(keys) == list(values.values())
    assert ro.get("before") == "1"

    for node in c.nodes:
        c.kill(node, signal.SIGKILL)
    for node in c.nodes:
        c.restart(node, wait=False)
    c.wait_converged()
    for node in c.nodes:
        assert c.readonly_client(node).mget(keys) == list(values.values()), node.id
