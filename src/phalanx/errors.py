"""The one error tree of phalanx.

Rules of this file:
- Every error raised by phalanx derives from `PhalanxError`.
- An error's name tells the caller what to do: `NotLeader` means "ask the leader (here is a
  hint)", `OutcomeUnknown` means "the write may have happened; do not blindly retry".
- Callers decide by type, never by an error's text. Every `RetrySafe` error (certainly not
  applied) reaches a Redis client as `-TRYAGAIN <message>`, `ClusterDown` as
  `-CLUSTERDOWN <message>`, `Loading` as `-LOADING <message>`, `CommandError` as its own text (the RESP front end's mapping is
  `phalanx.server.front.replies.error_text`; see docs/architecture.md).
- A broken invariant is a bug: it raises `InvariantViolation` through `require()`, because
  `python -O` strips `assert`. Nothing catches it broadly.
"""

from __future__ import annotations


class PhalanxError(Exception):
    """Root of every error phalanx raises."""


class ConfigError(PhalanxError):
    """A configuration value broke a rule; the message names the field and the rule."""


class InvariantViolation(PhalanxError):
    """An internal invariant was broken: a bug. The process (or simulation) must stop."""


class StorageError(PhalanxError):
    """The durable store failed or was asked for something it cannot give."""


class Compacted(StorageError):
    """The requested log index was compacted into a snapshot."""


class Unavailable(StorageError):
    """The requested log index is beyond the last index in the store."""


class Corrupt(StorageError):
    """The store holds bytes that fail their checksum or cannot be decoded."""


class RetrySafe(PhalanxError):
    """Certainly not applied: the client may retry any command (wire: `-TRYAGAIN ...`)."""


class NotLeader(RetrySafe):
    """This replica is not the leader; `leader_hint` names the leader it knows of, if any."""

    def __init__(self, leader_hint: str | None, message: str | None = None) -> None:
        self.leader_hint = leader_hint
        super().__init__(message or f"not the leader (leader hint: {leader_hint or 'unknown'})")


class ProposalDropped(RetrySafe):
    """The proposal was not appended (e.g. a leadership transfer is in progress); retry is safe."""


class OutcomeUnknown(PhalanxError):
    """The operation may or may not have taken effect; do not blindly retry a non-idempotent write."""


class LeaderUnreachable(RetrySafe):
    """The leader could not be reached before the command was sent: certainly not applied."""


class TryAgain(RetrySafe):
    """The front end could not serve the command now (the slot is moving between shards, this
    node is not the leader of a forwarded command's shard): nothing was done, retry."""


class ClusterDown(PhalanxError):
    """The shard of the command has no quorum, no reachable replica, or no longer exists
    (wire: `-CLUSTERDOWN ...`): nothing was done."""


class Loading(PhalanxError):
    """The node, or its replica of the command's shard, is still loading its data (replaying
    its log at start, or catching up with its leader after a rebuild): nothing was done,
    retry later (wire: `-LOADING ...`, as Redis while it loads its dataset)."""


class CommandError(PhalanxError):
    """A command failed in a way that becomes this exact error reply (`text`: the line after
    the '-', starting with its code, e.g. "ERR syntax error", "NOPERM ...")."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text


class ClientProtocolError(PhalanxError):
    """A client sent bytes that break the protocol; answer with an error, keep the server up."""


class PeerProtocolError(PhalanxError):
    """A peer sent bytes that break the peer protocol; drop the peer connection."""


class CrossSlotError(PhalanxError):
    """The keys of one request hash to different slots (Redis Cluster's -CROSSSLOT)."""

    def __init__(self) -> None:
        super().__init__("CROSSSLOT Keys in request don't hash to the same slot")


# --- the tools' errors (ops launcher, chaos lab, simulator, checker): one tree for all


class ClusterError(PhalanxError):
    """A local-cluster operation (`phalanx.ops`) failed; the message says what and, where it
    can, why."""


class StartupInterrupted(ClusterError):
    """Startup was cancelled (Ctrl-C or SIGTERM) before a leader was agreed."""


class ChaosError(PhalanxError):
    """The chaos lab could not do what it was asked (the message says what)."""


class NetnsError(PhalanxError):
    """A network-namespace operation failed; the message names the command and its stderr."""


class SimulationFailure(PhalanxError):
    """An invariant broke (or liveness failed) in a simulation run."""


class InvalidHistory(PhalanxError):
    """The history breaks a rule of the model (the message names the operation and the rule)."""


def require(condition: bool, message: str) -> None:
    """Raise `InvariantViolation(message)` unless `condition` holds."""
    if not condition:
        raise InvariantViolation(message)
