"""The merge rules of active-active keys against a model (issue 18), under reordered,
duplicated and delayed cross-region delivery of deltas and full states.

Two or three regions (one `ActiveActiveStore` each) run random commands; deliveries pick any
slice of another region's outbox (any start, repeated, late) or its full state. After a final
exchange every region holds the same state, and that state is the model's:
- counters: every acknowledged increment counted exactly once;
- sets and hash fields: present iff some add was not observed by a later remove (add wins);
- registers and hash values: the write with the greatest (clock, region) stamp.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

from phalanx.crdt.store import ActiveActiveStore, PullReply

REGIONS = ["eu", "us", "ap"]
COUNTERS = [b"c1", b"c2"]
REGISTERS = [b"r1", b"r2"]
SETS = [b"s1"]
HASHES = [b"h1"]
MEMBERS = [b"a", b"b", b"c"]


def everything(key: bytes) -> bool:
    return True


@dataclass
class Event:
    id: int
    region: str
    kind: str
    key: bytes
    member: bytes = b""
    value: bytes | None = None
    amount: int = 0
    stamp: tuple[int, str] = (0, "")
    #: For removes: the add events observed (removed).
    observed: frozenset[int] = frozenset()


@dataclass
class Region:
    name: str
    store: ActiveActiveStore
    seen: set[int] = field(default_factory=set)
    #: outbox sequence -> the event it carries.
    events_at: dict[int, int] = field(default_factory=dict)


class World:
    def __init__(self, count: int) -> None:
        self.regions = [Region(name, ActiveActiveStore(name)) for name in REGIONS[:count]]
        self.events: list[Event] = []
        self.now = 1_000

    def local(self, region: Region, kind: str, key: bytes, member: bytes, value: bytes,
              amount: int) -> None:
        self.now += 1
        store = region.store
        before = store.next_seq
        event = Event(len(self.events), region.name, kind, key, member, value, amount)
        if kind == "incr":
            reply = store.execute(b"INCRBY", [key, str(amount).encode()], self.now)
            assert isinstance(reply, int)
        elif kind == "set":
            assert store.execute(b"SET", [key, value], self.now) == "OK"
        elif kind == "del":
            observed = {e.id for e in self.events if e.key == key and e.id in region.seen
                        and e.kind in ("set", "sadd", "hset")}
            event.observed = frozenset(observed)
            # A DEL that found nothing did nothing (no tombstone): reply 0.
            event.amount = int(store.execute(b"DEL", [key], self.now) == 1)
        elif kind == "sadd":
            assert store.execute(b"SADD", [key, member], self.now) in (0, 1)
        elif kind == "srem":
            event.observed = frozenset(e.id for e in self.events if e.key == key
                                       and e.member == member and e.kind == "sadd"
                                       and e.id in region.seen)
            store.execute(b"SREM", [key, member], self.now)
        elif kind == "hset":
            assert store.execute(b"HSET", [key, member, value], self.now) in (0, 1)
        elif kind == "expire":  # the "expiring" family: convergence only (see the test)
            store.execute(b"PEXPIRE", [key, str(amount * 3).encode()], self.now)
        elif kind == "persist":
            store.execute(b"PERSIST", [key], self.now)
        elif kind == "sadd_e":
            store.execute(b"SADD", [key, member], self.now)
        elif kind == "hdel":
            event.observed = frozenset(e.id for e in self.events if e.key == key
                                       and e.member == member and e.kind == "hset"
                                       and e.id in region.seen)
            store.execute(b"HDEL", [key, member], self.now)
        event.stamp = (store.hlc, region.name)
        # Causality: a write carries a greater stamp than every write its region has seen.
        assert all(self.events[i].stamp < event.stamp for i in region.seen)
        self.events.append(event)
        region.seen.add(event.id)
        for seq in range(before, store.next_seq):
            region.events_at[seq] = event.id

    def deliver(self, source: Region, target: Region, start: int, length: int,
                full: bool) -> None:
        store = source.store
        if full:
            # Page by page (`length + 1` keys a page), as the link pulls a full state; the
            # position becomes the first page's head with the last page.
            first = store.pull(-1, length + 1, everything)
            assert first.full
            target.seen |= source.seen
            reply = first
            while reply.more:
                wire = PullReply.decode(reply.encode())
                target.store.merge(source.name, 1, first.next_seq, True, wire.items,
                                   everything, page=True)
                reply = store.pull(-1, length + 1, everything, reply.cursor)
            reply = PullReply(True, first.next_seq, reply.items, reply.latest_hlc,
                              reply.head_seq)
        else:
            start = min(start, store.next_seq)
            reply = store.pull(start, length, everything)
            assert not reply.full
            for seq in range(start, reply.next_seq):
                target.seen.add(source.events_at[seq])
        wire = PullReply.decode(reply.encode())  # through the wire format
        target.store.merge(source.name, 1, wire.next_seq, wire.full, wire.items, everything)

    def settle(self) -> None:
        for source in self.regions:
            for target in self.regions:
                if source is not target:
                    self.deliver(source, target, 0, source.store.next_seq, False)


def _survives(world: World, add: Event) -> bool:
    return not any(add.id in e.observed for e in world.events)


def check_model(world: World) -> None:
    first = world.regions[0].store
    snapshots = {region.store.snapshot().split(b"\xff")[0] for region in world.regions}
    states = [sorted((k, v.encode()) for k, v in r.store.keys.items()) for r in world.regions]
    assert all(state == states[0] for state in states), "regions did not converge"
    del snapshots
    events = world.events
    for key in COUNTERS:
        expected = sum(e.amount for e in events if e.key == key and e.kind == "incr")
        got = first.read(b"GET", [key])
        assert got == (str(expected).encode() if any(
            e.key == key and e.amount for e in events) else None), (key, got, expected)
    for key in REGISTERS:
        writes = [e for e in events if e.key == key and (
            e.kind == "set" or (e.kind == "del" and e.amount))]
        if not writes:
            assert first.read(b"GET", [key]) is None
            continue
        last = max(writes, key=lambda e: e.stamp)
        want = last.value if last.kind == "set" else None
        if last.kind == "del":
            # A DEL deletes only the writes it observed; a SET it did not observe survives
            # only if greater - the greatest write is this DEL, so the register is empty.
            want = None
        assert first.read(b"GET", [key]) == want, (key, last)
    for key in SETS:
        alive = {e.member for e in events if e.key == key and e.kind == "sadd"
                 and _survives(world, e)}
        assert first.read(b"SMEMBERS", [key]) == sorted(alive)
    for key in HASHES:
        adds = [e for e in events if e.key == key and e.kind == "hset" and _survives(world, e)]
        want: dict[bytes, bytes] = {}
        best: dict[bytes, tuple[int, str]] = {}
        for e in adds:
            if e.member not in best or e.stamp > best[e.member]:
                best[e.member] = e.stamp
                assert e.value is not None
                want[e.member] = e.value
        flat: list[bytes] = []
        for name in sorted(want):
            flat += [name, want[name]]
        assert first.read(b"HGETALL", [key]) == flat


_KINDS = {"counter": ["incr"], "register": ["set", "del"], "set": ["sadd", "srem", "del"],
          "hash": ["hset", "hdel", "del"], "expiring": ["sadd_e", "expire", "persist"]}
_KEYS = {"counter": COUNTERS, "register": REGISTERS, "set": SETS, "hash": HASHES,
         "expiring": [b"e1"]}


@settings(max_examples=200, deadline=None)
@given(st.integers(2, 3), st.data())
def test_convergence_to_the_model_under_any_delivery(count: int, data: st.DataObject) -> None:
    world = World(count)
    for _ in range(data.draw(st.integers(1, 60), label="steps")):
        region = data.draw(st.sampled_from(world.regions[:count]))
        if data.draw(st.booleans()):
            family = data.draw(st.sampled_from(sorted(_KINDS)))
            kind = data.draw(st.sampled_from(_KINDS[family]))
            world.local(region, kind, data.draw(st.sampled_from(_KEYS[family])),
                        data.draw(st.sampled_from(MEMBERS)),
                        data.draw(st.sampled_from([b"x", b"y", b"z"])),
                        data.draw(st.integers(-5, 5)))
        else:
            target = data.draw(st.sampled_from([r for r in world.regions if r is not region]))
            world.deliver(region, target, data.draw(st.integers(0, 40)),
                          data.draw(st.integers(0, 10)), data.draw(st.booleans()))
    world.settle()
    check_model(world)
    # Keys with expiry converge too, and read alike at any one time.
    for at in (world.now, world.now + 20):
        assert len({str(r.store.read(b"SMEMBERS", [b"e1"], at)) for r in world.regions}) == 1
        assert len({str(r.store.read(b"PTTL", [b"e1"], at)) for r in world.regions}) == 1
    # Delivering everything again (duplicates) changes nothing.
    before = [r.store.snapshot() for r in world.regions]
    world.settle()
    assert [r.store.snapshot() for r in world.regions] == before


def test_concurrent_add_wins_over_remove() -> None:
    world = World(2)
    eu, us = world.regions
    world.local(eu, "sadd", b"s1", b"a", b"", 0)
    world.deliver(eu, us, 0, 10, False)
    world.local(us, "srem", b"s1", b"a", b"", 0)      # removes the add it saw
    world.local(eu, "sadd", b"s1", b"a", b"", 0)      # concurrent re-add: a new dot
    world.settle()
    assert eu.store.read(b"SMEMBERS", [b"s1"]) == [b"a"] == us.store.read(b"SMEMBERS", [b"s1"])


def test_every_concurrent_increment_counts_and_del_resets_only_what_it_saw() -> None:
    world = World(2)
    eu, us = world.regions
    world.local(eu, "incr", b"c1", b"", b"", 5)
    world.local(us, "incr", b"c1", b"", b"", 7)
    world.settle()
    assert eu.store.read(b"GET", [b"c1"]) == b"12"
    world.local(eu, "del", b"c1", b"", b"", 0)        # sees 12
    world.local(us, "incr", b"c1", b"", b"", 3)       # concurrent: not seen by the DEL
    world.settle()
    assert eu.store.read(b"GET", [b"c1"]) == b"3" == us.store.read(b"GET", [b"c1"])


def test_a_dropped_outbox_prefix_falls_back_to_the_full_state() -> None:
    source, target = ActiveActiveStore("eu", outbox_max=3), ActiveActiveStore("us")
    for number in range(10):
        source.execute(b"SADD", [b"s", b"m%d" % number], 1_000 + number)
    reply = source.pull(0, 100, everything)
    assert reply.full and reply.next_seq == 10
    target.merge("eu", 1, reply.next_seq, reply.full, reply.items, everything)
    assert target.read(b"SCARD", [b"s"]) == 10
    assert target.positions[("eu", 1)] == 10
    again = source.pull(10, 100, everything)
    assert not again.full and again.items == [] and again.next_seq == 10


def test_snapshot_round_trip_and_split() -> None:
    store = ActiveActiveStore("eu")
    store.execute(b"INCRBY", [b"a", b"4"], 10)
    store.execute(b"HSET", [b"b", b"f", b"v"], 11)
    store.merge("us", 2, 7, False, [], everything)
    copy = ActiveActiveStore("eu")
    copy.restore(store.snapshot())
    assert copy.snapshot() == store.snapshot()
    child = ActiveActiveStore("eu")
    child.restore(store.extract(lambda key: key == b"b"))
    assert child.read(b"HGET", [b"b", b"f"]) == b"v" and store.read(b"EXISTS", [b"b"]) == 0
    assert child.positions == {("us", 2): 7} and child.pull(0, 10, everything).full


def test_refusals_are_clear() -> None:
    store = ActiveActiveStore("eu")
    assert "not supported on active-active" in str(store.execute(b"LPUSH", [b"k", b"v"], 1))
    assert "SET takes no options" in str(store.execute(b"SET", [b"k", b"v", b"EX", b"1"], 1))
    store.execute(b"SET", [b"k", b"v"], 1)
    assert "WRONGTYPE" in str(store.execute(b"INCR", [b"k"], 2))
    assert "WRONGTYPE" in str(store.execute(b"SADD", [b"k", b"m"], 2))
    assert "wrong number of arguments" in str(store.execute(b"GET", [b"k", b"x"], 2))
    assert "no region name" in str(ActiveActiveStore("").execute(b"SET", [b"k", b"v"], 1))


def test_expiry_semantics() -> None:
    world = World(2)
    eu, us = world.regions
    store = eu.store
    store.execute(b"SADD", [b"s", b"a"], 1_000)
    assert store.execute(b"PEXPIRE", [b"s", b"100"], 1_000) == 1
    assert store.read(b"PTTL", [b"s"], 1_040) == 60
    assert store.read(b"TTL", [b"s"], 1_040) == 0
    assert store.read(b"SMEMBERS", [b"s"], 1_099) == [b"a"]
    assert store.read(b"SMEMBERS", [b"s"], 1_100) == []
    assert store.read(b"TTL", [b"s"], 1_100) == -2
    # A write after the expiry starts from nothing, without a TTL.
    assert store.execute(b"SADD", [b"s", b"b"], 2_000) == 1
    assert store.read(b"SMEMBERS", [b"s"], 2_000) == [b"b"]
    assert store.read(b"TTL", [b"s"], 2_000) == -1
    # SET clears a TTL; EXPIRE on a missing key does nothing; a past time deletes.
    store.execute(b"SET", [b"r", b"v"], 3_000)
    store.execute(b"EXPIRE", [b"r", b"10"], 3_000)
    store.execute(b"SET", [b"r", b"w"], 3_001)
    assert store.read(b"TTL", [b"r"], 3_002) == -1
    assert store.execute(b"EXPIRE", [b"missing", b"10"], 3_002) == 0
    assert store.execute(b"EXPIRE", [b"r", b"-1"], 3_003) == 1
    assert store.read(b"EXISTS", [b"r"], 3_003) == 0
    assert "NX/XX/GT/LT" in str(store.execute(b"EXPIRE", [b"s", b"5", b"NX"], 3_004))
    # Across regions: EXPIRE and a later PERSIST (greater clock) -> no expiry anywhere.
    us.store.execute(b"INCR", [b"c"], 4_000)
    us_pos = us.store.pull(0, 100, everything)
    eu.store.merge("us", 1, us_pos.next_seq, us_pos.full, us_pos.items, everything)
    eu.store.execute(b"EXPIRE", [b"c", b"5"], 4_001)
    us.store.execute(b"PERSIST", [b"c"], 4_002)   # did not see the EXPIRE: nothing to undo
    eu_pull = eu.store.pull(0, 1000, everything)
    us.store.merge("eu", 1, eu_pull.next_seq, eu_pull.full, eu_pull.items, everything)
    assert us.store.read(b"TTL", [b"c"], 4_003) == 5
    us.store.execute(b"PERSIST", [b"c"], 4_004)   # now it saw it: a later write wins
    us_pull = us.store.pull(0, 1000, everything)
    eu.store.merge("us", 1, us_pull.next_seq, us_pull.full, us_pull.items, everything)
    assert eu.store.read(b"TTL", [b"c"], 9_000) == -1 == us.store.read(b"TTL", [b"c"], 9_000)
    assert eu.store.read(b"GET", [b"c"], 9_000) == b"1"
