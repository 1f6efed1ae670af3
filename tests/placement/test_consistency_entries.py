"""The consistency checker's log entries in the shard machine (placement/shard.py):
PHALANX.CHECK records the digest at its index on every replica; the replicas' votes
(PHALANX.DIGEST) decide by majority, and a replica whose digest differs from the majority's,
the leader included, is marked diverged, and only that one. The older PHALANX.VERIFY form
(the leader's digest as the reference) is still applied as it was."""

from __future__ import annotations

import pytest

from phalanx.kv import Command, Error, encode_command
from phalanx.placement import shard as shard_module
from phalanx.placement.shard import CHECK_COMMAND, DIGEST_COMMAND, VERIFY_COMMAND, ShardMachine


def entry(name: bytes, *args: bytes) -> bytes:
    return encode_command(Command(name=name, args=args, now_ms=1_000))


def test_equal_replicas_agree_and_a_divergent_one_is_marked() -> None:
    replicas = [ShardMachine() for _ in range(3)]
    for index in range(1, 6):
        for replica in replicas:
            replica.apply(index, entry(b"SET", b"k%d" % index, b"v"))
    # The disk of replica 2 lies: a value changed without a log entry.
    replicas[2].kv.apply(6, entry(b"SET", b"k3", b"lie"))
    for replica in replicas[:2]:
        replica.kv.apply(6, b"")
    replies = [r.apply(7, entry(CHECK_COMMAND)) for r in replicas]
    assert isinstance(replies[0], bytes)
    index, digest = replies[0].split(b" ")
    assert index == b"7" and replies[1] == replies[0] and replies[2] != replies[0]
    verdicts = [r.apply(8, entry(VERIFY_COMMAND, index, digest)) for r in replicas]
    assert verdicts == [b"OK", b"OK", b"MISMATCH"]
    assert replicas[0].divergence is None and replicas[1].divergence is None
    assert replicas[2].divergence is not None and "index 7" in replicas[2].divergence


def test_a_replica_without_a_digest_at_that_index_skips() -> None:
    leader, late = ShardMachine(), ShardMachine()
    reply = leader.apply(1, entry(CHECK_COMMAND))
    assert isinstance(reply, bytes)
    index, digest = reply.split(b" ")
    late.restore(leader.snapshot())  # installed a snapshot past the check
    assert late.apply(2, entry(VERIFY_COMMAND, index, digest)) == b"SKIPPED"
    assert late.apply(3, entry(VERIFY_COMMAND, b"x", b"y")) == b"SKIPPED"
    assert late.divergence is None


def test_only_the_latest_digests_are_kept() -> None:
    shard = ShardMachine()
    for index in range(1, 30):
        shard.apply(index, entry(CHECK_COMMAND))
    assert sorted(shard.check_digests) == list(range(22, 30))


def _three_with_a_liar(liar: int) -> list[ShardMachine]:
    replicas = [ShardMachine() for _ in range(3)]
    for index in range(1, 6):
        for replica in replicas:
            replica.apply(index, entry(b"SET", b"k%d" % index, b"v"))
    # The disk of replica `liar` lies: a value changed without a log entry.
    for number, replica in enumerate(replicas):
        replica.kv.apply(6, entry(b"SET", b"k3", b"lie") if number == liar else b"")
    return replicas


def _apply_everywhere(replicas: list[ShardMachine], index: int, data: bytes) -> list[object]:
    return [replica.apply(index, data) for replica in replicas]


def test_the_majority_outvotes_a_divergent_leader() -> None:
    """n1 leads and its data lies: n2 and n3 agree, so the verdict is theirs and n1 (the
    proposer of the check) is the one marked diverged, on every replica's log alike."""
    replicas = _three_with_a_liar(0)
    replies = _apply_everywhere(replicas, 7, entry(CHECK_COMMAND, b"n1", b"n2", b"n3"))
    digests = [bytes(r).split(b" ")[1] for r in replies]  # type: ignore[arg-type]
    assert digests[1] == digests[2] != digests[0]
    # The leader's own vote is committed first: no verdict with one vote of three.
    _apply_everywhere(replicas, 8, entry(DIGEST_COMMAND, b"7", b"n1", digests[0]))
    assert all(not r.check_verdicts and r.divergence is None for r in replicas)
    _apply_everywhere(replicas, 9, entry(DIGEST_COMMAND, b"7", b"n2", digests[1]))
    assert all(not r.check_verdicts for r in replicas)  # 1 against 1: no majority yet
    _apply_everywhere(replicas, 10, entry(DIGEST_COMMAND, b"7", b"n3", digests[2]))
    for replica in replicas:
        assert replica.check_verdicts[7] == (digests[1].decode(), ["n1"])
    assert replicas[0].divergence is not None and "majority" in replicas[0].divergence
    assert replicas[1].divergence is None and replicas[2].divergence is None


def test_a_divergent_follower_is_outvoted_and_a_late_dissent_is_recorded() -> None:
    replicas = _three_with_a_liar(2)
    replies = _apply_everywhere(replicas, 7, entry(CHECK_COMMAND, b"n1", b"n2", b"n3"))
    digests = [bytes(r).split(b" ")[1] for r in replies]  # type: ignore[arg-type]
    _apply_everywhere(replicas, 8, entry(DIGEST_COMMAND, b"7", b"n1", digests[0]))
    _apply_everywhere(replicas, 9, entry(DIGEST_COMMAND, b"7", b"n2", digests[1]))
    assert [r.divergence is not None for r in replicas] == [False, False, True]
    _apply_everywhere(replicas, 10, entry(DIGEST_COMMAND, b"7", b"n3", digests[2]))
    assert all(r.check_verdicts[7][1] == ["n3"] for r in replicas)


def test_no_majority_is_no_verdict_and_stops_nobody() -> None:
    replicas = [ShardMachine() for _ in range(3)]
    for number, replica in enumerate(replicas):
        replica.apply(1, entry(b"SET", b"k", b"v%d" % number))  # three different states
    replies = _apply_everywhere(replicas, 2, entry(CHECK_COMMAND, b"n1", b"n2", b"n3"))
    digests = [bytes(r).split(b" ")[1] for r in replies]  # type: ignore[arg-type]
    assert len(set(digests)) == 3
    for number, digest in enumerate(digests):
        _apply_everywhere(replicas, 3 + number, entry(DIGEST_COMMAND, b"2",
                                                      b"n%d" % (number + 1), digest))
    assert all(not r.check_verdicts and r.divergence is None for r in replicas)


def test_votes_that_do_not_count() -> None:
    """A non-voter's vote, a second vote from the same node, a vote on an unknown check: OK
    (the voter's retry must not fail) and changing nothing; a malformed vote is an error."""
    shard = ShardMachine()
    reply = shard.apply(1, entry(CHECK_COMMAND, b"n1", b"n2", b"n3"))
    digest = bytes(reply).split(b" ")[1]  # type: ignore[arg-type]
    assert shard.apply(2, entry(DIGEST_COMMAND, b"1", b"n9", b"other")) == b"OK"
    assert shard.apply(3, entry(DIGEST_COMMAND, b"1", b"n1", b"other")) == b"OK"
    assert shard.apply(4, entry(DIGEST_COMMAND, b"1", b"n1", digest)) == b"OK"  # n1 voted
    assert shard.apply(5, entry(DIGEST_COMMAND, b"99", b"n2", digest)) == b"OK"
    assert shard.check_votes[1] == {"n1": "other"} and not shard.check_verdicts
    assert isinstance(shard.apply(6, entry(DIGEST_COMMAND, b"x")), Error)
    # A replica that installed a snapshot past the check has no digest and is never marked.
    late = ShardMachine()
    late.restore(shard.snapshot())
    for index, node in ((7, b"n2"), (8, b"n3")):
        late.apply(index, entry(DIGEST_COMMAND, b"1", node, digest))
    assert late.divergence is None and not late.check_verdicts


def test_the_vote_state_is_bounded() -> None:
    shard = ShardMachine()
    for index in range(1, 30):
        shard.apply(2 * index, entry(CHECK_COMMAND, b"n1"))
        shard.apply(2 * index + 1, entry(DIGEST_COMMAND, str(2 * index).encode(), b"n1",
                                         shard.check_digests[2 * index].encode()))
    for kept in (shard.check_digests, shard.check_voters, shard.check_votes,
                 shard.check_verdicts):
        assert len(kept) <= 8


# -- a big shard: the digest is computed in slices after the CHECK is applied (issue 15)

def _finish(replica: ShardMachine, budget: int = 3) -> None:
    for _ in range(10_000):
        if replica.step_digest(budget):
            return
    raise AssertionError("the digest never finished")


def test_a_big_shard_digests_in_slices_the_state_at_the_check(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Over CHECK_SYNC_KEYS keys the CHECK replies `i pending`; writes applied meanwhile do
    not change the digest (it is the state at i); a replica that votes only once its digest
    is known, and a verdict applied before a slow replica's digest is done is compared when
    that digest is done: the liar is marked then, and only the liar."""
    monkeypatch.setattr(shard_module, "CHECK_SYNC_KEYS", 2)
    replicas = _three_with_a_liar(2)
    at_check = [r.kv.digest() for r in replicas]
    replies = _apply_everywhere(replicas, 7, entry(CHECK_COMMAND, b"n1", b"n2", b"n3"))
    assert replies == [b"7 pending"] * 3
    assert all(not r.check_digests and r.pending_digest is not None for r in replicas)
    # Later writes, applied while the digests are computed, change every key.
    for index in range(8, 14):
        _apply_everywhere(replicas, index, entry(b"SET", b"k%d" % (index - 7), b"new"))
    _finish(replicas[0])
    _finish(replicas[1])
    assert replicas[0].check_digests[7] == replicas[1].check_digests[7] == at_check[0]
    digest = at_check[0].encode()
    _apply_everywhere(replicas, 14, entry(DIGEST_COMMAND, b"7", b"n1", digest))
    _apply_everywhere(replicas, 15, entry(DIGEST_COMMAND, b"7", b"n2", digest))
    assert all(r.check_verdicts[7] == (at_check[0], []) for r in replicas)
    assert replicas[2].divergence is None  # its own digest is not known yet
    assert 7 in replicas[2].check_voters  # the vote state of a pending check is kept
    _finish(replicas[2])
    assert replicas[2].check_digests[7] == at_check[2] != at_check[0]
    assert replicas[2].divergence is not None and "index 7" in replicas[2].divergence
    assert replicas[0].divergence is None and replicas[1].divergence is None
    assert all(r.kv._keyspace.before_change is None for r in replicas)


def test_a_pending_digest_is_given_up_by_a_newer_check_or_a_snapshot(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shard_module, "CHECK_SYNC_KEYS", 2)
    shard = _three_with_a_liar(0)[1]
    assert shard.apply(7, entry(CHECK_COMMAND, b"n1")) == b"7 pending"
    assert shard.apply(8, entry(CHECK_COMMAND, b"n1")) == b"8 pending"
    _finish(shard)
    assert list(shard.check_digests) == [8] and 7 not in shard.check_voters
    assert shard.apply(9, entry(CHECK_COMMAND, b"n1")) == b"9 pending"
    shard.restore(shard.snapshot())  # installed a snapshot: no digest at 9 here
    assert shard.pending_digest is None and shard.step_digest(3)
    assert 9 not in shard.check_digests
    # The older form (no voters) is computed at apply time, big or not.
    reply = shard.apply(10, entry(CHECK_COMMAND))
    assert reply == b"10 " + shard.kv.digest().encode()
