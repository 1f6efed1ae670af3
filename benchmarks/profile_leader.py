"""py-spy profile of a phalanx leader under redis-benchmark load; prints the top frames.

    .venv/bin/pip install py-spy
    .venv/bin/python benchmarks/profile_leader.py [--test set|get] [--clients 50] [--seconds 10]

Starts a 3-node cluster (node defaults) in a temporary directory, drives the leader with
redis-benchmark (no pipelining) and records the leader with `py-spy record --format raw` (idle
frames excluded, `--gil` not set: wall-clock on-CPU samples of every thread) for `--seconds`.
Prints the functions with the most own samples and with the most samples anywhere on the stack.
Stops everything by pid at the end (also on error). The raw profile is kept under
benchmarks/results/ for a flame graph (e.g. speedscope or inferno/flamegraph.pl).
"""

from __future__ import annotations

import argparse
import collections
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import resp_bench as rb  # noqa: E402


def top_frames(raw: str, count: int) -> tuple[list[tuple[str, int]], list[tuple[str, int]], int]:
    own: collections.Counter[str] = collections.Counter()
    anywhere: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, samples = line.rpartition(" ")
        if not stack or not samples.isdigit():
            continue
        n = int(samples)
        total += n
        frames = [f for f in stack.split(";") if not f.startswith("process ")
                  and not f.startswith("thread ")]
        if not frames:
            continue
        own[frames[-1]] += n
        for frame in set(frames):
            anywhere[frame] += n
    return own.most_common(count), anywhere.most_common(count), total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--test", default="set", choices=("set", "get"))
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(py_spy).exists():
        print("install py-spy first: .venv/bin/pip install py-spy", file=sys.stderr)
        return 2
    root = Path(tempfile.mkdtemp(prefix="phalanx-profile-"))
    cluster = rb.Phalanx(root / "phalanx")
    load: subprocess.Popen[bytes] | None = None
    try:
        cluster.data_dir.mkdir()
        cluster.start(3, timeout=90)
        leader = next(n for n, role in sorted(cluster.roles().items()) if role == "leader")
        pid = next(n["pid"] for n in cluster.nodes if n["id"] == leader)
        host, port = cluster.address(leader)
        load = subprocess.Popen(["redis-benchmark", "-h", host, "-p", str(port), "-t", args.test,
                                 "-c", str(args.clients), "-n", "100000000", "-r", "100000",
                                 "-q", "-l"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
        time.sleep(2)
        out = HERE / "results" / f"profile-{args.test}-c{args.clients}.txt"
        out.parent.mkdir(exist_ok=True)
        subprocess.run([py_spy, "record", "--pid", str(pid), "--duration", str(args.seconds),
                        "--format", "raw", "--output", str(out), "--nonblocking"],
                       check=True, timeout=args.seconds + 60, capture_output=True)
        own, anywhere, total = top_frames(out.read_text(), args.top)
        print(f"leader {leader} (pid {pid}), redis-benchmark -t {args.test} -c {args.clients}, "
              f"{args.seconds} s, {total} samples; raw profile: {out}")
        print("\nown samples (leaf frames):")
        for frame, n in own:
            print(f"  {100 * n / total:5.1f}%  {frame}")
        print("\non the stack (inclusive):")
        for frame, n in anywhere:
            print(f"  {100 * n / total:5.1f}%  {frame}")
    finally:
        if load is not None:
            rb.stop_process(load)
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
