"""The region link: pulls other regions' active-active deltas into this region's shards
(docs/active-active.md, issue 18).

Every node runs one `RegionLink`; it works only for the data shards this node LEADS. For each
of them and each other region (`aa_peers`), each round: ask the region for its shard ids
(`PHALANX.AA.SHARDS`), then for each remote shard pull from the position this shard recorded
(`PHALANX.AA.PULL shard from max ranges [signature]`, served by the remote shard's leader after
a ReadIndex, filtered to our slot ranges) and propose what came back as ONE log entry,
`PHALANX.AA.MERGE region shard next_seq full items`, that joins the deltas and records the
new position together. So the position is replicated with the data it covers: after a leader
change on either side, or a restart, replication resumes from a durable position; a batch
merged twice (a retry after an unknown outcome) changes nothing (joins are idempotent).

The receiving region pulls (it knows what it has applied); the sender keeps its outbox in its
replicated state. Cross-region traffic uses the remote region's RESP password (AUTH), TLS when
configured (`tls_*`), and an HMAC under `aa_secret` on every pull.

Rules of this file: every network await has a timeout; failures are counted per region
(state, last error) and retried next round; the link never blocks the node's other work.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from dataclasses import dataclass, field

from phalanx.crdt import PullReply
from phalanx.errors import Corrupt, PhalanxError
from phalanx.placement.shard import AA_MERGE_COMMAND, AA_PULL_COMMAND
from phalanx.resp import ErrorReply
from phalanx.server.config import NodeConfig, parse_address
from phalanx.server.front.active_active import AA_SHARDS_COMMAND, pull_signature
from phalanx.server.group import RaftGroup
from phalanx.server.metrics import NodeMetrics
from phalanx.server.peer_link import LeaderLink
from phalanx.server.replicas import Replicas
from phalanx.transport.faults import FaultRules

logger = logging.getLogger(__name__)
#: The name the link's connections carry in the other region (CLIENT LIST).
REGION_LINK_CLIENT_NAME = b"phalanx-region-link"
#: Pull rounds per region per poll when a pull came back full (a backlog): bounded.
_MAX_PULLS_PER_ROUND = 20


@dataclass(slots=True)
class RegionState:
    """What `/status` and the metrics show of one region link."""

    region: str
    state: str = "connecting"
    last_error: str = ""
    #: Monotonic time of the last successful round (0: never).
    last_ok: float = 0.0
    pulls: int = 0
    merged_keys: int = 0
    #: (local shard, remote shard) -> deltas the remote shard holds past our position.
    lag_entries: dict[tuple[int, int], int] = field(default_factory=dict)
    #: (local shard, remote shard) -> monotonic time we were last caught up.
    caught_up_at: dict[tuple[int, int], float] = field(default_factory=dict)
    #: Monotonic time the link started (its lag's origin until its first good round).
    started: float = 0.0
    #: Local shard -> its outbox head (`next_seq`) at the last good round: while the link is
    #: down, what this region wrote since then has not been shipped (a cut is two-way).
    local_heads_at_ok: dict[int, int] = field(default_factory=dict)
    #: Local deltas written since the last good round (set while the link is not up).
    unshipped_entries: int = 0

    def view(self, now: float) -> dict[str, object]:
        """What `/status` and the metrics show. While the link is not up the lag is not the
        last good round's (often 0): it grows, in seconds from the last moment every pair was
        known caught up (else the last good round, else the start), and in entries by what
        this region wrote since the last good round on top of what the other region was
        last known to hold for us."""
        up = self.state == "up" or self.state.startswith("idle")  # idle: pulls nothing
        if up:
            lag_seconds = max((now - at for pair, at in self.caught_up_at.items()
                               if self.lag_entries.get(pair, 0) > 0), default=0.0)
        else:
            since = min(self.caught_up_at.values(), default=self.last_ok or self.started)
            lag_seconds = max(0.0, now - since)
        lag_entries = sum(self.lag_entries.values()) + (0 if up else self.unshipped_entries)
        return {"region": self.region, "state": self.state, "last_error": self.last_error,
                "lag_entries": lag_entries,
                "lag_seconds": round(lag_seconds, 3),
                "last_ok_seconds_ago": round(now - self.last_ok, 3) if self.last_ok else None,
                "pulls": self.pulls, "merged_keys": self.merged_keys}


def _count_unshipped(state: RegionState, heads: dict[int, int]) -> None:
    """A round of a link that is not up: what the shards this node leads wrote since its last
    good round (a shard first seen now counts from now)."""
    for shard_id, head in heads.items():
        state.local_heads_at_ok.setdefault(shard_id, head)
    state.unshipped_entries = sum(max(0, head - state.local_heads_at_ok[shard_id])
                                  for shard_id, head in heads.items())


class RegionLink:
    """Pulls every other region into the shards this node leads (see the module docstring)."""

    def __init__(self, config: NodeConfig, replicas: Replicas,
                 tls: ssl.SSLContext | None, fault_rules: FaultRules | None = None) -> None:
        self.config = config
        #: The chaos lab's fault rules: a region name in `drop_to` cuts the link to it.
        self.fault_rules = fault_rules
        self.replicas = replicas
        self.tls = tls
        self.peers = config.aa_peer_map()
        self.password = config.aa_peer_password or config.requirepass
        started = time.monotonic()
        self.regions = {name: RegionState(name, started=started) for name in self.peers}
        self._links: dict[str, LeaderLink] = {}
        self._next_address: dict[str, int] = dict.fromkeys(self.peers, 0)
        #: Full states being pulled page by page: (region, local shard, remote shard) ->
        #: (the head seq of the first page, the last key received). Forgotten on a failure
        #: or a lost leadership (the next leader starts over: pages are joins).
        self._full_sync: dict[tuple[str, int, int], tuple[int, bytes]] = {}

    def export(self, metrics: NodeMetrics) -> None:
        """Refresh the region link gauges (a metrics render hook)."""
        for view in self.status():
            lag_entries, lag_seconds = view["lag_entries"], view["lag_seconds"]
            assert isinstance(lag_entries, int) and isinstance(lag_seconds, float)
            merged = view["merged_keys"]
            assert isinstance(merged, int)
            metrics.region_link(str(view["region"]), view["state"] == "up", lag_entries,
                                lag_seconds, merged)

    def status(self) -> list[dict[str, object]]:
        now = time.monotonic()
        return [self.regions[name].view(now) for name in sorted(self.regions)]

    async def run(self) -> None:
        interval = self.config.aa_poll_ms / 1000
        while True:
            await asyncio.sleep(interval)
            leaders = [(gid, group) for gid, group in sorted(self.replicas.data_groups().items())
                       if group.shard is not None and not group.stopped and group.is_leader()]
            heads = {gid: group.shard.aa.next_seq for gid, group in leaders
                     if group.shard is not None}
            for region in self.peers:
                state = self.regions[region]
                if self.fault_rules is not None and region in self.fault_rules.drop_to:
                    self._drop(region)
                    state.state = "down"
                    state.last_error = "cut by the fault rules (drop_to)"
                    _count_unshipped(state, heads)
                    continue
                if not leaders:
                    state.lag_entries.clear()
                    state.state = "idle (leads no shard)"
                    continue
                try:
                    await self._sync(region, leaders, state)
                except (OSError, TimeoutError, PhalanxError, Corrupt) as error:
                    self._drop(region)
                    for paging in [p for p in self._full_sync if p[0] == region]:
                        del self._full_sync[paging]
                    state.state = "down"
                    state.last_error = f"{type(error).__name__}: {error}"[:300]
                    _count_unshipped(state, heads)
                    logger.debug("region link to %s: %s", region, state.last_error)
                else:
                    state.state = "up"
                    state.last_ok = time.monotonic()
                    state.local_heads_at_ok = heads
                    state.unshipped_entries = 0

    def close(self) -> None:
        for region in list(self._links):
            self._drop(region)

    def _drop(self, region: str) -> None:
        link = self._links.pop(region, None)
        if link is not None:
            link.close()
            self._next_address[region] += 1  # try the region's next address next time

    async def _call(self, region: str, arguments: list[bytes]) -> object:
        link = self._links.get(region)
        timeout = self.config.request_timeout_ms / 1000
        if link is None:
            addresses = self.peers[region]
            address = addresses[self._next_address[region] % len(addresses)]
            host, port = parse_address(address, "aa_peers")
            link = LeaderLink(f"region {region} ({address})", host, port, timeout,
                              self.password, self.tls, client_name=REGION_LINK_CLIENT_NAME)
            self._links[region] = link
        reply = await asyncio.wait_for(link.call(arguments), timeout)
        if isinstance(reply, ErrorReply):
            raise PhalanxError(f"region {region} answered: {reply.text}")
        return reply

    async def _sync(self, region: str, leaders: list[tuple[int, RaftGroup]],
                    state: RegionState) -> None:
        shards = await self._call(region, [AA_SHARDS_COMMAND])
        if not isinstance(shards, list) or not all(isinstance(s, int) for s in shards):
            raise Corrupt(f"region {region}: bad shard list {shards!r:.100}")
        for local_id, group in leaders:
            for remote_shard in shards:
                assert isinstance(remote_shard, int)
                await self._pull_shard(region, local_id, group, remote_shard, state)

    async def _pull_shard(self, region: str, local_id: int, group: RaftGroup,
                          remote_shard: int, state: RegionState) -> None:
        assert group.shard is not None
        ranges = b",".join(b"%d-%d" % r for r in group.shard.owned)
        pair = (local_id, remote_shard)
        paging = (region, local_id, remote_shard)
        for _ in range(_MAX_PULLS_PER_ROUND):
            if not group.is_leader() or group.stopped:
                self._full_sync.pop(paging, None)
                return
            position = group.shard.aa.positions.get((region, remote_shard), 0)
            # A full state in progress: (the head its first page reported, the last key).
            sync = self._full_sync.get(paging)
            arguments = [str(remote_shard).encode(), str(position).encode(),
                         str(self.config.aa_batch).encode(), ranges,
                         sync[1] if sync is not None else b""]
            signature = [pull_signature(self.config.aa_secret, arguments)] \
                if self.config.aa_secret else []
            raw = await self._call(region, [AA_PULL_COMMAND, *arguments, *signature])
            reply = PullReply.decode(raw)
            state.pulls += 1
            now = time.monotonic()
            state.lag_entries[pair] = max(0, reply.head_seq - position)
            if reply.next_seq == position and not reply.full:
                state.caught_up_at[pair] = now
                return
            payload = reply.encode()[2]
            assert isinstance(payload, bytes)
            to_seq, mode = reply.next_seq, b"0"
            if reply.full:
                # Pages: the position becomes the FIRST page's head, with the last page.
                to_seq = sync[0] if sync is not None else reply.next_seq
                mode = b"2" if reply.more else b"1"
                if reply.more:
                    self._full_sync[paging] = (to_seq, reply.cursor)
                else:
                    self._full_sync.pop(paging, None)
            proposal = group.propose_command(AA_MERGE_COMMAND, (
                region.encode(), str(remote_shard).encode(), str(to_seq).encode(), mode,
                payload))
            merged = await asyncio.wait_for(proposal, self.config.request_timeout_ms / 1000)
            if isinstance(merged, int):
                state.merged_keys += merged
            else:
                raise PhalanxError(f"merge into shard {local_id} refused: {merged!r:.200}")
            if reply.full and reply.more:
                continue
            state.lag_entries[pair] = max(0, reply.head_seq - to_seq)
            if to_seq >= reply.head_seq:
                state.caught_up_at[pair] = now
                return

    async def stop(self) -> None:
        self.close()
        with contextlib.suppress(Exception):
            await asyncio.sleep(0)
