"""A connection's write session (`front/write_session.py`, Raft dissertation §6.3): sequences,
the first unacknowledged one, and the order of re-sent writes."""

from __future__ import annotations

from types import SimpleNamespace

from phalanx.server.front.write_session import LOCAL, WAITING, WriteSession, WriteTag


def test_sequences_and_the_first_unacknowledged() -> None:
    session = WriteSession()
    other = WriteSession()
    assert session.client_id != other.client_id  # 64 random bits each
    assert session.first_unacked() == 1
    first, second, third = session.begin(), session.begin(), session.begin()
    assert (first, second, third) == (1, 2, 3)
    assert session.tag(third) == (session.client_id, 3, 1)
    session.end(first)
    assert session.first_unacked() == 2
    session.end(third)  # answered out of order: 2 is still waiting
    assert session.tag(2) == (session.client_id, 2, 2)
    session.end(second)
    assert session.first_unacked() == 4  # nothing in flight: the next one


def test_a_resent_write_waits_for_lower_writes_of_its_connection() -> None:
    session = WriteSession()
    tags = [WriteTag(session, session.begin()) for _ in range(3)]
    healthy, broken = SimpleNamespace(failed=False), SimpleNamespace(failed=True)
    tags[0].mark(healthy)
    tags[1].mark(healthy)
    assert not tags[2].held()  # everything before it is on a live connection, in order
    tags[0].mark(broken)  # its link broke: it will be sent again first
    assert tags[1].held() and tags[2].held() and not tags[0].held()
    tags[0].mark(WAITING)
    assert tags[2].held()
    tags[0].mark(LOCAL)  # proposed on this node's replica (it leads now)
    assert not tags[2].held()
    tags[1].mark(WAITING)
    assert tags[2].held() and not tags[1].held()
    session.end(tags[1].sequence)  # given up or answered: no longer holds anyone
    assert not tags[2].held()


def test_a_forwarded_tag_is_fixed() -> None:
    tag = WriteTag(None, 7, (42, 7, 5))
    assert tag.current() == (42, 7, 5)
    tag.mark(WAITING)  # no session here: nothing to record
    assert not tag.held()
