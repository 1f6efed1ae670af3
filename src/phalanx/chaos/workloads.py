"""The chaos lab's workloads by name, and what a person is told of their own verdicts.

- `register` (the default): register ops (GET / SET / CAS, checked for linearizability) and
  SADDs (lost acknowledged writes), `phalanx.chaos.workload`;
- `queue`: the reliable-queue pattern (LPUSH, BLMOVE to a processing list, LREM to ack),
  `phalanx.chaos.queue_workload`;
- `bank`: transfers with MULTI/EXEC + WATCH and with a Lua script, whole-bank reads that must
  sum to the total, `phalanx.chaos.bank_workload`;
- `stream`: Redis Streams with a consumer group (XADD; XREADGROUP, XACK; consumers killed and
  their pending entries reclaimed with XAUTOCLAIM), `phalanx.chaos.stream_workload`.

Rules of this file: every workload runs under every nemesis (the two are orthogonal). A
workload's own verdict is `result["workload_check"]` (None for `register`); a run passes only
when it is ok too (`passed`). The words here are shared by the terminal and the HTML report.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from phalanx.chaos.control import NodeInfo
from phalanx.chaos.workload import Workload, WorkloadConfig

WORKLOADS = ("register", "queue", "bank", "stream")
DEFAULT_WORKLOAD = "register"


def make_workload(name: str, nodes: Sequence[NodeInfo], config: WorkloadConfig, *, seed: int,
                  t0: float, until_s: float) -> Workload:
    """The workload called `name` (ValueError for an unknown one); not started."""
    if name == "register":
        return Workload(nodes, config, seed=seed, t0=t0, until_s=until_s)
    if name == "queue":
        from phalanx.chaos.queue_workload import QueueWorkload

        return QueueWorkload(nodes, config, seed=seed, t0=t0, until_s=until_s)
    if name == "bank":
        from phalanx.chaos.bank_workload import BankWorkload

        return BankWorkload(nodes, config, seed=seed, t0=t0, until_s=until_s)
    if name == "stream":
        from phalanx.chaos.stream_workload import StreamWorkload

        return StreamWorkload(nodes, config, seed=seed, t0=t0, until_s=until_s)
    raise ValueError(f"unknown workload {name!r} (known: {', '.join(WORKLOADS)})")


def workload_ok(result: Mapping[str, Any]) -> bool:
    """The workload's own verdict (True when it has none)."""
    check = result.get("workload_check")
    return not isinstance(check, Mapping) or check.get("ok") is True


def passed(result: Mapping[str, Any]) -> bool:
    """No acknowledged write lost, a linearizable history, and the workload's own check ok."""
    return (result.get("lost_acknowledged_writes") == 0 and result.get("linearizable") is True
            and workload_ok(result))


def failure_reasons(result: Mapping[str, Any]) -> list[str]:
    """Why the workload's own check failed, one line each (empty when it passed)."""
    check = result.get("workload_check")
    if not isinstance(check, Mapping) or check.get("ok") is True:
        return []
    problems = [str(p) for p in check.get("problems") or []]
    return problems or [f"the {check.get('workload', 'workload')} check failed"]


def summary(result: Mapping[str, Any]) -> str | None:
    """The workload's own numbers in one line (None for `register`)."""
    check = result.get("workload_check")
    if not isinstance(check, Mapping):
        return None
    if check.get("workload") == "queue" and "lost" in check:
        return (f"{check.get('acknowledged_pushes')} acknowledged pushes: {check.get('lost')} "
                f"lost, {check.get('delivered')} delivered ({check.get('duplicates')} more "
                f"than once, {check.get('redeliveries')} re-deliveries after "
                f"{check.get('consumer_crashes', 0)} consumer deaths), "
                f"{check.get('remaining')} left in the lists, "
                f"{check.get('twice_in_final')} ids twice in the final lists, "
                f"{check.get('acks_found_nothing')} acks that removed nothing")
    if check.get("workload") == "bank":
        transfers = check.get("transfers") or {}
        moved = ", ".join(f"{n} {name}" for name, n in transfers.items()) or "none"
        return (f"{check.get('reads')} reads of all {check.get('accounts')} accounts: "
                f"{check.get('sum_violations')} did not sum to {check.get('total')}; "
                f"{check.get('final_reads')} final reads, {check.get('final_violations')} "
                f"wrong; transfers: {moved}")
    if check.get("workload") == "stream" and "never_delivered" in check:
        kinds = check.get("deliveries") or {}
        return (f"{check.get('acknowledged_xadds')} acknowledged XADDs "
                f"({check.get('unknown_xadds')} unknown, {check.get('failed_xadds')} failed): "
                f"{check.get('never_delivered')} never delivered, {check.get('missing')} "
                f"missing, {check.get('unacked')} never acked ({check.get('acked_unknown', 0)} "
                f"acked only by an XACK of unknown outcome); {check.get('delivered')} "
                f"delivered ({kinds.get('new', 0)} new, {kinds.get('claim', 0)} reclaimed; "
                f"{check.get('duplicates')} more than once, {check.get('redeliveries')} "
                f"re-deliveries after {check.get('consumer_deaths', 0)} consumer deaths), "
                f"{check.get('new_twice')} to two consumers at once, "
                f"{check.get('early_claims')} early reclaims, {check.get('phantoms')} phantoms")
    return "; ".join(str(p) for p in check.get("problems") or []) or None
