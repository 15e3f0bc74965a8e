"""One connection's outgoing bytes: queued in order, written by one task, bounded in time.

The flush choke point puts bytes here synchronously; ``run`` is the connection's only writer, so
writes never interleave, and everything queued while a write was in progress leaves with the
next one (one ``send`` per batch). ``drop_pending`` discards what is queued and not yet written
(a replaced client's stale audio). A write that makes no progress for ``write_timeout`` seconds
(a peer that stopped reading) fails the connection instead of blocking forever: the driver's
one ``WriteWatch`` task checks the writes in progress, so a write that does not block costs no
timer or cancel scope of its own. An abort from the core (drop and close, nothing to write: a
keepalive or close timeout) also cancels a write in progress.

On asyncio, over anyio's plain ``SocketStream`` (``AsyncioDirect``), a batch that fits in the
socket is written to asyncio's transport from a ``call_soon`` at the end of the loop pass that
queued it, not by waking the writer task, and with no shielded checkpoint after it (anyio's
``send`` ends with one): the writer task then only waits for a write that blocked (under the
same ``WriteWatch``) and closes the socket. Trio and TLS streams go through ``send``.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import Callable
from typing import Any

import anyio
import anyio.abc
import anyio.lowlevel

from wavewire.core.protocol.connection import Transmit

__all__ = ["AsyncioDirect", "Outbox", "WriteWatch"]

#: Exceptions that mean the socket is unusable, mapped here at the backend boundary.
WRITE_ERRORS = (TimeoutError, anyio.BrokenResourceError, anyio.ClosedResourceError, OSError)

#: ``wait_writable`` calls that find the connection writable between two checkpoints.
DRAIN_YIELD_EVERY = 64


class AsyncioDirect:
    """The asyncio transport under anyio's plain asyncio ``SocketStream``, written and read the
    way its ``send`` and ``receive`` do (same errors), without their checkpoints, and without
    pausing and resuming the transport's reading around every receive (an epoll
    unregister/register each): reading stays on except while the reader holds back
    (``pause_reading``). anyio's private state, so looked up by exact type and attribute names,
    and None (``send``/``receive`` are used) if they differ."""

    __slots__ = ("loop", "protocol", "reading", "stream", "transport")

    def __init__(self, stream: Any, loop: asyncio.AbstractEventLoop) -> None:
        self.stream = stream
        self.transport: asyncio.Transport = stream._transport
        self.protocol: Any = stream._protocol
        self.loop = loop
        #: The transport's reading is on (anyio keeps it off outside ``receive``).
        self.reading = False

    @classmethod
    def of(cls, stream: anyio.abc.ByteStream) -> AsyncioDirect | None:
        backend = sys.modules.get("anyio._backends._asyncio")
        socket_stream = getattr(backend, "SocketStream", None)
        if socket_stream is None or type(stream) is not socket_stream:
            return None
        protocol = getattr(stream, "_protocol", None)
        if not (
            hasattr(stream, "_transport")
            and hasattr(stream, "_closed")
            and hasattr(protocol, "write_event")
            and hasattr(protocol, "exception")
            and hasattr(protocol, "read_event")
            and hasattr(protocol, "read_queue")
            and hasattr(protocol, "is_at_eof")
        ):
            return None
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return None
        return cls(stream, loop)

    def remote_address(self) -> object:
        """The peer's address as anyio's ``SocketAttribute.remote_address`` gives it, from the
        transport's cached ``peername`` (anyio builds every socket attribute to give one)."""
        peer = self.transport.get_extra_info("peername")
        if isinstance(peer, tuple) and len(peer) == 2:
            return peer
        return self.stream.extra(anyio.abc.SocketAttribute.remote_address, None)  # IPv6

    def ready(self) -> bool:
        """A write now would neither fail nor wait behind an earlier one."""
        return (
            not self.stream._closed
            and self.protocol.exception is None
            and not self.transport.is_closing()
            and self.protocol.write_event.is_set()
        )

    def write(self, data: bytes) -> bool:
        """Write (after ``ready()``); True if it all left, False if the rest is buffered."""
        self.transport.write(data)
        # With anyio's buffer limits of 0, anything left buffered paused the protocol.
        return bool(self.protocol.write_event.is_set())

    async def receive(self) -> bytes:
        """What the socket brought, one read at a time, as anyio's ``receive`` returns it
        (``EndOfStream``, ``ClosedResourceError``, ``BrokenResourceError`` when it ends)."""
        protocol = self.protocol
        if not protocol.read_event.is_set():
            if not self.reading:
                self.reading = True
                self.transport.resume_reading()
            if not self.transport.is_closing() and not protocol.is_at_eof:
                await protocol.read_event.wait()
        # No checkpoint when data was already there: it came in an earlier loop pass, and the
        # queue is emptied here one read at a time, so the next receive waits (and yields).
        queue = protocol.read_queue
        if not queue:
            if self.stream._closed:
                raise anyio.ClosedResourceError
            if protocol.exception is not None:
                raise anyio.BrokenResourceError from protocol.exception
            raise anyio.EndOfStream
        data: bytes = queue.popleft()
        if not queue:
            protocol.read_event.clear()
        return data

    def pause_reading(self) -> None:
        """Stop reading the socket while the reader holds back (backpressure)."""
        if self.reading:
            self.reading = False
            self.transport.pause_reading()

    def close(self) -> None:
        """Close as anyio's ``aclose`` does (it aborts the transport), without its checkpoint."""
        self.stream._closed = True
        self.transport.abort()

    async def wait_written(self) -> None:
        """Wait until the buffered rest has left; anyio's errors if the socket went first."""
        await self.protocol.write_event.wait()
        if self.stream._closed:
            raise anyio.ClosedResourceError
        if self.protocol.exception is not None:
            raise anyio.BrokenResourceError from self.protocol.exception


class WriteWatch:
    """Fails every write that has been in progress for ``timeout`` seconds: one task for all
    of a driver's outboxes.

    A write registers when it starts and leaves when it ends (a dict entry, no timer). The task
    sleeps until the oldest write in progress reaches the timeout, fails the writes that did,
    and sleeps again; with no write in progress it waits for the next one. It wakes at most
    about once per ``timeout`` while writes come and go, instead of arming a timer per write.
    """

    def __init__(self, timeout: float, clock: Callable[[], float] = anyio.current_time) -> None:
        """``clock``: ``anyio.current_time``, or the same clock bound once (``bound_clock``)."""
        self.timeout = timeout
        self._clock = clock
        # Writes in progress: the outbox, and when its write started.
        self._writing: dict[Outbox, float] = {}
        self._wake: anyio.Event | None = None

    def started(self, outbox: Outbox) -> None:
        self._writing[outbox] = self._clock()
        if self._wake is not None:  # the task waits for a first write: this one
            self._wake.set()
            self._wake = None

    def ended(self, outbox: Outbox) -> None:
        self._writing.pop(outbox, None)

    async def run(self) -> None:
        """Check the writes in progress until cancelled."""
        while True:
            if not self._writing:
                wake = self._wake = anyio.Event()
                await wake.wait()
                continue
            await anyio.sleep_until(min(self._writing.values()) + self.timeout)
            now = self._clock()
            stalled = [o for o, started in self._writing.items() if now - started >= self.timeout]
            for outbox in stalled:
                del self._writing[outbox]
                outbox.stalled()


class Outbox:
    def __init__(
        self,
        stream: anyio.abc.ByteStream,
        *,
        high_water: int,
        watch: WriteWatch | None,
        close_timeout: float | None,
    ) -> None:
        """``watch``: what bounds this outbox's writes in time (None: unbounded)."""
        self._stream = stream
        self._high_water = high_water
        self._watch = watch
        self._close_timeout = close_timeout
        # A list, not a deque: an empty deque is a 760-byte block, per idle connection.
        self._chunks: list[bytes] = []
        self._queued = 0
        # The first chunk ever queued is the opening-handshake response: drop_pending keeps it
        # until it is written (1 while it waits at the head of _chunks, then 0).
        self._protected = 0
        self._puts = 0
        self._in_flight = 0
        # The writer's wait for work, and senders' wait for progress: made only by a waiter.
        self._wake: anyio.Event | None = None
        self._progress: anyio.Event | None = None
        self._writable_calls = 0
        #: The core said: close the socket once the queue is written.
        self.close_requested = False
        #: The socket is closed (or failed); nothing more is written.
        self.closed = False
        #: A write failed or timed out, or the core aborted (the socket is closed forcefully).
        self.failed = False
        # The writer's scope (one per connection, not per write), for abort() to cancel.
        self._run_scope: anyio.CancelScope | None = None
        self._stalled = False
        #: ``run`` has closed the socket and returned.
        self._finished = False
        self._finished_event: anyio.Event | None = None  # made by the first waiter
        #: Told ``False`` when pending bytes go over ``high_water``, ``True`` when back under
        #: (the core then holds back pongs owed to a ping flood).
        self.on_writable: Callable[[bool], None] | None = None
        self._over = False
        self._direct = AsyncioDirect.of(stream)
        #: Set by a driver that starts the writer task (``run``) only once it is needed:
        #: direct writes only; a close with nothing left to write is then made without it.
        self.start_writer: Callable[[], object] | None = None
        # A call_soon of _write_soon is pending (asyncio, direct writes only).
        self._soon = False

    @property
    def ending(self) -> bool:
        """The close is requested or the socket closed: the connection's reader stops."""
        return self.close_requested or self.closed

    @property
    def direct(self) -> AsyncioDirect | None:
        """The asyncio transport this outbox writes directly (None: through ``send``)."""
        return self._direct

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
        if self._run_scope is not None:
            self._run_scope.cancel()
        self._wake_writer()

    def stalled(self) -> None:
        """The write in progress timed out (``WriteWatch``): fail the connection."""
        if self.closed:
            return
        self._stalled = self.failed = self.closed = True
        self._chunks.clear()
        self._queued = 0
        if self._run_scope is not None:  # always, during a write: it ends the write
            self._run_scope.cancel()

    def put(self, data: bytes) -> None:
        if self.closed or not data:
            return
        self._chunks.append(data)
        self._queued += len(data)
        if self._puts == 0:
            self._protected = 1
        self._puts += 1
        direct = self._direct
        if direct is not None and (self._wake is not None or self.start_writer is not None):
            # The writer is idle: written at the end of this loop pass, without waking it.
            if not self._soon:
                self._soon = True
                direct.loop.call_soon(self._write_soon)
        else:
            self._wake_writer()
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
        direct = self._direct
        if self.start_writer is not None and direct is not None and not self.closed:
            # No writer yet: what is left leaves now and the socket closes here, if it can.
            if self._chunks and not self._in_flight and direct.ready():
                self._write_direct(direct)
            if not self._chunks and not self._in_flight:
                self._close_unstarted(direct)
                return
        self._wake_writer()

    def discard(self) -> None:
        """The connection is over: close the socket if no writer was ever started for it."""
        if self.start_writer is not None and self._direct is not None and not self.closed:
            self._close_unstarted(self._direct)

    def _close_unstarted(self, direct: AsyncioDirect) -> None:
        self.start_writer = None
        self.closed = True
        self._chunks.clear()
        self._queued = 0
        self._signal_progress()
        direct.close()
        self._finished = True
        if self._finished_event is not None:
            self._finished_event.set()

    def _write_soon(self) -> None:
        self._soon = False
        direct = self._direct
        assert direct is not None, "scheduled for direct writes only"
        idle = self._wake is not None or self.start_writer is not None
        if not idle or not self._chunks or self.closed:
            return  # the writer is at work (a close, a failure): it takes the chunks
        if direct.ready():
            self._write_direct(direct)
        if self._chunks or self._in_flight:
            self._wake_writer()  # a write blocked (or could not be made): the writer takes over

    def _write_direct(self, direct: AsyncioDirect) -> None:
        chunks = self._chunks
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        chunks.clear()
        self._protected = 0
        self._queued = 0
        if not direct.write(data):
            self._in_flight = len(data)  # until the writer sees it written
            return
        self._signal_progress()
        self._check_level()

    def _wake_writer(self) -> None:
        if self._wake is not None:
            self._wake.set()
            self._wake = None
        elif self.start_writer is not None:
            start, self.start_writer = self.start_writer, None
            start()

    # --- awaited by senders ------------------------------------------------------------------

    async def wait_writable(self) -> None:
        """Wait while more than ``high_water`` bytes are pending (send backpressure).

        A checkpoint at least once per ``DRAIN_YIELD_EVERY`` calls, so that a loop of sends
        that never blocks cannot starve the writer (its bytes leave in one write per batch)."""
        if self._writable():
            self._writable_calls += 1
            if self._writable_calls >= DRAIN_YIELD_EVERY:
                self._writable_calls = 0
                await anyio.lowlevel.checkpoint()
            return
        while True:
            if self._progress is None:
                self._progress = anyio.Event()
            await self._progress.wait()
            if self._writable():
                return

    def _writable(self) -> bool:
        return self.closed or self.pending <= self._high_water

    # --- the writer task ---------------------------------------------------------------------

    async def run(self, on_failure: Callable[[], None]) -> None:
        """Write until the core asks for the close (or a write fails); then close the socket.

        ``on_failure`` runs at once when a write fails or times out, before the socket is
        aborted, so the core hears of it without waiting for the close."""
        watch = self._watch
        try:
            with anyio.CancelScope() as self._run_scope:
                direct = self._direct
                while not self.closed:
                    if self._in_flight:  # a direct write left bytes in the transport
                        assert direct is not None, "only direct writes return unfinished"
                        if watch is not None:
                            watch.started(self)
                        try:
                            await direct.wait_written()
                        except WRITE_ERRORS:
                            if not self.closed:
                                self.failed = self.closed = True
                                on_failure()
                            return
                        finally:
                            self._in_flight = 0
                            if watch is not None:
                                watch.ended(self)
                        self._signal_progress()
                        self._check_level()
                    elif self._chunks and direct is not None and direct.ready():
                        self._write_direct(direct)
                    elif self._chunks:
                        chunks = self._chunks
                        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
                        chunks.clear()
                        self._protected = 0
                        self._queued, self._in_flight = 0, len(data)
                        if watch is not None:
                            watch.started(self)
                        try:
                            await self._stream.send(data)
                        except WRITE_ERRORS:
                            if not self.closed:
                                self.failed = self.closed = True
                                on_failure()
                            return
                        finally:
                            self._in_flight = 0
                            if watch is not None:
                                watch.ended(self)
                        self._signal_progress()
                        self._check_level()
                    elif self.close_requested:
                        return
                    else:
                        wake = self._wake = anyio.Event()
                        await wake.wait()
            if self._stalled:  # in this task: a failing on_failure ends this connection only
                on_failure()
        finally:
            self.closed = True
            self._chunks.clear()
            self._queued = 0
            self._signal_progress()
            try:
                await self._close_socket()
            finally:
                self._finished = True
                if self._finished_event is not None:
                    self._finished_event.set()

    async def wait_closed(self) -> None:
        """Wait until ``run`` has closed the socket and returned."""
        if self._finished:
            return
        if self.start_writer is not None:
            self._wake_writer()  # not started yet: it closes the socket once asked to
        if self._finished_event is None:
            self._finished_event = anyio.Event()
        await self._finished_event.wait()

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
        if self._progress is not None:
            self._progress.set()
            self._progress = None
