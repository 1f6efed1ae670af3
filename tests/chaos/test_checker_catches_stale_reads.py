"""The checker must be able to fail on a real system: a redis-server primary and a replica, the
register workload writing to both and reading from both; mid-run the replica is cut loose
(`REPLICAOF NO ONE`), so its reads are stale from then on. The history must be reported as not
linearizable."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from phalanx.chaos.control import NodeInfo
from phalanx.chaos.workload import Workload, WorkloadConfig
from phalanx.checker import Verdict, check
from phalanx.ops.ports import free_port

REDIS_SERVER = shutil.which("redis-server")
pytestmark = [pytest.mark.skipif(REDIS_SERVER is None, reason="redis-server is not installed"),
              pytest.mark.timeout(120)]




def wait_ping(port: int, timeout: float = 10.0) -> redis.Redis:
    client = redis.Redis(port=port, socket_timeout=1.0, protocol=2)
    deadline = time.monotonic() + timeout
    while True:
        try:
            client.ping()
            return client
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@pytest.fixture
def primary_and_replica() -> Iterator[tuple[int, int]]:
    assert REDIS_SERVER is not None
    root = Path(tempfile.mkdtemp(prefix="phalanx-stale-"))
    processes: list[subprocess.Popen[bytes]] = []
    try:
        primary, replica = free_port(), free_port()
        common = ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                  "--dir", str(root)]
        processes.append(subprocess.Popen([REDIS_SERVER, "--port", str(primary), *common,
                                           "--dbfilename", "p.rdb"],
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_ping(primary)
        processes.append(subprocess.Popen([REDIS_SERVER, "--port", str(replica), *common,
                                           "--dbfilename", "r.rdb",
                                           "--replicaof", "127.0.0.1", str(primary)],
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        client = wait_ping(replica)
        deadline = time.monotonic() + 20
        while client.info("replication").get("master_link_status") != "up":
            assert time.monotonic() < deadline, "the replica did not sync"
            time.sleep(0.05)
        yield primary, replica
    finally:
        for process in processes:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
        shutil.rmtree(root, ignore_errors=True)


def node(name: str, port: int) -> NodeInfo:
    return NodeInfo(id=name, zone="z1", region="r1", resp_host="127.0.0.1", resp_port=port,
                    admin_url="", pid=0)


def test_stale_replica_reads_are_not_linearizable(primary_and_replica: tuple[int, int]) -> None:
    primary, replica = primary_and_replica
    t0 = time.monotonic()
    workload = Workload([node("primary", primary), node("replica", replica)],
                        WorkloadConfig(clients=4, rate_ops_s=400.0, register_keys=3,
                                       register_share=1.0, prefix="stale"),
                        seed=5, t0=t0, until_s=6.0).start()
    try:
        time.sleep(2.0)
        redis.Redis(port=replica, protocol=2).execute_command("REPLICAOF", "NO", "ONE")
        time.sleep(4.5)
    finally:
        workload.stop()
    history = workload.state.history
    reads = [op for op in history if op.kind == "read" and op.outcome == "ok"]
    assert len(reads) > 100
    result = check(history)
    assert result.verdict is Verdict.NOT_LINEARIZABLE, result.explain()
    assert "cannot be linearized" in result.explain()
