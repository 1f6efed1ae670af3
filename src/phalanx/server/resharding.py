"""Resharding on a node: online shard splits and merges. See docs/architecture.md
("the placement driver and the controllers").

- Split: the shard's leader commits a split entry (`SPLIT_COMMAND`); every replica applies it
  at the same log index and creates the new shard on the same members from the split-off keys
  (a snapshot at index 1), so the new shard needs no data transfer. The leader of the old
  shard then reports the split to the map.
- Merge: the driver co-locates the source shard's replicas with the target's; the source is
  frozen (`FREEZE_COMMAND`) through its leader; the target's leader absorbs the frozen image
  (`ABSORB_COMMAND`) and then tells the map, which drops the source.

Rules of this file:
- The data moves through the shards' own logs (split, freeze, absorb entries), never beside
  them; the map only learns what the logs already decided.
- Each step is idempotent and retried by the controllers' round (`continue_merges`,
  `report_splits`), so a crash between two steps only delays the change.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time

from phalanx.errors import ConfigError, NotLeader, PhalanxError, ProposalDropped
from phalanx.kv import Command, encode_command
from phalanx.placement.shard import (
    ABSORB_COMMAND,
    FREEZE_COMMAND,
    SPLIT_COMMAND,
    SPLIT_SNAPSHOT_INDEX,
    SplitOff,
    split_command,
)
from phalanx.raft import ConfState, GroupId, Index, Snapshot, SnapshotMeta, Term
from phalanx.server.config import NodeConfig
from phalanx.server.events import EventLog
from phalanx.server.group import RaftGroup
from phalanx.server.meta_client import MetaClient, describe_reply
from phalanx.server.replicas import Replicas

logger = logging.getLogger(__name__)


class Resharding:
    """Splits and merges of the shards this node holds."""

    def __init__(self, replicas: Replicas, config: NodeConfig, meta_client: MetaClient,
                 events: EventLog) -> None:
        self.replicas = replicas
        self.config = config
        self.meta_client = meta_client
        self.events = events
        self.node_id = config.id
        #: Rate limits of the retried steps: new shard id -> last split report; source shard
        #: id -> last absorb proposal; absorbed shard id -> last merge report.
        self.split_reported_at: dict[int, float] = {}
        self.absorb_sent_at: dict[int, float] = {}
        self.merge_reported_at: dict[int, float] = {}

    # -- splits ------------------------------------------------------------------------------
    async def on_split(self, group: RaftGroup, split_off: SplitOff, conf: ConfState) -> None:
        """Every replica of a shard applies its split entry at the same index: create the new
        shard here, on the same members, from the split-off keys (a snapshot at index 1)."""
        new_id = GroupId(split_off.new_shard)
        directory = self.replicas.data_dir / "groups" / str(new_id)
        if new_id in self.replicas.groups or directory.exists():
            return  # replaying the old shard's log after a restart: the new shard exists
        members = ConfState(voters=conf.voters, learners=conf.learners)
        store = self.replicas.open_store(directory, ConfState())
        snapshot = Snapshot(meta=SnapshotMeta(index=Index(SPLIT_SNAPSHOT_INDEX),
                                              term=Term(SPLIT_SNAPSHOT_INDEX),
                                              conf_state=members),
                            data=split_off.snapshot)
        await store.persist((), None, snapshot)
        child = self.replicas.start_group(new_id, store)
        if group.is_leader():
            # The old shard's leader leads the new one at once (PreVote first): no election
            # timeout passes with the moved slots leaderless.
            child.raw.campaign()
            child.wake.set()
        self.events.record("split", f"shard {group.group_id} split: slots "
                                    f"{split_off.first_slot}-{split_off.last_slot} -> new "
                                    f"shard {new_id}")
        logger.info("%s: shard %s split at log index %s: slots %s-%s now in shard %s",
                    self.node_id, group.group_id, split_off.index, split_off.first_slot,
                    split_off.last_slot, new_id)

    async def split_shard(self, shard: int, at: int | None = None) -> dict[str, object]:
        """Split `shard` online: the slots from `at` to the end of its range move to a new
        shard on the same replicas (must run on the shard's leader)."""
        group = self.replicas.local_group(shard)
        if group is None or not group.is_leader() or group.shard is None:
            leader = group.leader if group is not None else ""
            raise NotLeader(leader or None, f"this node does not lead shard {shard}")
        ranges = group.shard.owned
        if not ranges:
            raise ConfigError(f"shard {shard} owns no slots")
        if at is None:
            first, last = max(ranges, key=lambda r: r[1] - r[0])
            if first == last:
                raise ConfigError(f"shard {shard} has no range of two slots or more to split")
            at = (first + last + 1) // 2
        else:
            found = next(((a, b) for a, b in ranges if a < at <= b), None)
            if found is None:
                raise ConfigError(f"slot {at} is not inside a range of shard {shard} (ranges: "
                                  f"{', '.join(f'{a}-{b}' for a, b in ranges)}; the first "
                                  f"slot of a range cannot be a split point)")
            first, last = found
        taken = set(self.replicas.cluster_map.shards) | {
            target for g in self.replicas.data_groups().values() if g.shard is not None
            for target in g.shard.moved.values()}
        new_id = max(taken) + 1
        future = group.propose_data(encode_command(Command(
            name=SPLIT_COMMAND, args=split_command(at, last, new_id),
            now_ms=int(time.time() * 1000))))
        reply = await asyncio.wait_for(future, self.config.request_timeout_ms / 1000)
        if reply != "OK":
            raise ConfigError(f"the split was refused: {describe_reply(reply)}")
        return {"shard": shard, "new_shard": new_id, "slots": [at, last]}

    def report_splits(self, group_id: int, group: RaftGroup, now: float) -> None:
        """On a shard's leader: tell the map about every split of this shard it lacks."""
        if group.shard is None:
            return
        for (first, last), new_id in group.shard.moved.items():
            if new_id not in self.replicas.cluster_map.shards and \
                    now - self.split_reported_at.get(new_id, 0.0) > 1.0:
                self.split_reported_at[new_id] = now
                asyncio.get_running_loop().create_task(self.meta_client.propose_quietly(
                    {"op": "split_shard", "shard": group_id, "new_shard": new_id,
                     "first_slot": first, "last_slot": last}))

    # -- merges ------------------------------------------------------------------------------
    def continue_merges(self, group_id: int, group: RaftGroup, now: float) -> None:
        """On a shard's leader: absorb every local shard frozen into this one, then tell the
        map. Idempotent and retried, so a crash between the merge steps only delays it."""
        machine = group.shard
        if machine is None:
            return  # the driver's group merges nothing
        for other_id, other in list(self.replicas.data_groups().items()):
            frozen = other.shard
            if frozen is None or frozen.frozen_into != group_id or other_id in machine.absorbed:
                continue
            if now - self.absorb_sent_at.get(other_id, 0.0) < 2.0:
                continue
            self.absorb_sent_at[other_id] = now
            ranges, image = frozen.frozen_image()
            payload = json.dumps([list(r) for r in ranges]).encode()
            logger.info("%s: shard %s absorbs frozen shard %s (%d bytes)", self.node_id,
                        group_id, other_id, len(image))
            try:
                group.propose_data(encode_command(Command(
                    name=ABSORB_COMMAND, args=(str(other_id).encode(), payload, image),
                    now_ms=int(time.time() * 1000))))
            except (NotLeader, ProposalDropped):
                return
        for source in sorted(machine.absorbed):
            if source in self.replicas.cluster_map.shards and \
                    now - self.merge_reported_at.get(source, 0.0) > 1.0:
                self.merge_reported_at[source] = now
                self.events.record("merge", f"shard {source} merged into shard {group_id}")
                asyncio.get_running_loop().create_task(self.meta_client.propose_quietly(
                    {"op": "merge_shards", "shard": group_id, "source": source}))

    async def merge_shards(self, shard: int, source: int) -> dict[str, object]:
        """Merge shard `source` into `shard` online (run on `shard`'s leader). The two must have
        the same replicas: if they do not, the placement driver is told to move `source`'s
        replicas first and the answer says to run it again."""
        cmap = self.replicas.cluster_map
        target_info, source_info = cmap.shards.get(shard), cmap.shards.get(source)
        if target_info is None or source_info is None or shard == source:
            raise ConfigError(f"merge needs two different existing shards (got {shard} and "
                              f"{source}; shards: {', '.join(map(str, sorted(cmap.shards)))})")
        group = self.replicas.local_group(shard)
        if group is None or not group.is_leader():
            leader = group.leader if group is not None else target_info.leader
            raise NotLeader(leader or None, f"this node does not lead shard {shard}")
        if source_info.merge_into != shard:
            await self.meta_client.propose_meta({"op": "set_merge", "shard": source,
                                                 "into": shard})
        # Wait (bounded) until both shards run on the same replicas; the planner keeps the
        # source on the target's replicas and moves neither meanwhile.
        deadline = time.monotonic() + self.config.request_timeout_ms / 1000 * 4
        while True:
            cmap = self.replicas.cluster_map
            target_info, source_info = cmap.shards.get(shard), cmap.shards.get(source)
            if target_info is None or source_info is None:
                raise PhalanxError("the shards changed during the merge; look at the map")
            together = (set(source_info.voters) == set(target_info.voters)
                        == set(source_info.replicas) and not source_info.learners
                        and not target_info.learners
                        and self.replicas.local_group(source) is not None)
            if together:
                break
            if time.monotonic() >= deadline:
                return {"status": "co-locating", "shard": shard, "source": source,
                        "detail": f"moving shard {source}'s replicas onto shard {shard}'s; "
                                  f"run the merge again to continue"}
            await asyncio.sleep(0.05)
        await self.meta_client.propose_on_shard(source, FREEZE_COMMAND, (str(shard).encode(),))
        deadline = time.monotonic() + self.config.request_timeout_ms / 1000 * 3
        while source in self.replicas.cluster_map.shards and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if source in self.replicas.cluster_map.shards:
            return {"status": "merging", "shard": shard, "source": source,
                    "detail": "frozen; the absorb and the map update are still in progress"}
        return {"status": "merged", "shard": shard, "source": source,
                "slots": [list(r) for r in self.replicas.cluster_map.shards[shard].slots]}
