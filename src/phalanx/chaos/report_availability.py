"""The HTML report's availability section: the raw and the application view, per fault and per
fault kind, with the retries; and what the run cost over time (RSS, disk, load).

Rules of this file: same as `phalanx.chaos.report` (the input is the result dict exactly as
produced, any value may be missing or null, every text is escaped). Nothing is computed here
that the result does not hold: the numbers come from `phalanx.chaos.metrics` and
`phalanx.chaos.resources`.
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from typing import Any

_DASH = "-"


def _e(value: Any) -> str:
    return html.escape(_DASH if value is None else str(value))


def _pct(value: Any) -> str:
    if not isinstance(value, int | float):
        return _DASH
    return f"{value * 100:.3f} %"


def _ms(value: Any) -> str:
    return f"{value:.0f} ms" if isinstance(value, int | float) else _DASH


def _map(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _table(head: list[str], rows: list[list[str]]) -> str:
    header = "".join(f"<th>{_e(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>"
                   for row in rows)
    return f"<table><thead><tr>{header}</tr></thead><tbody>{body}</tbody></table>"


def client_sentence(result: Mapping[str, Any]) -> str:
    """What the availability numbers of this run mean, in one paragraph (plain text)."""
    client = _map(result.get("client"))
    mode = client.get("mode") or "raw"
    app = _map(result.get("application"))
    ops = _map(result.get("ops"))
    raw = (f"raw view: {_pct(result.get('availability'))} of {ops.get('total', _DASH)} "
           "attempts succeeded")
    if mode == "raw":
        return (f"Raw client (one node per request, no retry): {raw}. Every request is its own "
                "call, so the application view is the same number.")
    return (f"{mode} client, {client.get('deadline_s')} s deadline per call. Application view: "
            f"{_pct(app.get('availability'))} of {app.get('calls', _DASH)} calls succeeded "
            f"within their deadline ({app.get('failed', _DASH)} failed, "
            f"{app.get('unknown', _DASH)} with an unknown outcome, {app.get('late', _DASH)} "
            f"late; {app.get('retries', _DASH)} retries in {app.get('retried_calls', _DASH)} "
            f"calls). {raw[0].upper() + raw[1:]}. Every attempt is in the checked history.")


def availability_section(result: Mapping[str, Any]) -> str:
    parts = [f"<p>{_e(client_sentence(result))}</p>"]
    faults = [_map(f) for f in _map(result.get("rto_ms")).get("faults") or []]
    if faults:
        rows = []
        for fault in faults:
            window = fault.get("window_s") or [None, None]
            rows.append([_e(f"{fault.get('at_s', 0):.1f} s"), _e(fault.get("kind")),
                         _e(", ".join(map(str, fault.get("targets") or []))),
                         _e(f"{window[0]:.1f}-{window[1]:.1f} s" if None not in window
                            else _DASH),
                         _e(_ms(fault.get("rto_ms"))),
                         _e(f"{_pct(fault.get('raw_availability'))} of "
                            f"{fault.get('attempts', _DASH)}"),
                         _e(f"{_pct(fault.get('app_availability'))} of "
                            f"{fault.get('calls', _DASH)}"),
                         _e(fault.get("retries"))])
        parts.append("<h3>Per fault (requests started from the fault to 2 s after it healed)"
                     "</h3>")
        parts.append(_table(["At", "Kind", "Targets", "Window", "RTO", "Raw (attempts)",
                             "Application (calls)", "Retries"], rows))
    kinds = _map(result.get("per_kind"))
    if kinds:
        rows = [[_e(kind), _e(_map(v).get("faults")), _e(_ms(_map(v).get("median"))),
                 _e(_ms(_map(v).get("max"))), _e(_map(v).get("not_recovered")),
                 _e(_pct(_map(v).get("raw_availability"))),
                 _e(_pct(_map(v).get("app_availability"))), _e(_map(v).get("retries"))]
                for kind, v in kinds.items()]
        parts.append("<h3>Per fault kind</h3>")
        parts.append(_table(["Kind", "Faults", "RTO median", "RTO worst", "Not recovered",
                             "Raw", "Application", "Retries"], rows))
    parts.append(resources_html(result))
    return f"<section>\n<h2>Availability: raw and as the application sees it</h2>\n" \
           f"{''.join(parts)}\n</section>"


def resources_html(result: Mapping[str, Any]) -> str:
    used = _map(result.get("resources"))
    summary = _map(used.get("summary"))
    nodes = _map(summary.get("nodes"))
    if not nodes:
        return ""
    rows = []
    for node, entry in nodes.items():
        e = _map(entry)
        rows.append([_e(node)] + [_e(e.get(f"{m}_{w}")) for m in ("rss_mb", "disk_mb")
                                  for w in ("first", "last", "max")])
    lab = _map(summary.get("lab_rss_mb"))
    load = _map(summary.get("load_1m"))
    return ("<h3>Resources over the run</h3>"
            + _table(["Node", "RSS first (MiB)", "RSS last", "RSS max", "Disk first (MiB)",
                      "Disk last", "Disk max"], rows)
            + f"<p>{_e(summary.get('samples'))} samples every {_e(used.get('interval_s'))} s. "
              f"The lab process: {_e(lab.get('first'))} MiB at the start, {_e(lab.get('last'))}"
              f" MiB at the end, {_e(lab.get('max'))} MiB at most. Machine load (1 min): mean "
              f"{_e(load.get('mean'))}, max {_e(load.get('max'))}.</p>")
