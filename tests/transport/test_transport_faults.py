"""Tests of the chaos lab's fault rules: JSON form, validation naming the field, decisions."""

from __future__ import annotations

import random
from typing import Any

import pytest

from phalanx.errors import ConfigError
from phalanx.transport.faults import Delay, FaultRules


def test_empty_rules_are_inactive_and_pass_everything() -> None:
    rules = FaultRules()
    assert not rules.active
    assert not rules.should_drop_outbound("n2")
    assert not rules.should_drop_inbound("n2")
    assert rules.delay_for("n2") == 0.0
    assert rules.to_json() == {"drop_to": [], "drop_from": [], "delay_to": {},
                               "drop_probability": 0.0}
    assert FaultRules.from_json({}) == rules


def test_json_round_trip() -> None:
    data: dict[str, Any] = {
        "drop_to": ["n3", "n2"],
        "drop_from": ["n4"],
        "delay_to": {"n2": {"ms": 100, "jitter_ms": 20}, "*": {"ms": 5}},
        "drop_probability": 0.25,
    }
    rules = FaultRules.from_json(data)
    assert rules.active
    assert rules.drop_to == {"n2", "n3"}
    assert rules.drop_from == {"n4"}
    assert rules.delay_to == {"n2": Delay(100.0, 20.0), "*": Delay(5.0, 0.0)}
    assert rules.drop_probability == 0.25
    again = FaultRules.from_json(rules.to_json())
    assert again == rules
    assert again.to_json() == rules.to_json()
    assert "n2" in repr(rules)


def test_directional_drops() -> None:
    rules = FaultRules.from_json({"drop_to": ["n2"], "drop_from": ["n3"]})
    assert rules.should_drop_outbound("n2")
    assert not rules.should_drop_outbound("n3")
    assert rules.should_drop_inbound("n3")
    assert not rules.should_drop_inbound("n2")


def test_delay_is_fixed_plus_jitter_in_seconds_and_star_is_the_default() -> None:
    rules = FaultRules.from_json(
        {"delay_to": {"n2": {"ms": 100, "jitter_ms": 50}, "*": {"ms": 7}}},
        rng=random.Random(1),
    )
    draws = [rules.delay_for("n2") for _ in range(2000)]
    assert all(0.1 <= draw < 0.15 for draw in draws)
    assert max(draws) - min(draws) > 0.04  # the jitter is really drawn
    assert rules.delay_for("n9") == pytest.approx(0.007)
    rules.clear_delay("*")
    assert rules.delay_for("n9") == 0.0


def test_drop_probability_uses_the_injected_rng() -> None:
    def run(seed: int) -> list[bool]:
        rules = FaultRules.from_json({"drop_probability": 0.3}, rng=random.Random(seed))
        return [rules.should_drop_outbound("n2") for _ in range(5000)]

    first = run(7)
    assert first == run(7)
    assert 0.25 < sum(first) / len(first) < 0.35
    assert not any(FaultRules.from_json({"drop_probability": 0.3}).should_drop_inbound("n2")
                   for _ in range(100))


def test_clear_and_setters() -> None:
    rules = FaultRules()
    rules.set_drop_to(["n2"])
    rules.set_drop_from(["n3"])
    rules.set_delay("n4", 10, 5)
    rules.set_drop_probability(0.5)
    assert rules.active
    assert rules.to_json()["delay_to"] == {"n4": {"ms": 10.0, "jitter_ms": 5.0}}
    rules.clear()
    assert not rules.active
    assert rules == FaultRules()
    rules.set_drop_probability(0.1)
    assert rules.active
    rules.set_drop_probability(0)
    assert not rules.active


def test_update_from_json_replaces_everything() -> None:
    rules = FaultRules.from_json({"drop_to": ["n2"], "delay_to": {"n3": {"ms": 1}}})
    rules.update_from_json({"drop_from": ["n5"]})
    assert rules.to_json() == {"drop_to": [], "drop_from": ["n5"], "delay_to": {},
                               "drop_probability": 0.0}


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"drop_too": ["n2"]}, "fault_rules: unknown field(s) drop_too"),
        ({"drop_to": "n2"}, "fault_rules.drop_to: must be a list"),
        ({"drop_to": [""]}, "fault_rules.drop_to[0]"),
        ({"drop_from": ["n1", 3]}, "fault_rules.drop_from[1]"),
        ({"delay_to": ["n2"]}, "fault_rules.delay_to: must be an object"),
        ({"delay_to": {"n2": 5}}, "fault_rules.delay_to.n2: must be an object"),
        ({"delay_to": {"n2": {}}}, "fault_rules.delay_to.n2.ms: missing"),
        ({"delay_to": {"n2": {"ms": -1}}}, "fault_rules.delay_to.n2.ms: must be in"),
        ({"delay_to": {"n2": {"ms": "5"}}}, "fault_rules.delay_to.n2.ms: must be a number"),
        ({"delay_to": {"n2": {"ms": True}}}, "fault_rules.delay_to.n2.ms: must be a number"),
        ({"delay_to": {"n2": {"ms": float("inf")}}}, "fault_rules.delay_to.n2.ms"),
        ({"delay_to": {"n2": {"ms": 1, "jitter_ms": 1e9}}},
         "fault_rules.delay_to.n2.jitter_ms: must be in"),
        ({"delay_to": {"n2": {"ms": 1, "jiter": 2}}},
         "fault_rules.delay_to.n2: unknown field(s) jiter"),
        ({"drop_probability": 1.5}, "fault_rules.drop_probability: must be in [0, 1]"),
        ({"drop_probability": float("nan")}, "fault_rules.drop_probability"),
        ({"drop_probability": "0.1"}, "fault_rules.drop_probability: must be a number"),
    ],
)
def test_validation_errors_name_the_field(data: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError) as info:
        FaultRules.from_json(data)
    assert field in str(info.value)


def test_a_rejected_update_changes_nothing() -> None:
    rules = FaultRules.from_json({"drop_to": ["n2"]})
    before = rules.to_json()
    with pytest.raises(ConfigError):
        rules.update_from_json({"drop_to": ["n3"], "drop_probability": 2})
    with pytest.raises(ConfigError):
        rules.set_delay("n2", -5)
    with pytest.raises(ConfigError):
        rules.set_drop_from("n3")  # a string is not a list of ids
    assert rules.to_json() == before


def test_not_an_object() -> None:
    with pytest.raises(ConfigError, match="fault_rules: must be an object"):
        FaultRules.from_json([])  # type: ignore[arg-type]


def test_rules_are_mutable_so_not_hashable() -> None:
    with pytest.raises(TypeError):
        hash(FaultRules())
