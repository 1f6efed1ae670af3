"""The consistency checker's log entries in the shard machine (placement/shard.py):
PHALANX.CHECK records the digest at its index on every replica; the replicas' votes
(PHALANX.DIGEST) decide by majority, and a replica whose digest differs from the majority's,
the leader included, is marked diverged, and only that one. The older PHALANX.VERIFY form
(the leader's digest as the reference) is still applied as it was."""

from __future__ import annotations

from phalanx.kv import Command, Error, encode_command
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
