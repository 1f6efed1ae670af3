"""The geo commands: GEOADD, GEOPOS, GEODIST, GEOHASH, GEOSEARCH, GEOSEARCHSTORE, GEORADIUS,
GEORADIUSBYMEMBER and their _RO forms, on sorted sets whose scores are 52-bit geohashes.

Rules of this module:
- A geo set is an ordinary sorted set (TYPE zset; every Z command works on it). A position is
  stored as Redis stores it (https://redis.io/commands/geoadd/): longitude in [-180, 180] and
  latitude in [-85.05112878, 85.05112878] each scaled to 26 bits, interleaved (latitude bits
  at even positions, longitude at odd), the 52-bit integer being the score. A position read
  back is the centre of its cell, as in Redis.
- Distances use Redis's haversine with its earth radius (6372797.560856 m) and its float
  operations in the same order, so replies match redis-server 7.0 byte for byte: coordinates
  as `%.17Lf` with trailing zeros removed, distances as `%.4f`.
- Searches follow Redis 7.0's georadius.c and geohash_helper.c step by step, so the same
  members come back IN THE SAME ORDER: the geohash step estimated from the radius
  (geohashEstimateStepsByRadius), decreased once when a neighbour cell does not reach the
  bounding box, the neighbours the box does not touch dropped (geohashCalculateAreasByShape
  WGS84); then the centre cell and its neighbours in Redis's order (centre, N, S, E, W, NE,
  NW, SE, SW; a cell equal to the previous one skipped), each cell's members in score order,
  each kept or dropped by Redis's exact distance test. ANY stops at COUNT members found; ASC
  / DESC (and COUNT without ANY, which implies ASC) sort by distance, ties in found order
  (glibc's qsort is a stable merge sort); no ASC/DESC leaves the found order, as Redis.
- Each command is a `Handler` (keyspace, args, now) -> Reply, registered in `COMMANDS`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

from phalanx.kv.commands.zsets import read_zset, store_zset, zadd_pairs
from phalanx.kv.keyspace import Keyspace
from phalanx.kv.numbers import format_long_double, parse_int
from phalanx.kv.replies import NOT_FLOAT, NOT_INTEGER, SYNTAX_ERROR, Error, Reply
from phalanx.kv.spec import Args, CommandSpec
from phalanx.kv.zset import ZSet, parse_score

LAT_MIN, LAT_MAX = -85.05112878, 85.05112878
LON_MIN, LON_MAX = -180.0, 180.0
STEP = 26
EARTH_RADIUS_M = 6372797.560856
_DEG_TO_RAD = math.pi / 180.0
_ALPHABET = b"0123456789bcdefghjkmnpqrstuvwxyz"
_UNITS: dict[bytes, float] = {b"M": 1.0, b"KM": 1000.0, b"FT": 0.3048, b"MI": 1609.34}
_BAD_UNIT = Error("ERR unsupported unit provided. please use M, KM, FT, MI")
_NO_MEMBER = Error("ERR could not decode requested zset member")
_MERCATOR_MAX = 20037726.37
_EVEN = 0x5555555555555555  # latitude bits
_ODD = 0xAAAAAAAAAAAAAAAA  # longitude bits

_SPREAD = [0] * 256
for _byte in range(256):
    for _bit in range(8):
        if _byte >> _bit & 1:
            _SPREAD[_byte] |= 1 << (2 * _bit)


def _spread(value: int) -> int:
    """The bits of a 32-bit value moved to the even positions of a 64-bit one."""
    return (_SPREAD[value & 0xFF] | _SPREAD[value >> 8 & 0xFF] << 16
            | _SPREAD[value >> 16 & 0xFF] << 32 | _SPREAD[value >> 24 & 0xFF] << 48)


def _squash(value: int) -> int:
    """The even bits of a 64-bit value, packed (the inverse of `_spread`)."""
    result = 0
    for bit in range(32):
        result |= (value >> (2 * bit) & 1) << bit
    return result


def encode(longitude: float, latitude: float, lat_min: float = LAT_MIN,
           lat_max: float = LAT_MAX) -> int:
    """The 52-bit geohash of a valid position (lat_min/lat_max: -90/90 for GEOHASH text)."""
    lat_offset = (latitude - lat_min) / (lat_max - lat_min) * float(1 << STEP)
    lon_offset = (longitude - LON_MIN) / (LON_MAX - LON_MIN) * float(1 << STEP)
    return _spread(int(lat_offset) & 0xFFFFFFFF) | _spread(int(lon_offset) & 0xFFFFFFFF) << 1


def decode(score: float) -> tuple[float, float]:
    """The (longitude, latitude) of a geohash score: the centre of its cell, clamped."""
    bits = int(score)
    lat_cell, lon_cell = _squash(bits), _squash(bits >> 1)
    scale = float(1 << STEP)
    lat_low = LAT_MIN + (lat_cell * 1.0 / scale) * (LAT_MAX - LAT_MIN)
    lat_high = LAT_MIN + ((lat_cell + 1) * 1.0 / scale) * (LAT_MAX - LAT_MIN)
    lon_low = LON_MIN + (lon_cell * 1.0 / scale) * (LON_MAX - LON_MIN)
    lon_high = LON_MIN + ((lon_cell + 1) * 1.0 / scale) * (LON_MAX - LON_MIN)
    longitude = min(max((lon_low + lon_high) / 2, LON_MIN), LON_MAX)
    latitude = min(max((lat_low + lat_high) / 2, LAT_MIN), LAT_MAX)
    return longitude, latitude


def lat_distance(lat1: float, lat2: float) -> float:
    """Metres between two latitudes on one meridian (Redis's geohashGetLatDistance)."""
    return EARTH_RADIUS_M * abs(lat2 * _DEG_TO_RAD - lat1 * _DEG_TO_RAD)


def distance(lon1: float, lat1: float, lon2: float, lat2: float) -> float:
    """Metres between two positions: Redis 7.0's haversine (geohashGetDistance)."""
    lon1r, lon2r = lon1 * _DEG_TO_RAD, lon2 * _DEG_TO_RAD
    v = math.sin((lon2r - lon1r) / 2)
    if v == 0.0:
        return lat_distance(lat1, lat2)
    lat1r, lat2r = lat1 * _DEG_TO_RAD, lat2 * _DEG_TO_RAD
    u = math.sin((lat2r - lat1r) / 2)
    a = u * u + math.cos(lat1r) * math.cos(lat2r) * v * v
    return 2.0 * EARTH_RADIUS_M * math.asin(math.sqrt(a))


def format_coordinate(value: float) -> bytes:
    """A coordinate as Redis replies with it (long double `%.17Lf`, zeros stripped)."""
    return format_long_double(Fraction(value))


def format_distance(value: float) -> bytes:
    """A distance as Redis replies with it (`%.4f`)."""
    return b"%.4f" % value


def _position(args: Args) -> tuple[float, float] | Error:
    """A longitude, latitude argument pair, validated as Redis does."""
    longitude, latitude = parse_score(args[0]), parse_score(args[1])
    if longitude is None or latitude is None:
        return NOT_FLOAT
    if not (LON_MIN <= longitude <= LON_MAX and LAT_MIN <= latitude <= LAT_MAX):
        return Error(f"ERR invalid longitude,latitude pair {longitude:f},{latitude:f}")
    return longitude, latitude


# ---------------------------------------------------------------------------- simple commands


def _geoadd(db: Keyspace, args: Args, now: int) -> Reply:
    nx = xx = ch = False
    position = 1
    while position < len(args):
        option = args[position].upper()
        if option == b"NX":
            nx = True
        elif option == b"XX":
            xx = True
        elif option == b"CH":
            ch = True
        else:
            break
        position += 1
    if (len(args) - position) % 3 or (nx and xx):
        return SYNTAX_ERROR
    pairs: list[tuple[float, bytes]] = []
    for index in range(position, len(args), 3):
        found = _position(args[index:index + 2])
        if isinstance(found, Error):
            return found
        pairs.append((float(encode(*found)), args[index + 2]))
    return zadd_pairs(db, args[0], pairs, now, nx, xx, False, False, ch, False)


def _geopos(db: Keyspace, args: Args, now: int) -> Reply:
    zset = read_zset(db, args[0], now)
    if isinstance(zset, Error):
        return zset
    positions: list[Reply] = []
    for member in args[1:]:
        score = None if zset is None else zset.scores.get(member)
        if score is None:
            positions.append(None)
        else:
            longitude, latitude = decode(score)
            positions.append([format_coordinate(longitude), format_coordinate(latitude)])
    return positions


def _unit(data: bytes) -> float | Error:
    return _UNITS.get(data.upper(), _BAD_UNIT)


def _geodist(db: Keyspace, args: Args, now: int) -> Reply:
    if len(args) > 4:
        return SYNTAX_ERROR
    unit = _unit(args[3]) if len(args) == 4 else 1.0
    if isinstance(unit, Error):
        return unit
    zset = read_zset(db, args[0], now)
    if zset is None or isinstance(zset, Error):
        return zset
    first, second = zset.scores.get(args[1]), zset.scores.get(args[2])
    if first is None or second is None:
        return None
    return format_distance(distance(*decode(first), *decode(second)) / unit)


def _geohash(db: Keyspace, args: Args, now: int) -> Reply:
    zset = read_zset(db, args[0], now)
    if isinstance(zset, Error):
        return zset
    hashes: list[Reply] = []
    for member in args[1:]:
        score = None if zset is None else zset.scores.get(member)
        if score is None:
            hashes.append(None)
            continue
        bits = encode(*decode(score), -90.0, 90.0)
        text = bytes(_ALPHABET[bits >> (52 - (index + 1) * 5) & 0x1F] for index in range(10))
        hashes.append(text + b"0")
    return hashes


# ---------------------------------------------------------------------------- searches


@dataclass(slots=True)
class _Search:
    """One parsed GEOSEARCH / GEORADIUS request."""

    longitude: float = 0.0
    latitude: float = 0.0
    radius: float | None = None  # in `unit`s; None for a box search
    width: float = 0.0
    height: float = 0.0
    unit: float = 1.0
    withdist: bool = False
    withhash: bool = False
    withcoord: bool = False
    descending: bool = False
    #: ASC or DESC given (COUNT without ANY implies ASC); ANY: stop at COUNT found.
    sort: bool = False
    any: bool = False
    count: int = 0
    store: bytes | None = None
    storedist: bool = False


def _distance_arg(args: Args, what: str) -> tuple[float, float] | Error:
    """A radius and its unit (Redis's extractDistanceOrReply)."""
    value = parse_score(args[0])
    if value is None:
        return Error(f"ERR need numeric {what}")
    if value < 0:
        return Error("ERR radius cannot be negative")
    unit = _unit(args[1])
    if isinstance(unit, Error):
        return unit
    return value, unit


def _member_position(zset: ZSet, member: bytes) -> tuple[float, float] | Error:
    score = zset.scores.get(member)
    return _NO_MEMBER if score is None else decode(score)


def _parse_search(zset: ZSet | None, args: Args, kind: str, store: bool) -> _Search | Error:
    """Redis 7.0's georadiusGeneric argument parsing. `kind`: "radius" (GEORADIUS), "member"
    (GEORADIUSBYMEMBER) or "search" (GEOSEARCH[STORE], args from the source key)."""
    search = _Search()
    if kind == "radius":
        found = _position(args[1:3])
        if isinstance(found, Error):
            return found
        search.longitude, search.latitude = found
        radius = _distance_arg(args[3:5], "radius")
        if isinstance(radius, Error):
            return radius
        search.radius, search.unit = radius
        position = 5
    elif kind == "member":
        position = 4
        if zset is not None:
            found = _member_position(zset, args[1])
            if isinstance(found, Error):
                return found
            search.longitude, search.latitude = found
            radius = _distance_arg(args[2:4], "radius")
            if isinstance(radius, Error):
                return radius
            search.radius, search.unit = radius
    else:
        position = 1
    anything = False
    from_member = from_position = by_radius = by_box = False
    while position < len(args):
        option = args[position].upper()
        left = len(args) - position - 1
        if option == b"WITHDIST":
            search.withdist = True
        elif option == b"WITHHASH":
            search.withhash = True
        elif option == b"WITHCOORD":
            search.withcoord = True
        elif option == b"ANY":
            anything = True
        elif option == b"ASC":
            search.descending, search.sort = False, True
        elif option == b"DESC":
            search.descending, search.sort = True, True
        elif option == b"COUNT" and left >= 1:
            count = parse_int(args[position + 1])
            if count is None:
                return NOT_INTEGER
            if count <= 0:
                return Error("ERR COUNT must be > 0")
            search.count = count
            position += 1
        elif kind != "search" and store and option in (b"STORE", b"STOREDIST") and left >= 1:
            search.store = args[position + 1]
            search.storedist = option == b"STOREDIST"
            position += 1
        elif kind == "search" and store and option == b"STOREDIST":
            search.storedist = True
        elif kind == "search" and option == b"FROMMEMBER" and left >= 1 and not from_position:
            if zset is not None:
                found = _member_position(zset, args[position + 1])
                if isinstance(found, Error):
                    return found
                search.longitude, search.latitude = found
            from_member = True
            position += 1
        elif kind == "search" and option == b"FROMLONLAT" and left >= 2 and not from_member:
            found = _position(args[position + 1:position + 3])
            if isinstance(found, Error):
                return found
            search.longitude, search.latitude = found
            from_position = True
            position += 2
        elif kind == "search" and option == b"BYRADIUS" and left >= 2 and not by_box:
            radius = _distance_arg(args[position + 1:position + 3], "radius")
            if isinstance(radius, Error):
                return radius
            search.radius, search.unit = radius
            by_radius = True
            position += 2
        elif kind == "search" and option == b"BYBOX" and left >= 3 and not by_radius:
            width, height = parse_score(args[position + 1]), parse_score(args[position + 2])
            if width is None:
                return Error("ERR need numeric width")
            if height is None:
                return Error("ERR need numeric height")
            if width < 0 or height < 0:
                return Error("ERR height or width cannot be negative")
            unit = _unit(args[position + 3])
            if isinstance(unit, Error):
                return unit
            search.width, search.height, search.unit = width, height, unit
            by_box = True
            position += 3
        else:
            return SYNTAX_ERROR
        position += 1
    if (search.store is not None or (kind == "search" and store)) and (
            search.withdist or search.withhash or search.withcoord):
        name = "GEOSEARCHSTORE" if kind == "search" else "STORE option in GEORADIUS"
        return Error(f"ERR {name} is not compatible with WITHDIST, WITHHASH and WITHCOORD "
                     "options")
    if kind == "search" and not (from_member or from_position):
        return Error(f"ERR exactly one of FROMMEMBER or FROMLONLAT can be specified for "
                     f"{'geosearchstore' if store else 'geosearch'}")
    if kind == "search" and not (by_radius or by_box):
        return Error(f"ERR exactly one of BYRADIUS and BYBOX can be specified for "
                     f"{'geosearchstore' if store else 'geosearch'}")
    if anything and not search.count:
        return Error("ERR the ANY argument requires COUNT argument")
    search.any = anything
    if search.count and not anything:
        search.sort = True  # COUNT needs the nearest N: ASC unless DESC (georadiusGeneric)
    return search


def _steps_for(radius_m: float, latitude: float) -> int:
    """geohashEstimateStepsByRadius (geohash_helper.c)."""
    if radius_m == 0:
        return STEP
    step = 1
    while radius_m < _MERCATOR_MAX:
        radius_m *= 2
        step += 1
    step -= 2  # make sure the range is included in most of the base cases
    if latitude > 66 or latitude < -66:
        step -= 1
        if latitude > 80 or latitude < -80:
            step -= 1
    return min(max(step, 1), STEP)


def _cell(longitude: float, latitude: float, step: int) -> int:
    """geohashEncode at `step` bits per coordinate."""
    lat_offset = (latitude - LAT_MIN) / (LAT_MAX - LAT_MIN) * float(1 << step)
    lon_offset = (longitude - LON_MIN) / (LON_MAX - LON_MIN) * float(1 << step)
    return _spread(int(lat_offset) & 0xFFFFFFFF) | _spread(int(lon_offset) & 0xFFFFFFFF) << 1


def _area(bits: int, step: int) -> tuple[float, float, float, float]:
    """geohashDecode: (lon min, lon max, lat min, lat max) of a cell."""
    lat_cell, lon_cell = _squash(bits), _squash(bits >> 1)
    scale = float(1 << step)
    return (LON_MIN + (lon_cell * 1.0 / scale) * (LON_MAX - LON_MIN),
            LON_MIN + ((lon_cell + 1) * 1.0 / scale) * (LON_MAX - LON_MIN),
            LAT_MIN + (lat_cell * 1.0 / scale) * (LAT_MAX - LAT_MIN),
            LAT_MIN + ((lat_cell + 1) * 1.0 / scale) * (LAT_MAX - LAT_MIN))


def _move(bits: int, step: int, dx: int, dy: int) -> int:
    """geohash_move_x / geohash_move_y (geohash.c): the neighbouring cell, wrapping."""
    mask = 64 - step * 2
    if dx:
        x, y = bits & _ODD, bits & _EVEN
        zz = _EVEN >> mask
        x = x + (zz + 1) if dx > 0 else (x | zz) - (zz + 1)
        bits = (x & (_ODD >> mask) & 0xFFFFFFFFFFFFFFFF) | y
    if dy:
        x, y = bits & _ODD, bits & _EVEN
        zz = _ODD >> mask
        y = y + (zz + 1) if dy > 0 else (y | zz) - (zz + 1)
        bits = x | (y & (_EVEN >> mask) & 0xFFFFFFFFFFFFFFFF)
    return bits


def _boxes(search: _Search) -> list[tuple[int, int] | None]:
    """geohashCalculateAreasByShapeWGS84: the centre cell and its 8 neighbours (N, S, E, W,
    NE, NW, SE, SW) as (bits, step), None for a neighbour the search cannot reach."""
    x, y = search.longitude, search.latitude
    if search.radius is not None:
        height = width = search.radius * search.unit
        radius_m = search.radius * search.unit
    else:
        height, width = search.height * search.unit / 2, search.width * search.unit / 2
        radius_m = math.sqrt((search.width / 2) ** 2 + (search.height / 2) ** 2) * search.unit
    lat_delta = height / EARTH_RADIUS_M / _DEG_TO_RAD
    lon_delta_top = width / EARTH_RADIUS_M / math.cos((y + lat_delta) * _DEG_TO_RAD) \
        / _DEG_TO_RAD
    lon_delta_bottom = width / EARTH_RADIUS_M / math.cos((y - lat_delta) * _DEG_TO_RAD) \
        / _DEG_TO_RAD
    southern = y < 0
    min_lon = x - (lon_delta_bottom if southern else lon_delta_top)
    max_lon = x + (lon_delta_bottom if southern else lon_delta_top)
    min_lat, max_lat = y - lat_delta, y + lat_delta
    step = _steps_for(radius_m, y)

    def around(step: int) -> tuple[int, list[int]]:
        centre = _cell(x, y, step)
        return centre, [_move(centre, step, dx, dy) for dx, dy in (
            (0, 1), (0, -1), (1, 0), (-1, 0), (1, 1), (-1, 1), (1, -1), (-1, -1))]

    centre, (north, south, east, west, *_) = around(step)
    if step > 1 and (_area(north, step)[3] < max_lat or _area(south, step)[2] > min_lat
                     or _area(east, step)[1] < max_lon or _area(west, step)[0] > min_lon):
        step -= 1
    centre, neighbours = around(step)
    keep = [True] * 8  # N, S, E, W, NE, NW, SE, SW
    if step >= 2:
        lon_low, lon_high, lat_low, lat_high = _area(centre, step)
        if lat_low < min_lat:
            keep[1] = keep[7] = keep[6] = False  # south, south-west, south-east
        if lat_high > max_lat:
            keep[0] = keep[4] = keep[5] = False  # north, north-east, north-west
        if lon_low < min_lon:
            keep[3] = keep[7] = keep[5] = False  # west, south-west, north-west
        if lon_high > max_lon:
            keep[2] = keep[6] = keep[4] = False  # east, south-east, north-east
    return [(centre, step)] + [(bits, step) if kept else None
                               for bits, kept in zip(neighbours, keep, strict=True)]


def _matches(zset: ZSet, search: _Search) -> list[tuple[float, float, bytes]]:
    """(distance in metres, score, member) of the members inside the search area, in the
    order Redis finds them (membersOfAllNeighbors); with ANY, the first COUNT found."""
    x, y = search.longitude, search.latitude
    if search.radius is not None:
        radius_m = search.radius * search.unit
        half_width = lat_reach = 0.0
    else:
        half_width = search.width * search.unit / 2
        lat_reach = search.height * search.unit / 2
        radius_m = 0.0
    limit = search.count if search.any else 0
    found: list[tuple[float, float, bytes]] = []
    last: tuple[int, int] | None = None
    for box in _boxes(search):
        if box is None or box == last:  # a zero neighbour; the same range as the last one
            continue
        if limit and len(found) >= limit:
            break
        bits, step = box
        shift = 2 * (STEP - step)
        low, high = float(bits << shift), float((bits + 1) << shift)
        first, end = zset.score_span(low, False, high, True)
        for score, member in zset.order.islice(first, end):
            lon, lat = decode(score)
            if search.radius is not None:
                meters = distance(x, y, lon, lat)
                if meters > radius_m:
                    continue
            else:
                if lat_distance(lat, y) > lat_reach:
                    continue
                if distance(lon, lat, x, lat) > half_width:
                    continue
                meters = distance(x, y, lon, lat)
            found.append((meters, score, member))
            if limit and len(found) >= limit:
                break
        last = box
    return found


def _search(db: Keyspace, args: Args, now: int, kind: str, store: bool) -> Reply:
    """GEORADIUS / GEORADIUSBYMEMBER (args from the key) and GEOSEARCH[STORE] (args from the
    source key; `store` with the destination first)."""
    destination = args[0] if kind == "search" and store else None
    source_args = args[1:] if destination is not None else args
    zset = read_zset(db, source_args[0], now)
    if isinstance(zset, Error):
        return zset
    search = _parse_search(zset, source_args, kind, store)
    if isinstance(search, Error):
        return search
    if destination is not None:
        search.store = destination
    if zset is None:
        if search.store is not None:
            store_zset(db, search.store, ZSet(), now)
            return 0
        return []
    found = _matches(zset, search)
    if search.sort:  # by distance only; equal distances keep the found order (stable)
        found.sort(key=lambda item: item[0], reverse=search.descending)
    if search.count:
        found = found[:search.count]
    if search.store is not None:
        result = ZSet()
        for meters, score, member in found:
            result.add(member, meters / search.unit if search.storedist else score)
        store_zset(db, search.store, result, now)
        return len(result)
    plain = not (search.withdist or search.withhash or search.withcoord)
    replies: list[Reply] = []
    for meters, score, member in found:
        if plain:
            replies.append(member)
            continue
        item: list[Reply] = [member]
        if search.withdist:
            item.append(format_distance(meters / search.unit))
        if search.withhash:
            item.append(int(score))
        if search.withcoord:
            longitude, latitude = decode(score)
            item.append([format_coordinate(longitude), format_coordinate(latitude)])
        replies.append(item)
    return replies


def _georadius(db: Keyspace, args: Args, now: int) -> Reply:
    return _search(db, args, now, "radius", True)


def _georadius_ro(db: Keyspace, args: Args, now: int) -> Reply:
    return _search(db, args, now, "radius", False)


def _georadiusbymember(db: Keyspace, args: Args, now: int) -> Reply:
    return _search(db, args, now, "member", True)


def _georadiusbymember_ro(db: Keyspace, args: Args, now: int) -> Reply:
    return _search(db, args, now, "member", False)


def _geosearch(db: Keyspace, args: Args, now: int) -> Reply:
    return _search(db, args, now, "search", False)


def _geosearchstore(db: Keyspace, args: Args, now: int) -> Reply:
    return _search(db, args, now, "search", True)


_READ = ("@read", "@geo", "@slow")
_WRITE = ("@write", "@geo", "@slow")
_RO = ("readonly",)
_STORE = ("write", "denyoom", "movablekeys")

COMMANDS: tuple[CommandSpec, ...] = (
    # name, arity, flags, first/last/step key, ACL categories (Redis 7.0's COMMAND INFO), handler
    CommandSpec("geoadd", -5, ("write", "denyoom"), 1, 1, 1, _WRITE, _geoadd),
    CommandSpec("geopos", -2, _RO, 1, 1, 1, _READ, _geopos),
    CommandSpec("geodist", -4, _RO, 1, 1, 1, _READ, _geodist),
    CommandSpec("geohash", -2, _RO, 1, 1, 1, _READ, _geohash),
    CommandSpec("geosearch", -7, _RO, 1, 1, 1, _READ, _geosearch),
    CommandSpec("geosearchstore", -8, ("write", "denyoom"), 1, 2, 1, _WRITE, _geosearchstore),
    CommandSpec("georadius", -6, _STORE, 1, 1, 1, _WRITE, _georadius),
    CommandSpec("georadiusbymember", -5, _STORE, 1, 1, 1, _WRITE, _georadiusbymember),
    CommandSpec("georadius_ro", -6, _RO, 1, 1, 1, _READ, _georadius_ro),
    CommandSpec("georadiusbymember_ro", -5, _RO, 1, 1, 1, _READ, _georadiusbymember_ro),
)
"""This family's rows of the command table."""
