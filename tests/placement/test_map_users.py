"""The cluster map's users (ACL SETUSER / DELUSER): the pure ops set_user / del_user, their
canonical encoding, the snapshot round trip, and old maps (no "users" field) loading."""

from __future__ import annotations

import hashlib
import json

import pytest

from phalanx.errors import ConfigError
from phalanx.placement.map import ClusterMap, MapMachine, NodeInfo, OpError, UserInfo, apply_op

DIGEST = hashlib.sha256(b"pw").hexdigest()


def base() -> ClusterMap:
    nodes = {"n1": NodeInfo("n1", "127.0.0.1:1", "127.0.0.1:2")}
    return ClusterMap(4, "zone", 1, nodes, {}, ("n1",))


def set_user(name: str = "u", **fields: object) -> dict[str, object]:
    return {"op": "set_user", "name": name, "password_sha256": [DIGEST],
            "permissions": "all", "enabled": True, **fields}


def test_set_user_creates_replaces_and_bumps_the_version() -> None:
    cmap, reply = apply_op(base(), set_user())
    assert reply == "OK" and cmap.version == 5
    assert cmap.users["u"] == UserInfo("u", (DIGEST,), "all", True, False)
    same, reply = apply_op(cmap, set_user())
    assert reply == "OK" and same is cmap  # nothing changed: the very same map
    read, _ = apply_op(cmap, set_user(permissions="read", enabled=False))
    assert read.version == 6 and read.users["u"].permissions == "read"
    assert not read.users["u"].enabled


def test_del_user_removes_names_and_ignores_unknown_ones() -> None:
    cmap, _ = apply_op(base(), set_user("a"))
    cmap, _ = apply_op(cmap, set_user("b"))
    gone, reply = apply_op(cmap, {"op": "del_user", "names": ["a", "ghost"]})
    assert reply == "OK" and list(gone.users) == ["b"] and gone.version == cmap.version + 1
    again, reply = apply_op(gone, {"op": "del_user", "names": ["a"]})
    assert reply == "OK" and again is gone


@pytest.mark.parametrize("op", [
    set_user("default"),
    set_user(permissions="admin"),
    set_user(password_sha256=["not-hex"]),
    set_user(enabled="yes"),
    set_user("has space"),
    {"op": "set_user"},
    {"op": "del_user"},
    {"op": "del_user", "names": "u"},
])
def test_bad_user_ops_are_refused_and_change_nothing(op: dict[str, object]) -> None:
    cmap = base()
    after, reply = apply_op(cmap, op)
    assert isinstance(reply, OpError) and reply.message.startswith("ERR")
    assert after is cmap


def test_users_encode_canonically_and_old_maps_load() -> None:
    old = base()
    assert b"users" not in old.encode()  # a map without users encodes exactly as before
    assert ClusterMap.decode(old.encode()) == old
    one, _ = apply_op(old, set_user("z"))
    two, _ = apply_op(one, set_user("a", password_sha256=[DIGEST, DIGEST]))
    raw = json.loads(two.encode())
    assert [u["name"] for u in raw["users"]] == ["a", "z"]
    assert raw["users"][0]["password_sha256"] == [DIGEST]
    assert ClusterMap.decode(two.encode()) == two
    # Applied in another order, the same users give the same bytes (but another version).
    other, _ = apply_op(old, set_user("a"))
    other, _ = apply_op(other, set_user("z"))
    assert other.encode() == two.encode()
    broken = dict(raw, users=[raw["users"][0], raw["users"][0]])
    with pytest.raises(ConfigError, match="listed twice"):
        ClusterMap.from_json(broken)


def test_map_machine_snapshot_keeps_users() -> None:
    machine = MapMachine(base())
    assert machine.apply(1, json.dumps(set_user()).encode()) == "OK"
    copy = MapMachine(base())
    copy.restore(machine.snapshot())
    assert copy.map.users == machine.map.users and copy.snapshot() == machine.snapshot()
