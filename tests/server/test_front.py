"""The RESP front end's rooms (`phalanx.server.front`, see docs/architecture.md): errors are
mapped by type with the wire text unchanged, and the front end sees the node only through
`ReplicaRegistry` (it never imports `phalanx.server.node`)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from phalanx.errors import (
    ClusterDown,
    CommandError,
    LeaderUnreachable,
    NotLeader,
    OutcomeUnknown,
    PhalanxError,
    ProposalDropped,
    RetrySafe,
    TryAgain,
)
from phalanx.kv import Command, Error, encode_command
from phalanx.placement import SLOT_COUNT, key_slot
from phalanx.placement.shard import SPLIT_COMMAND, ShardMachine, SlotMoved, split_command
from phalanx.resp import ErrorReply, SimpleString
from phalanx.server.front.replies import (
    error_reply,
    error_text,
    failure_text,
    slot_moved,
    to_resp,
    wire_code,
)

SOURCE = Path(__file__).resolve().parents[2] / "src" / "phalanx"


@pytest.mark.parametrize(("error", "line"), [
    (TryAgain("slot 7 is moving between shards"), "TRYAGAIN slot 7 is moving between shards"),
    (TryAgain("this node holds no replica of shard 3"),
     "TRYAGAIN this node holds no replica of shard 3"),
    (NotLeader(None, "not now"), "TRYAGAIN not now"),
    (ProposalDropped("a transfer is in progress"), "TRYAGAIN a transfer is in progress"),
    (LeaderUnreachable("cannot reach leader n2: refused"),
     "TRYAGAIN cannot reach leader n2: refused"),
    (ClusterDown("shard 4 no longer exists; retry"),
     "CLUSTERDOWN shard 4 no longer exists; retry"),
    (OutcomeUnknown("lost"), "ERR phalanx: outcome unknown: lost"),
    (CommandError("NOPERM no"), "NOPERM no"),
    (PhalanxError("odd"), "ERR phalanx: odd"),
])
def test_errors_map_to_their_wire_line_by_type(error: PhalanxError, line: str) -> None:
    assert error_text(error) == line
    assert failure_text(error) == line
    assert error_reply(error) == ErrorReply(line)


def test_retry_safe_errors_share_one_type() -> None:
    for kind in (TryAgain, NotLeader, ProposalDropped, LeaderUnreachable):
        assert issubclass(kind, RetrySafe)
    assert not issubclass(OutcomeUnknown, RetrySafe)
    assert not issubclass(ClusterDown, RetrySafe)


def test_a_timeout_leaves_the_outcome_unknown_and_a_bug_is_not_mapped() -> None:
    assert failure_text(TimeoutError()) == ("ERR phalanx: timed out waiting for the cluster; "
                                            "the outcome of a write is unknown")
    assert error_reply(TimeoutError()) == ErrorReply(
        "ERR phalanx: timed out waiting for the cluster")
    assert failure_text(ValueError("bug")) is None


def test_a_moved_slot_is_typed_and_keeps_its_wire_text() -> None:
    machine = ShardMachine()
    data = encode_command(Command(name=SPLIT_COMMAND, args=tuple(split_command(
        8192, SLOT_COUNT - 1, 2)), now_ms=1_000))
    assert machine.apply(1, data) == "OK"
    key = next(b"k%d" % i for i in range(1000) if key_slot(b"k%d" % i) >= 8192)
    refused = machine.read(b"GET", (key,), 1_000)
    assert isinstance(refused, SlotMoved) and isinstance(refused, Error)
    assert slot_moved(refused)
    assert refused.message == f"TRYAGAIN slot {key_slot(key)} moved to shard 2; retry"
    assert to_resp(refused) == ErrorReply(refused.message)
    # Any other error reply, even one whose text looks alike, is not a moved slot.
    assert not slot_moved(Error(refused.message))
    assert not slot_moved(b"TRYAGAIN slot")


def test_replies_convert_and_peer_errors_have_a_code() -> None:
    assert to_resp(["OK", Error("ERR x"), b"v"]) == [SimpleString("OK"), ErrorReply("ERR x"),
                                                    b"v"]
    assert wire_code(ErrorReply("TRYAGAIN this node is not the leader")) == "TRYAGAIN"
    assert wire_code(ErrorReply("MOVED 1 h:1")) == "MOVED"
    assert wire_code(b"TRYAGAIN") == ""


def _imports(path: Path) -> set[str]:
    """Every module a file imports, at any depth (TYPE_CHECKING blocks included)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def test_the_front_end_never_imports_the_node() -> None:
    files = [*sorted((SOURCE / "server" / "front").glob("*.py")),
             SOURCE / "server" / "peer_link.py"]
    assert len(files) > 5
    offenders = [f"{path.relative_to(SOURCE)} imports {module}"
                 for path in files for module in sorted(_imports(path))
                 if module == "phalanx.server.node" or module.startswith("phalanx.server.node.")]
    assert not offenders, "\n".join(offenders)


def test_the_peer_link_has_no_process_wide_tls() -> None:
    source = (SOURCE / "server" / "peer_link.py").read_text()
    assert "global " not in source
