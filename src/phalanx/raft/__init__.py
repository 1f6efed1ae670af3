"""phalanx.raft: a pure, sans-IO Raft core (etcd-style RawNode with Ready/advance).

Rules of this package: standard library only; no asyncio, sockets, clocks, threads, files or
module-level randomness. Time is `tick()`; randomness is the `random.Random` in `RaftConfig`.
"""

from phalanx.raft.confchange import apply_conf_change, decode_conf_change, encode_conf_change
from phalanx.raft.config import RaftConfig
from phalanx.raft.messages import (
    MESSAGE_TYPES,
    AppendEntries,
    AppendEntriesResponse,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    Message,
    ReadIndexRequest,
    ReadIndexResponse,
    RequestVote,
    RequestVoteResponse,
    TimeoutNow,
)
from phalanx.raft.node import PeerStatus, RawNode, Ready, SoftState, Status
from phalanx.raft.pipeline import LogWrite, ReadyIO, ReadyPipeline
from phalanx.raft.read_only import ReadState
from phalanx.raft.storage import LogReader, LogWriter, MemoryStorage
from phalanx.raft.types import (
    NO_NODE,
    ConfChange,
    ConfChangeSingle,
    ConfChangeType,
    ConfState,
    Entry,
    EntryType,
    GroupId,
    HardState,
    Index,
    NodeId,
    Role,
    Snapshot,
    SnapshotMeta,
    Term,
)

__all__ = [
    "MESSAGE_TYPES",
    "NO_NODE",
    "AppendEntries",
    "AppendEntriesResponse",
    "ConfChange",
    "ConfChangeSingle",
    "ConfChangeType",
    "ConfState",
    "Entry",
    "EntryType",
    "GroupId",
    "HardState",
    "Heartbeat",
    "HeartbeatResponse",
    "Index",
    "InstallSnapshot",
    "LogReader",
    "LogWrite",
    "LogWriter",
    "MemoryStorage",
    "Message",
    "NodeId",
    "PeerStatus",
    "RaftConfig",
    "RawNode",
    "ReadIndexRequest",
    "ReadIndexResponse",
    "ReadState",
    "Ready",
    "ReadyIO",
    "ReadyPipeline",
    "RequestVote",
    "RequestVoteResponse",
    "Role",
    "Snapshot",
    "SnapshotMeta",
    "SoftState",
    "Status",
    "Term",
    "TimeoutNow",
    "apply_conf_change",
    "decode_conf_change",
    "encode_conf_change",
]
