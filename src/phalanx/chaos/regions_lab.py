"""The chaos lab's region scenario for active-active keys (issue 18 item 4; docs/active-active.md).

One run, on real processes: R linked local regions (one 3-node phalanx cluster each,
`ops.regions.plan_regions`, strong keys at home in dc1), one client per region writing
counters (`INCRBY`), a set (`SADD` of unique members, `SREM` of members the region had
acknowledged), a register (`SET` of unique values, `GET`) under the active-active prefix and a
strong counter (`INCR strong:counter`, forwarded to dc1 from the other regions), through
three phases: linked, **cut** (every region link dropped with the nodes' fault rules,
`drop_to` the other regions), healed. During the cut each region also removes members the
other region added before the cut, and after those removes the other region adds them again
(add wins). The writers stop at the heal; the lab then measures the time until every node of
every region answers the same state, and checks that state against the model of the merge
rules (`checker.aa_check`). A sampler reads every node's `/status` (`active_active.links`)
four times a second: the replication lag over time. Last, the **loss of a region**: the
last region writes unique members flat out (active-active `SADD aa:rpo`, strong
`SADD strong:rpo` forwarded to the home), all its nodes are SIGKILLed at once, and the
survivors are read: the active-active writes acknowledged there but never shipped are the RPO
(in writes and seconds), the strong ones must all be in the home region (RPO 0).

Rules of this file:
- Real processes only, started by `ops.launcher` (fault injection on); every process started
  is stopped by pid in a `finally`, the data directory removed unless the caller gave one.
- Every loop is bounded in count and in time. Never imports `phalanx.server`.
- Outcomes: a reply is "ok", an error reply "fail" (not applied), a timeout or a lost
  connection "unknown" (the checker allows both).
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from phalanx.checker.aa_check import FAIL, OK, UNKNOWN, AaOp, check_active_active, region_loss_rpo
from phalanx.ops import admin, launcher
from phalanx.ops.regions import plan_regions

COUNTER, SET, REGISTER, STRONG = "aa:counter", "aa:set", "aa:register", "strong:counter"


@dataclass
class RegionLabConfig:
    """One region scenario run."""

    regions: int = 2
    nodes: int = 3
    linked_s: float = 2.0
    cut_s: float = 5.0
    loss_s: float = 2.0
    rate: float = 40.0                  # operations per second per region (at most)
    poll_ms: int = 50                   # the region link's pull interval
    converge_timeout_s: float = 60.0
    seed: int | None = None
    data_dir: str | None = None
    region_loss: bool = True
    #: Lose the region while its links are cut (the RPO is then everything since the cut).
    loss_during_cut: bool = False


@dataclass
class _Run:
    t0: float
    ops: list[AaOp] = field(default_factory=list)
    strong: list[tuple[str, str, float]] = field(default_factory=list)   # region, outcome, sent
    lag: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def now(self) -> float:
        return time.monotonic() - self.t0


def _client(address: str, timeout: float = 2.0) -> redis.Redis:
    """One connection, NO client-side retry (as `chaos.workload`): redis-py 8 by default
    re-sends a command after a socket timeout or a lost connection, up to 10 times with
    backoff, and returns the retry's reply: an `INCRBY` applied twice was recorded as one
    acknowledged increment (a false "counter outside" under load), and a vanished cluster
    stalled the lab for minutes. A timeout is an unknown outcome, which the checker allows."""
    host, port = address.rsplit(":", 1)
    return redis.Redis(host=host, port=int(port), socket_timeout=timeout,
                       socket_connect_timeout=timeout, decode_responses=True,
                       retry=Retry(NoBackoff(), 0), protocol=2)


def _call(client: redis.Redis, *args: Any) -> tuple[str, Any]:
    try:
        return OK, client.execute_command(*args)  # type: ignore[no-untyped-call]
    except redis.ResponseError as error:
        return FAIL, str(error)
    except (redis.ConnectionError, redis.TimeoutError, OSError) as error:
        return UNKNOWN, str(error)


def _record(run: _Run, region: str, kind: str, key: str, value: Any, client: redis.Redis,
            *args: Any) -> tuple[str, Any]:
    invoked = run.now()
    outcome, reply = _call(client, *args)
    completed = run.now() if outcome != UNKNOWN else None
    if kind == "get":
        if outcome != OK:
            return outcome, reply
        value = reply
    with run.lock:
        run.ops.append(AaOp(region, kind, key, value, invoked, completed, outcome))
    return outcome, reply


def _writer(run: _Run, region: str, client: redis.Redis, rng: random.Random,
            stop: threading.Event, rate: float, max_ops: int = 100_000) -> None:
    """One region's client: a mix of active-active writes and reads and strong INCRs."""
    acked_members: list[str] = []
    for number in range(max_ops):
        if stop.is_set():
            return
        started = time.monotonic()
        choice = rng.random()
        if choice < 0.3:
            step = rng.randint(1, 5)
            _record(run, region, "incr", COUNTER, step, client, "INCRBY", COUNTER, step)
        elif choice < 0.5:
            member = f"{region}-{number}"
            if _record(run, region, "sadd", SET, member, client, "SADD", SET, member)[0] == OK:
                acked_members.append(member)
        elif choice < 0.55 and acked_members:
            member = acked_members.pop(rng.randrange(len(acked_members)))
            _record(run, region, "srem", SET, member, client, "SREM", SET, member)
        elif choice < 0.7:
            value = f"{region}-{number}"
            _record(run, region, "set", REGISTER, value, client, "SET", REGISTER, value)
        elif choice < 0.8:
            _record(run, region, "get", REGISTER, None, client, "GET", REGISTER)
        else:
            # Timed when sent, as the active-active ops are (`AaOp.invoked`): a write sent
            # before the cut and answered after it is not a write "during the cut".
            invoked = run.now()
            outcome, _ = _call(client, "INCR", STRONG)
            with run.lock:
                run.strong.append((region, outcome, invoked))
        stop.wait(max(0.0, 1.0 / rate - (time.monotonic() - started)))


def _sampler(run: _Run, nodes: dict[str, list[Any]], stop: threading.Event,
             max_samples: int = 20_000) -> None:
    """Every 0.25 s: each region's worst link lag towards each other region (over its nodes)."""
    for _ in range(max_samples):
        if stop.wait(0.25):
            return
        at = run.now()
        for region, entries in nodes.items():
            worst: dict[str, dict[str, Any]] = {}
            for status in admin.query_status(entries, timeout=0.5):
                links = ((status.status or {}).get("active_active") or {}).get("links") or []
                for link in links:
                    peer = str(link.get("region"))
                    seen = worst.setdefault(peer, {"t": round(at, 3), "region": region,
                                                   "peer": peer, "up": False,
                                                   "lag_entries": 0, "lag_seconds": 0.0,
                                                   "stale_seconds": 0.0, "last_error": ""})
                    up = link.get("state") == "up"
                    seen["up"] = seen["up"] or up
                    if up:  # the report's "lag while up" (a down link's lag grows: stale)
                        seen["lag_entries"] = max(seen["lag_entries"],
                                                  int(link.get("lag_entries", 0)))
                        seen["lag_seconds"] = max(seen["lag_seconds"],
                                                  float(link.get("lag_seconds", 0.0)))
                    # A link that is down does not know the other region's head: the time
                    # since its last successful pull bounds what it misses.
                    if not up:
                        seen["stale_seconds"] = max(seen["stale_seconds"], float(
                            link.get("last_ok_seconds_ago") or 0.0))
                    seen["last_error"] = seen["last_error"] or str(link.get("last_error") or "")
            with run.lock:
                run.lag.extend(worst.values())


def _set_cut(nodes: dict[str, list[Any]], cut: bool) -> None:
    names = list(nodes)
    for region, entries in nodes.items():
        for entry in entries:
            if cut:
                code, body = admin.admin_request(
                    entry.admin, "/faults", method="PUT", timeout=5.0,
                    body={"drop_to": [other for other in names if other != region]})
            else:
                code, body = admin.admin_request(entry.admin, "/faults", method="DELETE",
                                                 timeout=5.0)
            if code != 200:
                raise RuntimeError(f"/faults on {entry.id}: {code} {body}")


def _wait_links(nodes: dict[str, list[Any]], *, up: bool, timeout_s: float) -> bool:
    """Wait (bounded) until every node's region links report down (`up` False)."""
    deadline = time.monotonic() + timeout_s
    entries = [entry for region in nodes.values() for entry in region]
    while time.monotonic() < deadline:
        states = [link.get("state") for status in admin.query_status(entries, timeout=0.5)
                  for link in ((status.status or {}).get("active_active") or {}).get("links")
                  or [{"state": None}]]
        if all((state == "up") == up for state in states if state != "idle (leads no shard)"):
            return True
        time.sleep(0.05)
    return False


def _final_state(entry: Any) -> dict[str, object] | None:
    client = _client(entry.resp)
    try:
        counter = client.get(COUNTER)
        return {COUNTER: int(counter) if counter is not None else None,
                SET: set(client.smembers(SET)), REGISTER: client.get(REGISTER)}
    except (redis.RedisError, OSError):
        return None
    finally:
        client.close()


def _phase_availability(run: _Run, cut_at: float, heal_at: float) -> dict[str, Any]:
    """Write availability per region during the cut: active-active and strong."""
    out: dict[str, Any] = {}
    for op in run.ops:
        if op.kind != "get" and cut_at <= op.invoked < heal_at:
            row = out.setdefault(op.region, {"aa_ok": 0, "aa_total": 0,
                                             "strong_ok": 0, "strong_total": 0})
            row["aa_total"] += 1
            row["aa_ok"] += op.outcome == OK
    for region, outcome, at in run.strong:
        if cut_at <= at < heal_at:
            row = out.setdefault(region, {"aa_ok": 0, "aa_total": 0,
                                          "strong_ok": 0, "strong_total": 0})
            row["strong_total"] += 1
            row["strong_ok"] += outcome == OK
    for row in out.values():
        row["aa_availability"] = round(row["aa_ok"] / row["aa_total"], 4) if row["aa_total"] else None
        row["strong_availability"] = (round(row["strong_ok"] / row["strong_total"], 4)
                                      if row["strong_total"] else None)
    return out


def plan_lab_regions(config: RegionLabConfig, root: Path) -> dict[str, list[Any]]:
    """The regions' plans (`ops.regions.plan_regions`) on addresses drawn from the OS's
    randomness, never from `config.seed`: ports are not part of the experiment. Drawn from the
    seed, two runs with one seed (two engineers' test runs at once) picked the same loopback
    addresses and ports; both passed `check_addresses_free` before either bound them, the
    second run's nodes failed to bind while its startup saw the first run's nodes answer, and
    both runs' clients then wrote the same unique members and counters into one cluster: the
    checker rightly saw adds missing, removed members back and counters beyond their sums
    (the same lesson as `chaos.local`)."""
    return plan_regions(root, random.Random(), regions=config.regions, prefixes="aa:",
                        nodes=config.nodes, strong_home="dc1",
                        overrides={"enable_fault_injection": True, "aa_poll_ms": config.poll_ms})


def run_region_lab(config: RegionLabConfig) -> dict[str, Any]:
    """One run (module docstring); the result as JSON-ready data, `passed` the verdict."""
    rng = random.Random(config.seed)
    root = Path(config.data_dir) if config.data_dir else Path(tempfile.mkdtemp(prefix="phalanx-aa-lab-"))
    processes: list[Any] = []
    try:
        plans = plan_lab_regions(config, root)
        nodes: dict[str, list[Any]] = {}
        for name, plan in plans.items():
            cluster, _, started = launcher.start_local_cluster(root / name, plan, timeout=90.0)
            processes.extend(started.values())
            nodes[name] = list(cluster.nodes)
        return _scenario(config, rng, nodes)
    finally:
        launcher.stop_processes(processes)
        if not config.data_dir:
            shutil.rmtree(root, ignore_errors=True)


def _scenario(config: RegionLabConfig, rng: random.Random,
              nodes: dict[str, list[Any]]) -> dict[str, Any]:
    run = _Run(t0=time.monotonic())
    names = list(nodes)
    clients = {name: _client(entries[0].resp) for name, entries in nodes.items()}
    stop_writers, stop_sampler = threading.Event(), threading.Event()
    sampler = threading.Thread(target=_sampler, args=(run, nodes, stop_sampler), daemon=True)
    sampler.start()
    writers = [threading.Thread(target=_writer, daemon=True,
                                args=(run, name, clients[name], random.Random(rng.random()),
                                      stop_writers, config.rate)) for name in names]
    for thread in writers:
        thread.start()
    # Before the cut: members both regions will see, for the add-wins check during the cut.
    first, last = names[0], names[-1]
    shared = [f"shared-{n}" for n in range(5)]
    for member in shared:
        _record(run, first, "sadd", SET, member, clients[first], "SADD", SET, member)
    deadline = time.monotonic() + config.converge_timeout_s
    while time.monotonic() < deadline and not all(
            _call(clients[last], "SISMEMBER", SET, m) == (OK, 1) for m in shared):
        time.sleep(0.05)
    time.sleep(config.linked_s)
    _set_cut(nodes, True)
    _wait_links(nodes, up=False, timeout_s=config.converge_timeout_s)
    cut_at = run.now()      # the cut is in effect: every link reports it down
    time.sleep(config.cut_s / 2)
    for member in shared:     # observed in `last`, removed there during the cut ...
        _record(run, last, "srem", SET, member, clients[last], "SREM", SET, member)
    for member in shared:     # ... and added again in `first` after those removes: add wins
        _record(run, first, "sadd", SET, member, clients[first], "SADD", SET, member)
    time.sleep(config.cut_s / 2)
    stop_writers.set()
    for thread in writers:
        thread.join(timeout=30.0)
    heal_at = run.now()
    _set_cut(nodes, False)
    # Convergence: every node of every region answers the same state.
    converged_at, finals = None, {}
    deadline = time.monotonic() + config.converge_timeout_s
    while time.monotonic() < deadline:
        states = {f"{region}/{entry.id}": _final_state(entry)
                  for region, entries in nodes.items() for entry in entries}
        if all(state is not None for state in states.values()):
            finals = {name: state for name, state in states.items() if state is not None}
            if all(state == next(iter(finals.values())) for state in finals.values()):
                converged_at = run.now()
                break
        time.sleep(0.1)
    check = check_active_active(run.ops, finals)
    strong_acked = sum(outcome == OK for _, outcome, _ in run.strong)
    strong_unknown = sum(outcome == UNKNOWN for _, outcome, _ in run.strong)
    strong_final = _call(clients[first], "GET", STRONG)[1]
    strong_ok = (isinstance(strong_final, str)
                 and strong_acked <= int(strong_final) <= strong_acked + strong_unknown)
    result: dict[str, Any] = {
        "regions": names, "nodes_per_region": config.nodes, "seed": config.seed,
        "phases": {"cut_at": round(cut_at, 3), "heal_at": round(heal_at, 3)},
        "operations": len(run.ops), "strong_operations": len(run.strong),
        "availability_during_cut": _phase_availability(run, cut_at, heal_at),
        "converge_after_heal_s": round(converged_at - heal_at, 3) if converged_at else None,
        "check": check.to_json(),
        "strong_check": {"acknowledged": strong_acked, "unknown": strong_unknown,
                         "final": strong_final, "ok": strong_ok},
    }
    # What `phalanx analyze` says of this topology (CAP per keyspace), from every region.
    result["analysis"] = {}
    for region, entries in nodes.items():
        with contextlib.suppress(OSError):
            code, body = admin.admin_request(entries[0].admin, "/analyze", timeout=5.0)
            if code == 200 and isinstance(body, dict):
                result["analysis"][region] = body.get("cap")
    if config.region_loss:
        result["region_loss"] = _region_loss(config, run, nodes, clients)
    stop_sampler.set()
    sampler.join(timeout=10.0)
    result["lag"] = run.lag
    result["max_lag"] = {f"{row['region']}<-{row['peer']}": None for row in run.lag}
    for row in run.lag:
        key = f"{row['region']}<-{row['peer']}"
        seen = result["max_lag"][key] or {"lag_entries": 0, "lag_seconds": 0.0,
                                          "stale_seconds": 0.0}
        result["max_lag"][key] = {name: max(seen[name], row[name])
                                  for name in ("lag_entries", "lag_seconds", "stale_seconds")}
    for client in clients.values():
        client.close()
    loss = result.get("region_loss") or {}
    result["passed"] = bool(check.ok and converged_at is not None and strong_ok
                            and (loss.get("strong", {}).get("lost_writes", 0) == 0))
    return result


def _region_loss(config: RegionLabConfig, run: _Run, nodes: dict[str, list[Any]],
                 clients: dict[str, redis.Redis]) -> dict[str, Any]:
    """Lose the last region outright while it writes; what the others hold is what survived."""
    names = list(nodes)
    victim, survivor = names[-1], names[0]
    client = clients[victim]
    if config.loss_during_cut:
        _set_cut(nodes, True)
        _wait_links(nodes, up=False, timeout_s=config.converge_timeout_s)
    acked_aa: list[tuple[str | int | None, float]] = []
    acked_strong: list[tuple[str | int | None, float]] = []
    deadline = time.monotonic() + config.loss_s
    for number in range(100_000):
        if time.monotonic() >= deadline:
            break
        member = f"loss-{number}"
        if _call(client, "SADD", "aa:rpo", member)[0] == OK:
            acked_aa.append((member, run.now()))
        if _call(client, "SADD", "strong:rpo", member)[0] == OK:
            acked_strong.append((member, run.now()))
    lost_at = run.now()
    for entry in nodes[victim]:
        if entry.pid and launcher.is_our_node(entry.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(entry.pid, signal.SIGKILL)
    # Whatever the survivor holds once its link to the victim is down and its copy is stable.
    survivor_client = clients[survivor]
    held: set[str] = set()
    stable_rounds, previous = 0, None
    settle_deadline = time.monotonic() + config.converge_timeout_s
    for _ in range(200):
        if time.monotonic() >= settle_deadline:
            break
        outcome, members = _call(survivor_client, "SMEMBERS", "aa:rpo")
        if outcome == OK:
            held = set(members)
            stable_rounds = stable_rounds + 1 if held == previous else 0
            previous = held
            if stable_rounds >= 10:
                break
        time.sleep(0.1)
    outcome, strong_members = _call(survivor_client, "SMEMBERS", "strong:rpo")
    strong_held = set(strong_members) if outcome == OK else set()
    return {"victim": victim, "survivor": survivor, "during_cut": config.loss_during_cut,
            "writes_per_s": round(len(acked_aa) / config.loss_s, 1),
            "active_active": region_loss_rpo(acked_aa, held, lost_at),
            "strong": region_loss_rpo(acked_strong, strong_held, lost_at)}


def summary(result: dict[str, Any]) -> str:
    """A few lines for the terminal."""
    lines = [f"region scenario: {'PASSED' if result['passed'] else 'FAILED'} "
             f"({result['operations']} active-active ops, {result['strong_operations']} strong)"]
    for region, row in sorted(result["availability_during_cut"].items()):
        lines.append(f"  during the cut, {region}: active-active writes "
                     f"{row['aa_ok']}/{row['aa_total']} ok, strong {row['strong_ok']}/"
                     f"{row['strong_total']} ok")
    lines.append(f"  converged {result['converge_after_heal_s']} s after the heal")
    for link, worst in sorted(result["max_lag"].items()):
        if worst:
            lines.append(f"  link {link}: max lag {worst['lag_entries']} entries, "
                         f"{worst['lag_seconds']} s while up; {worst['stale_seconds']} s "
                         "without a pull while down")
    loss = result.get("region_loss")
    if loss:
        aa, strong = loss["active_active"], loss["strong"]
        cut = " while cut off" if loss.get("during_cut") else ""
        lines.append(f"  loss of {loss['victim']}{cut} ({loss['writes_per_s']} writes/s): "
                     "active-active "
                     f"RPO {aa['lost_writes']} of {aa['acknowledged']} writes, "
                     f"{aa['rpo_seconds']} s; strong RPO {strong['lost_writes']} of "
                     f"{strong['acknowledged']}")
    lines.extend(f"  problem: {problem}" for problem in result["check"]["problems"][:10])
    return "\n".join(lines)
