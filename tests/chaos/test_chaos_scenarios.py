"""Short real chaos runs (3 local nodes, ~14 s each): the fault is really injected, no
acknowledged write is lost, and the register history is linearizable. Also: the checker fails
on our own data when one read of a real run's history is changed, and a node lost for good
(4 nodes, 2 shards, 25 s) is healed around: full redundancy comes back within the run."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest

from phalanx.chaos.result import RESULT_KEYS
from phalanx.chaos.run_config import RunConfig
from phalanx.chaos.runner import RunArtifacts, run_chaos
from phalanx.checker import OpKind, Outcome, check

pytestmark = pytest.mark.timeout(180)


def short_run(scenario: str, seed: int, duration_s: float = 14.0) -> RunArtifacts:
    config = RunConfig(scenario=scenario, duration_s=duration_s, seed=seed, nodes=3, zones=3,
                       clients=3, rate_ops_s=120.0, warmup_s=3.0, recovery_s=4.0)
    return run_chaos(config)


def assert_safe(artifacts: RunArtifacts, duration_s: float = 14.0) -> dict[str, Any]:
    result = artifacts.result
    assert set(RESULT_KEYS) <= set(result)
    json.dumps(result, allow_nan=False)  # plain JSON, no infinities
    assert result["faults"], "no fault was injected"
    assert result["ops"]["ok"] > 100, result["ops"]
    assert result["lost_acknowledged_writes"] == 0, result["rpo"]
    assert result["rpo"] == {"lost_writes": 0, "span_s": 0.0}
    assert result["linearizable"], result["linearizability"]["explain"]
    assert len(result["timeline"]) == int(duration_s)
    for fault in result["rto_ms"]["faults"]:
        assert fault["rto_ms"] is not None, f"writes never came back after {fault}"
    return result


def test_leader_kill() -> None:
    artifacts = short_run("leader-kill", seed=11)
    result = assert_safe(artifacts)
    killed = result["faults"][0]["targets"][0]
    assert artifacts.faults[0].leader_before == killed
    assert len(artifacts.pid_changes[killed]) == 2, artifacts.pid_changes  # it was restarted
    assert result["rto_ms"]["faults"][0]["new_leader"] not in (None, killed)


def test_leader_pause() -> None:
    artifacts = short_run("leader-pause", seed=12)
    result = assert_safe(artifacts)
    paused = result["faults"][0]["targets"][0]
    assert artifacts.faults[0].leader_before == paused
    assert result["rto_ms"]["faults"][0]["new_leader"] not in (None, paused)


def test_partition_leader() -> None:
    artifacts = short_run("partition-leader", seed=13)
    result = assert_safe(artifacts)
    isolated = result["faults"][0]["targets"][0]
    assert artifacts.faults[0].leader_before == isolated
    assert result["rto_ms"]["faults"][0]["new_leader"] not in (None, isolated)


def test_follower_kill_and_a_mutated_history_is_caught() -> None:
    artifacts = short_run("follower-kill", seed=14)
    result = assert_safe(artifacts)
    killed = result["faults"][0]["targets"][0]
    assert artifacts.faults[0].leader_before != killed
    assert len(artifacts.pid_changes[killed]) == 2, artifacts.pid_changes
    # The checker must be able to fail on our own data: change what one successful read of a
    # written value returned to a value nobody wrote.
    operations = list(artifacts.history)
    assert check(operations).ok
    position = next(i for i, op in enumerate(operations)
                    if op.kind is OpKind.READ and op.outcome is Outcome.OK
                    and op.output is not None)
    operations[position] = dataclasses.replace(operations[position], output=b"never-written")
    verdict = check(operations)
    assert not verdict.ok
    assert verdict.failure is not None
    assert verdict.failure.key == operations[position].key
    assert "never-written" in verdict.explain()


def test_host_outage_kills_both_nodes_of_a_host_at_once_and_loses_nothing() -> None:
    """6 nodes on 3 synthetic hosts of 2 in ONE zone (docs/hosts.md): one host's two node
    processes are killed with kill -9 together and restarted together. Only the host rule keeps
    a quorum of every shard off one machine, so writes come back (an RTO exists), nothing
    acknowledged is lost and the history is linearizable."""
    config = RunConfig(scenario="host-outage", duration_s=16.0, seed=31, nodes=6, zones=1,
                       nodes_per_host=2, clients=3, rate_ops_s=120.0, warmup_s=3.0,
                       recovery_s=4.0)
    artifacts = run_chaos(config)
    result = assert_safe(artifacts, duration_s=16.0)
    hosts = {node["id"]: node["host"] for node in result["cluster"]["nodes"]}
    assert sorted(set(hosts.values())) == ["h1", "h2", "h3"], hosts
    for fault in result["faults"]:
        assert fault["kind"] == "host-outage"
        targets = fault["targets"]
        (host,) = {hosts[t] for t in targets}
        assert sorted(targets) == sorted(n for n, h in hosts.items() if h == host), fault
        assert len(targets) == 2 and f"host {host} lost" in fault["description"]
        for target in targets:  # killed, then started again
            assert len(artifacts.pid_changes[target]) >= 2, artifacts.pid_changes
    assert result["per_kind"]["host-outage"]["faults"] == len(result["faults"])


def test_node_lost_heals_onto_a_spare_node() -> None:
    """A node is killed and its data deleted; the cluster declares it dead after 3 s and
    re-creates its replicas on the spare node. Nothing acknowledged is lost, and the run
    measures the time to full redundancy (bounded by the run, not asserted on)."""
    config = RunConfig(scenario="node-lost", duration_s=25.0, seed=21, nodes=4, zones=3,
                       shards=2, dead_after_ms=3000, clients=3, rate_ops_s=120.0,
                       warmup_s=3.0)
    artifacts = run_chaos(config)
    result = artifacts.result
    assert set(RESULT_KEYS) <= set(result)
    json.dumps(result, allow_nan=False)
    (fault,) = result["faults"]
    lost = fault["targets"][0]
    assert fault["kind"] == "node-lost" and fault["end_s"] is None
    assert result["cluster"]["lost_nodes"] == [lost]
    assert len(artifacts.pid_changes[lost]) == 1, artifacts.pid_changes  # never restarted
    assert result["ops"]["ok"] > 100, result["ops"]
    assert result["lost_acknowledged_writes"] == 0, result["rpo"]
    assert result["linearizable"], result["linearizability"]["explain"]
    assert result["rto_ms"]["faults"][0]["rto_ms"] is not None
    (entry,) = result["redundancy"]["faults"]
    assert entry["lost"] is True, entry
    assert entry["restored_at_s"] is not None, (entry, result["events"])
    assert entry["seconds"] is not None and entry["seconds"] > 0
    assert result["redundancy"]["final"]["full"] is True, result["redundancy"]
    texts = [event["text"] for event in result["events"]]
    assert f"the cluster declared {lost} dead" in texts, texts
    assert any(text.startswith("full redundancy again") for text in texts), texts
