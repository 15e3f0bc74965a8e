"""One connection's outgoing bytes: queued in order, written by one task, bounded in time.

The flush choke point puts bytes here synchronously; ``run`` is the connection's only writer, so
writes never interleave. ``drop_pending`` discards what is queued and not yet written (a replaced
client's stale audio). A write that makes no progress for ``write_timeout`` seconds (a peer that
stopped reading) fails the connection instead of blocking forever; an abort from the core (drop
and close, nothing to write: a keepalive or close timeout) also cancels a write in progress.
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Callable

import anyio
import anyio.abc
import anyio.lowlevel

from wavewire.core.protocol.connection import Transmit

__all__ = ["Outbox"]

#: Exceptions that mean the socket is unusable, mapped here at the backend boundary.
WRITE_ERRORS = (TimeoutError, anyio.BrokenResourceError, anyio.ClosedResourceError, OSError)


class Outbox:
    def __init__(
        self,
        stream: anyio.abc.ByteStream,
        *,
        high_water: int,
        write_timeout: float | None,
        close_timeout: float | None,
    ) -> None:
        self._stream = stream
        self._high_water = high_water
        self._write_timeout = write_timeout
        self._close_timeout = close_timeout
        self._chunks: deque[bytes] = deque()
        self._queued = 0
        # The first chunk ever queued is the opening-handshake response: drop_pending keeps it
        # until it is written (1 while it waits at the head of _chunks, then 0).
        self._protected = 0
        self._puts = 0
        self._in_flight = 0
        self._wake = anyio.Event()
        self._progress = anyio.Event()
        #: The core said: close the socket once the queue is written.
        self.close_requested = False
        #: The socket is closed (or failed); nothing more is written.
        self.closed = False
        #: A write failed or timed out, or the core aborted (the socket is closed forcefully).
        self.failed = False
        # The write in progress, for abort() to cancel.
        self._send_scope: anyio.CancelScope | None = None
        #: Told ``False`` when pending bytes go over ``high_water``, ``True`` when back under
        #: (the core then holds back pongs owed to a ping flood).
        self.on_writable: Callable[[bool], None] | None = None
        self._over = False

    @property
    def pending(self) -> int:
        """Bytes queued or being written."""
        return self._queued + self._in_flight

    # --- called from the flush choke point (synchronous) -------------------------------------

    def apply(self, transmit: Transmit) -> None:
        """Carry out one of the core's ``Transmit`` instructions for this connection."""
        if transmit.drop_pending:
            self.drop_pending()
        self.put(transmit.data)
        if transmit.close and transmit.drop_pending and not transmit.data:
            self.abort()  # the core gave up on the peer: do not wait for a stuck write
        elif transmit.close:
            self.request_close()

    def abort(self) -> None:
        """Close at once: cancel a write in progress, write nothing more, close forcefully."""
        self.close_requested = self.failed = True
        self._chunks.clear()
        self._queued = 0
        if self._send_scope is not None:
            self._send_scope.cancel()
        self._wake.set()

    def put(self, data: bytes) -> None:
        if self.closed or not data:
            return
        self._chunks.append(data)
        self._queued += len(data)
        if self._puts == 0:
            self._protected = 1
        self._puts += 1
        self._wake.set()
        self._check_level()

    def drop_pending(self) -> None:
        kept = [self._chunks[0]] if self._protected else []
        self._chunks.clear()
        self._chunks.extend(kept)
        self._queued = sum(len(chunk) for chunk in kept)
        self._signal_progress()
        self._check_level()

    def request_close(self) -> None:
        self.close_requested = True
        self._wake.set()

    # --- awaited by senders ------------------------------------------------------------------

    async def wait_writable(self) -> None:
        """Wait while more than ``high_water`` bytes are pending (send backpressure).

        Always a checkpoint, so that a loop of sends cannot starve the writer."""
        await anyio.lowlevel.checkpoint()
        while not self.closed and self.pending > self._high_water:
            await self._progress.wait()

    # --- the writer task ---------------------------------------------------------------------

    async def run(self, on_failure: Callable[[], None]) -> None:
        """Write until the core asks for the close (or a write fails); then close the socket.

        ``on_failure`` runs at once when a write fails or times out, before the socket is
        aborted, so the core hears of it without waiting for the close."""
        try:
            while True:
                if self._chunks:
                    data = b"".join(self._chunks)
                    self._chunks.clear()
                    self._protected = 0
                    self._queued, self._in_flight = 0, len(data)
                    try:
                        with anyio.CancelScope() as self._send_scope:
                            with anyio.fail_after(self._write_timeout):
                                await self._stream.send(data)
                    except WRITE_ERRORS:
                        self.failed = True
                        self.closed = True
                        on_failure()
                        return
                    finally:
                        self._in_flight = 0
                        self._send_scope = None
                    if self.failed:
                        return  # aborted by the core mid-write: it already knows
                    self._signal_progress()
                    self._check_level()
                elif self.close_requested:
                    return
                else:
                    self._wake = anyio.Event()
                    await self._wake.wait()
        finally:
            self.closed = True
            self._chunks.clear()
            self._queued = 0
            self._signal_progress()
            await self._close_socket()

    async def _close_socket(self) -> None:
        if not self.failed:
            with anyio.move_on_after(self._close_timeout, shield=True):
                with contextlib.suppress(*WRITE_ERRORS):
                    await self._stream.aclose()
                    return
        await anyio.aclose_forcefully(self._stream)

    def _check_level(self) -> None:
        over = self.pending > self._high_water
        if over != self._over and not self.closed:
            self._over = over
            if self.on_writable is not None:
                self.on_writable(not over)

    def _signal_progress(self) -> None:
        self._progress.set()
        self._progress = anyio.Event()
