"""The command families of the state machine, one module per data type (or concern).

`strings` (strings and counters, LCS), `keys` (generic key commands, expiry, KEYS/SCAN,
RANDOMKEY, RENAME/COPY, OBJECT, FLUSHDB and the internal PHALANX.EXPIRE), `hashes`, `sets`,
`lists`. Each module defines its commands as plain functions `(keyspace, args, now) -> Reply`
and exports `COMMANDS`, a tuple of `phalanx.kv.spec.CommandSpec` rows; `phalanx.kv.table` merges
them into the one command table. Helper modules whose rows `keys.COMMANDS` lists: `dump` (DUMP /
RESTORE and their payload format) and `sort` (SORT / SORT_RO). `common` holds what several
families share: per-entry deterministic randomness (`EntryRandom`), the HSCAN / SSCAN cursor
walk, Redis's bounded-integer argument parsing.
A new family (sorted sets, streams, ...) is a new module here plus one line in `table.py`.
A command whose keys move (numkeys, a STORE option) gives its row a `movable_keys` finder
(`phalanx.kv.spec.numkeys_keys`). See docs/architecture.md ("how to add a command").
"""
