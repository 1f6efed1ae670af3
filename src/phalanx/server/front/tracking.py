"""Client-side caching: CLIENT TRACKING's invalidation messages for the keys this node's
clients read (https://redis.io/docs/manual/client-side-caching/, default mode).

What lives here: `Tracking` (this node's tracking table and the tracking state of its
clients), `TrackingState` (one client's), and the CLIENT TRACKING / CACHING / GETREDIR /
TRACKINGINFO subcommands' logic (clients.py parses them).

Rules of this file (the design):
- Default mode, as Redis: a tracking client's read commands add their keys to this node's
  table (key -> client ids); when an applied log entry writes one of those keys on a LOCAL
  replica, each client that read it gets one `invalidate` message and the key leaves its
  entry (one shot, as Redis). Writes reach every replica (followers apply every entry), so a
  node sees every change of a key of a shard it holds, whoever wrote it, through whichever
  node; the hook is `RaftGroup.on_watched_write` (the blocking pops' hook, shared through the
  listener), fed by the group's `watched_keys` counts.
- A key is registered BEFORE its read starts: a write applied after that invalidates it, so a
  value a client caches is never silently stale (the invalidation may be spurious: a
  keyless or multi-key entry, a failed write, an old entry applied late by a lagging
  follower; Redis, too, sends some spurious ones). The message follows the read's reply
  (pushes queue behind pending replies).
- A key of a shard this node holds no replica of cannot be watched here: its read is followed
  at once by an invalidation (the client does not keep it), never a silent stale cache.
- The hook knows an entry's keys from its command; an EVAL / EVALSHA entry may write keys it
  did not declare, so it counts as writing every watched key (server/group.py: spurious
  invalidations, never a missed one). A script queued inside MULTI is the exception: its
  transaction's entry names the declared keys only.
- Messages: a RESP3 client (or REDIRECT target) gets the push `>2 invalidate [keys]`; a RESP2
  REDIRECT target subscribed to `__redis__:invalidate` gets the Pub/Sub message; a RESP2
  client without one gets nothing (as Redis). When the REDIRECT target disconnects, the
  client gets `tracking-redir-broken` once (RESP3).
- OPTIN / OPTOUT with CLIENT CACHING yes|no, NOLOOP accepted (NOLOOP: a client may still hear
  of its own writes: the apply hook does not know who wrote). BCAST (prefix broadcasts) is
  refused: the hook reports watched keys, not every key written.
- The table holds at most `MAX_KEYS` keys (Redis's tracking-table-max-keys default): past it,
  the oldest key is invalidated for its clients and dropped.
See docs/architecture.md.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from phalanx.errors import CommandError
from phalanx.resp import Push, SimpleString, encode

if TYPE_CHECKING:
    from phalanx.server.front.session import ClientState

MAX_KEYS = 1_000_000
INVALIDATE_CHANNEL = b"__redis__:invalidate"


@dataclass(slots=True)
class TrackingState:
    """One client's CLIENT TRACKING mode."""

    redirect: int = 0
    optin: bool = False
    optout: bool = False
    noloop: bool = False
    #: CLIENT CACHING yes (OPTIN) / no (OPTOUT) for the next command; None: not given.
    caching: bool | None = None
    broken_redirect: bool = False
    #: Keys this client read that are in the table (so OFF and disconnect can remove them).
    keys: set[bytes] = field(default_factory=set)


class Tracking:
    """This node's tracking table and its clients' tracking modes."""

    def __init__(self, clients: dict[int, ClientState],
                 push_to: Callable[[int], Callable[[bytes], bool] | None],
                 subscribed: Callable[[int, bytes], bool],
                 watch: Callable[[bytes, int], bool]) -> None:
        #: The node's sessions (client id -> state).
        self.clients = clients
        #: A function writing pushes to a client's connection (None: gone).
        self.push_to = push_to
        #: Is client `id` subscribed to Pub/Sub channel `name` (a RESP2 REDIRECT target)?
        self.subscribed = subscribed
        #: Count (+1 / -1) a key in the watched keys of the local replica that holds it;
        #: False when this node holds no replica of its shard.
        self.watch = watch
        #: key -> ids of the clients that read it since its last invalidation.
        self.table: dict[bytes, set[int]] = {}
        self.states: dict[int, TrackingState] = {}

    # -- CLIENT TRACKING / CACHING / GETREDIR / TRACKINGINFO -------------------------------
    def tracking(self, state: ClientState, options: list[bytes]) -> object:
        """CLIENT TRACKING ON|OFF [REDIRECT id] [PREFIX p ...] [BCAST] [OPTIN] [OPTOUT]
        [NOLOOP] (https://redis.io/commands/client-tracking/)."""
        switch = options[0].upper()
        if switch not in (b"ON", b"OFF"):
            raise CommandError("ERR syntax error")
        redirect, optin, optout, noloop, bcast, prefixes = 0, False, False, False, False, 0
        position = 1
        while position < len(options):
            option = options[position].upper()
            more = len(options) - position - 1
            if option == b"REDIRECT" and more >= 1:
                if redirect:
                    raise CommandError("ERR A client can only redirect to a single other "
                                       "client")
                try:
                    redirect = int(options[position + 1])
                except ValueError:
                    raise CommandError("ERR value is not an integer or out of range") \
                        from None
                position += 1
            elif option == b"BCAST":
                bcast = True
            elif option == b"OPTIN":
                optin = True
            elif option == b"OPTOUT":
                optout = True
            elif option == b"NOLOOP":
                noloop = True
            elif option == b"PREFIX" and more >= 1:
                prefixes += 1
                position += 1
            else:
                raise CommandError("ERR syntax error")
            position += 1
        if switch == b"OFF":
            self.stop(state.id)
            return SimpleString("OK")
        if prefixes and not bcast:
            raise CommandError("ERR PREFIX option requires BCAST mode to be enabled")
        if bcast:
            raise CommandError("ERR phalanx: BCAST tracking is not supported (the default "
                               "mode is: invalidations for the keys a client read)")
        if optin and optout:
            raise CommandError("ERR You can't use both OPTIN and OPTOUT")
        if redirect and redirect != state.id and redirect not in self.clients:
            raise CommandError("ERR The client ID you want redirect to does not exist")
        current = self.states.get(state.id)
        if current is not None and (current.optin != optin or current.optout != optout):
            raise CommandError("ERR You can't switch OPTIN/OPTOUT mode before disabling "
                               "tracking for this client, and then re-enabling it with a "
                               "different mode.")
        if current is None:
            current = self.states[state.id] = TrackingState()
        current.redirect, current.optin, current.optout = redirect, optin, optout
        current.noloop, current.broken_redirect = noloop, False
        return SimpleString("OK")

    def caching(self, state: ClientState, value: bytes) -> object:
        """CLIENT CACHING YES|NO: whether the next command's keys are tracked (OPTIN /
        OPTOUT)."""
        current = self.states.get(state.id)
        answer = value.upper()
        if current is None or not (current.optin or current.optout):
            raise CommandError("ERR CLIENT CACHING can be called only when the client is in "
                               "tracking mode with OPTIN or OPTOUT mode enabled")
        if answer == b"YES" and current.optin:
            current.caching = True
        elif answer == b"NO" and current.optout:
            current.caching = False
        elif answer in (b"YES", b"NO"):
            raise CommandError(f"ERR CLIENT CACHING {answer.decode()} is only valid when "
                               f"tracking is enabled in {'OPTIN' if answer == b'YES' else 'OPTOUT'}"
                               " mode.")
        else:
            raise CommandError("ERR syntax error")
        return SimpleString("OK")

    def getredir(self, state: ClientState) -> int:
        current = self.states.get(state.id)
        return -1 if current is None else current.redirect

    def info(self, state: ClientState) -> dict[bytes, object]:
        current = self.states.get(state.id)
        if current is None:
            return {b"flags": [SimpleString("off")], b"redirect": -1, b"prefixes": []}
        flags = ["on"]
        if current.optin:
            flags.append("optin")
        if current.optout:
            flags.append("optout")
        if current.caching is True:
            flags.append("caching-yes")
        if current.caching is False:
            flags.append("caching-no")
        if current.noloop:
            flags.append("noloop")
        if current.broken_redirect:
            flags.append("broken_redirect")
        return {b"flags": [SimpleString(f) for f in flags], b"redirect": current.redirect,
                b"prefixes": []}

    # -- reads and writes -------------------------------------------------------------------
    def read(self, state: ClientState, keys: list[bytes]) -> None:
        """A tracking client starts a read of `keys` (called before it runs)."""
        current = self.states.get(state.id)
        if current is None:
            return
        caching, current.caching = current.caching, None
        if (current.optin and caching is not True) or (current.optout and caching is False):
            return
        unwatchable: list[bytes] = []
        for key in keys:
            readers = self.table.get(key)
            if readers is None:
                if not self.watch(key, 1):
                    unwatchable.append(key)
                    continue
                readers = self.table[key] = set()
                if len(self.table) > MAX_KEYS:
                    self._evict_oldest()
            readers.add(state.id)
            current.keys.add(key)
        if unwatchable:  # no local replica to hear of its writes: never cached
            self._send(state.id, current, unwatchable)

    def written(self, keys: list[bytes]) -> None:
        """Entries applied on a local replica wrote `keys`: invalidate them (one shot)."""
        by_client: dict[int, list[bytes]] = {}
        for key in keys:
            readers = self.table.pop(key, None)
            if readers is None:
                continue
            self.watch(key, -1)
            for client_id in readers:
                by_client.setdefault(client_id, []).append(key)
        for client_id, invalid in by_client.items():
            current = self.states.get(client_id)
            if current is None:
                continue
            current.keys.difference_update(invalid)
            self._send(client_id, current, invalid)

    def stop(self, client_id: int) -> None:
        """Tracking off (CLIENT TRACKING OFF, RESET, or the client left): forget its keys; a
        client redirecting to it learns its redirection broke."""
        current = self.states.pop(client_id, None)
        if current is not None:
            for key in current.keys:
                readers = self.table.get(key)
                if readers is None:
                    continue
                readers.discard(client_id)
                if not readers:
                    del self.table[key]
                    self.watch(key, -1)
        for other_id, other in self.states.items():
            if other.redirect == client_id and not other.broken_redirect and \
                    other_id != client_id:
                other.broken_redirect = True
                push = self.push_to(other_id)
                client = self.clients.get(other_id)
                if push is not None and client is not None and client.protocol == 3:
                    push(encode(Push([b"tracking-redir-broken", client_id]), 3))

    def _evict_oldest(self) -> None:
        key = next(iter(self.table))
        self.written([key])

    def _send(self, client_id: int, current: TrackingState, keys: list[bytes]) -> None:
        target_id = current.redirect or client_id
        target = self.clients.get(target_id)
        push = self.push_to(target_id)
        if target is None or push is None:
            return
        if target.protocol == 3:
            push(encode(Push([b"invalidate", list(keys)]), 3))
        elif current.redirect and self.subscribed(target_id, INVALIDATE_CHANNEL):
            push(encode([b"message", INVALIDATE_CHANNEL, list(keys)], 2))
