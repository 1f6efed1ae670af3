"""Tests of the node's Prometheus metrics: every family is exported with its name, the update
methods move the right series, label values a client controls stay bounded, and registries of
two nodes do not clash."""

from __future__ import annotations

import logging

import pytest
from prometheus_client.parser import text_string_to_metric_families

from phalanx.server import metrics as metrics_module
from phalanx.server.metrics import CONTENT_TYPE, NodeMetrics

FAMILIES = [
    "phalanx_node_info",
    "phalanx_raft_term",
    "phalanx_raft_is_leader",
    "phalanx_raft_leader_changes",
    "phalanx_raft_elections_started",
    "phalanx_raft_elections_won",
    "phalanx_raft_proposals",
    "phalanx_raft_proposals_failed",
    "phalanx_raft_commit_index",
    "phalanx_raft_applied_index",
    "phalanx_raft_commit_latency_seconds",
    "phalanx_raft_apply_batch_size",
    "phalanx_raft_replication_lag_entries",
    "phalanx_raft_snapshots_sent",
    "phalanx_raft_snapshots_taken",
    "phalanx_raft_snapshot_duration_seconds",
    "phalanx_raft_read_index_latency_seconds",
    "phalanx_keys",
    "phalanx_storage_fsync_latency_seconds",
    "phalanx_storage_fsync_batch_entries",
    "phalanx_resp_commands",
    "phalanx_resp_errors",
    "phalanx_resp_connections",
    "phalanx_resp_connections_accepted",
    "phalanx_peer_messages_sent",
    "phalanx_peer_messages_dropped",
    "phalanx_peer_connected",
]


def samples(metrics: NodeMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a render, by (name, sorted labels)."""
    found = {}
    for family in text_string_to_metric_families(metrics.render().decode()):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def families(metrics: NodeMetrics) -> set[str]:
    return {family.name for family in text_string_to_metric_families(metrics.render().decode())}


def test_every_family_is_exported() -> None:
    metrics = NodeMetrics("n1")
    assert CONTENT_TYPE.startswith("text/plain; version=0.0.4")
    exported = families(metrics)
    missing = set(FAMILIES) - exported
    assert not missing
    assert "process_resident_memory_bytes" in metrics.render().decode()
    assert samples(metrics)[("phalanx_node_info", (("node", "n1"),))] == 1.0


def test_group_updates_move_their_series() -> None:
    metrics = NodeMetrics("n1", process_metrics=False)
    group = metrics.group(3)
    assert metrics.group("3") is group  # cached, int and str ids agree
    g = (("group", "3"),)
    group.set_term(7)
    group.set_leader(True)
    group.leader_changed()
    group.election_started()
    group.election_started()
    group.election_won()
    group.proposed()
    group.proposed(4)
    group.proposal_failed("not_leader")
    group.proposal_failed("not_leader")
    group.set_commit_index(120)
    group.set_applied_index(118)
    group.observe_commit(0.0004)
    group.observe_commit(0.02)
    group.observe_apply_batch(16)
    group.observe_read_index(0.001)
    group.set_keys(42)
    group.observe_fsync(0.003, 12)
    group.snapshot_sent()
    group.snapshot_taken(0.5)
    group.set_replication_lag("n2", 9)
    found = samples(metrics)
    assert found[("phalanx_raft_term", g)] == 7
    assert found[("phalanx_raft_is_leader", g)] == 1
    assert found[("phalanx_raft_leader_changes_total", g)] == 1
    assert found[("phalanx_raft_elections_started_total", g)] == 2
    assert found[("phalanx_raft_elections_won_total", g)] == 1
    assert found[("phalanx_raft_proposals_total", g)] == 5
    assert found[("phalanx_raft_proposals_failed_total", (*g, ("reason", "not_leader")))] == 2
    assert found[("phalanx_raft_commit_index", g)] == 120
    assert found[("phalanx_raft_applied_index", g)] == 118
    assert found[("phalanx_raft_commit_latency_seconds_count", g)] == 2
    assert found[("phalanx_raft_commit_latency_seconds_bucket", (*g, ("le", "0.0005")))] == 1
    assert found[("phalanx_raft_apply_batch_size_sum", g)] == 16
    assert found[("phalanx_raft_read_index_latency_seconds_count", g)] == 1
    assert found[("phalanx_keys", g)] == 42
    assert found[("phalanx_storage_fsync_latency_seconds_count", g)] == 1
    assert found[("phalanx_storage_fsync_batch_entries_sum", g)] == 12
    assert found[("phalanx_raft_snapshots_sent_total", g)] == 1
    assert found[("phalanx_raft_snapshots_taken_total", g)] == 1
    assert found[("phalanx_raft_snapshot_duration_seconds_sum", g)] == 0.5
    assert found[("phalanx_raft_replication_lag_entries", (*g, ("peer", "n2")))] == 9

    group.set_leader(False)
    group.clear_replication_lag()
    found = samples(metrics)
    assert found[("phalanx_raft_is_leader", g)] == 0
    assert ("phalanx_raft_replication_lag_entries", (*g, ("peer", "n2"))) not in found


def test_remove_group_drops_its_series() -> None:
    metrics = NodeMetrics("n1", process_metrics=False)
    metrics.group(1).observe_commit(0.01)
    metrics.group(1).proposal_failed("timeout")
    metrics.group(1).set_replication_lag("n3", 1)
    metrics.group(2).set_term(4)
    metrics.remove_group(1)
    metrics.remove_group(99)  # unknown: nothing to do
    labelled = [key for key in samples(metrics) if ("group", "1") in key[1]]
    assert labelled == []
    assert samples(metrics)[("phalanx_raft_term", (("group", "2"),))] == 4


def test_resp_and_peer_metrics() -> None:
    metrics = NodeMetrics("n1", process_metrics=False)
    for name in ("GET", "get", "Get", "SET"):
        metrics.command(name)
    metrics.resp_error("WRONGTYPE")
    metrics.connection_opened()
    metrics.connection_opened()
    metrics.connection_closed()
    metrics.peer_message_sent("n2")
    metrics.peer_message_sent("n2", 10)
    metrics.peer_message_dropped("n3", "queue_full", 2)
    metrics.set_peer_connected("n2", True)
    metrics.set_peer_connected("n3", False)
    found = samples(metrics)
    assert found[("phalanx_resp_commands_total", (("command", "get"),))] == 3
    assert found[("phalanx_resp_commands_total", (("command", "set"),))] == 1
    assert found[("phalanx_resp_errors_total", (("kind", "wrongtype"),))] == 1
    assert found[("phalanx_resp_connections", ())] == 1
    assert found[("phalanx_resp_connections_accepted_total", ())] == 2
    assert found[("phalanx_peer_messages_sent_total", (("peer", "n2"),))] == 11
    assert found[("phalanx_peer_messages_dropped_total",
                  (("peer", "n3"), ("reason", "queue_full")))] == 2
    assert found[("phalanx_peer_connected", (("peer", "n2"),))] == 1
    assert found[("phalanx_peer_connected", (("peer", "n3"),))] == 0


def test_client_controlled_labels_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(metrics_module, "MAX_LABEL_VALUES", 3)
    metrics = NodeMetrics("n1", process_metrics=False)
    for name in ("a", "b", "c", "junk1", "junk2", "a", "JUNK1"):
        metrics.command(name)
    commands = {labels[0][1]: value for (name, labels), value in samples(metrics).items()
                if name == "phalanx_resp_commands_total"}
    assert commands == {"a": 2, "b": 1, "c": 1, "other": 3}


def test_two_nodes_in_one_process_do_not_clash() -> None:
    first, second = NodeMetrics("n1"), NodeMetrics("n2")
    first.group(0).set_term(5)
    assert ("phalanx_raft_term", (("group", "0"),)) not in samples(second)
    second.group(0).set_term(9)
    assert samples(first)[("phalanx_raft_term", (("group", "0"),))] == 5
    assert samples(second)[("phalanx_raft_term", (("group", "0"),))] == 9


def test_render_hooks_run_and_a_failing_hook_does_not_fail_the_scrape(
        caplog: pytest.LogCaptureFixture) -> None:
    metrics = NodeMetrics("n1", process_metrics=False)
    keys = iter(range(10, 100))

    def refresh() -> None:
        metrics.group(0).set_keys(next(keys))

    def broken() -> None:
        raise RuntimeError("boom")

    metrics.add_render_hook(refresh)
    metrics.add_render_hook(broken)
    with caplog.at_level(logging.ERROR, logger="phalanx.server.metrics"):
        assert samples(metrics)[("phalanx_keys", (("group", "0"),))] == 10
        assert samples(metrics)[("phalanx_keys", (("group", "0"),))] == 11
    assert any("render hook failed" in record.getMessage() for record in caplog.records)


def test_families_export_exactly_what_prometheus_client_exports(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Our lock-free families turn into the very samples of prometheus_client's own Counter,
    Gauge and Histogram fed the same updates (bucket edges, `_created`, order, removal)."""
    import random

    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

    monkeypatch.setattr(metrics_module.time, "time", lambda: 1700000000.25)
    monkeypatch.setattr("prometheus_client.metrics.time.time", lambda: 1700000000.25)
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    buckets = metrics_module.LATENCY_BUCKETS_SECONDS
    pairs = [
        (metrics_module._Counter("c", "a counter", ("g",), registry=ours),
         Counter("c", "a counter", ("g",), registry=theirs)),
        (metrics_module._Gauge("ga", "a gauge", ("g", "p"), registry=ours),
         Gauge("ga", "a gauge", ("g", "p"), registry=theirs)),
        (metrics_module._Histogram("h", "a histogram", ("g",), buckets=buckets, registry=ours),
         Histogram("h", "a histogram", ("g",), buckets=buckets, registry=theirs)),
        (metrics_module._Histogram("b", "sizes", ("g",), buckets=metrics_module.BATCH_BUCKETS,
                                   registry=ours),
         Histogram("b", "sizes", ("g",), buckets=metrics_module.BATCH_BUCKETS,
                   registry=theirs)),
    ]
    plain_ours = metrics_module._Counter("plain", "no labels", registry=ours)
    plain_theirs = Counter("plain", "no labels", registry=theirs)
    rng = random.Random(7)
    edges = [*buckets, 0.0, 1e-9, 20.0, *(bound * (1 + 1e-12) for bound in buckets)]
    for _ in range(2000):
        (counter, counter2), (gauge, gauge2), (hist, hist2), (size, size2) = pairs
        group = str(rng.randrange(3))
        amount = rng.randrange(5)
        counter.labels(group).inc(amount)
        counter2.labels(group).inc(amount)
        value = rng.choice([rng.random(), rng.randrange(100)])
        gauge.labels(group, "n2").set(value)
        gauge2.labels(group, "n2").set(value)
        seconds = rng.choice([rng.random() / 100, rng.choice(edges)])
        hist.labels(group).observe(seconds)
        hist2.labels(group).observe(seconds)
        entries = rng.choice([1, 2, 3, 4, 100, 8192, 9000, rng.randrange(10000)])
        size.labels(group).observe(entries)
        size2.labels(group).observe(entries)
        plain_ours.unlabelled().inc()
        plain_theirs.inc()
    assert generate_latest(ours) == generate_latest(theirs)
    for family, family2 in pairs:
        family.remove("1", *(["n2"] if family is pairs[1][0] else []))
        family2.remove("1", *(["n2"] if family2 is pairs[1][1] else []))
    assert generate_latest(ours) == generate_latest(theirs)
    with pytest.raises(ValueError):
        pairs[0][0].labels("1").inc(-1)
    with pytest.raises(ValueError):
        pairs[0][0].labels("1", "2")
