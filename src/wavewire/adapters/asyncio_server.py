"""Drives a ``ServerProtocol`` on asyncio's own protocols and transports (asyncio only).

The callbacks, one ``asyncio.Protocol`` per connection (``loop.create_server``):

* ``connection_made`` -> ``connection_made``; ``data_received`` -> ``receive_data``;
  ``eof_received`` -> ``receive_eof`` (returns False: the transport closes itself);
  ``connection_lost`` -> ``connection_lost``;
* one ``loop.call_at`` timer handle for ``next_deadline()``, moved only when the deadline comes
  earlier; when it fires, ``handle_timer`` if the deadline is due, else it is armed again.

Every core call is followed by ``_flush()``, the one choke point: it routes ``data_to_send()``
to the connections (drop, write, close), hands events to the sink, offers received frames and
re-arms the timer handle if the deadline changed. Time is ``loop.time()``. No task runs per
connection unless a connection's input is backed up.

Output is batched: bytes the application sends to a connection collect during a loop pass (the
replies to every message of one read) and leave with one ``transport.write`` from a
``call_soon`` callback at its end (at once past ``BATCH_LIMIT``, and before a close or a drop).
A send made while none of that connection's frames wait unread (the sink's ``input_pending``:
a round trip's reply, the last reply to one read) writes what is batched at once instead;
bytes the core makes inside one of asyncio's callbacks (a handshake response, a pong, one
timer's audio chunks: one transmit per connection per callback) are written as the flush hands
them over, after what a connection had batched (if anything) when that callback ends.
``transport.write`` never blocks; the transport's buffer is bounded by
``set_write_buffer_limits(high=high_water)``. Above it asyncio calls ``pause_writing``: from
then on new bytes wait in the connection's own queue (so that ``drop_pending`` can still discard
them), ``drain`` waits (otherwise it only yields once per ``DRAIN_YIELD_EVERY`` calls, for
fairness), and a write timer runs: if the peer reads nothing for ``write_timeout``
seconds the connection is aborted (``transport.abort()``). ``resume_writing`` writes the queue.
A close waits for the queue, then ``transport.close()`` (which flushes the transport's buffer),
bounded by ``close_timeout``.

Input: frames go to the sink with ``offer_frame`` (no task switch). When the sink is full,
reading stops (``transport.pause_reading()``) and a task awaits ``on_frame`` for the frames
left, then reading resumes: a slow consumer stops that socket instead of growing a queue.

Accepting is asyncio's own: out of descriptors, ``accept()`` fails, and asyncio pauses that
listener for a second and reports it to the loop's exception handler, with a traceback, each
time. While serving, the driver wraps the loop's handler so that these reports, for its own
listening sockets only, become one rate-limited log line; everything else goes on to the
handler the application had. TLS handshakes are bounded by ``open_timeout``
(``ssl_handshake_timeout``); asyncio logs failed ones at debug level only.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
import ssl
import sys
from collections.abc import Callable
from typing import Any, cast

import anyio
import anyio.abc

from wavewire.adapters.errors import ConnectionClosed
from wavewire.adapters.ratelimit import LogLimiter
from wavewire.adapters.sink import ListenOptions, ServerEventSink, split_events
from wavewire.core.errors import InvalidState
from wavewire.core.events import ConnectionId, FrameReceived
from wavewire.core.frames import Frame
from wavewire.core.server import ServerProtocol

__all__ = ["AsyncioServerDriver", "listen_asyncio"]

logger = logging.getLogger("wavewire.server")

#: Seconds a shutdown waits for close handshakes when ``close_timeout`` is None, and the bound
#: on closing one socket whose transport still holds bytes.
SHUTDOWN_FALLBACK = 10.0
#: What asyncio's accept loop reports when ``accept()`` runs out of descriptors or memory.
ACCEPT_EXHAUSTED = "socket.accept() out of system resource"
#: Seconds a TLS handshake may take when ``open_timeout`` is None (asyncio's default).
TLS_HANDSHAKE_FALLBACK = 60.0

#: ``drain`` calls that find the connection writable between two yields to the event loop.
DRAIN_YIELD_EVERY = 64

#: Bytes a connection's batch may hold before it is written without waiting for the pass's end.
BATCH_LIMIT = 64 * 1024


class _Link(asyncio.Protocol):
    """One connection: asyncio's callbacks in, the driver's writes and closes out."""

    # Slots: one per idle connection, and no instance dict (about 100 bytes less each).
    __slots__ = (
        "_driver",
        "_finished_event",
        "batch",
        "batch_size",
        "close_requested",
        "close_timer",
        "closing",
        "delivery",
        "finished",
        "frames",
        "id",
        "lost",
        "protected",
        "queue",
        "reading_paused",
        "stall_mark",
        "transport",
        "writable_waiters",
        "write_paused",
        "write_timer",
        "written",
    )

    def __init__(self, driver: AsyncioServerDriver) -> None:
        self._driver = driver
        self.id = ConnectionId(0)  # set by the driver in connection_made
        self.transport: asyncio.Transport | None = None
        # Lists, not deques, and the done event made on first wait: an idle connection holds
        # about 2 KiB less (an empty deque is a 760-byte block).
        #: Bytes held back while asyncio has paused writing (droppable, unlike its buffer).
        self.queue: list[bytes] = []
        #: The head of ``queue`` is the connection's first bytes (its handshake response).
        self.protected = False
        #: Bytes handed to the transport, ever: with its buffer size, the progress measure.
        self.written = 0
        #: This loop pass's bytes, written with one ``transport.write`` at its end (``batch``).
        self.batch: list[bytes] = []
        self.batch_size = 0
        self.write_paused = False
        self.reading_paused = False
        self.close_requested = False
        #: ``transport.close()`` or ``abort()`` called: nothing more is written.
        self.closing = False
        self.lost = False
        #: Frames not yet taken by the sink, in order.
        self.frames: list[FrameReceived] = []
        #: The task awaiting ``on_frame`` while input is backed up.
        self.delivery: asyncio.Task[None] | None = None
        self.write_timer: asyncio.TimerHandle | None = None
        self.close_timer: asyncio.TimerHandle | None = None
        self.stall_mark = 0
        self.writable_waiters: list[asyncio.Future[None]] = []
        #: The socket is closed and every frame delivered (``wait_finished``).
        self.finished = False
        self._finished_event: asyncio.Event | None = None

    # --- asyncio.Protocol (each maps to one core call, then the flush) -----------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport, but not always an ``asyncio.Transport`` subclass: uvloop's
        # ``TCPTransport`` has the same methods without inheriting from it.
        self.transport = cast(asyncio.Transport, transport)
        self.transport.set_write_buffer_limits(high=self._driver._high_water)
        self._driver._accepted(self)

    def data_received(self, data: bytes) -> None:
        self._driver._received(self, data)

    def eof_received(self) -> bool:
        self._driver._received(self, None)
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._driver._lost(self)

    def pause_writing(self) -> None:
        self.write_paused = True
        self.stall_mark = self._sent()
        self._arm_write_timer()
        self._driver._writable(self, False)

    def resume_writing(self) -> None:
        self.write_paused = False
        self._cancel_write_timer()
        self._driver._writable(self, True)  # a pong owed to a ping flood joins the queue
        if self.queue and not self.closing:
            data = b"".join(self.queue)
            self.queue.clear()
            self.protected = False
            self._write_now(data)  # may pause writing again, at once
        if self.close_requested and not self.queue:
            # Not from inside this callback: asyncio calls it from its write handler, which,
            # when its buffer is empty and the transport closing, runs connection_lost itself,
            # after close() has already scheduled it: twice, the second time on a torn-down
            # transport (AttributeError in the loop's exception handler).
            self._driver._loop.call_soon(self.close_now)
        self.wake_writers()

    # --- called from the flush choke point ---------------------------------------------------

    def write(self, data: bytes) -> None:
        if self.closing or self.lost:
            return
        if self.write_paused or self.queue:
            # The very first bytes are the handshake response: drop_pending must keep them.
            self.protected = self.protected or (self.written == 0 and not self.queue)
            self.queue.append(data)
            return
        if not self.batch and self._driver._in_callback:
            # Inside one of asyncio's callbacks (or a send that writes at once): its one flush
            # gives each connection one transmit, so a batch would hold this alone.
            self._write_now(data)  # may pause writing: later bytes then wait in ``queue``
            return
        # Batched: every message of this loop pass (the replies to one read, one timer's
        # chunks) in one write at the pass's end, not one send() each.
        if not self.batch:
            self._driver._batched(self)
        self.batch.append(data)
        self.batch_size += len(data)
        if self.batch_size >= BATCH_LIMIT:
            self.write_batch()  # a send loop that never yields: bounded, and backpressure sees it

    def write_batch(self) -> None:
        """Hand this pass's bytes to the transport, in one write (before any close or drop)."""
        if not self.batch:
            return
        data = self.batch[0] if len(self.batch) == 1 else b"".join(self.batch)
        self.batch.clear()
        self.batch_size = 0
        if not (self.closing or self.lost):
            self._write_now(data)  # may pause writing: later bytes then wait in ``queue``

    def drop_pending(self) -> None:
        self.write_batch()  # handed to the transport already, as if written at once
        kept = [self.queue[0]] if self.protected and self.queue else []
        self.queue.clear()
        self.queue.extend(kept)

    def request_close(self) -> None:
        self.close_requested = True
        if not self.queue:
            self.close_now()
        else:
            self.update_reading()  # the core wants no more input

    def close_now(self) -> None:
        if self.closing or self.lost:
            return
        self.write_batch()
        self.closing = True
        transport = self.transport
        assert transport is not None
        held = transport.get_write_buffer_size()
        transport.close()  # after what the transport buffers
        if held or transport.get_extra_info("sslcontext") is not None:
            # A peer that reads nothing would keep those bytes, or the TLS shutdown, waiting
            # forever: bounded. A plain transport with nothing left closes its socket in the
            # next loop pass, with no timer (one handle fewer per connection).
            close_timeout = self._driver.protocol.config.close_timeout
            bound = close_timeout if close_timeout is not None else SHUTDOWN_FALLBACK
            self.close_timer = self._driver._loop.call_later(bound, self.abort)
        self.wake_writers()

    def abort(self) -> None:
        self.closing = True
        self.queue.clear()
        self.batch.clear()
        self.batch_size = 0
        if self.transport is not None and not self.lost:
            self.transport.abort()  # connection_lost follows, from the loop
        self.wake_writers()

    # --- state --------------------------------------------------------------------------------

    @property
    def writable(self) -> bool:
        """False while writing is paused (``drain`` waits); True once closing or gone."""
        return self.closing or self.lost or not (self.write_paused or self.queue)

    def wake_writers(self) -> None:
        if not self.writable_waiters:
            return
        waiters, self.writable_waiters = self.writable_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def mark_finished(self) -> None:
        self.finished = True
        if self._finished_event is not None:
            self._finished_event.set()

    async def wait_finished(self) -> None:
        if self.finished:
            return
        if self._finished_event is None:
            self._finished_event = asyncio.Event()
        await self._finished_event.wait()

    def update_reading(self) -> None:
        """Read unless input is backed up or the core asked for the close."""
        if self.transport is None or self.closing or self.lost:
            return
        pause = self.close_requested or self.delivery is not None
        if pause and not self.reading_paused:
            self.transport.pause_reading()
            self.reading_paused = True
        elif not pause and self.reading_paused:
            self.transport.resume_reading()
            self.reading_paused = False

    def forget_timers(self) -> None:
        self._cancel_write_timer()
        if self.close_timer is not None:
            self.close_timer.cancel()
            self.close_timer = None

    # --- internals ---------------------------------------------------------------------------

    def _write_now(self, data: bytes) -> None:
        assert self.transport is not None
        self.written += len(data)
        self.transport.write(data)

    def _sent(self) -> int:
        assert self.transport is not None
        return self.written - self.transport.get_write_buffer_size()

    def _arm_write_timer(self) -> None:
        timeout = self._driver._write_timeout
        if timeout is not None and self.write_timer is None:
            self.write_timer = self._driver._loop.call_later(timeout, self._write_timer_fired)

    def _cancel_write_timer(self) -> None:
        if self.write_timer is not None:
            self.write_timer.cancel()
            self.write_timer = None

    def _write_timer_fired(self) -> None:
        self.write_timer = None
        if not self.write_paused or self.lost:
            return
        sent = self._sent()
        if sent > self.stall_mark:  # slow, not stalled: give it another period
            self.stall_mark = sent
            self._arm_write_timer()
            return
        self._driver._write_failed(self)


class AsyncioServerDriver:
    """Serves ``protocol`` with asyncio protocols until ``shutdown()``; see the module
    docstring. Make one with ``listen_asyncio`` (or the constructor, then ``listen``).

    ``high_water``: bytes buffered per connection above which ``drain`` waits.
    ``write_timeout``: seconds writes may make no progress before the connection is aborted.
    """

    def __init__(
        self,
        protocol: ServerProtocol,
        sink: ServerEventSink,
        *,
        high_water: int = 256 * 1024,
        write_timeout: float | None = 10.0,
        log: LogLimiter | None = None,
    ) -> None:
        try:
            self._loop = asyncio.get_running_loop()
        except RuntimeError:
            raise RuntimeError(
                "the asyncio driver runs only under asyncio; use the anyio driver on trio"
            ) from None
        self.protocol = protocol
        self._sink = sink
        self._high_water = high_water
        self._write_timeout = write_timeout
        self._servers: list[asyncio.Server] = []
        self._links: dict[ConnectionId, _Link] = {}
        self._armed: float | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._drains = 0
        #: Connections with a batch to write at the end of this loop pass.
        self._batched_links: list[_Link] = []
        #: Inside one of asyncio's callbacks (input, timer): its bytes leave when it ends.
        self._in_callback = False
        #: Audio senders blocked on a full queue, woken by the next flush to check again.
        self._audio_waiters: list[asyncio.Future[None]] = []
        self._stopped = asyncio.Event()
        self._log = log if log is not None else LogLimiter(logger)
        #: The loop's exception handler before ``serve`` wrapped it.
        self._previous_handler: Any = None

    # --- lifecycle ---------------------------------------------------------------------------

    async def listen(
        self, host: str | None, port: int, *, ssl_context: ssl.SSLContext | None = None
    ) -> None:
        """Bind every address of ``host`` (one port for all, even with ``port=0``) and
        listen; accepting starts with ``serve``."""
        open_timeout = self.protocol.config.open_timeout
        tls_bound = TLS_HANDSHAKE_FALLBACK if open_timeout is None else open_timeout
        for sock in await _bind(self._loop, host, port):
            try:
                server = await self._loop.create_server(
                    lambda: _Link(self),
                    sock=sock,
                    ssl=ssl_context,
                    ssl_handshake_timeout=tls_bound if ssl_context is not None else None,
                    start_serving=False,
                )
            except BaseException:
                sock.close()
                raise
            self._servers.append(server)

    async def serve(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Accept and serve connections until ``shutdown()`` has finished."""
        self._previous_handler = self._loop.get_exception_handler()
        self._loop.set_exception_handler(self._on_loop_exception)
        try:
            for server in self._servers:
                await server.start_serving()
            task_status.started()
            await self._stopped.wait()
        finally:
            if not self._stopped.is_set():  # cancelled before a shutdown: leave nothing open
                self._close_listeners()
                self._abort_all()
            if self._loop.get_exception_handler() == self._on_loop_exception:
                self._loop.set_exception_handler(self._previous_handler)

    def _on_loop_exception(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        """One rate-limited line instead of a traceback per retry when our listeners run
        out of descriptors; any other report goes to the handler the loop had."""
        sock = context.get("socket")
        ours = {s.fileno() for server in self._servers for s in server.sockets}
        if (
            context.get("message") == ACCEPT_EXHAUSTED
            and sock is not None
            and sock.fileno() in ours
        ):
            exc = context.get("exception")
            code = exc.errno if isinstance(exc, OSError) else None
            name = errno.errorcode.get(code, "error") if code is not None else "error"
            self._log.log(
                logging.WARNING,
                ("accept failed", name),
                "accept() failed (%s: %s): still serving the connections open; asyncio"
                " accepts again every second",
                name,
                exc,
            )
            return
        if self._previous_handler is not None:
            self._previous_handler(loop, context)
        else:
            loop.default_exception_handler(context)

    async def shutdown(self, code: int = 1001, reason: str = "server shutting down") -> None:
        """Stop accepting, close every connection with ``code``, wait for them (bounded by
        ``close_timeout`` plus a second), then stop ``serve``."""
        try:
            await self.aclose()
            self.protocol.shutdown(self._loop.time(), code, reason)
            self._flush()
            close_timeout = self.protocol.config.close_timeout
            bound = (close_timeout if close_timeout is not None else SHUTDOWN_FALLBACK) + 1.0
            try:
                await asyncio.wait_for(self._all_done(), bound)
            except asyncio.TimeoutError:
                self._abort_all()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._all_done(), 1.0)
        finally:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = self._armed = None
            self._stopped.set()

    async def drain_sessions(self) -> None:
        """Stop adopting and wait until every session has ended (``ServerDriver``)."""
        now = self._loop.time()
        timeout = self.protocol.config.drain_timeout
        self.protocol.drain(now, None if timeout is None else now + timeout)
        self._flush()
        while not self.protocol.drained:  # Drained comes from a flush: wait for the next one
            waiter = self._loop.create_future()
            self._audio_waiters.append(waiter)  # woken by every flush
            await waiter

    async def aclose(self) -> None:
        """Close the listening sockets (idempotent); connections are not touched."""
        self._close_listeners()
        await asyncio.sleep(0)

    def _close_listeners(self) -> None:
        for server in self._servers:
            server.close()

    # --- application commands (synchronous core calls, then the flush) -----------------------

    def send_frame(self, connection_id: ConnectionId, frame: Frame) -> bool:
        """Queue ``frame``; ``ConnectionClosed`` if the client is not connected."""
        try:
            sent = self.protocol.send_frame(connection_id, frame, self._loop.time())
        except InvalidState as exc:
            raise ConnectionClosed(str(exc)) from None
        link = self._links.get(connection_id)
        if (
            self._in_callback
            or link is None
            or link.delivery is not None
            or self._sink.input_pending(connection_id)
        ):
            self._flush()  # more replies may follow in this pass: one write at its end
            return sent
        # The sender has nothing more from this client to answer (a round trip, the last
        # reply to one read): written now, not one loop pass later from a call_soon.
        self._in_callback = True
        try:
            self._flush()
        finally:
            self._in_callback = False
            self._callback_done()
        return sent

    async def wait_audio_writable(self, connection_id: ConnectionId) -> None:
        """Wait until the session's audio queue accepts audio; ``ConnectionClosed`` if the
        session ends first. Checked after each flush (the timer's sends free the space)."""
        while True:
            try:
                if self.protocol.audio_writable(connection_id):
                    return
            except InvalidState as exc:
                raise ConnectionClosed(str(exc)) from None
            waiter = self._loop.create_future()
            self._audio_waiters.append(waiter)
            await waiter

    async def drain(self, connection_id: ConnectionId) -> None:
        """Wait while the connection's writing is paused (send backpressure); else yield to
        the loop once per ``DRAIN_YIELD_EVERY`` calls."""
        link = self._links.get(connection_id)
        waited = False
        while link is not None and not link.writable:
            waiter = self._loop.create_future()
            link.writable_waiters.append(waiter)
            await waiter
            waited = True
        if waited:
            return
        self._drains += 1
        if self._drains >= DRAIN_YIELD_EVERY:
            # Fairness only: a send loop that never blocks (its reader keeps up) still lets
            # the loop run other tasks, and its batch go out, every few messages.
            self._drains = 0
            await asyncio.sleep(0)

    def close(self, connection_id: ConnectionId, code: int = 1000, reason: str = "") -> None:
        self.protocol.close(connection_id, self._loop.time(), code, reason)
        self._flush()

    async def wait_done(self, connection_id: ConnectionId) -> None:
        """Wait until the connection's socket is closed and its frames delivered."""
        link = self._links.get(connection_id)
        if link is not None:
            await link.wait_finished()

    @property
    def local_address(self) -> tuple[str, int]:
        address = self._servers[0].sockets[0].getsockname()
        return str(address[0]), int(address[1])

    # --- the flush choke point ---------------------------------------------------------------

    def _flush(self) -> None:
        links = self._links
        for transmit in self.protocol.data_to_send():
            link = links.get(transmit.connection_id)
            if link is None:
                continue
            if transmit.drop_pending:
                link.drop_pending()
            if transmit.data:
                link.write(transmit.data)
            if transmit.close:
                link.request_close()
        received = self.protocol.events_received()
        if received:  # none after a send: no split
            events, backed_up = split_events(received, links)
            if events:
                try:
                    self._sink.on_events(events)
                except Exception:
                    self._log_internal_error("event sink failed")
            for link in backed_up:
                self._offer_frames(link)
        deadline = self.protocol.next_deadline()
        if deadline is not None and (self._armed is None or deadline < self._armed):
            # Moved earlier (a connection came, a send started an audio stream): one handle,
            # for the new time. A deadline that moved later (a handshake completed, a peer
            # was heard from) or went away keeps the handle; ``_fire`` then finds nothing due
            # and sleeps again. Per connection that saves a cancel and a new handle per move.
            if self._timer is not None:
                self._timer.cancel()
            self._armed = deadline
            self._timer = self._loop.call_at(deadline, self._fire)
        if self._audio_waiters:
            waiters, self._audio_waiters = self._audio_waiters, []
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)

    # --- batched writes ----------------------------------------------------------------------

    def _batched(self, link: _Link) -> None:
        """``link`` has a new batch: write it once this loop pass's callbacks have run, or,
        inside one of asyncio's callbacks, when that callback ends (``_callback_done``)."""
        if not self._batched_links and not self._in_callback:
            self._loop.call_soon(self._write_batches)
        self._batched_links.append(link)

    def _write_batches(self) -> None:
        links, self._batched_links = self._batched_links, []
        for link in links:
            link.write_batch()

    # --- callbacks ---------------------------------------------------------------------------

    def _fire(self) -> None:
        armed = self._armed
        self._timer = self._armed = None
        self._in_callback = True
        try:
            deadline = self.protocol.next_deadline()
            if deadline is None:
                return  # what was due went away since the handle was armed
            if armed is not None and deadline > armed:
                # Moved later since: sleep until then.
                self._armed = deadline
                self._timer = self._loop.call_at(deadline, self._fire)
                return
            # call_at may run a clock tick early; the core must not see a time before its
            # deadline.
            self.protocol.handle_timer(max(self._loop.time(), deadline))
            self._flush()
        except Exception:
            self._log_internal_error("timer: internal error")
        finally:
            self._in_callback = False
            self._callback_done()

    def _accepted(self, link: _Link) -> None:
        assert link.transport is not None
        peer = link.transport.get_extra_info("peername")
        remote = (str(peer[0]), int(peer[1])) if isinstance(peer, tuple) else peer
        link.id = self.protocol.connection_made(self._loop.time(), remote)
        self._links[link.id] = link
        self._guarded(link, self._flush)

    def _received(self, link: _Link, data: bytes | None) -> None:
        self._guarded(link, self._feed, link, data)

    def _feed(self, link: _Link, data: bytes | None) -> None:
        if data is None:
            self.protocol.receive_eof(link.id, self._loop.time())
        else:
            self.protocol.receive_data(link.id, data, self._loop.time())
        self._flush()

    def _lost(self, link: _Link) -> None:
        link.lost = True
        link.forget_timers()
        link.queue.clear()
        link.batch.clear()
        link.batch_size = 0
        link.wake_writers()
        try:
            self.protocol.connection_lost(link.id, self._loop.time())
            self._flush()
        except Exception:
            self._log_internal_error("connection %d: internal error", link.id)
        if link.delivery is None:
            self._finish(link)
        # Else the delivery task finishes it once the frames it holds are delivered.

    def _writable(self, link: _Link, writable: bool) -> None:
        """Tell the core (it holds back pongs while not writable); flush what it then owes."""
        if self._links.get(link.id) is not link:
            return
        self.protocol.set_writable(link.id, writable)
        if writable:
            self._guarded(link, self._flush)

    def _write_failed(self, link: _Link) -> None:
        self._log.log(
            logging.INFO, ("write failed",), "connection %d: write timed out; aborting", link.id
        )
        self._guarded(link, self._core_lost, link)
        link.abort()

    def _log_internal_error(self, msg: str, *args: object) -> None:
        """A bug (ours or a sink's): with its traceback, but rate-limited like peer lines."""
        self._log.log(logging.ERROR, ("internal error", msg), msg, *args, exc_info=True)

    def _core_lost(self, link: _Link) -> None:
        self.protocol.connection_lost(link.id, self._loop.time())
        self._flush()

    def _guarded(self, link: _Link, step: Callable[..., None], *args: object) -> None:
        """Run one core call and its flush, from one of asyncio's callbacks: a bug (ours or a
        sink's) ends this connection, never the server. What it writes leaves at its end."""
        outer, self._in_callback = self._in_callback, True
        try:
            step(*args)
        except Exception:
            self._log_internal_error("connection %d: internal error; connection dropped", link.id)
            link.abort()
        finally:
            self._in_callback = outer
            if not outer:
                self._callback_done()

    def _callback_done(self) -> None:
        """Write what one of asyncio's callbacks (input, a timer) made the core send, now.

        Bytes the core makes from input or a timer are all made in that callback's one
        flush: nothing later in the loop pass could join them (the tasks it wakes run after a
        ``_write_batches`` it would schedule), so waiting for the pass's end would only cost a
        callback and a loop pass (per handshake: the 101). ``_Link.write`` writes them at
        once unless the connection already had a batch (a task's sends earlier in the pass):
        that batch, with them after it, leaves here. Application sends, from tasks, stay
        batched to the pass's end while more input waits (``send_frame``)."""
        if self._batched_links:
            self._write_batches()

    # --- input backpressure ------------------------------------------------------------------

    def _offer_frames(self, link: _Link) -> None:
        if link.delivery is not None:
            return  # the task delivers in order, this one included
        frames = link.frames
        taken = 0
        for event in frames:
            if not self._sink.offer_frame(event):
                break
            taken += 1
        del frames[:taken]
        if frames:
            link.delivery = self._loop.create_task(self._deliver(link))
            link.update_reading()

    async def _deliver(self, link: _Link) -> None:
        try:
            while link.frames:
                # In the order they came; frames of a later read join the next list.
                frames, link.frames = link.frames, []
                for event in frames:
                    # Without a task switch while the sink has room (the reader took a batch);
                    # awaited only when it is full.
                    if not self._sink.offer_frame(event):
                        await self._sink.on_frame(event)
        except Exception:
            self._log_internal_error("connection %d: internal error; connection dropped", link.id)
            link.frames.clear()
            link.abort()
        finally:
            link.delivery = None
            if link.lost:
                self._finish(link)
            else:
                link.update_reading()

    # --- ending ------------------------------------------------------------------------------

    def _finish(self, link: _Link) -> None:
        if self._links.get(link.id) is link:
            del self._links[link.id]
        link.mark_finished()
        try:
            self._sink.on_connection_done(link.id)
        except Exception:
            self._log_internal_error("event sink failed")

    async def _all_done(self) -> None:
        while self._links:
            await next(iter(self._links.values())).wait_finished()

    def _abort_all(self) -> None:
        for link in list(self._links.values()):
            if link.delivery is not None:
                link.delivery.cancel()
            link.abort()


async def _bind(
    loop: asyncio.AbstractEventLoop, host: str | None, port: int
) -> list[socket.socket]:
    """Listening sockets for every address of ``host``, all on one port."""
    infos = await loop.getaddrinfo(
        host, port, family=socket.AF_UNSPEC, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )
    sockets: list[socket.socket] = []
    seen: set[tuple[int, str]] = set()
    try:
        for family, kind, proto, _, address in infos:
            if (family, str(address[0])) in seen:
                continue
            seen.add((family, str(address[0])))
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            if sys.platform != "win32":
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            if port == 0 and len(sockets) > 1:  # the port the first address got
                address = (address[0], sockets[0].getsockname()[1], *address[2:])
            sock.bind(address)
            sock.setblocking(False)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


async def listen_asyncio(
    protocol: ServerProtocol, sink: ServerEventSink, options: ListenOptions
) -> AsyncioServerDriver:
    """Bind and listen with asyncio (``DriverFactory``); ``RuntimeError`` under trio."""
    driver = AsyncioServerDriver(
        protocol,
        sink,
        high_water=options.high_water,
        write_timeout=options.write_timeout,
        log=options.log,
    )
    await driver.listen(options.host, options.port, ssl_context=options.ssl_context)
    return driver
