"""The `stream` workload (XADD; a consumer group reading with XREADGROUP, acking with XACK;
consumers killed and their pending entries reclaimed with XAUTOCLAIM):
- against a real redis-server (the control: the workload and its checker are right on a real
  Streams implementation): every acknowledged XADD delivered and acked, consumers really
  killed holding entries, and every entry a dead consumer held delivered again by a reclaim;
  the checker fails on the run's own records when a reclaim and its ack are removed;
- the run's verdict, summary line and HTML section (with the rates and lag chart) for a
  stream check, passing and failing.
The real chaos runs of the workload on phalanx are in `test_stream_chaos.py`."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from phalanx.chaos import workloads
from phalanx.chaos.control import NodeInfo
from phalanx.chaos.report import render_html
from phalanx.chaos.report_workload import render_stream_png
from phalanx.chaos.stream_workload import StreamWorkload, producers_for
from phalanx.chaos.workload import WorkloadConfig
from phalanx.checker import check_stream
from phalanx.checker.stream_check import CLAIM
from phalanx.ops.ports import free_port as _free_port

REDIS_SERVER = shutil.which("redis-server")




@pytest.fixture
def redis_port() -> Iterator[int]:
    if REDIS_SERVER is None:
        pytest.skip("redis-server is not installed")
    import redis

    root = Path(tempfile.mkdtemp(prefix="phalanx-stream-"))
    port = _free_port()
    process = subprocess.Popen([REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1",
                                "--save", "", "--appendonly", "no", "--dir", str(root)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        client = redis.Redis(port=port, socket_timeout=1.0)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.05)
        client.close()
        yield port
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
        shutil.rmtree(root, ignore_errors=True)


def test_producers_and_consumers_split() -> None:
    assert producers_for(1) == (1, 3)
    assert producers_for(3) == (1, 3)
    assert producers_for(4) == (2, 3)
    assert producers_for(8) == (4, 4)


@pytest.mark.timeout(90)
def test_stream_workload_against_redis_server(redis_port: int) -> None:
    nodes = [NodeInfo("n1", "z1", "r1", "127.0.0.1", redis_port, "", 0)]
    t0 = time.monotonic()
    workload = StreamWorkload(nodes, WorkloadConfig(clients=3, rate_ops_s=120, prefix="ctl"),
                              seed=5, t0=t0, until_s=9.0).start()
    try:
        while time.monotonic() - t0 < 9.5:
            time.sleep(0.2)
    finally:
        workload.stop()
    check = workload.final_check()
    assert check is not None
    assert check["ok"] is True, check["problems"]
    assert check["acknowledged_xadds"] > 100, check
    assert check["delivered"] >= check["acknowledged_xadds"]
    assert check["final_entries"] == check["acknowledged_xadds"] and check["final_pending"] == 0
    assert check["consumer_deaths"] >= 1 and check["held_by_the_dead"] >= 1, check
    # Every entry a dead consumer held unacked was delivered again by a reclaim.
    claimed = {d.entry_id for d in workload.deliveries if d.kind == CLAIM}
    held = [entry_id for _consumer, _at, ids in workload.deaths for entry_id in ids]
    assert held and set(held) <= claimed
    assert check["redeliveries"] >= len(set(held))
    assert len(check["timeline"]) == 9
    assert sum(row["produced"] for row in check["timeline"]) > 100
    # Plant a loss in the run's own records: a dead consumer's entry never reclaimed or acked.
    victim = held[0]
    produces, deliveries, acks = workload.records()
    planted = check_stream(produces,
                           [d for d in deliveries if not (d.entry_id == victim and d.kind == CLAIM)],
                           [dataclasses.replace(a, entry_ids=tuple(
                               i for i in a.entry_ids if i != victim)) for a in acks])
    assert not planted.ok and len(planted.unacked) == 1


def _result(check: dict[str, object]) -> dict[str, object]:
    return {
        "scenario": "leader-kill", "seed": 1, "mode": "local", "duration_s": 3.0,
        "started_at": "2026-01-01T00:00:00+00:00", "cluster": {"nodes": [{"id": "n1"}]},
        "ops": {"ok": 10, "fail": 0, "info": 0, "total": 10}, "availability": 1.0,
        "nines": 1.0, "rto_ms": {"median": None, "max": None, "faults": []},
        "lost_acknowledged_writes": 0, "rpo": {"lost_writes": 0, "span_s": 0.0},
        "linearizable": True, "linearizability": {"verdict": "linearizable", "explain": ""},
        "faults": [{"kind": "leader-kill", "targets": ["n1"], "at_s": 1.0, "end_s": 2.0}],
        "timeline": [], "events": [], "throughput_ops_s": 2.0,
        "latency_ms": {"p50": 1.0, "p90": 1.0, "p99": 1.0, "p999": 1.0, "max": 1.0},
        "workload": "stream", "workload_check": check}


def test_a_stream_check_in_the_verdict_the_summary_and_the_page() -> None:
    from phalanx.checker import Ack, Delivery, Produce

    produces = [Produce("a", "ok", 0.1, 0.2, "1-0"), Produce("b", "ok", 1.1, 1.2, "2-0")]
    deliveries = [Delivery("1-0", "a", "c1", "new", 0.3, 0.4),
                  Delivery("2-0", "b", "c1", "new", 1.3, 1.4)]
    acks = [Ack(("1-0", "2-0"), "c1", "ok", 1.5, 1.6, 2)]
    from phalanx.checker.stream_check import stream_timeline

    good = {**check_stream(produces, deliveries, acks).to_json(), "consumer_deaths": 1,
            "consumer_deaths_at_s": [1.5],
            "timeline": stream_timeline(produces, deliveries, acks, 3.0)}
    result = _result(good)
    assert workloads.passed(result)
    line = workloads.summary(result) or ""
    assert line.startswith("2 acknowledged XADDs (0 unknown, 0 failed): 0 never delivered")
    png = render_stream_png(result)
    assert png is not None and png.startswith(b"\x89PNG")
    page = render_html(result)
    assert "Stream accounting" in page and 'class="verdict good"' in page
    assert "consumer group&#x27;s lag" in page
    # One entry never acked: the run fails, and says why everywhere.
    bad = {**check_stream(produces, deliveries, []).to_json(), "timeline": []}
    result = _result(bad)
    assert not workloads.passed(result)
    assert workloads.failure_reasons(result)[0].startswith("2 acknowledged XADDs never acked")
    page = render_html(result)
    assert 'class="verdict bad"' in page and "never acked" in page
    assert render_stream_png(result) is None  # no timeline, no chart (and no failure)
