"""Watching the cluster of a chaos run from outside: a monitor thread that polls every node's
/status (the agreed leader, redundancy), and the waits of a run's start and end (a leader, full
redundancy, converged replicas). See docs/architecture.md (chaos).

Rules of this file:
- Read-only: only /status (and the control's leader) is asked; nothing is changed.
- One monitor thread polls every node's /status every `MONITOR_INTERVAL_S`: the agreed leader
  (for the new-leader column) and whether the cluster is fully redundant
  (`phalanx.chaos.redundancy`), from which the result computes the time to full redundancy of
  every fault.
- Every wait is bounded by its timeout; a node that does not answer within `STATUS_TIMEOUT_S`
  counts as not answering.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from phalanx.chaos import redundancy
from phalanx.chaos.control import ClusterControl, agreed_leader, fetch_statuses

#: How often the monitor polls every node's /status (leader, redundancy).
MONITOR_INTERVAL_S = 0.2
#: How long a node may take to answer /status before it counts as not answering (a loaded
#: machine answers slowly; a killed node refuses at once, a paused one takes all of it).
STATUS_TIMEOUT_S = 1.0


class ClusterMonitor:
    """Polls every node's /status every `interval_s`: the agreed leader (every change is
    recorded) and a redundancy observation (`redundancy.assess`)."""

    def __init__(self, control: ClusterControl, clock: Callable[[], float],
                 interval_s: float = MONITOR_INTERVAL_S) -> None:
        self.control = control
        self.clock = clock
        self.interval_s = interval_s
        self.changes: list[tuple[float, str]] = []
        self.current: str | None = None
        self.observations: list[redundancy.Observation] = []
        self.latest: redundancy.Observation | None = None
        #: survival goal, replication factor, shards of the newest map seen.
        self.cluster: dict[str, Any] = {}
        self.stop_event = threading.Event()
        self.pool = ThreadPoolExecutor(max_workers=max(4, len(control.nodes())),
                                       thread_name_prefix="status-poll")
        self.thread = threading.Thread(target=self._run, daemon=True, name="monitor")

    def _poll(self) -> tuple[str | None, Mapping[str, Any] | None]:
        try:
            statuses = fetch_statuses(self.control, timeout=STATUS_TIMEOUT_S, pool=self.pool)
        except Exception:
            try:
                return self.control.leader(), None
            except Exception:
                return None, None
        return agreed_leader(statuses), statuses

    def _run(self) -> None:
        while not self.stop_event.is_set():
            began = self.clock()
            leader, statuses = self._poll()
            if statuses is not None:
                observation = redundancy.assess(statuses, self.clock())
                newest = redundancy.newest_status(statuses)
                if newest is not None:
                    self.cluster = {"survival_goal": newest.get("survival_goal"),
                                    "replication_factor": newest.get("replication_factor"),
                                    "shards": len(observation.replicas) or None}
                self.observations.append(observation)
                self.latest = observation
            if leader is not None and leader != self.current:
                self.changes.append((began, leader))
            self.current = leader
            self.stop_event.wait(max(0.0, self.interval_s - (self.clock() - began)))

    def start(self) -> ClusterMonitor:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join(5.0)
        self.pool.shutdown(wait=False)



def wait_for_leader(control: ClusterControl, timeout_s: float) -> str | None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        leader = control.leader()
        if leader is not None:
            return leader
        time.sleep(0.2)
    return None


def convergence_key(statuses: Mapping[str, Mapping[str, Any] | None],
                    exclude: frozenset[str] = frozenset()) -> tuple[Any, ...] | None:
    """What must hold still for the replicas to have converged, or None while they have not:
    every node (but `exclude`) answers, and for every shard of the newest map its voters agree
    on leader and term and have applied all they committed, the same index. A node without a
    shard map: every node agrees on the top-level leader, term and applied index."""
    considered = {node: status for node, status in statuses.items() if node not in exclude}
    if not considered or any(status is None for status in considered.values()):
        return None
    answered = {node: status for node, status in considered.items() if status is not None}
    newest = redundancy.newest_status(answered)
    shards = [s for s in (newest or {}).get("shards") or [] if isinstance(s, Mapping)]
    if not shards:
        seen = list(answered.values())
        leaders = {s.get("leader") for s in seen}
        terms = {s.get("term") for s in seen}
        applied = {s.get("applied_index") for s in seen}
        committed = {s.get("commit_index") for s in seen}
        if (len(leaders) == 1 and None not in leaders and len(terms) == 1
                and len(applied) == 1 and applied == committed):
            return (next(iter(leaders)), next(iter(terms)), next(iter(applied)))
        return None
    key: list[tuple[Any, ...]] = []
    for shard in shards:
        shard_id = str(shard.get("id"))
        groups = []
        for voter in shard.get("voters") or []:
            if voter in exclude or voter not in answered:
                continue
            local = answered[voter].get("local")
            group = local.get(shard_id) if isinstance(local, Mapping) else None
            if not isinstance(group, Mapping):
                return None
            groups.append(group)
        if not groups:
            return None
        leaders = {g.get("leader") for g in groups}
        terms = {g.get("term") for g in groups}
        applied = {g.get("applied_index") for g in groups}
        committed = {g.get("commit_index") for g in groups}
        if (len(leaders) != 1 or None in leaders or len(terms) != 1 or len(applied) != 1
                or applied != committed):
            return None
        key.append((shard_id, next(iter(leaders)), next(iter(terms)), next(iter(applied))))
    return tuple(key)


def wait_converged(control: ClusterControl, timeout_s: float = 30.0,
                   exclude: frozenset[str] = frozenset()) -> bool:
    """Until `convergence_key` is the same twice in a row (nodes in `exclude`, lost for good,
    are left out). A control whose nodes cannot be polled: until a leader is agreed, plus 2 s."""
    deadline = time.monotonic() + timeout_s
    previous: tuple[Any, ...] | None = None
    while time.monotonic() < deadline:
        try:
            statuses = fetch_statuses(control, timeout=0.5)
        except Exception:
            found = wait_for_leader(control, max(0.0, deadline - time.monotonic())) is not None
            time.sleep(2.0)
            return found
        key = convergence_key(statuses, exclude)
        if key is not None and key == previous:
            return True
        previous = key
        time.sleep(0.2)
    return False


def wait_fully_redundant(control: ClusterControl, timeout_s: float) -> redundancy.Observation:
    """Poll until the cluster is fully redundant (or `timeout_s`); the last observation."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            statuses = fetch_statuses(control, timeout=0.5)
        except Exception as error:
            return redundancy.Observation(0.0, False, f"cannot poll the nodes: {error}")
        newest = redundancy.newest_status(statuses)
        if newest is not None and "shards" not in newest:
            return redundancy.Observation(0.0, True)  # nodes without a shard map: nothing to wait for
        observation = redundancy.assess(statuses, 0.0)
        if observation.full or time.monotonic() >= deadline:
            return observation
        time.sleep(MONITOR_INTERVAL_S)
