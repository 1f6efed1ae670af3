"""One row of the command table: `CommandSpec`, and the `Handler` signature of a command.

What this module holds:
- `CommandSpec`: a command as Redis 7's `COMMAND INFO` describes it (name, arity, flags, key
  positions first/last/step, ACL categories) plus, for a command the state machine runs, its
  handler. The command families (`phalanx.kv.commands.*`) each declare a tuple of these; the
  one table, `phalanx.kv.table`, merges them with the server's own commands.
- `Handler`: `handler(keyspace, args, now) -> Reply`, where `args` excludes the command name
  and `now` is the replicated clock.

Rules of this module:
- Pure data: standard library and the kv leaf modules only. Position 0 is the command name, so
  position 1 is `args[0]`; a negative last position counts from the end (-1 = the last
  argument); `first_key` 0 means keyless. See docs/architecture.md ("how to add a command").
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeAlias

from phalanx.kv.keyspace import Keyspace
from phalanx.kv.replies import Reply

Args: TypeAlias = Sequence[bytes]
"""A command's arguments after its name."""

Handler: TypeAlias = Callable[[Keyspace, Args, int], Reply]
"""A state-machine command: (keyspace, args, now_ms) -> reply. Never raises for bad input."""


@dataclass(frozen=True, slots=True)
class CommandSpec:
    """One command as Redis 7's `COMMAND INFO` describes it (positions count the name as 0)."""

    name: str
    """Lower case, e.g. "mset"."""
    arity: int
    """Redis convention: N = exactly N words including the name; -N = at least N."""
    flags: tuple[str, ...]
    """E.g. ("write", "denyoom"); a state-machine command has exactly one of "write" and
    "readonly" (a write goes through the log; a read may be served locally)."""
    first_key: int
    last_key: int
    """-1 = the last argument; 0 with `first_key` 0 = keyless."""
    step: int
    acl_categories: tuple[str, ...] = ()
    """E.g. ("@read", "@string", "@fast"), as `COMMAND INFO` lists them."""
    handler: Handler | None = field(default=None, compare=False, repr=False)
    """The state machine's implementation; None for a command the server answers itself."""

    @property
    def keyless(self) -> bool:
        """True when the command takes no key (KEYS, SCAN, PING, ...)."""
        return self.first_key <= 0

    @property
    def write(self) -> bool:
        """True when the command is flagged "write" (it changes state)."""
        return "write" in self.flags
