"""A region link that is down shows it (server/aa_link.py `RegionState.view`): its lag grows
in seconds from the last moment it was known caught up, and in entries by what this region
wrote since its last good round; an up link reports its measured lag (0 when caught up)."""

from __future__ import annotations

from phalanx.server.aa_link import RegionState, _count_unshipped


def test_a_down_link_reports_a_growing_lag_not_zero() -> None:
    state = RegionState("eu", started=100.0)
    # Connecting, never up: the lag counts from the start.
    assert state.view(103.0)["lag_seconds"] == 3.0
    # A good round, caught up on both remote shards at t=110; local outbox heads recorded.
    state.state, state.last_ok = "up", 110.0
    state.lag_entries = {(1, 1): 0, (1, 2): 0}
    state.caught_up_at = {(1, 1): 110.0, (1, 2): 110.0}
    state.local_heads_at_ok = {1: 40}
    view = state.view(115.0)
    assert (view["lag_entries"], view["lag_seconds"]) == (0, 0.0)
    # The link goes down; this region keeps writing (outbox head 40 -> 55 -> 70).
    state.state = "down"
    _count_unshipped(state, {1: 55})
    first = state.view(120.0)
    _count_unshipped(state, {1: 70})
    later = state.view(130.0)
    assert first["state"] == later["state"] == "down"
    assert (first["lag_entries"], first["lag_seconds"]) == (15, 10.0)
    assert (later["lag_entries"], later["lag_seconds"]) == (30, 20.0)
    # A shard first led while down counts from then.
    _count_unshipped(state, {1: 70, 2: 5})
    _count_unshipped(state, {1: 70, 2: 9})
    assert state.view(130.0)["lag_entries"] == 34
    # Back up and caught up: the measured lag again.
    state.state, state.unshipped_entries = "up", 0
    state.caught_up_at = {(1, 1): 131.0, (1, 2): 131.0}
    assert (state.view(131.5)["lag_entries"], state.view(131.5)["lag_seconds"]) == (0, 0.0)


def test_a_link_of_a_node_that_leads_no_shard_has_no_lag() -> None:
    state = RegionState("eu", started=0.0, state="idle (leads no shard)")
    assert (state.view(1_000.0)["lag_entries"], state.view(1_000.0)["lag_seconds"]) == (0, 0.0)
