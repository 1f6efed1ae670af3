"""Time to full redundancy, on synthetic /status answers: when the cluster counts as fully
redundant, and how each fault's loss and restoration are told."""

from __future__ import annotations

from typing import Any

from phalanx.chaos.redundancy import (
    LAG_LIMIT_ENTRIES,
    Observation,
    assess,
    newest_status,
    per_fault,
    replica_counts,
    summary,
    transitions,
)
from phalanx.chaos.result import redundancy_result
from phalanx.chaos.watch import convergence_key

NODES = ("n1", "n2", "n3", "n4")


def status(node: str, *, version: int = 7, dead: tuple[str, ...] = (),
           shards: list[dict[str, Any]] | None = None,
           leads: dict[int, dict[str, int]] | None = None,
           applied: int = 40) -> dict[str, Any]:
    """One node's /status: two shards (1 on n1-n3 led by n1, 2 on n2-n4 led by n2) unless
    told otherwise; `leads` = the shards this node leads, with the lag it reports."""
    if shards is None:
        shards = [{"id": 1, "replicas": ["n1", "n2", "n3"], "voters": ["n1", "n2", "n3"],
                   "learners": [], "leader": "n1"},
                  {"id": 2, "replicas": ["n2", "n3", "n4"], "voters": ["n2", "n3", "n4"],
                   "learners": [], "leader": "n2"}]
    shards = [dict(shard) for shard in shards]
    local: dict[str, Any] = {}
    for shard in shards:
        shard["fully_replicated"] = (set(shard["voters"]) == set(shard["replicas"])
                                     and not shard["learners"]
                                     and not set(shard["replicas"]) & set(dead))
        if node in shard["voters"]:
            role = "leader" if leads and shard["id"] in leads else "follower"
            local[str(shard["id"])] = {"role": role, "term": 3, "leader": shard["leader"],
                                       "applied_index": applied, "commit_index": applied}
            if role == "leader" and leads is not None:
                shard["lag"] = leads[shard["id"]]
    return {"node": node, "map_version": version, "survival_goal": "zone",
            "nodes": [{"id": n, "state": "dead" if n in dead else "alive"} for n in NODES],
            "shards": shards, "local": local,
            "fully_replicated": all(s["fully_replicated"] for s in shards)}


def healthy(**changes: Any) -> dict[str, dict[str, Any] | None]:
    return {"n1": status("n1", leads={1: {"n2": 0, "n3": 2}}, **changes),
            "n2": status("n2", leads={2: {"n3": 1, "n4": 0}}, **changes),
            "n3": status("n3", **changes), "n4": status("n4", **changes)}


def test_a_healthy_cluster_is_fully_redundant() -> None:
    observation = assess(healthy(), 1.0)
    assert observation.full and observation.reason == ""
    assert observation.map_version == 7 and observation.dead == ()
    assert dict(observation.replicas) == {1: ("n1", "n2", "n3"), 2: ("n2", "n3", "n4")}
    assert replica_counts(newest_status(healthy())) == {"n1": 1, "n2": 2, "n3": 2, "n4": 1}


def test_a_silent_voter_is_a_loss_even_while_the_map_still_calls_it_alive() -> None:
    statuses = healthy()
    statuses["n3"] = None  # killed: the map says alive for dead_after_ms
    observation = assess(statuses, 2.0)
    assert not observation.full
    assert "n3 do not answer" in observation.reason


def test_a_replica_that_has_not_caught_up_adds_no_redundancy() -> None:
    statuses = healthy()
    statuses["n2"] = status("n2", leads={2: {"n3": 1, "n4": LAG_LIMIT_ENTRIES + 1}})
    observation = assess(statuses, 3.0)
    assert not observation.full
    assert f"n4 is {LAG_LIMIT_ENTRIES + 1} entries behind leader n2" in observation.reason
    statuses["n2"] = status("n2", leads={2: {"n3": 1, "n4": LAG_LIMIT_ENTRIES}})
    assert assess(statuses, 3.0).full


def test_a_shard_without_a_leader_is_not_redundant() -> None:
    statuses = healthy()
    statuses["n1"] = status("n1")  # leads nothing any more (an election is running)
    assert assess(statuses, 1.0).reason == "shard 1: no leader"


def test_the_newest_map_decides_and_dead_replicas_or_moves_are_losses() -> None:
    # n1 was declared dead and shard 1 re-placed on n4: n4 is still a learner.
    moving = [{"id": 1, "replicas": ["n4", "n2", "n3"], "voters": ["n1", "n2", "n3"],
               "learners": ["n4"], "leader": "n2"},
              {"id": 2, "replicas": ["n2", "n3", "n4"], "voters": ["n2", "n3", "n4"],
               "learners": [], "leader": "n2"}]
    statuses: dict[str, dict[str, Any] | None] = {
        "n1": None, "n2": status("n2", version=9, dead=("n1",), shards=moving,
                                 leads={1: {"n3": 0, "n4": 900}, 2: {"n3": 0, "n4": 0}}),
        "n3": status("n3", version=9, dead=("n1",), shards=moving),
        "n4": status("n4", version=8)}  # an older map copy that still looks healthy
    observation = assess(statuses, 5.0)
    assert not observation.full and observation.map_version == 9
    assert observation.dead == ("n1",)
    assert observation.reason == \
        "shard 1: voters n1,n2,n3 are not the desired n4,n2,n3, learners n4"
    done = [{"id": 1, "replicas": ["n4", "n2", "n3"], "voters": ["n2", "n3", "n4"],
             "learners": [], "leader": "n2"}, moving[1]]
    statuses = {"n1": None,
                "n2": status("n2", version=12, dead=("n1",), shards=done,
                             leads={1: {"n3": 0, "n4": 3}, 2: {"n3": 0, "n4": 0}}),
                "n3": status("n3", version=12, dead=("n1",), shards=done),
                "n4": status("n4", version=12, dead=("n1",), shards=done)}
    assert assess(statuses, 8.0).full  # the lost node is no voter any more: healed
    assert not assess({"n1": None, "n2": None}, 1.0).full


def observations(*states: tuple[float, bool]) -> list[Observation]:
    return [Observation(at, full, "" if full else "why not") for at, full in states]


def test_time_to_full_redundancy_counts_from_the_fault_and_never_before_the_heal() -> None:
    seen = observations((0.0, True), (4.0, True), (4.2, False), (6.0, False), (6.5, True),
                        (9.0, False), (9.4, True), (12.0, True))
    # A restart at 9.2: full again at 9.4, 5.4 s after the kill at 4.0. The full observation at
    # 6.5 (the map still calling the killed node alive, say) does not count before the heal.
    (entry,) = per_fault([(4.0, 9.2)], seen, until_s=20.0)
    assert entry == {"lost_at_s": 4.0, "healed_at_s": 9.2, "lost": True, "restored_at_s": 9.4,
                     "seconds": 5.4, "after_heal_s": 0.2, "reason": None}
    # A node lost for good never heals: the first full observation after the loss counts.
    (lost,) = per_fault([(4.0, None)], seen, until_s=20.0)
    assert (lost["restored_at_s"], lost["seconds"], lost["after_heal_s"]) == (6.5, 2.5, None)


def test_faults_that_never_lost_or_never_regained_redundancy_say_why() -> None:
    steady = observations((1.0, True), (2.0, True), (3.0, True))
    (never,) = per_fault([(1.5, 2.5)], steady, until_s=10.0)
    assert never["lost"] is False and never["seconds"] is None
    assert never["reason"] == "redundancy was never seen lost"
    broken = [Observation(5.0, False, "shard 1: no leader"),
              Observation(6.0, False, "shard 1: no leader")]
    first, second = per_fault([(1.0, 2.0), (4.0, None)], [*steady, *broken], until_s=7.0)
    assert first["lost"] is False  # bounded by the next fault at 4.0
    assert second["restored_at_s"] is None
    assert second["reason"] == "not restored before the end of the run (shard 1: no leader)"
    one, _two = per_fault([(1.0, None), (2.5, None)],
                          observations((1.2, False), (2.0, False), (2.6, True)), until_s=9.0)
    assert one["reason"].startswith("not restored before the next fault")
    (nothing,) = per_fault([(8.0, None)], steady, until_s=9.0)
    assert nothing["lost"] is None and nothing["reason"] == "no observation after the fault"


def test_summary_and_transitions() -> None:
    assert summary([{"seconds": 2.0}, {"seconds": None}, {"seconds": 5.0}, {"seconds": 4.0}]) \
        == {"median_s": 4.0, "max_s": 5.0}
    assert summary([{"seconds": None}]) == {"median_s": None, "max_s": None}
    seen = observations((0.0, True), (1.0, True), (2.0, False), (3.0, False), (4.0, True))
    assert transitions(seen) == [(0.0, True, ""), (2.0, False, "why not"), (4.0, True, "")]


def test_the_result_part_is_bounded_by_the_run() -> None:
    from phalanx.chaos.nemesis import Fault

    fault = Fault(3.0, None, "node-lost", ["n1"], "n1 lost")
    seen = observations((0.0, True), (3.2, False), (9.0, False), (31.0, True))
    part = redundancy_result([fault], seen, duration_s=30.0)
    (entry,) = part["faults"]
    assert entry["kind"] == "node-lost" and entry["targets"] == ["n1"]
    assert entry["restored_at_s"] is None  # restored only after the run: not counted
    assert entry["reason"] == "not restored before the end of the run (why not)"
    assert part["final"] == {"at_s": 9.0, "full": False, "reason": "why not"}
    assert part["median_s"] is None and part["poll_interval_s"] > 0


def test_convergence_needs_every_shard_settled_on_its_voters_only() -> None:
    statuses = healthy()
    key = convergence_key(statuses)
    assert key == (("1", "n1", 3, 40), ("2", "n2", 3, 40))
    behind = dict(statuses)
    behind["n3"] = status("n3", applied=39)
    assert convergence_key(behind) is None
    down = dict(statuses)
    down["n4"] = None
    assert convergence_key(down) is None
    # A node lost for good is left out (it still answers nothing).
    assert convergence_key(down, exclude=frozenset({"n4"})) == key
    # Nodes without a shard map: the top-level leader, term and indexes.
    flat = {n: {"leader": "n1", "term": 2, "applied_index": 9, "commit_index": 9}
            for n in NODES}
    assert convergence_key(flat) == ("n1", 2, 9)


def test_the_next_fault_bounds_the_search_from_when_its_injection_began() -> None:
    # The next outage's first kill (at 9.6) comes before it is fully in force (9.9): what is
    # seen from 9.6 on belongs to it, not to the first fault.
    seen = observations((4.2, False), (9.5, False), (9.7, True), (10.0, False))
    first, _second = per_fault([(4.0, 9.0), (9.9, 12.0)], seen, until_s=20.0, began=[3.9, 9.6])
    assert first["restored_at_s"] is None
    assert first["reason"] == "not restored before the next fault (why not)"
    first, _second = per_fault([(4.0, 9.0), (9.9, 12.0)], seen, until_s=20.0)
    assert first["restored_at_s"] == 9.7  # without the start of injection, only at_s bounds it


def test_a_fault_repaired_while_in_force_counts_its_restoration_before_the_heal() -> None:
    """A failed disk whose replica is rebuilt on another node restores redundancy while the
    disk is still broken: with heal_needed False the restoration counts when it happens;
    with the default it is only counted once the fault is healed."""
    from phalanx.chaos.redundancy import Observation, per_fault

    observations = [Observation(at, full) for at, full in
                    ((1.0, True), (2.5, False), (4.0, True), (9.0, True))]
    waiting = per_fault([(2.0, 8.0)], observations, 10.0)[0]
    assert waiting["restored_at_s"] == 9.0 and waiting["after_heal_s"] == 1.0
    repaired = per_fault([(2.0, 8.0)], observations, 10.0, heal_needed=[False])[0]
    assert repaired["restored_at_s"] == 4.0 and repaired["seconds"] == 2.0
    assert repaired["after_heal_s"] == -4.0
