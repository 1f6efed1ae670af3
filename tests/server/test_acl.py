"""ACL SETUSER / DELUSER / GETUSER / LIST / CAT / GENPASS / HELP on one in-process node (the
users replicated through the cluster map), and the pure rule translation of front/acl.py."""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import shutil
import subprocess
from pathlib import Path

import pytest

from phalanx.errors import CommandError
from phalanx.placement.map import UserInfo
from phalanx.server.front.acl import describe, rules_to_user
from phalanx.server.front.acl_rules import refusal
from phalanx.server.node import Node

# The in-process node helpers of tests/server/test_security.py, loaded by path: a plain
# `import test_security` can pick up tests/integration/test_security.py instead (both
# directories end up on sys.path in one pytest run).
_spec = importlib.util.spec_from_file_location(
    "_server_security_helpers", Path(__file__).with_name("test_security.py"))
assert _spec is not None and _spec.loader is not None
_security = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_security)
USERS, Client, _free_port, _text, run = (
    _security.USERS, _security.Client, _security._free_port, _security._text, _security.run)


async def _driver_ready(node: Node) -> None:
    for _ in range(500):
        if node.resp.replicas.meta.is_leader():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the placement driver elected no leader")


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def test_rules_translate_to_levels_and_redis_rules() -> None:
    # A config user (a level, no rules) keeps its level until a command rule arrives.
    legacy = UserInfo(name="u", password_sha256=(_sha("pw"),), permissions="all",
                      enabled=True)
    assert rules_to_user(legacy, [b"nopass", b"resetpass"]) == UserInfo(
        name="u", permissions="all", enabled=True)
    assert describe(legacy) == f"user u on #{_sha('pw')} ~* &* +@all"
    assert rules_to_user(legacy, [b"-@write"]).commands == ("+@all", "-@write")
    assert rules_to_user(legacy, [b"-@write"]).permissions == "read"
    # A new user starts as Redis's: off, -@all, no key.
    user = rules_to_user(UserInfo(name="u"), [b"on", b">pw", b"~*", b"+@all"], new=True)
    assert user == UserInfo(name="u", password_sha256=(_sha("pw"),), permissions="all",
                            enabled=True, commands=("+@all",), keys=("~*",))
    assert rules_to_user(user, [b"-@all", b"+@read"]).commands == ("-@all", "+@read")
    assert rules_to_user(user, [b"-@all", b"+@read"]).permissions == "read"
    assert rules_to_user(user, [b"<pw"]).password_sha256 == ()
    assert rules_to_user(user, [b"nopass"]).nopass
    assert rules_to_user(user, [b"off", b"#" + _sha("x").encode()]).password_sha256 == tuple(
        sorted((_sha("pw"), _sha("x"))))
    assert rules_to_user(user, [b"reset"]) == UserInfo(name="u", commands=("-@all",))
    assert describe(user) == f"user u on #{_sha('pw')} ~* &* +@all"
    limited = rules_to_user(UserInfo(name="c"), [b"on", b"nopass", b"~cache:*", b"%R~ro:*",
                                                  b"+get", b"+set", b"+client|id"], new=True)
    assert limited.commands == ("-@all", "+get", "+set", "+client|id")
    assert describe(limited) == "user c on nopass ~cache:* %R~ro:* &* -@all +get +set +client|id"
    assert rules_to_user(limited, [b"resetkeys"]).keys == ()
    for rule, text in ((b"+nosuch", "Unknown command or category name in ACL"),
                       (b"+@nosuch", "Unknown command or category name in ACL"),
                       (b"&chan:*", r"phalanx: ACL rule '&chan:\*' is not supported"),
                       (b"%X~k", "Syntax error")):
        with pytest.raises(CommandError, match=text):
            rules_to_user(user, [rule])
    with pytest.raises(CommandError, match="password you are trying to remove"):
        rules_to_user(user, [b"<nope"])
    with pytest.raises(CommandError, match="64 characters"):
        rules_to_user(user, [b"#abc"])


def test_command_and_key_rules_are_redis_s() -> None:
    rules, keys = ("-@all", "+@read", "+set", "-get", "+client|id"), ("~cache:*", "%R~ro:*")
    assert refusal("u", rules, keys, b"MGET", [b"MGET", b"cache:1", b"ro:2"]) is None
    assert refusal("u", rules, keys, b"GET", [b"GET", b"cache:1"]) == (
        "NOPERM User u has no permissions to run the 'get' command")
    assert refusal("u", rules, keys, b"SET", [b"SET", b"ro:1", b"v"]) == (
        "NOPERM No permissions to access a key")
    assert refusal("u", rules, keys, b"SET", [b"SET", b"cache:1", b"v"]) is None
    assert refusal("u", rules, keys, b"CLIENT", [b"CLIENT", b"ID"]) is None
    assert refusal("u", rules, keys, b"CLIENT", [b"CLIENT", b"KILL", b"x"]) is not None
    assert refusal("u", rules, keys, b"DEL", [b"DEL", b"cache:1"], dry_run=True) == (
        "This user has no permissions to run the 'del' command")
    assert refusal("u", rules, keys, b"SET", [b"SET", b"x", b"v"], dry_run=True) == (
        "This user has no permissions to access the 'x' key")


def test_setuser_auth_getuser_list_deluser(tmp_path: Path) -> None:
    async def body(node: Node) -> None:
        await _driver_ready(node)
        admin = await Client.open(node)
        assert _text(await admin.call("AUTH", "s3cret")) == "OK"
        assert _text(await admin.call("ACL", "SETUSER", "bob", "on", ">bob-pw", "~*",
                                      "+@all")) == "OK"
        assert _text(await admin.call("ACL", "SETUSER", "ro", "on", ">ro-pw", "allkeys",
                                      "-@all", "+@read")) == "OK"
        assert node.resp.replicas.cluster_map.users["bob"].password_sha256 == (_sha("bob-pw"),)
        assert await admin.call("ACL", "USERS") == [b"app", b"bob", b"default", b"reader",
                                                    b"ro"]
        listed = await admin.call("ACL", "LIST")
        assert isinstance(listed, list)
        assert f"user bob on #{_sha('bob-pw')} ~* &* +@all".encode() in listed
        assert b"user ro on #" + _sha("ro-pw").encode() + b" ~* &* -@all +@read" in listed
        got = await admin.call("ACL", "GETUSER", "ro")
        assert isinstance(got, list) and got[0] == b"flags" and b"on" in got[1]
        assert got[2:4] == [b"passwords", [_sha("ro-pw").encode()]]
        assert got[4:6] == [b"commands", b"-@all +@read"]
        assert await admin.call("ACL", "GETUSER", "nobody") is None

        bob, ro = await Client.open(node), await Client.open(node)
        assert _text(await bob.call("AUTH", "bob", "wrong")).startswith("WRONGPASS")
        assert _text(await bob.call("AUTH", "bob", "bob-pw")) == "OK"
        assert _text(await bob.call("SET", "k", "v")) == "OK"
        assert _text(await ro.call("AUTH", "ro", "ro-pw")) == "OK"
        assert _text(await ro.call("SET", "k", "v")) == (
            "NOPERM User ro has no permissions to run the 'set' command")
        assert _text(await ro.call("GET", "k")) == "v"
        assert _text(await ro.call("ACL", "SETUSER", "x", "on")).startswith("NOPERM")

        # A permissions change reaches live sessions; disabling or deleting ends them.
        assert _text(await admin.call("ACL", "SETUSER", "bob", "-@write")) == "OK"
        assert _text(await bob.call("SET", "k", "v")).startswith("NOPERM User bob")
        assert _text(await admin.call("ACL", "SETUSER", "ro", "off")) == "OK"
        assert _text(await ro.call("GET", "k")) == "NOAUTH Authentication required."
        assert _text(await ro.call("AUTH", "ro", "ro-pw")).startswith("WRONGPASS")
        assert await admin.call("ACL", "DELUSER", "bob", "ro", "ghost") == 2
        assert await admin.call("ACL", "DELUSER", "ghost") == 0
        assert _text(await bob.call("GET", "k")) == "NOAUTH Authentication required."
        assert _text(await bob.call("AUTH", "bob", "bob-pw")).startswith("WRONGPASS")

        # nopass, the config's users, default, unsupported rules.
        assert _text(await admin.call("ACL", "SETUSER", "open", "on", "nopass",
                                      "+@all")) == "OK"
        assert _text(await bob.call("AUTH", "open", "anything")) == "OK"
        assert _text(await admin.call("ACL", "DELUSER", "default")) == (
            "ERR The 'default' user cannot be removed")
        assert _text(await admin.call("ACL", "DELUSER", "app")).startswith(
            "ERR phalanx: user 'app' comes from the node configuration file")
        assert _text(await admin.call("ACL", "SETUSER", "app", ">new-pw")) == "OK"
        app = await Client.open(node)
        assert _text(await app.call("AUTH", "app", "new-pw")) == "OK"
        assert _text(await app.call("AUTH", "app", "app-pass")) == "OK"  # the map extends it
        # Redis's command and key rules (acl_rules.py): +get on cache:* only.
        assert _text(await admin.call("ACL", "SETUSER", "x", "on", ">x-pw", "~cache:*",
                                      "+get")) == "OK"
        x = await Client.open(node)
        assert _text(await x.call("AUTH", "x", "x-pw")) == "OK"
        assert await x.call("GET", "cache:1") is None
        assert _text(await x.call("GET", "other")) == "NOPERM No permissions to access a key"
        assert _text(await x.call("SET", "cache:1", "v")) == (
            "NOPERM User x has no permissions to run the 'set' command")
        assert _text(await admin.call("ACL", "DRYRUN", "x", "get", "cache:2")) == "OK"
        assert await admin.call("ACL", "DRYRUN", "x", "set", "cache:2", "v") == (
            b"This user has no permissions to run the 'set' command")
        x.close()
        assert _text(await admin.call("ACL", "SETUSER", "default", "off")).startswith(
            "ERR phalanx: the default user")
        for client in (admin, bob, ro, app):
            client.close()

    run(tmp_path, body, requirepass="s3cret", users=USERS)


def test_read_side_subcommands(tmp_path: Path) -> None:
    async def body(node: Node) -> None:
        await _driver_ready(node)
        client = await Client.open(node)
        categories = await client.call("ACL", "CAT")
        assert isinstance(categories, list)
        assert {b"read", b"write", b"string", b"keyspace"} <= set(categories)
        strings = await client.call("ACL", "CAT", "string")
        assert isinstance(strings, list) and b"get" in strings and b"set" in strings
        assert _text(await client.call("ACL", "CAT", "nope")) == "ERR Unknown category 'nope'"
        password = await client.call("ACL", "GENPASS")
        assert isinstance(password, bytes) and len(password) == 64
        int(password, 16)
        assert len(await client.call("ACL", "GENPASS", "5")) == 2  # type: ignore[arg-type]
        assert _text(await client.call("ACL", "GENPASS", "0")).startswith(
            "ERR ACL GENPASS argument")
        help_lines = await client.call("ACL", "HELP")
        assert isinstance(help_lines, list) and len(help_lines) > 10
        assert _text(await client.call("ACL", "WHOAMI")) == "default"
        # Without requirepass, AUTH <user> <pass> still works for a created user.
        assert _text(await client.call("ACL", "SETUSER", "u", "on", ">p", "+@all")) == "OK"
        assert _text(await client.call("AUTH", "u", "p")) == "OK"
        assert _text(await client.call("ACL", "WHOAMI")) == "u"
        client.close()

    run(tmp_path, body)


# ---- reply by reply against a real redis-server 7.0 ----------------------------------------
REDIS_SERVER = shutil.which("redis-server")
_SEQUENCE: list[tuple[str, ...]] = [
    ("ACL", "SETUSER", "bob", "on", ">pw", "~*", "&*", "+@all"),
    ("ACL", "SETUSER", "ro", "on", ">pw", "allkeys", "&*", "-@all", "+@read"),
    ("ACL", "SETUSER", "ro", "#" + hashlib.sha256(b"x").hexdigest(), "<pw"),
    ("ACL", "SETUSER", "np", "on", "nopass", "~*", "&*", "+@all"),
    ("ACL", "SETUSER", "np", "off", "resetpass"),
    ("ACL", "SETUSER", "x", "<nope"),
    ("ACL", "SETUSER", "x", "#abc"),
    ("ACL", "SETUSER", "a b"),
    ("ACL", "LIST"), ("ACL", "USERS"),
    ("ACL", "GETUSER", "bob"), ("ACL", "GETUSER", "ro"), ("ACL", "GETUSER", "np"),
    ("ACL", "GETUSER", "ghost"),
    ("AUTH", "bob", "pw"), ("ACL", "WHOAMI"), ("AUTH", "bob", "bad"),
    # (A read user's NOPERM texts differ: phalanx's read users run ACL WHOAMI, and its
    # NOPERM names the user, Redis 7.2's text; see test_setuser_auth_getuser_list_deluser.)
    ("AUTH", "np", "x"), ("AUTH", "ro", "x"), ("GET", "k"),
    ("AUTH", "bob", "pw"), ("SET", "k", "v"), ("AUTH", "default", "anything"),
    ("ACL", "DELUSER", "default"), ("ACL", "DELUSER", "bob", "ro", "ghost"),
    ("ACL", "DELUSER", "ghost"), ("AUTH", "bob", "pw"), ("ACL", "USERS"),
    ("ACL", "GENPASS", "0"), ("ACL", "GENPASS", "x"), ("ACL", "CAT", "nope"),
    ("ACL", "CAT"), ("ACL", "NOPE"), ("ACL",), ("ACL", "WHOAMI", "x"), ("ACL", "SETUSER"),
]


@pytest.mark.skipif(REDIS_SERVER is None, reason="redis-server is not installed")
def test_acl_replies_match_redis(tmp_path: Path) -> None:
    port = _free_port()
    assert REDIS_SERVER is not None
    process = subprocess.Popen(
        [REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    async def body(node: Node) -> None:
        await _driver_ready(node)
        for _ in range(200):
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                break
            except OSError:
                await asyncio.sleep(0.05)
        real, ours = Client(reader, writer), await Client.open(node)
        for command in _SEQUENCE:
            expected, got = await real.call(*command), await ours.call(*command)
            assert got == expected, (command, got, expected)
        real.close()
        ours.close()

    try:
        run(tmp_path, body)
    finally:
        process.terminate()
        process.wait(10)
