"""A member whose disk was wiped must not come back under its old id (Raft would forget its
vote); the node refuses to start and says what to do."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

from integration_harness import LocalCluster, wait_until

from phalanx.ops import launcher


def test_a_wiped_member_refuses_to_start_and_the_cluster_is_unaffected(cluster: Any) -> None:
    """Proves: after kill -9 of a follower and the loss of its data (its groups directory is
    deleted; its config stays), `phalanx restart` of that node exits with code 2 and a message
    naming the lost disk and the way out (decommission, join as a new node), instead of
    bootstrapping an empty voter under the old id; the other nodes keep serving."""
    c: LocalCluster = cluster(3)
    leader = c.leader()
    victim = c.others(leader)[0]
    writer = c.client(leader)
    for i in range(20):
        assert writer.set(f"wiped:{i}", str(i)) is True
    c.wait_converged()
    c.kill(victim)
    shutil.rmtree(Path(victim.data_dir) / "groups")
    pid = c.restart(victim, wait=False)
    wait_until(lambda: not launcher.pid_alive(pid), 30, f"the restarted {victim.id} to exit")
    log = launcher.tail(victim.log_path, 40)
    assert "refusing to start" in log and "wiped" in log and "decommission" in log, log
    assert not (Path(victim.data_dir) / "groups" / "0").exists(), "it bootstrapped anyway"
    survivor = c.client(c.others(victim)[0])
    started = time.monotonic()
    assert survivor.set("after-wipe", "ok") is True
    assert survivor.get("wiped:7") == "7"
    print(f"a wiped {victim.id} refused to start; a write through a survivor took "
          f"{(time.monotonic() - started) * 1000:.0f} ms")
