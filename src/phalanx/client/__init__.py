"""phalanx.client: a smart Python client for phalanx, built on redis-py connections.

```python
from phalanx.client import PhalanxClient, OutcomeUnknownError

with PhalanxClient(["127.0.0.11:7001", "127.0.0.12:7002"]) as client:
    client.set("user:1", "alice")           # routed to the leader of user:1's shard
    client.mget(["user:1", "user:2"])        # one MGET per shard, reassembled in order
    try:
        client.incr("visits")
    except OutcomeUnknownError:
        ...                                  # may or may not have counted: decide yourself
```

Routing. The client reads the cluster map (`CLUSTER SHARDS`, else `CLUSTER SLOTS`) from the
first seed that answers and sends each command to the Raft leader of its key's shard (CRC16
slot with `{hashtag}`, key positions from the server's command table). Keyless commands go to
any node (the server fans them out). The map is refreshed after `-MOVED` (which also
reroutes the slot at once), connection errors, `-TRYAGAIN` / `-CLUSTERDOWN`, and every
`refresh_interval_s`. When the leader cannot be reached the client tries the shard's other
replicas and then any node: a phalanx node in proxy mode forwards to the leader.

Retry rules. Every failed attempt is one of:
- certainly not applied: `-TRYAGAIN`, `-CLUSTERDOWN`, `-MOVED`, or a connection that could
  not be made (refused, connect timeout). Every command is retried, including INCR.
  (`-CLUSTERDOWN` counts as certainly not applied because the server answers it only before
  proposing a command, or after attempts that certainly did nothing; the chaos lab counts it
  the same way.)
- outcome unknown: `-ERR phalanx: outcome unknown ...` (or `... timed out ...`), or a
  connection that failed or timed out after the request was sent. Read-only commands (the
  command table's "readonly" flag, plus PING/INFO/CLUSTER/...) and idempotent writes are
  retried; any other write raises `OutcomeUnknownError` at once and is never re-sent.
- a real answer (WRONGTYPE, syntax, CROSSSLOT, wrong password, ...): raised, never retried.

Idempotent writes (`policy.IDEMPOTENT_WRITES`): SET (without GET, NX or IFEQ), MSET, DEL,
UNLINK, HSET, HDEL, SADD, SREM, EXPIRE/PEXPIRE/EXPIREAT/PEXPIREAT (without NX/XX/GT/LT),
PERSIST, FLUSHDB, FLUSHALL. Everything else that writes is not: INCR/INCRBY/DECR/INCRBYFLOAT,
HINCRBY, APPEND, LPUSH/RPUSH/LPOP/RPOP, GETSET, GETDEL, SETNX, SET ... GET/NX/IFEQ, and any
command the client does not know. A re-sent idempotent write leaves the right state, but its
reply describes the last attempt (DEL may count 0 for a key the first attempt deleted; SET EX
restarts its TTL).

Backoff and deadline. Redirects and refused connections to an untried node are followed at
once; other retries sleep uniform(0, min(backoff_max_s, backoff_base_s * 2**attempt)) ("full
jitter"). A call makes at most `max_attempts` attempts, starts none after `request_timeout_s`,
and then raises the last error, except that a write which had an unknown-outcome attempt
raises `OutcomeUnknownError` (it may have been applied).

`OutcomeUnknownError` derives from both `redis.exceptions.RedisError` and
`phalanx.errors.OutcomeUnknown`. `mset` is atomic within a shard, not across shards.
Connection-state commands (SELECT, MULTI/EXEC, WATCH, READONLY, ...) are refused: connections
are pooled per node and requests are routed, so such state would not stick.
"""

from __future__ import annotations

from phalanx.client.cluster_client import PhalanxClient
from phalanx.client.policy import (
    IDEMPOTENT_WRITES,
    OutcomeUnknownError,
    Verdict,
    classify,
    is_idempotent,
    is_read_only,
    safe_to_resend,
)
from phalanx.client.slot_map import ShardView, SlotMap

__all__ = [
    "IDEMPOTENT_WRITES",
    "OutcomeUnknownError",
    "PhalanxClient",
    "ShardView",
    "SlotMap",
    "Verdict",
    "classify",
    "is_idempotent",
    "is_read_only",
    "safe_to_resend",
]
