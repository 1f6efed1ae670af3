"""One process of callers of the `limits` rate-limiting library, unmodified, with its Redis
storage (tests/integration/test_apps_limits.py starts several, each through one node).

Usage: python limits_caller.py URL STRATEGY LIMIT KEY CALLS THREADS PAUSE
STRATEGY is fixed-window, moving-window or sliding-window-counter; LIMIT is limits' notation
("50/10 minutes"); each thread makes CALLS hits of KEY, pausing PAUSE seconds between them.
Prints one JSON line: {"admitted": n, "denied": n, "errors": {type: n}}. A call that raises
(a connection error while a node is down, an error reply) counts as NOT admitted.

Rules of this file: no phalanx import; the library talks to Redis exactly as in production.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections import Counter

from limits import parse, strategies
from limits.storage import storage_from_string

STRATEGIES = {
    "fixed-window": strategies.FixedWindowRateLimiter,
    "moving-window": strategies.MovingWindowRateLimiter,
    "sliding-window-counter": strategies.SlidingWindowCounterRateLimiter,
}


def main(argv: list[str]) -> None:
    url, strategy, limit, key, calls, threads, pause = argv
    storage = storage_from_string(url, socket_timeout=10, socket_connect_timeout=2)
    limiter = STRATEGIES[strategy](storage)
    item = parse(limit)
    counts: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    lock = threading.Lock()

    def run() -> None:
        for _ in range(int(calls)):
            try:
                outcome = "admitted" if limiter.hit(item, key) else "denied"
            except Exception as error:  # any failure = not admitted
                with lock:
                    errors[f"{type(error).__name__}: {str(error)[:80]}"] += 1
                outcome = "failed"
            with lock:
                counts[outcome] += 1
            time.sleep(float(pause))

    workers = [threading.Thread(target=run) for _ in range(int(threads))]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    print(json.dumps({"admitted": counts["admitted"], "denied": counts["denied"],
                      "failed": counts["failed"], "errors": dict(errors)}))


if __name__ == "__main__":
    main(sys.argv[1:])
