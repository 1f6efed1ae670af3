"""What a person sees of a chaos run in the terminal: a live view, a summary, the story.

Rules of this file:
- Rendering only (rich); the numbers come from the result dict of `runner.build_result`.
- The live view goes to stderr, so `--json` on stdout stays clean (and it is off with `--json`).
- The story is plain words: "leader n2 killed at 12.0 s; n4 took over; writes resumed in 180 ms".
"""

from __future__ import annotations

from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from phalanx.chaos.runner import Progress
from phalanx.chaos.workloads import failure_reasons, summary, workload_ok


class LiveView:
    """A rich Live panel fed with `Progress` snapshots (use as `on_progress`)."""

    def __init__(self, title: str, console: Console | None = None) -> None:
        self.title = title
        self.console = console or Console(stderr=True)
        self.live = Live(self._render(None), console=self.console, refresh_per_second=4,
                         transient=True)

    def __enter__(self) -> LiveView:
        self.live.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.live.__exit__(*exc)

    def __call__(self, progress: Progress) -> None:
        self.live.update(self._render(progress))

    def _render(self, progress: Progress | None) -> Panel:
        if progress is None:
            return Panel(Text("starting the cluster ..."), title=self.title)
        grid = Table.grid(padding=(0, 2))
        grid.add_column(style="bold")
        grid.add_column()
        bar = ProgressBar(total=progress.duration_s, completed=min(progress.elapsed_s,
                                                                   progress.duration_s),
                          width=40)
        grid.add_row("elapsed", Group(bar, Text(f"{progress.elapsed_s:5.1f} / "
                                               f"{progress.duration_s:.0f} s")))
        if progress.phase != "running":
            grid.add_row("phase", Text(progress.phase, style="yellow"))
        else:
            total = progress.ok + progress.fail + progress.info
            grid.add_row("requests", f"{total} ({progress.ops_per_s:.0f}/s)")
            grid.add_row("succeeded", Text(str(progress.ok), style="green"))
            grid.add_row("errors", Text(f"{progress.fail} failed, {progress.info} unknown",
                                        style="red" if progress.fail + progress.info else ""))
        grid.add_row("leader", progress.leader or Text("none", style="red"))
        fault = progress.current_fault
        grid.add_row("fault", Text(fault, style="bold red") if fault else
                     Text("none (healthy)", style="green"))
        grid.add_row("faults so far", str(progress.faults))
        return Panel(grid, title=self.title, border_style="cyan")


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f} ms"


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} s"


def _redundancy_cell(entry: dict[str, Any] | None) -> str:
    """One fault's time to full redundancy, in a few words."""
    if entry is None:
        return "-"
    if entry.get("seconds") is not None:
        text = _seconds(entry["seconds"])
        if entry.get("after_heal_s") is not None:
            text += f" ({_seconds(entry['after_heal_s'])} after heal)"
        return text
    if entry.get("lost") is False:
        return "never lost"
    return "not restored"


def _redundancy_entries(result: dict[str, Any]) -> list[dict[str, Any] | None]:
    entries = list((result.get("redundancy") or {}).get("faults") or [])
    return entries + [None] * (len(result["faults"]) - len(entries))


def _percent(availability: float) -> str:
    return f"{availability * 100:.3f} %".replace(".000 %", " %")


def summary_table(result: dict[str, Any]) -> Table:
    """The headline numbers of a run."""
    workload = result.get("workload") or "register"
    table = Table(title=f"chaos run: {result['scenario']}, {workload} workload "
                        f"(seed {result['seed']}, "
                        f"{result['duration_s']:g} s, {len(result['cluster']['nodes'])} nodes)",
                  show_header=False, title_style="bold")
    table.add_column(style="bold")
    table.add_column()
    ops = result["ops"]
    app = result.get("application")
    client = (result.get("client") or {}).get("mode") or "raw"
    if app and client != "raw":
        deadline = (result.get("client") or {}).get("deadline_s")
        table.add_row("application", Text(
            f"{_percent(app['availability'])} of {app['calls']} calls succeeded within "
            f"{deadline:g} s ({app['nines']:.2f} nines; {client} client, {app['retries']} "
            f"retries in {app['retried_calls']} calls; {app['failed']} failed, "
            f"{app['unknown']} unknown outcome, {app['late']} late)", style="bold"))
    table.add_row("requests" if client == "raw" else "attempts (raw)",
                  f"{ops['total']} ({ops['ok']} ok, {ops['fail']} failed, "
                  f"{ops['info']} unknown outcome)")
    table.add_row("availability" if client == "raw" else "raw availability",
                  f"{_percent(result['availability'])} ({result['nines']:.2f} nines)")
    rto = result["rto_ms"]
    table.add_row("RTO", f"median {_ms(rto['median'])}, worst {_ms(rto['max'])} "
                         f"over {len(rto['faults'])} fault(s)")
    lost = result["lost_acknowledged_writes"]
    table.add_row("RPO", Text(f"{lost} acknowledged writes lost (span "
                              f"{result['rpo']['span_s']:g} s)",
                              style="green" if lost == 0 else "bold red"))
    verdict = result["linearizability"]["verdict"]
    table.add_row("consistency", Text(verdict, style="green" if result["linearizable"]
                                      else "bold red"))
    line = summary(result)
    if line is not None:
        table.add_row(str(result.get("workload") or "workload"),
                      Text(line, style="green" if workload_ok(result) else "bold red"))
    latency = result["latency_ms"]
    table.add_row("latency", f"p50 {_ms(latency['p50'])}, p99 {_ms(latency['p99'])}, "
                             f"max {_ms(latency['max'])}")
    table.add_row("throughput", f"{result['throughput_ops_s']:g} successful requests/s")
    redundancy = result.get("redundancy")
    if redundancy is not None and result["faults"]:
        entries = redundancy.get("faults") or []
        restored = sum(1 for e in entries if e.get("seconds") is not None)
        lost = sum(1 for e in entries if e.get("lost"))
        text = (f"median {_seconds(redundancy.get('median_s'))}, worst "
                f"{_seconds(redundancy.get('max_s'))}; restored after {restored} of {lost} "
                "fault(s) that lost it")
        missing = [e for e in entries if e.get("lost") and e.get("seconds") is None]
        if missing:
            text += f" ({missing[0].get('reason')})"
        table.add_row("full redundancy", Text(text, style="bold red" if missing else ""))
    return table


def faults_table(result: dict[str, Any]) -> Table:
    table = Table(title="faults", title_style="bold")
    for column in ("at", "fault", "until", "RTO", "new leader", "full redundancy", "raw",
                   "application (retries)"):
        table.add_column(column)
    for fault, rto, entry in zip(result["faults"], result["rto_ms"]["faults"],
                                 _redundancy_entries(result), strict=False):
        until = "-" if fault["end_s"] is None else f"{fault['end_s']:.1f} s"
        table.add_row(f"{fault['at_s']:.1f} s", fault["description"], until,
                      _ms(rto["rto_ms"]), rto["new_leader"] or "-", _redundancy_cell(entry),
                      _share(rto.get("raw_availability"), rto.get("attempts")),
                      _share(rto.get("app_availability"), rto.get("calls"))
                      + f" ({rto.get('retries', 0)})")
    return table


def _share(value: float | None, total: int | None) -> str:
    return "-" if value is None else f"{_percent(value)} of {total}"


def story_lines(result: dict[str, Any]) -> list[str]:
    """What happened, in plain words, one line per fault and a closing line."""
    lines = []
    for fault, rto, entry in zip(result["faults"], result["rto_ms"]["faults"],
                                 _redundancy_entries(result), strict=False):
        line = f"{fault['description']} at {fault['at_s']:.1f} s"
        if rto["new_leader"]:
            line += f"; {rto['new_leader']} took over"
        if rto["rto_ms"] is None:
            line += "; writes did not come back before the end of the run"
        else:
            line += f"; writes resumed after {rto['rto_ms']:.0f} ms"
        if fault["end_s"] is not None:
            line += f" (healed at {fault['end_s']:.1f} s)"
        if entry is not None and entry.get("seconds") is not None:
            line += f"; fully redundant again {entry['seconds']:.1f} s after the fault"
        elif entry is not None and entry.get("lost"):
            line += f"; full redundancy {entry.get('reason')}"
        lines.append(line)
    lost = result["lost_acknowledged_writes"]
    app = result.get("application")
    client = (result.get("client") or {}).get("mode") or "raw"
    if app and client != "raw":
        seen = (f"application view ({client} client): {_percent(app['availability'])} of "
                f"{app['calls']} requests succeeded ({app['retries']} retries); raw view: "
                f"{_percent(result['availability'])} of {result['ops']['total']} attempts")
    else:
        seen = (f"{_percent(result['availability'])} of {result['ops']['total']} requests "
                "succeeded (raw view: no client retry)")
    lines.append(f"{lost} acknowledged write{'s' if lost != 1 else ''} lost; {seen}; the "
                 f"history is {result['linearizability']['verdict']}")
    lines.extend(f"{result.get('workload')}: {reason}" for reason in failure_reasons(result))
    return lines


def print_summary(result: dict[str, Any], console: Console | None = None) -> None:
    console = console or Console(stderr=True)
    console.print(summary_table(result))
    if result["faults"]:
        console.print(faults_table(result))
    if not result["linearizable"] and result["linearizability"]["explain"]:
        console.print(Panel(result["linearizability"]["explain"], title="linearizability",
                            border_style="red"))
