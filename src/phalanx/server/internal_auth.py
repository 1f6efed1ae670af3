"""Who may run the internal PHALANX.* commands the nodes send each other over RESP.

What lives here: `internal_key` (the key internal commands are signed with), `verify_key`
(the key a receiver checks them with), `sign`, `check` (the receiver's test), `INTERNAL_REFUSAL` and `is_internal_refusal` (a forwarder
tells a refusal of its own lagging signature from any other reply).

Rules of this file:
- The key is the cluster secret (`cluster_secret`) when the cluster has one, else the cluster
  map's internal token: 32 random bytes the placement driver proposes once into the
  replicated map (`set_internal_token`, server/driver.py), so every node knows it and no
  client ever sees it (the map it is in is never shown to a client: a join reply leaves it
  out). So an ordinary client connection, even of a user with every permission, never runs
  an internal command (freeze a shard, vote in a consistency check, change the map, forge a
  forwarded write's session): it gets `INTERNAL_REFUSAL`. docs/security.md has the list.
- Until a cluster without a secret has its token (its first moments, or a map written by
  an older version), the key is "" and internal commands are accepted unsigned, as before.
  Nodes sign with the token as soon as their map has it (`internal_key`), and enforce it
  `TOKEN_GRACE_MS` after the driver proposed it (`verify_key`): the nodes apply the map at
  slightly different moments, and a node whose map lags must not see its forwarded writes
  or Pub/Sub messages refused meanwhile (a forwarded write refused for its signature is
  sent again anyway: nothing was applied). So a new cluster's first seconds are open, as a
  cluster without a secret was before; docs/security.md says so.
- A signature is the HMAC-SHA256 of the command's signed part (`peer_link.internal_signature`),
  compared in constant time.
"""

from __future__ import annotations

import hmac
import time
from typing import TYPE_CHECKING

from phalanx.errors import CommandError
from phalanx.resp import ErrorReply
from phalanx.server.peer_link import internal_signature

if TYPE_CHECKING:
    from phalanx.placement.map import ClusterMap
    from phalanx.server.config import NodeConfig

#: The reply to an internal command without a valid signature (Redis's NOPERM: the command
#: exists, this connection may not run it).
INTERNAL_REFUSAL = ("NOPERM internal cluster command without a valid cluster secret "
                    "signature (only the nodes of this cluster may run it)")


#: How long after the driver proposed the token (its wall clock) nodes start refusing
#: internal commands not signed with it.
TOKEN_GRACE_MS = 10_000


def internal_key(config: NodeConfig, cluster_map: ClusterMap) -> str:
    """The key internal commands are signed with: the cluster secret, else the map's
    internal token, else "" (not signed)."""
    return config.cluster_secret or cluster_map.internal_token


def verify_key(config: NodeConfig, cluster_map: ClusterMap, now_ms: int | None = None) -> str:
    """The key a receiver checks internal commands with: `internal_key`, except "" (not
    checked) during the token's first `TOKEN_GRACE_MS` (see the rules)."""
    if config.cluster_secret:
        return config.cluster_secret
    token = cluster_map.internal_token
    if not token:
        return ""
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    return token if now_ms >= cluster_map.internal_token_ms + TOKEN_GRACE_MS else ""


def sign(key: str, payload: bytes) -> bytes:
    """The signature of `payload` under `key` (b"" when there is no key)."""
    return internal_signature(key, payload) if key else b""


def check(key: str, presented: bytes, payload: bytes) -> None:
    """Raise NOPERM unless `presented` signs `payload` under `key` (anything passes while
    there is no key)."""
    if key and not hmac.compare_digest(presented, internal_signature(key, payload)):
        raise CommandError(INTERNAL_REFUSAL)


def is_internal_refusal(reply: object) -> bool:
    """Is `reply` a node's refusal of an internal command's signature? (A forwarder whose
    map does not have the token yet retries: nothing was applied.)"""
    return isinstance(reply, ErrorReply) and reply.text.startswith(
        "NOPERM internal cluster command")


__all__ = ["INTERNAL_REFUSAL", "TOKEN_GRACE_MS", "check", "internal_key", "is_internal_refusal",
           "sign", "verify_key"]
