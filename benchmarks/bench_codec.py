"""The peer codec before and after msgspec (issue 15, lever 3), interleaved in one process.

    .venv/bin/python benchmarks/bench_codec.py [--rounds 7]

"before" is what the codec did until msgspec: msgpack-python packs the message arrays, and the
checked path (`codec._decode_checked`, the old decoder) decodes; "after" is `encode_batch` and
`FrameDecoder`'s decode (`codec._decode_body`: transport/wire.py's msgspec hot path). Each
round times every case both ways (best of 5 repeats); the report gives the median over rounds
in microseconds per batch and the speed-up, with the load average.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import timeit

import msgpack  # type: ignore[import-untyped]
from bench_ratios import higher

import phalanx.transport.codec as codec
from phalanx.raft.messages import AppendEntries, AppendEntriesResponse, Heartbeat, Message
from phalanx.raft.types import Entry, GroupId, Index, NodeId, Term

_PACKER = msgpack.Packer(use_bin_type=True, autoreset=True)


def _old_encode(batch: list[tuple[GroupId, Message]]) -> bytes:
    arrays = []
    for group_id, message in batch:
        code, encode = codec._ENCODERS[type(message)]
        arrays.append(encode(code, group_id, message))
    body: bytes = _PACKER.pack(arrays)
    return len(body).to_bytes(4, "big") + body


def _cases() -> dict[str, list[tuple[GroupId, Message]]]:
    def ae(entries: int) -> AppendEntries:
        return AppendEntries(
            source=NodeId("n1"), target=NodeId("n2"), term=Term(3), prev_log_index=Index(100),
            prev_log_term=Term(3), commit=Index(99),
            entries=tuple(Entry(term=Term(3), index=Index(101 + i), data=b"x" * 40)
                          for i in range(entries)))
    hb = Heartbeat(source=NodeId("n1"), target=NodeId("n2"), term=Term(3), commit=Index(99),
                   round=7)
    aer = AppendEntriesResponse(source=NodeId("n2"), target=NodeId("n1"), term=Term(3),
                                success=True, index=Index(101))
    return {
        "AppendEntries, 1 entry": [(GroupId(1), ae(1))],
        "AppendEntries, 32 entries": [(GroupId(1), ae(32))],
        "AppendEntriesResponse": [(GroupId(1), aer)],
        "Heartbeat": [(GroupId(1), hb)],
        "16 groups: AE(1) + Heartbeat each": [(GroupId(g), m) for g in range(16)
                                              for m in (ae(1), hb)],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--number", type=int, default=2000)
    options = parser.parse_args()
    cases = _cases()
    results: dict[tuple[str, str], list[float]] = {}
    load_before = os.getloadavg()[0]
    for _ in range(options.rounds):
        for name, batch in cases.items():
            frame = codec.encode_batch(batch)
            assert frame == _old_encode(batch)  # the same bytes both ways
            body = bytearray(frame[4:])
            assert codec._decode_body(body, 65_536) == codec._decode_checked(body, 65_536)
            timers = {
                ("encode", "before"): lambda batch=batch: _old_encode(batch),
                ("encode", "after"): lambda batch=batch: codec.encode_batch(batch),
                ("decode", "before"): lambda body=body: codec._decode_checked(body, 65_536),
                ("decode", "after"): lambda body=body: codec._decode_body(body, 65_536),
            }
            for (what, side), function in timers.items():
                best = min(timeit.repeat(function, number=options.number, repeat=5))
                results.setdefault((f"{name} {what}", side), []).append(
                    best / options.number * 1e6)
    print(f"load average {load_before:.1f} -> {os.getloadavg()[0]:.1f}; {options.rounds} rounds, "
          "best of 5 x {options.number} per round, median over rounds\n".replace(
              "{options.number}", str(options.number)))
    print("| batch | before us | after us | speed-up |")
    print("|---|---|---|---|")
    for name in cases:
        for what in ("encode", "decode"):
            before = statistics.median(results[(f"{name} {what}", "before")])
            after = statistics.median(results[(f"{name} {what}", "after")])
            print(f"| {name} {what} | {before:.2f} | {after:.2f} | {higher(before / after)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
