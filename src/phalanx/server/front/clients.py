"""CLIENT: the connection introspection and control command (Redis 7.0's subcommands).

What lives here: `ClientCommand` (CLIENT ID|GETNAME|SETNAME|SETINFO|INFO|LIST|KILL|NO-EVICT|
NO-TOUCH|PAUSE|UNPAUSE|REPLY|UNBLOCK|HELP) and the `id=... addr=...` line CLIENT INFO and
CLIENT LIST print.

Rules of this file:
- Every subcommand sees only THIS node's connections: CLIENT LIST lists the clients connected
  to this node, CLIENT KILL closes only them (a client of another node is that node's business;
  a cluster-wide kill is one CLIENT KILL per node, as with Redis Cluster).
- Killing a connection goes through the listener (`close`), which owns the transports; the
  killer's own connection (SKIPME no) is closed after its reply is written, as Redis does.
- PAUSE, UNPAUSE, UNBLOCK act through the listener (`ClientControl`): a pause holds THIS
  node's clients' commands (all, or only writes) until it ends, in each connection's order
  (https://redis.io/commands/client-pause/); the internal PHALANX.* commands of other nodes
  and CLIENT itself (so UNPAUSE can be sent) are never held. UNBLOCK wakes a client waiting in
  a blocking pop on this node (blocking.py) with a nil reply or Redis's -UNBLOCKED error.
- REPLY ON|OFF|SKIP sets the session's mode; the listener drops the replies it silences (the
  commands still run, in order).
- TRACKING, CACHING, GETREDIR, TRACKINGINFO: client-side caching (tracking.py).
- NO-EVICT and NO-TOUCH are accepted: phalanx never evicts, and does not track LRU.
See docs/architecture.md.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from phalanx.errors import CommandError
from phalanx.resp import SimpleString
from phalanx.server.peer_link import FORWARD_CLIENT_NAME

if TYPE_CHECKING:
    from phalanx.server.front.session import ClientState
    from phalanx.server.front.tracking import Tracking

#: CLIENT REPLY's modes (session.py's REPLY_*; no import: session imports nothing of this).
_REPLY_MODES = {b"ON": 0, b"OFF": 1, b"SKIP": 2}


class ClientControl(Protocol):
    """What CLIENT needs from the listener besides the sessions."""

    tracking: Tracking

    def kill_client(self, client_id: int, after_reply: bool) -> bool:
        """Close client `client_id`'s connection (after its replies if `after_reply`)."""

    def pause_clients(self, milliseconds: int, writes_only: bool) -> None:
        """Hold this node's clients' commands (or writes) for `milliseconds` from now."""

    def unpause_clients(self) -> None:
        """End a pause now."""

    def unblock_client(self, client_id: int, error: bool) -> bool:
        """Wake client `client_id` out of a blocking command; False if it is not blocked."""

_HELP = (
    "CLIENT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "GETNAME", "ID", "INFO", "KILL <ip:port>", "KILL <option> <value> [<option> <value> [...]]",
    "LIST [TYPE (NORMAL|MASTER|REPLICA|PUBSUB)] [ID id ...]", "NO-EVICT (ON|OFF)",
    "NO-TOUCH (ON|OFF)", "PAUSE <timeout> [WRITE|ALL]", "UNPAUSE", "REPLY (ON|OFF|SKIP)",
    "UNBLOCK <clientid> [TIMEOUT|ERROR]",
    "TRACKING (ON|OFF) [REDIRECT <id>] [OPTIN] [OPTOUT] [NOLOOP]", "CACHING (YES|NO)",
    "GETREDIR", "TRACKINGINFO", "SETINFO <option> <value>", "SETNAME <name>", "HELP",
)


def _name_ok(name: bytes) -> bool:
    """Redis's rule for CLIENT SETNAME / SETINFO values: printable ASCII, no spaces."""
    return all(33 <= byte <= 126 for byte in name)


def client_line(state: ClientState) -> str:
    """One client as CLIENT INFO / CLIENT LIST print it (the fields clients parse)."""
    age = int(time.monotonic() - state.created)
    idle = max(0, (time.perf_counter_ns() - state.last_active) // 1_000_000_000)
    lib_name = state.lib_name.decode(errors="replace")
    lib_ver = state.lib_ver.decode(errors="replace")
    command = state.last_command.decode(errors="replace").lower() or "NULL"
    multi = -1 if state.multi is None else len(state.multi)
    return (f"id={state.id} addr={state.address} laddr={state.local_address} fd=-1 "
            f"name={state.name.decode(errors='replace')} age={age} idle={idle} "
            f"flags={'r' if state.readonly else 'N'} db=0 sub=0 psub=0 ssub=0 multi={multi} "
            f"cmd={command} user={state.user} lib-name={lib_name} lib-ver={lib_ver} "
            f"resp={state.protocol} readonly={int(state.readonly)}")


class ClientCommand:
    """CLIENT on this node's sessions. `close(client_id, after_reply)` closes a connection."""

    def __init__(self, clients: dict[int, ClientState], control: ClientControl) -> None:
        self.clients = clients
        self.control = control
        self.close: Callable[[int, bool], bool] = control.kill_client

    def client(self, state: ClientState, arguments: list[bytes]) -> object:
        if len(arguments) < 2:
            raise CommandError("ERR wrong number of arguments for 'client' command")
        sub = arguments[1].upper()
        count = len(arguments)
        if sub == b"ID" and count == 2:
            return state.id
        if sub == b"GETNAME" and count == 2:
            return state.name or None
        if sub == b"SETNAME" and count == 3:
            if not _name_ok(arguments[2]):
                raise CommandError("ERR Client names cannot contain spaces, newlines or special "
                                   "characters.")
            state.name = arguments[2]
            state.forwarded = arguments[2] == FORWARD_CLIENT_NAME
            return SimpleString("OK")
        if sub == b"SETINFO" and count == 4:
            return self._setinfo(state, arguments[2], arguments[3])
        if sub == b"INFO" and count == 2:
            return client_line(state).encode() + b"\n"
        if sub == b"LIST":
            return self._list(arguments[2:])
        if sub == b"KILL" and count >= 3:
            return self._kill(state, arguments[2:])
        if sub in (b"NO-EVICT", b"NO-TOUCH") and count == 3:
            if arguments[2].upper() not in (b"ON", b"OFF"):
                raise CommandError("ERR syntax error")
            return SimpleString("OK")
        if sub == b"PAUSE" and count in (3, 4):
            return self._pause(arguments[2:])
        if sub == b"UNPAUSE" and count == 2:
            self.control.unpause_clients()
            return SimpleString("OK")
        if sub == b"REPLY" and count == 3:
            mode = _REPLY_MODES.get(arguments[2].upper())
            if mode is None:
                raise CommandError("ERR syntax error")
            state.reply_mode = mode
            return SimpleString("OK")
        if sub == b"TRACKING" and count >= 3:
            return self.control.tracking.tracking(state, arguments[2:])
        if sub == b"CACHING" and count == 3:
            return self.control.tracking.caching(state, arguments[2])
        if sub == b"GETREDIR" and count == 2:
            return self.control.tracking.getredir(state)
        if sub == b"TRACKINGINFO" and count == 2:
            return self.control.tracking.info(state)
        if sub == b"UNBLOCK" and count in (3, 4):
            return self._unblock(arguments[2:])
        if sub == b"HELP" and count == 2:
            return [SimpleString(line) for line in _HELP]
        raise CommandError(f"ERR unknown subcommand or wrong number of arguments for "
                           f"'{arguments[1].decode(errors='replace')}'. Try CLIENT HELP.")

    def _pause(self, options: list[bytes]) -> object:
        """CLIENT PAUSE timeout [WRITE|ALL] (https://redis.io/commands/client-pause/)."""
        try:
            milliseconds = int(options[0])
        except ValueError:
            raise CommandError("ERR timeout is not an integer or out of range") from None
        if milliseconds < 0:
            raise CommandError("ERR timeout is negative")
        writes_only = False
        if len(options) == 2:
            mode = options[1].upper()
            if mode not in (b"WRITE", b"ALL"):
                raise CommandError("ERR syntax error")
            writes_only = mode == b"WRITE"
        self.control.pause_clients(milliseconds, writes_only)
        return SimpleString("OK")

    def _unblock(self, options: list[bytes]) -> object:
        """CLIENT UNBLOCK id [TIMEOUT|ERROR]: 1 if the client was blocked (and is now
        answered), else 0 (https://redis.io/commands/client-unblock/)."""
        try:
            client_id = int(options[0])
        except ValueError:
            raise CommandError("ERR value is not an integer or out of range") from None
        error = False
        if len(options) == 2:
            how = options[1].upper()
            if how not in (b"TIMEOUT", b"ERROR"):
                raise CommandError("ERR CLIENT UNBLOCK reason should be TIMEOUT or ERROR")
            error = how == b"ERROR"
        return int(self.control.unblock_client(client_id, error))

    @staticmethod
    def _setinfo(state: ClientState, option: bytes, value: bytes) -> object:
        """CLIENT SETINFO LIB-NAME|LIB-VER (Redis 7.2's; redis-py 5+ sends it on connect)."""
        attribute = {b"LIB-NAME": "lib_name", b"LIB-VER": "lib_ver"}.get(option.upper())
        if attribute is None:
            raise CommandError(f"ERR Unrecognized option '{option.decode(errors='replace')}'")
        if not _name_ok(value) and value:
            raise CommandError(f"ERR {option.decode(errors='replace')} cannot contain spaces, "
                               f"newlines or special characters.")
        if hasattr(state, attribute):
            setattr(state, attribute, value)
        return SimpleString("OK")

    def _list(self, options: list[bytes]) -> bytes:
        """CLIENT LIST [TYPE normal|master|replica|pubsub] [ID id ...]."""
        chosen = list(self.clients.values())
        position = 0
        while position < len(options):
            option = options[position].upper()
            if option == b"TYPE" and position + 1 < len(options):
                kind = options[position + 1].lower()
                if kind not in (b"normal", b"master", b"replica", b"slave", b"pubsub"):
                    raise CommandError(f"ERR Unknown client type "
                                       f"'{kind.decode(errors='replace')}'")
                if kind != b"normal":
                    chosen = []
                position += 2
            elif option == b"ID" and position + 1 < len(options):
                ids: set[int] = set()
                for text in options[position + 1:]:
                    try:
                        ids.add(int(text))
                    except ValueError as error:
                        raise CommandError("ERR Invalid client ID") from error
                chosen = [c for c in chosen if c.id in ids]
                position = len(options)
            else:
                raise CommandError("ERR syntax error")
        return "".join(client_line(c) + "\n" for c in chosen).encode()

    def _kill(self, state: ClientState, options: list[bytes]) -> object:
        """CLIENT KILL addr (old form: OK or "No such client"), or the filter form: ID, ADDR,
        LADDR, USER, TYPE, SKIPME (default yes), MAXAGE; answers how many were killed."""
        if len(options) == 1:
            target = next((c for c in self.clients.values()
                           if c.address == options[0].decode(errors="replace")), None)
            if target is None:
                raise CommandError("ERR No such client")
            self.close(target.id, target is state)
            return SimpleString("OK")
        if len(options) % 2:
            raise CommandError("ERR syntax error")
        chosen = list(self.clients.values())
        skip_me = True
        for position in range(0, len(options), 2):
            option, value = options[position].upper(), options[position + 1]
            text = value.decode(errors="replace")
            if option == b"ID":
                try:
                    wanted = int(value)
                except ValueError as error:
                    raise CommandError("ERR client-id should be greater than 0") from error
                if wanted <= 0:
                    raise CommandError("ERR client-id should be greater than 0")
                chosen = [c for c in chosen if c.id == wanted]
            elif option == b"ADDR":
                chosen = [c for c in chosen if c.address == text]
            elif option == b"LADDR":
                chosen = [c for c in chosen if c.local_address == text]
            elif option == b"USER":
                chosen = [c for c in chosen if c.user == text]
            elif option == b"TYPE":
                if value.lower() not in (b"normal", b"master", b"replica", b"slave", b"pubsub"):
                    raise CommandError(f"ERR Unknown client type '{text}'")
                if value.lower() != b"normal":
                    chosen = []
            elif option == b"SKIPME":
                if value.lower() not in (b"yes", b"no"):
                    raise CommandError("ERR syntax error")
                skip_me = value.lower() == b"yes"
            elif option == b"MAXAGE":
                try:
                    max_age = int(value)
                except ValueError as error:
                    raise CommandError("ERR value is not an integer or out of range") from error
                now = time.monotonic()
                chosen = [c for c in chosen if now - c.created >= max_age]
            else:
                raise CommandError("ERR syntax error")
        killed = 0
        for target in chosen:
            if skip_me and target is state:
                continue
            if self.close(target.id, target is state):
                killed += 1
        return killed
