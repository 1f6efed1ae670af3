"""check_lost_writes: acknowledged unique adds missing from the final read are lost."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from phalanx.checker import check_lost_writes


def test_nothing_lost() -> None:
    assert check_lost_writes([b"1", b"2"], {b"1", b"2", b"3"}) == []


def test_lost_items_in_acknowledgement_order() -> None:
    assert check_lost_writes([5, 3, 9, 1], {3}) == [5, 9, 1]


def test_unacknowledged_extras_are_not_lost_writes() -> None:
    # 7 was added with an unknown outcome and took effect: not the checker's business.
    assert check_lost_writes(["a"], {"a", "7"}) == []


def test_duplicates_reported_once() -> None:
    assert check_lost_writes(["x", "x", "y"], set()) == ["x", "y"]


def test_empty_inputs() -> None:
    assert check_lost_writes([], set()) == []
    assert check_lost_writes(iter(()), frozenset({1})) == []


@given(st.lists(st.integers(0, 50), unique=True), st.sets(st.integers(0, 60)))
def test_lost_is_the_acknowledged_minus_the_observed(
    acknowledged: list[int], observed: set[int]
) -> None:
    lost = check_lost_writes(acknowledged, observed)
    assert set(lost) == set(acknowledged) - observed
    assert lost == [x for x in acknowledged if x not in observed]
