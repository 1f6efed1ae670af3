"""The chaos lab's HTML report: one self-contained page per run, a picture before the numbers.

Rules of this file:
- Input is the runner's result dict (the JSON report) exactly as produced; any value may be null
  and every renderer shows "—" (or leaves a gap in a plot) rather than failing.
- The page is self-contained: inline CSS, no JavaScript, the timeline plot embedded as a base64
  PNG data URI. Every piece of text from the result is escaped with `html.escape`.
- Plots render through matplotlib's Agg canvas on a private `Figure` (never pyplot), so no GUI
  backend is touched and no global figure state is left behind; output is deterministic for a
  given result (the PNG carries no timestamp or version metadata).
- No wall-clock time is read here: the page shows the run's own `started_at`.

`python -m phalanx.chaos.report result.json out.html` renders a saved JSON report.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import sys
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullLocator
from matplotlib.transforms import blended_transform_factory

from phalanx.chaos.report_availability import availability_section
from phalanx.chaos.report_workload import workload_reasons, workload_section

Result = Mapping[str, Any]

# A muted palette: readable on white, calm enough to look at for a while.
_INK = "#1f2933"
_MUTED = "#616e7c"
_GRID = "#e4e7eb"
_OK = "#6a9f7e"
_FAIL = "#c8574d"
_INFO = "#d9a441"
_P50 = "#3e6fa8"
_P99 = "#8a63a6"
_RECOVERED = "#2f7d4f"
_REDUNDANT = "#1f7a8c"
_DEGRADED = "#d98e73"
# Fault shading by kind family (matched on a word in the kind); anything else is grey.
_FAULT_COLOURS: tuple[tuple[str, str], ...] = (
    ("kill", "#e07a6f"),
    ("crash", "#e07a6f"),
    ("pause", "#e3b04b"),
    ("stop", "#e3b04b"),
    ("partition", "#8e7cc3"),
    ("isolate", "#8e7cc3"),
    ("split", "#8e7cc3"),
    ("bridge", "#8e7cc3"),
    ("latency", "#5b9bd5"),
    ("delay", "#5b9bd5"),
    ("zone", "#7f8c8d"),
    ("region", "#7f8c8d"),
    ("restart", "#5fa38a"),
)
_FAULT_DEFAULT = "#9aa5b1"

_DASH = "—"


# --------------------------------------------------------------------------------------------
# Small formatting helpers (all None-tolerant)
# --------------------------------------------------------------------------------------------


def _number(value: Any) -> float | None:
    """The value as a finite float, or None (null, non-numeric, NaN, bool)."""
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _trim(text: str) -> str:
    return text.rstrip("0").rstrip(".") if "." in text else text


def _format_ms(value: Any) -> str:
    """180 ms, 2.4 s, 1 min 5 s."""
    ms = _number(value)
    if ms is None:
        return _DASH
    if ms < 1:
        return f"{_trim(f'{ms:.2f}')} ms"
    if ms < 1000:
        return f"{_trim(f'{ms:.1f}') if ms < 10 else f'{ms:.0f}'} ms"
    seconds = ms / 1000
    if seconds < 120:
        return f"{_trim(f'{seconds:.2f}')} s"
    minutes, rest = divmod(seconds, 60)
    return f"{minutes:.0f} min {rest:.0f} s"


def _format_seconds(value: Any) -> str:
    seconds = _number(value)
    if seconds is None:
        return _DASH
    if seconds < 120:
        return f"{_trim(f'{seconds:.1f}')} s"
    minutes, rest = divmod(seconds, 60)
    return f"{minutes:.0f} min {_trim(f'{rest:.1f}')} s"


def _format_percent(fraction: Any) -> str:
    """99.62 %, keeping enough digits that 99.996 % is not shown as 100 %."""
    value = _number(fraction)
    if value is None:
        return _DASH
    percent = value * 100
    if percent >= 100:
        return "100 %"
    digits = 1
    while digits < 4 and round(percent, digits) >= 100:
        digits += 1
    if percent >= 99:
        digits = max(digits, 2)
    return f"{_trim(f'{percent:.{digits}f}')} %"


def _format_count(value: Any) -> str:
    number = _number(value)
    if number is None:
        return _DASH
    if number == int(number):
        return f"{int(number):,}"
    return f"{number:,.1f}"


def _format_rate(value: Any) -> str:
    number = _number(value)
    if number is None:
        return _DASH
    return f"{number:,.0f}" if number >= 100 else _trim(f"{number:.1f}")


def _format_nines(value: Any) -> str:
    number = _number(value)
    if number is None:
        return _DASH
    return _trim(f"{number:.1f}")


def _targets(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, Sequence):
        return ", ".join(str(item) for item in value)
    return str(value)


def _format_started(value: Any) -> str:
    if not value:
        return _DASH
    text = str(value)
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return text
    zone = moment.strftime("%Z") if moment.tzinfo is not None else ""
    if zone in ("UTC+00:00", "UTC"):
        zone = "UTC"
    return f"{moment:%Y-%m-%d %H:%M:%S} {zone}".strip()


def _list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list | tuple) else []


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _fault_colour(kind: str) -> str:
    lowered = kind.lower()
    for word, colour in _FAULT_COLOURS:
        if word in lowered:
            return colour
    return _FAULT_DEFAULT


def _rto_for(fault: Mapping[str, Any], rto_entries: list[Any]) -> Mapping[str, Any] | None:
    """The RTO entry measured for this injected fault (same kind, same start), if any."""
    at = _number(fault.get("at_s"))
    for entry in rto_entries:
        entry_map = _mapping(entry)
        entry_at = _number(entry_map.get("at_s"))
        if (
            entry_map.get("kind") == fault.get("kind")
            and at is not None
            and entry_at is not None
            and abs(entry_at - at) < 1e-6
        ):
            return entry_map
    return None


def _redundancy_for(fault: Mapping[str, Any], result: Result) -> Mapping[str, Any] | None:
    """The time-to-full-redundancy entry measured for this fault (same kind, same start)."""
    entries = _list(_mapping(result.get("redundancy")).get("faults"))
    return _rto_for(fault, entries)


def _format_redundancy(entry: Mapping[str, Any] | None) -> str:
    """One fault's time to full redundancy: "4.2 s (1.1 s after heal)", "never lost", ..."""
    if entry is None:
        return _DASH
    seconds = _number(entry.get("seconds"))
    if seconds is not None:
        text = _format_seconds(seconds)
        after = _number(entry.get("after_heal_s"))
        if after is not None:
            text += f" ({_format_seconds(after)} after heal)"
        return text
    if entry.get("lost") is False:
        return "never lost"
    return "not restored"


def _degraded_spans(result: Result, end_s: float) -> list[tuple[float, float]]:
    """(start, end) of every span the monitor saw the cluster not fully redundant."""
    spans: list[tuple[float, float]] = []
    began: float | None = None
    for change in _list(_mapping(result.get("redundancy")).get("transitions")):
        change_map = _mapping(change)
        at = _number(change_map.get("at_s"))
        if at is None:
            continue
        if change_map.get("full") is False and began is None:
            began = at
        elif change_map.get("full") is True and began is not None:
            spans.append((began, at))
            began = None
    if began is not None:
        spans.append((began, end_s))
    return spans


# --------------------------------------------------------------------------------------------
# The timeline plot
# --------------------------------------------------------------------------------------------


def _run_end_s(result: Result) -> float:
    """The right edge of the plot: the run's duration, or the last thing that happened."""
    candidates = [_number(result.get("duration_s")) or 0.0]
    for point in _list(result.get("timeline")):
        t = _number(_mapping(point).get("t_s"))
        if t is not None:
            candidates.append(t + 1)
    for fault in _list(result.get("faults")):
        for key in ("at_s", "end_s"):
            t = _number(_mapping(fault).get(key))
            if t is not None:
                candidates.append(t)
    return max(max(candidates), 1.0)


def render_timeline_png(result: Result) -> bytes:
    """The run's timeline as PNG bytes.

    Two panels on a shared time axis: operations per second (stacked ok / fail / info) and
    latency p50 / p99 per second on a log scale. Fault windows are shaded across both panels and
    labelled with kind and targets (plus the measured RTO and new leader); a dashed line marks
    each fault's start and a green tick the first success after it. A band under the latency
    panel shows when the cluster was not fully redundant, and a dotted teal line the moment
    each fault's full redundancy came back.
    """
    timeline = [_mapping(point) for point in _list(result.get("timeline"))]
    faults = [_mapping(fault) for fault in _list(result.get("faults"))]
    rto_entries = _list(_mapping(result.get("rto_ms")).get("faults"))
    end_s = _run_end_s(result)

    figure = Figure(figsize=(11.0, 5.6), dpi=110, facecolor="white")
    FigureCanvasAgg(figure)
    grid = figure.add_gridspec(2, 1, height_ratios=(3, 2), hspace=0.2)
    ops_axes: Axes = figure.add_subplot(grid[0])
    latency_axes: Axes = figure.add_subplot(grid[1], sharex=ops_axes)

    for axes in (ops_axes, latency_axes):
        axes.set_facecolor("white")
        for side in ("top", "right"):
            axes.spines[side].set_visible(False)
        for side in ("left", "bottom"):
            axes.spines[side].set_color("#9aa5b1")
        axes.tick_params(colors=_MUTED, labelsize=8.5, length=3)
        axes.grid(axis="y", color=_GRID, linewidth=0.8)
        axes.set_axisbelow(True)

    # Operations per second, stacked.
    seconds: list[float] = []
    ok: list[float] = []
    fail: list[float] = []
    info: list[float] = []
    p50: list[float] = []
    p99: list[float] = []
    for point in timeline:
        t = _number(point.get("t_s"))
        if t is None:
            continue
        seconds.append(t)
        ok.append(_number(point.get("ok")) or 0.0)
        fail.append(_number(point.get("fail")) or 0.0)
        info.append(_number(point.get("info")) or 0.0)
        p50.append(_positive_or_nan(point.get("p50_ms")))
        p99.append(_positive_or_nan(point.get("p99_ms")))

    totals = [a + b + c for a, b, c in zip(ok, fail, info, strict=True)]
    peak = max(totals, default=0.0)
    if seconds:
        width = 0.92
        ops_axes.bar(seconds, ok, width=width, align="edge", color=_OK, label="ok", linewidth=0)
        ops_axes.bar(
            seconds,
            fail,
            width=width,
            align="edge",
            bottom=ok,
            color=_FAIL,
            label="fail",
            linewidth=0,
        )
        ok_plus_fail = [a + b for a, b in zip(ok, fail, strict=True)]
        ops_axes.bar(
            seconds,
            info,
            width=width,
            align="edge",
            bottom=ok_plus_fail,
            color=_INFO,
            label="unknown (info)",
            linewidth=0,
        )
    else:
        ops_axes.text(
            0.5,
            0.5,
            "no operations recorded",
            transform=ops_axes.transAxes,
            ha="center",
            va="center",
            color=_MUTED,
            fontsize=11,
        )

    # Latency per second; a second without operations is a gap, not a zero.
    centres = [t + 0.46 for t in seconds]
    has_latency = any(not math.isnan(v) for v in p50 + p99)
    if has_latency:
        latency_axes.plot(
            centres, p99, color=_P99, linewidth=1.6, label="p99", marker="o", markersize=2.2
        )
        latency_axes.plot(
            centres, p50, color=_P50, linewidth=1.6, label="p50", marker="o", markersize=2.2
        )
        latency_axes.set_yscale("log")
        _label_latency_axis(latency_axes, [v for v in p50 + p99 if not math.isnan(v)])
    else:
        latency_axes.text(
            0.5,
            0.5,
            "no latency samples",
            transform=latency_axes.transAxes,
            ha="center",
            va="center",
            color=_MUTED,
            fontsize=11,
        )
        latency_axes.set_yticks([])

    # Faults: shaded windows across both panels, labelled in rows that do not overlap.
    redundancy_entries = _list(_mapping(result.get("redundancy")).get("faults"))
    label_rows = _label_rows(faults, rto_entries, end_s, redundancy_entries)
    row_count = max((row for row, _ in label_rows), default=-1) + 1
    # Of the ops panel, per label row (two lines; three with the time to full redundancy).
    label_height = 0.27 if redundancy_entries else 0.19
    headroom = 1.0 / max(1.0 - row_count * label_height - 0.03, 0.3) if faults else 1.08
    ops_axes.set_ylim(0, max(peak, 1.0) * headroom)

    ops_blend = blended_transform_factory(ops_axes.transData, ops_axes.transAxes)
    latency_blend = blended_transform_factory(latency_axes.transData, latency_axes.transAxes)
    for fault, (row, label) in zip(faults, label_rows, strict=True):
        start = _number(fault.get("at_s"))
        if start is None:
            continue
        stop = _number(fault.get("end_s"))
        colour = _fault_colour(str(fault.get("kind") or ""))
        shade_end = stop if stop is not None and stop > start else end_s
        for axes in (ops_axes, latency_axes):
            axes.axvspan(start, shade_end, color=colour, alpha=0.16, linewidth=0, zorder=0)
            axes.axvline(start, color=colour, linewidth=1.3, linestyle=(0, (4, 2)), zorder=3)
        y = 0.985 - row * label_height
        ops_axes.text(
            start + end_s * 0.004,
            y,
            label,
            transform=ops_blend,
            ha="left",
            va="top",
            fontsize=8,
            color=_INK,
            linespacing=1.25,
            zorder=5,
            bbox={
                "boxstyle": "round,pad=0.25",
                "facecolor": "white",
                "edgecolor": colour,
                "linewidth": 0.8,
                "alpha": 0.92,
            },
        )
        rto = _rto_for(fault, rto_entries)
        rto_ms = _number(rto.get("rto_ms")) if rto is not None else None
        if rto_ms is not None:
            recovered = start + rto_ms / 1000
            for axes, blend in ((ops_axes, ops_blend), (latency_axes, latency_blend)):
                axes.plot(
                    [recovered, recovered],
                    [0, 1],
                    transform=blend,
                    color=_RECOVERED,
                    linewidth=1.1,
                    alpha=0.85,
                    zorder=3,
                )
            ops_axes.annotate(
                "",
                xy=(recovered, 0.03),
                xytext=(start, 0.03),
                xycoords=ops_blend,
                textcoords=ops_blend,
                arrowprops={
                    "arrowstyle": "<|-|>",
                    "color": _RECOVERED,
                    "linewidth": 1.1,
                    "shrinkA": 0,
                    "shrinkB": 0,
                    "mutation_scale": 7,
                },
                zorder=6,
            )

        redundant = _redundancy_for(fault, result)
        restored = _number(redundant.get("restored_at_s")) if redundant is not None else None
        if restored is not None:
            for axes in (ops_axes, latency_axes):
                axes.axvline(restored, color=_REDUNDANT, linewidth=1.2, linestyle=(0, (1, 1.5)),
                             alpha=0.9, zorder=3)

    degraded = _degraded_spans(result, end_s)
    for start, stop in degraded:
        latency_axes.axvspan(start, stop, ymin=0.0, ymax=0.04, color=_DEGRADED, alpha=0.85,
                             linewidth=0, zorder=4)
    if degraded:
        latency_axes.text(0.0, 0.05, " not fully redundant", transform=latency_axes.transAxes,
                          ha="left", va="bottom", fontsize=7.5, color=_DEGRADED, zorder=5)

    ops_axes.set_xlim(0, end_s)
    ops_axes.set_ylabel("operations / s", color=_MUTED, fontsize=9)
    latency_axes.set_ylabel("latency", color=_MUTED, fontsize=9)
    latency_axes.set_xlabel("seconds since start", color=_MUTED, fontsize=9)
    ops_axes.tick_params(labelbottom=False)
    ops_axes.set_title(
        "Operations per second", loc="left", fontsize=10.5, color=_INK, fontweight="semibold", pad=8
    )
    latency_axes.set_title(
        "Latency per second", loc="left", fontsize=10.5, color=_INK, fontweight="semibold", pad=6
    )
    if seconds:
        ops_axes.legend(
            loc="lower right",
            bbox_to_anchor=(1.0, 1.0),
            ncol=3,
            frameon=False,
            fontsize=8.5,
            handlelength=1.2,
            borderaxespad=0.2,
        )
    if has_latency:
        latency_axes.legend(
            loc="lower right",
            bbox_to_anchor=(1.0, 1.0),
            ncol=2,
            frameon=False,
            fontsize=8.5,
            handlelength=1.6,
            borderaxespad=0.2,
        )

    figure.subplots_adjust(left=0.07, right=0.985, top=0.93, bottom=0.09)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", facecolor="white", metadata={"Software": None})
    return buffer.getvalue()


def _label_latency_axis(axes: Axes, samples: list[float]) -> None:
    """Readable log-scale ticks ("2 ms", "1 s"): 1-2-5 steps when the data spans few decades."""
    low, high = min(samples), max(samples)
    decades = math.log10(high / low) if high > low else 0.0
    subs = (1.0, 2.0, 5.0) if decades <= 2.5 else (1.0,)
    axes.set_ylim(low / 1.4, high * 1.4)
    axes.yaxis.set_major_locator(LogLocator(base=10, subs=subs))
    axes.yaxis.set_minor_locator(NullLocator())
    axes.yaxis.set_major_formatter(FuncFormatter(lambda value, _position: _format_ms(value)))


def _positive_or_nan(value: Any) -> float:
    number = _number(value)
    return number if number is not None and number > 0 else math.nan


def _fault_label(fault: Mapping[str, Any], rto_entries: list[Any],
                 redundancy_entries: list[Any] | None = None) -> str:
    kind = str(fault.get("kind") or "fault")
    targets = _targets(fault.get("targets"))
    first = f"{kind} {targets}".strip()
    redundant = _rto_for(fault, redundancy_entries or [])
    third = "" if redundant is None else f"\nfull redundancy {_format_redundancy(redundant)}"
    rto = _rto_for(fault, rto_entries)
    if rto is None:
        return first + third
    if _number(rto.get("rto_ms")) is None:
        # The runner measured this fault and saw no success after it before the run ended.
        return f"{first}\nnot recovered{third}"
    second = f"RTO {_format_ms(rto.get('rto_ms'))}"
    if rto.get("new_leader"):
        second += f" → {rto.get('new_leader')}"
    return f"{first}\n{second}{third}"


def _label_rows(
    faults: list[Mapping[str, Any]],
    rto_entries: list[Any],
    end_s: float,
    redundancy_entries: list[Any] | None = None,
) -> list[tuple[int, str]]:
    """(row, text) per fault: greedy rows so labels that would overlap stack downwards."""
    # About 160 characters of 8 pt text fit across the plot area.
    seconds_per_char = end_s / 160
    row_ends: list[float] = []
    placed: list[tuple[int, str]] = []
    for fault in faults:
        label = _fault_label(fault, rto_entries, redundancy_entries)
        start = _number(fault.get("at_s"))
        if start is None:
            placed.append((0, label))
            continue
        width = (max(len(line) for line in label.splitlines()) + 2) * seconds_per_char
        for row, row_end in enumerate(row_ends):
            if start >= row_end:
                row_ends[row] = start + width
                placed.append((row, label))
                break
        else:
            row_ends.append(start + width)
            placed.append((len(row_ends) - 1, label))
    return placed


# --------------------------------------------------------------------------------------------
# The page
# --------------------------------------------------------------------------------------------

_CSS = """
:root { --ink:#1f2933; --muted:#616e7c; --line:#e4e7eb; --card:#ffffff; --page:#f5f7fa;
  --good:#2f7d4f; --good-bg:#e8f4ec; --bad:#b3261e; --bad-bg:#fbeae8; }
* { box-sizing: border-box; }
body { margin:0; background:var(--page); color:var(--ink);
  font: 15px/1.55 -apple-system, BlinkMacSystemFont, "Segoe UI", Roboto, "Helvetica Neue",
  Arial, "Noto Sans", sans-serif; }
main { max-width: 1120px; margin: 0 auto; padding: 32px 24px 48px; }
header h1 { font-size: 26px; margin: 0 0 4px; letter-spacing: -0.01em; }
header .sub { color: var(--muted); margin: 0 0 14px; }
.meta { display:flex; flex-wrap:wrap; gap: 6px 22px; color: var(--muted); font-size: 14px; }
.meta b { color: var(--ink); font-weight: 600; }
.zones { display:flex; flex-wrap:wrap; gap:8px; margin-top: 12px; }
.zone { background: var(--card); border:1px solid var(--line); border-radius: 8px;
  padding: 4px 10px; font-size: 13px; color: var(--muted); }
.zone b { color: var(--ink); font-weight:600; }
.verdict { margin: 24px 0; padding: 16px 20px; border-radius: 10px; border-left: 6px solid;
  display:flex; gap: 14px; align-items: baseline; }
.verdict.good { background: var(--good-bg); border-color: var(--good); }
.verdict.bad { background: var(--bad-bg); border-color: var(--bad); }
.verdict .word { font-size: 20px; font-weight: 700; white-space: nowrap; }
.verdict.good .word { color: var(--good); }
.verdict.bad .word { color: var(--bad); }
.verdict ul { margin: 0; padding-left: 18px; }
.cards { display:grid; grid-template-columns: repeat(auto-fit, minmax(190px, 1fr)); gap: 14px; }
.card { background: var(--card); border: 1px solid var(--line); border-radius: 10px;
  padding: 14px 16px; }
.card .label { font-size: 12px; text-transform: uppercase; letter-spacing: 0.06em;
  color: var(--muted); }
.card .value { font-size: 26px; font-weight: 650; margin: 2px 0; font-variant-numeric: tabular-nums; }
.card .value.bad { color: var(--bad); }
.card .note { font-size: 13px; color: var(--muted); }
section { margin-top: 30px; }
h2 { font-size: 17px; margin: 0 0 10px; }
figure { margin: 0; background: var(--card); border: 1px solid var(--line); border-radius: 10px;
  padding: 10px; }
figure img { width: 100%; height: auto; display: block; }
figcaption { font-size: 13px; color: var(--muted); padding: 6px 6px 0; }
table { width: 100%; border-collapse: collapse; background: var(--card);
  border: 1px solid var(--line); border-radius: 10px; overflow: hidden; font-size: 14px; }
th, td { text-align: left; padding: 8px 12px; border-bottom: 1px solid var(--line);
  vertical-align: top; }
th { font-size: 12px; text-transform: uppercase; letter-spacing: 0.05em; color: var(--muted);
  background: #fafbfc; font-weight: 600; }
tr:last-child td { border-bottom: none; }
td.num { font-variant-numeric: tabular-nums; white-space: nowrap; }
.kind { display:inline-block; width: 10px; height: 10px; border-radius: 2px; margin-right: 6px; }
ol.story { list-style: none; margin: 0; padding: 0; background: var(--card);
  border: 1px solid var(--line); border-radius: 10px; }
ol.story li { display:flex; gap: 16px; padding: 7px 14px; border-bottom: 1px solid var(--line); }
ol.story li:last-child { border-bottom: none; }
ol.story .at { color: var(--muted); font-variant-numeric: tabular-nums; min-width: 64px;
  text-align: right; }
pre { background: #1f2933; color: #e4e7eb; padding: 14px 16px; border-radius: 10px;
  overflow-x: auto; font-size: 13px; line-height: 1.45; }
.empty { color: var(--muted); font-style: italic; }
footer { margin-top: 36px; color: var(--muted); font-size: 12px; }
"""


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _verdict(result: Result) -> tuple[bool, list[str]]:
    """(passed, reasons): passed only with 0 lost acknowledged writes and a linearizable history."""
    reasons: list[str] = []
    lost = _number(result.get("lost_acknowledged_writes"))
    if lost is None:
        reasons.append("lost acknowledged writes were not measured")
    elif lost > 0:
        count = _format_count(lost)
        reasons.append(f"{count} acknowledged write{'s' if lost != 1 else ''} lost")
    linearizable = result.get("linearizable")
    if linearizable is not True:
        verdict = _mapping(result.get("linearizability")).get("verdict")
        if linearizable is False:
            reason = "the history is not linearizable"
        else:
            reason = "linearizability was not checked"
        if verdict:
            reason += f" ({verdict})"
        reasons.append(reason)
    reasons.extend(workload_reasons(result))
    return (not reasons, reasons)


def _card(label: str, value: str, note: str = "", bad: bool = False) -> str:
    value_class = "value bad" if bad else "value"
    note_html = f'<div class="note">{_e(note)}</div>' if note else ""
    return (
        f'<div class="card"><div class="label">{_e(label)}</div>'
        f'<div class="{value_class}">{_e(value)}</div>{note_html}</div>'
    )


def _cards(result: Result) -> str:
    ops = _mapping(result.get("ops"))
    rto = _mapping(result.get("rto_ms"))
    rpo = _mapping(result.get("rpo"))
    latency = _mapping(result.get("latency_ms"))
    lost = _number(result.get("lost_acknowledged_writes"))

    nines = _format_nines(result.get("nines"))
    availability_note = f"{nines} nines · " if nines != _DASH else ""
    availability_note += f"{_format_count(ops.get('ok'))} of {_format_count(ops.get('total'))} ok"
    failures = [
        f"{_format_count(ops.get(key))} {word}"
        for key, word in (("fail", "failed"), ("info", "unknown"))
        if (_number(ops.get(key)) or 0) > 0
    ]
    if failures:
        availability_note += " · " + ", ".join(failures)

    recovered = [
        entry
        for entry in _list(rto.get("faults"))
        if _number(_mapping(entry).get("rto_ms")) is not None
    ]
    rto_note = f"worst {_format_ms(rto.get('max'))} · {len(recovered)} recover"
    rto_note += "y" if len(recovered) == 1 else "ies"

    rpo_writes = _format_count(rpo.get("lost_writes"))
    rpo_note = f"RPO {rpo_writes} writes"
    if _number(rpo.get("span_s")) is not None:
        rpo_note += f" over {_format_seconds(rpo.get('span_s'))}"

    availability = _number(result.get("availability"))
    client = str(_mapping(result.get("client")).get("mode") or "raw")
    app = _mapping(result.get("application"))
    cards = [] if client == "raw" else [_card(
        "Application availability",
        _format_percent(app.get("availability")),
        f"{client} client · {_format_count(app.get('succeeded'))} of "
        f"{_format_count(app.get('calls'))} calls · {_format_count(app.get('retries'))} retries",
        bad=(_number(app.get("availability")) or 0.0) < 0.999)]
    cards += [
        _card(
            "Availability" if client == "raw" else "Raw availability (attempts)",
            _format_percent(result.get("availability")),
            availability_note,
            bad=availability is not None and availability < 0.99,
        ),
        _card("RTO median", _format_ms(rto.get("median")), rto_note),
    ]
    redundancy = _mapping(result.get("redundancy"))
    entries = [_mapping(entry) for entry in _list(redundancy.get("faults"))]
    if entries:
        lost_it = [entry for entry in entries if entry.get("lost")]
        restored = [entry for entry in lost_it if _number(entry.get("seconds")) is not None]
        note = (f"worst {_format_seconds(redundancy.get('max_s'))} · {len(restored)} of "
                f"{len(lost_it)} restored")
        cards.append(_card("Time to full redundancy", _format_seconds(redundancy.get("median_s")),
                           note, bad=len(restored) < len(lost_it)))
    return "\n".join(
        [
            *cards,
            _card(
                "Lost acknowledged writes",
                _format_count(lost),
                rpo_note,
                bad=lost is None or lost > 0,
            ),
            _card(
                "Throughput",
                f"{_format_rate(result.get('throughput_ops_s'))} ops/s",
                f"{_format_count(ops.get('total'))} operations in "
                f"{_format_seconds(result.get('duration_s'))}",
            ),
            _card(
                "Latency p50 / p99",
                f"{_format_ms(latency.get('p50'))} / {_format_ms(latency.get('p99'))}",
                f"p90 {_format_ms(latency.get('p90'))} · p99.9 {_format_ms(latency.get('p999'))}"
                f" · max {_format_ms(latency.get('max'))}",
            ),
        ]
    )


def _zones(result: Result) -> str:
    by_zone: dict[tuple[str, str], list[str]] = {}
    for node in _list(_mapping(result.get("cluster")).get("nodes")):
        node_map = _mapping(node)
        key = (str(node_map.get("zone") or "?"), str(node_map.get("region") or ""))
        by_zone.setdefault(key, []).append(str(node_map.get("id") or "?"))
    if not by_zone:
        return ""
    chips = []
    for (zone, region), ids in sorted(by_zone.items()):
        where = f"{zone} ({region})" if region else zone
        chips.append(f'<span class="zone"><b>{_e(where)}</b> {_e(", ".join(ids))}</span>')
    return f'<div class="zones">{"".join(chips)}</div>'


def _faults_table(result: Result) -> str:
    faults = [_mapping(fault) for fault in _list(result.get("faults"))]
    if not faults:
        return '<p class="empty">No faults were injected.</p>'
    rto_entries = _list(_mapping(result.get("rto_ms")).get("faults"))
    rows = []
    for fault in faults:
        kind = str(fault.get("kind") or "")
        rto = _rto_for(fault, rto_entries)
        rto_text = _DASH
        if rto is not None:
            measured = _number(rto.get("rto_ms"))
            rto_text = "not recovered" if measured is None else _format_ms(measured)
        leader = rto.get("new_leader") if rto is not None else None
        redundant = _format_redundancy(_redundancy_for(fault, result))
        end = _number(fault.get("end_s"))
        rows.append(
            "<tr>"
            f'<td class="num">{_e(_format_seconds(fault.get("at_s")))}</td>'
            f'<td class="num">{_e(_format_seconds(end) if end is not None else "until the end")}</td>'
            f'<td><span class="kind" style="background:{_fault_colour(kind)}"></span>{_e(kind)}</td>'
            f"<td>{_e(_targets(fault.get('targets')))}</td>"
            f"<td>{_e(fault.get('description'))}</td>"
            f'<td class="num">{_e(rto_text)}</td>'
            f"<td>{_e(leader or _DASH)}</td>"
            f'<td class="num">{_e(redundant)}</td>'
            "</tr>"
        )
    return (
        "<table><thead><tr><th>At</th><th>Ends</th><th>Kind</th><th>Targets</th>"
        "<th>What</th><th>RTO</th><th>New leader</th><th>Full redundancy</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def _story(result: Result) -> str:
    events = [_mapping(event) for event in _list(result.get("events"))]
    if not events:
        return '<p class="empty">No events were recorded.</p>'
    items = "".join(
        f'<li><span class="at">{_e(_format_seconds(event.get("at_s")))}</span>'
        f"<span>{_e(event.get('text'))}</span></li>"
        for event in events
    )
    return f'<ol class="story">{items}</ol>'


def render_html(result: Result) -> str:
    """The whole report page as one HTML string."""
    passed, reasons = _verdict(result)
    ops = _mapping(result.get("ops"))
    png = base64.b64encode(render_timeline_png(result)).decode("ascii")
    scenario = result.get("scenario") or "chaos run"

    if passed:
        lost = _format_count(result.get("lost_acknowledged_writes"))
        verdict_html = (
            '<div class="verdict good"><span class="word">PASS</span>'
            f"<span>{_e(lost)} acknowledged writes lost and the history is linearizable.</span>"
            "</div>"
        )
    else:
        items = "".join(f"<li>{_e(reason)}</li>" for reason in reasons)
        verdict_html = (
            f'<div class="verdict bad"><span class="word">FAIL</span><ul>{items}</ul></div>'
        )

    linearizability = _mapping(result.get("linearizability"))
    lin_parts = [f"<p>Verdict: <b>{_e(linearizability.get('verdict') or _DASH)}</b></p>"]
    if result.get("linearizable") is not True and linearizability.get("explain"):
        lin_parts.append(f"<pre>{_e(linearizability.get('explain'))}</pre>")

    caption = (
        "Bars: operations per second (ok, failed, unknown outcome). Lines: p50 and p99 latency. "
        "Shaded: fault windows; dashed: fault starts; green: first success after the fault (RTO); "
        "dotted teal: full redundancy back (every shard fully replicated, every voter up and "
        "caught up); the band under the latency panel: not fully redundant."
    )
    meta = [
        ("Seed", result.get("seed")),
        ("Mode", result.get("mode")),
        ("Started", _format_started(result.get("started_at"))),
        ("Duration", _format_seconds(result.get("duration_s"))),
        ("Operations", _format_count(ops.get("total"))),
    ]
    meta_html = "".join(
        f"<span>{_e(name)} <b>{_e(_DASH if value is None else value)}</b></span>"
        for name, value in meta
    )

    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>phalanx chaos · {_e(scenario)}</title>
<style>{_CSS}</style>
</head>
<body>
<main>
<header>
<h1>{_e(scenario)}</h1>
<p class="sub">phalanx chaos report</p>
<div class="meta">{meta_html}</div>
{_zones(result)}
</header>
{verdict_html}
<div class="cards">
{_cards(result)}
</div>
<section>
<h2>Timeline</h2>
<figure>
<img alt="Timeline of operations per second and latency with the injected faults marked"
 src="data:image/png;base64,{png}">
<figcaption>{_e(caption)}</figcaption>
</figure>
</section>
<section>
<h2>Faults</h2>
{_faults_table(result)}
</section>
{availability_section(result)}
<section>
<h2>What happened</h2>
{_story(result)}
</section>
<section>
<h2>Linearizability</h2>
{"".join(lin_parts)}
</section>
{workload_section(result)}
<footer>Generated by phalanx chaos from the run's JSON report.</footer>
</main>
</body>
</html>
"""


def write_html_report(result: Result, path: str | Path) -> Path:
    """Write the self-contained HTML report of one chaos run to `path`; returns the path."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(render_html(result), encoding="utf-8")
    return target


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m phalanx.chaos.report RESULT.json OUT.html`: render a saved JSON report."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    if len(arguments) != 2 or arguments[0] in ("-h", "--help"):
        print("usage: python -m phalanx.chaos.report RESULT.json OUT.html", file=sys.stderr)
        return 2
    source, destination = arguments
    try:
        result = json.loads(Path(source).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        print(f"cannot read {source}: {error}", file=sys.stderr)
        return 1
    if not isinstance(result, dict):
        print(f"{source} is not a chaos result (expected a JSON object)", file=sys.stderr)
        return 1
    written = write_html_report(result, destination)
    print(written)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
