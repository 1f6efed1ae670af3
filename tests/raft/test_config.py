"""RaftConfig validation: every broken rule is refused when the config is built, and the error
names the rule (§5.2 "broadcastTime << electionTimeout"; diss. §6.4.1 leases need CheckQuorum)."""

from __future__ import annotations

from typing import Any

import pytest

from phalanx.errors import ConfigError
from phalanx.raft import RaftConfig


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"node_id": ""}, "node_id must not be empty"),
        ({"heartbeat_ticks": 0}, "heartbeat_ticks must be > 0"),
        ({"election_ticks": 5, "heartbeat_ticks": 5}, "election_ticks must be > heartbeat_ticks"),
        ({"lease_reads": True, "check_quorum": False}, "lease_reads needs check_quorum"),
        ({"lease_margin_ticks": -1}, r"lease_margin_ticks must be in \[0, election_ticks\)"),
        ({"lease_margin_ticks": 50}, r"lease_margin_ticks must be in \[0, election_ticks\)"),
        ({"max_message_bytes": 0}, "max_message_bytes must be > 0"),
        ({"max_inflight_messages": 0}, "max_inflight_messages must be > 0"),
        ({"max_applying_bytes": 0}, "max_applying_bytes must be > 0"),
        ({"applied": -1}, "applied must be >= 0"),
        ({"election_spread_ticks": 4, "heartbeat_ticks": 5},
         r"election_spread_ticks must be 0 \(election_ticks\) or >= heartbeat_ticks"),
    ],
)
def test_invalid_config_names_the_rule(overrides: dict[str, Any], message: str) -> None:
    """§5.2: the election timeout must exceed the heartbeat interval; diss. §6.4.1: a lease is
    only safe with CheckQuorum; sizes and windows must be positive."""
    settings: dict[str, Any] = {"node_id": "n1", **overrides}
    with pytest.raises(ConfigError, match=message):
        RaftConfig(**settings)


def test_default_config_is_valid_and_randomness_is_injected() -> None:
    """§5.2: randomized timeouts come from the injected `random.Random`, never module state."""
    first, second = RaftConfig(node_id="n1"), RaftConfig(node_id="n1")
    assert first.election_ticks > first.heartbeat_ticks
    assert first.random is not second.random
    assert first.random.random() == second.random.random()  # both seeded with 0
