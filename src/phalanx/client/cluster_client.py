"""`PhalanxClient`: a shard-aware, failover-aware Python client built on redis-py connections.

What this module owns: discovery and refresh of the slot map, routing each request to its
shard's leader (falling back to any node, which proxies), the retry loop with exponential
backoff, full jitter and a per-call deadline, and the convenience methods. Which requests may
be retried after which errors is decided in `phalanx.client.policy` (see the package
docstring for the user-facing rules).

Rules of this module:
- One redis-py `ConnectionPool` per node address, with redis-py's own retries switched off:
  this module alone decides what is re-sent.
- A request counts as "sent" as soon as the pool handed out a connected socket; only a failure
  while connecting proves that the node never saw it.
- The slot map is immutable and replaced as a whole; the client is safe to share between
  threads (pools are thread-safe, refreshes are serialised by a lock).
"""

from __future__ import annotations

import collections
import logging
import random
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from phalanx.client.policy import (
    CONNECTION_STATE_COMMANDS,
    OutcomeUnknownError,
    Verdict,
    classify,
    is_read_only,
    safe_to_resend,
)
from phalanx.client.slot_map import SlotMap
from phalanx.placement import command_keys, key_slot

logger = logging.getLogger(__name__)

#: A map refresh asked for by an error waits at least this long after the previous one.
MIN_REFRESH_GAP_S = 0.1
#: An attempt's reply is awaited for `socket_timeout`, cut to the time left before the deadline
#: but never below this: a shorter wait would turn slow-but-fine writes into unknown outcomes.
MIN_ATTEMPT_TIMEOUT_S = 1.0

Arg = bytes | str | int | float


def _to_bytes(value: object) -> bytes:
    """A request argument as the bytes redis-py sends (used for routing and the policy)."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, bool):
        return b"1" if value else b"0"
    if isinstance(value, int):
        return b"%d" % value
    if isinstance(value, float):
        return repr(value).encode()
    if isinstance(value, bytearray | memoryview):
        return bytes(value)
    raise redis.exceptions.DataError(
        f"invalid argument of type {type(value).__name__}: convert it to bytes, str or a number")


@dataclass(frozen=True, slots=True)
class _Node:
    address: str
    pool: redis.ConnectionPool
    client: redis.Redis  # for its response callbacks only


class _AttemptFailed(Exception):
    def __init__(self, error: redis.exceptions.RedisError, sent: bool) -> None:
        super().__init__(str(error))
        self.error = error
        self.sent = sent


class PhalanxClient:
    """A client of a phalanx cluster; see the package docstring for the retry rules.

    `seeds` are "host:port" RESP addresses; the first that answers `CLUSTER SHARDS` (or
    `CLUSTER SLOTS`) gives the map. Timeouts are in seconds: `connect_timeout` bounds a TCP
    connect, `socket_timeout` a wait for a reply (keep it above the server's
    `request_timeout_ms`, 5 s by default, so the server answers first), `request_timeout_s`
    the whole call including retries (no attempt starts after it). `max_attempts` bounds the
    attempts of one call; backoff before attempt n is uniform in
    [0, min(backoff_max_s, backoff_base_s * 2**n)] ("full jitter"). The map is refreshed after
    MOVED, connection errors, TRYAGAIN/CLUSTERDOWN, and every `refresh_interval_s`.

    TLS (nodes with `tls_cert_file`): `ssl=True` and `ssl_ca_certs` (the CA that signed the
    nodes' certificates; they must name each node's RESP host or IP, as the nodes answer them
    in the map); `ssl_certfile` + `ssl_keyfile` when the nodes require client certificates
    (`tls_ca_file`). Every connection to every node then uses TLS and verifies the node.
    """

    def __init__(self, seeds: Iterable[str], *, password: str | None = None,
                 username: str | None = None, socket_timeout: float = 6.0,
                 connect_timeout: float = 1.0, max_attempts: int = 20,
                 backoff_base_s: float = 0.05, backoff_max_s: float = 1.0,
                 request_timeout_s: float = 15.0, refresh_interval_s: float = 10.0,
                 decode_responses: bool = False, protocol: int = 2,
                 max_connections_per_node: int | None = None,
                 rng: random.Random | None = None, ssl: bool = False,
                 ssl_ca_certs: str | None = None, ssl_certfile: str | None = None,
                 ssl_keyfile: str | None = None) -> None:
        self.seeds = [seed.strip() for seed in seeds if seed.strip()]
        if not self.seeds:
            raise ValueError("PhalanxClient needs at least one seed address (host:port)")
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self.socket_timeout = socket_timeout
        self.connect_timeout = connect_timeout
        self.max_attempts = max_attempts
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self.request_timeout_s = request_timeout_s
        self.refresh_interval_s = refresh_interval_s
        self._pool_options: dict[str, Any] = {
            "password": password, "username": username, "socket_timeout": socket_timeout,
            "socket_connect_timeout": connect_timeout, "decode_responses": decode_responses,
            "protocol": protocol, "retry": Retry(NoBackoff(), 0),
        }
        if max_connections_per_node is not None:
            self._pool_options["max_connections"] = max_connections_per_node
        if bool(ssl_certfile) != bool(ssl_keyfile):
            raise ValueError("ssl_certfile and ssl_keyfile go together")
        if (ssl_ca_certs or ssl_certfile) and not ssl:
            raise ValueError("ssl_ca_certs / ssl_certfile need ssl=True")
        if ssl:
            self._pool_options.update(
                connection_class=redis.SSLConnection, ssl_cert_reqs="required",
                ssl_ca_certs=ssl_ca_certs, ssl_certfile=ssl_certfile, ssl_keyfile=ssl_keyfile,
                ssl_check_hostname=True)
        self._rng = rng or random.Random()
        self._nodes: dict[str, _Node] = {}
        self._nodes_lock = threading.Lock()
        self._refresh_lock = threading.Lock()
        self._stats_lock = threading.Lock()
        self.stats: collections.Counter[str] = collections.Counter()
        """Counters: attempts, retries, moved, refreshes, connect_failures, outcome_unknown
        (raised), retried_after_unknown (reads and idempotent writes re-sent)."""
        self._map = SlotMap.empty()
        self._last_refresh = float("-inf")
        self._stale = True
        self._last_good: str | None = None
        self._closed = False
        if not self.refresh():
            self.close()
            raise redis.exceptions.ConnectionError(
                f"no seed of {', '.join(self.seeds)} answered CLUSTER SHARDS/SLOTS")

    # ---- the map ----------------------------------------------------------------------------

    @property
    def slot_map(self) -> SlotMap:
        """The current map (immutable; replaced by refreshes)."""
        return self._map

    def refresh(self) -> bool:
        """Ask known nodes (the last that answered, the map's, then the seeds) for the map;
        True when one answered. A node with no shards in its map is skipped unless no map is
        known yet; a node that does not speak CLUSTER leaves an empty map (route anywhere)."""
        with self._refresh_lock:
            self._count("refreshes")
            for address in self._candidates(None, ()):
                try:
                    found = self._fetch_map(address)
                except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError,
                        OSError) as error:
                    logger.debug("map refresh from %s failed: %s", address, error)
                    continue
                if not found.shards and self._map.shards:
                    continue
                self._map = found
                self._last_refresh = time.monotonic()
                self._stale = False
                self._last_good = address
                return True
            self._last_refresh = time.monotonic()
            return False

    def _fetch_map(self, address: str) -> SlotMap:
        try:
            return SlotMap.from_cluster_shards(self._raw_call(address, "CLUSTER", "SHARDS"))
        except redis.exceptions.ResponseError:
            pass
        try:
            return SlotMap.from_cluster_slots(self._raw_call(address, "CLUSTER", "SLOTS"))
        except redis.exceptions.ResponseError:
            return SlotMap.empty()

    def _maybe_refresh(self) -> None:
        since = time.monotonic() - self._last_refresh
        if (self._stale and since >= MIN_REFRESH_GAP_S) or since >= self.refresh_interval_s:
            self.refresh()

    def _candidates(self, slot: int | None, failed: Iterable[str]) -> list[str]:
        """Nodes to try, best first: the slot's leader and replicas, the last node that
        answered, every node of the map, the seeds; those in `failed` go last."""
        ordered: dict[str, None] = {}
        cmap = self._map
        if slot is not None:
            shard = cmap.shard_for_slot(slot)
            if shard is not None:
                ordered.update(dict.fromkeys(shard.nodes))
        if self._last_good:
            ordered.setdefault(self._last_good, None)
        ordered.update(dict.fromkeys(cmap.addresses()))
        ordered.update(dict.fromkeys(self.seeds))
        bad = set(failed)
        return [a for a in ordered if a not in bad] + [a for a in ordered if a in bad]

    # ---- connections ------------------------------------------------------------------------

    def _node(self, address: str) -> _Node:
        node = self._nodes.get(address)
        if node is not None:
            return node
        with self._nodes_lock:
            if self._closed:
                raise redis.exceptions.ConnectionError("the PhalanxClient is closed")
            node = self._nodes.get(address)
            if node is None:
                host, _, port = address.rpartition(":")
                pool = redis.ConnectionPool(host=host, port=int(port), **self._pool_options)
                node = _Node(address, pool, redis.Redis(connection_pool=pool))
                self._nodes[address] = node
            return node

    def _exchange(self, address: str, args: Sequence[Arg], timeout: float) -> Any:
        """Send one request to one node and read its reply; errors are wrapped in
        `_AttemptFailed` saying whether the request may have reached the node."""
        node = self._node(address)
        connection: Any  # redis-py's connection methods are untyped
        try:
            connection = node.pool.get_connection()
        except redis.exceptions.RedisError as error:
            raise _AttemptFailed(error, sent=False) from error
        except OSError as error:
            raise _AttemptFailed(redis.exceptions.ConnectionError(str(error)), sent=False) \
                from error
        try:
            connection.send_command(*args)
            return connection.read_response(timeout=timeout)
        except redis.exceptions.ResponseError as error:
            raise _AttemptFailed(error, sent=True) from error
        except redis.exceptions.RedisError as error:
            connection.disconnect()
            raise _AttemptFailed(error, sent=True) from error
        except OSError as error:
            connection.disconnect()
            raise _AttemptFailed(redis.exceptions.ConnectionError(str(error)), sent=True) \
                from error
        except BaseException:
            connection.disconnect()
            raise
        finally:
            node.pool.release(connection)

    def _raw_call(self, address: str, *args: Arg) -> Any:
        """One attempt, no retries, no callbacks; errors raised as redis-py raises them."""
        try:
            return self._exchange(address, args, self.socket_timeout)
        except _AttemptFailed as failed:
            raise failed.error from None

    # ---- the retry loop ---------------------------------------------------------------------

    def _count(self, name: str, amount: int = 1) -> None:
        with self._stats_lock:
            self.stats[name] += amount

    def _backoff(self, attempt: int) -> float:
        ceiling = min(self.backoff_max_s, self.backoff_base_s * (2 ** min(attempt, 30)))
        return self._rng.uniform(0.0, ceiling)

    def execute_command(self, *args: Arg, **options: Any) -> Any:
        """Run one command on the node that owns its key, retrying as the package docstring
        says; the reply is shaped by redis-py's response callbacks (as `redis.Redis` does)."""
        if not args:
            raise redis.exceptions.DataError("execute_command needs a command name")
        encoded = [_to_bytes(arg) for arg in args]
        name = encoded[0].upper()
        if name in CONNECTION_STATE_COMMANDS:
            raise redis.exceptions.DataError(
                f"{name.decode(errors='replace')} is not supported by PhalanxClient: it sets "
                f"per-connection state, which does not survive routing and pooling")
        keys = command_keys(name, encoded[1:])
        slot = key_slot(keys[0]) if keys else None
        return self._run(args, name, encoded, slot, options)

    def _run(self, args: Sequence[Arg], name: bytes, encoded: Sequence[bytes],
             slot: int | None, options: dict[str, Any]) -> Any:
        deadline = time.monotonic() + self.request_timeout_s
        resend_ok = safe_to_resend(name, encoded[1:])
        write = not is_read_only(name)
        command = name.decode(errors="replace")
        failed: set[str] = set()
        redirect: str | None = None
        previous: Verdict | None = None
        maybe_applied = False
        attempt = 0
        while True:
            attempt += 1
            if redirect is None:
                self._maybe_refresh()
            address = redirect or self._candidates(slot, failed)[0]
            redirect = None
            self._count("attempts")
            timeout = min(self.socket_timeout,
                          max(MIN_ATTEMPT_TIMEOUT_S, deadline - time.monotonic()))
            try:
                reply = self._exchange(address, args, timeout)
            except _AttemptFailed as failure:
                error, sent = failure.error, failure.sent
            else:
                self._last_good = address
                return self._parse(address, command, reply, options)

            verdict = classify(error, sent=sent)
            if verdict is Verdict.FINAL:
                raise error
            if verdict is Verdict.UNKNOWN:
                self._stale = True
                if not resend_ok:
                    self._count("outcome_unknown")
                    raise OutcomeUnknownError(
                        f"{command} may or may not have been applied (not re-sent: it is not "
                        f"idempotent): {type(error).__name__}: {error}",
                        command=command, address=address) from error
                maybe_applied = maybe_applied or write
                self._count("retried_after_unknown")
            elif verdict is Verdict.REDIRECT:
                if not isinstance(error, redis.exceptions.MovedError):
                    raise error
                host, port = error.node_addr
                redirect = f"{host}:{port}"
                self._map = self._map.with_leader(int(error.slot_id), redirect)
                self._stale = True
                self._count("moved")
            else:  # NOT_APPLIED
                self._stale = True
                if not sent:
                    failed.add(address)
                    self._count("connect_failures")

            now = time.monotonic()
            if attempt >= self.max_attempts or now >= deadline:
                break
            if verdict is Verdict.REDIRECT and previous is not Verdict.REDIRECT:
                delay = 0.0  # follow a redirect at once, but never spin between two nodes
            elif verdict is Verdict.NOT_APPLIED and not sent and \
                    self._candidates(slot, failed)[0] not in failed:
                delay = 0.0  # a refused connection: try the next node at once
            else:
                delay = self._backoff(attempt)
            if now + delay >= deadline:
                break
            previous = verdict
            if delay > 0:
                time.sleep(delay)
            self._count("retries")

        if maybe_applied:
            self._count("outcome_unknown")
            raise OutcomeUnknownError(
                f"{command} failed after {attempt} attempts and may have been applied by an "
                f"earlier one: {type(error).__name__}: {error}",
                command=command, address=address) from error
        raise error

    def _parse(self, address: str, command: str, reply: Any, options: dict[str, Any]) -> Any:
        callbacks: Any = self._node(address).client.response_callbacks
        options.pop("keys", None)
        callback = callbacks.get(command)
        return callback(reply, **options) if callback is not None else reply

    # ---- convenience ------------------------------------------------------------------------

    def _group_by_shard(self, keys: Sequence[Arg]) -> dict[object, list[int]]:
        """Indexes of `keys`, grouped by the shard the current map places them in (a slot the
        map does not know is a group of its own)."""
        groups: dict[object, list[int]] = {}
        cmap = self._map
        for index, key in enumerate(keys):
            slot = key_slot(_to_bytes(key))
            shard = cmap.shard_for_slot(slot)
            group: object = ("shard", shard.index) if shard is not None else ("slot", slot)
            groups.setdefault(group, []).append(index)
        return groups

    def ping(self) -> Any:
        return self.execute_command("PING")

    def get(self, name: Arg) -> Any:
        return self.execute_command("GET", name)

    def set(self, name: Arg, value: Arg, *, ex: int | None = None, px: int | None = None,
            nx: bool = False, xx: bool = False, keepttl: bool = False,
            get: bool = False) -> Any:
        """SET; retried after an unknown outcome unless `nx` or `get` is given."""
        args: list[Arg] = ["SET", name, value]
        if ex is not None:
            args += ["EX", ex]
        if px is not None:
            args += ["PX", px]
        if nx:
            args.append("NX")
        if xx:
            args.append("XX")
        if keepttl:
            args.append("KEEPTTL")
        if get:
            args.append("GET")
            return self.execute_command(*args, get=True)
        return self.execute_command(*args)

    def incr(self, name: Arg, amount: int = 1) -> Any:
        """INCR / INCRBY: never re-sent after an unknown outcome (raises OutcomeUnknownError)."""
        if amount == 1:
            return self.execute_command("INCR", name)
        return self.execute_command("INCRBY", name, amount)

    def delete(self, *names: Arg) -> int:
        """DEL split per shard; the sum of the shards' counts (a re-sent DEL may count a key
        its unacknowledged first attempt already deleted as not deleted)."""
        total = 0
        for indexes in self._group_by_shard(names).values():
            total += int(self.execute_command("DEL", *[names[i] for i in indexes]))
        return total

    def mget(self, keys: Arg | Sequence[Arg], *more: Arg) -> list[Any]:
        """MGET split per shard (one request per shard) and reassembled in the given order."""
        wanted: list[Arg] = ([keys] if isinstance(keys, bytes | str | int | float)
                             else list(keys)) + list(more)
        values: list[Any] = [None] * len(wanted)
        for indexes in self._group_by_shard(wanted).values():
            reply = self.execute_command("MGET", *[wanted[i] for i in indexes])
            for index, value in zip(indexes, reply, strict=True):
                values[index] = value
        return values

    def mset(self, mapping: Mapping[Arg, Arg]) -> bool:
        """MSET split per shard: atomic within a shard, NOT across shards (a failure after
        some shards were written leaves them written). Every part is idempotent, so retried."""
        items = list(mapping.items())
        for indexes in self._group_by_shard([key for key, _ in items]).values():
            args: list[Arg] = ["MSET"]
            for index in indexes:
                args += [items[index][0], items[index][1]]
            self.execute_command(*args)
        return True

    # ---- lifetime ---------------------------------------------------------------------------

    def close(self) -> None:
        """Close every connection; the client cannot be used afterwards."""
        with self._nodes_lock:
            self._closed = True
            nodes = list(self._nodes.values())
            self._nodes.clear()
        for node in nodes:
            node.pool.disconnect()

    def __enter__(self) -> PhalanxClient:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()
