"""The stream workload's pure checker on hand-built histories: a clean history (with a consumer
that died and a survivor that reclaimed its entry) passes and counts the redelivery; each kind
of violation planted alone is caught, and only that one: an acknowledged XADD never delivered,
missing from the final stream, never acked or still pending; a phantom (never produced, wrong
id, two payloads under one id, no fields); a failed XADD that is there after all; a payload
appended twice; one id delivered as new twice; a reclaim before the entry was idle long enough;
ids out of real-time order. Also the per-second timeline (rates, lag, pending)."""

from __future__ import annotations

import dataclasses
import json

from phalanx.checker import Ack, Delivery, FinalState, Produce, StreamCheck, check_stream
from phalanx.checker.stream_check import CLAIM, FAIL, INFO, NEW, OK, parse_id, stream_timeline

# p1..p4 acknowledged with ids 1-0..4-0; px unknown (it made it: 5-0); pf failed (never there).
PRODUCES = [
    Produce("p1", OK, 0.0, 0.1, "1-0"),
    Produce("p2", OK, 0.2, 0.3, "2-0"),
    Produce("p3", OK, 0.4, 0.5, "3-0"),
    Produce("p4", OK, 0.6, 0.7, "4-0"),
    Produce("px", INFO, 0.8, 1.8),
    Produce("pf", FAIL, 0.9, 1.0),
]
# c1 gets 1-0 and 2-0 and acks 1-0, then dies with 2-0 pending; c2 gets 3-0, 4-0, 5-0 and acks
# them; 3 s later c2 reclaims 2-0 (min-idle 1000 ms) and acks it.
DELIVERIES = [
    Delivery("1-0", "p1", "c1", NEW, 1.0, 1.1),
    Delivery("2-0", "p2", "c1", NEW, 1.0, 1.1),
    Delivery("3-0", "p3", "c2", NEW, 1.2, 1.3),
    Delivery("4-0", "p4", "c2", NEW, 1.2, 1.3),
    Delivery("5-0", "px", "c2", NEW, 2.0, 2.1),
    Delivery("2-0", "p2", "c2", CLAIM, 4.0, 4.1, min_idle_ms=1000),
]
ACKS = [
    Ack(("1-0",), "c1", OK, 1.2, 1.3, 1),
    Ack(("3-0", "4-0"), "c2", OK, 1.4, 1.5, 2),
    Ack(("5-0",), "c2", OK, 2.2, 2.3, 1),
    Ack(("2-0",), "c2", OK, 4.2, 4.3, 1),
]
FINAL = FinalState([("1-0", "p1"), ("2-0", "p2"), ("3-0", "p3"), ("4-0", "p4"), ("5-0", "px")],
                   [])


def _check(produces: list[Produce] | None = None, deliveries: list[Delivery] | None = None,
           acks: list[Ack] | None = None, final: FinalState | None = FINAL) -> StreamCheck:
    return check_stream(PRODUCES if produces is None else produces,
                        DELIVERIES if deliveries is None else deliveries,
                        ACKS if acks is None else acks, final)


FAILURE_FIELDS = ("never_delivered", "missing", "unacked", "phantoms", "failed_but_present",
                  "appended_twice", "new_twice", "early_claims", "id_order")


def _only(result: StreamCheck, name: str) -> tuple[str, ...]:
    """The failures of kind `name`, asserting no other kind fired."""
    assert not result.ok
    others = {f: getattr(result, f) for f in FAILURE_FIELDS if f != name and getattr(result, f)}
    assert others == {}, others
    found: tuple[str, ...] = getattr(result, name)
    assert found
    assert len(result.problems()) == 1
    return found


def test_a_clean_history_with_a_reclaim_passes_and_counts_the_redelivery() -> None:
    result = _check()
    assert result.ok, result.problems()
    assert (result.acknowledged, result.unknown, result.failed) == (4, 1, 1)
    assert result.delivered == 5 and result.acked == 5
    assert result.deliveries == {CLAIM: 1, NEW: 5}
    assert result.duplicates == {"2-0": 2}
    assert (result.final_entries, result.final_pending) == (5, 0)
    body = result.to_json()
    json.dumps(body, allow_nan=False)
    assert body["ok"] is True and body["redeliveries"] == 1 and body["problems"] == []
    # Without a final state the history checks still run.
    assert _check(final=None).ok


def test_an_acknowledged_xadd_never_delivered_is_caught() -> None:
    deliveries = [d for d in DELIVERIES if d.entry_id != "3-0"]
    acks = [Ack(("4-0",), "c2", OK, 1.4, 1.5, 1), *[a for a in ACKS if "3-0" not in a.entry_ids]]
    # 3-0 was never delivered nor acked: both say so.
    result = _check(deliveries=deliveries, acks=acks)
    assert result.never_delivered == ("p3",) and result.unacked == ("p3",)
    assert "1 acknowledged XADDs never delivered" in result.problems()[0]


def test_an_acknowledged_xadd_missing_from_the_final_stream_is_caught() -> None:
    final = FinalState([e for e in FINAL.entries if e[0] != "4-0"], [])
    assert _only(_check(final=final), "missing") == ("p4",)


def test_an_xadd_never_acked_or_still_pending_is_caught() -> None:
    acks = [a for a in ACKS if a.entry_ids != ("2-0",)]
    assert _only(_check(acks=acks), "unacked") == ("p2",)
    # An XACK that failed covers nothing.
    failed = [*acks, Ack(("2-0",), "c2", FAIL, 4.2, 4.3)]
    assert _only(_check(acks=failed), "unacked") == ("p2",)
    # One with an unknown outcome may have applied: not pending at the end, that is fine (and
    # counted); still pending at the end, it did not.
    unknown = [*acks, Ack(("2-0",), "c2", INFO, 4.2, 5.2)]
    result = _check(acks=unknown)
    assert result.ok and result.acked_unknown == 1 and result.acked == 4
    assert _only(_check(acks=unknown, final=FinalState(FINAL.entries, ["2-0"])),
                 "unacked") == ("p2",)
    # Acked, but the group still lists it pending after the drain.
    pending = FinalState(FINAL.entries, ["2-0"])
    assert _only(_check(final=pending), "unacked") == ("p2",)


def test_phantom_entries_are_caught() -> None:
    never = [*DELIVERIES, Delivery("6-0", "zz", "c1", NEW, 3.0, 3.1)]
    assert "6-0=zz (never produced)" in _only(_check(deliveries=never), "phantoms")
    wrong_id = FinalState([*FINAL.entries[:3], ("4-1", "p4"), ("5-0", "px")], [])
    result = _check(final=wrong_id)
    assert "4-1=p4 (its XADD returned 4-0)" in result.phantoms
    assert result.missing == ("p4",)  # and 4-0 is gone from the stream
    two = [*DELIVERIES[:-1], Delivery("2-0", "p3", "c2", CLAIM, 4.0, 4.1, min_idle_ms=1000)]
    assert "2-0 (payloads p2, p3)" in _check(deliveries=two).phantoms
    no_fields = [*DELIVERIES[:-1], Delivery("2-0", None, "c2", CLAIM, 4.0, 4.1, 1000)]
    assert _only(_check(deliveries=no_fields), "phantoms") == ("2-0 (no fields)",)


def test_a_failed_xadd_that_is_there_after_all_is_caught() -> None:
    final = FinalState([*FINAL.entries, ("6-0", "pf")], [])
    assert _only(_check(final=final), "failed_but_present") == ("pf",)


def test_a_payload_appended_twice_is_caught() -> None:
    # px (unknown outcome: it may be there once) is there twice: the XADD applied twice.
    final = FinalState([*FINAL.entries, ("6-0", "px")], [])
    assert _only(_check(final=final), "appended_twice") == ("px (5-0, 6-0)",)


def test_one_id_delivered_as_new_to_two_consumers_is_caught() -> None:
    deliveries = [*DELIVERIES, Delivery("3-0", "p3", "c1", NEW, 1.2, 1.35)]
    result = _check(deliveries=deliveries)
    assert _only(result, "new_twice") == ("3-0",)
    assert result.duplicates["3-0"] == 2


def test_a_reclaim_before_the_min_idle_time_is_caught() -> None:
    # c2 claims 2-0 0.5 s after c1 got it, asking for 1000 ms of idle time.
    early = [*DELIVERIES[:-1], Delivery("2-0", "p2", "c2", CLAIM, 1.4, 1.6, min_idle_ms=1000)]
    found = _only(_check(deliveries=early), "early_claims")
    assert found[0].startswith("2-0 to c2 at 1.600 s (idle at most 600 ms < 1000 ms)")
    # The same claim with a shorter min-idle is a legal reclaim.
    legal = [*DELIVERIES[:-1], Delivery("2-0", "p2", "c2", CLAIM, 1.4, 1.6, min_idle_ms=500)]
    assert _check(deliveries=legal).ok
    # A second claim overlapping the first in time: the order is unknown, nothing is said; one
    # that surely followed it too soon is caught.
    overlapping = [*DELIVERIES, Delivery("2-0", "p2", "c3", CLAIM, 3.9, 4.2, 1000)]
    assert _check(deliveries=overlapping).ok
    after = [*DELIVERIES, Delivery("2-0", "p2", "c3", CLAIM, 4.5, 4.6, 1000)]
    assert _only(_check(deliveries=after), "early_claims")[0].startswith("2-0 to c3")
    # A drain claim (min-idle 0) is never early.
    drain = [*DELIVERIES, Delivery("2-0", "p2", "drain", CLAIM, 4.15, 4.2, 0)]
    assert _check(deliveries=drain).ok


def test_ids_out_of_real_time_order_are_caught() -> None:
    # p4 began after p3's XADD was acknowledged, yet got a smaller id (a new leader reusing
    # ids); the history is otherwise consistent.
    produces = [*PRODUCES[:3], dataclasses.replace(PRODUCES[3], entry_id="2-5"), *PRODUCES[4:]]
    deliveries = [dataclasses.replace(d, entry_id="2-5") if d.payload == "p4" else d
                  for d in DELIVERIES]
    acks = [Ack(("3-0", "2-5"), "c2", OK, 1.4, 1.5, 2) if a.entry_ids == ("3-0", "4-0") else a
            for a in ACKS]
    final = FinalState([("2-5", "p4") if e[1] == "p4" else e for e in FINAL.entries], [])
    found = _only(_check(produces, deliveries, acks, final), "id_order")
    assert found == ("p4 got 2-5 after p3 got 3-0",)
    # Concurrent XADDs may be ordered either way.
    concurrent = [*PRODUCES[:3], dataclasses.replace(PRODUCES[3], began=0.45, entry_id="2-5"),
                  *PRODUCES[4:]]
    assert _check(concurrent, deliveries, acks, final).ok


def test_the_timeline_counts_rates_lag_and_pending() -> None:
    rows = stream_timeline(PRODUCES, DELIVERIES, ACKS, 5.0)
    assert [r["t_s"] for r in rows] == [0, 1, 2, 3, 4]
    assert [r["produced"] for r in rows] == [4, 0, 0, 0, 0]
    assert [r["consumed"] for r in rows] == [0, 4, 1, 0, 0]  # 2-0's reclaim is no new consumer
    assert [r["acked"] for r in rows] == [0, 3, 1, 0, 1]
    assert [r["pending"] for r in rows] == [0, 1, 1, 1, 0]
    # Lag: acknowledged XADDs not acked yet (p2 until its reclaim; px, acked at 2.3 s, was
    # never acknowledged so it does not count).
    assert [r["lag"] for r in rows] == [4, 1, 1, 1, 0]


def test_ids_parse_and_sort() -> None:
    assert parse_id("1700000000000-12") == (1700000000000, 12)
    assert parse_id("5") == (5, 0)
    assert parse_id("garbage") == (-1, -1)
    assert sorted(["10-0", "9-1", "9-0"], key=parse_id) == ["9-0", "9-1", "10-0"]
