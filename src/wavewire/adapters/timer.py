"""The one timer task of an anyio driver: sleeps until the core's next deadline, then fires.

The flush choke point calls ``arm(protocol.next_deadline())`` after every core call; a deadline
that moved (earlier or later: a send that starts an audio stream, a chunk sent) wakes the sleep,
which re-reads it. ``fire(now)`` gets a time never before the deadline it was armed for: the
backend's timer may fire a clock tick early, and the core would do nothing at that time while
we spun.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable

import anyio

__all__ = ["DeadlineTimer", "bound_clock"]


def bound_clock() -> Callable[[], float]:
    """``anyio.current_time`` with the backend looked up once, for the hot paths: the running
    asyncio loop's ``time`` or ``trio.current_time`` (the very clocks anyio reads), instead of
    a backend look-up through sniffio on every call. Call it inside the loop it will serve;
    elsewhere it is ``anyio.current_time`` itself."""
    try:
        return asyncio.get_running_loop().time
    except RuntimeError:
        pass
    try:
        import trio

        trio.current_time()
    except (ImportError, RuntimeError):
        return anyio.current_time
    return trio.current_time


class DeadlineTimer:
    def __init__(self, fire: Callable[[float], None]) -> None:
        self._fire = fire
        self._armed: float | None = None
        self._wake = anyio.Event()

    def arm(self, deadline: float | None) -> None:
        """The deadline to sleep until (None: none); cheap when it did not change."""
        if deadline != self._armed:
            self._armed = deadline
            self._wake.set()

    async def run(self) -> None:
        """Sleep and fire until cancelled."""
        while True:
            self._wake = anyio.Event()
            deadline = self._armed
            with anyio.CancelScope(deadline=math.inf if deadline is None else deadline) as scope:
                await self._wake.wait()
            now = anyio.current_time()
            if deadline is not None and (scope.cancelled_caught or now >= deadline):
                self._armed = None  # whatever fire() flushes re-arms it
                self._fire(max(now, deadline))
