"""A chaos run's figures as Markdown (for docs/ and closing notes):
`python -m phalanx.chaos.markdown RESULT.json [--every-s 300]`.

Rules of this file: the input is the result dict exactly as produced (any value may be missing
or null); nothing is computed that the result does not hold except counts, sums and the
choice of which resource samples to show (one every `every_s`). Numbers are printed as they
are, never rounded up: percentages are cut (not rounded) to 3 decimals.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Mapping, Sequence
from typing import Any


def _map(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _pct(value: Any) -> str:
    if not isinstance(value, int | float):
        return "-"
    cut = math.floor(value * 100_000) / 1000  # never rounded up
    return f"{cut:.3f} %"


def _ms(value: Any) -> str:
    return f"{value:.0f} ms" if isinstance(value, int | float) else "-"


def _v(value: Any) -> str:
    return "-" if value is None else str(value)


def render_markdown(result: Mapping[str, Any], every_s: float = 300.0) -> str:
    ops = _map(result.get("ops"))
    app = _map(result.get("application"))
    client = _map(result.get("client"))
    cluster = _map(result.get("cluster"))
    faults = [_map(f) for f in result.get("faults") or []]
    kinds: dict[str, int] = {}
    for fault in faults:
        kinds[str(fault.get("kind"))] = kinds.get(str(fault.get("kind")), 0) + 1
    lines = [
        f"- scenario `{result.get('scenario')}`, seed {result.get('seed')}, "
        f"{result.get('duration_s')} s of workload, started {result.get('started_at')}",
        f"- cluster: {len(cluster.get('nodes') or [])} nodes in "
        f"{len({n.get('zone') for n in cluster.get('nodes') or []})} zones, "
        f"{_v(cluster.get('shards'))} shards, replication factor "
        f"{_v(cluster.get('replication_factor'))}",
        f"- client: {_v(client.get('mode'))} (deadline {_v(client.get('deadline_s'))} s per "
        f"call); register keys renamed every {_v(result.get('register_key_epoch_s'))} s",
        f"- faults: {len(faults)} ("
        + ", ".join(f"{n} {k}" for k, n in sorted(kinds.items())) + ")",
        f"- application availability: {_pct(app.get('availability'))} "
        f"({_v(app.get('succeeded'))} of {_v(app.get('calls'))} calls succeeded within the "
        f"deadline; {_v(app.get('failed'))} failed, {_v(app.get('unknown'))} unknown outcome, "
        f"{_v(app.get('late'))} late; {_v(app.get('retries'))} retries in "
        f"{_v(app.get('retried_calls'))} calls; not succeeded by kind: "
        f"{_v(app.get('not_succeeded_by_kind'))})",
        f"- raw availability: {_pct(result.get('availability'))} ({_v(ops.get('ok'))} of "
        f"{_v(ops.get('total'))} attempts ok, {_v(ops.get('fail'))} failed, "
        f"{_v(ops.get('info'))} unknown outcome)",
        f"- acknowledged writes lost: {_v(result.get('lost_acknowledged_writes'))}; "
        f"linearizability: {_v(_map(result.get('linearizability')).get('verdict'))}",
        f"- RTO over all faults: median {_ms(_map(result.get('rto_ms')).get('median'))}, "
        f"worst {_ms(_map(result.get('rto_ms')).get('max'))}; throughput "
        f"{_v(result.get('throughput_ops_s'))} successful requests/s; latency "
        f"{_v(result.get('latency_ms'))}",
        "",
        "| fault kind | faults | RTO median | RTO worst | not recovered | raw | application "
        "| retries |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for kind, row in sorted(_map(result.get("per_kind")).items()):
        r = _map(row)
        lines.append(f"| {kind} | {_v(r.get('faults'))} | {_ms(r.get('median'))} | "
                     f"{_ms(r.get('max'))} | {_v(r.get('not_recovered'))} | "
                     f"{_pct(r.get('raw_availability'))} | {_pct(r.get('app_availability'))} | "
                     f"{_v(r.get('retries'))} |")
    lines += ["", *resources_markdown(_map(result.get("resources")), every_s)]
    return "\n".join(lines) + "\n"


def resources_markdown(used: Mapping[str, Any], every_s: float) -> list[str]:
    samples: Sequence[Mapping[str, Any]] = used.get("samples") or []
    if not samples:
        return ["(no resource samples)"]
    nodes = sorted({n for s in samples for n in _map(s.get("nodes"))})
    head = "| t (s) | " + " | ".join(f"{n} RSS / disk (MiB)" for n in nodes) + \
        " | lab RSS (MiB) | load 1m |"
    lines = [head, "|" + "---|" * (len(nodes) + 3)]
    shown = -math.inf
    for position, sample in enumerate(samples):
        at = float(sample.get("t_s") or 0.0)
        if at - shown < every_s and position != len(samples) - 1:
            continue
        shown = at
        cells = []
        for node in nodes:
            entry = _map(_map(sample.get("nodes")).get(node))
            cells.append(f"{_v(entry.get('rss_mb'))} / {_v(entry.get('disk_mb'))}")
        load = sample.get("load") or [None]
        lines.append(f"| {at:.0f} | " + " | ".join(cells) +
                     f" | {_v(sample.get('lab_rss_mb'))} | {_v(load[0])} |")
    summary = _map(used.get("summary"))
    load_1m = _map(summary.get("load_1m"))
    lines += ["", f"{_v(summary.get('samples'))} samples every {_v(used.get('interval_s'))} s; "
              f"machine load (1 min): mean {_v(load_1m.get('mean'))}, max "
              f"{_v(load_1m.get('max'))} (2 cores)."]
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    every = 300.0
    if "--every-s" in args:
        position = args.index("--every-s")
        every = float(args[position + 1])
        del args[position:position + 2]
    if len(args) != 1:
        print("usage: python -m phalanx.chaos.markdown RESULT.json [--every-s 300]",
              file=sys.stderr)
        return 2
    with open(args[0]) as source:
        result = json.load(source)
    sys.stdout.write(render_markdown(result, every))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
