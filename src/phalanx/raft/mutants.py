"""Planted bugs (mutants) of the Raft core, for mutation testing of the simulator.

Rules of this file:
- Every mutant is a name in `MUTANTS` with one line saying what it breaks and which rule of the
  paper it violates. `RaftConfig.mutants` (a frozenset, empty by default) switches them on; the
  core checks a plain boolean attribute set once at construction at each mutation point, so a
  replica without mutants pays one attribute test per point and nothing else.
- A mutant is a deliberate safety bug: only `phalanx sim --mutants` and the tests plant them,
  to prove the simulator catches each one (a surviving mutant is a failing result). Production
  code never sets `mutants`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from phalanx.raft.log import RaftLog
    from phalanx.raft.messages import AppendEntries

#: name -> what the planted bug does (and the rule it breaks).
MUTANTS: dict[str, str] = {
    "lease-no-expiry":
        "a leader's read lease never expires: a deposed leader keeps serving reads (diss. §6.4.1)",
    "figure8-commit":
        "a leader commits an entry of an earlier term by counting replicas (paper §5.4.2, "
        "Figure 8)",
    "apply-before-commit":
        "a follower commits (and applies) entries as soon as they are appended, before the leader "
        "says they are committed (§5.3: apply only committed entries)",
    "stale-read-index":
        "a follower serves a read at its own (stale) commit index instead of the leader's read "
        "index (diss. §6.4, step 2 for followers)",
    "read-before-term-commit":
        "a new leader serves reads before an entry of its own term is committed, at a commit "
        "index that may lag (diss. §6.4, step 1)",
    "stale-snapshot":
        "a follower installs a snapshot older than its commit index, rolling its state back "
        "(§7: a snapshot that does not go beyond the log is ignored)",
    "vote-not-persisted":
        "a vote is granted before the new term and vote are durable: after a crash the replica "
        "votes again in the same term (Figure 2: persist currentTerm and votedFor first)",
    "prevote-as-vote":
        "a pre-candidate that wins the pre-vote becomes leader of the next term without the real "
        "election (diss. §9.6: PreVote only asks; the election still counts real votes)",
    "vote-ignores-log":
        "a vote is granted to a candidate whose log is less up to date (§5.4.1, election "
        "restriction)",
    "stale-term-append":
        "a follower accepts AppendEntries from a leader of an older term (§5.1: reject stale "
        "terms)",
    "no-truncate":
        "a follower keeps its conflicting entries instead of truncating them, and acknowledges "
        "the leader's (§5.3, AppendEntries receiver rule 3)",
    "probe-from-start":
        "a new leader probes every follower from index 1 (next = match + 1 after its reset) "
        "instead of just after its last entry: it re-sends the whole log, or a snapshot once "
        "compacted, to followers that hold it (§5.3: nextIndex starts just after the leader's "
        "last entry)",
    "prevote-after-restart":
        "a freshly restarted replica grants pre-votes at once, though it may have heard from a "
        "live leader just before it stopped (diss. §9.6: only a voter that has not heard from a "
        "leader for an election timeout grants one)",
}


def append_without_truncating(log: RaftLog, message: AppendEntries) -> int:
    """MUTANT no-truncate: the follower side of AppendEntries that keeps our conflicting
    entries, appends only those beyond our log, and returns the index to acknowledge as if it
    held the leader's entries (the caller checked prev_log_index/prev_log_term)."""
    ours = log.last_index()
    fresh = [entry for entry in message.entries if entry.index > ours]
    if fresh and fresh[0].index == ours + 1:
        log.append(fresh)
    last = message.prev_log_index + len(message.entries)
    log.commit_to(min(message.commit, last, log.last_index()))
    return last


def check_mutants(names: frozenset[str]) -> str | None:
    """An error text naming the unknown mutants in `names`, or None if all are known."""
    unknown = sorted(names - MUTANTS.keys())
    if unknown:
        return f"unknown mutants {unknown}; known: {sorted(MUTANTS)}"
    return None


__all__ = ["MUTANTS", "append_without_truncating", "check_mutants"]
