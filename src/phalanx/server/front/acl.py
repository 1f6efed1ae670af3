"""The ACL command: users created at run time, replicated through the cluster map.

What lives here: `rules_to_user` (ACL SETUSER rules -> a `UserInfo`), `AclCommand` (ACL
SETUSER, DELUSER, GETUSER, LIST, CAT, GENPASS, HELP, WHOAMI, USERS) and `lookup_user`.

Design (issue 13):
- Run-time users live in the replicated cluster map (`placement/map.py`: ops `set_user`,
  `del_user`; group 0's state machine, applied on every node, in its snapshot). SETUSER and
  DELUSER propose the op through the placement driver (`ReplicaRegistry.propose_meta`) and
  reply once it is committed; every node then applies it (a node that has not applied it yet
  still answers with the older users for a moment).
- Only SHA-256 digests of passwords are stored (as Redis does); the log never holds a password.
- Precedence: the config file's `[[users]]` are the initial set; a map user of the same name
  wins (SETUSER on a config user starts from the config user's state and then overrides it).
  A config user cannot be deleted at run time (`ACL SETUSER name off` disables it); the
  `default` user is `requirepass` and cannot be changed or deleted here.
- Command and key rules are Redis's (acl_rules.py): a user created by ACL SETUSER starts as
  Redis's does (off, no password, `-@all`, no key) and keeps its command rules in order
  ("+@read", "-set", "+client|id", ...) and its key patterns ("~p", "%R~p", "%W~p",
  `allkeys`, `resetkeys`); ACL DRYRUN checks them. A config-file user keeps its "all" /
  "read" level until a SETUSER gives it command rules. Channels are always all (`&*`,
  `allchannels`, `resetchannels` accepted; other channel rules refused with
  "ERR phalanx: ACL rule '...' is not supported: ..."); selectors are refused the same way.
- Sessions of a user that is deleted or disabled: their next command answers -NOAUTH and the
  connection is back to unauthenticated (session.py `Sessions.admit` re-checks named users on
  every command); a permissions change applies to live sessions at their next command.
- SETUSER read-modify-write is last-writer-wins across concurrent SETUSERs of one user.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from dataclasses import replace
from typing import TYPE_CHECKING, Protocol

from phalanx.errors import CommandError
from phalanx.kv import COMMAND_SPECS, is_write
from phalanx.placement.map import UserInfo
from phalanx.resp import SimpleString
from phalanx.server.front import acl_rules

if TYPE_CHECKING:
    from phalanx.server.config import NodeConfig
    from phalanx.server.front.replicas import ReplicaRegistry

class ClientState(Protocol):
    """What ACL reads of a session (session.py's ClientState; no import: no cycle)."""

    user: str
    permissions: str


_SUBCOMMANDS = frozenset({b"WHOAMI", b"HELP", b"GENPASS", b"CAT", b"USERS", b"LIST",
                          b"GETUSER", b"SETUSER", b"DELUSER", b"DRYRUN"})
_NO_SUCH = "The password you are trying to remove from the user does not exist"
_UNSUPPORTED = "is not supported: phalanx users have every channel (&*) and no selectors"
_HELP = [
    "ACL <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "CAT [<category>]", "    List all commands that belong to <category>, or all command "
    "categories when no category is specified.",
    "DELUSER <username> [<username> ...]", "    Delete a list of users.",
    "DRYRUN <username> <command> [<arg> ...]", "    Returns whether the user can execute the "
    "given command without executing the command.",
    "GETUSER <username>", "    Get the user's details.",
    "GENPASS [<bits>]", "    Generate a secure 256-bit user password. The optional `bits` "
    "argument can be used to specify a different size.",
    "LIST", "    Show users details in config file format.",
    "SETUSER <username> <attribute> [<attribute> ...]", "    Create or modify a user with "
    "the specified attributes (phalanx: on/off, passwords, nopass, command rules, key "
    "patterns; channels are always &*).",
    "USERS", "    List all the registered usernames.",
    "WHOAMI", "    Return the current connection username.",
    "HELP", "    Print this help.",
]


def sha256_hex(password: bytes) -> str:
    return hashlib.sha256(password).hexdigest()


def config_user(config: NodeConfig, name: str) -> UserInfo | None:
    """The config file's user `name` as a UserInfo (enabled, its one password), or None."""
    for entry in config.users:
        if entry.name == name:
            return UserInfo(name=name, password_sha256=(sha256_hex(entry.password.encode()),),
                            permissions=entry.permissions, enabled=True)
    return None


def lookup_user(replicas: ReplicaRegistry, name: str) -> UserInfo | None:
    """A named user: the map's (it wins), else the config file's, else None."""
    user = replicas.cluster_map.users.get(name)
    return user if user is not None else config_user(replicas.config, name)


def rules_to_user(user: UserInfo, rules: list[bytes], new: bool = False) -> UserInfo:
    """`user` with ACL SETUSER `rules` applied, in order; CommandError for a rule phalanx
    cannot express (or a malformed one). `new`: the user does not exist yet (it starts as
    Redis's: off, no password, `-@all`, no key)."""
    digests = set(user.password_sha256)
    enabled, nopass, permissions = user.enabled, user.nopass, user.permissions
    commands: list[str] | None = list(user.commands) if user.commands else None
    keys = list(user.keys)
    if new:
        commands, keys = ["-@all"], []

    def command_rule(rule: str) -> None:
        nonlocal commands
        if commands is None:  # a legacy level becomes rules
            commands = ["+@all"] if permissions == "all" else ["-@all", "+@read"]
            keys[:] = ["~*"]
        if rule in ("+@all", "-@all"):
            commands = [rule]
        else:
            commands.append(rule)

    for raw in rules:
        rule = raw.decode(errors="replace")
        lower = rule.lower()
        if lower == "on":
            enabled = True
        elif lower == "off":
            enabled = False
        elif rule.startswith(">"):
            digests.add(sha256_hex(raw[1:]))
            nopass = False
        elif rule.startswith("<"):
            digest = sha256_hex(raw[1:])
            if digest not in digests:
                raise CommandError(f"ERR Error in ACL SETUSER modifier '{rule}': {_NO_SUCH}")
            digests.discard(digest)
        elif rule.startswith(("#", "!")):
            digest = rule[1:].lower()
            if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
                raise CommandError(f"ERR Error in ACL SETUSER modifier '{rule}': The password "
                                   f"hash must be exactly 64 characters and contain only "
                                   f"lowercase hexadecimal characters")
            if rule.startswith("#"):
                digests.add(digest)
                nopass = False
            elif digest in digests:
                digests.discard(digest)
            else:
                raise CommandError(f"ERR Error in ACL SETUSER modifier '{rule}': {_NO_SUCH}")
        elif lower == "nopass":
            digests.clear()
            nopass = True
        elif lower == "resetpass":
            digests.clear()
            nopass = False
        elif lower == "reset":
            digests.clear()
            enabled, nopass, commands, keys = False, False, ["-@all"], []
        elif lower == "resetkeys":
            keys.clear()
            if commands is None:
                command_rule("+@all" if permissions == "all" else "+@read")
                keys.clear()
        elif lower in ("&*", "allchannels", "resetchannels"):
            pass
        elif (key_rule := acl_rules.parse_key_rule(rule)) is not None:
            if commands is None:
                command_rule("+@all" if permissions == "all" else "+@read")
            if key_rule not in keys:
                keys.append(key_rule)
        elif (stored := acl_rules.parse_command_rule(rule)) is not None:
            command_rule(stored)
        else:
            raise CommandError(f"ERR phalanx: ACL rule '{rule}' {_UNSUPPORTED}")
    if commands is not None:
        permissions = acl_rules.summary(tuple(commands))
    return replace(user, password_sha256=tuple(sorted(digests)), enabled=enabled,
                   nopass=nopass, permissions=permissions,
                   commands=tuple(commands) if commands is not None else (),
                   keys=tuple(keys) if commands is not None else ())


def _commands_rule(user: UserInfo) -> str:
    if user.commands:
        return " ".join(user.commands)
    return "+@all" if user.permissions == "all" else "-@all +@read"


def _keys_rule(user: UserInfo) -> str:
    if user.commands:
        return " ".join(user.keys)
    return "~*"


def describe(user: UserInfo) -> str:
    """The user as one ACL LIST line (Redis's config-file format)."""
    parts = ["user", user.name, "on" if user.enabled else "off"]
    if user.nopass:
        parts.append("nopass")
    parts += [f"#{digest}" for digest in user.password_sha256]
    keys = _keys_rule(user)
    if keys:
        parts.append(keys)
    parts += ["&*", _commands_rule(user)]
    return " ".join(parts)


#: Redis 7.0's ACL categories, in its ACL CAT order.
_REDIS_CATEGORIES = ("keyspace", "read", "write", "set", "sortedset", "list", "hash", "string",
                     "bitmap", "hyperloglog", "geo", "stream", "pubsub", "admin", "fast", "slow",
                     "blocking", "dangerous", "connection", "transaction", "scripting")


def _categories() -> list[str]:
    """Redis's categories, then any other one a command of the table has."""
    seen: dict[str, None] = dict.fromkeys(_REDIS_CATEGORIES)
    for spec in COMMAND_SPECS.values():
        for category in spec.acl_categories:
            seen.setdefault(category.lstrip("@"), None)
    return list(seen)


class AclCommand:
    """ACL and its subcommands (the session's WHOAMI/USERS included)."""

    def __init__(self, replicas: ReplicaRegistry) -> None:
        self.replicas = replicas
        self.config = replicas.config

    def _need_all(self, state: ClientState, sub: str) -> None:
        if state.permissions != "all":
            raise CommandError(f"NOPERM User {state.user} has no permissions to run the "
                               f"'acl|{sub}' command")

    def _default(self) -> UserInfo:
        password = self.config.requirepass
        return UserInfo(name="default", enabled=True, permissions="all", nopass=not password,
                        password_sha256=(sha256_hex(password.encode()),) if password else ())

    def users(self) -> dict[str, UserInfo]:
        """Every user by name: default, the config file's, the map's (winning)."""
        found = {"default": self._default()}
        for entry in self.config.users:
            user = config_user(self.config, entry.name)
            if user is not None:
                found[entry.name] = user
        found.update(self.replicas.cluster_map.users)
        return dict(sorted(found.items()))

    def run(self, state: ClientState, arguments: list[bytes]) -> object:
        sub = arguments[1].upper() if len(arguments) >= 2 else b""
        count = len(arguments)
        if sub == b"WHOAMI" and count == 2:
            return state.user.encode()
        if sub == b"HELP" and count == 2:
            return [SimpleString(line) for line in _HELP]
        if sub == b"GENPASS" and count in (2, 3):
            bits = 256
            if count == 3:
                try:
                    bits = int(arguments[2])
                except ValueError:
                    raise CommandError("ERR value is not an integer or out of range") from None
                if not 0 < bits <= 4096:
                    raise CommandError("ERR ACL GENPASS argument must be the number of bits "
                                       "for the output password, a positive number up to 4096")
            chars = (bits + 3) // 4
            return secrets.token_hex((chars + 1) // 2)[:chars].encode()
        if sub == b"CAT" and count in (2, 3):
            if count == 2:
                return [c.encode() for c in _categories()]
            wanted = "@" + arguments[2].decode(errors="replace").lower()
            if wanted[1:] not in _categories():
                raise CommandError(f"ERR Unknown category '{wanted[1:]}'")
            return [spec.name.lower().encode() for spec in COMMAND_SPECS.values()
                    if wanted in spec.acl_categories]
        if sub == b"USERS" and count == 2:
            self._need_all(state, "users")
            return [name.encode() for name in self.users()]
        if sub == b"LIST" and count == 2:
            self._need_all(state, "list")
            return [describe(user).encode() for user in self.users().values()]
        if sub == b"GETUSER" and count == 3:
            self._need_all(state, "getuser")
            user = self.users().get(arguments[2].decode(errors="replace"))
            if user is None:
                return None
            flags = [b"on" if user.enabled else b"off"]  # Redis 7.0's GETUSER flags
            if user.nopass:
                flags.append(b"nopass")
            return {b"flags": flags,
                    b"passwords": [d.encode() for d in user.password_sha256],
                    b"commands": _commands_rule(user).encode(),
                    b"keys": _keys_rule(user).encode(),
                    b"channels": b"&*", b"selectors": []}
        if sub == b"SETUSER" and count >= 3:
            self._need_all(state, "setuser")
            name = arguments[2].decode(errors="replace")
            if name == "default":
                raise CommandError("ERR phalanx: the default user is requirepass in the node "
                                   "configuration and cannot be changed with ACL SETUSER")
            if not name or any(c.isspace() for c in name) or not name.isprintable():
                raise CommandError("ERR Usernames can't contain spaces or null characters")
            existing = lookup_user(self.replicas, name)
            user = rules_to_user(existing or UserInfo(name=name), arguments[3:],
                                 new=existing is None)
            return asyncio.get_running_loop().create_task(
                self._propose({"op": "set_user", **user.to_json()}, SimpleString("OK")))
        if sub == b"DELUSER" and count >= 3:
            self._need_all(state, "deluser")
            names = [a.decode(errors="replace") for a in arguments[2:]]
            if "default" in names:
                raise CommandError("ERR The 'default' user cannot be removed")
            cmap_users = self.replicas.cluster_map.users
            for name in names:
                if name not in cmap_users and config_user(self.config, name) is not None:
                    raise CommandError(f"ERR phalanx: user '{name}' comes from the node "
                                       f"configuration file; ACL SETUSER {name} off disables it")
            deleted = len({n for n in names if n in cmap_users})
            if not deleted:
                return 0
            return asyncio.get_running_loop().create_task(
                self._propose({"op": "del_user", "names": sorted(set(names))}, deleted))
        if sub == b"DRYRUN" and count >= 4:
            return self._dry_run(state, arguments[2], arguments[3:])
        if count < 2:
            raise CommandError("ERR wrong number of arguments for 'acl' command")
        if sub in _SUBCOMMANDS:
            raise CommandError(f"ERR wrong number of arguments for "
                               f"'acl|{sub.decode().lower()}' command")
        shown = arguments[1].decode(errors="replace")
        raise CommandError(f"ERR unknown subcommand '{shown}'. Try ACL HELP.")

    def _dry_run(self, state: ClientState, name: bytes, command: list[bytes]) -> object:
        """ACL DRYRUN user command [arg ...] (Redis 7): OK, or why the user may not run it
        (a reply, not an error), as the session would check it."""
        self._need_all(state, "dryrun")
        user = self.users().get(name.decode(errors="replace"))
        if user is None:
            raise CommandError(f"ERR User '{name.decode(errors='replace')}' not found")
        command_name = command[0].upper()
        if command_name not in COMMAND_SPECS:
            raise CommandError(f"ERR Command '{command[0].decode(errors='replace').lower()}' "
                               f"not found")
        if user.commands:
            why = acl_rules.refusal(user.name, user.commands, user.keys, command_name, command,
                                    dry_run=True)
        elif user.permissions == "all" or not is_write(command_name):
            why = None
        else:
            why = (f"This user has no permissions to run the "
                   f"'{command[0].decode(errors='replace').lower()}' command")
        return SimpleString("OK") if why is None else why.encode()

    async def _propose(self, op: dict[str, object], answer: object) -> object:
        reply = await self.replicas.propose_meta(op)
        message = getattr(reply, "message", None)
        if message is not None:
            raise CommandError(message if message.startswith("ERR") else f"ERR {message}")
        return answer
