"""Stale-map relocations (issue 16): `set_replicas` with `expect_replicas` is a compare-and-set
on the shard's desired replicas, decided in the pure map (every replica of the map decides the
same), so an op computed from a frozen copy of the map (a node whose own placement-driver
replica stopped keeps proposing its relocation once a second) can never undo a later move.
The absolute form (no `expect_replicas`: nodes before session 9) is still accepted."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from tests.placement.test_planner import apply_all, nodes_in, report_desired

from phalanx.placement.map import ClusterMap, MapMachine, NodeInfo, OpError, apply_op, encode_op
from phalanx.placement.planner import initial_map, plan, relocation_op, relocation_target


def five_nodes() -> list[NodeInfo]:
    """n1..n3 in z0..z2, n4 in z0, n5 in z1: room for a relocation and a later move."""
    return [*nodes_in(3, 1), NodeInfo("n4", "h4:7200", "h4:7000", zone="z0", region="r0"),
            NodeInfo("n5", "h5:7200", "h5:7000", zone="z1", region="r0")]


def settled(nodes: list[NodeInfo], shard_count: int) -> ClusterMap:
    """Planned and reported until the planner has nothing left to do."""
    cmap = report_desired(initial_map(nodes, shard_count))
    for _ in range(50):
        ops = plan(cmap)
        if not ops:
            return cmap
        cmap = report_desired(apply_all(cmap, ops))
    raise AssertionError("the planner did not settle")


def test_cas_applies_on_the_current_replicas_and_refuses_any_other() -> None:
    cmap = settled(five_nodes(), 1)
    now = list(cmap.shards[1].replicas)
    spare = next(n for n in ("n4", "n5", "n1", "n2", "n3") if n not in now)
    moved = [spare, *now[1:]]
    new, reply = apply_op(cmap, {"op": "set_replicas", "shard": 1, "replicas": moved,
                                 "expect_replicas": now})
    assert reply == "OK" and list(new.shards[1].replicas) == moved
    assert new.version == cmap.version + 1
    # The same op again: the replicas are no longer `now`. Refused, the map untouched.
    again, reply = apply_op(new, {"op": "set_replicas", "shard": 1, "replicas": moved,
                                  "expect_replicas": now})
    assert isinstance(reply, OpError) and again is new
    assert reply.message == (f"ERR set_replicas: stale: shard 1's replicas are "
                             f"{','.join(moved)}, not {','.join(now)}; not applied")
    # The order counts (the exact list, as written): a reordering is a different value.
    reordered, reply = apply_op(new, {"op": "set_replicas", "shard": 1, "replicas": now,
                                      "expect_replicas": list(reversed(moved))})
    assert isinstance(reply, OpError) and "stale" in reply.message and reordered is new
    # A malformed expectation is a precise error, not a silent pass.
    for bad in ([], [1], "n1", ["n1", "n1"]):
        kept, reply = apply_op(new, {"op": "set_replicas", "shard": 1, "replicas": now,
                                     "expect_replicas": bad})
        assert isinstance(reply, OpError) and "'expect_replicas'" in reply.message, reply
        assert kept is new


def test_the_old_absolute_op_is_still_accepted() -> None:
    """Rolling upgrades: a node of an older version sends set_replicas without
    `expect_replicas`; it applies as before (docs/architecture.md, "Map ops")."""
    cmap = settled(five_nodes(), 1)
    now = list(cmap.shards[1].replicas)
    spare = next(n for n in ("n4", "n5") if n not in now)
    new, reply = apply_op(cmap, {"op": "set_replicas", "shard": 1,
                                 "replicas": [spare, *now[1:]]})
    assert reply == "OK" and new.shards[1].replicas == (spare, *now[1:])


def test_a_frozen_relocation_cannot_undo_a_later_move() -> None:
    """The scenario of s8's note: a node's disk fails, its relocation is committed, the shard
    moves again, and the node (its map frozen at the first view) resends the relocation."""
    cmap = settled(five_nodes(), 1)
    failed = cmap.shards[1].replicas[1]
    frozen = cmap  # the failing node's copy of the map stops here
    target = relocation_target(frozen, 1, failed)
    assert target is not None
    relocation = relocation_op(frozen, 1, failed, target)
    assert relocation["expect_replicas"] == list(frozen.shards[1].replicas)
    machine = MapMachine(frozen)
    assert machine.apply(1, encode_op(relocation)) == "OK"
    relocated = machine.map
    assert failed not in relocated.shards[1].replicas and target in relocated.shards[1].replicas
    # A later move: the target is drained, and the driver moves the replica on.
    later = report_desired(relocated)
    later = apply_all(later, [{"op": "set_node_state", "node": target, "state": "draining"}])
    ops = [op for op in plan(later) if op["op"] == "set_replicas"]
    assert ops, "the drain should move the replica off the target"
    later = apply_all(later, ops)
    assert target not in later.shards[1].replicas
    machine.restore(later.encode())
    # The frozen node resends its relocation (once a second, from the frozen view).
    reply = machine.apply(2, encode_op(relocation))
    assert isinstance(reply, OpError) and "stale" in reply.message, reply
    assert machine.map.encode() == later.encode()
    assert target not in machine.map.shards[1].replicas
    # What the same resend did before this op existed: it puts the replica back on the
    # drained node (the bug this guards against).
    absolute = {k: v for k, v in relocation.items() if k != "expect_replicas"}
    undone, reply = apply_op(later, absolute)
    assert reply == "OK" and target in undone.shards[1].replicas


def test_every_planned_set_replicas_is_a_cas_on_the_map_it_came_from() -> None:
    cmap = settled(nodes_in(3, 2), 4)
    cmap = apply_all(cmap, [{"op": "set_node_state", "node": "n1", "state": "dead"}])
    ops = [op for op in plan(cmap) if op["op"] == "set_replicas"]
    assert ops
    for op in ops:
        assert op["expect_replicas"] == list(cmap.shards[op["shard"]].replicas)


@st.composite
def histories(draw: st.DrawFn) -> tuple[ClusterMap, list[tuple[str, str]]]:
    cmap = settled(nodes_in(3, draw(st.integers(1, 2))), draw(st.integers(1, 6)))
    ids = list(cmap.nodes)
    events = draw(st.lists(st.tuples(st.sampled_from(ids),
                                     st.sampled_from(["dead", "draining", "alive", "disk"])),
                           min_size=1, max_size=6))
    return cmap, events


@settings(max_examples=60, deadline=None)
@given(histories(), st.data())
def test_property_no_op_from_a_stale_view_changes_a_shard_that_moved(
        history: tuple[ClusterMap, list[tuple[str, str]]], data: st.DataObject) -> None:
    """Run a random history (node states change, disks fail, the planner acts, shards
    report), keeping every map on the way. Then take any earlier map as a frozen view, the
    ops it would send (a plan round, or a relocation), and apply them to the latest map: a
    shard whose replicas changed since the view is left exactly as it is; a shard whose
    replicas did not change gets what the view asked for."""
    cmap, events = history
    views = [cmap]
    for node_id, event in events:
        if event == "disk":
            shard = next((s for s in cmap.shards.values() if node_id in s.replicas), None)
            target = relocation_target(cmap, shard.id, node_id) if shard else None
            ops: list[dict[str, Any]] = [relocation_op(cmap, shard.id, node_id, target)] \
                if shard is not None and target is not None else []
        else:
            ops = [{"op": "set_node_state", "node": node_id, "state": event}]
        cmap = apply_all(cmap, ops)
        views.append(cmap)
        for _ in range(data.draw(st.integers(0, 3))):
            cmap = report_desired(apply_all(cmap, plan(cmap)))
            views.append(cmap)
    latest = cmap
    view = data.draw(st.sampled_from(views[:-1]))
    stale_ops = [op for op in plan(view) if op["op"] == "set_replicas"]
    for shard in view.shards.values():
        for node_id in shard.replicas:
            target = relocation_target(view, shard.id, node_id)
            if target is not None:
                stale_ops.append(relocation_op(view, shard.id, node_id, target))
    for op in stale_ops:
        sid = op["shard"]
        after, reply = apply_op(latest, op)
        if latest.shards[sid].replicas != view.shards[sid].replicas:
            assert isinstance(reply, OpError) and "stale" in reply.message, (op, reply)
            assert after is latest
        else:
            assert reply == "OK", (op, reply)
            assert list(after.shards[sid].replicas) == op["replicas"]
