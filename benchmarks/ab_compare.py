"""A/B: `phalanx bench` on two checkouts in one run, interleaved, reported as ratios.

    .venv/bin/python benchmarks/ab_compare.py --base /path/to/old-checkout --new . \
        --rounds 2 --only writes,reads,failover --output /tmp/ab

Each checkout runs its OWN code (`<checkout>/.venv/bin/phalanx bench --quick`, started in that
checkout, so the suite and the node processes are that checkout's). Rounds alternate
base, new, base, new, ... so slow drifts of a shared, noisy machine hit both sides alike. The
report gives, per measured row, the median over rounds of each side and new/base (throughput:
above 1 = the new code is faster; failover gap: below 1 = the new code recovers faster).

Rules of this file:
- A measurement, not a test: no threshold, no pass/fail. Every run's raw results stay in
  `--output` (`<label>-<round>/results.json`) for a second look.
- Only phalanx rows are compared (the peers are the same programs on both sides).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench_ratios import cut_down, cut_up


def run_bench(checkout: Path, only: str, output: Path) -> dict[str, object]:
    command = [str(checkout / ".venv" / "bin" / "phalanx"), "bench", "--quick", "--only", only,
               "--output", str(output)]
    started = time.monotonic()
    completed = subprocess.run(command, cwd=checkout, capture_output=True, text=True,
                               timeout=1800, check=False)
    if completed.returncode != 0:
        sys.stderr.write(completed.stderr[-4000:])
        raise SystemExit(f"bench failed in {checkout} (exit {completed.returncode})")
    print(f"  {checkout}: {time.monotonic() - started:.0f} s", file=sys.stderr)
    result: dict[str, object] = json.loads((output / "results.json").read_text())
    return result


def rows(result: dict[str, object]) -> dict[str, float]:
    """The phalanx figures of one bench run, by a stable label."""
    found: dict[str, float] = {}
    for row in result.get("throughput") or []:  # type: ignore[union-attr]
        if isinstance(row, dict) and row.get("target", "").startswith("phalanx") \
                and row.get("rps_median"):
            found[f"{row['target']} {row['test']} c={row['clients']} ops/s"] = \
                float(row["rps_median"])
    for row in result.get("failover") or []:  # type: ignore[union-attr]
        if isinstance(row, dict) and row.get("target") == "phalanx" \
                and row.get("median_ms") is not None:
            found[f"phalanx {row['fault']} gap ms"] = float(row["median_ms"])
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", type=Path, required=True, help="the old checkout (with .venv)")
    parser.add_argument("--new", type=Path, required=True, help="the new checkout (with .venv)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--only", default="writes,reads,failover")
    parser.add_argument("--output", type=Path, default=Path("/tmp/phalanx-ab"))
    args = parser.parse_args()
    sides = {"base": args.base.resolve(), "new": args.new.resolve()}
    figures: dict[str, dict[str, list[float]]] = {"base": {}, "new": {}}
    for round_ in range(1, args.rounds + 1):
        for label, checkout in sides.items():
            print(f"round {round_}: {label}", file=sys.stderr)
            result = run_bench(checkout, args.only, args.output / f"{label}-{round_}")
            for name, value in rows(result).items():
                figures[label].setdefault(name, []).append(value)
    commits = {label: subprocess.run(["git", "-C", str(path), "rev-parse", "--short", "HEAD"],
                                     capture_output=True, text=True, check=False).stdout.strip()
               for label, path in sides.items()}
    print(f"\nA/B, {args.rounds} interleaved rounds of `phalanx bench --quick --only {args.only}`"
          f": base {commits['base']} vs new {commits['new']} (medians over rounds)\n")
    print("| row | base | new | new/base | base runs | new runs |")
    print("|---|---|---|---|---|---|")
    for name in sorted(set(figures["base"]) | set(figures["new"])):
        base = figures["base"].get(name, [])
        new = figures["new"].get(name, [])
        base_median = statistics.median(base) if base else None
        new_median = statistics.median(new) if new else None
        # new/base: ops/s rows are better higher (cut down), gap rows better lower (cut up).
        cut = cut_down if name.endswith("ops/s") else cut_up
        ratio = (cut(new_median / base_median)
                 if base_median and new_median is not None else "-")
        print(f"| {name} | {base_median if base_median is not None else '-'} | "
              f"{new_median if new_median is not None else '-'} | {ratio} | "
              f"{', '.join(f'{v:g}' for v in base)} | {', '.join(f'{v:g}' for v in new)} |")


if __name__ == "__main__":
    main()
