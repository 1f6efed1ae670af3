"""The admin HTTP server of one node: health checks, status, metrics, failover, fault rules.

Endpoints (HAProxy's `option httpchk` uses the first four, as with Patroni):

    GET  /health    200 while the event loop answers (that is the whole check)
    GET  /ready     200 while the node can serve SOME shard (its local replica knows a
                    leader and is caught up, or a live leader is known to forward to),
                    with the shards it cannot serve listed in "degraded"; else 503 with
                    the reason (also 503 before the map is known). `?shard=N`: 200 only if
                    shard N is served from here now; `?strict=1`: 200 only if EVERY local
                    replica knows a leader and is caught up (a replica placed here that
                    has not received its snapshot yet, new or wiped, is catching up)
    GET  /primary   200 only on the leader, else 503 (the body names role and leader);
                    `?key=K` or `?shard=N` asks about that key's / shard's leader
    GET  /replica   200 only on a healthy follower (knows a leader, caught up), else 503
    GET  /status    the node's status map (JSON)
    GET  /metrics   Prometheus text
    POST /failover  move leadership: optional JSON body {"to": "n3", "shard": 2}
                    -> {"leader": "n3"} (default: this node's default shard)
    POST /drain     {"node": "n4"}: move every replica and leader off a node
    POST /decommission  {"node": "n4"}: drain, then remove the node from the cluster
    POST /readmit   {"node": "n4"}: undo a drain (the node takes replicas again)
    POST /split     {"shard": 2, "at": 6000}: split a shard online (on its leader; "at"
                    optional: the middle of its largest slot range)
    POST /merge     {"shard": 2, "source": 5}: merge shard 5 into shard 2 online (on shard
                    2's leader; answers 202 while the two shards' replicas are co-located)
    GET  /analyze   single points of failure and estimated nines (`?node=0.99&zone=0.999
                    &region=0.9999&host=0.999`: availability figures of one node, zone, region, and of
                    a host shared by several nodes)
    GET|PUT|DELETE /faults   the network fault rules of the chaos lab
    GET|PUT|DELETE /faults/disk  the chaos lab's disk faults (server/disk_faults.py): PUT
                    {"shard": 1, "error": "EIO"|"ENOSPC", "reads": true, "writes": true}
                    arms one on the local replica's store; DELETE disarms every one
    POST /faults/lie  {"shard": 1, "key": "k", "value": "v"}: change one value of the local
                    replica without a log entry (a disk that lies; the consistency checker
                    must find it)
    GET  /          the live dashboard (phalanx.server.dashboard), fed by /events
    GET  /events    server-sent events: the /status JSON every 0.5 s (the dashboard's feed)

Rules of this file:
- The server knows the node only through the `NodeView` protocol below; it holds no state of
  its own beyond its listener, and every answer comes from the view at request time.
- Every response except `/metrics` and `/` is JSON; every error is JSON `{"error": "..."}`
  (404 for an unknown path, 405 for a wrong method). A handler never leaks a traceback: an
  unexpected exception answers 500 and is logged once with its traceback.
- Mutating endpoints (POST, PUT, DELETE) need `Authorization: Bearer <token>` when a token is
  configured (401 otherwise, compared in constant time); without a token they are refused (403)
  to any caller that is not on this machine (loopback). The fault endpoints answer 403 unless
  fault injection was enabled in the node's config.
- Health checks arrive every 100-200 ms per load balancer: the check handlers do no I/O, the
  `/health` body is built once, access logging is off, and GET routes also answer HEAD.
- The listener binds exactly `host:port`; port 0 picks a free port, reported by `port`.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

from aiohttp import web

from phalanx.errors import ConfigError, NotLeader, PhalanxError
from phalanx.server.dashboard import dashboard_page
from phalanx.server.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from phalanx.server.metrics import NodeMetrics

logger = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

#: The dashboard's feed: one status snapshot per interval, at most this many streams at once.
EVENT_INTERVAL_S = 0.5
MAX_EVENT_STREAMS = 32

#: Largest request body the admin API accepts (fault rules are the biggest).
MAX_BODY_BYTES = 64 * 1024

_NO_STORE = {"Cache-Control": "no-store"}
#: How a boolean query parameter (`?strict=1`) may be spelled.
_FLAGS = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}


class NodeView(Protocol):
    """What the admin server needs from the node (`phalanx.server.node` builds it from the
    node status, the controllers, resharding and the meta client)."""

    node_id: str
    zone: str
    region: str

    def status(self) -> dict[str, object]:
        """A JSON-serialisable map: node, zone, region, role ("leader", "follower",
        "candidate", "pre-candidate"), term, leader, commit_index, applied_index, last_index,
        peers (a list of {id, match, next, state, lag_entries, recent_active, connected}),
        uptime_s, version, and anything else worth showing."""
        ...

    def readiness(self, shard: int | None = None, *,
                  strict: bool = False) -> tuple[bool, str, dict[int, str]]:
        """(ready to serve clients?, the reason why or why not, the degraded shards with
        why). Default: can the node serve SOME shard; `shard`: that shard; `strict`: every
        local replica healthy."""
        ...

    def is_primary(self, shard: int | None = None, key: bytes | None = None) -> bool:
        """True on the leader of the shard (of `key`; default: the node's default shard)."""
        ...

    def is_replica(self) -> bool:
        """True on a healthy follower: it knows a leader and is caught up within a threshold."""
        ...

    async def transfer_leadership(self, target: str | None, shard: int | None = None) -> str:
        """Move leadership to `target` (None: the best-caught-up peer); return the new
        leader's id. Raises NotLeader, ConfigError (bad target) or PhalanxError."""
        ...

    async def set_node_state(self, node_id: str, state: str) -> dict[str, object]:
        """Drain / decommission / readmit a node through the placement driver."""
        ...

    async def replace_node(self, node_id: str, incarnation: str) -> dict[str, object]:
        """Start replacing a node by a new incarnation (`phalanx replace`); ConfigError if
        the driver refuses (unknown node, same incarnation)."""
        ...

    def analysis(self, node_availability: float, zone_availability: float,
                 region_availability: float,
                 host_availability: float = 0.999) -> dict[str, object]:
        """Single points of failure and estimated availability of the topology."""
        ...

    async def split_shard(self, shard: int, at: int | None = None) -> dict[str, object]:
        """Split a shard (this node must lead it); NotLeader or ConfigError otherwise."""
        ...

    async def merge_shards(self, shard: int, source: int) -> dict[str, object]:
        """Merge `source` into `shard` (this node must lead `shard`)."""
        ...

    def set_fault_rules(self, rules: dict[str, object]) -> dict[str, object]:
        """Replace the fault rules; return the rules now in force. ConfigError if invalid."""
        ...

    def get_fault_rules(self) -> dict[str, object]:
        ...

    def clear_fault_rules(self) -> None:
        ...

    def set_disk_fault(self, rules: dict[str, object]) -> dict[str, object]:
        """Arm a disk fault (server/disk_faults.py); every armed fault. ConfigError if bad."""
        ...

    def get_disk_faults(self) -> dict[str, object]:
        ...

    def clear_disk_faults(self) -> None:
        ...

    def plant_lie(self, shard: int, key: bytes, value: bytes) -> dict[str, object]:
        """Change one value of a local replica without a log entry; ConfigError if none."""
        ...


def is_loopback(remote: str | None) -> bool:
    """True for a caller on this machine (127.0.0.0/8, ::1); False when unknown."""
    if not remote:
        return False
    try:
        return ipaddress.ip_address(remote.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


def _dumps(value: object) -> str:
    # default=str: a stray non-JSON value (a Path, an enum) shows as text rather than a 500.
    return json.dumps(value, separators=(",", ":"), default=str)


def _json(body: object, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(text=_dumps(body), status=status, content_type="application/json",
                        headers={**_NO_STORE, **(headers or {})})


def _error(status: int, message: str, **extra: object) -> web.Response:
    return _json({"error": message, **extra}, status=status)


class AdminServer:
    """The admin HTTP listener of one node (aiohttp, on the node's event loop)."""

    def __init__(self, view: NodeView, metrics: NodeMetrics, host: str, port: int, *,
                 token: str = "", enable_fault_injection: bool = False,
                 failover_timeout_s: float = 15.0) -> None:
        self.view = view
        self.metrics = metrics
        self.host = host
        self.requested_port = port
        self._token = token.encode()
        self._faults_enabled = enable_fault_injection
        self._failover_timeout_s = failover_timeout_s
        self._runner: web.AppRunner | None = None
        self._port: int | None = None
        self._health_body = _dumps({"status": "ok", "node": view.node_id}).encode()
        self._index_body = dashboard_page(view.node_id)
        self._streams = 0

    # Lifecycle.
    @property
    def port(self) -> int:
        """The bound port (the real one when started with port 0)."""
        if self._port is None:
            raise PhalanxError("admin server is not started")
        return self._port

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def start(self) -> None:
        if self._runner is not None:
            raise PhalanxError("admin server is already started")
        app = web.Application(middlewares=[self._guard], client_max_size=MAX_BODY_BYTES)
        router = app.router
        # add_get also answers HEAD (allow_head defaults to True).
        router.add_get("/", self._index)
        router.add_get("/events", self._events)
        router.add_get("/health", self._health)
        router.add_get("/ready", self._ready)
        router.add_get("/primary", self._primary)
        router.add_get("/replica", self._replica)
        router.add_get("/status", self._status)
        router.add_get("/metrics", self._metrics)
        router.add_post("/failover", self._failover)
        router.add_post("/drain", self._drain)
        router.add_post("/decommission", self._decommission)
        router.add_post("/readmit", self._readmit)
        router.add_post("/replace", self._replace)
        router.add_post("/split", self._split)
        router.add_post("/merge", self._merge)
        router.add_get("/analyze", self._analyze)
        router.add_get("/faults", self._get_faults)
        router.add_put("/faults", self._put_faults)
        router.add_delete("/faults", self._delete_faults)
        router.add_get("/faults/disk", self._get_disk_faults)
        router.add_put("/faults/disk", self._put_disk_fault)
        router.add_delete("/faults/disk", self._delete_disk_faults)
        router.add_post("/faults/lie", self._post_lie)
        # No access log: load balancers check every 100-200 ms. A short shutdown timeout: a
        # pending failover must not hold the node's stop for a minute.
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.host, self.requested_port)
            await site.start()
        except OSError as error:
            await runner.cleanup()
            raise PhalanxError(f"{self.view.node_id}: admin server cannot listen on "
                               f"{self.host}:{self.requested_port}: {error.strerror}") from error
        self._runner = runner
        self._port = int(runner.addresses[0][1])
        logger.info("%s admin server listening on %s:%d", self.view.node_id, self.host,
                    self._port)

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
            logger.info("%s admin server stopped", self.view.node_id)
        self._port = None

    # The guard: authentication, JSON errors, no tracebacks.
    @web.middleware
    async def _guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.method in ("POST", "PUT", "DELETE") and not self._token and \
                not is_loopback(request.remote):
            # No token configured: mutations only from this machine (secure by default).
            return _json({"error": "mutating admin endpoints need a token when called from "
                                   "another machine: set admin_token in the node's config"},
                         status=403)
        if request.method in ("POST", "PUT", "DELETE") and self._token:
            header = request.headers.get("Authorization", "")
            scheme, _, presented = header.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(
                    presented.strip().encode(), self._token):
                return _json({"error": "this endpoint needs 'Authorization: Bearer <token>' "
                                       "(the node's admin_token)"}, status=401,
                             headers={"WWW-Authenticate": 'Bearer realm="phalanx-admin"'})
        try:
            return await handler(request)
        except web.HTTPException as http_error:
            if http_error.status == 404:
                return _error(404, f"no such endpoint: {request.path} (see GET /)")
            if http_error.status == 405:
                allowed = http_error.headers.get("Allow", "")
                return _json({"error": f"{request.method} is not allowed on {request.path}"
                                       f" (allowed: {allowed})"}, status=405,
                             headers={"Allow": allowed})
            if http_error.status == 413:
                return _error(413, f"request body is larger than {MAX_BODY_BYTES} bytes")
            return _error(http_error.status, http_error.reason)
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("%s admin %s %s failed", self.view.node_id, request.method,
                             request.path)
            return _error(500, "internal error (see the node's log)")

    # Health checks.
    async def _index(self, request: web.Request) -> web.Response:
        return web.Response(body=self._index_body, content_type="text/html", charset="utf-8")

    async def _events(self, request: web.Request) -> web.StreamResponse:
        """Server-sent events: one `data: <status JSON>` every 0.5 s until the client goes."""
        if self._streams >= MAX_EVENT_STREAMS:
            return _error(503, f"too many dashboard streams (at most {MAX_EVENT_STREAMS})")
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                               "Cache-Control": "no-store",
                                               "X-Accel-Buffering": "no"})
        await response.prepare(request)
        self._streams += 1
        try:
            while True:
                payload = _dumps(self.view.status())
                await response.write(f"data: {payload}\n\n".encode())
                await asyncio.sleep(EVENT_INTERVAL_S)
        except (ConnectionError, asyncio.CancelledError):
            pass  # the browser went away, or the server is stopping
        finally:
            self._streams -= 1
        return response

    async def _health(self, request: web.Request) -> web.Response:
        return web.Response(body=self._health_body, content_type="application/json",
                            headers=_NO_STORE)

    async def _ready(self, request: web.Request) -> web.Response:
        shard_text = request.query.get("shard")
        shard: int | None = None
        if shard_text is not None:
            if not shard_text.isdigit():
                return _error(400, f"shard must be a shard number, not {shard_text!r}")
            shard = int(shard_text)
        strict_text = request.query.get("strict", "0").lower()
        if strict_text not in _FLAGS:
            return _error(400, f"strict must be 1 or 0, not {strict_text!r}")
        ready, reason, degraded = self.view.readiness(shard, strict=_FLAGS[strict_text])
        shards = {str(shard_id): why for shard_id, why in sorted(degraded.items())}
        if ready:
            return _json({"ready": True, "node": self.view.node_id, "reason": reason,
                          "degraded": shards})
        return _error(503, f"not ready: {reason}", ready=False, node=self.view.node_id,
                      degraded=shards)

    def _role_and_leader(self) -> tuple[str, object]:
        status = self.view.status()
        return str(status.get("role", "unknown")), status.get("leader") or None

    async def _primary(self, request: web.Request) -> web.Response:
        key = request.query.get("key")
        shard_text = request.query.get("shard")
        shard: int | None = None
        if shard_text is not None:
            if not shard_text.isdigit():
                return _error(400, f"shard must be a shard number, not {shard_text!r}")
            shard = int(shard_text)
        try:
            primary = self.view.is_primary(shard, key.encode() if key is not None else None)
        except ConfigError as error:
            return _error(400, str(error))
        if key is not None or shard is not None:
            body: dict[str, object] = {"node": self.view.node_id, "shard": shard, "key": key}
            if primary:
                return _json(body)
            return _error(503, f"{self.view.node_id} does not lead that shard", **body)
        role, leader = self._role_and_leader()
        body = {"node": self.view.node_id, "role": role, "leader": leader}
        if primary:
            return _json(body)
        return _error(503, f"{self.view.node_id} is not the leader (role {role}, "
                           f"leader {leader or 'unknown'})", **body)

    async def _replica(self, request: web.Request) -> web.Response:
        replica = self.view.is_replica()
        role, leader = self._role_and_leader()
        body = {"node": self.view.node_id, "role": role, "leader": leader}
        if replica:
            return _json(body)
        why = "it is the leader" if role == "leader" else "no known leader or not caught up"
        return _error(503, f"{self.view.node_id} is not a healthy replica ({why}; role {role}, "
                           f"leader {leader or 'unknown'})", **body)

    async def _status(self, request: web.Request) -> web.Response:
        return _json(self.view.status())

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=self.metrics.render(),
                            headers={"Content-Type": METRICS_CONTENT_TYPE, **_NO_STORE})

    # Failover.
    async def _failover(self, request: web.Request) -> web.Response:
        body = await _read_json_object(request, allow_empty=True)
        if isinstance(body, web.Response):
            return body
        unknown = set(body) - {"to", "shard"}
        if unknown:
            return _error(400, f"unknown field(s) {', '.join(sorted(unknown))}; "
                               'the body is {"to": "<node id>", "shard": <n>} or empty')
        target = body.get("to")
        if target is not None and (not isinstance(target, str) or not target):
            return _error(400, '"to" must be a node id (a non-empty string) or null')
        shard = body.get("shard")
        if shard is not None and (not isinstance(shard, int) or isinstance(shard, bool)):
            return _error(400, '"shard" must be a shard number or null')
        try:
            async with asyncio.timeout(self._failover_timeout_s):
                leader = await self.view.transfer_leadership(target, shard)
        except TimeoutError:
            return _error(504, f"leadership transfer did not finish within "
                               f"{self._failover_timeout_s:g} s")
        except NotLeader as error:
            return _error(409, str(error), leader=error.leader_hint)
        except ConfigError as error:
            return _error(400, str(error))
        except PhalanxError as error:
            return _error(503, f"leadership transfer failed: {error}")
        logger.info("%s admin: leadership moved to %s", self.view.node_id, leader)
        return _json({"leader": leader})

    # Placement: drain, decommission, readmit, analyze.
    async def _node_state(self, request: web.Request, state: str) -> web.Response:
        body = await _read_json_object(request, allow_empty=False)
        if isinstance(body, web.Response):
            return body
        node = body.get("node")
        if set(body) != {"node"} or not isinstance(node, str) or not node:
            return _error(400, 'the body is {"node": "<node id>"}')
        try:
            result = await self.view.set_node_state(node, state)
        except ConfigError as error:
            return _error(400, str(error))
        except NotLeader as error:
            return _error(503, f"the placement driver is unavailable: {error}")
        except (PhalanxError, TimeoutError) as error:
            return _error(503, f"the placement driver did not accept it: {error}")
        logger.info("%s admin: node %s -> %s", self.view.node_id, node, state)
        return _json(result)

    async def _drain(self, request: web.Request) -> web.Response:
        return await self._node_state(request, "draining")

    async def _decommission(self, request: web.Request) -> web.Response:
        return await self._node_state(request, "decommissioned")

    async def _readmit(self, request: web.Request) -> web.Response:
        return await self._node_state(request, "alive")

    async def _replace(self, request: web.Request) -> web.Response:
        body = await _read_json_object(request, allow_empty=False)
        if isinstance(body, web.Response):
            return body
        node, incarnation = body.get("node"), body.get("incarnation")
        if set(body) != {"node", "incarnation"} or not isinstance(node, str) or not node or \
                not isinstance(incarnation, str) or not incarnation:
            return _error(400, 'the body is {"node": "<node id>", "incarnation": "<new id>"}')
        try:
            result = await self.view.replace_node(node, incarnation)
        except ConfigError as error:
            return _error(400, str(error))
        except NotLeader as error:
            return _error(503, f"the placement driver is unavailable: {error}")
        except (PhalanxError, TimeoutError) as error:
            return _error(503, f"the placement driver did not accept it: {error}")
        logger.warning("%s admin: replacing node %s by incarnation %s", self.view.node_id, node,
                       incarnation)
        return _json(result)

    async def _split(self, request: web.Request) -> web.Response:
        body = await _read_json_object(request, allow_empty=False)
        if isinstance(body, web.Response):
            return body
        shard, at = body.get("shard"), body.get("at")
        if set(body) - {"shard", "at"} or not isinstance(shard, int) or isinstance(shard, bool) \
                or (at is not None and (not isinstance(at, int) or isinstance(at, bool))):
            return _error(400, 'the body is {"shard": <n>, "at": <slot, optional>}')
        try:
            result = await self.view.split_shard(shard, at)
        except NotLeader as error:
            return _error(409, str(error), leader=error.leader_hint)
        except ConfigError as error:
            return _error(400, str(error))
        except (PhalanxError, TimeoutError) as error:
            return _error(503, f"the split did not complete: {error}")
        logger.info("%s admin: split %s", self.view.node_id, result)
        return _json(result)

    async def _merge(self, request: web.Request) -> web.Response:
        body = await _read_json_object(request, allow_empty=False)
        if isinstance(body, web.Response):
            return body
        shard, source = body.get("shard"), body.get("source")
        if set(body) != {"shard", "source"} or not isinstance(shard, int) or \
                not isinstance(source, int) or isinstance(shard, bool) or \
                isinstance(source, bool):
            return _error(400, 'the body is {"shard": <n>, "source": <n>}')
        try:
            result = await self.view.merge_shards(shard, source)
        except NotLeader as error:
            return _error(409, str(error), leader=error.leader_hint)
        except ConfigError as error:
            return _error(400, str(error))
        except (PhalanxError, TimeoutError) as error:
            return _error(503, f"the merge did not complete: {error}")
        logger.info("%s admin: merge %s", self.view.node_id, result)
        return _json(result, status=200 if result.get("status") == "merged" else 202)

    async def _analyze(self, request: web.Request) -> web.Response:
        figures = {}
        for name, default in (("node", 0.99), ("zone", 0.999), ("region", 0.9999),
                              ("host", 0.999)):
            text = request.query.get(name, str(default))
            try:
                value = float(text)
            except ValueError:
                return _error(400, f"{name} must be an availability between 0 and 1")
            if not 0.0 < value <= 1.0:
                return _error(400, f"{name} must be an availability in (0, 1], got {value}")
            figures[name] = value
        return _json(self.view.analysis(figures["node"], figures["zone"], figures["region"],
                                        figures["host"]))

    # Fault rules.
    def _faults_disabled(self) -> web.Response | None:
        if self._faults_enabled:
            return None
        return _error(403, "fault injection is disabled on this node "
                           "(set enable_fault_injection = true in its config; chaos lab only)")

    async def _get_faults(self, request: web.Request) -> web.Response:
        return self._faults_disabled() or _json(self.view.get_fault_rules())

    async def _put_faults(self, request: web.Request) -> web.Response:
        refused = self._faults_disabled()
        if refused is not None:
            return refused
        rules = await _read_json_object(request, allow_empty=False)
        if isinstance(rules, web.Response):
            return rules
        try:
            applied = self.view.set_fault_rules(rules)
        except ConfigError as error:
            return _error(400, str(error))
        logger.warning("%s admin: fault rules set: %s", self.view.node_id, _dumps(applied))
        return _json(applied)

    async def _delete_faults(self, request: web.Request) -> web.Response:
        refused = self._faults_disabled()
        if refused is not None:
            return refused
        self.view.clear_fault_rules()
        logger.warning("%s admin: fault rules cleared", self.view.node_id)
        return _json(self.view.get_fault_rules())


    async def _get_disk_faults(self, request: web.Request) -> web.Response:
        return self._faults_disabled() or _json(self.view.get_disk_faults())

    async def _put_disk_fault(self, request: web.Request) -> web.Response:
        refused = self._faults_disabled()
        if refused is not None:
            return refused
        rules = await _read_json_object(request, allow_empty=False)
        if isinstance(rules, web.Response):
            return rules
        try:
            return _json(self.view.set_disk_fault(rules))
        except ConfigError as error:
            return _error(400, str(error))

    async def _delete_disk_faults(self, request: web.Request) -> web.Response:
        refused = self._faults_disabled()
        if refused is not None:
            return refused
        self.view.clear_disk_faults()
        return _json(self.view.get_disk_faults())

    async def _post_lie(self, request: web.Request) -> web.Response:
        refused = self._faults_disabled()
        if refused is not None:
            return refused
        body = await _read_json_object(request, allow_empty=False)
        if isinstance(body, web.Response):
            return body
        shard, key, value = body.get("shard"), body.get("key"), body.get("value")
        if not isinstance(shard, int) or isinstance(shard, bool) or \
                not isinstance(key, str) or not isinstance(value, str):
            return _error(400, "the body needs {\"shard\": N, \"key\": str, \"value\": str}")
        try:
            return _json(self.view.plant_lie(shard, key.encode(), value.encode()))
        except ConfigError as error:
            return _error(400, str(error))


async def _read_json_object(request: web.Request, *,
                            allow_empty: bool) -> dict[str, object] | web.Response:
    """The request's JSON object body, or a 400 response saying what is wrong with it."""
    raw = await request.read()
    if not raw.strip():
        if allow_empty:
            return {}
        return _error(400, "the request needs a JSON object body")
    try:
        value = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        return _error(400, f"the body is not valid JSON: {error}")
    if not isinstance(value, dict):
        return _error(400, f"the body must be a JSON object, not {type(value).__name__}")
    return value
