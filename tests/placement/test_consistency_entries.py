"""The consistency checker's log entries in the shard machine (placement/shard.py):
PHALANX.CHECK records the digest at its index on every replica; PHALANX.VERIFY with the
leader's digest marks a replica whose digest differs as diverged, and only that one."""

from __future__ import annotations

from phalanx.kv import Command, encode_command
from phalanx.placement.shard import CHECK_COMMAND, VERIFY_COMMAND, ShardMachine


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
