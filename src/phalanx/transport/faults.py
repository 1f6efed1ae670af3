"""Network fault rules of the chaos lab, applied by the peer transport of one node.

This module owns `FaultRules`: a small mutable object (the admin API changes it while the node
runs) that says which peer messages this node drops or delays. It decides; the transport acts
(`phalanx.transport.tcp` asks it on every send and on every received batch).

JSON form (`from_json` / `to_json`, what the admin endpoint accepts)::

    {
      "drop_to": ["n2"],                                 # drop everything sent to n2
      "drop_from": ["n3"],                               # drop everything received from n3
      "delay_to": {"n2": {"ms": 100, "jitter_ms": 20},   # delay what is sent to n2 by
                   "*": {"ms": 5}},                      #   100 ms + U(0, 20) ms; "*" = any peer
      "drop_probability": 0.01                           # drop each outbound message with p
    }

Every key is optional; an empty object means "no faults".

Rules of this file:
- Directional: `drop_to` and `delay_to` act on outbound traffic, `drop_from` on inbound traffic;
  a symmetric partition between n1 and n2 is `drop_to: [n2]` plus `drop_from: [n2]` (or the
  rule on both nodes). `drop_probability` applies to outbound messages only, so a message runs
  the dice once.
- Every change is validated before anything is applied; a bad value raises `ConfigError` naming
  the field (`fault_rules.delay_to.n2.ms: ...`) and leaves the rules as they were.
- Randomness only from the injected `random.Random` (reproducible chaos runs).
- `active` is false when no rule is set, so the transport's hot path pays one attribute read.
- Keeping per-peer order of delayed messages is the transport's job: `delay_for` only draws.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from phalanx.errors import ConfigError

__all__ = ["ANY_PEER", "MAX_DELAY_MS", "Delay", "FaultRules"]

ANY_PEER: Final = "*"
"""The `delay_to` key that applies to every peer without a rule of its own."""

MAX_DELAY_MS: Final = 60_000.0
"""Largest fixed delay or jitter accepted (a minute: longer is a partition, use drop_to)."""

_KEYS: Final = frozenset({"drop_to", "drop_from", "delay_to", "drop_probability"})
_DELAY_KEYS: Final = frozenset({"ms", "jitter_ms"})


@dataclass(frozen=True, slots=True)
class Delay:
    """A one-way delay: `ms` fixed plus a uniform jitter in [0, `jitter_ms`)."""

    ms: float
    jitter_ms: float = 0.0


class FaultRules:
    """The fault rules of one node; see the module docstring for their meaning."""

    __slots__ = ("_active", "_delay_to", "_drop_from", "_drop_probability", "_drop_to", "_rng")

    def __init__(
        self,
        *,
        drop_to: Iterable[str] = (),
        drop_from: Iterable[str] = (),
        delay_to: Mapping[str, Delay] | None = None,
        drop_probability: float = 0.0,
        rng: random.Random | None = None,
    ) -> None:
        self._rng = rng if rng is not None else random.Random()
        self._drop_to: frozenset[str] = frozenset()
        self._drop_from: frozenset[str] = frozenset()
        self._delay_to: dict[str, Delay] = {}
        self._drop_probability = 0.0
        self._active = False
        self._apply(
            _peer_set("drop_to", drop_to),
            _peer_set("drop_from", drop_from),
            {
                peer: _delay(f"delay_to.{peer}", {"ms": d.ms, "jitter_ms": d.jitter_ms})
                for peer, d in (delay_to or {}).items()
            },
            _probability("drop_probability", drop_probability),
        )

    # ---- JSON ---------------------------------------------------------------------------

    @classmethod
    def from_json(cls, data: Mapping[str, Any], *, rng: random.Random | None = None) -> FaultRules:
        """Build rules from their JSON form; raises `ConfigError` naming the bad field."""
        rules = cls(rng=rng)
        rules.update_from_json(data)
        return rules

    def update_from_json(self, data: Mapping[str, Any]) -> None:
        """Replace every rule with those of `data` (validated first: all or nothing)."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"fault_rules: must be an object, got {type(data).__name__}")
        unknown = set(data) - _KEYS
        if unknown:
            raise ConfigError(
                f"fault_rules: unknown field(s) {', '.join(sorted(map(str, unknown)))} "
                f"(known: {', '.join(sorted(_KEYS))})"
            )
        drop_to = _peer_list("drop_to", data.get("drop_to", []))
        drop_from = _peer_list("drop_from", data.get("drop_from", []))
        raw_delays = data.get("delay_to", {})
        if not isinstance(raw_delays, Mapping):
            raise ConfigError(
                f"fault_rules.delay_to: must be an object of peer -> {{ms, jitter_ms}}, got "
                f"{type(raw_delays).__name__}"
            )
        delays: dict[str, Delay] = {}
        for peer, raw in raw_delays.items():
            _check_peer_id(f"delay_to key {peer!r}", peer)
            delays[peer] = _delay(f"delay_to.{peer}", raw)
        probability = _probability("drop_probability", data.get("drop_probability", 0.0))
        self._apply(drop_to, drop_from, delays, probability)

    def to_json(self) -> dict[str, Any]:
        """The JSON form of the rules (`from_json(to_json())` gives equal rules)."""
        return {
            "drop_to": sorted(self._drop_to),
            "drop_from": sorted(self._drop_from),
            "delay_to": {
                peer: {"ms": delay.ms, "jitter_ms": delay.jitter_ms}
                for peer, delay in sorted(self._delay_to.items())
            },
            "drop_probability": self._drop_probability,
        }

    # ---- changes ------------------------------------------------------------------------

    def clear(self) -> None:
        """Remove every rule: traffic flows normally again."""
        self._apply(frozenset(), frozenset(), {}, 0.0)

    def set_drop_to(self, peers: Iterable[str]) -> None:
        """Drop everything this node sends to `peers` (replaces the previous set)."""
        self._apply(_peer_set("drop_to", peers), self._drop_from, self._delay_to,
                    self._drop_probability)

    def set_drop_from(self, peers: Iterable[str]) -> None:
        """Drop everything this node receives from `peers` (replaces the previous set)."""
        self._apply(self._drop_to, _peer_set("drop_from", peers), self._delay_to,
                    self._drop_probability)

    def set_delay(self, peer: str, ms: float, jitter_ms: float = 0.0) -> None:
        """Delay messages to `peer` ("*" = every peer) by `ms` + U(0, `jitter_ms`)."""
        _check_peer_id("delay_to key", peer)
        delays = dict(self._delay_to)
        delays[peer] = _delay(f"delay_to.{peer}", {"ms": ms, "jitter_ms": jitter_ms})
        self._apply(self._drop_to, self._drop_from, delays, self._drop_probability)

    def clear_delay(self, peer: str) -> None:
        """Remove the delay rule of `peer` (if any)."""
        delays = {key: value for key, value in self._delay_to.items() if key != peer}
        self._apply(self._drop_to, self._drop_from, delays, self._drop_probability)

    def set_drop_probability(self, probability: float) -> None:
        """Drop each outbound message with this probability (0 disables)."""
        self._apply(self._drop_to, self._drop_from, self._delay_to,
                    _probability("drop_probability", probability))

    # ---- queries (the transport's hot path) ---------------------------------------------

    @property
    def active(self) -> bool:
        """True when at least one rule is set."""
        return self._active

    @property
    def drop_to(self) -> frozenset[str]:
        return self._drop_to

    @property
    def drop_from(self) -> frozenset[str]:
        return self._drop_from

    @property
    def delay_to(self) -> Mapping[str, Delay]:
        return dict(self._delay_to)

    @property
    def drop_probability(self) -> float:
        return self._drop_probability

    def should_drop_outbound(self, target: str) -> bool:
        """Whether a message this node sends to `target` is lost."""
        if target in self._drop_to:
            return True
        probability = self._drop_probability
        return probability > 0.0 and self._rng.random() < probability

    def should_drop_inbound(self, source: str) -> bool:
        """Whether a message this node receives from `source` is lost."""
        return source in self._drop_from

    def delay_for(self, target: str) -> float:
        """Seconds to hold a message to `target` before sending it (0.0 = none)."""
        delays = self._delay_to
        if not delays:
            return 0.0
        delay = delays.get(target) or delays.get(ANY_PEER)
        if delay is None:
            return 0.0
        jitter = self._rng.random() * delay.jitter_ms if delay.jitter_ms else 0.0
        return (delay.ms + jitter) / 1000.0

    def __repr__(self) -> str:
        return f"FaultRules({self.to_json()!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, FaultRules):
            return NotImplemented
        return self.to_json() == other.to_json()

    __hash__ = None  # type: ignore[assignment]  # mutable

    # ---- internals ----------------------------------------------------------------------

    def _apply(
        self,
        drop_to: frozenset[str],
        drop_from: frozenset[str],
        delay_to: dict[str, Delay],
        drop_probability: float,
    ) -> None:
        self._drop_to = drop_to
        self._drop_from = drop_from
        self._delay_to = delay_to
        self._drop_probability = drop_probability
        self._active = bool(drop_to or drop_from or delay_to or drop_probability > 0.0)


def _check_peer_id(field: str, value: object) -> None:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"fault_rules.{field}: peer ids must be non-empty strings, got "
                          f"{value!r}")


def _peer_list(field: str, value: object) -> frozenset[str]:
    if not isinstance(value, list | tuple):
        raise ConfigError(f"fault_rules.{field}: must be a list of peer ids, got "
                          f"{type(value).__name__}")
    return _peer_set(field, value)


def _peer_set(field: str, values: Iterable[object]) -> frozenset[str]:
    if isinstance(values, str):
        raise ConfigError(f"fault_rules.{field}: must be a list of peer ids, not a string")
    peers = []
    for position, value in enumerate(values):
        _check_peer_id(f"{field}[{position}]", value)
        peers.append(str(value))
    return frozenset(peers)


def _milliseconds(field: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"fault_rules.{field}: must be a number of milliseconds, got "
                          f"{value!r}")
    number = float(value)
    if not math.isfinite(number) or not 0.0 <= number <= MAX_DELAY_MS:
        raise ConfigError(f"fault_rules.{field}: must be in [0, {MAX_DELAY_MS:g}] ms, got "
                          f"{value!r}")
    return number


def _delay(field: str, raw: object) -> Delay:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"fault_rules.{field}: must be an object {{ms, jitter_ms}}, got "
                          f"{type(raw).__name__}")
    unknown = set(raw) - _DELAY_KEYS
    if unknown:
        raise ConfigError(f"fault_rules.{field}: unknown field(s) "
                          f"{', '.join(sorted(map(str, unknown)))} (known: jitter_ms, ms)")
    if "ms" not in raw:
        raise ConfigError(f"fault_rules.{field}.ms: missing")
    return Delay(ms=_milliseconds(f"{field}.ms", raw["ms"]),
                 jitter_ms=_milliseconds(f"{field}.jitter_ms", raw.get("jitter_ms", 0.0)))


def _probability(field: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"fault_rules.{field}: must be a number in [0, 1], got {value!r}")
    number = float(value)
    if not 0.0 <= number <= 1.0:  # also refuses NaN
        raise ConfigError(f"fault_rules.{field}: must be in [0, 1], got {value!r}")
    return number
