"""Drives a ``ServerProtocol`` over anyio sockets (asyncio or trio).

Tasks, all in one task group:

* the accept loop, one task per connection (which first completes the TLS handshake, if any,
  bounded by ``open_timeout``);
* per connection, a reader (socket -> ``receive_data``/``receive_eof``; the accept loop's
  task) and a writer (the connection's ``Outbox``, its only writer: what a loop pass queued
  leaves in one ``send``; it closes the socket, which ends the reader's receive);
  on asyncio over a plain socket both use the transport directly (``AsyncioDirect``);
* one timer task sleeping until ``next_deadline()``, woken whenever the deadline changes (on
  asyncio a ``loop.call_at`` handle instead, the task only waiting to end it);
* one ``WriteWatch`` task failing writes that block longer than ``write_timeout``.

Every core call is followed by ``_flush()``, the one choke point: it routes ``data_to_send()``
to the outboxes (drop, write, close), hands events to the sink, offers received frames to it
and re-arms the timer. Time is ``anyio.current_time()`` (its backend looked up once:
``bound_clock``). Received frames go to the sink with ``offer_frame`` (every frame of one read
in one pass, no task switch); frames the sink has no room for are awaited by the connection's
reader (``on_frame``) before it reads on: a slow consumer stops the reading of that socket
(backpressure) instead of growing a queue.

Running out of descriptors (or kernel memory) makes ``accept()`` fail: the loop logs it (one
rate-limited line), sleeps a little longer each time (``ACCEPT_BACKOFF``) and accepts again; the
connections already served carry on, and nothing reaches the task group.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import ssl

import anyio
import anyio.abc
import anyio.lowlevel
import anyio.streams.stapled
from anyio.abc import SocketAttribute
from anyio.streams.tls import TLSStream

from wavewire.adapters.errors import ConnectionClosed
from wavewire.adapters.outbox import Outbox, WriteWatch
from wavewire.adapters.ratelimit import LogLimiter
from wavewire.adapters.sink import ListenOptions, ServerEventSink, split_events
from wavewire.adapters.timer import DeadlineTimer, bound_clock
from wavewire.core.errors import InvalidState
from wavewire.core.events import ConnectionId, FrameReceived
from wavewire.core.frames import Frame
from wavewire.core.server import ServerProtocol

__all__ = ["AnyioServerDriver", "listen_anyio"]

logger = logging.getLogger("wavewire.server")

#: Bytes asked of one receive: what asyncio reads from a socket at most (256 KiB), so that
#: anyio never splits (copies) what one read brought.
READ_SIZE = 256 * 1024
#: Seconds a shutdown waits for close handshakes when ``close_timeout`` is None.
SHUTDOWN_FALLBACK = 10.0
#: Exceptions that mean the socket is gone, mapped at the backend boundary.
READ_ERRORS = (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError)
#: Seconds the accept loop sleeps after a failed ``accept()``: first, then at most (doubling).
ACCEPT_BACKOFF = (0.01, 1.0)
#: Seconds a TLS handshake may take when ``open_timeout`` is None.
TLS_HANDSHAKE_FALLBACK = 60.0
#: What a failed TLS handshake raises (a plaintext or silent peer, a reset).
TLS_ERRORS = (ssl.SSLError, TimeoutError, anyio.EndOfStream, *READ_ERRORS)


class _Connection:
    __slots__ = ("_done", "finished", "frames", "id", "outbox")

    def __init__(self, connection_id: ConnectionId, outbox: Outbox) -> None:
        self.id = connection_id
        self.outbox = outbox
        #: Frames the sink had no room for, in order: the reader awaits them before reading on.
        self.frames: list[FrameReceived] = []
        #: The socket is closed and the connection's tasks are over.
        self.finished = False
        self._done: anyio.Event | None = None  # made by the first waiter

    def mark_finished(self) -> None:
        self.finished = True
        if self._done is not None:
            self._done.set()

    async def wait_finished(self) -> None:
        if self.finished:
            await anyio.lowlevel.checkpoint()
            return
        if self._done is None:
            self._done = anyio.Event()
        await self._done.wait()


class AnyioServerDriver:
    """Serves ``protocol`` on ``listener`` until ``shutdown()``; see the module docstring.

    ``high_water``: bytes pending per connection above which ``drain`` waits.
    ``write_timeout``: seconds a write may block before the connection is aborted.
    ``ssl_context``: serve TLS; each connection's handshake runs in its own task, bounded by
    the core's ``open_timeout``.
    """

    def __init__(
        self,
        protocol: ServerProtocol,
        listener: anyio.abc.SocketListener
        | anyio.streams.stapled.MultiListener[anyio.abc.SocketStream],
        sink: ServerEventSink,
        *,
        high_water: int = 256 * 1024,
        write_timeout: float | None = 10.0,
        ssl_context: ssl.SSLContext | None = None,
        log: LogLimiter | None = None,
    ) -> None:
        self.protocol = protocol
        self._listener = listener
        self._ssl_context = ssl_context
        self._log = log if log is not None else LogLimiter(logger)
        self._sink = sink
        self._high_water = high_water
        self._connections: dict[ConnectionId, _Connection] = {}
        self._timer = DeadlineTimer(self._on_timer, on_asyncio_loop=True)
        #: ``anyio.current_time``, its backend looked up once.
        self._now = bound_clock()
        self._watch = None if write_timeout is None else WriteWatch(write_timeout, self._now)
        # Set (and dropped) by the next flush: what audio senders blocked on a full queue wait on.
        self._flushed: anyio.Event | None = None
        self._accepting = anyio.CancelScope()
        self._accept_done = anyio.Event()
        self._stopped = anyio.Event()

    # --- lifecycle ---------------------------------------------------------------------------

    async def serve(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Accept and serve connections until ``shutdown()`` has finished."""
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._timer.run)
            if self._watch is not None:
                tg.start_soon(self._watch.run)
            tg.start_soon(self._accept_loop, tg)
            task_status.started()
            await self._stopped.wait()
            tg.cancel_scope.cancel()

    async def shutdown(self, code: int = 1001, reason: str = "server shutting down") -> None:
        """Stop accepting, close every connection with ``code``, wait for them (bounded by
        ``close_timeout`` plus a second), then stop ``serve``."""
        self._accepting.cancel()
        with anyio.CancelScope(shield=True):
            await self._accept_done.wait()  # the listener must not be closed under accept()
            with contextlib.suppress(*READ_ERRORS):
                await self._listener.aclose()
            self.protocol.shutdown(self._now(), code, reason)
            self._flush()
            # Bounded even with close_timeout=None: a shutdown must end.
            close_timeout = self.protocol.config.close_timeout
            bound = (close_timeout if close_timeout is not None else SHUTDOWN_FALLBACK) + 1.0
            with anyio.move_on_after(bound):
                for connection in list(self._connections.values()):
                    await connection.wait_finished()
        self._stopped.set()

    async def drain_sessions(self) -> None:
        """Stop adopting (upgrades get 503, ``/readyz`` 503; the listener stays open for health
        checks and close handshakes) and wait until every session has ended: closed with 1012
        at ``drain_timeout``, if still running (``ServerProtocol.drain``)."""
        now = self._now()
        timeout = self.protocol.config.drain_timeout
        self.protocol.drain(now, None if timeout is None else now + timeout)
        self._flush()
        while not self.protocol.drained:  # Drained comes from a flush: wait for the next one
            if self._flushed is None:
                self._flushed = anyio.Event()
            await self._flushed.wait()

    async def aclose(self) -> None:
        """Close the listener; only before ``serve`` (``shutdown`` closes it otherwise)."""
        with contextlib.suppress(*READ_ERRORS):
            await self._listener.aclose()

    # --- application commands (synchronous core calls, then the flush) -----------------------

    def send_frame(self, connection_id: ConnectionId, frame: Frame) -> bool:
        """Queue ``frame``; ``ConnectionClosed`` if the client is not connected."""
        try:
            sent = self.protocol.send_frame(connection_id, frame, self._now())
        except InvalidState as exc:
            raise ConnectionClosed(str(exc)) from None
        self._flush()
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
            if self._flushed is None:
                self._flushed = anyio.Event()
            await self._flushed.wait()

    async def drain(self, connection_id: ConnectionId) -> None:
        """Wait until the connection's pending output is under the high-water mark."""
        connection = self._connections.get(connection_id)
        if connection is None:
            await anyio.lowlevel.checkpoint()
        else:
            await connection.outbox.wait_writable()

    def close(self, connection_id: ConnectionId, code: int = 1000, reason: str = "") -> None:
        self.protocol.close(connection_id, self._now(), code, reason)
        self._flush()

    async def wait_done(self, connection_id: ConnectionId) -> None:
        """Wait until the connection's socket is closed and its tasks are over."""
        connection = self._connections.get(connection_id)
        if connection is not None:
            await connection.wait_finished()

    @property
    def local_address(self) -> tuple[str, int]:
        address = self._listener.extra(SocketAttribute.local_address)
        assert isinstance(address, tuple), "a TCP listener has a (host, port, ...) address"
        return str(address[0]), int(address[1])

    # --- the flush choke point ---------------------------------------------------------------

    def _flush(self) -> None:
        for transmit in self.protocol.data_to_send():
            connection = self._connections.get(transmit.connection_id)
            if connection is None:
                continue
            connection.outbox.apply(transmit)
        events, fed = split_events(self.protocol.events_received(), self._connections)
        if events:
            try:
                self._sink.on_events(events)
            except Exception:
                self._log_internal_error("event sink failed")
        for connection in fed:
            # Only a reader's core call yields frames, and it awaits what is left over before
            # reading on: the list held nothing before this flush, so the order is kept.
            self._offer_frames(connection)
        deadline = self.protocol.next_deadline()
        self._timer.arm(deadline)
        if self._flushed is not None:
            self._flushed.set()
            self._flushed = None

    # --- tasks -------------------------------------------------------------------------------

    def _on_timer(self, now: float) -> None:
        self.protocol.handle_timer(now)
        self._flush()

    async def _accept_loop(self, tg: anyio.abc.TaskGroup) -> None:
        listener = self._listener
        listeners = (
            listener.listeners
            if isinstance(listener, anyio.streams.stapled.MultiListener)
            else [listener]
        )
        try:
            with self._accepting:
                async with anyio.create_task_group() as accepting:
                    for one in listeners:
                        assert isinstance(one, anyio.abc.SocketListener), "TCP listeners only"
                        accepting.start_soon(self._accept_from, one, tg)
        finally:
            self._accept_done.set()

    async def _accept_from(
        self, listener: anyio.abc.SocketListener, tg: anyio.abc.TaskGroup
    ) -> None:
        backoff = ACCEPT_BACKOFF[0]
        while True:
            try:
                stream = await listener.accept()
            except anyio.ClosedResourceError:
                return  # the listener was closed: nothing more to accept
            except (OSError, anyio.BrokenResourceError) as exc:
                # EMFILE/ENFILE/ENOBUFS/ENOMEM (trio wraps them in BrokenResourceError), or a
                # connection that died in the backlog: serve on, and accept again soon.
                self._log_accept_error(exc, backoff)
                await anyio.sleep(backoff)
                backoff = min(backoff * 2, ACCEPT_BACKOFF[1])
                continue
            backoff = ACCEPT_BACKOFF[0]
            tg.start_soon(self._handle, stream, tg)

    def _log_accept_error(self, exc: BaseException, backoff: float) -> None:
        cause = exc if isinstance(exc, OSError) else exc.__cause__
        code = cause.errno if isinstance(cause, OSError) else None
        name = errno.errorcode.get(code, "error") if code is not None else type(exc).__name__
        self._log.log(
            logging.WARNING,
            ("accept failed", name),
            "accept() failed (%s: %s): still serving the connections open; accepting again in"
            " %.2f s, backing off up to %.1f s",
            name,
            cause if cause is not None else exc,
            backoff,
            ACCEPT_BACKOFF[1],
        )

    def _log_internal_error(self, msg: str, *args: object) -> None:
        """A bug (ours or a sink's): with its traceback, but rate-limited like peer lines."""
        self._log.log(logging.ERROR, ("internal error", msg), msg, *args, exc_info=True)

    async def _handshake_tls(self, stream: anyio.abc.SocketStream) -> anyio.abc.ByteStream | None:
        """The TLS stream over ``stream``, or None (closed) if the handshake failed or took
        longer than ``open_timeout``."""
        assert self._ssl_context is not None
        bound = self.protocol.config.open_timeout
        try:
            with anyio.fail_after(bound if bound is not None else TLS_HANDSHAKE_FALLBACK):
                return await TLSStream.wrap(
                    stream,
                    server_side=True,
                    ssl_context=self._ssl_context,
                    standard_compatible=False,
                )
        except TLS_ERRORS as exc:
            remote = stream.extra(SocketAttribute.remote_address, None)
            self._log.log(
                logging.DEBUG,
                ("tls handshake failed",),
                "TLS handshake with %s failed: %s",
                remote,
                "timed out (open_timeout)" if isinstance(exc, TimeoutError) else repr(exc),
            )
            await anyio.aclose_forcefully(stream)
            return None

    async def _handle(self, socket_stream: anyio.abc.SocketStream, tg: anyio.abc.TaskGroup) -> None:
        stream: anyio.abc.ByteStream = socket_stream
        remote: object = None
        if self._ssl_context is not None:
            remote = socket_stream.extra(SocketAttribute.remote_address, None)
            tls = await self._handshake_tls(socket_stream)
            if tls is None:
                return
            stream = tls
        outbox = Outbox(
            stream,
            high_water=self._high_water,
            watch=self._watch,
            close_timeout=self.protocol.config.close_timeout,
        )
        direct = outbox.direct
        if direct is not None:
            remote = direct.remote_address()
        elif self._ssl_context is None:
            remote = socket_stream.extra(SocketAttribute.remote_address, None)
        connection_id = self.protocol.connection_made(self._now(), remote)
        connection = _Connection(connection_id, outbox)
        outbox.on_writable = lambda writable: self._on_writable(connection_id, writable)
        self._connections[connection_id] = connection
        try:
            # The writer runs in the server's task group: no task group (and cancel scope) of
            # its own per connection. Started first, it always runs: it closes the socket. On
            # asyncio, writing directly, it starts only if a write blocks or the close cannot
            # be made at once (a handshake, connect to close, usually needs none).
            if direct is not None:
                outbox.start_writer = lambda: tg.start_soon(self._write, connection)
            else:
                tg.start_soon(self._write, connection)
            try:
                self._flush()
                await self._read(connection, stream)
            except Exception:
                # A bug (ours or a sink's) ends this connection, never the server.
                self._log_internal_error(
                    "connection %d: internal error; connection dropped", connection_id
                )
                outbox.abort()  # the writer closes the socket at once
            await outbox.wait_closed()
        finally:
            # Forced out (internal error, or cancelled by a shutdown past its bound): the core
            # must still hear of it, so the session ends with exactly one disconnect event.
            self.protocol.connection_lost(connection_id, self._now())
            self._flush()
            outbox.discard()  # forced out before a writer ever ran: the socket is closed here
            del self._connections[connection_id]
            connection.mark_finished()
            try:
                self._sink.on_connection_done(connection_id)
            except Exception:
                self._log_internal_error("event sink failed")

    def _on_writable(self, connection_id: ConnectionId, writable: bool) -> None:
        self.protocol.set_writable(connection_id, writable)
        if writable:  # a pong may be owed
            self._flush()

    async def _read(self, connection: _Connection, stream: anyio.abc.ByteStream) -> None:
        outbox = connection.outbox
        direct = outbox.direct  # asyncio, a plain socket: read the transport directly
        while not outbox.ending:
            data = b""
            eof = lost = False
            try:
                if direct is not None:
                    data = await direct.receive()
                else:
                    data = await stream.receive(READ_SIZE)
            except anyio.EndOfStream:
                eof = True
            except READ_ERRORS:
                lost = True
            if outbox.closed:
                break  # the writer closes the socket (what woke this receive): nothing to feed
            now = self._now()
            if eof:
                self.protocol.receive_eof(connection.id, now)
            elif lost:
                self.protocol.connection_lost(connection.id, now)
                outbox.request_close()
            else:
                self.protocol.receive_data(connection.id, data, now)
            self._flush()
            if connection.frames:
                if direct is not None:
                    direct.pause_reading()  # the sink is full: read nothing meanwhile
                await self._deliver_frames(connection)
            if eof or lost:
                break

    def _offer_frames(self, connection: _Connection) -> None:
        frames = connection.frames
        taken = 0
        for event in frames:
            if not self._sink.offer_frame(event):
                break
            taken += 1
        del frames[:taken]

    async def _deliver_frames(self, connection: _Connection) -> None:
        """Await the sink for the frames it had no room for (the first of them was refused);
        the later ones are offered first, awaited only while it is full."""
        while connection.frames:
            frames, connection.frames = connection.frames, []
            for event in frames:
                if not self._sink.offer_frame(event):
                    await self._sink.on_frame(event)

    async def _write(self, connection: _Connection) -> None:
        def failed() -> None:
            self._log.log(
                logging.INFO,
                ("write failed",),
                "connection %d: write failed or timed out; aborting",
                connection.id,
            )
            self.protocol.connection_lost(connection.id, self._now())
            self._flush()

        # The outbox closes the socket when it is done: that ends a receive in progress (with
        # ClosedResourceError), without a cancel scope per read. Frames held are still delivered.
        try:
            await connection.outbox.run(failed)
        except Exception:
            # A bug (ours or a sink's, from the flush in failed()) ends this connection, never
            # the server: the socket is closed, the reader ends and the core hears of it.
            self._log_internal_error(
                "connection %d: internal error; connection dropped", connection.id
            )


async def listen_anyio(
    protocol: ServerProtocol, sink: ServerEventSink, options: ListenOptions
) -> AnyioServerDriver:
    """Bind a TCP (TLS if ``options.ssl_context``) listener and make a driver for it
    (``DriverFactory``)."""
    tcp = await anyio.create_tcp_listener(local_host=options.host, local_port=options.port)
    return AnyioServerDriver(
        protocol,
        tcp,
        sink,
        high_water=options.high_water,
        write_timeout=options.write_timeout,
        ssl_context=options.ssl_context,
        log=options.log,
    )
