"""CONFIG SET's live parameters, SLOWLOG, LATENCY, MEMORY, MONITOR, CLIENT PAUSE / UNPAUSE /
REPLY / UNBLOCK / LIST / KILL LADDR, BGSAVE / LASTSAVE, maxmemory and the idle timeout, on one
real phalanx node (its event loop in a thread) through redis-py, unchanged."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from phalanx.ops.ports import free_port as _free_port
from phalanx.resp import ErrorReply, SimpleString
from phalanx.server.config import NodeConfig, PeerConfig
from phalanx.server.node import Node

redis = pytest.importorskip("redis")
OK, PONG = SimpleString("OK"), SimpleString("PONG")




@pytest.fixture(scope="module")
def port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """One phalanx node, its event loop in a thread, until the module's tests end."""
    data_dir: Path = tmp_path_factory.mktemp("phalanx")
    resp_port = _free_port()
    peer = PeerConfig(id="n1", peer=f"127.0.0.1:{_free_port()}", resp=f"127.0.0.1:{resp_port}")
    config = NodeConfig(id="n1", data_dir=str(data_dir / "n1"), peers=(peer,), tick_ms=5,
                        heartbeat_ticks=2, election_ticks=10, request_timeout_ms=3000)
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    failed: list[BaseException] = []

    async def main() -> None:
        node = Node(config)
        await node.start()
        try:
            await stop.wait()
        finally:
            await node.stop()

    def run() -> None:
        try:
            loop.run_until_complete(main())
        except BaseException as error:  # reported by the fixture
            failed.append(error)

    thread = threading.Thread(target=run, name="phalanx-node", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while True:  # the first write waits for the node's leadership
            client = redis.Redis(host="127.0.0.1", port=resp_port, socket_timeout=5)
            try:
                client.set("phalanx:ready", "1")
                break
            except (redis.ConnectionError, redis.ResponseError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
            finally:
                client.close()
        yield resp_port
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(30)
        assert not failed, failed


@pytest.fixture
def r(port: int) -> Iterator[Any]:
    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=10)
    try:
        yield client
    finally:
        client.close()


def _other(port: int, **options: Any) -> Any:
    return redis.Redis(host="127.0.0.1", port=port, socket_timeout=10, **options)


def test_config_set_live_parameters(r: Any) -> None:
    assert r.config_set("timeout", 70, "maxmemory", "1mb")
    got = r.config_get("timeout", "maxmemory", "*max-*-entries*")
    assert got["timeout"] == "70" and got["maxmemory"] == "1048576"
    assert got["hash-max-listpack-entries"] == "512"
    assert r.config_set("timeout", 0, "maxmemory", 0)
    with pytest.raises(redis.ResponseError, match="argument 'databases'"):
        r.config_set("timeout", 5, "databases", 16)
    assert r.config_get("timeout")["timeout"] == "0"  # nothing applied: all or nothing
    with pytest.raises(redis.ResponseError, match="couldn't be parsed into an integer"):
        r.config_set("slowlog-max-len", "many")


def test_slowlog_records_commands_newest_first_with_secrets_redacted(r: Any, port: int) -> None:
    r.config_set("slowlog-log-slower-than", 0)
    try:
        assert r.slowlog_reset()
        other = _other(port, client_name="slow-one")
        other.get("slow:key")
        with pytest.raises(redis.exceptions.AuthenticationError):
            other.execute_command("AUTH", "not-the-password")
        log = r.slowlog_get(128)
        commands = [entry["command"] for entry in log]
        assert b"GET slow:key" in commands and b"AUTH (redacted)" in commands
        assert commands.index(b"GET slow:key") > commands.index(b"AUTH (redacted)")
        entry = log[commands.index(b"GET slow:key")]
        assert entry["client_name"] == b"slow-one" and entry["duration"] >= 0
        assert entry["client_address"].startswith(b"127.0.0.1:")
        assert len(r.slowlog_get(1)) == 1
        r.config_set("slowlog-max-len", 2)
        r.get("a")
        r.get("b")
        assert r.slowlog_len() == 2
        other.close()
    finally:
        r.config_set("slowlog-log-slower-than", 10000, "slowlog-max-len", 128)
    r.slowlog_reset()
    r.get("fast")
    assert r.slowlog_len() <= 1  # only a command slower than 10 ms (SLOWLOG RESET may be)


def test_latency_monitor_and_histogram(r: Any) -> None:
    assert r.latency_reset() == 0 or True  # earlier tests may have left no events
    assert r.latency_latest() == []
    assert r.latency_history("command") == []
    r.config_set("latency-monitor-threshold", 1)
    try:
        # A script that counts to five million takes well over a millisecond anywhere.
        r.eval("local n = 0 for i = 1, 5000000 do n = n + 1 end return n", 0)
        latest = r.latency_latest()
        assert [event[0] for event in latest] == [b"command"]
        assert latest[0][2] >= 1 and latest[0][3] >= latest[0][2]
        assert len(r.latency_history("command")) == 1
        assert b"latency spikes" in r.execute_command("LATENCY", "DOCTOR")
        assert r.latency_reset("command") == 1
        assert r.latency_latest() == []
    finally:
        r.config_set("latency-monitor-threshold", 0)
    r.set("h", "1")
    histogram = r.execute_command("LATENCY", "HISTOGRAM", "set")
    calls = histogram[b"set"][b"calls"] if b"set" in histogram else histogram["set"]["calls"]
    assert calls >= 1


def test_memory_subcommands(r: Any) -> None:
    r.set("mem:string", "bar")
    r.hset("mem:hash", mapping={f"f{i}": "v" * 10 for i in range(10)})
    small = r.memory_usage("mem:string")
    assert isinstance(small, int) and small > len("mem:string")
    assert r.memory_usage("mem:hash") > small
    assert r.memory_usage("mem:missing") is None
    with pytest.raises(redis.ResponseError, match="syntax error"):
        r.execute_command("MEMORY", "USAGE", "mem:string", "SAMPLE", "5")
    assert r.memory_usage("mem:string", samples=0) == small
    stats = r.memory_stats()
    assert stats["keys.count"] >= 2 and stats["total.allocated"] > 0
    assert b"memory" in r.execute_command("MEMORY", "DOCTOR")
    assert r.memory_malloc_stats()
    assert r.memory_purge()
    with pytest.raises(redis.ResponseError, match="Try MEMORY HELP"):
        r.execute_command("MEMORY", "NOPE")


def test_monitor_sees_other_clients_commands_in_redis_format(r: Any, port: int) -> None:
    other = _other(port)
    other.ping()  # connected (its handshake) before the monitor starts
    with r.monitor() as monitor:
        other.set("mon:key", 'va"l\n\x01\u00e9')
        other.config_get("timeout")  # admin: not shown
        other.get("mon:end")
        seen = []
        while True:
            command = monitor.next_command()
            seen.append(command["command"])
            if command["command"] == "GET mon:end":
                break
        # exactly what redis-server 7.0 shows for the same commands
        assert seen == ['SET mon:key va"l\\n\\x01\\xc3\\xa9', "GET mon:end"]
        assert command["db"] == 0 and command["client_address"] == "127.0.0.1"
    other.close()


def test_client_pause_holds_writes_until_unpause(r: Any, port: int) -> None:
    writer, reader = _other(port), _other(port)
    done = threading.Event()

    def write() -> None:
        writer.set("pause:key", "written")
        done.set()

    r.delete("pause:key")
    assert r.client_pause(60_000, all=False)
    try:
        thread = threading.Thread(target=write)
        thread.start()
        assert reader.get("pause:other") is None  # reads still run
        time.sleep(0.3)
        assert not done.is_set() and reader.get("pause:key") is None
    finally:
        assert r.client_unpause()
    thread.join(10)
    assert done.is_set() and reader.get("pause:key") == b"written"
    writer.close()
    reader.close()


def test_client_reply_off_skip_on(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"CLIENT REPLY OFF\r\nSET reply:a 1\r\nGET reply:a\r\nCLIENT REPLY ON\r\n"
                     b"CLIENT REPLY SKIP\r\nGET reply:a\r\nECHO last\r\n")
        expected = b"+OK\r\n$4\r\nlast\r\n"
        received = b""
        while len(received) < len(expected):
            received += sock.recv(1024)
        assert received == expected


def test_client_unblock_answers_a_blocked_pop(r: Any, port: int) -> None:
    blocked = _other(port)
    blocked_id = blocked.client_id()
    results: list[object] = []

    def pop() -> None:
        try:
            results.append(blocked.blpop(["unblock:list"], timeout=0))
        except redis.ResponseError as error:
            results.append(str(error))

    assert r.client_unblock(blocked_id) == 0
    for error, expected in ((False, None), (True, "UNBLOCKED client unblocked via CLIENT "
                                                   "UNBLOCK")):
        thread = threading.Thread(target=pop)
        thread.start()
        deadline = time.monotonic() + 10
        while not r.client_unblock(blocked_id, error=error):
            assert time.monotonic() < deadline, "the client never blocked"
            time.sleep(0.02)
        thread.join(10)
        assert results.pop() == expected
    r.rpush("unblock:list", "x")
    assert blocked.lpop("unblock:list") == b"x"  # the connection still works
    blocked.close()


def test_client_list_cmd_laddr_and_kill_by_laddr(r: Any, port: int) -> None:
    victim = _other(port, client_name="victim")
    victim.ping()
    entry = next(c for c in r.client_list() if c["name"] == "victim")
    assert entry["cmd"] == "ping" and entry["laddr"] == f"127.0.0.1:{port}"
    mine = r.client_info()
    assert mine["cmd"] == "client|info" or mine["cmd"] == "client"
    killed = r.client_kill_filter(laddr=entry["laddr"], _id=entry["id"])
    assert killed == 1
    assert not any(c["name"] == "victim" for c in r.client_list())
    victim.close()


def test_bgsave_lastsave_and_persistence_info(r: Any) -> None:
    before = r.lastsave()
    r.set("save:key", "1")
    assert r.bgsave() is True
    deadline = time.monotonic() + 20
    while int(r.info("persistence")["rdb_bgsave_in_progress"]):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert r.info("persistence")["rdb_last_bgsave_status"] == "ok"
    assert r.lastsave() >= before


def test_maxmemory_refuses_denyoom_writes_not_reads(r: Any) -> None:
    r.set("oom:key", "v")
    r.config_set("maxmemory", 1)
    try:
        with pytest.raises(redis.exceptions.OutOfMemoryError):
            r.set("oom:key", "w")
        assert r.get("oom:key") == b"v"
        assert r.delete("oom:key") == 1  # DEL frees memory: never refused
    finally:
        r.config_set("maxmemory", 0)
    assert r.set("oom:key", "w")


def test_idle_clients_are_closed_after_timeout(r: Any, port: int) -> None:
    idle = _other(port, client_name="idler")
    idle.ping()
    r.config_set("timeout", 1)
    try:
        deadline = time.monotonic() + 20
        while any(c["name"] == "idler" for c in r.client_list()):
            assert time.monotonic() < deadline, "the idle client was not closed"
            time.sleep(0.2)
            r.ping()  # this client stays active
    finally:
        r.config_set("timeout", 0)
    assert idle.ping()  # redis-py reconnects
    idle.close()


def test_odds_and_ends(r: Any) -> None:
    assert b"Redis ver." in r.lolwut()
    assert r.module_list() == []
    assert r.replicaof("NO", "ONE")
    with pytest.raises(redis.ResponseError, match="Raft"):
        r.replicaof("127.0.0.1", "6379")


class _Raw:
    """A raw RESP connection (RESP3 pushes are read as they come)."""

    def __init__(self, port: int, protocol: int = 3) -> None:
        from phalanx.resp import RespReplyParser

        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.parser = RespReplyParser()
        if protocol == 3:
            assert isinstance(self.call("HELLO", "3"), dict)

    def send(self, *parts: object) -> None:
        from phalanx.resp import encode_command

        self.sock.sendall(encode_command(*[str(p) if isinstance(p, int) else p
                                           for p in parts]))

    def next(self) -> object:
        from phalanx.resp import NEED_DATA

        while True:
            reply = self.parser.next_reply()
            if reply is not NEED_DATA:
                return reply
            data = self.sock.recv(65536)
            assert data, "connection closed"
            self.parser.feed(data)

    def call(self, *parts: object) -> object:
        self.send(*parts)
        return self.next()

    def close(self) -> None:
        self.sock.close()


def test_client_tracking_invalidates_keys_a_client_read(r: Any, port: int) -> None:
    from phalanx.resp import Push

    cache = _Raw(port)
    assert cache.call("CLIENT", "TRACKINGINFO") == {
        b"flags": [SimpleString("off")], b"redirect": -1, b"prefixes": []}
    assert cache.call("CLIENT", "GETREDIR") == -1
    assert cache.call("CLIENT", "TRACKING", "ON") == OK
    assert cache.call("CLIENT", "GETREDIR") == 0
    r.set("track:a", "1")
    assert cache.call("GET", "track:a") == b"1"
    assert cache.call("GET", "track:b") is None
    r.set("track:a", "2")  # a write by another client, through the log
    assert cache.next() == Push([b"invalidate", [b"track:a"]])
    r.set("track:a", "3")  # one shot: not read again, no second message
    r.delete("track:b")
    assert cache.next() == Push([b"invalidate", [b"track:b"]])
    assert cache.call("PING") == PONG  # nothing else was queued
    # A script writing a key it did not declare still invalidates it.
    assert cache.call("GET", "track:u") is None
    r.eval("redis.call('SET', KEYS[1], 1) redis.call('SET', 'track:u', 2)", 1, "track:d")
    assert cache.next() == Push([b"invalidate", [b"track:u"]])
    assert cache.call("CLIENT", "TRACKINGINFO") == {
        b"flags": [SimpleString("on")], b"redirect": 0, b"prefixes": []}
    assert cache.call("CLIENT", "TRACKING", "OFF") == OK
    assert cache.call("GET", "track:a") == b"3"
    r.set("track:a", "4")
    assert cache.call("PING") == PONG  # tracking off: no message
    cache.close()


def test_client_tracking_optin_redirect_and_errors(r: Any, port: int) -> None:
    from phalanx.resp import Push

    listener = _Raw(port, protocol=2)
    listener_id = listener.call("CLIENT", "ID")
    assert listener.call("SUBSCRIBE", "__redis__:invalidate") == [
        b"subscribe", b"__redis__:invalidate", 1]
    cache = _Raw(port)
    assert cache.call("CLIENT", "TRACKING", "ON", "REDIRECT", listener_id, "OPTIN") == OK
    assert cache.call("CLIENT", "GETREDIR") == listener_id
    assert cache.call("GET", "optin:untracked") is None  # OPTIN: not tracked
    assert cache.call("CLIENT", "CACHING", "YES") == OK
    assert cache.call("GET", "optin:tracked") is None
    r.set("optin:untracked", "1")
    r.set("optin:tracked", "1")
    assert listener.next() == [b"message", b"__redis__:invalidate", [b"optin:tracked"]]
    # The redirect target leaves: the client hears its redirection broke.
    listener.close()
    assert cache.next() == Push([b"tracking-redir-broken", listener_id])
    for options, text in (
            (("ON", "BCAST"), "ERR phalanx: BCAST tracking is not supported"),
            (("ON", "PREFIX", "a"), "ERR PREFIX option requires BCAST mode to be enabled"),
            (("ON", "REDIRECT", "999999"), "ERR The client ID you want redirect to does not "
                                           "exist"),
            (("MAYBE",), "ERR syntax error")):
        error = cache.call("CLIENT", "TRACKING", *options)
        assert isinstance(error, ErrorReply) and error.text.startswith(text), (options, error)
    other = _Raw(port)
    error = other.call("CLIENT", "CACHING", "YES")
    assert isinstance(error, ErrorReply) and error.text.startswith(
        "ERR CLIENT CACHING can be called only when the client is in tracking mode")
    other.close()
    cache.close()


def test_reset_ends_tracking_and_client_reply(port: int) -> None:
    raw = _Raw(port)
    assert raw.call("CLIENT", "TRACKING", "ON") == OK
    assert raw.call("GET", "reset:k") is None
    raw.send("CLIENT", "REPLY", "OFF")
    assert raw.call("RESET") == SimpleString("RESET")  # replies again
    assert isinstance(raw.call("HELLO", "3"), dict)  # (RESET went back to RESP2)
    assert raw.call("CLIENT", "TRACKINGINFO") == {
        b"flags": [SimpleString("off")], b"redirect": -1, b"prefixes": []}
    writer = _Raw(port, protocol=2)
    assert writer.call("SET", "reset:k", "1") == OK
    assert raw.call("PING") == PONG  # no invalidation: tracking ended with RESET
    writer.close()
    raw.close()
