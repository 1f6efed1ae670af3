"""Server commands answered by the front end: TIME, CLIENT, CONFIG, INFO, COMMAND, SELECT
(unit level, on a fake node view; the real-cluster test is tests/integration/test_resp3_cluster.py)."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

import pytest

from phalanx.errors import CommandError
from phalanx.kv import COMMAND_SPECS
from phalanx.ops.ports import free_port
from phalanx.resp import SimpleString
from phalanx.server.front.clients import ClientCommand
from phalanx.server.front.introspection import Introspection, IntrospectionCommands
from phalanx.server.front.server_commands import ServerCommands
from phalanx.server.front.session import ClientState, Sessions


def _replicas(redirect: str = "proxy", shards: int = 1) -> Any:
    config = SimpleNamespace(id="n1", redirect=redirect, max_clients=100, max_bulk_bytes=512,
                             requirepass="", users=(), me=SimpleNamespace(zone="z", region="r"))
    group = SimpleNamespace(
        is_leader=lambda: True, leader="n1",
        raw=SimpleNamespace(status=lambda: SimpleNamespace(peers={}, term=1, commit=1, applied=1,
                                                           last_index=1, role=None)),
        machine=SimpleNamespace(key_count=3),
        shard=SimpleNamespace(kv=SimpleNamespace(expire_count=1)))
    return SimpleNamespace(
        config=config, started=time.monotonic(), meta=group,
        cluster_map=SimpleNamespace(shards={i: None for i in range(shards)}, version=1),
        data_groups=lambda: {1: group})


def _server(redirect: str = "proxy", shards: int = 1) -> ServerCommands:
    stats = SimpleNamespace(port=7000, total_commands=5, total_connections=2, clients={})
    replicas = _replicas(redirect, shards)
    intro = Introspection(100)
    commands = IntrospectionCommands(replicas, intro, lambda client_id: None, lambda: 1,
                                     "7.0.15")
    return ServerCommands(replicas, stats, intro, commands)  # type: ignore[arg-type]


def _error(call: Any, *args: Any) -> str:
    with pytest.raises(CommandError) as caught:
        call(*args)
    return caught.value.text


STATE = ClientState(id=1, address="127.0.0.1:5000")


def test_time_is_the_node_clock_as_seconds_and_microseconds() -> None:
    seconds, micros = _server().time_command(STATE, [b"TIME"])  # type: ignore[misc]
    assert abs(int(seconds) - time.time()) < 5 and 0 <= int(micros) < 1_000_000
    assert "wrong number" in _error(_server().time_command, STATE, [b"TIME", b"x"])


def test_info_has_the_fields_clients_read() -> None:
    text = _server().info(STATE, [b"INFO", b"server", b"clients", b"memory", b"keyspace"])\
        .decode()  # type: ignore[union-attr]
    fields = dict(line.split(":", 1) for line in text.split("\r\n") if ":" in line)
    assert fields["redis_version"].startswith("7.0.")
    assert fields["redis_mode"] == "standalone" and fields["arch_bits"] in ("32", "64")
    assert fields["tcp_port"] == "7000" and int(fields["process_id"]) > 0
    assert fields["os"] and int(fields["used_memory"]) >= 0
    assert fields["connected_clients"] == "0"
    assert fields["db0"] == "keys=3,expires=1,avg_ttl=0"
    moved = _server("moved").info(STATE, [b"INFO", b"server"]).decode()  # type: ignore[union-attr]
    assert "redis_mode:cluster" in moved and "# Keyspace" not in moved


def test_config_get_set_resetstat() -> None:
    server = _server()
    assert server.config_command(STATE, [b"CONFIG", b"GET", b"maxmemory"]) == [b"maxmemory",
                                                                                b"0"]
    got = server.config_command(STATE, [b"CONFIG", b"GET", b"max*", b"save"])
    assert got[:2] == [b"save", b""] and b"maxclients" in got  # type: ignore[index,operator]
    assert server.config_command(STATE, [b"CONFIG", b"GET", b"nope"]) == []
    assert server.config_command(STATE, [b"CONFIG", b"SET", b"maxmemory", b"0"]) == \
        SimpleString("OK")
    assert _error(server.config_command, STATE, [b"CONFIG", b"SET", b"x", b"1"]) == \
        "ERR Unknown option or number of arguments for CONFIG SET - 'x'"
    # Live parameters change; fixed ones accept only their value; all or nothing.
    assert server.config_command(STATE, [b"CONFIG", b"SET", b"maxmemory", b"1gb",
                                         b"timeout", b"70"]) == SimpleString("OK")
    assert server.config_command(STATE, [b"CONFIG", b"GET", b"maxmemory", b"timeout"]) == \
        [b"timeout", b"70", b"maxmemory", b"1073741824"]
    assert _error(server.config_command, STATE, [b"CONFIG", b"SET", b"timeout", b"0",
                                                 b"databases", b"16"]) == (
        "ERR CONFIG SET failed (possibly related to argument 'databases') - phalanx sets it "
        "in the node's config file")
    assert server.config_command(STATE, [b"CONFIG", b"GET", b"timeout"]) == [b"timeout", b"70"]
    assert _error(server.config_command, STATE, [b"CONFIG", b"SET", b"timeout", b"x"]) == (
        "ERR CONFIG SET failed (possibly related to argument 'timeout') - argument couldn't "
        "be parsed into an integer")
    assert _error(server.config_command, STATE, [b"CONFIG", b"SET", b"timeout", b"-1"]) \
        .endswith("argument must be between 0 and 2147483647 inclusive")
    assert "only noeviction" in _error(server.config_command, STATE, [
        b"CONFIG", b"SET", b"maxmemory-policy", b"allkeys-lru"])
    assert "shared secret" in _error(server.config_command, STATE, [
        b"CONFIG", b"SET", b"requirepass", b"x"])
    assert server.config_command(STATE, [b"CONFIG", b"GET", b"hash-max-listpack-entries"]) \
        == [b"hash-max-listpack-entries", b"512"]
    assert server.config_command(STATE, [b"CONFIG", b"RESETSTAT"]) == SimpleString("OK")
    assert server.stats.total_commands == 0


def test_command_describes_every_command_in_the_table() -> None:
    server = _server()
    assert server.command(STATE, [b"COMMAND", b"COUNT"]) == len(COMMAND_SPECS)
    listed = server.command(STATE, [b"COMMAND", b"LIST"])
    top = [name for name in listed if b"|" not in name]  # type: ignore[union-attr]
    assert len(top) == len(COMMAND_SPECS) and b"setbit" in listed  # type: ignore[operator]
    assert b"client|tracking" in listed and b"slowlog|get" in listed  # type: ignore[operator]
    assert b"time" in listed  # type: ignore[operator]
    every = server.command(STATE, [b"COMMAND"])
    assert {entry[0] for entry in every} == set(top)  # type: ignore[union-attr,index]
    [get] = server.command(STATE, [b"COMMAND", b"INFO", b"get"])  # type: ignore[misc]
    assert get[:6] == [b"get", 2, [SimpleString("readonly"), SimpleString("fast")], 1, 1, 1]
    assert server.command(STATE, [b"COMMAND", b"INFO", b"nope"]) == [None]
    assert server.command(STATE, [b"COMMAND", b"LIST", b"FILTERBY", b"PATTERN", b"zr*"])
    assert b"bitcount" in server.command(  # type: ignore[operator]
        STATE, [b"COMMAND", b"LIST", b"FILTERBY", b"ACLCAT", b"bitmap"])
    assert server.command(STATE, [b"COMMAND", b"GETKEYS", b"MSET", b"a", b"1", b"b", b"2"]) \
        == [b"a", b"b"]
    assert server.command(STATE, [b"COMMAND", b"GETKEYSANDFLAGS", b"GET", b"a"]) == \
        [[b"a", [SimpleString("RO"), SimpleString("access")]]]
    assert _error(server.command, STATE, [b"COMMAND", b"GETKEYS", b"GET"]) == \
        "ERR Invalid number of arguments specified for command"
    assert _error(server.command, STATE, [b"COMMAND", b"GETKEYS", b"NOPE", b"a"]) == \
        "ERR Invalid command specified"
    assert _error(server.command, STATE, [b"COMMAND", b"GETKEYS", b"PING"]) == \
        "ERR The command has no key arguments"
    docs = server.command(STATE, [b"COMMAND", b"DOCS", b"get"])
    assert list(docs) == [b"get"]  # type: ignore[call-overload]


def test_select_zero_only_as_redis_cluster() -> None:
    sessions = Sessions(_replicas())
    assert sessions.select(STATE, [b"SELECT", b"0"]) == SimpleString("OK")
    assert _error(sessions.select, STATE, [b"SELECT", b"1"]) == \
        "ERR SELECT is not allowed in cluster mode"
    assert _error(sessions.select, STATE, [b"SELECT", b"x"]) == \
        "ERR value is not an integer or out of range"


def test_client_subcommands_and_kill_filters() -> None:
    sessions = Sessions(_replicas())
    me, other, third = (sessions.open(f"10.0.0.{i}:{i}") for i in range(1, 4))
    other.user = "app"
    killed: list[tuple[int, bool]] = []
    paused: list[tuple[int, bool]] = []

    def close(client_id: int, after_reply: bool) -> bool:
        killed.append((client_id, after_reply))
        return True

    control = SimpleNamespace(kill_client=close,
                              pause_clients=lambda ms, writes: paused.append((ms, writes)),
                              unpause_clients=lambda: paused.append((0, False)),
                              unblock_client=lambda client_id, error: client_id == 2)
    client = ClientCommand(sessions.clients, control).client  # type: ignore[arg-type]
    assert client(me, [b"CLIENT", b"ID"]) == me.id
    assert client(me, [b"CLIENT", b"GETNAME"]) is None
    assert client(me, [b"CLIENT", b"SETNAME", b"worker"]) == SimpleString("OK")
    assert client(me, [b"CLIENT", b"GETNAME"]) == b"worker"
    assert _error(client, me, [b"CLIENT", b"SETNAME", b"a b"]).startswith(
        "ERR Client names cannot contain spaces")
    assert client(me, [b"CLIENT", b"SETINFO", b"LIB-NAME", b"redis-py"]) == SimpleString("OK")
    info = client(me, [b"CLIENT", b"INFO"])
    assert info.startswith(b"id=1 addr=10.0.0.1:1 ") and b"name=worker" in info  # type: ignore
    assert b"lib-name=redis-py" in info  # type: ignore[operator]
    listed = client(me, [b"CLIENT", b"LIST"]).splitlines()  # type: ignore[union-attr]
    assert len(listed) == 3
    assert client(me, [b"CLIENT", b"LIST", b"ID", b"2"]).count(b"\n") == 1  # type: ignore
    assert client(me, [b"CLIENT", b"KILL", b"ID", str(other.id).encode()]) == 1
    assert killed == [(other.id, False)]
    assert client(me, [b"CLIENT", b"KILL", b"USER", b"app"]) == 1
    # SKIPME yes by default: the killer survives its own filter.
    killed.clear()
    assert client(me, [b"CLIENT", b"KILL", b"ADDR", b"10.0.0.1:1"]) == 0
    assert client(me, [b"CLIENT", b"KILL", b"ADDR", b"10.0.0.1:1", b"SKIPME", b"no"]) == 1
    assert killed == [(me.id, True)]
    assert client(me, [b"CLIENT", b"KILL", b"10.0.0.3:3"]) == SimpleString("OK")
    assert _error(client, me, [b"CLIENT", b"KILL", b"9.9.9.9:9"]) == "ERR No such client"
    assert client(me, [b"CLIENT", b"NO-EVICT", b"on"]) == SimpleString("OK")
    assert client(me, [b"CLIENT", b"PAUSE", b"10"]) == SimpleString("OK")
    assert client(me, [b"CLIENT", b"PAUSE", b"20", b"write"]) == SimpleString("OK")
    assert client(me, [b"CLIENT", b"UNPAUSE"]) == SimpleString("OK")
    assert paused == [(10, False), (20, True), (0, False)]
    assert _error(client, me, [b"CLIENT", b"PAUSE", b"x"]) == \
        "ERR timeout is not an integer or out of range"
    assert _error(client, me, [b"CLIENT", b"PAUSE", b"1", b"some"]) == "ERR syntax error"
    assert client(me, [b"CLIENT", b"UNBLOCK", b"2"]) == 1
    assert client(me, [b"CLIENT", b"UNBLOCK", b"3", b"ERROR"]) == 0
    assert _error(client, me, [b"CLIENT", b"UNBLOCK", b"3", b"x"]) == \
        "ERR CLIENT UNBLOCK reason should be TIMEOUT or ERROR"
    assert client(me, [b"CLIENT", b"REPLY", b"SKIP"]) == SimpleString("OK")
    assert me.reply_mode == 2
    assert _error(client, me, [b"CLIENT", b"REPLY", b"MAYBE"]) == "ERR syntax error"
    assert third.id == 3


_GETKEYS_CASES = [
    "LMOVE a b left left", "GET k", "SET k v", "MSET a 1 b 2", "DEL a b c", "RPOPLPUSH s d",
    "ZUNIONSTORE d 2 a b WEIGHTS 1 2", "ZINTER 2 a b", "EVAL s 2 k1 k2 a1", "LMPOP 2 a b LEFT",
    "SINTERSTORE d a b", "RENAME a b", "COPY a b", "GEORADIUS g 1 2 3 km STORE d",
    "GEOSEARCHSTORE d s FROMLONLAT 1 2 BYRADIUS 3 km", "BITOP AND d a b", "PFMERGE d a b",
    "SMOVE a b m", "XREAD COUNT 2 STREAMS s1 s2 0 0", "SORT l BY w_* STORE d", "APPEND k v",
    "HSET h f v", "EXPIRE k 10", "GETDEL k", "BLMOVE a b left right 0", "SINTERCARD 2 a b",
    "SET k v GET", "BITFIELD k GET u8 0", "BITFIELD k INCRBY u8 0 1", "MEMORY USAGE k",
    "OBJECT ENCODING k", "ZRANGESTORE d s 0 -1", "MSETNX a 1 b 2", "BZMPOP 0 2 a b MIN",
]


def test_getkeysandflags_match_redis() -> None:
    """COMMAND GETKEYSANDFLAGS from Redis 7.0's key specs, against a real redis-server."""
    redis = pytest.importorskip("redis")
    import shutil
    import subprocess

    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed")
    port = free_port()
    process = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save",
                                "", "--appendonly", "no"], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
        client = redis.Redis(port=port, socket_timeout=5)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                assert time.monotonic() < deadline
                time.sleep(0.05)
        server = _server()
        for case in _GETKEYS_CASES:
            words = [word.encode() for word in case.split()]
            if words[0].upper() not in COMMAND_SPECS:
                continue  # (a command another room adds: XREAD)
            expected = client.command_getkeysandflags(*words)
            ours = server.command(STATE, [b"COMMAND", b"GETKEYSANDFLAGS", *words])
            plain = [[key, [flag.text.encode() for flag in flags]]
                     for key, flags in ours]  # type: ignore[union-attr,misc]
            assert plain == expected, case
        client.close()
    finally:
        process.terminate()
        process.wait(10)


def test_every_command_the_listener_answers_is_described_by_command() -> None:
    """COMMAND (and COMMAND LIST / COUNT / INFO, which cluster clients route by) knows every
    command of the dispatch table but the internal PHALANX.* ones."""
    from phalanx.server.config import NodeConfig, PeerConfig
    from phalanx.server.front.listener import RespServer
    from phalanx.server.metrics import NodeMetrics

    config = NodeConfig(id="n1", data_dir="/nonexistent",
                        peers=(PeerConfig(id="n1", peer="127.0.0.1:1", resp="127.0.0.1:2"),))
    registry: Any = SimpleNamespace(
        config=config, metrics=NodeMetrics("n1", process_metrics=False),
        cluster_map=SimpleNamespace(nodes={}, shards={}, version=1),
        resp_address=lambda n: None, data_groups=lambda: {}, started=0.0)
    server = RespServer(registry, "127.0.0.1", 0)
    missing = [name for name in server.commands
               if name not in COMMAND_SPECS and not name.startswith(b"PHALANX.")]
    assert missing == []
