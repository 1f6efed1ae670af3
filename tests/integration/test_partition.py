"""A network partition made with the admin API's fault rules: no split-brain acknowledged write."""

from __future__ import annotations

import threading
import time
from typing import Any

import redis
from integration_harness import LocalCluster, retry_write, wait_until


def _attempt(c: LocalCluster, node: Any, key: str, value: str, outcome: dict[str, object]) -> None:
    """One SET sent to `node`; records True (acknowledged) or the error."""
    client = c.client(node, timeout=20.0)
    try:
        outcome[key] = client.set(key, value) is True
    except (redis.ResponseError, redis.ConnectionError, redis.TimeoutError) as error:
        outcome[key] = f"{type(error).__name__}: {error}"


def test_isolated_leader_steps_down_and_no_split_brain_write(cluster: Any) -> None:
    """Proves: when the leader is cut off from both peers by fault rules (drop_to/drop_from on
    every side), it steps down by CheckQuorum, the majority elects a new leader that serves
    writes, and writes sent to the isolated node (one right after the cut, while it may still
    believe it leads, one after it stepped down) are not acknowledged. After healing, every
    acknowledged write is on every node, and each unacknowledged minority write is either absent
    everywhere or present with the same value everywhere."""
    c: LocalCluster = cluster(3)
    old = c.leader()
    majority = c.others(old)
    acknowledged: dict[str, str] = {}
    for i in range(20):
        assert c.client(c.nodes[i % 3]).set(f"pre:{i}", str(i)) is True
        acknowledged[f"pre:{i}"] = str(i)
    c.wait_converged()
    term_before = c.status(old)["term"]  # type: ignore[index]

    ids = [n.id for n in majority]
    c.set_faults(old, {"drop_to": ids, "drop_from": ids})
    for node in majority:
        c.set_faults(node, {"drop_to": [old.id], "drop_from": [old.id]})
    cut_at = time.monotonic()
    minority: dict[str, object] = {}
    early = threading.Thread(target=_attempt, args=(c, old, "minority:early", "x", minority))
    early.start()
    try:
        wait_until(lambda: c.role(old) != "leader", 30, f"isolated {old.id} to step down")
        stepped_down_after = time.monotonic() - cut_at
        new = c.leader(among=majority)
        assert new.id != old.id
        for i in range(20):
            node = majority[i % 2]
            assert retry_write(c.client(node), "SET", f"major:{i}", str(i)) in (True, "OK")
            acknowledged[f"major:{i}"] = str(i)
        _attempt(c, old, "minority:late", "y", minority)
    finally:
        early.join(60)
        assert not early.is_alive()
        for node in c.nodes:
            c.clear_faults(node)
    print(f"\nisolated leader {old.id} stepped down after {stepped_down_after * 1000:.0f} ms; "
          f"{new.id} leads the majority; minority attempts: {minority}")
    assert minority.get("minority:early") is not True, "the isolated node acknowledged a write"
    assert minority.get("minority:late") is not True, "the isolated node acknowledged a write"

    c.wait_converged()
    final = c.status(new)
    assert final is not None and final["term"] > term_before
    keys = [*sorted(acknowledged), "minority:early", "minority:late"]
    values = {n.id: c.readonly_client(n).mget(keys) for n in c.nodes}
    for node_id, got in values.items():
        assert got[:len(acknowledged)] == [acknowledged[k] for k in sorted(acknowledged)], node_id
    assert len({tuple(v) for v in values.values()}) == 1, values
    assert values[old.id][-2] in (None, "x") and values[old.id][-1] in (None, "y")
