"""Internal PHALANX.* commands (server/internal_auth.py, docs/security.md) on one in-process
node with a real redis-py client: without a cluster secret, the placement driver gives the
cluster its internal token and an ordinary client (default user, every permission) can no
longer freeze a shard, vote in a consistency check, change the map, forge a forwarded write
or inject a peer's Pub/Sub message; the same commands signed with the token still run."""

from __future__ import annotations

import asyncio
import importlib.util
import json
from dataclasses import replace
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from redis.exceptions import NoPermissionError, ResponseError

from phalanx.placement.map import ClusterMap, apply_op
from phalanx.server import internal_auth
from phalanx.server.config import NodeConfig, PeerConfig
from phalanx.server.internal_auth import TOKEN_GRACE_MS, internal_key, verify_key
from phalanx.server.node import Node
from phalanx.server.peer_link import internal_signature

# The in-process node helpers of tests/server/test_security.py, loaded by path (see
# tests/server/test_acl.py for why not a plain import).
_spec = importlib.util.spec_from_file_location(
    "_server_security_helpers_internal", Path(__file__).with_name("test_security.py"))
assert _spec is not None and _spec.loader is not None
_security = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_security)
run = _security.run

_REFUSED = "internal cluster command without a valid cluster secret signature"
_TOKEN = "ab" * 32


async def _token_of(node: Node) -> str:
    """The cluster's internal token once the driver has committed it (bounded wait)."""
    for _ in range(1000):
        token = node.resp.replicas.cluster_map.internal_token
        if token:
            return token
        await asyncio.sleep(0.01)
    raise AssertionError("the placement driver never committed an internal token")


def _client(node: Node) -> aioredis.Redis:
    return aioredis.Redis(host=node.resp.host, port=node.resp.port, socket_timeout=10)


def test_the_token_op_sets_once_and_is_never_shown() -> None:
    cmap = ClusterMap(version=1, survival_goal="zone", replication_factor=1, nodes={},
                      shards={}, meta_voters=())
    op = {"op": "set_internal_token", "token": _TOKEN, "at_ms": 1_000}
    with_token, reply = apply_op(cmap, op)
    assert reply == "OK" and with_token.internal_token == _TOKEN
    decoded = ClusterMap.decode(with_token.encode())
    assert (decoded.internal_token, decoded.internal_token_ms) == (_TOKEN, 1_000)
    assert _TOKEN not in repr(with_token)
    # Idempotent; a second, different token is refused; a malformed one is refused.
    assert apply_op(with_token, op) == (with_token, "OK")
    again, refused = apply_op(with_token, {**op, "token": "cd" * 32})
    assert again is with_token and "already has its internal token" in str(refused)
    _, bad = apply_op(cmap, {**op, "token": "not hex"})
    assert "64 lowercase hex digits" in str(bad)
    # A map without a token encodes as before (no field).
    assert b"internal_token" not in cmap.encode()
    # Nodes sign with it at once, and check it once the grace after `at_ms` is over.
    config = NodeConfig(id="n1", data_dir="/nonexistent", peers=(PeerConfig(
        id="n1", peer="127.0.0.1:1", resp="127.0.0.1:2"),))
    assert internal_key(config, with_token) == _TOKEN
    assert verify_key(config, with_token, now_ms=1_000 + TOKEN_GRACE_MS - 1) == ""
    assert verify_key(config, with_token, now_ms=1_000 + TOKEN_GRACE_MS) == _TOKEN
    assert verify_key(config, cmap, now_ms=10**12) == ""
    secret = replace(config, cluster_secret="s3cret")
    assert internal_key(secret, with_token) == verify_key(secret, cmap, now_ms=0) == "s3cret"


def test_an_ordinary_client_cannot_run_internal_commands_without_a_secret(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # No grace: the one node has the token as soon as it is committed.
    monkeypatch.setattr(internal_auth, "TOKEN_GRACE_MS", 0)

    async def body(node: Node) -> None:
        token = await _token_of(node)
        replicas = node.resp.replicas
        shard = next(iter(replicas.cluster_map.shards))
        shard_text = str(shard).encode()
        client = _client(node)
        try:
            assert await client.set("k", "v") is True
            attempts: list[tuple[object, ...]] = [
                ("PHALANX.SHARD", shard, "PHALANX.FREEZE", shard + 1),
                ("PHALANX.SHARD", shard, "PHALANX.FREEZE", shard + 1, "0" * 64),
                ("PHALANX.SHARD", shard, "PHALANX.DIGEST", 1, "n1", "abc"),
                ("PHALANX.META", json.dumps({"op": "set_node_state", "node": "n1",
                                             "state": "draining"})),
                ("PHALANX.FWD", 7, 1, 1, "", "SET", "k", "forged"),
                ("PHALANX.PUBLISH", "P", "channel", "forged"),
            ]
            for attempt in attempts:
                with pytest.raises(NoPermissionError, match=_REFUSED):
                    await client.execute_command(*attempt)
            # Nothing of it happened: the shard serves writes, the map is unchanged, the
            # forged write was not applied.
            assert await client.set("k2", "v2") is True
            assert await client.get("k") == b"v"
            assert replicas.cluster_map.nodes["n1"].state == "alive"
            group = replicas.local_group(shard)
            assert group is not None
            assert group.machine.frozen_into is None  # type: ignore[attr-defined]
            # The same commands signed with the cluster's token run (the nodes' own path).
            vote = [shard_text, b"PHALANX.DIGEST", b"1", b"n1", b"abc"]
            signature = internal_signature(token, b"\0".join(vote))
            assert await client.execute_command("PHALANX.SHARD", *vote, signature) == b"OK"
            payload = b"P %d channel" % len(b"channel") + b"signed"  # pubsub._signed_payload
            assert await client.execute_command(
                "PHALANX.PUBLISH", "P", "channel", "signed",
                internal_signature(token, payload)) == 0
            # A signed map op the map refuses answers its error once, not "ERR ERR ...".
            bad = json.dumps({"op": "set_node_state", "node": "nope", "state": "draining"})
            with pytest.raises(ResponseError) as refused:
                await client.execute_command("PHALANX.META", bad,
                                             internal_signature(token, bad.encode()))
            assert "nope" in str(refused.value) and not str(refused.value).startswith("ERR")
            # A join (open without a secret: the joining node has nothing to sign with)
            # answers the map without the token.
            op = {"op": "add_node", "node": {"id": "n9", "peer": "127.0.0.1:1",
                                             "resp": "127.0.0.1:2"}}
            reply = await client.execute_command("PHALANX.JOIN", json.dumps(op))
            assert b"internal_token" not in reply and token.encode() not in reply
            assert "n9" in ClusterMap.decode(reply).nodes
        finally:
            await client.aclose()

    run(tmp_path, body)


def test_with_a_cluster_secret_no_token_is_made(tmp_path: Path) -> None:
    async def body(node: Node) -> None:
        client = _client(node)
        try:
            # The driver has run its rounds once a map op through it committed.
            for _ in range(1000):
                if node.resp.replicas.meta.is_leader():
                    break
                await asyncio.sleep(0.01)
            assert await client.set("k", "v") is True
            shard = next(iter(node.resp.replicas.cluster_map.shards))
            with pytest.raises(NoPermissionError, match=_REFUSED):
                await client.execute_command("PHALANX.SHARD", shard, "PHALANX.FREEZE",
                                             shard + 1)
            assert node.resp.replicas.cluster_map.internal_token == ""
        finally:
            await client.aclose()

    run(tmp_path, body, cluster_secret="s3cret-s3cret-s3cret")
