"""Crash safety with real processes: SIGKILL a writer at random moments, no acknowledged loss.

A child (`crash_writer.py`) persists batches in a loop and prints each acknowledged batch's last
index. The test kills it with SIGKILL at random instants, reopens the store and checks that every
acknowledged index is present with its term and data (or covered by the snapshot), that the log
is contiguous and that whatever else survived is well-formed. Then it starts the next round in a
new term on the same directory. Note: SIGKILL loses no page cache, so this proves crash-atomicity
of the store at any instant, not power-loss durability (that rests on synchronous=FULL).
"""

from __future__ import annotations

import os
import random
import select
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from phalanx.raft.types import Index
from phalanx.storage.sqlite import SqliteLogStore

sys.path.insert(0, str(Path(__file__).parent))
from crash_writer import entry_data, snapshot_data

WRITER = Path(__file__).with_name("crash_writer.py")
ROUNDS = 6
DEADLINE_SECONDS = 60.0


def _wait_ready(process: subprocess.Popen[bytes], timeout_seconds: float) -> int:
    """Wait for the child's "ready <last index>" line; return that last index."""
    if process.stdout is None:
        raise RuntimeError("child has no stdout")
    readable, _, _ = select.select([process.stdout], [], [], timeout_seconds)
    if not readable:
        raise TimeoutError("crash writer did not start in time")
    line = process.stdout.readline()
    if not line.startswith(b"ready"):
        raise RuntimeError(f"crash writer failed to start: {line!r}")
    return int(line.split()[1])


def _check_store(directory: Path, acknowledged: dict[int, int]) -> int:
    """Reopen the store and check it against the acknowledged (index -> term) map."""
    with SqliteLogStore(directory) as store:
        first, last = store.first_index(), store.last_index()
        snapshot = store.snapshot()
        log = store.entries(first, Index(last + 1))
        assert [entry.index for entry in log] == list(range(first, last + 1)), "log not contiguous"
        by_index = {entry.index: entry for entry in log}
        for index, term in acknowledged.items():
            assert index <= last, f"acknowledged index {index} lost (last index {last})"
            if index >= first:
                entry = by_index[Index(index)]
                assert (entry.term, entry.data) == (term, entry_data(term, index)), (
                    f"acknowledged entry {index} damaged: {entry}"
                )
            else:
                assert index <= snapshot.meta.index, f"index {index} compacted without snapshot"
        for entry in log:  # unacknowledged survivors must be whole, too
            assert entry.data == entry_data(entry.term, entry.index), f"bad entry {entry}"
        if not snapshot.empty:
            assert snapshot.data == snapshot_data(snapshot.meta.index), "bad snapshot payload"
        assert store.initial_state()[0].term >= max(acknowledged.values(), default=0)
        return last


def test_sigkill_loses_no_acknowledged_batch() -> None:
    rng = random.Random(int(os.environ.get("PHALANX_CRASH_SEED", time.time_ns() % 10**6)))
    deadline = time.monotonic() + DEADLINE_SECONDS
    acknowledged: dict[int, int] = {}
    with tempfile.TemporaryDirectory(prefix="phalanx-crash-") as root:
        directory = Path(root) / "groups" / "1"
        for round_number in range(1, ROUNDS + 1):
            if time.monotonic() > deadline:
                break
            process = subprocess.Popen(
                [
                    sys.executable,
                    str(WRITER),
                    str(directory),
                    str(round_number),
                    str(rng.randrange(10**9)),
                ],
                stdout=subprocess.PIPE,
            )
            try:
                start_last = _wait_ready(process, timeout_seconds=20)
                time.sleep(rng.uniform(0.05, 0.6))
                process.send_signal(signal.SIGKILL)
                output, _ = process.communicate(timeout=20)
            finally:
                if process.poll() is None:
                    process.kill()
                    process.wait(timeout=20)
            assert process.returncode == -signal.SIGKILL, f"writer died early: {process.returncode}"
            lines = output.split(b"\n")[:-1]  # the last piece is partial (or empty)
            # The child appends after whatever survived: those indices are now in this term.
            batch_start = start_last + 1
            for line in lines:
                last_acknowledged = int(line)
                for index in range(batch_start, last_acknowledged + 1):
                    acknowledged[index] = round_number
                batch_start = last_acknowledged + 1
            last = _check_store(directory, acknowledged)
            print(f"round {round_number}: {len(lines)} batches acknowledged, last index {last}")
        assert len(acknowledged) > 0, "no batch was ever acknowledged"
