"""The `phalanx` command line: the `main` group and where each command lives.

- `phalanx.cli.cluster`: the lifecycle of a local cluster (up, down, status, failover, restart);
  the logic is `phalanx.ops.launcher` and `phalanx.ops.admin`.
- `phalanx.cli.node`: run one node (`phalanx.server` is the node runtime).
- `phalanx.cli.ops`: operating a running cluster through its admin API (drain, decommission,
  readmit, replace, split, merge, analyze, lb-config, haproxy-config).
- `phalanx.cli.lab`: the chaos lab (demo, chaos run; `phalanx.chaos`).
- `phalanx.cli.sim`: the deterministic simulator (`phalanx.sim`).
- `phalanx.cli.bench`: the benchmark suite of a source checkout (benchmarks/).

Rules of this package (see docs/architecture.md):
- Commands parse flags and print; the logic lives in the library.
- A configuration error is one line naming the field, exit code 2 (like a usage error). Other
  failures print one clear line (plus context such as log tails) and exit 1; no tracebacks for
  expected failures (`phalanx.cli.common.fail`).
- Heavy modules are imported inside the commands, so `phalanx --help` stays fast.
- This package is the one place outside the tests that may import the tools (sim, chaos,
  testing); tests/architecture checks it.
"""

from __future__ import annotations

import click

from phalanx.cli.bench import bench
from phalanx.cli.cluster import down, failover, restart, status, up
from phalanx.cli.lab import chaos, demo
from phalanx.cli.node import node
from phalanx.cli.ops import (
    analyze,
    decommission,
    drain,
    haproxy_config,
    lb_config,
    merge,
    readmit,
    replace,
    split,
)
from phalanx.cli.sim import sim
from phalanx.compiled import status as compiled_status

__all__ = ["main"]


@click.group()
@click.version_option(
    package_name="phalanx",
    # Says whether this process runs the mypyc-compiled hot path (phalanx/compiled.py).
    message=f"%(prog)s, version %(version)s, {compiled_status().describe()}",
)
def main() -> None:
    """phalanx: a fault-tolerant, Redis-compatible key-value store."""


for _command in (demo, chaos, sim, node, up, down, status, failover, drain, decommission,
                 readmit, replace, split, merge, analyze, haproxy_config, lb_config, restart, bench):
    main.add_command(_command)
