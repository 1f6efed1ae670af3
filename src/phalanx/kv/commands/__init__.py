"""The command families of the state machine, one module per data type (or concern).

`strings` (strings and counters), `keys` (generic key commands, expiry, KEYS/SCAN, FLUSHDB and
the internal PHALANX.EXPIRE), `hashes`, `sets`, `lists`. Each module defines its commands as
plain functions `(keyspace, args, now) -> Reply` and exports `COMMANDS`, a tuple of
`phalanx.kv.spec.CommandSpec` rows; `phalanx.kv.table` merges them into the one command table.
A new family (sorted sets, streams, ...) is a new module here plus one line in `table.py`.
See docs/architecture.md ("how to add a command").
"""
