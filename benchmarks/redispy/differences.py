"""The documented reasons for redis-py tests that pass on redis-server and fail on phalanx.

Each entry is a test id suffix (`file::Class::test`) and why phalanx answers differently: a
deliberate difference (cluster semantics, a design decision), or a test that measures the
host rather than the server. `redispy_report.markdown` lists every remaining failure with its
reason here, or "NOT DOCUMENTED" (a failure nobody has explained is a bug until it is).
"""

from __future__ import annotations

_SELECT = ("deliberate: one database per cluster, Redis Cluster's rule (SELECT 0 works, "
           "another index is refused with Redis Cluster's error; RQ, Celery and limits use "
           "db 0). Logical databases would add a dimension to every key, the log and the "
           "snapshot for a feature Redis Cluster does not offer (server/front/session.py)")

DIFFERENCES: dict[str, str] = {
    "test_commands.py::TestRedisCommands::test_select": _SELECT,
    "test_commands.py::TestRedisCommands::test_copy_to_another_database":
        "deliberate: COPY ... DB needs a second database; the test's second client connects "
        "with db=1, which SELECT refuses (see test_select). " + _SELECT,
    "test_commands.py::TestRedisCommands::test_auth":
        "deliberate: CONFIG SET requirepass is refused. requirepass is the cluster's shared "
        "secret (nodes forward to each other and the placement driver authenticates with it); "
        "changing it on one node at run time would cut that node off. Run-time users are ACL "
        "SETUSER's, replicated to every node (server/front/server_commands.py)",
    "test_commands.py::TestRedisCommands::test_readonly_invalid_cluster_state":
        "deliberate: READONLY is accepted on every phalanx node, also when INFO says "
        "standalone: it turns on follower reads with bounded staleness on that connection "
        "(a phalanx feature, front/cluster_commands.py); Redis refuses it without cluster mode",
    "test_commands.py::TestRedisCommands::test_interrupted_command":
        "timing, not a difference: the test gives a reconnect (HELLO, CLIENT SETINFO) and a "
        "SET 0.1 s to finish in a thread; on phalanx that SET is acknowledged after an fsync "
        "on a quorum of 3 processes, which a busy 2-core host does not always do in 0.1 s (it "
        "passes when the host is idle)",
}


def reason(test_id: str) -> str | None:
    """The documented reason for a failing test, or None."""
    for suffix, text in DIFFERENCES.items():
        if test_id.endswith(suffix):
            return text
    return None
