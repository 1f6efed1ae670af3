"""placement/cap: `phalanx analyze` speaks CAP per keyspace mode (issue 18 item 5)."""

from __future__ import annotations

from typing import Any

from phalanx.placement.cap import cap_analysis, format_cap


def _report(region: str, **given: Any) -> dict[str, Any]:
    options: dict[str, Any] = {"regions": ["dc1", "dc2", "dc3"], "strong_home": "dc1",
                               "prefixes": ["aa:"], "shards": 4, "replicas_per_shard": 3.0,
                               "poll_ms": 100, "pull_rtt_ms": 40.0, "write_rate": 500.0}
    options.update(given)
    return cap_analysis(region=region, **options)


def test_strong_keys_refuse_away_from_home_and_active_active_keys_do_not() -> None:
    away, home = _report("dc2"), _report("dc1")
    assert away["strong"]["available_here_during_partition"] is False
    assert home["strong"]["available_here_during_partition"] is True
    assert away["active_active"]["available_here_during_partition"] is True
    # A strong write from dc2 needs two regions up: fewer nines than an active-active write.
    assert (away["strong"]["write_availability_estimate"]["nines"]
            < away["active_active"]["write_availability_estimate"]["nines"])
    assert (home["strong"]["write_availability_estimate"]["nines"]
            == home["active_active"]["write_availability_estimate"]["nines"])


def test_rpo_and_cost_of_active_active() -> None:
    report = _report("dc2")
    rpo = report["active_active"]["region_loss"]["rpo_while_linked"]
    assert rpo == {"seconds": 0.14, "writes": 70.0}             # 500/s x (100 + 40) ms
    cost = report["active_active"]["cost"]
    assert cost["copies_of_each_key"] == 9.0                     # 3 regions x 3 replicas
    assert cost["pulls_per_s"] == 80.0                           # 2 peers x 4 shards x 10/s
    assert cost["cross_region_bytes_per_s"] == 500.0 * 2 * 96
    assert report["strong"]["cost"]["copies_of_each_key"] == 3.0
    assert "RPO 0" in report["strong"]["region_loss"]["other_region"]
    spanning = _report("dc2", home_survival_goal="region")
    assert "RPO 0" in spanning["strong"]["region_loss"]["home_region"]
    assert "lost" in report["strong"]["region_loss"]["home_region"]
    text = format_cap(report)
    assert "strong (consistency: CP)" in text and "active-active (availability: AP)" in text
    assert "rpo while linked" in text


def test_without_a_home_strong_keys_stay_in_each_region() -> None:
    report = _report("dc2", strong_home="", write_rate=None)
    assert report["strong"]["available_here_during_partition"] is True
    assert "not replicated" in report["strong"]["partition"]
    assert "writes" not in report["active_active"]["region_loss"]["rpo_while_linked"]
