"""PhalanxClient against a real 5-node, 3-shard cluster while a shard leader is killed (-9).

Two threads share one client and write 500 keys (SET, idempotent) and INCR one counter key
(not idempotent) after every SET. When 150 keys are acknowledged, the leader of the counter's
shard is SIGKILLed. The workload must complete (every SET acknowledged), every acknowledged
SET must read back, and the counter must prove that no INCR was re-sent after an unknown
outcome: acknowledged INCRs <= final value <= acknowledged + OutcomeUnknownError INCRs.
Run in both redirect modes (proxy: any node forwards; moved: nodes answer -MOVED).
"""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))

from integration_harness import LocalCluster, settled, shard_of_key, shards_of, wait_map

from phalanx.client import OutcomeUnknownError, PhalanxClient

KEYS = 500
KILL_AFTER = 150
COUNTER = "counter:{c}"


@pytest.mark.timeout(180)
@pytest.mark.parametrize("redirect", ["proxy", "moved"])
def test_workload_survives_a_killed_shard_leader(redirect: str) -> None:
    cluster = LocalCluster(5, overrides={"shards": 3, "redirect": redirect},
                           name=f"client-{redirect}")
    client: PhalanxClient | None = None
    try:
        status = wait_map(cluster, lambda s: settled(s) and len(s["shards"]) == 3, 60,
                          "three shards, each with a leader")
        client = PhalanxClient([node.resp for node in cluster.nodes], request_timeout_s=20.0,
                               decode_responses=True)
        assert len(client.slot_map.shards) == 3
        counter_shard = shard_of_key(status, COUNTER)
        victim = shards_of(status)[counter_shard]["leader"]
        assert victim, f"shard {counter_shard} has no leader: {status.get('shards')}"

        lock = threading.Lock()
        acked: dict[str, str] = {}
        failures: list[str] = []
        incr = {"acked": 0, "unknown": 0}
        progress = threading.Condition(lock)

        def work(worker: int) -> None:
            assert client is not None
            for index in range(worker, KEYS, 2):
                key, value = f"key:{index}", f"value:{index}"
                try:
                    assert client.set(key, value) is True
                except Exception as error:
                    with lock:
                        failures.append(f"SET {key}: {type(error).__name__}: {error}")
                    continue
                with progress:
                    acked[key] = value
                    progress.notify_all()
                try:
                    client.incr(COUNTER)
                except OutcomeUnknownError:
                    with lock:
                        incr["unknown"] += 1
                except Exception as error:
                    with lock:
                        failures.append(f"INCR: {type(error).__name__}: {error}")
                else:
                    with lock:
                        incr["acked"] += 1

        workers = [threading.Thread(target=work, args=(w,), daemon=True) for w in (0, 1)]
        started = time.monotonic()
        for thread in workers:
            thread.start()
        with progress:
            assert progress.wait_for(lambda: len(acked) >= KILL_AFTER, timeout=60), \
                f"only {len(acked)} keys acknowledged before the kill: {failures[:3]}"
        cluster.kill(victim)
        killed_at = time.monotonic()
        for thread in workers:
            thread.join(timeout=90)
            assert not thread.is_alive(), "the workload did not finish"

        assert failures == [], failures[:5]
        assert len(acked) == KEYS
        keys = sorted(acked)
        assert client.mget(keys) == [acked[key] for key in keys]

        final = int(client.get(COUNTER))
        assert incr["acked"] <= final <= incr["acked"] + incr["unknown"], (incr, final)
        # It noticed the failover (an unknown outcome, a refused connection or a redirect each
        # mark the map stale, and the next call refreshes it).
        assert client.stats["refreshes"] >= 2, dict(client.stats)
        print(f"\n[{redirect}] {KEYS} SETs + INCRs in {time.monotonic() - started:.1f} s "
              f"(kill of {victim} at +{killed_at - started:.1f} s); incr {incr}, counter "
              f"{final}; client stats {dict(client.stats)}")
    finally:
        if client is not None:
            client.close()
        cluster.close()
