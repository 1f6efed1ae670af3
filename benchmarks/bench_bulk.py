"""`phalanx bench --only bulk`: a bulk load into an idle cluster (issue 15's row "bulk load of 1M
keys in 1,000-key pipelines, idle cluster": goal no error, no leader change).

A fresh 3-node, 1-shard cluster with the node defaults (as `phalanx up` starts it: consistency
checker on, default election timeout). One redis-py client on the shard's leader sends
`bulk:<9 digits>` -> 16 bytes as SETs, 1,000 per pipeline (non-transactional), one pipeline
after the other, as a user's loader would. Nothing is retried: every error reply counts, and a
pipeline whose connection failed or timed out counts all its keys as errors (outcome unknown),
then the client reconnects (to whichever node now leads) and goes on. Leader changes = groups
whose term grew on any replica between the start and the end of the load (an election), plus
the replicas' own `leader_changes` counters. Before the load, every group's leader and term
must have stayed put for 3 s (right after start-up the placement driver may move a shard's
leadership to its preferred node). The load is bounded in keys and in time (a
deadline; the row then says how far it got). At the end: every node has applied the leader's
commit index, and the key count of each replica.

Tests: tests/benchmarks/test_bench_smoke.py (a tiny load, structure only).
"""

from __future__ import annotations

import contextlib
import os
import time
from typing import TYPE_CHECKING, Any

import bench_sections as more
from bench_common import log, wait_for

if TYPE_CHECKING:
    from bench_common import Processes
    from phalanx_bench import Settings

PIPELINE = 1_000
VALUE = b"x" * 16
#: Stop counting after this many failed pipelines (the row says so): a dead cluster would
#: otherwise take the whole deadline.
MAX_FAILED_PIPELINES = 20


def group_terms(cluster: Any) -> dict[str, int]:
    """group -> the highest term any replica reports."""
    terms: dict[str, int] = {}
    for node in more.entries(cluster):
        with contextlib.suppress(OSError, RuntimeError):
            for group, item in (more.status(node).get("local") or {}).items():
                terms[group] = max(terms.get(group, 0), int(item.get("term", 0)))
    return terms


def elections(before: dict[str, int], after: dict[str, int]) -> int:
    """Terms gained over all groups between two `group_terms` (each +1 is an election)."""
    return sum(max(0, term - before.get(group, term)) for group, term in after.items())


def term_changes(before: dict[str, int], after: dict[str, int]) -> list[str]:
    """'group G: term A -> B' for every group whose term grew."""
    return [f"group {group}: term {before.get(group, term)} -> {term}"
            for group, term in sorted(after.items()) if term > before.get(group, term)]


def _leaders(cluster: Any) -> dict[tuple[str, str], tuple[int, Any]]:
    found = {}
    for node in more.entries(cluster):
        with contextlib.suppress(OSError, RuntimeError):
            for group, item in (more.status(node).get("local") or {}).items():
                found[(node.id, group)] = (int(item.get("term", 0)), item.get("leader"))
    return found


def settle(cluster: Any, quiet_s: float = 3.0, timeout: float = 60.0) -> bool:
    """Wait (bounded) until every replica of every group has named the same leader and term
    for `quiet_s`: right after start-up the placement driver may still move a shard's
    leadership to its preferred node (a term change that is no failure). False: it never
    went quiet within `timeout` (the section goes on and says so)."""
    deadline = time.monotonic() + timeout
    seen, since = _leaders(cluster), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = _leaders(cluster)
        if now != seen or any(leader is None for _term, leader in now.values()):
            seen, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            return True
    return False


def bulk_section(processes: Processes, settings: Settings) -> dict[str, Any]:
    import redis

    keys = settings.bulk_keys
    out: dict[str, Any] = {"keys": keys, "pipeline": PIPELINE, "value_bytes": len(VALUE),
                           "sent": 0, "errors": 0, "failed_pipelines": 0, "error_samples": [],
                           "error": ""}
    cluster = None
    client = None
    try:
        cluster = more.start_cluster(processes, "bulk", 3, {})
        leader = more.shard_leader(cluster)
        wait_for(lambda: more.caught_up(cluster, leader), 60, "the cluster to settle",
                 poll=0.2)
        out["settled"] = settle(cluster)
        leader = more.shard_leader(cluster)
        terms_before = group_terms(cluster)
        changes_before = more.leader_changes(cluster)
        out["load_1m_start"] = round(os.getloadavg()[0], 2)
        host, port = more.hostport(leader.resp)
        client = redis.Redis(host=host, port=port, socket_timeout=60)
        began = time.monotonic()
        deadline = began + settings.bulk_timeout_s
        for first in range(0, keys, PIPELINE):
            if time.monotonic() > deadline:
                out["error"] = (f"stopped at the {settings.bulk_timeout_s:g} s deadline after "
                                f"{first:,} keys")
                break
            if out["failed_pipelines"] >= MAX_FAILED_PIPELINES:
                out["error"] = f"stopped after {MAX_FAILED_PIPELINES} failed pipelines"
                break
            last = min(keys, first + PIPELINE)
            pipe = client.pipeline(transaction=False)
            for number in range(first, last):
                pipe.set(b"bulk:%09d" % number, VALUE)
            out["sent"] = last
            try:
                replies = pipe.execute(raise_on_error=False)
            except (redis.ConnectionError, redis.TimeoutError) as failure:
                # Outcome unknown for the whole pipeline: every key counts as an error.
                out["errors"] += last - first
                out["failed_pipelines"] += 1
                out["error_samples"].append(f"keys {first}..: {type(failure).__name__}: "
                                            f"{str(failure)[:160]}")
                client.close()
                with contextlib.suppress(RuntimeError):
                    host, port = more.hostport(more.shard_leader(cluster).resp)
                client = redis.Redis(host=host, port=port, socket_timeout=60)
                continue
            if last % 100_000 == 0:
                log(f"bulk: {last:,} keys, {time.monotonic() - began:.0f} s, "
                    f"{out['errors']} errors [load {os.getloadavg()[0]:.1f}]")
            bad = [r for r in replies if isinstance(r, Exception) or r is not True]
            if bad:
                out["errors"] += len(bad)
                out["failed_pipelines"] += 1
                out["error_samples"].append(f"keys {first}..: {len(bad)} errors, first: "
                                            f"{str(bad[0])[:160]}")
        out["wall_s"] = round(time.monotonic() - began, 2)
        out["keys_per_s"] = round(out["sent"] / max(out["wall_s"], 1e-9), 1)
        out["load_1m_end"] = round(os.getloadavg()[0], 2)
        terms_after = group_terms(cluster)
        out["elections"] = elections(terms_before, terms_after)
        out["term_changes"] = term_changes(terms_before, terms_after)
        out["leader_changes"] = more.leader_changes(cluster) - changes_before
        del out["error_samples"][5:]
        leader = more.shard_leader(cluster)
        wait_for(lambda: more.caught_up(cluster, leader), 300,
                 "every node to apply the load", poll=0.5)
        out["node_keys"] = {}
        for node in more.entries(cluster):
            with contextlib.suppress(OSError, RuntimeError, KeyError):
                out["node_keys"][node.id] = int(more.status(node)["local"]["1"]["keys"])
        log(f"bulk: {out['sent']:,} keys in {out['wall_s']} s ({out['keys_per_s']:,.0f} "
            f"keys/s), {out['errors']} errors, {out['elections']} elections, "
            f"{out['leader_changes']} replica leader changes; keys per node "
            f"{out['node_keys']} [load {out['load_1m_start']} -> {out['load_1m_end']}]")
    except Exception as error:  # a section's failure is reported, the suite goes on
        out["error"] = f"{type(error).__name__}: {error}"[:400]
        log(f"bulk: FAILED {out['error']}")
    finally:
        if client is not None:
            client.close()
        if cluster is not None:
            more.stop_cluster(processes, cluster)
    return out


def clean(section: dict[str, Any] | None) -> bool | None:
    """True: every key sent, no error, no election, no leader change; None: not measured."""
    if not section or "wall_s" not in section:
        return None
    return (section["sent"] == section["keys"] and section["errors"] == 0
            and section.get("elections") == 0 and section.get("leader_changes") == 0
            and not section.get("error"))


def markdown(section: dict[str, Any] | None) -> list[str]:
    if not section:
        return []
    lines = ["", "## Bulk load into an idle cluster", "",
             "A fresh 3-node, 1-shard cluster (node defaults); one redis-py client on the "
             f"leader sends {section['keys']:,} SETs (`bulk:<9 digits>` -> "
             f"{section['value_bytes']} bytes) in non-transactional pipelines of "
             f"{section['pipeline']:,}, one after the other. Nothing is retried: an error "
             "reply counts once, a pipeline whose connection failed counts all its keys. "
             "Elections = terms gained by any group during the load; replica leader changes = "
             "the replicas' own counters (an election counts once per replica). Goal: no "
             "error, no leader change.", ""]
    if "wall_s" not in section:
        return [*lines, f"**bulk load failed: {section.get('error') or 'not measured'}**"]
    per_node = ", ".join(f"{n} {k:,}" for n, k in (section.get("node_keys") or {}).items())
    lines += ["| keys sent | wall s | keys/s | errors | failed pipelines | elections "
              "| replica leader changes | keys per node at the end | load 1 min start -> end |",
              "|---:|---:|---:|---:|---:|---:|---:|---|---|",
              f"| {section['sent']:,} / {section['keys']:,} | {section['wall_s']:.1f} | "
              f"{section['keys_per_s']:,.0f} | {section['errors']:,} | "
              f"{section['failed_pipelines']} | {section['elections']} | "
              f"{section['leader_changes']} | {per_node} | {section.get('load_1m_start')} -> "
              f"{section.get('load_1m_end')} |"]
    lines += [f"- {sample}" for sample in section.get("error_samples", [])]
    if section.get("term_changes"):
        lines += ["- terms gained during the load: " + "; ".join(section["term_changes"])]
    if section.get("settled") is False:
        lines += ["- the cluster's leaders did not stay put for 3 s within 60 s before the "
                  "load (started anyway)"]
    if section.get("error"):
        lines += [f"- **{section['error']}**"]
    return lines
