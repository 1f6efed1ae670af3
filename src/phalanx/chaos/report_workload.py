"""The HTML report's part about a workload's own check (queue accounting, bank sums).

Rules of this file: same as `phalanx.chaos.report` (input is the result dict exactly as
produced, any value may be missing or null, every text is escaped); nothing for the default
`register` workload, whose verdicts are the report's headline numbers.
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping
from typing import Any

from phalanx.chaos.workloads import failure_reasons, summary


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
    title = {"queue": "Queue accounting", "bank": "Bank invariant"}.get(name, name)
    return f"<section>\n<h2>{_e(title)}</h2>\n{''.join(parts)}\n</section>"
