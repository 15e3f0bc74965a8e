"""The one timer task of an anyio driver: sleeps until the core's next deadline, then fires.

The flush choke point calls ``arm(protocol.next_deadline())`` after every core call; a deadline
that moved (earlier or later: a send that starts an audio stream, a chunk sent) becomes the
sleeping task's cancel scope's deadline, without waking it (one cancel scope per fire, not per
move). ``fire(now)`` gets a time never before the deadline it was armed for: the
backend's timer may fire a clock tick early, and the core would do nothing at that time while
we spun.

``DeadlineTimer(fire, on_asyncio_loop=True)`` (the anyio server), created on a running asyncio
loop, arms one ``loop.call_at`` handle instead: a deadline that moves costs a handle, not a
wake of the task and a cancel scope and an event (a handshake moves it two or three times).
``run`` then only waits, re-raises what ``fire`` raised (as the task would have) and cancels
the handle when it ends; nothing fires after that.
"""

from __future__ import annotations

import asyncio
import contextlib
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
    def __init__(self, fire: Callable[[float], None], *, on_asyncio_loop: bool = False) -> None:
        self._fire = fire
        self._armed: float | None = None
        self._wake = anyio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        if on_asyncio_loop:
            with contextlib.suppress(RuntimeError):
                self._loop = asyncio.get_running_loop()
        self._handle: asyncio.TimerHandle | None = None
        self._error: BaseException | None = None
        self._stopped = False
        # The task's sleep (without call_at), whose deadline arm() moves.
        self._scope: anyio.CancelScope | None = None

    def arm(self, deadline: float | None) -> None:
        """The deadline to sleep until (None: none); cheap when it did not change."""
        if deadline != self._armed:
            self._armed = deadline
            loop = self._loop
            if loop is None:
                # The sleeping task's scope takes the new deadline: no wake-up for a move.
                if self._scope is not None:
                    self._scope.deadline = math.inf if deadline is None else deadline
                return
            if self._handle is not None:
                self._handle.cancel()
                self._handle = None
            if deadline is not None and not self._stopped:
                self._handle = loop.call_at(deadline, self._due)

    def _due(self) -> None:
        assert self._loop is not None, "a call_at handle"
        self._handle = None
        deadline = self._armed
        if deadline is None or self._error is not None:
            return
        self._armed = None  # whatever fire() flushes re-arms it
        try:
            self._fire(max(self._loop.time(), deadline))
        except Exception as exc:  # the task's run() raises it, as a sleeping task would
            self._error = exc
            self._wake.set()

    async def run(self) -> None:
        """Sleep and fire until cancelled."""
        if self._loop is not None:
            try:
                await self._wake.wait()
                assert self._error is not None, "woken only by a failed fire()"
                raise self._error
            finally:
                self._stopped = True
                if self._handle is not None:
                    self._handle.cancel()
                    self._handle = None
        while True:
            deadline = self._armed
            with anyio.CancelScope(deadline=math.inf if deadline is None else deadline) as scope:
                self._scope = scope
                try:
                    await anyio.sleep_forever()
                finally:
                    self._scope = None
            now = anyio.current_time()
            deadline = self._armed  # the scope's, moved by arm() while it slept
            if deadline is not None and (scope.cancelled_caught or now >= deadline):
                self._armed = None  # whatever fire() flushes re-arms it
                self._fire(max(now, deadline))
