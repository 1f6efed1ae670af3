"""The client session: per-connection state, authentication, ACL, and the connection commands.

What lives here: `ClientState` (one per connection), `Sessions` (who may run what, and AUTH,
HELLO, ACL, SELECT, CLIENT).

Rules of this file:
- Until a connection authenticates, only AUTH and HELLO run (`-NOAUTH` otherwise). A user with
  "read" permissions runs no data write, no FAILOVER and no internal PHALANX.* command; a
  user with ACL command rules runs what they allow, on the keys its patterns allow
  (acl_rules.py).
- Passwords are compared in constant time (`hmac.compare_digest`).
- Named users come from the config file and from the replicated cluster map (ACL SETUSER:
  acl.py, where the design is). A session of a named user is re-checked on every command: if
  its user was deleted or disabled it answers -NOAUTH and is unauthenticated again; its
  permissions follow the user's current ones.
- These commands run synchronously, in order, as they are parsed: an AUTH (or HELLO, SELECT,
  CLIENT SETNAME) pipelined before other commands applies to them.
- A connection named `FORWARD_CLIENT_NAME` is another node forwarding: its commands are never
  forwarded again.
- A transaction's session state (the commands queued since MULTI, the watched keys with the
  versions their WATCH read) lives in `ClientState` and dies with the connection: nothing of
  it is replicated until EXEC (see transactions.py). See docs/architecture.md.
"""

from __future__ import annotations

import asyncio
import hmac
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from phalanx import __version__
from phalanx.errors import CommandError
from phalanx.kv import is_known, is_write
from phalanx.placement.map import UserInfo
from phalanx.resp import ErrorReply, SimpleString
from phalanx.server.front import acl_rules
from phalanx.server.front.acl import AclCommand, lookup_user, sha256_hex
from phalanx.server.front.write_session import WriteSession
from phalanx.server.peer_link import LeaderLink

if TYPE_CHECKING:
    from phalanx.server.front.replicas import ReplicaRegistry

#: Commands a "read" user may not run although they are not data writes (every internal
#: PHALANX.* command needs "all" as well).
_NEEDS_ALL = frozenset({b"FAILOVER", b"PHALANX.META", b"PHALANX.JOIN", b"PHALANX.SHARD",
                        b"PHALANX.FWD"})
_NOAUTH = b"-NOAUTH Authentication required.\r\n"
#: Commands every authenticated user may run, whatever its ACL rules (Redis's no-auth ones).
_ALWAYS = frozenset({b"AUTH", b"HELLO", b"QUIT", b"RESET"})
#: CLIENT REPLY (clients.py): replies sent (ON), none (OFF), the next command's not sent
#: (SKIP, then "skip this" while that command runs).
REPLY_ON, REPLY_OFF, REPLY_SKIP_NEXT, REPLY_SKIP_THIS = 0, 1, 2, 3


@dataclass(slots=True)
class ClientState:
    """Per-connection state."""

    id: int
    address: str
    protocol: int = 2
    name: bytes = b""
    authenticated: bool = False
    #: The authenticated user ("default" = requirepass or no password) and its permissions.
    user: str = "default"
    permissions: str = "all"
    readonly: bool = False
    forwarded: bool = False
    last_write: asyncio.Future[object] | None = None
    created: float = field(default_factory=time.monotonic)
    commands: int = 0
    #: The last command started (CLIENT LIST's cmd=) and when (`time.perf_counter_ns`).
    last_command: bytes = b""
    last_active: int = field(default_factory=time.perf_counter_ns)
    #: CLIENT REPLY's mode (REPLY_ON, ...).
    reply_mode: int = 0
    #: The local address the client connected to (CLIENT LIST's laddr=).
    local_address: str = ""
    #: CLIENT SETINFO LIB-NAME / LIB-VER (shown by CLIENT LIST).
    lib_name: bytes = b""
    lib_ver: bytes = b""
    #: This client's links to leaders it forwarded to (closed with the connection).
    links: dict[str, LeaderLink] = field(default_factory=dict)
    #: The connection is gone (`Sessions.close`): a command still running opens no link
    #: that would outlive it.
    closed: bool = False
    #: The session its writes carry (front/write_session.py, §6.3), made at its first write.
    write_session: WriteSession | None = None
    #: MULTI: the commands queued (None outside MULTI), whether one was refused (EXEC then
    #: answers EXECABORT), and their size in bytes (see transactions.py).
    multi: list[list[bytes]] | None = None
    multi_failed: bool = False
    multi_bytes: int = 0
    #: WATCH: key -> (version clock its WATCH read, logically expired then); a WATCH read that
    #: failed records version -1 (EXEC then aborts). `watch_reads`: WATCH reads still running.
    watched: dict[bytes, tuple[int, bool]] = field(default_factory=dict)
    watch_reads: list[asyncio.Future[object]] = field(default_factory=list)
    #: A command that must finish before the next ones start sets `hold` (a WATCH read: a
    #: pipelined `WATCH k; SET k v` reads before it writes); `barrier` is what the next
    #: command waits for (listener.start_command).
    hold: asyncio.Future[object] | None = None
    barrier: asyncio.Future[object] | None = None


class Sessions:
    """The node's client sessions: opening them, admission, and the connection commands."""

    def __init__(self, replicas: ReplicaRegistry) -> None:
        self.replicas = replicas
        self.config = replicas.config
        self.clients: dict[int, ClientState] = {}
        self.next_client_id = 0
        self.acl_command = AclCommand(replicas)
        self.config_permissions = {u.name: u.permissions for u in self.config.users}
        #: What becomes of a closed session's links (the listener sets the router's pool).
        self.release_link: Callable[[LeaderLink], None] = LeaderLink.close

    def open(self, address: str) -> ClientState:
        """A new session for a client connected from `address`."""
        self.next_client_id += 1
        state = ClientState(id=self.next_client_id, address=address)
        state.authenticated = not (self.config.requirepass or self.config.users)
        self.clients[state.id] = state
        return state

    def close(self, state: ClientState) -> bool:
        """Forget a session and hand its links to `release_link` (the router's pool keeps
        the idle ones for the next connection, `peer_link.LinkPool`); False if it was already
        closed."""
        state.closed = True
        for link in state.links.values():
            self.release_link(link)
        state.links.clear()
        return self.clients.pop(state.id, None) is not None

    def admit(self, state: ClientState, name: bytes, data_command: bool,
              arguments: list[bytes] | None = None) -> bytes | ErrorReply | None:
        """None if this session may run `name` now, else the refusal (-NOAUTH, encoded, or a
        -NOPERM error reply). `data_command`: `name` is not a front-end command. A user with
        ACL command rules is checked against them and its key patterns (acl_rules.py)."""
        ruled: UserInfo | None = None
        if state.user != "default" and state.authenticated:
            user = self.replicas.cluster_map.users.get(state.user)
            permissions = (self.config_permissions.get(state.user) if user is None
                           else user.permissions if user.enabled else None)
            if permissions is None:  # deleted or disabled since its AUTH
                state.authenticated, state.user, state.permissions = False, "default", "all"
            else:
                state.permissions = permissions
                if user is not None and user.commands:
                    ruled = user
        if not state.authenticated and name not in (b"AUTH", b"HELLO"):
            return _NOAUTH
        if ruled is not None:
            if name in _ALWAYS:
                return None
            why = acl_rules.refusal(state.user, ruled.commands, ruled.keys, name,
                                    arguments if arguments is not None else [name])
            return None if why is None else ErrorReply(why)
        if state.permissions != "all" and (
                name in _NEEDS_ALL or name.startswith(b"PHALANX.")
                or (data_command and is_known(name) and is_write(name))):
            return ErrorReply(
                f"NOPERM User {state.user} has no permissions to run the "
                f"'{name.decode(errors='replace').lower()}' command")
        return None

    # -- authentication --------------------------------------------------------------------
    def _check_password(self, user: bytes, password: bytes) -> tuple[str, str] | None:
        """(user name, permissions) when `password` is the user's, else None. "default" (or
        an empty name) is the `requirepass` user; comparisons are constant-time."""
        if user in (b"default", b""):
            required = self.config.requirepass
            if not required or hmac.compare_digest(password, required.encode()):
                return "default", "all"  # no requirepass: the default user is nopass
            return None
        found = lookup_user(self.replicas, user.decode(errors="replace"))
        if found is None or not found.enabled:
            return None
        if found.nopass:
            return found.name, found.permissions
        digest = sha256_hex(password)
        if any(hmac.compare_digest(digest, known) for known in found.password_sha256):
            return found.name, found.permissions
        return None

    def _login(self, state: ClientState, user: bytes, password: bytes) -> None:
        found = self._check_password(user, password)
        if found is None:
            raise CommandError("WRONGPASS invalid username-password pair or user is disabled.")
        state.user, state.permissions = found
        state.authenticated = True

    def auth(self, state: ClientState, arguments: list[bytes]) -> object:
        if len(arguments) not in (2, 3):
            raise CommandError("ERR wrong number of arguments for 'auth' command")
        if len(arguments) == 2 and not self.config.requirepass:
            raise CommandError("ERR AUTH <password> called without any password configured "
                               "for the default user. Are you sure your configuration is correct?")
        user = arguments[1] if len(arguments) == 3 else b"default"
        self._login(state, user, arguments[-1])
        return SimpleString("OK")

    def acl(self, state: ClientState, arguments: list[bytes]) -> object:
        """ACL and its subcommands (acl.py)."""
        return self.acl_command.run(state, arguments)

    def hello(self, state: ClientState, arguments: list[bytes]) -> object:
        position = 1
        protocol = state.protocol
        if len(arguments) > 1:
            try:
                protocol = int(arguments[1])
            except ValueError as error:
                raise CommandError("ERR Protocol version is not an integer or out of range") \
                    from error
            if protocol not in (2, 3):
                raise CommandError("NOPROTO unsupported protocol version")
            position = 2
        while position < len(arguments):
            option = arguments[position].upper()
            if option == b"AUTH" and position + 2 < len(arguments):
                self._login(state, arguments[position + 1], arguments[position + 2])
                position += 3
            elif option == b"SETNAME" and position + 1 < len(arguments):
                state.name = arguments[position + 1]
                position += 2
            else:
                raise CommandError(f"ERR Syntax error in HELLO option "
                                   f"'{option.decode(errors='replace')}'")
        if not state.authenticated:
            raise CommandError("NOAUTH HELLO must be called with the client already "
                               "authenticated, otherwise the HELLO <proto> AUTH <user> <pass> "
                               "option can be used to authenticate the client and select the "
                               "RESP protocol version at the same time")
        state.protocol = protocol
        groups = self.replicas.data_groups()
        group = groups[min(groups)] if groups else None
        return {
            "server": "redis", "version": "7.0.15", "proto": protocol, "id": state.id,
            "mode": "cluster" if self.config.redirect == "moved"
            or len(self.replicas.cluster_map.shards) > 1 else "standalone",
            "role": "master" if group is None or group.is_leader() else "replica",
            "modules": [], "phalanx_version": __version__,
        }

    # -- connection commands ---------------------------------------------------------------
    def select(self, state: ClientState, arguments: list[bytes]) -> object:
        """SELECT 0 only, Redis Cluster's rule: phalanx has one database. RQ, Celery's Redis
        broker and limits all default to db 0 (and a `redis://host/0` URL sends SELECT 0 or
        nothing), so they work; another number is refused as Redis Cluster refuses it."""
        if len(arguments) != 2:
            raise CommandError("ERR wrong number of arguments for 'select' command")
        try:
            index = int(arguments[1])
        except ValueError as error:
            raise CommandError("ERR value is not an integer or out of range") from error
        if index != 0:
            raise CommandError("ERR SELECT is not allowed in cluster mode")
        return SimpleString("OK")
