"""ACL SETUSER / DELUSER on a real 3-node cluster: a user created on one node (through the
placement driver's replicated map) authenticates on every node; a read-only user gets NOPERM
on a write; after DELUSER no node accepts it. Uses redis-py's acl_* helpers."""

from __future__ import annotations

import time
from typing import Any

import pytest
import redis
from integration_harness import wait_until

PASSWORD = "internal-secret"


def _retry(call: Any, timeout: float = 20.0) -> Any:
    """`call()`, retried while the placement driver has no leader (TRYAGAIN)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return call()
        except redis.exceptions.TryAgainError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def _auth_works(client: redis.Redis, user: str, password: str) -> bool:
    try:
        return bool(client.execute_command("AUTH", user, password))
    except redis.exceptions.AuthenticationError:
        return False


def test_users_are_replicated_to_every_node(cluster: Any) -> None:
    c = cluster(3, requirepass=PASSWORD)
    first, _, third = c.nodes
    admin = c.client(first, password=PASSWORD)
    assert _retry(lambda: admin.acl_setuser("alice", enabled=True, passwords=["+alice-pw"],
                                            keys=["*"], categories=["+@all"])) is True
    assert _retry(lambda: admin.acl_setuser("ro", enabled=True, passwords=["+ro-pw"],
                                            keys=["*"], categories=["-@all", "+@read"]))
    with pytest.raises(redis.exceptions.ResponseError, match="is not supported"):
        admin.acl_setuser("bad", enabled=True, channels=["chan:*"])  # channels are all

    remote = c.client(third, password=PASSWORD)
    wait_until(lambda: _auth_works(remote, "alice", "alice-pw"), 30, "alice on the 3rd node")
    assert remote.execute_command("ACL", "WHOAMI") == "alice"
    assert remote.set("k", "v") is True
    user = remote.acl_getuser("ro")
    assert user["enabled"] and user["categories"] == ["-@all", "+@read"]
    assert user["keys"] == ["~*"] and len(user["passwords"]) == 1
    assert any(line.startswith("user alice on #") for line in remote.acl_list())

    reader = c.client(third, username="ro", password="ro-pw")
    wait_until(lambda: _auth_works(reader, "ro", "ro-pw"), 30, "ro on the 3rd node")
    with pytest.raises(redis.exceptions.NoPermissionError,
                       match="User ro has no permissions to run the 'set' command"):
        reader.set("k", "v2")
    assert reader.get("k") == "v"

    assert _retry(lambda: admin.acl_deluser("alice", "ro")) == 2
    for node in c.nodes:
        probe = c.client(node, password=PASSWORD)
        wait_until(lambda probe=probe: not _auth_works(probe, "alice", "alice-pw"), 30,
                   f"alice gone on {node.id}")
        assert not _auth_works(probe, "ro", "ro-pw")
    with pytest.raises(redis.exceptions.AuthenticationError):
        reader.get("k")  # the deleted user's session is unauthenticated again
