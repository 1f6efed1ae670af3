"""The Grafana dashboard shipped in deploy/grafana: valid, and every metric it queries exists."""

from __future__ import annotations

import json
import re
from pathlib import Path

from phalanx.server.metrics import NodeMetrics

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "phalanx.json"


def exported_sample_names() -> set[str]:
    """Every sample name a node's /metrics can carry (counters end in _total, histograms in
    _bucket/_sum/_count), from the real registry."""
    metrics = NodeMetrics("n1", process_metrics=False)
    names: set[str] = set()
    for family in metrics.registry.collect():
        if family.type == "counter":
            names |= {family.name + "_total", family.name + "_created"}
        elif family.type == "histogram":
            names |= {family.name + suffix for suffix in ("_bucket", "_sum", "_count")}
        else:
            names.add(family.name)
    return names


def test_dashboard_is_valid_and_queries_only_real_metrics() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["title"] == "phalanx" and dashboard["panels"]
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    exported = exported_sample_names()
    queried: set[str] = set()
    for panel in dashboard["panels"]:
        assert panel["targets"], f"panel {panel['title']!r} has no query"
        for target in panel["targets"]:
            queried |= set(re.findall(r"\bphalanx_[a-z_]+", target["expr"]))
    unknown = queried - exported
    assert not unknown, f"the dashboard queries metrics no node exports: {sorted(unknown)}"
    # The operator's list from the operations issue is covered.
    for needed in ("phalanx_raft_term", "phalanx_raft_leader_changes_total",
                   "phalanx_raft_elections_started_total", "phalanx_raft_proposals_total",
                   "phalanx_raft_commit_latency_seconds_bucket",
                   "phalanx_storage_fsync_latency_seconds_bucket",
                   "phalanx_raft_replication_lag_entries", "phalanx_raft_snapshots_sent_total",
                   "phalanx_resp_commands_total", "phalanx_resp_errors_total",
                   "phalanx_resp_connections", "phalanx_raft_is_leader"):
        assert needed in queried, needed


def test_the_check_catches_a_wrong_metric_name() -> None:
    assert "phalanx_raft_term" in exported_sample_names()
    assert "phalanx_raft_terms" not in exported_sample_names()
