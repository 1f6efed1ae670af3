"""The running event loop, asked for once instead of once per request (issue 15, lever 6).

Python 3.11's `asyncio.get_running_loop()` (and what calls it: `asyncio.Event.wait`,
`asyncio.ensure_future` of a coroutine, a `Future()` made without a loop) makes a `getpid()`
system call every time, to notice a fork. On the benchmark VM that is ~2 us a call, and the
request paths called it 2-4 times per SET or GET (`benchmarks/syscalls.py` counts them).

Rules of this file:
- `LoopCache.get()` answers the loop it saw last while that loop is open, else asks asyncio
  again: an object reused under a new loop (a test's second `asyncio.run`) gets the new one
  once the old one is closed, which `asyncio.run` always does.
"""

from __future__ import annotations

import asyncio


class LoopCache:
    """The running loop of whoever owns this, asked from asyncio once per loop."""

    __slots__ = ("_loop",)

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None

    def get(self) -> asyncio.AbstractEventLoop:
        loop = self._loop
        if loop is None or loop.is_closed():
            loop = self._loop = asyncio.get_running_loop()
        return loop


class Wake:
    """`asyncio.Event`'s set / clear / is_set / wait for one waiting task (a Ready loop), with
    the loop asked once: `Event.wait` asks asyncio for the loop (a getpid()) at every wait."""

    __slots__ = ("_flag", "_loops", "_waiter")

    def __init__(self, loops: LoopCache) -> None:
        self._loops = loops
        self._flag = False
        self._waiter: asyncio.Future[None] | None = None

    def set(self) -> None:
        if not self._flag:
            self._flag = True
            waiter = self._waiter
            if waiter is not None and not waiter.done():
                waiter.set_result(None)

    def clear(self) -> None:
        self._flag = False

    def is_set(self) -> bool:
        return self._flag

    async def wait(self) -> bool:
        if self._flag:
            return True
        waiter = self._waiter = self._loops.get().create_future()
        try:
            await waiter
        finally:
            self._waiter = None
        return True
