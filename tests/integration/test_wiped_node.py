"""A member whose disk was wiped must not come back under its old id (Raft would forget its
vote and the writes it acknowledged, §5.2, §5.4): while peers run, it refuses to start; after a
whole-cluster restart, every peer refuses it at the peer handshake (its incarnation is not the
one on record); `phalanx replace` brings it back as a new member, caught up by snapshot."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

from integration_harness import (
    LocalCluster,
    describe_map,
    kill_together,
    map_nodes_of,
    retry_write,
    run_cli,
    wait_map,
    wait_until,
)

from phalanx.ops import launcher


def _incarnations_recorded(status: dict[str, Any]) -> bool:
    return all(n.get("incarnation") for n in status.get("nodes") or [])


def _replace(c: LocalCluster, node_id: str, *, wait: bool = True) -> str:
    completed = run_cli(["replace", node_id, "--data-dir", str(c.data_dir), "--timeout",
                         "150" if wait else "0"], timeout=200)
    assert completed.returncode == 0, (f"phalanx replace failed ({completed.returncode}):\n"
                                       f"{completed.stdout}\n{completed.stderr}")
    assert f"replacing {node_id}: incarnation" in completed.stdout, completed.stdout
    if wait:
        assert f"{node_id} replaced" in completed.stdout, completed.stdout
    return completed.stdout


def _is_voter_everywhere(c: LocalCluster, node_id: str) -> Any:
    def check() -> bool:
        status = c.status(node_id)
        if status is None:
            return False
        local = status.get("local") or {}
        shards = [s for s in status.get("shards") or [] if node_id in (s.get("replicas") or [])]
        return bool(shards) and all(
            node_id in (s.get("voters") or []) and str(s["id"]) in local
            and node_id in local[str(s["id"])]["voters"] for s in shards) and \
            node_id in (status.get("meta") or {}).get("voters", [])
    return check


def test_a_wiped_member_refuses_to_start_then_is_replaced(cluster: Any) -> None:
    """Proves: after kill -9 of a follower and the loss of its data (its groups directory is
    deleted; its config stays), `phalanx restart` of that node exits with code 2 and a message
    naming the lost disk and the way out (`phalanx replace`), instead of bootstrapping an
    empty voter under the old id; the other nodes keep serving. Then `phalanx replace` (the
    incarnation read from the data directory) and a restart bring it back as a voter of every
    group, caught up by snapshot, with every acknowledged write."""
    c: LocalCluster = cluster(3)
    leader = c.leader()
    victim = c.others(leader)[0]
    writer = c.client(leader)
    acknowledged = {}
    for i in range(20):
        assert writer.set(f"wiped:{i}", str(i)) is True
        acknowledged[f"wiped:{i}"] = str(i)
    c.wait_converged()
    wait_map(c, _incarnations_recorded, 30, "every incarnation recorded in the map")
    c.kill(victim)
    shutil.rmtree(Path(victim.data_dir) / "groups")
    pid = c.restart(victim, wait=False)
    wait_until(lambda: not launcher.pid_alive(pid), 30, f"the restarted {victim.id} to exit")
    log = launcher.tail(victim.log_path, 40)
    assert "refusing to start" in log and "wiped" in log and "phalanx replace" in log, log
    assert not (Path(victim.data_dir) / "groups" / "0").exists(), "it bootstrapped anyway"
    survivor = c.client(c.others(victim)[0])
    started = time.monotonic()
    assert survivor.set("after-wipe", "ok") is True
    acknowledged["after-wipe"] = "ok"
    assert survivor.get("wiped:7") == "7"
    print(f"a wiped {victim.id} refused to start; a write through a survivor took "
          f"{(time.monotonic() - started) * 1000:.0f} ms")
    # The way back: replace it (its new incarnation is in its data directory), restart it.
    _replace(c, victim.id, wait=False)
    c.restart(victim, wait=False)
    wait_until(_is_voter_everywhere(c, victim.id), 120,
               f"{victim.id} to be a voter of every group again")
    local = c.readonly_client(victim)
    wait_until(lambda: all(local.get(k) == v for k, v in acknowledged.items()), 60,
               f"every acknowledged write readable on {victim.id}")


def test_whole_cluster_restart_with_a_wiped_node_refuses_it_then_replace_brings_it_back(
        cluster: Any) -> None:
    """Proves the case a pre-start check cannot see: a 3-node, 2-shard cluster takes acknowledged
    writes; every node is killed (-9); one node's data directory is wiped; the whole cluster
    restarts. No running peer remembers the wiped node, so it starts -- and every peer refuses
    it at the peer handshake: its survivors deliver NO message from it (it never votes, never
    acknowledges: `messages_received` from it is 0 on both), both sides log the reason, its
    /ready says what to do. The two others elect leaders and serve. Then `phalanx replace`
    removes the old member and adds the node back: it becomes a voter of every group, caught
    up by snapshot (its replica's snapshot index > 0), and holds every acknowledged write;
    finally one of the others is killed and the cluster serves every acknowledged write from
    a quorum that needs the replaced node."""
    c: LocalCluster = cluster(3, shards=2)
    leader = c.leader()
    victim = c.others(leader)[0]
    survivors = c.others(victim)
    writer = c.client(leader)
    acknowledged: dict[str, str] = {}
    for i in range(200):
        assert writer.set(f"before:{i}", f"v{i}") is True
        acknowledged[f"before:{i}"] = f"v{i}"
    c.wait_converged()
    recorded = wait_map(c, _incarnations_recorded, 30, "every incarnation recorded in the map")
    old_incarnation = map_nodes_of(recorded)[victim.id]["incarnation"]

    kill_together(c, c.nodes)
    shutil.rmtree(Path(victim.data_dir) / "groups")
    # The wiped node starts first: no peer runs, so its pre-start check sees nothing (with
    # its peers up it would refuse to start, as in the test above); then the others.
    c.restart(victim, wait=False)
    wait_until(lambda: c.status(victim) is not None, 60, f"{victim.id} to answer")
    for node in survivors:
        c.restart(node, wait=False)
    c.wait_converged(survivors)

    # Refused by both peers, both ways; nothing it sent was delivered.
    def refused() -> dict[str, Any] | None:
        status = c.status(victim)
        return status if status and set(status.get("refused_by") or {}) == \
            {n.id for n in survivors} else None

    victim_status = wait_until(refused, 60, f"both peers to refuse {victim.id}")
    new_incarnation = victim_status["incarnation"]
    assert new_incarnation and new_incarnation != old_incarnation
    for node in survivors:
        status = c.status(node)
        assert status is not None
        entry = next(p for p in status["peers"] if p["id"] == victim.id)
        assert entry["messages_received"] == 0, (node.id, entry)
        assert c.grep_logs(node, f"refused peer {victim.id}"), f"{node.id} logged no refusal"
    assert c.grep_logs(victim, f"phalanx replace {victim.id}"), launcher.tail(victim.log_path)
    from phalanx.ops import admin
    code, body = admin.admin_request(victim.admin, "/ready")
    assert code == 503 and "phalanx replace" in str(body), (code, body)

    def metric_says_refused() -> bool:
        _, text = admin.admin_request(victim.admin, "/metrics", timeout=5)
        return all(f'phalanx_peer_refuses_this_node{{peer="{n.id}"}} 1.0' in str(text)
                   for n in survivors)

    wait_until(metric_says_refused, 30, "the refusal in the victim's metrics")
    # The two others serve meanwhile.
    survivor_client = c.client(survivors[0])
    for i in range(50):
        assert retry_write(survivor_client, "SET", f"during:{i}", f"d{i}") is True
        acknowledged[f"during:{i}"] = f"d{i}"
    assert survivor_client.get("before:123") == "v123"
    for node in survivors:  # still nothing from the wiped node
        status = c.status(node)
        assert status is not None
        assert next(p for p in status["peers"] if p["id"] == victim.id)[
            "messages_received"] == 0

    started = time.monotonic()
    output = _replace(c, victim.id)
    print(output)
    wait_until(_is_voter_everywhere(c, victim.id), 120,
               f"{victim.id} to be a voter of every group again")
    print(f"{victim.id} replaced and a voter again {time.monotonic() - started:.1f} s after "
          f"`phalanx replace`")
    final = wait_map(c, lambda s: map_nodes_of(s)[victim.id].get("incarnation") ==
                     new_incarnation, 30, "the new incarnation recorded")
    assert not map_nodes_of(final)[victim.id].get("replacing"), describe_map(final)
    status = c.status(victim)
    assert status is not None and not status.get("refused_by")
    assert all(int(group["snapshot_index"]) > 0 for group in status["local"].values()), \
        f"not caught up by snapshot: {status['local']}"
    local = c.readonly_client(victim)
    wait_until(lambda: all(local.get(k) == v for k, v in acknowledged.items()), 60,
               f"every acknowledged write readable on {victim.id}")

    # The replaced node is a working voter: without one of the others (the first shard's
    # leader when that is not the victim), {victim, other} is the quorum that must serve
    # every acknowledged write and take new ones.
    current = c.leader()
    c.kill(current if current.id != victim.id else survivors[0])
    client = c.client(victim)
    assert retry_write(client, "SET", "after-replace", "yes", timeout=60) is True
    acknowledged["after-replace"] = "yes"
    values = client.mget(sorted(acknowledged))
    lost = [k for k, v in zip(sorted(acknowledged), values, strict=True) if acknowledged[k] != v]
    assert not lost, f"{len(lost)} acknowledged writes lost, e.g. {lost[:5]}"
