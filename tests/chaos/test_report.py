"""The chaos lab's HTML report: key numbers, verdict, embedded plot, escaping, nulls, the CLI hook."""

from __future__ import annotations

import base64
import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest

from phalanx.chaos.report import main, render_timeline_png, write_html_report

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def healthy_result(duration_s: int = 60) -> dict[str, Any]:
    """A run with no faults: everything succeeds."""
    timeline = [
        {
            "t_s": t,
            "ok": 480 + (t * 7) % 40,
            "fail": 0,
            "info": 0,
            "p50_ms": 1.2 + (t % 5) * 0.1,
            "p99_ms": 6.5 + (t % 7),
        }
        for t in range(duration_s)
    ]
    ok = sum(point["ok"] for point in timeline)
    return {
        "scenario": "steady-state",
        "seed": 7,
        "mode": "local",
        "duration_s": float(duration_s),
        "started_at": "2025-03-14T09:26:53+00:00",
        "cluster": {
            "nodes": [
                {"id": f"n{i}", "zone": f"zone-{'abc'[(i - 1) % 3]}", "region": "eu"}
                for i in range(1, 6)
            ]
        },
        "ops": {"ok": ok, "fail": 0, "info": 0, "total": ok},
        "availability": 1.0,
        "nines": None,
        "rto_ms": {"median": None, "max": None, "faults": []},
        "lost_acknowledged_writes": 0,
        "rpo": {"lost_writes": 0, "span_s": 0.0},
        "linearizable": True,
        "linearizability": {"verdict": "ok", "explain": ""},
        "faults": [],
        "timeline": timeline,
        "latency_ms": {"p50": 1.3, "p90": 3.1, "p99": 8.4, "p999": 15.0, "max": 22.7},
        "throughput_ops_s": ok / duration_s,
        "events": [{"at_s": 0.0, "text": "workload started: 8 clients on 5 nodes in 3 zones"}],
    }


def faulty_result() -> dict[str, Any]:
    """A run with faults, measured RTOs, lost writes and a non-linearizable history."""
    result = healthy_result()
    result["scenario"] = "kill-leader"
    result["seed"] = 42
    timeline = result["timeline"]
    for t in range(12, 15):  # leader killed at 12.0 s: writes fail until n4 takes over
        timeline[t].update(ok=120, fail=260, info=40, p50_ms=210.0, p99_ms=1900.0)
    for t in range(30, 40):  # follower paused: slower, not down
        timeline[t].update(p50_ms=2.5, p99_ms=95.0)
    timeline[45].update(ok=0, fail=0, info=0, p50_ms=None, p99_ms=None)  # a silent second
    ok = sum(point["ok"] for point in timeline)
    fail = sum(point["fail"] for point in timeline)
    info = sum(point["info"] for point in timeline)
    result["ops"] = {"ok": ok, "fail": fail, "info": info, "total": ok + fail + info}
    result["availability"] = ok / (ok + fail + info)
    result["nines"] = 1.6
    result["rto_ms"] = {
        "median": 2180.0,
        "max": 2180.0,
        "faults": [
            {"kind": "kill", "targets": ["n2"], "at_s": 12.0, "rto_ms": 2180.0, "new_leader": "n4"},
            {"kind": "pause", "targets": ["n3"], "at_s": 30.0, "rto_ms": None, "new_leader": None},
        ],
    }
    result["lost_acknowledged_writes"] = 3
    result["rpo"] = {"lost_writes": 3, "span_s": 0.42}
    result["linearizable"] = False
    result["linearizability"] = {
        "verdict": "violation on key k7",
        "explain": "key k7: read -> 'v3' after write 'v4' completed\n  0.41 write v4 ok\n  0.52 read v3 ok",
    }
    result["faults"] = [
        {
            "at_s": 12.0,
            "end_s": 20.0,
            "kind": "kill",
            "targets": ["n2"],
            "description": "kill -9 the leader <script>alert('x')</script> & restart",
        },
        {
            "at_s": 30.0,
            "end_s": 40.0,
            "kind": "pause",
            "targets": ["n3"],
            "description": "SIGSTOP a follower",
        },
        {
            "at_s": 50.0,
            "end_s": None,
            "kind": "partition",
            "targets": ["n1", "n5"],
            "description": "isolate zone-a",
        },
    ]
    result["events"] = [
        {"at_s": 12.0, "text": "leader n2 killed"},
        {"at_s": 14.18, "text": "n4 took over in 2180 ms"},
        {"at_s": 30.0, "text": "follower n3 paused"},
    ]
    return result


def null_result() -> dict[str, Any]:
    """A run that recorded nothing: empty timeline, nulls wherever a value may be null."""
    return {
        "scenario": "nothing-happened",
        "seed": None,
        "mode": "local",
        "duration_s": None,
        "started_at": None,
        "cluster": {"nodes": []},
        "ops": {"ok": 0, "fail": 0, "info": 0, "total": 0},
        "availability": None,
        "nines": None,
        "rto_ms": {"median": None, "max": None, "faults": []},
        "lost_acknowledged_writes": None,
        "rpo": {"lost_writes": None, "span_s": None},
        "linearizable": None,
        "linearizability": {"verdict": None, "explain": None},
        "faults": [],
        "timeline": [],
        "latency_ms": {"p50": None, "p90": None, "p99": None, "p999": None, "max": None},
        "throughput_ops_s": None,
        "events": [],
    }


def embedded_pngs(page: str) -> list[bytes]:
    return [
        base64.b64decode(match)
        for match in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    ]


def test_healthy_run_page_shows_the_pass_verdict_and_key_numbers(tmp_path: Path) -> None:
    result = healthy_result()
    written = write_html_report(result, tmp_path / "report.html")

    assert written == tmp_path / "report.html"
    page = written.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>")
    assert 'class="verdict good"' in page and "PASS" in page
    assert "steady-state" in page
    assert "100 %" in page  # availability
    assert "1.3 ms / 8.4 ms" in page  # p50 / p99
    assert f"{result['throughput_ops_s']:,.0f} ops/s" in page
    assert "zone-a (eu)" in page and "n1, n4" in page
    assert "2025-03-14 09:26:53 UTC" in page
    assert "Duration <b>60 s</b>" in page
    assert "No faults were injected." in page
    assert "<pre>" not in page  # no explanation for a linearizable history
    # Self-contained: no external assets, no scripts.
    assert "<script" not in page
    assert "http://" not in page and "https://" not in page
    pngs = embedded_pngs(page)
    assert len(pngs) == 1 and pngs[0].startswith(PNG_SIGNATURE)


def test_faulty_run_page_shows_the_fail_verdict_with_its_reasons(tmp_path: Path) -> None:
    result = faulty_result()
    page = write_html_report(result, tmp_path / "out" / "report.html").read_text(encoding="utf-8")

    assert 'class="verdict bad"' in page and "FAIL" in page
    assert "3 acknowledged writes lost" in page
    assert "the history is not linearizable (violation on key k7)" in page
    assert "RPO 3 writes over 0.4 s" in page
    assert "2.18 s" in page  # the kill's RTO, in the cards and the fault table
    assert "<td>n4</td>" in page  # new leader
    assert "until the end" in page  # the partition never healed
    assert "not recovered" in page  # the pause was measured, writes never came back
    assert "1.6 nines" in page
    expected_availability = f"{result['availability'] * 100:.1f}"
    assert expected_availability in page
    # The explanation is shown, escaped, in a <pre>.
    assert "<pre>key k7: read -&gt; &#x27;v3&#x27; after write &#x27;v4&#x27; completed" in page
    assert "leader n2 killed" in page and "n4 took over in 2180 ms" in page
    assert embedded_pngs(page)[0].startswith(PNG_SIGNATURE)


def test_text_from_the_result_is_escaped(tmp_path: Path) -> None:
    result = faulty_result()
    result["scenario"] = "<b>bold</b>"
    result["events"].append({"at_s": 1.0, "text": "<img src=x onerror=alert(1)>"})
    page = write_html_report(result, tmp_path / "report.html").read_text(encoding="utf-8")

    assert "<script>" not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; restart" in page
    assert "<b>bold</b>" not in page and "&lt;b&gt;bold&lt;/b&gt;" in page
    assert "<img src=x" not in page and "&lt;img src=x onerror=alert(1)&gt;" in page


def test_a_run_with_nulls_and_no_timeline_still_renders(tmp_path: Path) -> None:
    page = write_html_report(null_result(), tmp_path / "report.html").read_text(encoding="utf-8")

    assert 'class="verdict bad"' in page
    assert "lost acknowledged writes were not measured" in page
    assert "linearizability was not checked" in page
    assert "No events were recorded." in page
    text = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", page)
    assert "None" not in text  # nulls are shown as a dash, never as Python's None
    assert not re.search(r"\bnan\b", text, re.IGNORECASE)
    assert embedded_pngs(page)[0].startswith(PNG_SIGNATURE)


def test_a_timeline_with_only_silent_seconds_renders() -> None:
    result = null_result()
    result["timeline"] = [
        {"t_s": t, "ok": 0, "fail": 0, "info": 0, "p50_ms": None, "p99_ms": None} for t in range(5)
    ]
    result["faults"] = [
        {
            "at_s": 1.0,
            "end_s": None,
            "kind": "zone-outage",
            "targets": "zone-b",
            "description": "zone b down",
        }
    ]
    result["rto_ms"]["faults"] = [
        {
            "kind": "zone-outage",
            "targets": "zone-b",
            "at_s": 1.0,
            "rto_ms": None,
            "new_leader": None,
        }
    ]
    assert render_timeline_png(result).startswith(PNG_SIGNATURE)


def test_the_timeline_png_is_deterministic() -> None:
    # No time bound here: timed assertions flake on this shared machine (one did, at 2.02 s).
    result = faulty_result()
    renders = [render_timeline_png(r) for r in (result, copy.deepcopy(result))]
    assert renders[0].startswith(PNG_SIGNATURE)
    assert renders[1] == renders[0]


def test_main_renders_a_saved_json_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "result.json"
    source.write_text(json.dumps(faulty_result()), encoding="utf-8")
    destination = tmp_path / "out.html"

    assert main([str(source), str(destination)]) == 0
    assert destination.is_file()
    assert str(destination) in capsys.readouterr().out
    assert "kill-leader" in destination.read_text(encoding="utf-8")


def test_main_rejects_wrong_usage_and_unreadable_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([]) == 2
    assert "usage" in capsys.readouterr().err
    assert main([str(tmp_path / "missing.json"), str(tmp_path / "out.html")]) == 1
    not_a_result = tmp_path / "list.json"
    not_a_result.write_text("[1, 2]", encoding="utf-8")
    assert main([str(not_a_result), str(tmp_path / "out.html")]) == 1
    assert not (tmp_path / "out.html").exists()


def test_time_to_full_redundancy_is_shown_per_fault(tmp_path: Path) -> None:
    result = faulty_result()
    result["redundancy"] = {
        "median_s": 4.2,
        "max_s": 4.2,
        "faults": [
            {"kind": "kill", "targets": ["n2"], "at_s": 12.0, "lost_at_s": 12.0,
             "healed_at_s": 20.0, "lost": True, "restored_at_s": 16.2, "seconds": 4.2,
             "after_heal_s": 1.3, "reason": None},
            {"kind": "pause", "targets": ["n3"], "at_s": 30.0, "lost_at_s": 30.0,
             "healed_at_s": 40.0, "lost": False, "restored_at_s": None, "seconds": None,
             "after_heal_s": None, "reason": "redundancy was never seen lost"},
            {"kind": "partition", "targets": ["n1", "n5"], "at_s": 50.0, "lost_at_s": 50.0,
             "healed_at_s": None, "lost": True, "restored_at_s": None, "seconds": None,
             "after_heal_s": None, "reason": "not restored before the end of the run"},
        ],
        "final": {"at_s": 59.8, "full": False, "reason": "shard 1: no leader"},
        "transitions": [{"at_s": 0.1, "full": True, "reason": None},
                        {"at_s": 12.2, "full": False, "reason": "shard 1: voter(s) n2 do not answer"},
                        {"at_s": 16.2, "full": True, "reason": None},
                        {"at_s": 50.3, "full": False, "reason": "shard 1: no leader"}],
        "poll_interval_s": 0.2,
        "lag_limit_entries": 100,
    }
    page = write_html_report(result, tmp_path / "report.html").read_text(encoding="utf-8")
    assert "Time to full redundancy" in page
    assert "worst 4.2 s · 1 of 2 restored" in page
    assert "<th>Full redundancy</th>" in page
    assert "4.2 s (1.3 s after heal)" in page
    assert "never lost" in page and "not restored" in page
    assert embedded_pngs(page)[0].startswith(PNG_SIGNATURE)
    # Results from before the measure existed still render, without the card.
    older = write_html_report(faulty_result(), tmp_path / "older.html").read_text("utf-8")
    assert "Time to full redundancy" not in older
