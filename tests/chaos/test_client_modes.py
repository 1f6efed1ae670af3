"""Short real chaos runs (3 local nodes, ~14 s each) with the retrying client modes: phalanx's
smart client, and a real HAProxy started by the lab with the generated config. The faults are
real (kill -9 of the leader); no acknowledged write is lost, the history (every attempt) is
linearizable, and both views of availability are in the result."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from phalanx.chaos.result import RESULT_KEYS
from phalanx.chaos.run_config import RunConfig
from phalanx.chaos.runner import run_chaos

pytestmark = pytest.mark.timeout(180)

REGISTER_KINDS = {"read", "write", "cas"}


def run(client: str, seed: int) -> tuple[dict[str, object], list[tuple[str, int | None]],
                                          object]:
    started: list[tuple[str, int | None]] = []
    config = RunConfig(scenario="leader-kill", duration_s=14.0, seed=seed, nodes=3, zones=3,
                       clients=3, rate_ops_s=120.0, warmup_s=3.0, recovery_s=4.0,
                       client=client, deadline_s=5.0)
    artifacts = run_chaos(config, on_started=lambda what, pid: started.append((what, pid)))
    return artifacts.result, started, artifacts


def assert_both_views(result: dict[str, object], artifacts: object, client: str) -> None:
    assert set(RESULT_KEYS) <= set(result)
    json.dumps(result, allow_nan=False)
    assert result["faults"], "no fault was injected"
    assert result["lost_acknowledged_writes"] == 0, result["rpo"]
    assert result["linearizable"], result["linearizability"]
    assert result["client"] == {"mode": client, "deadline_s": 5.0}
    assert result["register_key_epoch_s"] is None  # a short run keeps its keys
    app = result["application"]
    ops = result["ops"]
    assert isinstance(app, dict) and isinstance(ops, dict)
    assert app["calls"] > 100
    # Every attempt is a request of the raw view, and the retries are the difference.
    assert app["attempts"] == ops["total"]
    assert app["retries"] == ops["total"] - app["calls"]
    # Every register attempt is one operation of the checked history.
    attempts = [op for op in artifacts.ops if op.kind in REGISTER_KINDS]  # type: ignore[attr-defined]
    assert len(list(artifacts.history)) == len(attempts)  # type: ignore[attr-defined]
    [fault] = result["rto_ms"]["faults"]  # type: ignore[index]
    assert fault["rto_ms"] is not None
    assert fault["calls"] > 0 and fault["attempts"] >= fault["calls"]
    assert fault["app_availability"] is not None and fault["raw_availability"] is not None
    assert set(result["per_kind"]) == {"leader-kill"}  # type: ignore[arg-type]


def test_smart_client_run() -> None:
    result, _started, artifacts = run("smart", seed=21)
    assert_both_views(result, artifacts, "smart")
    # The smart client sends to the shard's leader: its attempts name real nodes.
    nodes = {n["id"] for n in result["cluster"]["nodes"]}  # type: ignore[index]
    assert {op.node for op in artifacts.ops} <= nodes  # type: ignore[attr-defined]


@pytest.mark.skipif(shutil.which("haproxy") is None and not os.path.exists("/usr/sbin/haproxy"),
                    reason="haproxy is not installed (.ci/run installs it)")
def test_haproxy_client_run() -> None:
    result, started, artifacts = run("haproxy", seed=22)
    assert_both_views(result, artifacts, "haproxy")
    assert {op.node for op in artifacts.ops} == {"haproxy"}  # type: ignore[attr-defined]
    [(what, pid)] = started
    assert what == "haproxy" and pid is not None
    # The lab stopped its HAProxy.
    assert not os.path.exists(f"/proc/{pid}"), f"haproxy (pid {pid}) outlived the run"


def test_queue_workload_through_the_smart_client() -> None:
    config = RunConfig(scenario="leader-kill", duration_s=14.0, seed=23, nodes=3, zones=3,
                       clients=3, rate_ops_s=120.0, warmup_s=3.0, recovery_s=4.0,
                       client="smart", workload="queue")
    result = run_chaos(config).result
    assert result["faults"], "no fault was injected"
    assert result["client"]["mode"] == "smart"
    check = result["workload_check"]
    assert check is not None and check["ok"] is True, check
    assert check["acknowledged_pushes"] > 20, check
    assert result["lost_acknowledged_writes"] == 0, result["rpo"]


def test_the_bank_workload_is_refused_with_the_smart_client() -> None:
    with pytest.raises(ValueError, match="WATCH / MULTI"):
        run_chaos(RunConfig(scenario="leader-kill", client="smart", workload="bank"))
