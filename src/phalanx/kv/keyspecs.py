"""Redis 7.0's key specifications of the commands phalanx runs: per command, each key
spec's flags (RW/RO/OW/RM, access/update/insert/delete, ...), how its first key is found
(`("index", i)` or `("keyword", word, startfrom)`) and how many keys follow
(`("range", lastkey, keystep, limit)` or `("keynum", keynumidx, firstkey, keystep)`).

Generated from redis-server 7.0.15's `COMMAND INFO` (its `key_specifications`); COMMAND
GETKEYSANDFLAGS reads it (https://redis.io/docs/reference/key-specs/). Pure data.
"""

from __future__ import annotations

KeySpec = tuple[tuple[str, ...], tuple[object, ...], tuple[object, ...]]

KEY_SPECS: dict[str, tuple[KeySpec, ...]] = {
    # Containers whose keyed subcommands phalanx runs as one row (memory|usage, object|*).
    'memory': (
        (('RO',), ('index', 2), ('range', 0, 1, 0)),
    ),
    'object': (
        (('RO',), ('index', 2), ('range', 0, 1, 0)),
    ),
    'append': (
        (('RW', 'insert'), ('index', 1), ('range', 0, 1, 0)),
    ),
    'bitcount': (
        (('RO', 'access'), ('index', 1), ('range', 0, 1, 0)),
    ),
    'bitfield': (
        (('RW', 'access', 'update', 'variable_flags'), ('index', 1), ('range', 0, 1, 0)),
    ),
    'bitfield_ro': (
        (('RO', 'access'), ('index', 1), ('range', 0, 1, 0)),
    ),
    'bitop': (
        (('OW', 'update'), ('index', 2), ('range', 0, 1, 0)),
        (('RO', 'access'), ('index', 3), ('range', -1, 1, 0)),
    ),
    'bitpos': (
        (('RO', 'access'), ('index', 1), ('range', 0, 1, 0)),
    ),
    'blmove': (
        (('RW', 'access', 'delete'), ('index', 1), ('range', 0, 1, 0)),
        (('RW', 'insert'), ('index', 2), ('range', 0, 1, 0)),
    ),
    'blmpop': (
        (('RW', 'access', 'delete'), ('index', 2), ('keynum', 0, 1, 1)),
    ),
    'blpop': (
        (('RW', 'access', 'delete'), ('index', 1), ('range', -2, 1, 0)),
    ),
    'brpop': (
        (('RW', 'access', 'delete'), ('index', 1), ('range', -2, 1, 0)),
    ),
    'brpoplpush': (
        (('RW', 'access', 'delete'), ('index', 1), ('range', 0, 1, 0)),
        (('RW', 'insert'), ('index', 2), ('range', 0, 1, 0)),
    ),
    'bzmpop': (
        (('RW', 'access', 'delete'), ('index', 2), ('keynum', 0, 1, 1)),
    ),
    'bzpopmax': (
        (('RW', 'access', 'delete'), ('index', 1), ('range', -2, 1, 0)),
    ),
    'bzpopmin': (
        (('RW', 'access', 'delete'), ('index', 1), ('range', -2, 1, 0)),
    ),
    'copy': (
        (('RO', 'access'), ('index', 1), ('range', 0, 1, 0)),
        (('OW', 'update'), ('index', 2), ('range', 0, 1, 0)),
    ),
    'decr': (
        (('RW', 'access', 'update'), ('index', 1), ('range', 0, 1, 0)),
    ),
    'decrby': (
        (('RW', 'access', 'update'), ('index', 1), ('range', 0, 1, 0)),
    ),
    'del': (
        (('RM', 'delete'), ('index', 1), ('range', -1, 1, 0)),
    ),
    'dump': (
        (('RO', 'access'), ('index', 1), ('range', 0, 1, 0)),
    ),
    'eval': (
        (('RW', 'access', 'update'), ('index', 2), ('keynum', 0, 1, 1)),
    ),
    'eval_ro': (
        (('RO', 'access'), ('index', 2), ('keynum', 0, 1, 1)),
    ),
    'evalsha': (
        (('RW', 'access', 'update'), ('index', 2), ('keynum', 0, 1, 1)),
    ),
    'evalsha_ro': (
        (('RO', 'access'), ('index', 2), ('keynum', 0, 1, 1)),
    ),
    'exists': (
        (('RO',), ('index', 1), ('range', -1, 1, 0)),
    ),
    'expire': (
        (('RW', 'update'), ('index', 1), ('range', 0, 1, 0)),
    ),
    'expireat': (
        (('RW', 'update'), ('index', 1), ('range', 0, 1, 0)),
    ),
    'expiretime': (
        (('RO', 'access'), ('index', 1), ('range', 0, 1, 0)),
    ),
    'geoadd': (
        (('RW', 'update'), ('index', 1), ('range', 0, 1, 0)),
    ),
    'geodist': (
        (('RO', 'access'), ('index', 1), ('range', 0, 1, 0)),
    ),
    'geohash': (
        (('RO', 'access'), ('index', 1), ('range', 0, 1, 0)),
    ),
    'geopos': (
        (('RO', 'access'), ('index', 1), ('range', 0, 1, 0)),
    ),
    'georadius': (
        (('RO', 'access'), ('index', 1), ('range', 0, 1, 0)),
        (('OW', 'update'), ('keyword', 'STORE', 6), ('range', 0, 1, 0)),
        (('OW', 'update'), ('keyword', 'STOREDIST', 6), ('range', 0, 1, 0)),
    ),
    'georadius_ro': (
        (('RO', 'access'), ('index', 1), ('range', 0, 1, 0)),
    ),
    'georadiusbymember': (
        (('RO', 'access'), ('index', 1), ('range', 0, 1, 0)),
        (('OW', 'update'), ('keyword', 'STORE', 5), ('range', 0, 1, 0)),
        (('OW', 'update'), ('keyword', 'STOREDIST', 5), ('range', 0, 1, 0)),
    ),
    'georadiusbymember_ro': (
        (('RO', 'access'), ('index', 1), ('range', 0, 1, 0)),
    ),
    'geosearch': (
        (('RO', 'access'), ('index', 1), ('range', 0, 1, 0)),
    ),
    'geosearchstore': (
        (('OW', 'update'), ('index', 1), ('range', 0, 1, 0)),
        (('RO', 'access'), ('index', 2), ('range', 0, 1, 0)),
    ),
    'get': (
        (('RO', 'access'), ('index', 1), ('range', 0, 1, 0)),
    ),
    'getbit': (
        (('RO', 'access'), ('index', 1), ('range', 0, 1, 0)),
    ),
    'getdel': (
        (('RW', 'access', 'delete'), ('index', 1), ('range', 0, 1, 0)),
    ),
    'getex': (
        (('RW', 'access', 'update'), ('index', 1), ('range', 0, 1, 0)),
    ),
    'getrange': (
        (('RO', 'access'), ('index', 1), ('range', 0, 1, 0)),
    ),
    'getset': (
        (('RW', 'access', 'update'), ('index', 1), ('range', 0, 1, 0)),
    ),
    'hdel': (
        (('RW', 'delete'), ('index', 1), ('range', 0, 1, 0)),
    ),
    'hexists': (
        (('RO',), ('index', 1), ('range', 0, 1, 0)),
    ),
    'hget': (
        (('RO', 'access'), ('index', 1), ('range', 0, 1, 0)),
    ),
    'hgetall': (
        (('RO', 'access'), ('index', 1), ('range', 0, 1, 0)),
    ),
    'hincrby': (
        (('RW', 'access', 'update'), ('index', 1), ('range', 0, 1, 0)),
    ),
    'hincrbyfloat': (
        (('RW', 'access', 'update'), ('index', 1), ('range', 0, 1, 0)),
    ),
    'hkeys': (
        (('RO', 'access'), ('index', 1), ('range', 0, 1, 0)),
    ),
    'hlen': (
        (('RO',), ('index', 1), ('range', 0, 1, 0)),
    ),
    'hmget': (
        (('RO', 'access'), ('index', 1), ('range', 0, 1, 0)),
    ),
    'hmset': (
        (('RW', 'update'), ('index', 1), ('range', 0, 1, 0)),
    ),
    'hrandfield': (
        (('RO', 'access'), ('index', 1), ('range', 0, 1, 0)),
    ),
    'hscan': (
        (('RO', 'access'), ('index', 1), ('range', 0, 1, 0)),
    ),
    'hset': (
        (('RW', 'update'), ('index', 1), ('range', 0, 1, 0)),
    ),
    'hsetnx': (
        (('RW', 'insert'), ('index', 1), ('range', 0, 1, 0)),
    ),
    'hstrlen': (
        (('RO',), ('index', 1), ('range', 0, 1, 0)),
    ),
    'hvals': (
        (('RO', 'access'), ('index', 1), ('range', 0, 1, 0)),
    ),
    'incr': (
        (('RW', 'access', 'update'), ('index', 1), ('range', 0, 1, 0)),
    ),
    'incrby': (
        (('RW', 'access', 'update'), ('index', 1), ('range', 0, 1, 0)),
    ),
    'incrbyfloat': (
        (('RW', 'access', 'update'), ('index', 1), ('range', 0, 1, 0)),
    ),
    'lcs': (
        (('RO', 'access'), ('index', 1), ('range', 1, 1, 0)),
    ),
    'lindex': (
        (('RO', 'access'), ('index', 1), ('range', 0, 1, 0)),
    ),
    'linsert': (
        (('RW', 'insert'), ('index', 1), ('range', 0, 1, 0)),
    ),
    'llen': (
        (('RO',), ('index', 1), ('range', 0, 1, 0)),
    ),
    'lmove': (
        (('RW', 'access', 'delete'), ('index', 1), ('range', 0, 1, 0)),
        (('RW', 'insert'), ('index', 2), ('range', 0, 1, 0)),
    ),
    'lmpop': (
        (('RW', 'access', 'delete'), ('index', 1), ('keynum', 0, 1, 1)),
    ),
    'lpop': (
        (('RW', 'access', 'delete'), ('index', 1), ('range', 0, 1, 0)),
    ),
    'lpos': (
        (('RO', 'access'), ('index', 1), ('range', 0, 1, 0)),
    ),
    'lpush': (
        (('RW', 'insert'), ('index', 1), ('range', 0, 1, 0)),
    ),
    'lpushx': (
        (('RW', 'insert'), ('index', 1), ('range', 0, 1, 0)),
    ),
    'lrange': (
        (('RO', 'access'), ('index', 1), ('range', 0, 1, 0)),
    ),
    'lrem': (
        (('RW', 'delete'), ('index', 1), ('range', 0, 1, 0)),
    ),
    'lset': (
        (('RW', 'update'), ('index', 1), ('range', 0, 1, 0)),
    ),
    'ltrim': (
        (('RW', 'delete'), ('index', 1), ('range', 0, 1, 0)),
    ),
    'mget': (
        (('RO', 'access'), ('index', 1), ('range', -1, 1, 0)),
    ),
    'mset': (
        (('OW', 'update'), ('index', 1), ('range', -1, 2, 0)),
    ),
    'msetnx': (
        (('OW', 'insert'), ('index', 1), ('range', -1, 2, 0)),
    ),
    'persist': (
        (('RW', 'update'), ('index', 1), ('range', 0, 1, 0)),
    ),
    'pexpire': (
        (('RW', 'update'), ('index', 1), ('range', 0, 1, 0)),
    ),
    'pexpireat': (
        (('RW', 'update'), ('index', 1), ('range', 0, 1, 0)),
    ),
    'pexpiretime': (
        (('RO', 'access'), ('index', 1), ('range', 0, 1, 0)),
    ),
    'pfadd': (
        (('RW', 'insert'), ('index', 1), ('range', 0, 1, 0)),
    ),
    'pfcount': (
        (('RW', 'access'), ('index', 1), ('range', -1, 1, 0)),
    ),
    'pfmerge': (
        (('RW', 'access', 'insert'), ('index', 1), ('range', 0, 1, 0)),
        (('RO', 'access'), ('index', 2), ('range', -1, 1, 0)),
    ),
    'psetex': (
        (('OW', 'update'), ('index', 1), ('range', 0, 1, 0)),
    ),
    'pttl': (
        (('RO', 'access'), ('index', 1), ('range', 0, 1, 0)),
    ),
    'rename': (
        (('RW', 'access', 'delete'), ('index', 1), ('range', 0, 1, 0)),
        (('OW', 'update'), ('index', 2), ('range', 0, 1, 0)),
    ),
    'renamenx': (
        (('RW', 'access', 'delete'), ('index', 1), ('range', 0, 1, 0)),
        (('OW', 'insert'), ('index', 2), ('range', 0, 1, 0)),
    ),
    'restore': (
        (('OW', 'update'), ('index', 1), ('range', 0, 1, 0)),
    ),
    'rpop': (
        (('RW', 'access', 'delete'), ('index', 1), ('range', 0, 1, 0)),
    ),
    'rpoplpush': (
        (('RW', 'access', 'delete'), ('index', 1), ('range', 0, 1, 0)),
        (('RW', 'insert'), ('index', 2), ('range', 0, 1, 0)),
    ),
    'rpush': (
        (('RW', 'insert'), ('index', 1), ('range', 0, 1, 0)),
    ),
    'rpushx': (
        (('RW', 'insert'), ('index', 1), ('range', 0, 1, 0)),
    ),
    'sadd': (
        (('RW', 'insert'), ('index', 1), ('range', 0, 1, 0)),
    ),
    'scard': (
        (('RO',), ('index', 1), ('range', 0, 1, 0)),
    ),
    'sdiff': (
        (('RO', 'access'), ('index', 1), ('range', -1, 1, 0)),
    ),
    'sdiffstore': (
        (('OW', 'update'), ('index', 1), ('range', 0, 1, 0)),
        (('RO', 'access'), ('index', 2), ('range', -1, 1, 0)),
    ),
    'set': (
        (('RW', 'access', 'update', 'variable_flags'), ('index', 1), ('range', 0, 1, 0)),
    ),
    'setbit': (
        (('RW', 'access', 'update'), ('index', 1), ('range', 0, 1, 0)),
    ),
    'setex': (
        (('OW', 'update'), ('index', 1), ('range', 0, 1, 0)),
    ),
    'setnx': (
        (('OW', 'insert'), ('index', 1), ('range', 0, 1, 0)),
    ),
    'setrange': (
        (('RW', 'update'), ('index', 1), ('range', 0, 1, 0)),
    ),
    'sinter': (
        (('RO', 'access'), ('index', 1), ('range', -1, 1, 0)),
    ),
    'sintercard': (
        (('RO', 'access'), ('index', 1), ('keynum', 0, 1, 1)),
    ),
    'sinterstore': (
        (('RW', 'update'), ('index', 1), ('range', 0, 1, 0)),
        (('RO', 'access'), ('index', 2), ('range', -1, 1, 0)),
    ),
    'sismember': (
        (('RO',), ('index', 1), ('range', 0, 1, 0)),
    ),
    'smembers': (
        (('RO', 'access'), ('index', 1), ('range', 0, 1, 0)),
    ),
    'smismember': (
        (('RO', 'access'), ('index', 1), ('range', 0, 1, 0)),
    ),
    'smove': (
        (('RW', 'access', 'delete'), ('index', 1), ('range', 0, 1, 0)),
        (('RW', 'insert'), ('index', 2), ('range', 0, 1, 0)),
    ),
    'sort': (
        (('RO', 'access'), ('index', 1), ('range', 0, 1, 0)),
        (('RO', 'access'), ('unknown',), ('unknown',)),
        (('OW', 'update'), ('unknown',), ('unknown',)),
    ),
    'sort_ro': (
        (('RO', 'access'), ('index', 1), ('range', 0, 1, 0)),
        (('RO', 'access'), ('unknown',), ('unknown',)),
    ),
    'spop': (
        (('RW', 'access', 'delete'), ('index', 1), ('range', 0, 1, 0)),
    ),
    'spublish': (
        (('not_key',), ('index', 1), ('range', 0, 1, 0)),
    ),
    'srandmember': (
        (('RO', 'access'), ('index', 1), ('range', 0, 1, 0)),
    ),
    'srem': (
        (('RW', 'delete'), ('index', 1), ('range', 0, 1, 0)),
    ),
    'sscan': (
        (('RO', 'access'), ('index', 1), ('range', 0, 1, 0)),
    ),
    'ssubscribe': (
        (('not_key',), ('index', 1), ('range', -1, 1, 0)),
    ),
    'strlen': (
        (('RO',), ('index', 1), ('range', 0, 1, 0)),
    ),
    'substr': (
        (('RO', 'access'), ('index', 1), ('range', 0, 1, 0)),
    ),
    'sunion': (
        (('RO', 'access'), ('index', 1), ('range', -1, 1, 0)),
    ),
    'sunionstore': (
        (('OW', 'update'), ('index', 1), ('range', 0, 1, 0)),
        (('RO', 'access'), ('index', 2), ('range', -1, 1, 0)),
    ),
    'sunsubscribe': (
        (('not_key',), ('index', 1), ('range', -1, 1, 0)),
    ),
    'touch': (
        (('RO',), ('index', 1), ('range', -1, 1, 0)),
    ),
    'ttl': (
        (('RO', 'access'), ('index', 1), ('range', 0, 1, 0)),
    ),
    'type': (
        (('RO',), ('index', 1), ('range', 0, 1, 0)),
    ),
    'unlink': (
        (('RM', 'delete'), ('index', 1), ('range', -1, 1, 0)),
    ),
    'watch': (
        (('RO',), ('index', 1), ('range', -1, 1, 0)),
    ),
    'xack': (
        (('RW', 'update'), ('index', 1), ('range', 0, 1, 0)),
    ),
    'xadd': (
        (('RW', 'update'), ('index', 1), ('range', 0, 1, 0)),
    ),
    'xautoclaim': (
        (('RW', 'delete'), ('index', 1), ('range', 0, 1, 0)),
    ),
    'xclaim': (
        (('RW', 'update'), ('index', 1), ('range', 0, 1, 0)),
    ),
    'xdel': (
        (('RW', 'delete'), ('index', 1), ('range', 0, 1, 0)),
    ),
    'xlen': (
        (('RO',), ('index', 1), ('range', 0, 1, 0)),
    ),
    'xpending': (
        (('RO', 'access'), ('index', 1), ('range', 0, 1, 0)),
    ),
    'xrange': (
        (('RO', 'access'), ('index', 1), ('range', 0, 1, 0)),
    ),
    'xread': (
        (('RO', 'access'), ('keyword', 'STREAMS', 1), ('range', -1, 1, 2)),
    ),
    'xreadgroup': (
        (('RO', 'access'), ('keyword', 'STREAMS', 4), ('range', -1, 1, 2)),
    ),
    'xrevrange': (
        (('RO', 'access'), ('index', 1), ('range', 0, 1, 0)),
    ),
    'xsetid': (
        (('RW', 'update'), ('index', 1), ('range', 0, 1, 0)),
    ),
    'xtrim': (
        (('RW', 'delete'), ('index', 1), ('range', 0, 1, 0)),
    ),
    'zadd': (
        (('RW', 'update'), ('index', 1), ('range', 0, 1, 0)),
    ),
    'zcard': (
        (('RO',), ('index', 1), ('range', 0, 1, 0)),
    ),
    'zcount': (
        (('RO', 'access'), ('index', 1), ('range', 0, 1, 0)),
    ),
    'zdiff': (
        (('RO', 'access'), ('index', 1), ('keynum', 0, 1, 1)),
    ),
    'zdiffstore': (
        (('OW', 'update'), ('index', 1), ('range', 0, 1, 0)),
        (('RO', 'access'), ('index', 2), ('keynum', 0, 1, 1)),
    ),
    'zincrby': (
        (('RW', 'access', 'update'), ('index', 1), ('range', 0, 1, 0)),
    ),
    'zinter': (
        (('RO', 'access'), ('index', 1), ('keynum', 0, 1, 1)),
    ),
    'zintercard': (
        (('RO', 'access'), ('index', 1), ('keynum', 0, 1, 1)),
    ),
    'zinterstore': (
        (('OW', 'update'), ('index', 1), ('range', 0, 1, 0)),
        (('RO', 'access'), ('index', 2), ('keynum', 0, 1, 1)),
    ),
    'zlexcount': (
        (('RO', 'access'), ('index', 1), ('range', 0, 1, 0)),
    ),
    'zmpop': (
        (('RW', 'access', 'delete'), ('index', 1), ('keynum', 0, 1, 1)),
    ),
    'zmscore': (
        (('RO', 'access'), ('index', 1), ('range', 0, 1, 0)),
    ),
    'zpopmax': (
        (('RW', 'access', 'delete'), ('index', 1), ('range', 0, 1, 0)),
    ),
    'zpopmin': (
        (('RW', 'access', 'delete'), ('index', 1), ('range', 0, 1, 0)),
    ),
    'zrandmember': (
        (('RO', 'access'), ('index', 1), ('range', 0, 1, 0)),
    ),
    'zrange': (
        (('RO', 'access'), ('index', 1), ('range', 0, 1, 0)),
    ),
    'zrangebylex': (
        (('RO', 'access'), ('index', 1), ('range', 0, 1, 0)),
    ),
    'zrangebyscore': (
        (('RO', 'access'), ('index', 1), ('range', 0, 1, 0)),
    ),
    'zrangestore': (
        (('OW', 'update'), ('index', 1), ('range', 0, 1, 0)),
        (('RO', 'access'), ('index', 2), ('range', 0, 1, 0)),
    ),
    'zrank': (
        (('RO', 'access'), ('index', 1), ('range', 0, 1, 0)),
    ),
    'zrem': (
        (('RW', 'delete'), ('index', 1), ('range', 0, 1, 0)),
    ),
    'zremrangebylex': (
        (('RW', 'delete'), ('index', 1), ('range', 0, 1, 0)),
    ),
    'zremrangebyrank': (
        (('RW', 'delete'), ('index', 1), ('range', 0, 1, 0)),
    ),
    'zremrangebyscore': (
        (('RW', 'delete'), ('index', 1), ('range', 0, 1, 0)),
    ),
    'zrevrange': (
        (('RO', 'access'), ('index', 1), ('range', 0, 1, 0)),
    ),
    'zrevrangebylex': (
        (('RO', 'access'), ('index', 1), ('range', 0, 1, 0)),
    ),
    'zrevrangebyscore': (
        (('RO', 'access'), ('index', 1), ('range', 0, 1, 0)),
    ),
    'zrevrank': (
        (('RO', 'access'), ('index', 1), ('range', 0, 1, 0)),
    ),
    'zscan': (
        (('RO', 'access'), ('index', 1), ('range', 0, 1, 0)),
    ),
    'zscore': (
        (('RO', 'access'), ('index', 1), ('range', 0, 1, 0)),
    ),
    'zunion': (
        (('RO', 'access'), ('index', 1), ('keynum', 0, 1, 1)),
    ),
    'zunionstore': (
        (('OW', 'update'), ('index', 1), ('range', 0, 1, 0)),
        (('RO', 'access'), ('index', 2), ('keynum', 0, 1, 1)),
    ),
}
