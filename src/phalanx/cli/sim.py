"""`phalanx sim`: the deterministic simulator from the command line.

Rules of this file: the command parses flags and prints; the simulator is `phalanx.sim`
(imported inside the command). A --seeds run spreads seeds over worker processes and prints the
replay command of every failing seed.
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor

import click


def _run_seed_quiet(args: tuple[int, str | None, bool]) -> object:
    from phalanx.sim import run_seed

    seed, bug, digest = args
    return run_seed(seed, bug=bug, digest=digest)


@click.command()
@click.option("--seed", type=int, default=None, help="Replay exactly this seed.")
@click.option("--seeds", type=int, default=None, help="Run this many seeds.")
@click.option("--start", type=int, default=None,
              help="First seed of a --seeds run (default: random, printed).")
@click.option("--jobs", type=int, default=0, help="Worker processes (default: CPU count).")
@click.option("--trace/--no-trace", default=False, help="Print the event trace of a --seed run.")
@click.option("--trace-lines", type=int, default=400, help="How many trace lines to keep.")
@click.option("--bug", type=str, default=None,
              help="Plant a known bug (see --mutants for the list) to show it is caught.")
@click.option("--stop-on-failure/--keep-going", default=False)
@click.option("--mutants", "mutants", is_flag=True, default=False,
              help="Mutation testing: plant each known bug in turn and report the first seed "
                   "that catches it (--seeds: budget per bug, default 5000; --start: first "
                   "seed, default 1). Any bug that survives is a failure (exit 1).")
@click.option("--fast", is_flag=True, default=False,
              help="With --mutants: narrow each seed's plan to the faults that expose the bug "
                   "(the quick version `make test` runs).")
@click.option("--only", multiple=True, help="With --mutants: only these bugs (repeatable).")
@click.option("--digest", is_flag=True, default=False,
              help="With --seeds: print each seed's digest (a hash of its history, statistics "
                   "and outcome) and one over all of them, to check that a change kept every "
                   "run the same.")
def sim(seed: int | None, seeds: int | None, start: int | None, jobs: int, trace: bool,
        trace_lines: int, bug: str | None, stop_on_failure: bool, mutants: bool, fast: bool,
        only: tuple[str, ...], digest: bool) -> None:
    """Run the deterministic simulator: the real Raft core under seeded faults."""
    from phalanx.sim import SeedResult, run_seed
    from phalanx.sim.mutants import PLANTED

    if bug is not None and bug not in PLANTED:
        raise click.BadParameter(f"unknown bug {bug!r}; known: {', '.join(PLANTED)}",
                                 param_hint="--bug")
    if mutants:
        _run_mutants(seeds or 5000, 1 if start is None else start, jobs, fast, only)
        return

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
    work = [(first + offset, bug, digest) for offset in range(count)]
    overall = hashlib.sha256()
    with ProcessPoolExecutor(max_workers=workers) as pool:
        for done, outcome in enumerate(pool.map(_run_seed_quiet, work, chunksize=4), start=1):
            assert isinstance(outcome, SeedResult)
            result = outcome
            events += result.events
            operations += result.operations
            if digest:
                click.echo(f"seed {result.seed} digest {result.digest}")
                overall.update(f"{result.seed} {result.digest}\n".encode())
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
    if digest:
        click.echo(f"digest of all {count} seeds: {overall.hexdigest()[:16]}")
    if failures:
        click.echo("failing seeds: " + " ".join(str(f.seed) for f in failures))
        sys.exit(1)


def _hunt_one(args: tuple[str, int, int, bool]) -> object:
    from phalanx.sim.mutants import hunt

    bug, first, count, fast = args
    return hunt(bug, range(first, first + count), fast=fast)


def _run_mutants(count: int, first: int, jobs: int, fast: bool, only: tuple[str, ...]) -> None:
    from phalanx.sim.mutants import PLANTED, HuntResult

    names = list(only) or list(PLANTED)
    unknown = [name for name in names if name not in PLANTED]
    if unknown:
        raise click.BadParameter(f"unknown bugs {unknown}; known: {', '.join(PLANTED)}",
                                 param_hint="--only")
    mode = "fast knobs" if fast else "swarm plans"
    click.echo(f"mutation testing: {len(names)} planted bugs, seeds {first}..{first + count - 1} "
               f"each ({mode}); stop at the first seed that catches each")
    began = time.monotonic()
    survivors: list[str] = []
    work = [(name, first, count, fast) for name in names]
    with ProcessPoolExecutor(max_workers=jobs or os.cpu_count() or 1) as pool:
        for outcome in pool.map(_hunt_one, work):
            assert isinstance(outcome, HuntResult)
            if outcome.caught:
                click.echo(f"  caught   {outcome.bug:26} first seed {outcome.first_seed} "
                           f"({outcome.seeds_run} seeds, {outcome.seconds:.1f} s): "
                           f"{outcome.error[:110]}")
            else:
                survivors.append(outcome.bug)
                click.echo(f"  SURVIVED {outcome.bug:26} {outcome.seeds_run} seeds "
                           f"({outcome.seconds:.1f} s): {PLANTED[outcome.bug]}")
    click.echo(f"{len(names) - len(survivors)} of {len(names)} planted bugs caught in "
               f"{time.monotonic() - began:.1f} s")
    if survivors:
        click.echo("surviving mutants: " + " ".join(survivors))
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
