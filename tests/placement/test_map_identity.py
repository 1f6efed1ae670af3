"""The node identity fields of the cluster map: incarnations recorded once, replaced only
through `replace_node` + `finish_replace`, never lost by a re-join, and absent from the
encoding while empty (old maps encode byte for byte as before)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from phalanx.errors import ConfigError
from phalanx.placement.map import ClusterMap, NodeInfo, OpError, ShardInfo, apply_op
from phalanx.raft import ConfState, NodeId
from phalanx.server.identity import recording_ops, replaced_membership


def node(i: int) -> NodeInfo:
    return NodeInfo(f"n{i}", f"127.0.0.{10 + i}:72{i:02d}", f"127.0.0.{10 + i}:70{i:02d}",
                    f"127.0.0.{10 + i}:71{i:02d}", f"z{i}", "r1")


def three() -> ClusterMap:
    nodes = {n.id: n for n in (node(1), node(2), node(3))}
    shards = {1: ShardInfo(1, ((0, 16383),), ("n1", "n2", "n3"), "n1", leader="n1", term=2,
                           voters=("n1", "n2", "n3"))}
    return ClusterMap(1, "zone", 3, nodes, shards, ("n1", "n2", "n3"))


def ok(cmap: ClusterMap, op: dict[str, Any]) -> ClusterMap:
    new, reply = apply_op(cmap, op)
    assert reply == "OK", reply
    return new


def refused(cmap: ClusterMap, op: dict[str, Any], needle: str) -> None:
    new, reply = apply_op(cmap, op)
    assert isinstance(reply, OpError) and needle in reply.message, reply
    assert new is cmap


def test_empty_identity_fields_are_not_encoded_and_round_trip() -> None:
    cmap = three()
    assert b"incarnation" not in cmap.encode() and b"replacing" not in cmap.encode()
    recorded = ok(cmap, {"op": "set_incarnation", "node": "n3", "incarnation": "abc123"})
    assert ClusterMap.decode(recorded.encode()) == recorded
    assert recorded.nodes["n3"].incarnation == "abc123" and recorded.version == 2
    with pytest.raises(ConfigError, match="incarnation"):
        NodeInfo.from_json({**node(1).to_json(), "incarnation": "bad id!"})


def test_an_incarnation_is_recorded_once_and_changed_only_by_a_replacement() -> None:
    cmap = ok(three(), {"op": "set_incarnation", "node": "n3", "incarnation": "old"})
    assert ok(cmap, {"op": "set_incarnation", "node": "n3", "incarnation": "old"}) is cmap
    refused(cmap, {"op": "set_incarnation", "node": "n3", "incarnation": "new"},
            "phalanx replace")
    refused(cmap, {"op": "set_incarnation", "node": "n9", "incarnation": "x"}, "unknown node")
    refused(cmap, {"op": "replace_node", "node": "n3", "incarnation": "old"}, "already is")
    refused(cmap, {"op": "finish_replace", "node": "n3"}, "not being replaced")
    replacing = ok(cmap, {"op": "replace_node", "node": "n3", "incarnation": "new"})
    assert replacing.nodes["n3"].incarnation == "old"
    assert replacing.nodes["n3"].replacing == "new"
    # A join while being replaced keeps both fields (a join never changes an identity).
    rejoined = ok(replacing, {"op": "add_node", "node": {**node(3).to_json(), "zone": "z9"}})
    assert (rejoined.nodes["n3"].incarnation, rejoined.nodes["n3"].replacing) == ("old", "new")
    done = ok(rejoined, {"op": "finish_replace", "node": "n3"})
    assert (done.nodes["n3"].incarnation, done.nodes["n3"].replacing) == ("new", "")


def test_the_driver_records_first_seen_incarnations_and_finishes_only_once_removed() -> None:
    cmap = three()
    seen = {"n1": "i1", "n2": "i2"}
    full = ConfState(voters=(NodeId("n1"), NodeId("n2"), NodeId("n3")))
    assert recording_ops(cmap, seen, full) == [
        {"op": "set_incarnation", "node": "n1", "incarnation": "i1"},
        {"op": "set_incarnation", "node": "n2", "incarnation": "i2"}]
    cmap = ok(cmap, {"op": "set_incarnation", "node": "n3", "incarnation": "old"})
    cmap = ok(cmap, {"op": "replace_node", "node": "n3", "incarnation": "new"})
    assert replaced_membership(cmap) == {"n3"}
    # Still a voter of the driver's group and of shard 1: not finished.
    assert not [op for op in recording_ops(cmap, {}, full) if op["op"] == "finish_replace"]
    without = ConfState(voters=(NodeId("n1"), NodeId("n2")))
    assert not [op for op in recording_ops(cmap, {}, without) if op["op"] == "finish_replace"]
    shard = replace(cmap.shards[1], voters=("n1", "n2"))
    removed = replace(cmap, shards={1: shard})
    assert recording_ops(removed, {"n3": "new"}, without) == [
        {"op": "finish_replace", "node": "n3"}]
