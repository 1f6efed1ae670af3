"""Node identity: the incarnation of this node's data directory, and which incarnation of each
peer this node accepts. See docs/architecture.md ("Node identity").

Raft's safety rests on a server never forgetting its vote and its log (Raft paper §5.2, §5.4:
both are persisted before they are acknowledged). A node whose disk was wiped and that comes
back under its old id has forgotten both: it could vote twice in one term, or help elect a
leader that lacks an entry it had acknowledged. So every data directory gets a random
**incarnation** id when it is created (an existing directory without one, from before this
existed, gets one at its first start: upgrades keep working). Peers exchange incarnations in
the peer handshake (`phalanx.transport`, protocol version 2), and a node presenting another
incarnation than the one on record for its id is refused by every peer, with the reason logged
on both sides; it takes no part (never votes, never acknowledges) until the operator runs
`phalanx replace NODE`, which removes the old member from every group and adds the node back
as a new member (learner, snapshot, voter) through the map (`placement/map.py`: the ops
`replace_node`, `finish_replace`) and the membership controllers.

What is on record for a peer, in this order:
1. the cluster map's `NodeInfo.incarnation` (the driver records the first incarnation it sees,
   `recording_ops`), once this node's copy of the map has it: the replicated truth;
2. else this node's own memory, `groups/peer-incarnations.json`, written (fsync) the first
   time each peer's incarnation is seen: it covers the time before the map records one, and a
   whole-cluster restart before this node's map copy has caught up.
No record: the peer is accepted and remembered (a new cluster, a joining node, an upgrade).

Rules of this file:
- The incarnation lives INSIDE `groups/` (the Raft state it names): a lost or deleted `groups`
  directory loses its incarnation with it. Both files are written atomically (temporary file,
  fsync, rename, fsync of the directory).
- `check` has no side effect (a handshake may still fail after it); `seen` records.
- Refusals are logged at most once per `REFUSAL_LOG_INTERVAL_S` per peer (refused peers redial
  every second).
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from phalanx.errors import ConfigError
from phalanx.placement import ClusterMap
from phalanx.raft import ConfState

logger = logging.getLogger(__name__)

#: The incarnation file and the peers' incarnations this node remembers, under the data dir.
INCARNATION_FILE = Path("groups") / "incarnation"
PEERS_FILE = Path("groups") / "peer-incarnations.json"
#: A refusal by the same peer is logged at most once per this many seconds.
REFUSAL_LOG_INTERVAL_S = 30.0


def _valid(incarnation: str) -> bool:
    return 0 < len(incarnation) <= 64 and all(c.isalnum() or c in "-_" for c in incarnation)


def _write_durably(path: Path, text: str) -> None:
    """Write `text` to `path` atomically and durably (fsync the file and its directory)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    with open(temporary, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def read_incarnation(data_dir: str | Path) -> str | None:
    """The incarnation stored in `data_dir`, or None when it has none (or an unreadable one)."""
    try:
        text = (Path(data_dir) / INCARNATION_FILE).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return text if _valid(text) else None


def load_or_create_incarnation(data_dir: str | Path) -> tuple[str, bool]:
    """This data directory's incarnation, created (durably) when it has none yet: (id, created).

    A directory whose Raft state exists but has no incarnation comes from a version without
    incarnations: it gets one now (logged), and the cluster records it the first time it is seen.
    """
    root = Path(data_dir)
    existing = read_incarnation(root)
    if existing is not None:
        return existing, False
    path = root / INCARNATION_FILE
    if path.exists():
        raise ConfigError(f"data_dir: {path} is not a valid incarnation id; it was damaged "
                          f"(restore it, or treat this node as wiped: `phalanx replace`)")
    incarnation = secrets.token_hex(16)
    _write_durably(path, incarnation + "\n")
    if (root / "groups" / "0").exists():
        logger.warning("data directory %s had no incarnation id (an older version): it is "
                       "now incarnation %s", root, incarnation)
    else:
        logger.info("new data directory %s: incarnation %s", root, incarnation)
    return incarnation, True


def replaced_membership(cmap: ClusterMap) -> set[str]:
    """The nodes being replaced: the controllers remove them from every group (as their old
    selves) before the new incarnation may take part."""
    return {node.id for node in cmap.nodes.values() if node.replacing}


def recording_ops(cmap: ClusterMap, incarnations: Mapping[str, str],
                  meta_conf: ConfState) -> list[dict[str, object]]:
    """The driver's identity ops for one round: record first-seen incarnations
    (`incarnations`: node id -> the incarnation its established connection presented, this
    node's own included), and finish each replacement whose node has left every group: the
    driver's own configuration (`meta_conf`) and every shard's configuration as its leader
    reported it (a leader reports after applying each change)."""
    ops: list[dict[str, object]] = []
    for node in cmap.nodes.values():
        seen = incarnations.get(node.id, "")
        if not node.incarnation and seen and not node.replacing:
            ops.append({"op": "set_incarnation", "node": node.id, "incarnation": seen})
        if node.replacing:
            in_meta = node.id in meta_conf.voters or node.id in meta_conf.learners or \
                node.id in meta_conf.voters_outgoing or node.id in meta_conf.learners_next
            in_shards = [shard.id for shard in cmap.shards.values()
                         if node.id in shard.voters or node.id in shard.learners]
            if not in_meta and not in_shards:
                ops.append({"op": "finish_replace", "node": node.id})
    return ops


class PeerIncarnations:
    """Which incarnation of each peer this node accepts (the transport's `PeerIdentity`)."""

    def __init__(self, node_id: str, data_dir: str | Path, incarnation: str,
                 cluster_map: Callable[[], ClusterMap]) -> None:
        self.node_id = node_id
        self.incarnation = incarnation
        self._path = Path(data_dir) / PEERS_FILE
        self._cluster_map = cluster_map
        self._remembered: dict[str, str] = self._load()
        #: Peers that refused OUR incarnation, with their reason (cleared once one accepts).
        self.refused_by_peers: dict[str, str] = {}
        self._logged_at = -REFUSAL_LOG_INTERVAL_S

    def _load(self) -> dict[str, str]:
        try:
            raw = json.loads(self._path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as error:
            raise ConfigError(f"data_dir: {self._path} is unreadable ({error}); restore it or "
                              f"delete it (the cluster map still records incarnations)") from None
        if not isinstance(raw, dict) or not all(
                isinstance(k, str) and isinstance(v, str) and _valid(v) for k, v in raw.items()):
            raise ConfigError(f"data_dir: {self._path} is not a map of node id to incarnation")
        return dict(raw)

    def remembered(self) -> dict[str, str]:
        """The peers' incarnations this node remembers (its own file), by node id."""
        return dict(self._remembered)

    def expected(self, peer_id: str) -> str:
        """The incarnation on record for `peer_id` ("" = none: the first one seen is taken)."""
        info = self._cluster_map().nodes.get(peer_id)
        if info is not None and info.incarnation:
            return info.incarnation
        return self._remembered.get(peer_id, "")

    def check(self, peer_id: str, incarnation: str, version: int) -> str | None:
        """None to accept `peer_id` as `incarnation`, else why not (see the module docstring)."""
        expected = self.expected(peer_id)
        info = self._cluster_map().nodes.get(peer_id)
        if not expected:
            return None
        if not incarnation:
            return (f"{peer_id} speaks peer protocol version {version}, without an "
                    f"incarnation, but incarnation {expected} is on record for it; upgrade it")
        if incarnation == expected:
            return None
        if info is not None and info.replacing == incarnation:
            return (f"{peer_id} is being replaced by incarnation {incarnation}: it may take "
                    f"part once its old incarnation {expected} has left every group")
        return (f"{peer_id} presents incarnation {incarnation}, but the cluster knows it as "
                f"incarnation {expected}: its data directory was wiped or replaced, and it "
                f"must not take part as {peer_id} (it forgot its votes and the writes it "
                f"acknowledged). Run `phalanx replace {peer_id}` to remove the old member and "
                f"add this one back as a new member")

    def seen(self, peer_id: str, incarnation: str) -> None:
        """An authenticated connection with `peer_id` as `incarnation`: remember it (durably,
        the first time or after a replacement)."""
        self.refused_by_peers.pop(peer_id, None)
        if not incarnation or self._remembered.get(peer_id) == incarnation:
            return
        self._remembered[peer_id] = incarnation
        try:
            _write_durably(self._path, json.dumps(self._remembered, sort_keys=True) + "\n")
        except OSError as error:
            logger.error("%s: cannot record the incarnation of %s in %s: %s", self.node_id,
                         peer_id, self._path, error)

    def refused_by(self, peer_id: str, reason: str) -> None:
        """`peer_id` refused OUR incarnation: tell the operator what to do (rate-limited)."""
        self.refused_by_peers[peer_id] = reason
        now = time.monotonic()
        if now - self._logged_at >= REFUSAL_LOG_INTERVAL_S:
            self._logged_at = now
            logger.error(
                "%s (incarnation %s) is refused by its peers (%s): this data directory is not "
                "the one the cluster knows as %s (was it wiped?). This node takes no part in the "
                "cluster (no vote, no acknowledgement) and keeps retrying. To bring it back as a "
                "new member, run `phalanx replace %s` (or stop this process).",
                self.node_id, self.incarnation, ", ".join(sorted(self.refused_by_peers)),
                self.node_id, self.node_id)
