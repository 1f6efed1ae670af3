"""The consistency checker and the damaged-replica watch (issue 16, "disks that fail or lie").

A disk can lie: return bytes that pass every checksum but are not what was written (a
misdirected write, a bug, a hand-edited file). Checksums cannot see that; comparing replicas
can. As CockroachDB's consistency checker and etcd's corruption check do, the replicas of a
shard compare a digest of their state at the same applied index:

1. every `consistency_check_ms` the leader of each data shard proposes `PHALANX.CHECK`; every
   replica that applies it at index i records the digest of its data at i
   (`placement/shard.py`, `kv/digest.py`; same index and same data give the same digest);
2. the leader then proposes `PHALANX.VERIFY i digest` with its own digest; a replica whose
   digest at i differs stops that replica (`RaftGroup` raises `Corrupt` from the apply loop:
   it never serves or acknowledges anything from that state again) and reports it.

The leader is the reference: a follower that disagrees with it stops. (A divergent LEADER would
make its followers stop instead: the shard then stops serving, which is safe but unavailable;
a majority vote over the digests is left for later, see docs/disk-faults.md.)

Every node also watches its own replicas: one that stopped on a storage failure (checksum
mismatch, EIO, full disk) or a divergence, at run time or when its store was opened, is a
damaged replica. It is reported (event, metric, `/status`) and rebuilt from its healthy peers
through the cluster map (`rebuild_replica`: the shard's leader removes it from the
configuration, the node deletes its data, then it comes back as a new member: learner,
snapshot, voter; see `Controllers.rebuild_damaged`).

Rules of this file:
- The checks are rate-bounded: at most one per shard per `consistency_check_ms` (0 = off), and
  one check at a time per shard. The digest costs the apply loop about 3.5 µs per key
  (measured, docs/disk-faults.md).
- Nothing here decides alone that data is bad: the digest comparison happens in the log, at
  the same index on every replica.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import time

from phalanx.errors import PhalanxError, StorageError
from phalanx.kv import Command, encode_command
from phalanx.placement.shard import CHECK_COMMAND, VERIFY_COMMAND
from phalanx.server.config import NodeConfig
from phalanx.server.events import EventLog
from phalanx.server.group import RaftGroup
from phalanx.server.meta_client import MetaClient
from phalanx.server.metrics import NodeMetrics, _Counter, _Gauge
from phalanx.server.replicas import META_GROUP, Replicas

logger = logging.getLogger(__name__)


class ConsistencyChecker:
    """Proposes the checks on the shards this node leads; watches this node's replicas."""

    def __init__(self, replicas: Replicas, config: NodeConfig, metrics: NodeMetrics,
                 events: EventLog, meta_client: MetaClient) -> None:
        self.replicas = replicas
        self.meta_client = meta_client
        #: When a map op was last sent, per (op, shard, node): one a second at most.
        self.sent_at: dict[tuple[str, int, str], float] = {}
        self.config = config
        self.events = events
        self.last_check: dict[int, float] = {}
        self.running: set[int] = set()
        #: Damaged replicas already reported (group id -> why).
        self.reported: dict[int, str] = {}
        #: The last verified check per shard led here: (index, digest, result).
        self.results: dict[int, tuple[int, str, str]] = {}
        self.scrubbing = False
        self.last_scrub_at = time.monotonic()  # the first scrub one interval after the start
        #: When each replica was last scrubbed (monotonic).
        self.scrubbed: dict[int, float] = {}
        registry = metrics.registry
        self._scrubs = _Counter("phalanx_scrubs", "Background scrubs of a replica's files, by "
                                "result.", ("result",), registry=registry)
        self._scrub_bytes = _Counter("phalanx_scrub_bytes", "Bytes read back and verified by "
                                     "the background scrub.", registry=registry)
        self._checks = _Counter("phalanx_consistency_checks",
                                "Consistency checks this node proposed as a shard's leader, by "
                                "result.", ("result",), registry=registry)
        self._damaged_total = _Counter("phalanx_replicas_damaged",
                                       "Replicas of this node that stopped on a storage failure "
                                       "or a divergence.", ("cause",), registry=registry)
        self._damaged_now = _Gauge("phalanx_replicas_damaged_now",
                                   "Replicas of this node stopped and waiting to be rebuilt.",
                                   registry=registry)

    # -- the damaged-replica watch (every node) -------------------------------------------
    def damaged(self) -> dict[int, str]:
        """Every damaged data replica of this node: group id -> why."""
        found = dict(self.replicas.damaged)
        for group_id, group in self.replicas.data_groups().items():
            if group.stopped and group.fatal_error:
                found[group_id] = group.fatal_error
        return found

    def watch(self) -> dict[int, str]:
        """Report newly damaged replicas (event, metric, log); returns every damaged one."""
        damaged = self.damaged()
        for group_id, why in damaged.items():
            if self.reported.get(group_id) == why:
                continue
            self.reported[group_id] = why
            cause = "divergence" if "diverged" in why else "storage"
            self._damaged_total.labels(cause).inc()
            self.events.record("replica-damaged", f"{self.config.id}: replica of shard "
                                                  f"{group_id} stopped: {why}; it will be "
                                                  f"rebuilt from its peers")
            logger.error("%s: replica of shard %s is damaged: %s", self.config.id, group_id,
                         why)
        for group_id in [g for g in self.reported if g not in damaged]:
            del self.reported[group_id]
        self._damaged_now.unlabelled().set(len(damaged))
        return damaged

    # -- the rebuild (the damaged node, then the shard's leader) ---------------------------
    async def rebuild_damaged(self) -> None:
        """On every node: ask the map to rebuild each damaged replica; once the map lists it
        as rebuilding, delete its data (it is stopped, so it votes and acknowledges nothing;
        it comes back empty only after the leader removed it: a new member)."""
        replicas = self.replicas
        if not replicas.meta_caught_up():
            return
        me = self.config.id
        for group_id, why in self.watch().items():
            shard = replicas.cluster_map.shards.get(group_id)
            if shard is None:
                continue
            if me in shard.rebuilding:
                if group_id in replicas.groups:
                    await replicas.close_group(group_id, delete=True)
                else:
                    shutil.rmtree(replicas.data_dir / "groups" / str(group_id),
                                  ignore_errors=True)
                replicas.damaged.pop(group_id, None)
                self.events.record("replica-rebuild", f"{me} deleted its damaged replica of "
                                                      f"shard {group_id} ({why}); it comes "
                                                      f"back as a new member")
            elif me in shard.replicas:
                self._send_once({"op": "rebuild_replica", "shard": group_id, "node": me})

    def finish_rebuilds(self) -> None:
        """On each shard's leader: a replica being rebuilt that has left the configuration
        may come back (the controllers then add it as a learner: snapshot, then voter)."""
        replicas = self.replicas
        if not replicas.meta_caught_up():
            return
        for group_id, group in replicas.data_groups().items():
            shard = replicas.cluster_map.shards.get(group_id)
            if shard is None or not shard.rebuilding or group.stopped or \
                    not group.is_leader():
                continue
            conf = group.raw.conf
            members = {*conf.voters, *conf.learners, *conf.voters_outgoing}
            for node in shard.rebuilding:
                if node not in members and group.raw.pending_conf_index <= group.raw.applied:
                    self._send_once({"op": "finish_rebuild", "shard": group_id,
                                     "node": node})

    def _send_once(self, op: dict[str, object]) -> None:
        key = (str(op["op"]), int(str(op["shard"])), str(op["node"]))
        now = time.monotonic()
        if now - self.sent_at.get(key, 0.0) < 1.0:
            return
        self.sent_at[key] = now
        logger.info("%s: %s shard %s node %s", self.config.id, op["op"], op["shard"],
                    op["node"])
        asyncio.get_running_loop().create_task(self.meta_client.propose_quietly(op))

    # -- the checks (on each shard's leader) ----------------------------------------------
    def start_due_checks(self) -> None:
        """Start a check on every shard led here whose last one is `consistency_check_ms` old."""
        interval = self.config.consistency_check_ms / 1000
        if interval <= 0:
            return
        now = time.monotonic()
        for group_id, group in self.replicas.data_groups().items():
            if group_id == META_GROUP or group.shard is None or group.stopped or \
                    not group.is_leader() or group_id in self.running:
                continue
            last = self.last_check.setdefault(group_id, now)
            if now - last < interval:
                continue
            self.last_check[group_id] = now
            self.running.add(group_id)
            asyncio.get_running_loop().create_task(self._check(group_id, group),
                                                   name=f"consistency-check-{group_id}")

    async def _check(self, group_id: int, group: RaftGroup) -> None:
        timeout = self.config.request_timeout_ms / 1000
        now_ms = int(time.time() * 1000)
        try:
            reply = await asyncio.wait_for(group.propose_data(encode_command(
                Command(name=CHECK_COMMAND, args=(), now_ms=now_ms))), timeout)
            if not isinstance(reply, bytes) or b" " not in reply:
                self._checks.labels("failed").inc()
                return
            index_text, digest = reply.split(b" ", 1)
            verdict = await asyncio.wait_for(group.propose_data(encode_command(
                Command(name=VERIFY_COMMAND, args=(index_text, digest), now_ms=now_ms))),
                timeout)
            result = verdict.decode() if isinstance(verdict, bytes) else "failed"
            self._checks.labels(result.lower()).inc()
            self.results[group_id] = (int(index_text), digest.decode(), result)
        except (PhalanxError, TimeoutError) as error:
            self._checks.labels("failed").inc()
            logger.info("%s: consistency check of shard %s did not complete: %s",
                        self.config.id, group_id, error)
        finally:
            self.running.discard(group_id)

    # -- the background scrub (every node) -------------------------------------------------
    def start_due_scrub(self) -> None:
        """Every `scrub_interval_ms`, scrub the replica of this node scrubbed longest ago: its
        files read back and verified on its store's writer thread (`WalLogStore.scrub`). One
        replica at a time, so the disk reads stay bounded."""
        interval = self.config.scrub_interval_ms / 1000
        now = time.monotonic()
        if interval <= 0 or self.scrubbing or now - self.last_scrub_at < interval:
            return
        candidates = [(self.scrubbed.get(gid, 0.0), gid) for gid, group
                      in self.replicas.data_groups().items() if not group.stopped]
        if not candidates:
            return
        _, group_id = min(candidates)
        self.last_scrub_at = now
        self.scrubbed[group_id] = now
        self.scrubbing = True
        asyncio.get_running_loop().create_task(self._scrub(group_id),
                                               name=f"scrub-{group_id}")

    async def _scrub(self, group_id: int) -> None:
        try:
            group = self.replicas.groups.get(group_id)
            store = self.replicas.stores.get(group_id)
            if group is None or store is None or group.stopped:
                return
            started = time.perf_counter()
            try:
                verified = await store.scrub()
            except StorageError as error:
                if self.replicas.groups.get(group_id) is group and not group.stopped:
                    group.stop_on_storage_failure(error)
                    self._scrubs.labels("failed").inc()
                return
            self._scrubs.labels("ok").inc()
            self._scrub_bytes.unlabelled().inc(verified)
            logger.debug("%s: scrubbed shard %s: %d bytes in %.0f ms", self.config.id,
                         group_id, verified, (time.perf_counter() - started) * 1e3)
        finally:
            self.scrubbing = False

    def status(self) -> dict[str, object]:
        """For `/status`: the damaged replicas and the last check of each shard led here."""
        return {
            "interval_ms": self.config.consistency_check_ms,
            "scrub_interval_ms": self.config.scrub_interval_ms,
            "damaged": {str(g): why for g, why in sorted(self.damaged().items())},
            "last_checks": {str(g): {"index": index, "digest": digest, "result": result}
                            for g, (index, digest, result) in sorted(self.results.items())},
            # Every local replica's latest check digest (leader or not), so that the digests
            # of one index can be compared across the nodes' /status.
            "digests": {str(g): {"index": max(group.shard.check_digests),
                                 "digest": group.shard.check_digests[
                                     max(group.shard.check_digests)]}
                        for g, group in sorted(self.replicas.data_groups().items())
                        if group.shard is not None and group.shard.check_digests},
        }


__all__ = ["ConsistencyChecker"]
