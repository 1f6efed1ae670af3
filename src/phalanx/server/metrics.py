"""Prometheus metrics of one node process: Raft groups, storage, RESP clients and peers.

This module owns the names, labels and buckets of every `phalanx_*` metric, and the small
methods the node calls to update them. The admin server serves `NodeMetrics.render()` at
`/metrics`.

Rules of this file:
- Each `NodeMetrics` has its own `CollectorRegistry` (never the global one), so several nodes
  (tests, the chaos lab) can live in one process without clashing.
- Every name starts with `phalanx_`; units come last (`_seconds`, `_entries`, `_total`).
- Per Raft group metrics carry a `group` label; the node updates them through the cached
  `GroupMetrics` that `NodeMetrics.group(id)` returns, so a hot-path call (`observe_commit`)
  does no label lookup. Labelled children (per peer, command, reason) are cached in dicts.
- Label values that a client controls (RESP command names, error kinds) are bounded: past
  `MAX_LABEL_VALUES` distinct values a family folds new ones into "other", so a client cannot
  blow up the number of series.
- Latency buckets span 100 µs to 10 s; size buckets are powers of two.
- Hot-path updates are plain attribute arithmetic, without locks: the families here are our
  own collectors (`_Counter`, `_Gauge`, `_Histogram`) whose children keep plain numbers (a
  histogram keeps its own per-bucket counts, found with `bisect`), and turn them into the very
  samples `prometheus_client`'s `Counter`, `Gauge` and `Histogram` export (same names, labels,
  `_created` series, bucket bounds and order) only when the registry is collected. A node
  updates its metrics from its event loop thread only, as before.
- Updating a metric never raises into the caller's path for a well-typed call; a failing
  render hook is logged and skipped, never fails the scrape.
"""

from __future__ import annotations

import logging
import time
from bisect import bisect_left
from collections.abc import Callable, Iterable
from typing import Generic, TypeVar

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client import metrics as _prometheus_metrics
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.gc_collector import GCCollector
from prometheus_client.metrics_core import Metric
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.samples import Sample
from prometheus_client.utils import INF, floatToGoString

#: How prometheus_client writes a bucket bound in the `le` label ("0.0001", "+Inf").
_le_text: Callable[[float], str] = floatToGoString

logger = logging.getLogger(__name__)

#: The Content-Type of `NodeMetrics.render()` (Prometheus text format 0.0.4).
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4

#: Latencies from 100 µs (a local fsync, a batched commit) to 10 s (a stuck quorum).
LATENCY_BUCKETS_SECONDS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)
#: Snapshot durations: 10 ms to 5 minutes.
SNAPSHOT_BUCKETS_SECONDS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
#: Batch sizes (entries per apply or per fsync): 1 to 8192.
BATCH_BUCKETS = tuple(float(2**power) for power in range(14))

#: Most distinct values of a client-controlled label (command, error kind) before "other".
MAX_LABEL_VALUES = 256
OTHER = "other"


def _use_created() -> bool:
    """Whether `_created` series are exported (prometheus_client's switch, which honours
    PROMETHEUS_DISABLE_CREATED_SERIES and `disable_created_metrics()`)."""
    return bool(getattr(_prometheus_metrics, "_use_created", True))


class _CounterChild:
    """One series of a counter: a plain number, no lock (see the module rules)."""

    __slots__ = ("created", "value")

    def __init__(self) -> None:
        self.value: float = 0
        self.created = time.time()

    def inc(self, amount: float = 1) -> None:
        if amount < 0:
            raise ValueError("Counters can only be incremented by non-negative amounts.")
        self.value += amount


class _GaugeChild:
    """One series of a gauge: a plain number."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value: float = 0

    def set(self, value: float) -> None:
        self.value = value

    def inc(self, amount: float = 1) -> None:
        self.value += amount

    def dec(self, amount: float = 1) -> None:
        self.value -= amount


class _HistogramChild:
    """One series of a histogram: per-bucket (not cumulative) counts and the sum."""

    __slots__ = ("bounds", "counts", "created", "sum")

    def __init__(self, bounds: list[float]) -> None:
        self.bounds = bounds
        self.counts = [0] * len(bounds)
        self.sum: float = 0.0
        self.created = time.time()

    def observe(self, amount: float) -> None:
        # The first bucket whose upper bound is >= amount, as `Histogram.observe` finds it.
        self.counts[bisect_left(self.bounds, amount)] += 1
        self.sum += amount


_Child = TypeVar("_Child", _CounterChild, _GaugeChild, _HistogramChild)


class _Family(Generic[_Child]):
    """A metric family collected by the registry: children by label values, turned into
    samples at collection time only (the same samples as the prometheus_client metric of
    the same type)."""

    _type = ""

    def __init__(self, name: str, documentation: str, labelnames: Iterable[str] = (), *,
                 registry: CollectorRegistry) -> None:
        self._name = name
        self._documentation = documentation
        self._labelnames = tuple(labelnames)
        self._children: dict[tuple[str, ...], _Child] = {}
        if not self._labelnames:
            self._children[()] = self._new_child()
        registry.register(self)

    def _new_child(self) -> _Child:
        raise NotImplementedError

    def labels(self, *values: object) -> _Child:
        """The child of these label values (created on first use)."""
        key = self._key(values)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self._new_child()
        return child

    def unlabelled(self) -> _Child:
        """The only child of a family without labels."""
        return self._children[()]

    def remove(self, *values: object) -> None:
        """Drop the series of these label values (nothing to do if it does not exist)."""
        if not self._labelnames:
            raise ValueError(f"No label names were set when constructing {self._name}")
        self._children.pop(self._key(values), None)

    def _key(self, values: tuple[object, ...]) -> tuple[str, ...]:
        if len(values) != len(self._labelnames):
            raise ValueError(f"Incorrect label count (expected {len(self._labelnames)}, "
                             f"got {values})")
        return tuple(str(value) for value in values)

    def describe(self) -> list[Metric]:
        return [Metric(self._name, self._documentation, self._type)]

    def collect(self) -> list[Metric]:
        metric = Metric(self._name, self._documentation, self._type)
        samples = metric.samples
        labelnames = self._labelnames
        created = _use_created()
        for key, child in list(self._children.items()):
            self._add_samples(samples, dict(zip(labelnames, key, strict=True)), child, created)
        return [metric]

    def _add_samples(self, samples: list[Sample], labels: dict[str, str], child: _Child,
                     created: bool) -> None:
        raise NotImplementedError


class _Counter(_Family[_CounterChild]):
    _type = "counter"

    def _new_child(self) -> _CounterChild:
        return _CounterChild()

    def _add_samples(self, samples: list[Sample], labels: dict[str, str], child: _CounterChild,
                     created: bool) -> None:
        samples.append(Sample(self._name + "_total", labels, float(child.value)))
        if created:
            samples.append(Sample(self._name + "_created", labels, child.created))


class _Gauge(_Family[_GaugeChild]):
    _type = "gauge"

    def _new_child(self) -> _GaugeChild:
        return _GaugeChild()

    def _add_samples(self, samples: list[Sample], labels: dict[str, str], child: _GaugeChild,
                     created: bool) -> None:
        samples.append(Sample(self._name, labels, float(child.value)))


class _Histogram(_Family[_HistogramChild]):
    _type = "histogram"

    def __init__(self, name: str, documentation: str, labelnames: Iterable[str] = (), *,
                 buckets: Iterable[float], registry: CollectorRegistry) -> None:
        bounds = [float(bound) for bound in buckets]
        if bounds != sorted(bounds):
            raise ValueError("Buckets not in sorted order")
        if bounds and bounds[-1] != INF:
            bounds.append(INF)
        if len(bounds) < 2:
            raise ValueError("Must have at least two buckets")
        self._bounds = bounds
        self._le = [_le_text(bound) for bound in bounds]
        super().__init__(name, documentation, labelnames, registry=registry)

    def _new_child(self) -> _HistogramChild:
        return _HistogramChild(self._bounds)

    def _add_samples(self, samples: list[Sample], labels: dict[str, str],
                     child: _HistogramChild, created: bool) -> None:
        name = self._name
        bucket = name + "_bucket"
        total = 0.0
        for le, count in zip(self._le, list(child.counts), strict=True):
            total += count
            samples.append(Sample(bucket, {**labels, "le": le}, total))
        samples.append(Sample(name + "_count", labels, total))
        if self._bounds[0] >= 0:
            samples.append(Sample(name + "_sum", labels, child.sum))
        if created:
            samples.append(Sample(name + "_created", labels, child.created))


class _Families:
    """The metric families of one registry (shared by every group of the node)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        group = ("group",)
        self.node_info = _Gauge("phalanx_node_info", "Identity of this node (value is always 1).",
                               ("node",), registry=registry)
        # Raft, per group.
        self.term = _Gauge("phalanx_raft_term", "Current Raft term.", group, registry=registry)
        self.is_leader = _Gauge("phalanx_raft_is_leader", "1 if this node leads the group.",
                               group, registry=registry)
        self.leader_changes = _Counter("phalanx_raft_leader_changes", "Changes of the known leader.",
                                      group, registry=registry)
        self.elections_started = _Counter("phalanx_raft_elections_started",
                                         "Elections (campaigns) this node started.", group,
                                         registry=registry)
        self.elections_won = _Counter("phalanx_raft_elections_won",
                                     "Elections this node won.", group, registry=registry)
        self.proposals = _Counter("phalanx_raft_proposals", "Proposals made on this node.",
                                 group, registry=registry)
        self.proposals_failed = _Counter("phalanx_raft_proposals_failed",
                                        "Proposals that failed, by reason.",
                                        ("group", "reason"), registry=registry)
        self.commit_index = _Gauge("phalanx_raft_commit_index", "Highest committed log index.",
                                  group, registry=registry)
        self.applied_index = _Gauge("phalanx_raft_applied_index", "Highest applied log index.",
                                   group, registry=registry)
        self.commit_latency = _Histogram("phalanx_raft_commit_latency_seconds",
                                        "Leader: time from propose to applied.", group,
                                        buckets=LATENCY_BUCKETS_SECONDS, registry=registry)
        self.apply_latency = _Histogram("phalanx_raft_apply_latency_seconds",
                                       "Time to apply one batch of committed entries.", group,
                                       buckets=LATENCY_BUCKETS_SECONDS, registry=registry)
        self.apply_batch = _Histogram("phalanx_raft_apply_batch_size",
                                     "Committed entries applied per batch.", group,
                                     buckets=BATCH_BUCKETS, registry=registry)
        self.replication_lag = _Gauge("phalanx_raft_replication_lag_entries",
                                     "Leader: entries a peer is behind the leader's last index.",
                                     ("group", "peer"), registry=registry)
        self.snapshots_sent = _Counter("phalanx_raft_snapshots_sent",
                                      "Snapshots sent to lagging peers.", group, registry=registry)
        self.snapshots_taken = _Counter("phalanx_raft_snapshots_taken",
                                       "Snapshots taken (log compactions).", group,
                                       registry=registry)
        self.snapshot_duration = _Histogram("phalanx_raft_snapshot_duration_seconds",
                                           "Time to take one snapshot.", group,
                                           buckets=SNAPSHOT_BUCKETS_SECONDS, registry=registry)
        self.read_index_latency = _Histogram("phalanx_raft_read_index_latency_seconds",
                                            "Time from a linearizable read request to its "
                                            "read index being confirmed.", group,
                                            buckets=LATENCY_BUCKETS_SECONDS, registry=registry)
        self.keys = _Gauge("phalanx_keys", "Keys held by the group's state machine.", group,
                          registry=registry)
        # Storage, per group (one store per group).
        self.fsync_latency = _Histogram("phalanx_storage_fsync_latency_seconds",
                                       "Time of one durable write (fsync) of the log.", group,
                                       buckets=LATENCY_BUCKETS_SECONDS, registry=registry)
        self.fsync_batch = _Histogram("phalanx_storage_fsync_batch_entries",
                                     "Log entries made durable by one fsync.", group,
                                     buckets=BATCH_BUCKETS, registry=registry)
        # RESP clients, per node.
        self.resp_commands = _Counter("phalanx_resp_commands", "RESP commands received.",
                                     ("command",), registry=registry)
        self.resp_errors = _Counter("phalanx_resp_errors", "RESP error replies, by kind.",
                                   ("kind",), registry=registry)
        self.resp_connections = _Gauge("phalanx_resp_connections", "Open RESP client connections.",
                                      registry=registry)
        # A gauge and a counter cannot share the base name `phalanx_resp_connections` (the
        # counter owns it too), so the counter of accepted connections says "accepted".
        self.resp_connections_accepted = _Counter("phalanx_resp_connections_accepted",
                                                 "RESP client connections accepted.",
                                                 registry=registry)
        # Peers, per node.
        self.peer_sent = _Counter("phalanx_peer_messages_sent", "Raft messages sent to a peer.",
                                 ("peer",), registry=registry)
        self.peer_dropped = _Counter("phalanx_peer_messages_dropped",
                                    "Raft messages to a peer that were dropped, by reason.",
                                    ("peer", "reason"), registry=registry)
        self.peer_connected = _Gauge("phalanx_peer_connected",
                                    "1 if the connection to the peer is up.", ("peer",),
                                    registry=registry)
        self.peer_refuses_us = _Gauge(
            "phalanx_peer_refuses_this_node",
            "1 while the peer refuses this node's incarnation (its data directory is not the "
            "one the cluster knows: run `phalanx replace`).", ("peer",), registry=registry)
        self.peer_connections_refused = _Gauge(
            "phalanx_peer_connections_refused",
            "Inbound peer connections refused since start (bad handshake, TLS, identity).",
            registry=registry)
        self.peer_tls_reloads = _Gauge(
            "phalanx_peer_tls_reloads",
            "Times the peer TLS certificate files were loaded again since start.",
            registry=registry)
        # Active-active region links (server/aa_link.py), per other region.
        region = ("region",)
        self.region_link_up = _Gauge("phalanx_region_link_up",
                                     "1 if the last pull round from the region succeeded.",
                                     region, registry=registry)
        self.region_link_lag_entries = _Gauge(
            "phalanx_region_link_lag_entries",
            "Deltas the region's shards hold past this node's merged positions.", region,
            registry=registry)
        self.region_link_lag_seconds = _Gauge(
            "phalanx_region_link_lag_seconds",
            "Seconds since this node's shards were last caught up with the region.", region,
            registry=registry)
        self.region_link_merged_keys = _Gauge(
            "phalanx_region_link_merged_keys",
            "Keys merged from the region since start (this node's leaderships).", region,
            registry=registry)


class _BoundedCounter:
    """A one-label counter family whose label a client controls: values are lowercased, and
    past `MAX_LABEL_VALUES` distinct labels new ones count as "other"."""

    __slots__ = ("_by_label", "_by_spelling", "_family")

    def __init__(self, family: _Counter) -> None:
        self._family = family
        self._by_label: dict[str, _CounterChild] = {}
        # Children by the caller's exact spelling, so the usual call is one dict lookup.
        self._by_spelling: dict[str, _CounterChild] = {}

    def inc(self, value: str) -> None:
        child = self._by_spelling.get(value)
        if child is None:
            child = self._child(value)
        child.inc()

    def _child(self, value: str) -> _CounterChild:
        label = value.lower()
        child = self._by_label.get(label)
        if child is None:
            if len(self._by_label) >= MAX_LABEL_VALUES:
                label = OTHER
                child = self._by_label.get(OTHER)
            if child is None:
                child = self._by_label[label] = self._family.labels(label)
        if len(self._by_spelling) < 4 * MAX_LABEL_VALUES:
            self._by_spelling[value] = child
        return child


class GroupMetrics:
    """The metrics of one Raft group on this node, with its labelled children cached.

    Get it once from `NodeMetrics.group(group_id)` and keep it: every method is a direct
    update of a cached child.
    """

    __slots__ = (
        "_applied_index", "_apply_batch", "_apply_latency", "_commit_index", "_commit_latency", "_elections_started",
        "_elections_won", "_failed", "_families", "_fsync_batch", "_fsync_latency", "_is_leader",
        "_keys", "_lag", "_leader_changes", "_proposals", "_read_index_latency",
        "_snapshot_duration", "_snapshots_sent", "_snapshots_taken", "_term", "group",
    )

    def __init__(self, families: _Families, group: str) -> None:
        self.group = group
        self._families = families
        self._term = families.term.labels(group)
        self._is_leader = families.is_leader.labels(group)
        self._leader_changes = families.leader_changes.labels(group)
        self._elections_started = families.elections_started.labels(group)
        self._elections_won = families.elections_won.labels(group)
        self._proposals = families.proposals.labels(group)
        self._commit_index = families.commit_index.labels(group)
        self._applied_index = families.applied_index.labels(group)
        self._commit_latency = families.commit_latency.labels(group)
        self._apply_batch = families.apply_batch.labels(group)
        self._apply_latency = families.apply_latency.labels(group)
        self._snapshots_sent = families.snapshots_sent.labels(group)
        self._snapshots_taken = families.snapshots_taken.labels(group)
        self._snapshot_duration = families.snapshot_duration.labels(group)
        self._read_index_latency = families.read_index_latency.labels(group)
        self._keys = families.keys.labels(group)
        self._fsync_latency = families.fsync_latency.labels(group)
        self._fsync_batch = families.fsync_batch.labels(group)
        self._failed: dict[str, _CounterChild] = {}
        self._lag: dict[str, _GaugeChild] = {}

    # Raft state.
    def set_term(self, term: int) -> None:
        self._term.set(term)

    def set_leader(self, is_leader: bool) -> None:
        """Whether this node leads the group now (set on every role change)."""
        self._is_leader.set(1 if is_leader else 0)

    def leader_changed(self) -> None:
        """The known leader of the group changed (including to "none")."""
        self._leader_changes.inc()

    def election_started(self) -> None:
        self._elections_started.inc()

    def election_won(self) -> None:
        self._elections_won.inc()

    def set_commit_index(self, index: int) -> None:
        self._commit_index.set(index)

    def set_applied_index(self, index: int) -> None:
        self._applied_index.set(index)

    # Proposals and the apply path.
    def proposed(self, count: int = 1) -> None:
        self._proposals.inc(count)

    def proposal_failed(self, reason: str) -> None:
        """A proposal failed; `reason` is a short word the node chooses ("not_leader",
        "dropped", "timeout", ...), never client text."""
        child = self._failed.get(reason)
        if child is None:
            child = self._failed[reason] = self._families.proposals_failed.labels(self.group,
                                                                                   reason)
        child.inc()

    def observe_commit(self, seconds: float) -> None:
        """Leader: one proposal went from propose to applied in `seconds`."""
        self._commit_latency.observe(seconds)

    def observe_apply_batch(self, entries: int, seconds: float | None = None) -> None:
        self._apply_batch.observe(entries)
        if seconds is not None:
            self._apply_latency.observe(seconds)

    def observe_read_index(self, seconds: float) -> None:
        self._read_index_latency.observe(seconds)

    def set_keys(self, count: int) -> None:
        self._keys.set(count)

    # Storage.
    def observe_fsync(self, seconds: float, entries: int) -> None:
        """One durable write of the log took `seconds` and covered `entries` entries."""
        self._fsync_latency.observe(seconds)
        self._fsync_batch.observe(entries)

    # Snapshots.
    def snapshot_sent(self) -> None:
        self._snapshots_sent.inc()

    def snapshot_taken(self, seconds: float) -> None:
        """A snapshot was taken in `seconds`."""
        self._snapshots_taken.inc()
        self._snapshot_duration.observe(seconds)

    # Replication (leader only).
    def set_replication_lag(self, peer: str, entries: int) -> None:
        child = self._lag.get(peer)
        if child is None:
            child = self._lag[peer] = self._families.replication_lag.labels(self.group, peer)
        child.set(entries)

    def clear_replication_lag(self) -> None:
        """Drop the per-peer lag series (call on losing leadership: only leaders know lag)."""
        for peer in self._lag:
            self._families.replication_lag.remove(self.group, peer)
        self._lag.clear()


    def _remove_series(self) -> None:
        """Drop every series of this group (the group left this node)."""
        self.clear_replication_lag()
        families = self._families
        for reason in self._failed:
            families.proposals_failed.remove(self.group, reason)
        self._failed.clear()
        for family in (families.term, families.is_leader, families.leader_changes,
                       families.elections_started, families.elections_won, families.proposals,
                       families.commit_index, families.applied_index, families.commit_latency,
                       families.apply_batch, families.apply_latency, families.snapshots_sent,
                       families.snapshots_taken,
                       families.snapshot_duration, families.read_index_latency, families.keys,
                       families.fsync_latency, families.fsync_batch):
            family.remove(self.group)


class NodeMetrics:
    """Every metric of one node process, in its own registry.

    Per group metrics live in `group(group_id)`; RESP and peer metrics are methods here.
    """

    def __init__(self, node_id: str, *, process_metrics: bool = True) -> None:
        self.node_id = node_id
        self.registry = CollectorRegistry(auto_describe=True)
        self._families = _Families(self.registry)
        self._families.node_info.labels(node_id).set(1)
        if process_metrics:
            # CPU, memory and file descriptors of the process, and Python's GC.
            ProcessCollector(registry=self.registry)
            GCCollector(registry=self.registry)
        self._groups: dict[str, GroupMetrics] = {}
        self._commands = _BoundedCounter(self._families.resp_commands)
        self._errors = _BoundedCounter(self._families.resp_errors)
        self._sent: dict[str, _CounterChild] = {}
        self._dropped: dict[tuple[str, str], _CounterChild] = {}
        self._connected: dict[str, _GaugeChild] = {}
        self._refuses_us: dict[str, _GaugeChild] = {}
        self._render_hooks: list[Callable[[], None]] = []
        families = self._families
        self._connections = families.resp_connections.unlabelled()
        self._connections_accepted = families.resp_connections_accepted.unlabelled()

    # Groups.
    def group(self, group_id: int | str) -> GroupMetrics:
        """The (cached) metrics of one Raft group; created on first use."""
        key = str(group_id)
        metrics = self._groups.get(key)
        if metrics is None:
            metrics = self._groups[key] = GroupMetrics(self._families, key)
        return metrics

    def remove_group(self, group_id: int | str) -> None:
        """Drop the series of a group that left this node (a `GroupMetrics` held for it
        afterwards updates children that are no longer exported)."""
        metrics = self._groups.pop(str(group_id), None)
        if metrics is not None:
            metrics._remove_series()

    # RESP clients.
    def command(self, name: str) -> None:
        """One RESP command named `name` (any case) was received."""
        self._commands.inc(name)

    def resp_error(self, kind: str) -> None:
        """One error reply of `kind` (its first word: "ERR", "WRONGTYPE", "MOVED", ...)."""
        self._errors.inc(kind)

    def connection_opened(self) -> None:
        self._connections.inc()
        self._connections_accepted.inc()

    def connection_closed(self) -> None:
        self._connections.dec()

    # Peers.
    def peer_message_sent(self, peer: str, count: int = 1) -> None:
        child = self._sent.get(peer)
        if child is None:
            child = self._sent[peer] = self._families.peer_sent.labels(peer)
        child.inc(count)

    def peer_message_dropped(self, peer: str, reason: str, count: int = 1) -> None:
        """`count` messages to `peer` were dropped ("queue_full", "disconnected", "fault",
        "too_large", ...)."""
        key = (peer, reason)
        child = self._dropped.get(key)
        if child is None:
            child = self._dropped[key] = self._families.peer_dropped.labels(peer, reason)
        child.inc(count)

    def set_peer_connected(self, peer: str, connected: bool) -> None:
        child = self._connected.get(peer)
        if child is None:
            child = self._connected[peer] = self._families.peer_connected.labels(peer)
        child.set(1 if connected else 0)

    def set_peer_identity(self, refusing: Iterable[str], peers: Iterable[str],
                          refused_connections: int, tls_reloads: int) -> None:
        """Which `peers` refuse this node's incarnation; the transport's refusal and TLS
        reload totals (`phalanx.server.identity`, `phalanx.transport.tls`)."""
        refusing = set(refusing)
        for peer in peers:
            child = self._refuses_us.get(peer)
            if child is None:
                child = self._refuses_us[peer] = self._families.peer_refuses_us.labels(peer)
            child.set(1 if peer in refusing else 0)
        self._families.peer_connections_refused.unlabelled().set(refused_connections)
        self._families.peer_tls_reloads.unlabelled().set(tls_reloads)

    # Exposition.
    def region_link(self, region: str, up: bool, lag_entries: int, lag_seconds: float,
                    merged_keys: int) -> None:
        """The gauges of one active-active region link (server/aa_link.py)."""
        families = self._families
        families.region_link_up.labels(region).set(1 if up else 0)
        families.region_link_lag_entries.labels(region).set(lag_entries)
        families.region_link_lag_seconds.labels(region).set(lag_seconds)
        families.region_link_merged_keys.labels(region).set(merged_keys)

    def add_render_hook(self, hook: Callable[[], None]) -> None:
        """Call `hook` before each render: a place to refresh gauges that are cheaper to read
        at scrape time than to keep current on the hot path (keys, replication lag)."""
        self._render_hooks.append(hook)

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric (see `CONTENT_TYPE`)."""
        for hook in self._render_hooks:
            try:
                hook()
            except Exception:
                logger.exception("%s: a metrics render hook failed; metrics may be stale",
                                 self.node_id)
        return generate_latest(self.registry)
