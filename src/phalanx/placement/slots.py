"""Hash slots: which slot a key lives in, and which arguments of a request are keys.

What this module owns:
- The 16384 hash slots of Redis Cluster: `crc16` (CRC16-CCITT, XModem variant) and `key_slot`
  with the `{hashtag}` rule, bit for bit as Redis computes them (so cluster-aware clients and
  phalanx agree on every key's slot).
- `command_keys` / `command_slot`: the keys of one request and the single slot they hash to
  (`CrossSlotError` when they span slots, as Redis Cluster's `-CROSSSLOT`). The key positions
  come from the one command table, `phalanx.kv.table` (`command_spec`); this module keeps no
  table of its own.

Rules of this module:
- Pure and deterministic: standard library and `phalanx.kv` (itself pure) only.
- Key positions follow Redis: position 0 is the command name, so position 1 is `args[0]`;
  a negative last position counts from the end (-1 = the last argument). See
  docs/architecture.md.
- Never raises for a short or unknown request: key extraction returns the keys present (the
  command's own arity check answers the client); only `command_slot` raises, and only
  `CrossSlotError`.
"""

from __future__ import annotations

from binascii import crc_hqx
from collections.abc import Sequence

from phalanx.errors import CrossSlotError
from phalanx.kv import command_spec

SLOT_COUNT = 16384
"""Hash slots of the keyspace, as in Redis Cluster."""

_SLOT_MASK = SLOT_COUNT - 1


def crc16(data: bytes) -> int:
    """CRC16-CCITT (XModem: polynomial 0x1021, initial value 0), as Redis Cluster uses.

    `binascii.crc_hqx` is exactly that CRC, in C (about 50x a table-driven loop in Python;
    every keyed command computes it when routed and again when applied)."""
    return crc_hqx(data, 0)


def key_slot(key: bytes) -> int:
    """The hash slot of `key` (0..16383), honouring the `{hashtag}` rule of Redis Cluster.

    When the key holds a `{` and, after the FIRST `{`, a `}` with at least one byte between
    them, only those bytes are hashed; otherwise the whole key is ("foo{}{bar}" hashes whole).
    """
    start = key.find(b"{")
    if start != -1:
        end = key.find(b"}", start + 1)
        if end > start + 1:
            return crc16(key[start + 1:end]) & _SLOT_MASK
    return crc16(key) & _SLOT_MASK


def command_keys(name: bytes, args: Sequence[bytes]) -> list[bytes]:
    """The keys of the request `name args...` (`args` excludes the name); [] when keyless.

    Unknown commands have no keys. A request shorter than the command's arity yields the keys
    it does hold, never an error.
    """
    spec = command_spec(name)
    if spec is None or spec.first_key <= 0:
        return []
    count = len(args)
    last = spec.last_key if spec.last_key >= 0 else count + 1 + spec.last_key
    last = min(last, count)
    if spec.step == 1:
        return list(args[spec.first_key - 1:last])
    return [args[position - 1] for position in range(spec.first_key, last + 1, spec.step)]


def command_slot(name: bytes, args: Sequence[bytes]) -> int | None:
    """The one slot every key of the request hashes to; None when the request has no key.

    Raises `CrossSlotError` when the keys span two or more slots.
    """
    keys = command_keys(name, args)
    if not keys:
        return None
    slot = key_slot(keys[0])
    for key in keys[1:]:
        if key_slot(key) != slot:
            raise CrossSlotError()
    return slot
