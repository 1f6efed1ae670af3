"""The HTML report's part about a workload's own check (queue accounting, bank sums, stream
accounting), and the stream workload's chart: produce / consume / ack rates and the consumer
group's lag and pending entries per second, with the faults shaded.

Rules of this file: same as `phalanx.chaos.report` (input is the result dict exactly as
produced, any value may be missing or null, every text is escaped; plots through matplotlib's
Agg canvas on a private `Figure`, never pyplot, PNG without metadata); nothing for the default
`register` workload, whose verdicts are the report's headline numbers.
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Mapping
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from phalanx.chaos.workloads import failure_reasons, summary

_INK = "#1f2933"
_MUTED = "#616e7c"
_GRID = "#e4e7eb"
_PRODUCED = "#3e6fa8"
_CONSUMED = "#6a9f7e"
_ACKED = "#8a63a6"
_LAG = "#c8574d"
_PENDING = "#d9a441"
_FAULT = "#9aa5b1"


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def workload_reasons(result: Mapping[str, Any]) -> list[str]:
    """Why the workload's own check failed (the FAIL banner's extra lines)."""
    return failure_reasons(result)


def workload_section(result: Mapping[str, Any]) -> str:
    """A `<section>` with the workload's verdict, numbers and examples; "" when it has none."""
    check = result.get("workload_check")
    if not isinstance(check, Mapping):
        return ""
    name = str(check.get("workload") or result.get("workload") or "workload")
    ok = check.get("ok") is True
    word = "holds" if ok else "FAILED"
    parts = [f"<p>Verdict: <b>{_e(word)}</b></p>"]
    line = summary(result)
    if line:
        parts.append(f"<p>{_e(line)}</p>")
    problems = [str(p) for p in check.get("problems") or []]
    if problems:
        parts.append("<ul>" + "".join(f"<li>{_e(p)}</li>" for p in problems) + "</ul>")
    examples = check.get("examples")
    if examples and not ok:
        parts.append(f"<pre>{_e(json.dumps(examples, indent=1, default=str)[:4000])}</pre>")
    chart = stream_chart_html(result) if name == "stream" else ""
    title = {"queue": "Queue accounting", "bank": "Bank invariant",
             "stream": "Stream accounting"}.get(name, name)
    return f"<section>\n<h2>{_e(title)}</h2>\n{''.join(parts)}{chart}\n</section>"


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def render_stream_png(result: Mapping[str, Any]) -> bytes | None:
    """The stream workload's chart as PNG bytes (None without a timeline): XADDs
    acknowledged, entries consumed (first delivery) and acked per second; below, the group's
    lag (acknowledged entries not acked yet) and pending entries (delivered, not acked) at
    each second's end, a cross where the lab killed a consumer; fault windows shaded."""
    check = result.get("workload_check")
    if not isinstance(check, Mapping):
        return None
    rows = check.get("timeline")
    if not isinstance(rows, list) or not rows:
        return None
    points = [row for row in rows
              if isinstance(row, Mapping) and _number(row.get("t_s")) is not None]
    if not points:
        return None
    seconds = [float(row["t_s"]) + 0.5 for row in points]

    def series(name: str) -> list[float]:
        return [_number(row.get(name)) or 0.0 for row in points]

    figure = Figure(figsize=(11.0, 4.6), dpi=110, facecolor="white")
    FigureCanvasAgg(figure)
    grid = figure.add_gridspec(2, 1, height_ratios=(1, 1), hspace=0.35)
    rates = figure.add_subplot(grid[0])
    lag = figure.add_subplot(grid[1], sharex=rates)
    for axes in (rates, lag):
        for side in ("top", "right"):
            axes.spines[side].set_visible(False)
        axes.tick_params(colors=_MUTED, labelsize=8.5, length=3)
        axes.grid(axis="y", color=_GRID, linewidth=0.8)
        axes.set_axisbelow(True)
    rates.plot(seconds, series("produced"), color=_PRODUCED, linewidth=1.6, label="produced")
    rates.plot(seconds, series("consumed"), color=_CONSUMED, linewidth=1.6, label="consumed")
    rates.plot(seconds, series("acked"), color=_ACKED, linewidth=1.2, linestyle=(0, (3, 2)),
               label="acked")
    lag.plot(seconds, series("lag"), color=_LAG, linewidth=1.6, label="lag")
    lag.plot(seconds, series("pending"), color=_PENDING, linewidth=1.2, label="pending")
    end_s = max(_number(result.get("duration_s")) or 0.0, seconds[-1] + 0.5)
    for fault in result.get("faults") or []:
        if not isinstance(fault, Mapping):
            continue
        start = _number(fault.get("at_s"))
        if start is None:
            continue
        stop = _number(fault.get("end_s"))
        for axes in (rates, lag):
            axes.axvspan(start, stop if stop is not None and stop > start else end_s,
                         color=_FAULT, alpha=0.18, linewidth=0, zorder=0)
    deaths = [at for at in (_number(v) for v in check.get("consumer_deaths_at_s") or [])
              if at is not None]
    if deaths:
        lag.plot(deaths, [0.0] * len(deaths), linestyle="none", marker="x", markersize=6,
                 color=_INK, clip_on=False, zorder=5, label="consumer killed")
    rates.set_xlim(0, end_s)
    rates.set_ylim(bottom=0)
    lag.set_ylim(bottom=0)
    rates.tick_params(labelbottom=False)
    rates.set_ylabel("entries / s", color=_MUTED, fontsize=9)
    lag.set_ylabel("entries", color=_MUTED, fontsize=9)
    lag.set_xlabel("seconds since start", color=_MUTED, fontsize=9)
    rates.set_title("Produced, consumed and acked per second", loc="left", fontsize=10.5,
                    color=_INK, fontweight="semibold")
    lag.set_title("Consumer group lag and pending entries", loc="left", fontsize=10.5,
                  color=_INK, fontweight="semibold")
    for axes in (rates, lag):
        axes.legend(loc="lower right", bbox_to_anchor=(1.0, 1.0), ncol=3, frameon=False,
                    fontsize=8.5, handlelength=1.6, borderaxespad=0.2)
    figure.subplots_adjust(left=0.07, right=0.985, top=0.9, bottom=0.11)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", facecolor="white", metadata={"Software": None})
    return buffer.getvalue()


def stream_chart_html(result: Mapping[str, Any]) -> str:
    """The stream chart as an embedded `<figure>`; "" without a timeline."""
    png = render_stream_png(result)
    if png is None:
        return ""
    data = base64.b64encode(png).decode("ascii")
    caption = ("Top: XADDs acknowledged, entries consumed (first delivery) and acked per "
               "second. Bottom: the consumer group's lag (acknowledged entries not acked yet) "
               "and pending entries (delivered, not acked) at each second's end; crosses: "
               "consumers killed by the lab. Shaded: node faults.")
    return ('<figure><img alt="Stream produce and consume rates and consumer lag over time" '
            f'src="data:image/png;base64,{data}"><figcaption>{_e(caption)}</figcaption>'
            "</figure>")
