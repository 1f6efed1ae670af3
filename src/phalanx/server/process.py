"""The node process: the entry point `phalanx node` runs, and the check it makes first.
See docs/architecture.md ("the node runtime").

- `check_not_a_wiped_member`: refuse to bootstrap an empty data directory under an id the
  running cluster remembers (a forgotten vote would break Raft's safety), unless the cluster
  is replacing the node by this directory's incarnation (`phalanx replace`). When no peer is
  running (a whole-cluster restart), the peers refuse the wiped node at the peer handshake
  instead (`phalanx.server.identity`).
- `serve` / `run_node`: run one `Node` (uvloop when available) until SIGTERM or SIGINT;
  SIGHUP reloads the peer TLS certificate files.

Rules of this file:
- Process concerns only (signals, the event loop, the pre-start check); what a node is and
  does lives in `phalanx.server.node` and its rooms.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path

from phalanx.errors import ConfigError
from phalanx.server.config import NodeConfig
from phalanx.server.identity import load_or_create_incarnation
from phalanx.server.node import Node

logger = logging.getLogger("phalanx.server.node")


def check_not_a_wiped_member(config: NodeConfig, timeout_s: float = 1.0) -> None:
    """Refuse to bootstrap a node whose data directory is empty while the running cluster
    remembers it (its disk was lost or wiped).

    Raft's safety rests on a server never forgetting its vote and its log (§5.2, §5.4: votes
    and entries are persisted before they are acknowledged). A voter that comes back empty
    under the same id could vote twice in one term. So a fresh bootstrap node asks its peers
    first: if one of them has received Raft messages from this node id, or the placement
    driver's leader shows that it had acknowledged log entries, the node must not start as
    itself. Raises ConfigError saying what to do. A brand-new cluster is unaffected (no peer
    has heard from this node yet), and so is a node with its data (it is not fresh) or one
    that joins as a new node. A peer's map that records another incarnation for this id is
    evidence too. Not covered here: no peer running (the peer handshake's incarnation check
    refuses the node then). A node the cluster is
    replacing by this directory's incarnation (the map's `replacing` or `incarnation` names
    it: `phalanx replace` ran) passes. The incarnation is created first, so that the message
    and `phalanx replace` can name it.
    """
    import json
    import urllib.request
    from concurrent.futures import ThreadPoolExecutor

    if config.join or (Path(config.data_dir) / "groups" / "0").exists():
        return
    incarnation, _ = load_or_create_incarnation(config.data_dir)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def remembered_by(peer_admin: str) -> int:
        try:
            with opener.open(f"http://{peer_admin}/status", timeout=timeout_s) as response:
                status = json.loads(response.read())
        except (OSError, ValueError):
            return 0
        if not isinstance(status, dict):
            return 0
        for node in status.get("nodes") or []:
            if isinstance(node, dict) and node.get("id") == config.id:
                if incarnation in (node.get("incarnation"), node.get("replacing")):
                    return -1  # the cluster accepts (or is replacing the node by) this one
                if node.get("incarnation"):
                    return 1  # the map records another incarnation: this one was wiped
        # Evidence that this node ran before: the peer received Raft messages from it (since
        # the peer started), or, on the driver's leader, it had acknowledged log entries.
        heard = 0
        for peer in status.get("peers") or []:
            if isinstance(peer, dict) and peer.get("id") == config.id:
                received = peer.get("messages_received")
                heard = received if isinstance(received, int) else 0
        meta = status.get("meta")
        progress = meta.get("progress") if isinstance(meta, dict) else None
        mine = progress.get(config.id) if isinstance(progress, dict) else None
        match = mine.get("match") if isinstance(mine, dict) else None
        return max(heard, match if isinstance(match, int) else 0)

    admins = [p.admin for p in config.peers if p.id != config.id and p.admin]
    if not admins:
        return
    with ThreadPoolExecutor(max_workers=len(admins)) as pool:
        matches = list(pool.map(remembered_by, admins))
    if min(matches) >= 0 and max(matches) > 0:
        raise ConfigError(
            f"the data directory {config.data_dir} is empty, but the running cluster knows "
            f"node {config.id} (it received its Raft messages, or its map records another "
            f"incarnation of it): its disk was lost or wiped. "
            f"Starting it as {config.id} could break Raft's safety (a forgotten vote). Run "
            f"`phalanx replace {config.id} --incarnation {incarnation}` (the old member is "
            f"removed, this directory comes back as a new member), then start it again; or "
            f"decommission {config.id} (`phalanx decommission {config.id}`) and start this "
            f"machine as a new node with a new id and `join`.")


async def serve(config: NodeConfig) -> None:
    """Run a node until SIGTERM or SIGINT."""
    node = Node(config)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, node.stopping.set)
    # SIGHUP reloads the peer TLS certificate (they are also reloaded when the files change).
    loop.add_signal_handler(signal.SIGHUP, node.reload_tls)
    await node.start()
    try:
        await node.stopping.wait()
    finally:
        logger.info("node %s stopping", config.id)
        await node.stop()


def run_node(config: NodeConfig) -> None:
    """Run a node in the foreground (uvloop when available) until SIGTERM/SIGINT."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency
        asyncio.run(serve(config))
    else:
        uvloop.run(serve(config))
