"""How every ratio of the bench is shown: cut in the direction that does not flatter phalanx.

Rules of this file: the project never rounds a figure up in its own favour. A ratio where higher
is better for phalanx (ops/s vs a peer, follower vs leader, K = 2 vs K = 1) is cut DOWN; a ratio
where lower is better (a p50 latency ratio, memory vs redis, a failover gap vs a peer's) is cut
UP. Every section of RESULTS.md and every helper script formats its ratios through `higher` or
`lower` (or `cut_down` / `cut_up` for the bare digits), never with `:.2f`, and the results
document keeps the exact ratios (no `round()` before they are stored): verdicts compare the
exact value, the text shows the cut one.

The cut works on the float's shortest decimal repr (what `repr` prints), not on its binary
expansion: 1.46 is stored as 1.45999999999999996..., and a cut of the binary value would show
1.45 for a division that printed 1.46. Below the float's own precision there is no figure to
flatter. A value that is not finite (a zero peer median) shows as "n/a".

Tests: tests/benchmarks/test_bench_ratios.py (exact boundary cases, both directions).
"""

from __future__ import annotations

import math
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal, localcontext

NOT_A_FIGURE = "n/a"


def _cut(value: float, places: int, rounding: str) -> str:
    if not math.isfinite(value):
        return NOT_A_FIGURE
    step = Decimal(1).scaleb(-places)
    with localcontext() as context:
        context.prec = 400  # room for any finite float's integer digits (up to ~1.8e308)
        shown = Decimal(repr(float(value))).quantize(step, rounding=rounding)
    if shown == 0:
        shown = abs(shown)  # never "-0.00"
    return f"{shown:.{places}f}"


def cut_down(value: float, places: int = 2) -> str:
    """`value` to `places` decimals, toward minus infinity (0.705 -> "0.70")."""
    return _cut(value, places, ROUND_FLOOR)


def cut_up(value: float, places: int = 2) -> str:
    """`value` to `places` decimals, toward plus infinity (0.701 -> "0.71")."""
    return _cut(value, places, ROUND_CEILING)


def higher(value: float, places: int = 2) -> str:
    """A ratio where above 1 is better for phalanx, shown cut down: 0.705 -> "0.70x"."""
    shown = cut_down(value, places)
    return shown if shown == NOT_A_FIGURE else f"{shown}x"


def lower(value: float, places: int = 2) -> str:
    """A ratio where below 1 is better for phalanx, shown cut up: 1.451 -> "1.46x"."""
    shown = cut_up(value, places)
    return shown if shown == NOT_A_FIGURE else f"{shown}x"
