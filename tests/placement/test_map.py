"""The cluster map: JSON round trips, canonical bytes, every op (and malformed ones), MapMachine."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from phalanx.errors import ConfigError, Corrupt
from phalanx.placement.map import (
    NODE_STATES,
    ClusterMap,
    MapMachine,
    NodeInfo,
    OpError,
    ShardInfo,
    apply_op,
    encode_op,
)


def node(i: int, zone: str = "", region: str = "r1", state: str = "alive") -> NodeInfo:
    return NodeInfo(f"n{i}", f"127.0.0.{10 + i}:72{i:02d}", f"127.0.0.{10 + i}:70{i:02d}",
                    f"127.0.0.{10 + i}:71{i:02d}", zone or f"z{i}", region, state)


def small_map() -> ClusterMap:
    nodes = {n.id: n for n in (node(1), node(2), node(3), node(4))}
    shards = {
        1: ShardInfo(1, ((0, 8191),), ("n1", "n2", "n3"), "n1"),
        2: ShardInfo(2, ((8192, 16383),), ("n2", "n3", "n4"), "n2"),
    }
    return ClusterMap(1, "zone", 3, nodes, shards, ("n1", "n2", "n3"))


# ---------------------------------------------------------------------------- values


def test_node_json_round_trip_and_defaults() -> None:
    n = node(1)
    assert NodeInfo.from_json(n.to_json()) == n
    minimal = NodeInfo.from_json({"id": "a", "peer": "h:1", "resp": "h:2"})
    assert (minimal.zone, minimal.region, minimal.state, minimal.admin) == \
        ("zone-1", "region-1", "alive", "")


@pytest.mark.parametrize(("raw", "field"), [
    ({"peer": "h:1", "resp": "h:2"}, "'id'"),
    ({"id": "", "peer": "h:1", "resp": "h:2"}, "'id'"),
    ({"id": "a", "resp": "h:2"}, "'peer'"),
    ({"id": "a", "peer": 5, "resp": "h:2"}, "'peer'"),
    ({"id": "a", "peer": "h:1", "resp": "h:2", "state": "zombie"}, "'state'"),
    ({"id": "a", "peer": "h:1", "resp": "h:2", "zone": ""}, "'zone'"),
    ([1, 2], "JSON object"),
])
def test_node_from_json_names_the_field(raw: object, field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        NodeInfo.from_json(raw)


def test_shard_json_round_trip_and_queries() -> None:
    shard = ShardInfo(3, ((0, 9), (20, 29)), ("n1", "n2"), "n2", "n1", 4, ("n1", "n2"), ())
    assert ShardInfo.from_json(shard.to_json()) == shard
    assert shard.slot_count() == 20
    nodes = {n.id: n for n in (node(1), node(2))}
    assert shard.fully_replicated(nodes)
    assert not shard.fully_replicated({**nodes, "n2": node(2, state="dead")})
    assert not ShardInfo(3, (), ("n1", "n2"), voters=("n1",)).fully_replicated(nodes)
    assert not ShardInfo(3, (), ("n1",), voters=("n1",), learners=("n2",)).fully_replicated(nodes)


@pytest.mark.parametrize(("raw", "message"), [
    ({"id": 0, "slots": [], "replicas": []}, "'id'"),
    ({"id": True, "slots": [], "replicas": []}, "'id'"),
    ({"id": 1, "slots": [[5, 3]], "replicas": []}, "reversed"),
    ({"id": 1, "slots": [[0, 16384]], "replicas": []}, "outside"),
    ({"id": 1, "slots": [[0, 5], [5, 9]], "replicas": []}, "overlapping"),
    ({"id": 1, "slots": [0, 5], "replicas": []}, "pairs"),
    ({"id": 1, "slots": [], "replicas": ["a", "a"]}, "twice"),
    ({"id": 1, "slots": [], "replicas": ["a"], "preferred_leader": "b"}, "preferred_leader"),
    ({"id": 1, "slots": [], "replicas": ["a"], "term": -1}, "'term'"),
    ({"id": 1, "replicas": ["a"]}, "'slots'"),
])
def test_shard_from_json_names_the_field(raw: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ShardInfo.from_json(raw)


def test_map_round_trip_and_canonical_bytes() -> None:
    cmap = small_map()
    assert ClusterMap.from_json(cmap.to_json()) == cmap
    data = cmap.encode()
    assert ClusterMap.decode(data) == cmap
    assert ClusterMap.decode(data).encode() == data
    # canonical: sorted keys, compact separators, independent of construction order
    assert b" " not in data.replace(b'" "', b"")
    reordered = ClusterMap(1, "zone", 3, dict(reversed(list(cmap.nodes.items()))),
                           dict(reversed(list(cmap.shards.items()))), cmap.meta_voters)
    assert reordered.encode() == data
    assert json.loads(data) == json.loads(json.dumps(cmap.to_json(), sort_keys=True))
    assert data == json.dumps(json.loads(data), sort_keys=True, separators=(",", ":")).encode()


@pytest.mark.parametrize("mutate", [
    lambda raw: raw.update(survival_goal="planet"),
    lambda raw: raw.update(replication_factor=0),
    lambda raw: raw.update(version="1"),
    lambda raw: raw["nodes"].append(raw["nodes"][0]),
    lambda raw: raw["shards"][1].update(slots=[[8000, 9000]]),
    lambda raw: raw["shards"][0].update(replicas=["n1", "n9"]),
    lambda raw: raw.update(meta_voters=["n9"]),
    lambda raw: raw.pop("nodes"),
])
def test_map_from_json_refuses_bad_input(mutate: Any) -> None:
    raw = json.loads(small_map().encode())
    mutate(raw)
    with pytest.raises(ConfigError):
        ClusterMap.from_json(raw)


def test_decode_refuses_garbage() -> None:
    with pytest.raises(ConfigError):
        ClusterMap.decode(b"\xff")
    with pytest.raises(ConfigError):
        ClusterMap.decode(b"{not json")


def test_map_is_read_only() -> None:
    cmap = small_map()
    with pytest.raises(TypeError):
        cmap.nodes["n9"] = node(9)  # type: ignore[index]
    with pytest.raises(AttributeError):
        cmap.version = 5  # type: ignore[misc]


def test_shard_for_slot_and_node_queries() -> None:
    cmap = small_map()
    assert cmap.shard_for_slot(0) == cmap.shards[1]
    assert cmap.shard_for_slot(8191) == cmap.shards[1]
    assert cmap.shard_for_slot(8192) == cmap.shards[2]
    assert cmap.shard_for_slot(16383) == cmap.shards[2]
    assert cmap.shard_for_slot(16384) is None
    assert cmap.shard_for_slot(-1) is None
    assert [s.id for s in cmap.shards_of_node("n1")] == [1]
    assert [s.id for s in cmap.shards_of_node("n3")] == [1, 2]
    assert cmap.shards_of_node("n9") == []
    partial = ClusterMap(1, "zone", 1, cmap.nodes, {1: ShardInfo(1, ((5, 6),), ("n1",))}, ())
    assert partial.shard_for_slot(4) is None
    assert partial.shard_for_slot(6) == partial.shards[1]
    states = apply_op(cmap, {"op": "set_node_state", "node": "n2", "state": "draining"})[0]
    states = apply_op(states, {"op": "set_node_state", "node": "n3", "state": "dead"})[0]
    assert [n.id for n in states.live_nodes()] == ["n1", "n2", "n4"]
    assert [n.id for n in states.alive_nodes()] == ["n1", "n4"]


# ---------------------------------------------------------------------------- ops


def ok(cmap: ClusterMap, op: dict[str, Any]) -> ClusterMap:
    new, reply = apply_op(cmap, op)
    assert reply == "OK", reply
    return new


def refused(cmap: ClusterMap, op: Any, fragment: str) -> None:
    new, reply = apply_op(cmap, op)
    assert isinstance(reply, OpError), reply
    assert reply.message.startswith("ERR ")
    assert fragment in reply.message, reply.message
    assert new is cmap


def test_add_node_and_rejoin() -> None:
    cmap = small_map()
    new = ok(cmap, {"op": "add_node", "node": node(5).to_json()})
    assert new.version == 2 and new.nodes["n5"] == node(5)
    assert cmap.version == 1 and "n5" not in cmap.nodes  # the input is untouched
    assert ok(new, {"op": "add_node", "node": node(5).to_json()}) is new  # nothing changed
    dead = ok(new, {"op": "set_node_state", "node": "n5", "state": "dead"})
    moved = node(5, zone="z9")
    back = ok(dead, {"op": "add_node", "node": {**moved.to_json(), "state": "dead"}})
    assert back.nodes["n5"] == moved  # new labels, alive again
    assert back.version == 4


def test_set_node_state() -> None:
    cmap = small_map()
    for state in NODE_STATES[1:]:
        new = ok(cmap, {"op": "set_node_state", "node": "n1", "state": state})
        assert new.nodes["n1"].state == state and new.version == 2
    assert ok(cmap, {"op": "set_node_state", "node": "n1", "state": "alive"}) is cmap
    refused(cmap, {"op": "set_node_state", "node": "n9", "state": "dead"}, "unknown node n9")
    refused(cmap, {"op": "set_node_state", "node": "n1", "state": "gone"}, "state")


def test_remove_node() -> None:
    cmap = ok(small_map(), {"op": "add_node", "node": node(5).to_json()})
    new = ok(cmap, {"op": "remove_node", "node": "n5"})
    assert "n5" not in new.nodes and new.version == cmap.version + 1
    refused(cmap, {"op": "remove_node", "node": "n4"}, "shard(s) 2")
    freed = ok(cmap, {"op": "set_replicas", "shard": 1, "replicas": ["n1", "n2", "n4"],
                      "preferred_leader": "n1"})
    freed = ok(freed, {"op": "set_replicas", "shard": 2, "replicas": ["n2", "n4", "n5"]})
    refused(freed, {"op": "remove_node", "node": "n3"}, "voter of the placement driver")
    refused(cmap, {"op": "remove_node", "node": "n9"}, "unknown node")


def test_set_replicas() -> None:
    cmap = small_map()
    new = ok(cmap, {"op": "set_replicas", "shard": 1, "replicas": ["n4", "n2", "n3"],
                    "preferred_leader": "n4"})
    assert new.shards[1].replicas == ("n4", "n2", "n3")
    assert new.shards[1].preferred_leader == "n4"
    assert new.shards[2] is cmap.shards[2]
    assert ok(new, {"op": "set_replicas", "shard": 1, "replicas": ["n4", "n2", "n3"],
                    "preferred_leader": "n4"}) is new
    no_preference = ok(cmap, {"op": "set_replicas", "shard": 1, "replicas": ["n1"]})
    assert no_preference.shards[1].preferred_leader == ""
    refused(cmap, {"op": "set_replicas", "shard": 1, "replicas": ["n1", "n9"]}, "unknown node")
    refused(cmap, {"op": "set_replicas", "shard": 7, "replicas": ["n1"]}, "unknown shard 7")
    refused(cmap, {"op": "set_replicas", "shard": 1, "replicas": []}, "at least one")
    refused(cmap, {"op": "set_replicas", "shard": 1, "replicas": ["n1", "n1"]}, "twice")
    refused(cmap, {"op": "set_replicas", "shard": 1, "replicas": ["n1"],
                   "preferred_leader": "n2"}, "not a replica")


def test_report_shard() -> None:
    cmap = small_map()
    report = {"op": "report_shard", "shard": 1, "leader": "n2", "term": 5,
              "voters": ["n3", "n1", "n2"], "learners": []}
    new = ok(cmap, report)
    shard = new.shards[1]
    assert (shard.leader, shard.term, shard.voters, shard.learners) == \
        ("n2", 5, ("n1", "n2", "n3"), ())
    assert new.version == 2
    assert ok(new, report) is new  # same report: no bump
    stale = ok(new, {**report, "term": 4, "leader": "n1"})
    assert stale is new  # an older term is ignored, answered OK
    newer = ok(new, {**report, "term": 6, "leader": "n3", "learners": ["n4"]})
    assert newer.shards[1].leader == "n3" and newer.shards[1].learners == ("n4",)
    same_term = ok(newer, {**report, "term": 6, "leader": "n3"})
    assert same_term.shards[1].learners == () and same_term.version == newer.version + 1
    without_learners = {k: v for k, v in report.items() if k != "learners"}
    assert ok(cmap, without_learners).shards[1].voters == ("n1", "n2", "n3")
    refused(cmap, {**report, "shard": 9}, "unknown shard 9")
    refused(cmap, {**report, "term": "5"}, "'term'")
    refused(cmap, {**report, "voters": "n1"}, "'voters'")


def test_set_meta_voters() -> None:
    cmap = small_map()
    new = ok(cmap, {"op": "set_meta_voters", "voters": ["n2", "n3", "n4"]})
    assert new.meta_voters == ("n2", "n3", "n4")
    assert ok(new, {"op": "set_meta_voters", "voters": ["n2", "n3", "n4"]}) is new
    refused(cmap, {"op": "set_meta_voters", "voters": ["n9"]}, "unknown node")
    refused(cmap, {"op": "set_meta_voters", "voters": []}, "at least one")


def test_add_shard() -> None:
    cmap = small_map()
    # a split adds a shard over slots no shard owns
    base = ClusterMap(1, "zone", 3, cmap.nodes, {1: ShardInfo(1, ((0, 99),), ("n1",))}, ("n1",))
    new = ok(base, {"op": "add_shard", "shard": ShardInfo(2, ((100, 199),), ("n2",)).to_json()})
    assert new.shards[2].slots == ((100, 199),) and new.shard_for_slot(150) == new.shards[2]
    assert base.shard_for_slot(150) is None  # the old map's table is its own
    refused(base, {"op": "add_shard", "shard": ShardInfo(2, ((99, 100),), ("n2",)).to_json()},
            "both own slot 99")
    refused(base, {"op": "add_shard", "shard": ShardInfo(1, ((500, 600),), ("n2",)).to_json()},
            "exists")
    refused(base, {"op": "add_shard", "shard": ShardInfo(2, ((500, 600),), ("n9",)).to_json()},
            "unknown node")
    refused(base, {"op": "add_shard", "shard": {"id": 2, "replicas": ["n1"]}},
            "missing field 'slots'")


def test_set_policy() -> None:
    cmap = small_map()
    new = ok(cmap, {"op": "set_policy", "replication_factor": 5, "survival_goal": "region"})
    assert (new.replication_factor, new.survival_goal) == (5, "region")
    assert ok(cmap, {"op": "set_policy"}) is cmap
    refused(cmap, {"op": "set_policy", "survival_goal": "moon"}, "survival_goal")
    refused(cmap, {"op": "set_policy", "replication_factor": 0}, "replication_factor")


@pytest.mark.parametrize(("op", "fragment"), [
    ({}, "missing field 'op'"),
    ({"op": 3}, "'op' must be a string"),
    ({"op": "explode"}, "unknown placement op 'explode'"),
    ({"op": "add_node"}, "missing field 'node'"),
    ({"op": "add_node", "node": "n1"}, "JSON object"),
    ({"op": "set_node_state", "state": "dead"}, "missing field 'node'"),
    ({"op": "remove_node", "node": 1}, "'node' must be a string"),
    ({"op": "set_replicas", "shard": "1", "replicas": ["n1"]}, "'shard' must be an integer"),
    ({"op": "set_replicas", "shard": 1}, "missing field 'replicas'"),
    ({"op": "set_replicas", "shard": 1, "replicas": [1]}, "list of non-empty strings"),
    ({"op": "report_shard", "shard": 1, "term": 3, "voters": []}, "missing field 'leader'"),
    ({"op": "report_shard", "shard": 1, "leader": "n1", "term": True, "voters": []}, "'term'"),
    ({"op": "set_meta_voters"}, "missing field 'voters'"),
    ({"op": "add_shard", "shard": []}, "JSON object"),
    (["op", "add_node"], "JSON object"),
])
def test_malformed_ops_are_refused_not_raised(op: Any, fragment: str) -> None:
    refused(small_map(), op, fragment)


# ---------------------------------------------------------------------------- machine


def test_machine_applies_and_never_raises() -> None:
    machine = MapMachine(small_map())
    assert machine.key_count == 2
    assert machine.apply(1, encode_op({"op": "add_node", "node": node(5).to_json()})) == "OK"
    assert "n5" in machine.map.nodes and machine.map.version == 2
    assert machine.apply(2, b"") is None
    for garbage in (b"\xff\xfe", b"{", b"[1, 2]", b"42", b"null", b'{"op": "nope"}',
                    b"[" * 100_000):
        reply = machine.apply(3, garbage)
        assert isinstance(reply, OpError), garbage[:10]
    assert machine.map.version == 2
    add = {"op": "add_shard", "shard": ShardInfo(3, (), ("n1",)).to_json()}
    assert machine.apply(4, encode_op(add)) == "OK"
    assert machine.key_count == 3


def test_encode_op_is_canonical() -> None:
    assert encode_op({"b": 1, "a": [1, 2], "op": "x"}) == b'{"a":[1,2],"b":1,"op":"x"}'


def test_snapshot_restore_determinism() -> None:
    ops = [
        {"op": "add_node", "node": node(5).to_json()},
        {"op": "set_node_state", "node": "n1", "state": "dead"},
        {"op": "set_replicas", "shard": 1, "replicas": ["n5", "n2", "n3"],
         "preferred_leader": "n2"},
        {"op": "report_shard", "shard": 1, "leader": "n2", "term": 3, "voters": ["n2", "n3"],
         "learners": ["n5"]},
        {"op": "set_meta_voters", "voters": ["n5", "n2", "n3"]},
        {"op": "remove_node", "node": "n1"},
        {"op": "bogus"},
    ]
    a, b = MapMachine(small_map()), MapMachine(small_map())
    replies_a = [a.apply(i, encode_op(op)) for i, op in enumerate(ops, 1)]
    replies_b = [b.apply(i, encode_op(op)) for i, op in enumerate(ops, 1)]
    assert replies_a == replies_b
    assert replies_a[:-1] == ["OK"] * 6
    assert a.snapshot() == b.snapshot()
    c = MapMachine(small_map())
    c.restore(a.snapshot())
    assert c.map == a.map and c.snapshot() == a.snapshot() and c.key_count == 2
    with pytest.raises(Corrupt):
        c.restore(b"garbage")
    assert c.map == a.map


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from([
    {"op": "set_node_state", "node": "n2", "state": "dead"},
    {"op": "set_node_state", "node": "n2", "state": "alive"},
    {"op": "add_node", "node": node(5).to_json()},
    {"op": "remove_node", "node": "n5"},
    {"op": "set_replicas", "shard": 1, "replicas": ["n4", "n3", "n2"]},
    {"op": "set_replicas", "shard": 2, "replicas": ["n5", "n3"], "preferred_leader": "n5"},
    {"op": "report_shard", "shard": 1, "leader": "n3", "term": 2, "voters": ["n3"]},
    {"op": "report_shard", "shard": 1, "leader": "n4", "term": 1, "voters": ["n4"]},
    {"op": "set_meta_voters", "voters": ["n4"]},
    {"op": "nonsense"},
]), max_size=12))
def test_random_op_sequences_keep_the_map_valid(ops: list[dict[str, Any]]) -> None:
    machine = MapMachine(small_map())
    version = machine.map.version
    for index, op in enumerate(ops, 1):
        before = machine.map
        reply = machine.apply(index, encode_op(op))
        if machine.map is before:
            assert machine.map.version == version
        else:
            assert reply == "OK"
            version += 1
            assert machine.map.version == version
        # the map always survives its own encoding
        assert ClusterMap.decode(machine.snapshot()) == machine.map


def test_split_shard() -> None:
    cmap = small_map()
    op = {"op": "split_shard", "shard": 1, "new_shard": 3, "first_slot": 4096,
          "last_slot": 8191}
    new = ok(cmap, op)
    assert new.version == cmap.version + 1
    assert new.shards[1].slots == ((0, 4095),)
    assert new.shards[3].slots == ((4096, 8191),)
    assert new.shards[3].replicas == cmap.shards[1].replicas
    assert new.shard_for_slot(5000) is not None and new.shard_for_slot(5000).id == 3
    assert new.shard_for_slot(100).id == 1  # type: ignore[union-attr]
    assert ok(new, op) is new  # reported again by another leader: nothing changes
    # A split from the middle leaves two ranges behind.
    middle = ok(cmap, {**op, "first_slot": 1000, "last_slot": 1999})
    assert middle.shards[1].slots == ((0, 999), (2000, 8191))
    refused(cmap, {**op, "first_slot": 8000, "last_slot": 9000}, "not all in shard 1")
    refused(cmap, {**op, "first_slot": 0, "last_slot": 8191}, "would keep no slot")
    refused(cmap, {**op, "new_shard": 2}, "exists with other slots")
    refused(cmap, {**op, "shard": 9}, "unknown shard 9")


def test_set_merge_and_merge_shards() -> None:
    cmap = small_map()
    merging = ok(cmap, {"op": "set_merge", "shard": 2, "into": 1})
    assert merging.shards[2].merge_into == 1
    assert merging.shards[2].replicas == cmap.shards[1].replicas
    refused(merging, {"op": "set_merge", "shard": 1, "into": 1}, "two different")
    refused(merging, {"op": "set_merge", "shard": 1, "into": 2}, "itself being merged")
    merged = ok(merging, {"op": "merge_shards", "shard": 1, "source": 2})
    assert set(merged.shards) == {1}
    assert merged.shards[1].slots == ((0, 16383),)
    assert ok(merged, {"op": "merge_shards", "shard": 1, "source": 2}) is merged
    assert ClusterMap.decode(merged.encode()) == merged
    assert ClusterMap.decode(merging.encode()).shards[2].merge_into == 1


# ---------------------------------------------------------------------------- damaged replicas


def test_rebuild_replica_marks_then_finish_clears_and_old_maps_encode_unchanged() -> None:
    cmap = small_map()
    assert b"rebuilding" not in cmap.encode()
    marked, reply = apply_op(cmap, {"op": "rebuild_replica", "shard": 1, "node": "n2"})
    assert reply == "OK" and marked.shards[1].rebuilding == ("n2",)
    assert marked.shards[1].replicas == ("n1", "n2", "n3")  # still desired: comes back
    assert ClusterMap.decode(marked.encode()) == marked
    again, _ = apply_op(marked, {"op": "rebuild_replica", "shard": 1, "node": "n2"})
    assert again is marked
    refused, reply = apply_op(cmap, {"op": "rebuild_replica", "shard": 1, "node": "n4"})
    assert refused is cmap and "not a replica" in str(reply)
    done, reply = apply_op(marked, {"op": "finish_rebuild", "shard": 1, "node": "n2"})
    assert reply == "OK" and done.shards[1].rebuilding == ()
    assert done.shards == cmap.shards and b"rebuilding" not in done.encode()
    moved, _ = apply_op(marked, {"op": "set_replicas", "shard": 1,
                                 "replicas": ["n1", "n3", "n4"], "preferred_leader": "n1"})
    assert moved.shards[1].rebuilding == ()
