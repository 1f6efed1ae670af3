"""Geo commands: unit cases, movable STORE keys, and corner cases and random sequences compared
reply by reply with a real redis-server 7.0."""

from __future__ import annotations

import random
from typing import Any

import pytest

from phalanx.kv import Error
from phalanx.kv.commands.geo import decode, distance, encode, lat_distance
from phalanx.placement.slots import command_keys

from .conftest import Driver
from .redis_pair import Pair, needs_redis, redis_server_fixture  # noqa: F401 (a fixture)


def test_geohash_round_trip_and_replies(kv: Driver) -> None:
    bits = encode(13.361389, 38.115556)
    assert bits == 3479099956230698
    longitude, latitude = decode(float(bits))
    assert abs(longitude - 13.361389) < 1e-5 and abs(latitude - 38.115556) < 1e-5
    assert kv("GEOADD", "g", "13.361389", "38.115556", "Palermo",
              "15.087269", "37.502669", "Catania") == 2
    assert kv("GEOPOS", "g", "Palermo", "nope") == [
        [b"13.36138933897018433", b"38.11555639549629859"], None]
    assert kv("GEODIST", "g", "Palermo", "Catania", "km") == b"166.2742"
    assert kv("GEOHASH", "g", "Palermo", "Catania") == [b"sqc8b49rny0", b"sqdtr74hyu0"]
    assert kv("GEOSEARCH", "g", "FROMLONLAT", 15, 37, "BYRADIUS", 200, "km", "ASC",
              "WITHDIST") == [[b"Catania", b"56.4413"], [b"Palermo", b"190.4424"]]
    assert kv("GEORADIUS", "g", 15, 37, 200, "km", "STOREDIST", "d") == 2
    assert kv("ZRANGE", "d", 0, -1, "WITHSCORES") == [
        b"Catania", b"56.441257870158204", b"Palermo", b"190.44242984775784"]
    assert kv("TYPE", "g") == "zset"
    assert kv("GEOADD", "g", 200, 100, "x") == Error(
        "ERR invalid longitude,latitude pair 200.000000,100.000000")
    assert kv("GEOSEARCH", "g", "FROMLONLAT", 1, 2, "ASC", "ASC") == Error(
        "ERR exactly one of BYRADIUS and BYBOX can be specified for geosearch")


def test_large_sets_search_by_cells_like_a_full_scan(kv: Driver) -> None:
    """A set of 2000 members is searched through geohash cell ranges; it must find exactly
    what testing every member finds."""
    rng = random.Random(7)
    points = [(rng.uniform(-10, 30), rng.uniform(35, 60)) for _ in range(2000)]
    kv("GEOADD", "big", *[part for i, (x, y) in enumerate(points)
                          for part in (f"{x:.6f}", f"{y:.6f}", f"p{i}")])
    scores = {f"p{i}".encode(): float(kv("ZSCORE", "big", f"p{i}"))  # type: ignore[arg-type]
              for i in range(2000)}
    for radius_km in (1.0, 50.0, 300.0, 1500.0):
        for center in ((5.0, 45.0), (-9.0, 36.0), (29.0, 59.0), (12.3456, 50.0)):
            found = kv("GEOSEARCH", "big", "FROMLONLAT", *center, "BYRADIUS", radius_km, "km",
                       "ASC")
            expected = sorted(
                (distance(*center, *decode(score)), member) for member, score in scores.items()
                if distance(*center, *decode(score)) <= radius_km * 1000)
            assert found == [member for _, member in expected], (radius_km, center)
            box = kv("GEOSEARCH", "big", "FROMLONLAT", *center, "BYBOX", radius_km,
                     radius_km / 2, "km", "ASC")
            inside = [member for member, score in scores.items()
                      if lat_distance(decode(score)[1], center[1]) <= radius_km * 250
                      and distance(decode(score)[0], decode(score)[1], center[0],
                                   decode(score)[1]) <= radius_km * 500]
            assert isinstance(box, list) and sorted(box) == sorted(inside), (radius_km, center)


def test_georadius_store_keys_are_declared() -> None:
    assert command_keys(b"GEORADIUS", [b"src", b"1", b"2", b"3", b"km", b"STORE", b"d"]) == [
        b"src", b"d"]
    assert command_keys(b"GEORADIUSBYMEMBER", [b"src", b"m", b"3", b"km", b"storedist",
                                               b"d2"]) == [b"src", b"d2"]
    assert command_keys(b"GEORADIUS_RO", [b"src", b"1", b"2", b"3", b"km"]) == [b"src"]
    assert command_keys(b"GEOSEARCHSTORE", [b"d", b"src", b"FROMMEMBER", b"m"]) == [
        b"d", b"src"]


CORNER_CASES = """
geoadd g 13.361389 38.115556 Palermo 15.087269 37.502669 Catania
geoadd g 2.3522 48.8566 Paris -0.1276 51.5072 London 139.6917 35.6895 Tokyo -73.935242 40.730610 NY -180 -85.05112878 corner2 0 0 origin
geopos g Palermo nope Catania corner2 origin
geodist g Palermo Catania mi
geodist g Paris London ft
geodist g Paris nope
geodist g Paris London parsec
geodist g Paris London km x
geohash g Palermo Catania Paris corner2 origin nope
geosearch g fromlonlat 15 37 byradius 200 km asc withcoord withdist withhash
geosearch g frommember Paris bybox 2000 1000 km asc withdist
geosearch g fromlonlat 0 0 byradius 0 m asc withdist
geosearch g fromlonlat 15 37 byradius 5000 km count 3 desc
georadius g 15 37 200 km storedist dst withdist
georadius_ro g 15 37 200 km store dst
georadiusbymember g nope 300 km
georadiusbymember_ro g Palermo 300 km desc
geosearchstore dst g fromlonlat 15 37 byradius 200 km storedist
zrange dst 0 -1 withscores
geosearchstore dst g fromlonlat 15 37 byradius 1 m
geosearchstore dst nokey fromlonlat 15 37 byradius 200 km
geosearch nokey frommember x byradius 200 km
geosearch g frommember nope byradius 1 km withdist store x
georadiusbymember nokey m -1 km
georadius g 1 2 1 km storedist x foo
geosearch g fromlonlat 1 2 byradius 2 km any
geosearch g fromlonlat 1 2 bybox 1 x km
geosearch g fromlonlat 1 2 bybox -1 1 km
geosearch g fromlonlat 200 2 byradius 1 km
geosearch g fromlonlat 15 37 byradius 200 km count 0
geosearch g frommember Paris fromlonlat 1 2 byradius 2 km
geoadd g x 1 y
geoadd g nx xx 1 1 y
geoadd g xx ch 1 1 Paris 2 2 newone
geoadd s2 1 1
"""


@needs_redis
def test_geo_corner_cases_against_redis(redis_server: Any) -> None:
    pair = Pair(redis_server)
    for line in CORNER_CASES.strip().splitlines():
        pair.check([part.encode() for part in line.split(" ")], "corner case")


def _coordinate(rng: random.Random, low: float, high: float) -> bytes:
    return b"%.6f" % rng.uniform(low, high)


def random_geo_command(rng: random.Random, members: int) -> list[bytes]:
    key = rng.choice([b"g1", b"g1", b"g2", b"none"])
    member = b"m%d" % rng.randrange(members)
    kind = rng.randrange(8)
    if kind == 0:
        triples: list[bytes] = []
        for _ in range(rng.randrange(1, 6)):
            triples += [_coordinate(rng, -20, 40), _coordinate(rng, 30, 65),
                        b"m%d" % rng.randrange(members)]
        return [b"GEOADD", key, *triples]
    if kind == 1:
        return [b"GEODIST", key, member, b"m%d" % rng.randrange(members),
                rng.choice([b"m", b"km", b"mi", b"ft"])]
    if kind == 2:
        return [rng.choice([b"GEOPOS", b"GEOHASH"]), key, member, b"nope"]
    # No ASC/DESC too: Redis then answers in the order it finds members (its cells' order).
    options = rng.choice([[b"ASC"], [b"DESC"], []])
    for flag in (b"WITHDIST", b"WITHHASH", b"WITHCOORD"):
        if rng.random() < 0.4:
            options.append(flag)
    if rng.random() < 0.3:
        options += [b"COUNT", rng.choice([b"1", b"3", b"20"])]
        if rng.random() < 0.4:
            options.append(b"ANY")  # the first COUNT members found, in Redis's cell order
    rng.shuffle(options)
    unit = rng.choice([b"km", b"m", b"mi"])
    size = rng.choice([b"1", b"30", b"200", b"800", b"3000"])
    if unit == b"m":
        size += b"000"
    center = [_coordinate(rng, -20, 40), _coordinate(rng, 30, 65)]
    if kind == 3:
        return [b"GEORADIUS", key, *center, size, unit, *options]
    if kind == 4:
        return [b"GEORADIUSBYMEMBER", key, member, size, unit, *options]
    origin = [b"FROMMEMBER", member] if rng.random() < 0.4 else [b"FROMLONLAT", *center]
    shape = [b"BYRADIUS", size, unit] if rng.random() < 0.5 else [
        b"BYBOX", size, rng.choice([b"1", b"100", b"900"]) + (b"000" if unit == b"m" else b""),
        unit]
    if kind == 5:
        plain = [option for option in options if not option.startswith(b"WITH")]
        extra = [b"STOREDIST"] if rng.random() < 0.5 else []
        return [b"GEOSEARCHSTORE", b"dst", key, *origin, *shape, *plain, *extra]
    return [b"GEOSEARCH", key, *origin, *shape, *options]


@needs_redis
@pytest.mark.parametrize("members", [40, 600])
def test_random_geo_sequences_against_redis(redis_server: Any, members: int) -> None:
    pair = Pair(redis_server)
    rng = random.Random(members)
    for _ in range(members // 4 if members > 100 else 5):  # fill: 600 members use cell ranges
        batch: list[bytes] = []
        for _ in range(5):
            batch += [_coordinate(rng, -20, 40), _coordinate(rng, 30, 65),
                      b"m%d" % rng.randrange(members)]
        pair.check([b"GEOADD", b"g1", *batch], "fill")
    for step in range(700):
        command = random_geo_command(rng, members)
        pair.check(command, f"step {step}")
        if command[0] == b"GEOSEARCHSTORE":
            pair.check([b"ZRANGE", b"dst", b"0", b"-1", b"WITHSCORES"], f"step {step} store")


@needs_redis
def test_search_order_matches_redis_worldwide(redis_server: Any) -> None:
    """Redis's unsorted order (its geohash cells' order), ANY's early stop and the sorted
    orders, over the whole globe, radii up to 20,000 km and boxes near the poles."""
    pair = Pair(redis_server)
    rng = random.Random(13)
    for members in (5, 60, 400):
        pair.check([b"DEL", b"w"], "reset")
        batch: list[bytes] = []
        for index in range(members):
            batch += [_coordinate(rng, -180, 180), _coordinate(rng, -85, 85), b"m%d" % index]
        pair.check([b"GEOADD", b"w", *batch], "fill")
        for step in range(150):
            unit = rng.choice([b"km", b"mi"])
            size = rng.choice([b"1", b"200", b"3000", b"9000", b"20000"])
            options = rng.choice([[b"ASC"], [b"DESC"], []])
            if rng.random() < 0.5:
                options += [b"COUNT", rng.choice([b"1", b"3", b"20"])]
                if rng.random() < 0.5:
                    options.append(b"ANY")
            center = [_coordinate(rng, -180, 180), _coordinate(rng, -85, 85)]
            shape = [b"BYRADIUS", size, unit] if rng.random() < 0.5 else [
                b"BYBOX", size, rng.choice([b"1", b"900", b"5000"]), unit]
            pair.check([b"GEOSEARCH", b"w", b"FROMLONLAT", *center, *shape, *options],
                       f"{members} members, step {step}")
