"""Tests of the admin HTTP server against a fake NodeView: every endpoint's status codes and
JSON bodies, HEAD on the checks, token enforcement, fault endpoints off by default, errors as
JSON without tracebacks, and a stop() that frees the port."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest

from phalanx.errors import ConfigError, NotLeader, PhalanxError
from phalanx.server.admin import AdminServer, NodeView
from phalanx.server.metrics import NodeMetrics


class FakeView:
    """A node as the admin server sees it, with every answer settable by the test."""

    def __init__(self) -> None:
        self.node_id = "n1"
        self.zone = "zone-a"
        self.region = "region-1"
        self.role = "leader"
        self.leader: str | None = "n1"
        self.ready = (True, "serving")
        self.degraded: dict[int, str] = {}
        self.readiness_asked: list[tuple[int | None, bool]] = []
        self.replica = False
        self.rules: dict[str, object] = {}
        self.transfer_result: str | BaseException = "n2"
        self.transfer_calls: list[str | None] = []
        self.transfer_shards: list[int | None] = []
        self.node_states: list[tuple[str, str]] = []
        self.transfer_delay_s = 0.0
        self.status_error: BaseException | None = None

    def status(self) -> dict[str, object]:
        if self.status_error is not None:
            raise self.status_error
        return {"node": self.node_id, "zone": self.zone, "region": self.region,
                "role": self.role, "term": 3, "leader": self.leader, "commit_index": 10,
                "applied_index": 10, "last_index": 10,
                "peers": [{"id": "n2", "match": 10, "next": 11, "state": "replicate",
                           "lag_entries": 0, "recent_active": True, "connected": True}],
                "uptime_s": 1.5, "version": "0.1.0"}

    def readiness(self, shard: int | None = None, *,
                  strict: bool = False) -> tuple[bool, str, dict[int, str]]:
        self.readiness_asked.append((shard, strict))
        return (*self.ready, self.degraded)

    def is_primary(self, shard: int | None = None, key: bytes | None = None) -> bool:
        if shard is not None and shard > 9:
            raise ConfigError(f"no shard {shard}")
        return self.role == "leader" and shard in (None, 1) and key in (None, b"mine")

    def is_replica(self) -> bool:
        return self.replica

    async def transfer_leadership(self, target: str | None, shard: int | None = None) -> str:
        self.transfer_calls.append(target)
        self.transfer_shards.append(shard)
        if self.transfer_delay_s:
            await asyncio.sleep(self.transfer_delay_s)
        if isinstance(self.transfer_result, BaseException):
            raise self.transfer_result
        return self.transfer_result

    async def set_node_state(self, node_id: str, state: str) -> dict[str, object]:
        if node_id == "ghost":
            raise ConfigError("unknown node 'ghost'")
        self.node_states.append((node_id, state))
        return {"node": node_id, "state": state, "reply": "OK"}

    def analysis(self, node_availability: float, zone_availability: float,
                 region_availability: float,
                 host_availability: float = 0.999) -> dict[str, object]:
        return {"figures": [node_availability, zone_availability, region_availability,
                            host_availability]}

    async def split_shard(self, shard: int, at: int | None = None) -> dict[str, object]:
        if shard == 9:
            raise NotLeader("n2", "this node does not lead shard 9")
        return {"shard": shard, "new_shard": 5, "slots": [at or 100, 200]}

    async def merge_shards(self, shard: int, source: int) -> dict[str, object]:
        if source == shard:
            raise ConfigError("merge needs two different existing shards")
        status = "merged" if source == 2 else "co-locating"
        return {"status": status, "shard": shard, "source": source}

    def set_fault_rules(self, rules: dict[str, object]) -> dict[str, object]:
        if "bad" in rules:
            raise ConfigError("faults.bad: not a rule")
        self.rules = dict(rules)
        return self.rules

    def get_fault_rules(self) -> dict[str, object]:
        return dict(self.rules)

    def clear_fault_rules(self) -> None:
        self.rules = {}


Check = Callable[[AdminServer, FakeView, aiohttp.ClientSession], Awaitable[None]]


def run(check: Check, **options: Any) -> FakeView:
    """Start an AdminServer on a free loopback port, run `check` against it, stop it."""
    view = FakeView()

    async def main() -> None:
        view_as_protocol: NodeView = view  # the fake satisfies the protocol (checked by mypy)
        server = AdminServer(view_as_protocol, NodeMetrics("n1"), "127.0.0.1", 0, **options)
        await server.start()
        try:
            async with aiohttp.ClientSession(base_url=server.url) as session:
                await check(server, view, session)
        finally:
            await server.stop()

    asyncio.run(main())
    return view


async def get_json(session: aiohttp.ClientSession, method: str, path: str,
                   **kwargs: Any) -> tuple[int, dict[str, Any]]:
    async with session.request(method, path, **kwargs) as response:
        assert response.content_type == "application/json"
        return response.status, json.loads(await response.read())


def test_health_answers_ok_and_head() -> None:
    async def check(server: AdminServer, view: FakeView, session: aiohttp.ClientSession) -> None:
        assert await get_json(session, "GET", "/health") == (200, {"status": "ok", "node": "n1"})
        async with session.head("/health") as response:
            assert response.status == 200
            assert await response.read() == b""
        for path in ("/ready", "/primary", "/replica"):
            async with session.head(path) as response:
                assert response.status == 200 if path != "/replica" else 503

    run(check)


def test_ready_reports_reason_both_ways() -> None:
    async def check(server: AdminServer, view: FakeView, session: aiohttp.ClientSession) -> None:
        status, body = await get_json(session, "GET", "/ready")
        assert status == 200 and body["ready"] is True and body["reason"] == "serving"
        view.ready = (False, "catching up: 40 entries behind")
        status, body = await get_json(session, "GET", "/ready")
        assert status == 503 and body["ready"] is False
        assert "catching up: 40 entries behind" in body["error"]

    run(check)


def test_ready_lists_degraded_shards_and_passes_shard_and_strict() -> None:
    async def check(server: AdminServer, view: FakeView, session: aiohttp.ClientSession) -> None:
        view.ready = (True, "serving; degraded: shard 2 (no leader known)")
        view.degraded = {2: "no leader known"}
        status, body = await get_json(session, "GET", "/ready")
        assert status == 200 and body["degraded"] == {"2": "no leader known"}
        view.ready = (False, "shard 2: no leader known")
        status, body = await get_json(session, "GET", "/ready?shard=2")
        assert status == 503 and body["degraded"] == {"2": "no leader known"}
        status, body = await get_json(session, "GET", "/ready?strict=1")
        assert status == 503 and "shard 2: no leader known" in body["error"]
        status, _ = await get_json(session, "GET", "/ready?strict=0")
        assert view.readiness_asked == [(None, False), (2, False), (None, True), (None, False)]
        for bad in ("/ready?shard=two", "/ready?shard=-1", "/ready?strict=maybe"):
            status, body = await get_json(session, "GET", bad)
            assert status == 400, (bad, body)
        assert len(view.readiness_asked) == 4  # a bad request never reaches the view

    run(check)


def test_primary_and_replica_follow_the_role() -> None:
    async def check(server: AdminServer, view: FakeView, session: aiohttp.ClientSession) -> None:
        status, body = await get_json(session, "GET", "/primary")
        assert status == 200 and body == {"node": "n1", "role": "leader", "leader": "n1"}
        status, body = await get_json(session, "GET", "/replica")
        assert status == 503 and body["role"] == "leader" and "not a healthy replica" in body["error"]

        view.role, view.leader, view.replica = "follower", "n2", True
        status, body = await get_json(session, "GET", "/primary")
        assert status == 503 and body["role"] == "follower" and body["leader"] == "n2"
        assert "not the leader" in body["error"] and "n2" in body["error"]
        status, body = await get_json(session, "GET", "/replica")
        assert status == 200 and body["leader"] == "n2"

        view.role, view.leader, view.replica = "candidate", None, False
        status, body = await get_json(session, "GET", "/replica")
        assert status == 503 and body["leader"] is None and "unknown" in body["error"]

    run(check)


def test_status_is_the_views_map() -> None:
    async def check(server: AdminServer, view: FakeView, session: aiohttp.ClientSession) -> None:
        status, body = await get_json(session, "GET", "/status")
        assert status == 200 and body == json.loads(json.dumps(view.status()))

    run(check)


def test_metrics_are_prometheus_text_and_change() -> None:
    async def check(server: AdminServer, view: FakeView, session: aiohttp.ClientSession) -> None:
        async with session.get("/metrics") as response:
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            before = (await response.read()).decode()
        assert 'phalanx_node_info{node="n1"} 1.0' in before
        assert "phalanx_resp_connections 0.0" in before
        server.metrics.connection_opened()
        server.metrics.group(2).observe_commit(0.003)
        async with session.get("/metrics") as response:
            after = (await response.read()).decode()
        assert "phalanx_resp_connections 1.0" in after
        assert 'phalanx_raft_commit_latency_seconds_count{group="2"} 1.0' in after

    run(check)


def test_index_page_lists_endpoints() -> None:
    async def check(server: AdminServer, view: FakeView, session: aiohttp.ClientSession) -> None:
        async with session.get("/") as response:
            assert response.status == 200 and response.content_type == "text/html"
            page = await response.text()
        for path in ("/health", "/ready", "/primary", "/replica", "/status", "/metrics",
                     "/failover", "/faults"):
            assert path in page

    run(check)


def test_unknown_path_and_wrong_method_are_json_errors() -> None:
    async def check(server: AdminServer, view: FakeView, session: aiohttp.ClientSession) -> None:
        status, body = await get_json(session, "GET", "/nope")
        assert status == 404 and "/nope" in body["error"]
        status, body = await get_json(session, "DELETE", "/health")
        assert status == 405 and "not allowed" in body["error"]
        status, body = await get_json(session, "GET", "/failover")
        assert status == 405 and "POST" in body["error"]

    run(check)


def test_failover_moves_leadership() -> None:
    async def check(server: AdminServer, view: FakeView, session: aiohttp.ClientSession) -> None:
        assert await get_json(session, "POST", "/failover") == (200, {"leader": "n2"})
        view.transfer_result = "n3"
        assert await get_json(session, "POST", "/failover", json={"to": "n3"}) == (
            200, {"leader": "n3"})
        assert view.transfer_calls == [None, "n3"]

    run(check)


def test_failover_errors_are_clear() -> None:
    async def check(server: AdminServer, view: FakeView, session: aiohttp.ClientSession) -> None:
        view.transfer_result = NotLeader("n2")
        status, body = await get_json(session, "POST", "/failover")
        assert status == 409 and body["leader"] == "n2" and "not the leader" in body["error"]
        view.transfer_result = ConfigError("to: 'n9' is not a member")
        status, body = await get_json(session, "POST", "/failover", json={"to": "n9"})
        assert status == 400 and body == {"error": "to: 'n9' is not a member"}
        view.transfer_result = PhalanxError("n3 did not catch up")
        status, body = await get_json(session, "POST", "/failover")
        assert status == 503 and "n3 did not catch up" in body["error"]

        calls = len(view.transfer_calls)
        for bad in (b"{nope", b"[1]", b'{"to": 3}', b'{"to": ""}', b'{"target": "n2"}'):
            status, body = await get_json(session, "POST", "/failover", data=bad)
            assert status == 400 and body["error"]
        assert len(view.transfer_calls) == calls  # a bad body never reaches the node

    run(check)


def test_failover_times_out() -> None:
    async def check(server: AdminServer, view: FakeView, session: aiohttp.ClientSession) -> None:
        view.transfer_delay_s = 5.0
        status, body = await get_json(session, "POST", "/failover")
        assert status == 504 and "0.2 s" in body["error"]

    run(check, failover_timeout_s=0.2)


def test_handler_exception_is_a_500_without_traceback(caplog: pytest.LogCaptureFixture) -> None:
    async def check(server: AdminServer, view: FakeView, session: aiohttp.ClientSession) -> None:
        view.status_error = RuntimeError("secret internals")
        async with session.get("/status") as response:
            assert response.status == 500
            text = await response.text()
        assert json.loads(text) == {"error": "internal error (see the node's log)"}
        assert "secret" not in text and "Traceback" not in text
        view.transfer_result = ValueError("boom")
        status, _ = await get_json(session, "POST", "/failover")
        assert status == 500
        assert await get_json(session, "GET", "/health") == (200, {"status": "ok", "node": "n1"})

    with caplog.at_level(logging.ERROR, logger="phalanx.server.admin"):
        run(check)
    failures = [record for record in caplog.records if "failed" in record.getMessage()]
    assert len(failures) == 2 and failures[0].exc_info is not None


def test_token_guards_mutating_endpoints_only() -> None:
    async def check(server: AdminServer, view: FakeView, session: aiohttp.ClientSession) -> None:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"},
                        {"Authorization": "Basic s3cret"}):
            status, body = await get_json(session, "POST", "/failover", headers=headers)
            assert status == 401 and "Bearer" in body["error"]
            status, _ = await get_json(session, "PUT", "/faults", json={}, headers=headers)
            assert status == 401
            status, _ = await get_json(session, "DELETE", "/faults", headers=headers)
            assert status == 401
        assert view.transfer_calls == []
        good = {"Authorization": "Bearer s3cret"}
        assert await get_json(session, "POST", "/failover", headers=good) == (
            200, {"leader": "n2"})
        assert await get_json(session, "PUT", "/faults", json={"drop": ["n2"]},
                              headers=good) == (200, {"drop": ["n2"]})
        # Reads need no token.
        for path in ("/health", "/ready", "/status", "/faults"):
            async with session.get(path) as response:
                assert response.status == 200

    run(check, token="s3cret", enable_fault_injection=True)


def test_fault_endpoints_are_refused_by_default() -> None:
    async def check(server: AdminServer, view: FakeView, session: aiohttp.ClientSession) -> None:
        for method in ("GET", "PUT", "DELETE"):
            status, body = await get_json(session, method, "/faults", json={"drop": ["n2"]})
            assert status == 403 and "enable_fault_injection" in body["error"]
        assert view.rules == {}

    run(check)


def test_fault_rules_round_trip_when_enabled() -> None:
    async def check(server: AdminServer, view: FakeView, session: aiohttp.ClientSession) -> None:
        assert await get_json(session, "GET", "/faults") == (200, {})
        rules = {"drop": ["n2"], "delay_ms": {"n3": 50}}
        assert await get_json(session, "PUT", "/faults", json=rules) == (200, rules)
        assert await get_json(session, "GET", "/faults") == (200, rules)
        status, body = await get_json(session, "PUT", "/faults", json={"bad": 1})
        assert status == 400 and body == {"error": "faults.bad: not a rule"}
        status, body = await get_json(session, "PUT", "/faults", data=b"")
        assert status == 400 and "JSON object" in body["error"]
        status, body = await get_json(session, "PUT", "/faults", data=b"x" * (70 * 1024))
        assert status == 413
        assert await get_json(session, "DELETE", "/faults") == (200, {})
        assert view.rules == {}

    run(check, enable_fault_injection=True)


def test_stop_frees_the_port_and_start_reports_busy_port() -> None:
    async def main() -> None:
        metrics = NodeMetrics("n1", process_metrics=False)
        server = AdminServer(FakeView(), metrics, "127.0.0.1", 0)
        await server.start()
        port = server.port
        assert server.url == f"http://127.0.0.1:{port}"

        busy = AdminServer(FakeView(), metrics, "127.0.0.1", port)
        with pytest.raises(PhalanxError, match="cannot listen"):
            await busy.start()

        await server.stop()
        with pytest.raises(PhalanxError):
            _ = server.port
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", port))  # free again
        again = AdminServer(FakeView(), metrics, "127.0.0.1", port)
        await again.start()
        async with aiohttp.ClientSession() as session, session.get(f"{again.url}/health") as response:
            assert response.status == 200
        await again.stop()
        await again.stop()  # idempotent

    asyncio.run(main())


def test_primary_per_key_and_shard() -> None:
    async def check(server: AdminServer, view: FakeView, session: aiohttp.ClientSession) -> None:
        assert (await get_json(session, "GET", "/primary?shard=1"))[0] == 200
        assert (await get_json(session, "GET", "/primary?key=mine"))[0] == 200
        status, body = await get_json(session, "GET", "/primary?shard=2")
        assert status == 503 and "does not lead" in body["error"]
        assert (await get_json(session, "GET", "/primary?key=other"))[0] == 503
        status, body = await get_json(session, "GET", "/primary?shard=x")
        assert status == 400 and "shard must be a shard number" in body["error"]
        status, body = await get_json(session, "GET", "/primary?shard=12")
        assert status == 400 and "no shard 12" in body["error"]

    run(check)


def test_failover_takes_a_shard() -> None:
    async def check(server: AdminServer, view: FakeView, session: aiohttp.ClientSession) -> None:
        assert await get_json(session, "POST", "/failover", json={"to": "n2", "shard": 3}) == \
            (200, {"leader": "n2"})
        assert view.transfer_shards == [3]
        status, body = await get_json(session, "POST", "/failover", json={"shard": "three"})
        assert status == 400 and "shard" in body["error"]

    run(check)


def test_drain_decommission_readmit_and_analyze() -> None:
    async def check(server: AdminServer, view: FakeView, session: aiohttp.ClientSession) -> None:
        for path, state in (("/drain", "draining"), ("/decommission", "decommissioned"),
                            ("/readmit", "alive")):
            assert await get_json(session, "POST", path, json={"node": "n4"}) == \
                (200, {"node": "n4", "state": state, "reply": "OK"})
        assert view.node_states == [("n4", "draining"), ("n4", "decommissioned"),
                                    ("n4", "alive")]
        status, body = await get_json(session, "POST", "/drain", json={"node": "ghost"})
        assert status == 400 and "unknown node" in body["error"]
        status, body = await get_json(session, "POST", "/drain", json={"nodes": "n4"})
        assert status == 400 and '{"node": "<node id>"}' in body["error"]
        assert await get_json(session, "GET", "/analyze?node=0.9") == \
            (200, {"figures": [0.9, 0.999, 0.9999, 0.999]})
        assert await get_json(session, "GET", "/analyze?host=0.95") == \
            (200, {"figures": [0.99, 0.999, 0.9999, 0.95]})
        status, body = await get_json(session, "GET", "/analyze?host=0")
        assert status == 400 and "host must be an availability" in body["error"]
        status, body = await get_json(session, "GET", "/analyze?zone=2")
        assert status == 400 and "zone must be an availability" in body["error"]

    run(check)


def test_split_endpoint() -> None:
    async def check(server: AdminServer, view: FakeView, session: aiohttp.ClientSession) -> None:
        assert await get_json(session, "POST", "/split", json={"shard": 1, "at": 150}) == \
            (200, {"shard": 1, "new_shard": 5, "slots": [150, 200]})
        status, body = await get_json(session, "POST", "/split", json={"shard": 9})
        assert status == 409 and body["leader"] == "n2"
        status, body = await get_json(session, "POST", "/split", json={"shard": "1"})
        assert status == 400 and '"shard": <n>' in body["error"]

    run(check)


def test_merge_endpoint() -> None:
    async def check(server: AdminServer, view: FakeView, session: aiohttp.ClientSession) -> None:
        assert await get_json(session, "POST", "/merge", json={"shard": 1, "source": 2}) == \
            (200, {"status": "merged", "shard": 1, "source": 2})
        status, body = await get_json(session, "POST", "/merge", json={"shard": 1, "source": 3})
        assert status == 202 and body["status"] == "co-locating"
        status, body = await get_json(session, "POST", "/merge", json={"shard": 1, "source": 1})
        assert status == 400 and "two different" in body["error"]
        status, body = await get_json(session, "POST", "/merge", json={"shard": 1})
        assert status == 400

    run(check)


def test_events_stream_status_snapshots() -> None:
    async def check(server: AdminServer, view: FakeView, session: aiohttp.ClientSession) -> None:
        async with session.get("/events") as response:
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("text/event-stream")
            first = await response.content.readline()
            assert first.startswith(b"data: ")
            assert json.loads(first[len(b"data: "):])["node"] == "n1"
            assert await response.content.readline() == b"\n"
            view.role = "follower"
            second = b""
            while not second.startswith(b"data: "):
                second = await response.content.readline()
            assert json.loads(second[len(b"data: "):])["role"] == "follower"

    run(check)


def test_dashboard_page_is_served_with_the_node_escaped() -> None:
    from phalanx.server.dashboard import dashboard_page

    assert b"<title>phalanx n&lt;1&gt;</title>" in dashboard_page("n<1>")

    async def check(server: AdminServer, view: FakeView, session: aiohttp.ClientSession) -> None:
        async with session.get("/") as response:
            page = await response.text()
        assert 'new EventSource("/events")' in page and "phalanx n1" in page

    run(check)


def test_without_a_token_only_loopback_callers_may_mutate() -> None:
    from phalanx.server.admin import is_loopback

    assert is_loopback("127.0.0.1") and is_loopback("127.0.0.42") and is_loopback("::1")
    assert not is_loopback("192.0.2.7") and not is_loopback("10.1.2.3")
    assert not is_loopback("2001:db8::1") and not is_loopback(None) and not is_loopback("junk")
