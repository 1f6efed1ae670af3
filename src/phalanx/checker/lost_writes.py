"""Lost acknowledged writes in a set workload (unique `SADD` values).

Rules of this file:
- Every added element is unique, so "acknowledged but absent from the final read" is exactly
  "an acknowledged write was lost": the RPO measure of the chaos lab.
- Elements whose add failed or timed out are not the caller's business here: pass only the
  acknowledged ones. Elements present but never acknowledged are fine (an unknown outcome
  may have taken effect).
- The result keeps the order of `acknowledged` (first occurrence), so reports are deterministic.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Set
from typing import TypeVar

T = TypeVar("T", bound=Hashable)


def check_lost_writes(acknowledged: Iterable[T], final_observed: Set[T]) -> list[T]:
    """The acknowledged elements missing from `final_observed`, in acknowledgement order."""
    lost: list[T] = []
    seen: set[T] = set()
    for element in acknowledged:
        if element not in final_observed and element not in seen:
            seen.add(element)
            lost.append(element)
    return lost
