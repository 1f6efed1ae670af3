"""Which code holds the event loop when a heartbeat goes out late (issue 15, lever 8).

A leader whose loop runs one callback for longer than its heartbeat interval sends its
heartbeats late, and a follower cannot tell a late leader from a dead one. The ticker says
*that* the loop stalled ("event loop stalled: the ticker ran N ms late"); this watchdog says
*what* ran: a daemon thread that, while the loop has not beaten for `threshold_ms`, samples the
loop thread's Python stack every few ms (as `py-spy dump` would, from inside), and when the loop
beats again logs the stall: its length, how much CPU the process used meanwhile (CPU close to
the wall time: our own code held the loop; far below it: the process was not scheduled, i.e.
the machine starved it), and the stacks it sampled, most frequent first.

Off unless `PHALANX_STALL_WATCH_MS` is set (a diagnostic: `benchmarks/detection_lab.py --stall-
watch 50` sets it on every node). Counts are exported in `status()` either way.

Rules of this file:
- The thread only reads: `sys._current_frames()` and the clock. It never touches the loop or
  any object the loop owns (the frame walk reads code names and line numbers only), so it
  needs no lock; the loop side is one float store per beat (atomic under the GIL).
- Bounded: at most `MAX_SAMPLES` stacks kept per stall, at most `MAX_FRAMES` frames each.
"""

from __future__ import annotations

import collections
import logging
import os
import sys
import threading
import time
from types import FrameType

logger = logging.getLogger(__name__)

ENV = "PHALANX_STALL_WATCH_MS"
#: How often the watchdog looks (and samples during a stall).
SAMPLE_S = 0.005
MAX_SAMPLES = 400
MAX_FRAMES = 14


def _schedstat(tid: int) -> tuple[float, float]:
    """(seconds on a CPU, seconds runnable but waiting for one) of thread `tid` so far, from
    Linux's /proc/self/task/TID/schedstat; zeros where there is none."""
    try:
        with open(f"/proc/self/task/{tid}/schedstat", "rb") as handle:
            fields = handle.read().split()
        return int(fields[0]) / 1e9, int(fields[1]) / 1e9
    except (OSError, ValueError, IndexError):
        return 0.0, 0.0


def _stack(frame: FrameType | None) -> tuple[str, ...]:
    """The innermost `MAX_FRAMES` frames as "file:function:line", innermost first."""
    out: list[str] = []
    while frame is not None and len(out) < MAX_FRAMES:
        code = frame.f_code
        name = code.co_filename
        cut = name.rfind("phalanx/")
        short = name[cut + 8:] if cut >= 0 else name.rsplit("/", 1)[-1]
        out.append(f"{short}:{code.co_name}:{frame.f_lineno}")
        frame = frame.f_back
    return tuple(out)


class StallWatch:
    """The loop calls `beat()` at every tick; a thread reports stalls longer than the threshold."""

    def __init__(self, threshold_ms: float) -> None:
        self.threshold_s = threshold_ms / 1000
        self.last_beat = time.monotonic()
        self.stalls = 0
        self.longest_ms = 0.0
        #: True while the thread sees the loop stalled (and samples it).
        self.in_stall = False
        #: The last stall reported: (ms, CPU ms over the sampled part, the most frequent stack).
        self.last: tuple[float, float, tuple[str, ...]] | None = None
        #: Every distinct stack sampled during the last stall reported.
        self.last_stacks: frozenset[tuple[str, ...]] = frozenset()
        self._loop_thread = threading.get_ident()
        self._loop_tid = threading.get_native_id()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def from_env(cls) -> StallWatch | None:
        text = os.environ.get(ENV, "").strip()
        if not text:
            return None
        try:
            threshold = float(text)
        except ValueError:
            logger.warning("%s=%r is not a number of ms: stall watch off", ENV, text)
            return None
        return cls(threshold) if threshold > 0 else None

    def beat(self) -> None:
        self.last_beat = time.monotonic()

    def start(self) -> None:
        self._loop_thread = threading.get_ident()
        self._loop_tid = threading.get_native_id()
        self.last_beat = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="stall-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=1.0)

    def status(self) -> dict[str, object]:
        return {"threshold_ms": self.threshold_s * 1000, "stalls": self.stalls,
                "longest_ms": round(self.longest_ms, 1)}

    def _run(self) -> None:
        samples: list[tuple[str, ...]] = []
        stalled_since = 0.0
        cpu_at_start = 0.0
        beat_at_start = 0.0
        sched_at_start = (0.0, 0.0)
        # Between stalls it looks every quarter threshold (each look takes the GIL), during
        # one every SAMPLE_S.
        idle_s = max(SAMPLE_S, self.threshold_s / 4)
        while not self._stop.wait(SAMPLE_S if stalled_since else idle_s):
            now = time.monotonic()
            beat = self.last_beat
            if stalled_since and beat != beat_at_start:
                sched = _schedstat(self._loop_tid)
                self._report(now - beat_at_start, now - stalled_since,
                             time.process_time() - cpu_at_start,
                             (sched[0] - sched_at_start[0], sched[1] - sched_at_start[1]),
                             samples)
                samples = []
                stalled_since = 0.0
                self.in_stall = False
            if now - beat < self.threshold_s:
                continue
            if not stalled_since:
                stalled_since, beat_at_start = now, beat
                cpu_at_start = time.process_time()
                sched_at_start = _schedstat(self._loop_tid)
            if len(samples) < MAX_SAMPLES:
                frame = sys._current_frames().get(self._loop_thread)
                samples.append(_stack(frame))
                del frame
            self.in_stall = True  # (after the first sample: a test holds the loop until then)

    def _report(self, stall_s: float, watched_s: float, cpu_s: float,
                sched: tuple[float, float], samples: list[tuple[str, ...]]) -> None:
        self.stalls += 1
        self.longest_ms = max(self.longest_ms, stall_s * 1000)
        counts = collections.Counter(samples).most_common(3)
        self.last = (stall_s * 1000, cpu_s * 1000, counts[0][0] if counts else ())
        self.last_stacks = frozenset(samples)
        shown = "; ".join(f"{n}x [{' < '.join(stack)}]" for stack, n in counts)
        on_cpu, waiting = sched
        # The loop thread was either on a CPU (our code held the loop), runnable but waiting
        # for a CPU (the machine starved the process), or blocked (a syscall, the GIL).
        logger.warning("stall watch: loop held %.0f ms; over the last %.0f ms the loop thread was "
                       "on a CPU %.0f ms, waiting for a CPU %.0f ms, blocked %.0f ms (process CPU "
                       "%.0f ms; %d samples): %s", stall_s * 1000, watched_s * 1000,
                       on_cpu * 1000, waiting * 1000,
                       max(0.0, watched_s - on_cpu - waiting) * 1000, cpu_s * 1000,
                       len(samples), shown)
