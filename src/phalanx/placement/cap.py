"""`phalanx analyze` speaks CAP: per keyspace mode, what a region loss or a region partition
does to availability and to data, and what each mode costs (issue 18 item 5;
docs/active-active.md).

The two modes (Brewer's CAP; Gilbert & Lynch, "Brewer's conjecture and the feasibility of
consistent, available, partition-tolerant web services", 2002):
- **strong** keys choose consistency: with a home region (`aa_strong_home`) one cluster holds
  them and the other regions forward every command there; a region cut off from the home
  refuses them (CP). Without a home each region's strong keys are its own, not replicated
  across regions.
- **active-active** keys choose availability: every region keeps a whole copy, accepts reads
  and writes locally, and pulls the others' deltas every `aa_poll_ms` (AP); a partition makes
  the regions diverge until the heal, and losing a region loses what it acknowledged but no
  other region had pulled yet: the RPO, about the write rate times one pull interval plus a
  pull's round trip while the link is up, everything written since the cut while it is not.

Rules of this file:
- Pure and deterministic: standard library only; numbers in, a JSON-able dict out.
- Availability figures use the same independence model as `placement.analysis` (a region is up
  with probability `region_availability`), and are labelled as estimates.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from phalanx.placement.analysis import nines

#: Bytes on the wire of one replicated delta (a small INCRBY/SADD/SET delta with its key,
#: dot and clock, framed in RESP); a documented estimate, not a measurement.
DELTA_BYTES = 96


def cap_analysis(*, region: str, regions: Sequence[str], strong_home: str,
                 prefixes: Sequence[str], shards: int, replicas_per_shard: float,
                 home_survival_goal: str = "zone", poll_ms: int = 100,
                 pull_rtt_ms: float = 0.0, write_rate: float | None = None,
                 region_availability: float = 0.9999) -> dict[str, object]:
    """The CAP report of one active-active topology (module docstring).

    `regions`: every region's name (this one included); `write_rate`: active-active writes per
    second in one region (None: RPO in seconds only); `pull_rtt_ms`: the inter-region round
    trip (0 on loopback)."""
    others = [name for name in regions if name != region]
    count = len(regions)
    window_s = (poll_ms + pull_rtt_ms) / 1000.0
    p_region = region_availability
    local_down = 1.0 - p_region
    home = strong_home or ""
    at_home = not home or home == region
    # A strong command from here needs this region and the home region (and the link).
    strong_down = local_down if at_home else 1.0 - p_region * p_region
    spans_regions = home_survival_goal == "region"
    rpo_linked: dict[str, object] = {"seconds": round(window_s, 3)}
    if write_rate is not None:
        rpo_linked["writes"] = round(write_rate * window_s, 1)
    strong: dict[str, object] = {
        "mode": "strong (consistency: CP)",
        "home_region": home or None,
        "partition": (
            f"a region cut off from the home {home} refuses strong commands (-CLUSTERDOWN); "
            f"the home keeps serving them; nothing diverges"
            if home else "each region serves its own strong keys; they are not replicated "
                         "across regions, so nothing crosses a partition"),
        "available_here_during_partition": bool(at_home),
        "region_loss": {
            "other_region": "RPO 0: every acknowledged strong write is in the home region"
            if home else "that region's strong keys are lost (not replicated across regions)",
            "home_region": ("RPO 0 and served again after an election: the home cluster "
                            "keeps a quorum across regions (survival goal region)"
                            if spans_regions else
                            "unavailable until the home region returns; if its disks are "
                            "destroyed its strong keys are lost (run the home cluster with "
                            "survival_goal = region to survive that)"),
        },
        "write_availability_estimate": {"availability": 1.0 - strong_down,
                                        "nines": nines(strong_down)},
        "cost": {
            "replicas_per_shard": replicas_per_shard,
            "copies_of_each_key": replicas_per_shard,
            "cross_region": ("none from the home region; from another region every strong "
                             "command and its reply cross the WAN once each, adding one "
                             "inter-region round trip to its latency" if home else "none"),
        },
    }
    per_write_bytes = DELTA_BYTES * (count - 1)
    active_active: dict[str, object] = {
        "mode": "active-active (availability: AP)",
        "prefixes": list(prefixes),
        "partition": ("every region keeps reading and writing its copy; the sides diverge "
                      "and converge without operator help after the heal (CRDT merges: "
                      "counters count every increment, sets add-wins, strings last writer "
                      "wins)"),
        "available_here_during_partition": True,
        "region_loss": {
            "rpo_while_linked": rpo_linked,
            "rpo_while_cut": "every write acknowledged in the lost region since the cut",
            "survivors": f"{', '.join(others) or 'none'} keep serving everything they had "
                         "pulled",
        },
        "write_availability_estimate": {"availability": 1.0 - local_down,
                                        "nines": nines(local_down)},
        "cost": {
            "replicas_per_shard": replicas_per_shard,
            "copies_of_each_key": round(replicas_per_shard * count, 2),
            "cross_region_bytes_per_write": per_write_bytes,
            "cross_region_bytes_per_s": (round(per_write_bytes * write_rate, 1)
                                         if write_rate is not None else None),
            "pulls_per_s": round((count - 1) * shards * 1000.0 / poll_ms, 1),
        },
    }
    return {"region": region, "regions": list(regions), "shards": shards,
            "strong": strong, "active_active": active_active,
            "assumptions": {"region_availability": region_availability,
                            "poll_ms": poll_ms, "pull_rtt_ms": pull_rtt_ms,
                            "write_rate_per_region": write_rate,
                            "delta_bytes": DELTA_BYTES,
                            "model": "regions fail independently; a strong write from a "
                                     "region other than the home needs both regions up; "
                                     "the RPO while linked is one pull interval plus a "
                                     "pull's round trip of writes (measured by "
                                     "`phalanx chaos regions`)"}}


def format_cap(report: Mapping[str, object]) -> str:
    """The CAP section of `phalanx analyze` as text."""
    regions = report.get("regions")
    names = ", ".join(str(r) for r in regions) if isinstance(regions, list) else "?"
    lines = [f"CAP per keyspace (region {report.get('region')} of {names}):"]
    for key in ("strong", "active_active"):
        mode = report.get(key)
        if not isinstance(mode, Mapping):
            continue
        estimate = mode.get("write_availability_estimate")
        cost = mode.get("cost")
        loss = mode.get("region_loss")
        lines.append(f"  {mode.get('mode')}")
        lines.append(f"    partition: {mode.get('partition')}")
        if isinstance(loss, Mapping):
            for name, text in loss.items():
                lines.append(f"    region loss ({str(name).replace('_', ' ')}): {text}")
        if isinstance(estimate, Mapping):
            lines.append(f"    writes from here: {estimate.get('nines')} nines (estimate)")
        if isinstance(cost, Mapping):
            lines.append("    cost: " + ", ".join(f"{str(name).replace('_', ' ')} {value}"
                                                  for name, value in cost.items()
                                                  if value is not None))
    return "\n".join(lines) + "\n"
