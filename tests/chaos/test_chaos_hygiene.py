"""Nothing outlives a chaos run: the run's pid file, SIGTERM / SIGHUP turned into an orderly
stop, and the reaping of a killed run's leftovers at the next start. Real lab processes (the
`phalanx chaos run` command as a subprocess) and real node processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from phalanx.chaos.pidfile import RunRecord, reap_stale

pytestmark = pytest.mark.timeout(180)


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def wait_for(predicate: object, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def spawned() -> Iterator[list[subprocess.Popen[bytes]]]:
    processes: list[subprocess.Popen[bytes]] = []
    try:
        yield processes
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
            process.wait(timeout=10)


def sleeper(marker: str, processes: list[subprocess.Popen[bytes]]) -> int:
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", marker],
                               start_new_session=True)
    processes.append(process)
    return process.pid


def test_a_stale_record_is_reaped_and_a_live_one_is_not(
        tmp_path: Path, spawned: list[subprocess.Popen[bytes]]) -> None:
    # A dead lab: a process that has exited.
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    ours = sleeper(f"{tmp_path}/node-a", spawned)
    stranger = sleeper("somebody-elses-node", spawned)
    leftover = tmp_path / "leftover"
    leftover.mkdir()
    stale = {"lab_pid": gone.pid, "lab_start": "1", "clusters": [],
             "temporary": [str(leftover)],
             "processes": [{"pid": ours, "marker": f"{tmp_path}/node-a", "what": "node"},
                           # the pid was reused by someone else: its marker does not match
                           {"pid": stranger, "marker": f"{tmp_path}/node-b", "what": "node"}]}
    (tmp_path / f"{gone.pid}.json").write_text(json.dumps(stale))
    # A live lab (a running process, its real start time): never touched.
    live_lab = sleeper("live-lab", spawned)
    protected = sleeper(f"{tmp_path}/node-c", spawned)
    start = Path(f"/proc/{live_lab}/stat").read_text().rpartition(")")[2].split()[19]
    live = {"lab_pid": live_lab, "lab_start": start, "clusters": [], "temporary": [],
            "processes": [{"pid": protected, "marker": f"{tmp_path}/node-c", "what": "node"}]}
    (tmp_path / f"{live_lab}.json").write_text(json.dumps(live))

    done = reap_stale(tmp_path)

    assert len(done) == 1 and "1 process(es) killed" in done[0], done
    wait_for(lambda: not alive(ours), 10, "the stale run's node to die")
    assert alive(stranger), "a reused pid (another command line) was killed"
    assert alive(protected), "a live run's process was killed"
    assert not leftover.exists()
    assert not (tmp_path / f"{gone.pid}.json").exists()
    assert (tmp_path / f"{live_lab}.json").exists()


def test_the_record_is_rewritten_as_processes_start(tmp_path: Path) -> None:
    record = RunRecord(tmp_path)
    record.add_process(123, "/x/n1", "node n1")
    record.add_process(123, "/x/n1", "node n1")  # once
    record.add_cluster("/x")
    on_disk = json.loads(record.path.read_text())
    assert on_disk["lab_pid"] == os.getpid()
    assert on_disk["processes"] == [{"pid": 123, "marker": "/x/n1", "what": "node n1"}]
    assert on_disk["clusters"] == ["/x"]
    record.close()
    assert not record.path.exists()


def start_lab(run_dir: Path, report: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PHALANX_CHAOS_RUN_DIR": str(run_dir)}
    return subprocess.Popen([sys.executable, "-m", "phalanx", "chaos", "run", "--scenario",
                             "leader-kill", "--duration", "120s", "--nodes", "3", "--seed", "5",
                             "--json", "--report", str(report)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)


def recorded(run_dir: Path, lab: int) -> dict[str, object]:
    try:
        return json.loads((run_dir / f"{lab}.json").read_text())  # type: ignore[no-any-return]
    except (OSError, ValueError):
        return {}


def node_pids(run_dir: Path, lab: int) -> list[int]:
    return [int(p["pid"]) for p in recorded(run_dir, lab).get("processes") or []  # type: ignore[attr-defined]
            if str(p.get("what", "")).startswith("node")]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_an_interrupted_run_leaves_no_cluster_behind(
        tmp_path: Path, spawned: list[subprocess.Popen[bytes]], sig: signal.Signals) -> None:
    run_dir = tmp_path / "runs"
    lab = start_lab(run_dir, tmp_path / "report")
    spawned.append(lab)
    wait_for(lambda: len(node_pids(run_dir, lab.pid)) >= 3, 90, "the lab to start 3 nodes")
    temporary = [Path(str(t)) for t in recorded(run_dir, lab.pid).get("temporary") or []]  # type: ignore[attr-defined]
    pids = node_pids(run_dir, lab.pid)
    assert all(alive(pid) for pid in pids)
    time.sleep(2.0)  # into the run (the workload and the monitor are running)
    lab.send_signal(sig)
    code = lab.wait(timeout=90)
    stderr = lab.stderr.read().decode(errors="replace") if lab.stderr else ""
    assert code == 128 + sig, stderr
    assert f"interrupted by {sig.name}" in stderr, stderr
    survivors = [pid for pid in pids if alive(pid)]
    assert not survivors, f"node processes outlived the run: {survivors}"
    assert not (run_dir / f"{lab.pid}.json").exists()
    assert temporary and not any(path.exists() for path in temporary)


def test_a_killed_run_is_reaped_by_the_next(
        tmp_path: Path, spawned: list[subprocess.Popen[bytes]]) -> None:
    run_dir = tmp_path / "runs"
    lab = start_lab(run_dir, tmp_path / "report")
    spawned.append(lab)
    wait_for(lambda: len(node_pids(run_dir, lab.pid)) >= 3, 90, "the lab to start 3 nodes")
    pids = node_pids(run_dir, lab.pid)
    lab.send_signal(signal.SIGKILL)  # no clean-up at all
    lab.wait(timeout=30)
    assert all(alive(pid) for pid in pids), "the nodes should outlive a SIGKILLed lab"
    done = reap_stale(run_dir)
    assert len(done) == 1, done
    wait_for(lambda: not any(alive(pid) for pid in pids), 60, "the leftover nodes to die")
    assert not list(run_dir.glob("*.json"))
