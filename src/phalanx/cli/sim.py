"""`phalanx sim`: the deterministic simulator from the command line.

Rules of this file: the command parses flags and prints; the simulator is `phalanx.sim`
(imported inside the command). A --seeds run spreads seeds over worker processes and prints the
replay command of every failing seed.
"""

from __future__ import annotations

import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor

import click


def _run_seed_quiet(args: tuple[int, str | None]) -> object:
    from phalanx.sim import run_seed

    seed, bug = args
    return run_seed(seed, bug=bug)


@click.command()
@click.option("--seed", type=int, default=None, help="Replay exactly this seed.")
@click.option("--seeds", type=int, default=None, help="Run this many seeds.")
@click.option("--start", type=int, default=None,
              help="First seed of a --seeds run (default: random, printed).")
@click.option("--jobs", type=int, default=0, help="Worker processes (default: CPU count).")
@click.option("--trace/--no-trace", default=False, help="Print the event trace of a --seed run.")
@click.option("--trace-lines", type=int, default=400, help="How many trace lines to keep.")
@click.option("--bug", type=click.Choice(["ack-before-fsync", "read-without-confirm"]),
              default=None, help="Plant a known bug in the simulated node (to show it is caught).")
@click.option("--stop-on-failure/--keep-going", default=False)
def sim(seed: int | None, seeds: int | None, start: int | None, jobs: int, trace: bool,
        trace_lines: int, bug: str | None, stop_on_failure: bool) -> None:
    """Run the deterministic simulator: the real Raft core under seeded faults."""
    from phalanx.sim import SeedResult, run_seed

    if seed is not None:
        result = run_seed(seed, trace=trace, bug=bug, trace_lines=trace_lines)
        click.echo(f"seed {seed}: plan {result.plan}")
        if trace:
            for line in result.trace:
                click.echo(line)
        _print_result(result)
        sys.exit(0 if result.ok else 1)
    count = seeds or 100
    first = start if start is not None else int.from_bytes(os.urandom(4), "big")
    click.echo(f"running {count} seeds from {first} (replay any with `phalanx sim --seed N`)")
    began = time.monotonic()
    failures: list[SeedResult] = []
    events = operations = 0
    workers = jobs or os.cpu_count() or 1
    work = [(first + offset, bug) for offset in range(count)]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        for done, outcome in enumerate(pool.map(_run_seed_quiet, work, chunksize=4), start=1):
            assert isinstance(outcome, SeedResult)
            result = outcome
            events += result.events
            operations += result.operations
            if not result.ok:
                failures.append(result)
                click.echo(f"FAIL seed {result.seed}: {result.error.splitlines()[0]}")
                click.echo(f"     replay: {result.replay_command()}")
                if stop_on_failure:
                    pool.shutdown(cancel_futures=True)
                    break
            if done % 100 == 0:
                click.echo(f"  {done}/{count} seeds, {len(failures)} failed, "
                           f"{time.monotonic() - began:.0f} s")
    elapsed = time.monotonic() - began
    click.echo(f"{count} seeds, {len(failures)} failed, {events} events, {operations} client "
               f"operations checked, in {elapsed:.1f} s")
    if failures:
        click.echo("failing seeds: " + " ".join(str(f.seed) for f in failures))
        sys.exit(1)


def _print_result(result: object) -> None:
    from phalanx.sim import SeedResult

    assert isinstance(result, SeedResult)
    stats = " ".join(f"{key}={value}" for key, value in result.stats.items())
    if result.ok:
        click.echo(f"seed {result.seed}: ok ({result.events} events, {result.operations} client "
                   f"operations, {result.simulated_ms:.0f} simulated ms; {stats})")
    else:
        click.echo(f"seed {result.seed}: FAILED\n{result.error}")
        click.echo(f"replay: {result.replay_command()}")
