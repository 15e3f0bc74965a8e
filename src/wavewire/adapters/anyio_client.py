"""Drives a ``ClientProtocol`` over an anyio TCP (or TLS) stream, on asyncio or trio.

Two phases:

* ``AnyioClientDriver.connect`` opens the connection inline, in the caller's task: TCP, TLS for
  ``wss``, then the opening handshake, all within ``open_timeout``. It returns a driver whose
  connection is open, or raises: a ``HandshakeError`` subclass (``InvalidHandshake``,
  ``HandshakeRejected``, ``HandshakeTimeout``) or ``ConnectError`` (TCP or TLS failed). No task
  is started and nothing is left open when it raises.
* ``run`` then serves the open connection until its socket is closed: a reader (socket ->
  ``receive_data``/``receive_eof``), a writer (the connection's ``Outbox``) and a timer task for
  ``next_deadline()``. Every core call is followed by ``_flush()``, the one choke point
  (docs/architecture.md, "Adapter rules"). Received frames are awaited by the reader through the
  sink, so a slow consumer stops the reading of the socket instead of growing a queue.

The clock is ``anyio.current_time()``; the random source given to the core is ``os.urandom``.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import ssl
from typing import Protocol

import anyio
import anyio.abc
import anyio.lowlevel

from wavewire.adapters.errors import ConnectionClosed
from wavewire.adapters.outbox import WRITE_ERRORS, Outbox, WriteWatch
from wavewire.adapters.timer import DeadlineTimer, bound_clock
from wavewire.core.client import ClientProtocol
from wavewire.core.config import ClientConfig
from wavewire.core.errors import HandshakeTimeout, InvalidState, WavewireError
from wavewire.core.events import (
    ClientEvent,
    Connected,
    ConnectFailed,
    ConnectionInfo,
    FrameReceived,
)
from wavewire.core.frames import Frame
from wavewire.core.protocol.connection import State
from wavewire.core.protocol.handshake import WebSocketURI

__all__ = ["AnyioClientDriver", "ClientEventSink", "ConnectError"]

logger = logging.getLogger("wavewire.client")

#: Bytes asked of one receive: what asyncio reads from a socket at most (256 KiB), so that
#: anyio never splits (copies) what one read brought.
READ_SIZE = 256 * 1024
#: Exceptions that mean the socket is gone, mapped at the backend boundary.
READ_ERRORS = (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError)


class ConnectError(WavewireError, ConnectionError):
    """The TCP connection or the TLS handshake to the server failed (refused, unreachable,
    unknown host, untrusted certificate...). An ``OSError``; the original is its ``__cause__``."""


class ClientEventSink(Protocol):
    """What a client driver tells the layer above it (the transport)."""

    def on_events(self, events: list[ClientEvent]) -> None:
        """Every event after ``Connected`` except ``FrameReceived``, in core order, from inside
        the flush. Must not block or call back into the driver's core-feeding methods."""
        ...

    async def on_frame(self, event: FrameReceived) -> None:
        """One received frame, awaited by the reader (receive backpressure)."""
        ...


class AnyioClientDriver:
    """One open client connection; see the module docstring. Create it with ``connect``."""

    def __init__(
        self,
        protocol: ClientProtocol,
        stream: anyio.abc.ByteStream,
        sink: ClientEventSink,
        *,
        early_events: list[ClientEvent],
        high_water: int,
        write_timeout: float | None,
    ) -> None:
        connection = protocol.connection
        assert connection is not None, "the driver is created once the handshake completed"
        self.protocol = protocol
        self.connection: ConnectionInfo = connection
        self._stream = stream
        self._sink = sink
        self._early_events = early_events
        #: ``anyio.current_time``, its backend looked up once.
        self._now = bound_clock()
        self._watch = None if write_timeout is None else WriteWatch(write_timeout, self._now)
        self._outbox = Outbox(
            stream,
            high_water=high_water,
            watch=self._watch,
            close_timeout=protocol.config.close_timeout,
        )
        self._frames: list[FrameReceived] = []
        self._timer = DeadlineTimer(self._on_timer)
        # Set (and dropped) by the next flush: what audio senders blocked on a full queue wait on.
        self._flushed: anyio.Event | None = None
        self._receive_scope = anyio.CancelScope()
        self._stop_reading = False
        #: Set once the socket is closed and every task of ``run`` is over.
        self.done = anyio.Event()

    # --- phase 1: connect --------------------------------------------------------------------

    @classmethod
    async def connect(
        cls,
        uri: str,
        config: ClientConfig,
        sink: ClientEventSink,
        *,
        ssl_context: ssl.SSLContext | None = None,
        high_water: int = 256 * 1024,
        write_timeout: float | None = 10.0,
    ) -> AnyioClientDriver:
        """Connect to ``uri`` and complete the opening handshake; see the module docstring.

        ``ssl_context`` is for ``wss`` only; None there means ``ssl.create_default_context()``.
        """
        protocol = ClientProtocol(uri, config, random_bytes=os.urandom, now=anyio.current_time())
        target = protocol.uri
        if ssl_context is not None and not target.secure:
            raise ValueError(f"an ssl_context was given for {uri!r}: use a wss:// URI for TLS")
        if target.secure and ssl_context is None:
            ssl_context = ssl.create_default_context()
        # The core's open timer runs from its creation: TCP and TLS count against it too.
        deadline = protocol.next_deadline()
        stream = await _open_stream(target, ssl_context, deadline)
        try:
            events = await _handshake(protocol, stream, write_timeout)
        except BaseException:
            await anyio.aclose_forcefully(stream)
            raise
        return cls(
            protocol,
            stream,
            sink,
            early_events=events,
            high_water=high_water,
            write_timeout=write_timeout,
        )

    # --- phase 2: run ------------------------------------------------------------------------

    async def run(self) -> None:
        """Serve the connection until its socket is closed; never raises for the peer's sake.

        If cancelled, the socket is aborted and the core told (one ``Disconnected`` still
        reaches the sink)."""
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._timer.run)
                if self._watch is not None:
                    tg.start_soon(self._watch.run)
                async with anyio.create_task_group() as io:
                    io.start_soon(self._write)
                    self._route(self._early_events)
                    self._early_events = []
                    self._flush()
                    await self._read()
                tg.cancel_scope.cancel()
        except Exception:
            # A bug (ours or the sink's) ends this connection, not the application.
            logger.exception("client connection: internal error; connection dropped")
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.aclose_forcefully(self._stream)
            self.protocol.connection_lost(anyio.current_time())
            self._flush()
            self.done.set()

    async def abort(self) -> None:
        """Close the socket at once (for a driver that will never ``run``)."""
        await anyio.aclose_forcefully(self._stream)

    # --- application commands ----------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """True until the close handshake starts or the connection ends."""
        return self.protocol.state is State.OPEN

    def send_frame(self, frame: Frame) -> bool:
        """Queue ``frame``; ``ConnectionClosed`` once the connection is closing or closed;
        ``AudioBufferFull`` (nothing queued) while the audio queue is full: await
        ``wait_audio_writable``, then send it again."""
        try:
            sent = self.protocol.send_frame(frame, self._now())
        except InvalidState as exc:
            raise ConnectionClosed(str(exc)) from None
        self._flush()
        return sent

    async def wait_audio_writable(self) -> None:
        """Wait until the audio queue accepts audio (checked after each flush: the timer's
        sends free the space); ``ConnectionClosed`` if the connection closes first."""
        while True:
            if self.protocol.state is not State.OPEN:
                raise ConnectionClosed("the connection is closed")
            if self.protocol.audio_writable:
                return
            if self._flushed is None:
                self._flushed = anyio.Event()
            await self._flushed.wait()

    async def drain(self) -> None:
        """Wait until pending output is under the high-water mark (a checkpoint at least once
        per ``DRAIN_YIELD_EVERY`` calls)."""
        await self._outbox.wait_writable()

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Start the close handshake; idempotent. Await ``done`` for the end."""
        self.protocol.close(anyio.current_time(), code, reason)
        self._flush()

    # --- the flush choke point ---------------------------------------------------------------

    def _flush(self) -> None:
        for transmit in self.protocol.data_to_send():
            self._outbox.apply(transmit)
        self._route(self.protocol.events_received())
        deadline = self.protocol.next_deadline()
        self._timer.arm(deadline)
        if self._flushed is not None:
            self._flushed.set()
            self._flushed = None

    def _route(self, events: list[ClientEvent]) -> None:
        others: list[ClientEvent] = []
        for event in events:
            if isinstance(event, FrameReceived):
                self._frames.append(event)
            else:
                others.append(event)
        if others:
            try:
                self._sink.on_events(others)
            except Exception:
                logger.exception("event sink failed")

    # --- tasks -------------------------------------------------------------------------------

    def _on_timer(self, now: float) -> None:
        self.protocol.handle_timer(now)
        self._flush()

    async def _read(self) -> None:
        await self._deliver_frames()  # any that came with the handshake response
        while not (self._outbox.close_requested or self._stop_reading):
            data = b""
            eof = lost = False
            self._receive_scope = anyio.CancelScope()
            with self._receive_scope:
                try:
                    data = await self._stream.receive(READ_SIZE)
                except anyio.EndOfStream:
                    eof = True
                except READ_ERRORS:
                    lost = True
            if self._receive_scope.cancel_called:
                break
            now = self._now()
            if eof:
                self.protocol.receive_eof(now)
            elif lost:
                self.protocol.connection_lost(now)
                self._outbox.request_close()
            else:
                self.protocol.receive_data(data, now)
            self._flush()
            await self._deliver_frames()
            if eof or lost:
                break

    async def _deliver_frames(self) -> None:
        while self._frames:
            await self._sink.on_frame(self._frames.pop(0))

    async def _write(self) -> None:
        def failed() -> None:
            logger.info("client connection: write failed or timed out; aborting")
            self.protocol.connection_lost(anyio.current_time())
            self._flush()

        await self._outbox.run(failed)
        # The socket is closed: stop a reader blocked on it.
        self._stop_reading = True
        self._receive_scope.cancel()


# --- connecting ----------------------------------------------------------------------------------


async def _open_stream(
    target: WebSocketURI, ssl_context: ssl.SSLContext | None, deadline: float | None
) -> anyio.abc.ByteStream:
    """TCP, then TLS if ``ssl_context``; failures become ``ConnectError``/``HandshakeTimeout``."""
    where = f"{target.host}:{target.port}"
    stream: anyio.abc.ByteStream | None = None
    with anyio.CancelScope(deadline=math.inf if deadline is None else deadline) as scope:
        try:
            if ssl_context is None:
                stream = await anyio.connect_tcp(target.host, target.port)
            else:
                # No TLS close_notify exchange: the WebSocket close handshake ends the session.
                stream = await anyio.connect_tcp(
                    target.host, target.port, ssl_context=ssl_context, tls_standard_compatible=False
                )
        except ssl.SSLCertVerificationError as exc:
            detail = exc.verify_message or exc.reason or str(exc)
            raise ConnectError(
                f"TLS with {where} failed: certificate verify failed: {detail}"
            ) from exc
        except ssl.SSLError as exc:
            raise ConnectError(f"TLS with {where} failed: {exc.reason or exc}") from exc
        except OSError as exc:
            raise ConnectError(f"cannot connect to {where}: {_reason(exc)}") from exc
        except (anyio.BrokenResourceError, anyio.EndOfStream) as exc:
            raise ConnectError(
                f"TLS with {where} failed: the server closed the connection"
            ) from exc
    if stream is None:
        assert scope.cancelled_caught
        raise HandshakeTimeout(f"timed out connecting to {where}")
    return stream


def _reason(exc: OSError) -> str:
    """The most specific text of a connect failure (anyio wraps per-address errors)."""
    if isinstance(exc, socket.gaierror):  # its errno is not an OS errno: os.strerror says nothing
        return f"the host name did not resolve ({exc.strerror or exc})"
    for error in (exc.__cause__, exc):
        if isinstance(error, OSError) and error.errno:
            return os.strerror(error.errno)  # asyncio's own strerror is "Connect call failed"
    cause = exc.__cause__
    if isinstance(cause, OSError) and cause.strerror:
        return cause.strerror
    return exc.strerror or str(exc) or type(exc).__name__


async def _handshake(
    protocol: ClientProtocol, stream: anyio.abc.ByteStream, write_timeout: float | None
) -> list[ClientEvent]:
    """Send the upgrade request and read until the core decides; return the events from
    ``Connected`` on, or raise the ``ConnectFailed`` error."""
    events: list[ClientEvent] = []
    while True:
        # The outcome first: once connected, whatever the core has still to write (frames, or a
        # close if the server's first frames broke the protocol) goes through the driver's flush,
        # which honours drop_pending and close; here only the request is written.
        events += protocol.events_received()
        if events:
            first = events[0]
            if isinstance(first, ConnectFailed):
                raise first.error
            assert isinstance(first, Connected)
            return events[1:]
        for transmit in protocol.data_to_send():
            if not transmit.data:
                continue
            with anyio.move_on_after(write_timeout) as scope:
                try:
                    await stream.send(transmit.data)
                except WRITE_ERRORS:
                    protocol.connection_lost(anyio.current_time())
            if scope.cancelled_caught:
                protocol.connection_lost(anyio.current_time())
        deadline = protocol.next_deadline()
        data = b""
        eof = lost = False
        with anyio.CancelScope(deadline=math.inf if deadline is None else deadline):
            try:
                data = await stream.receive(READ_SIZE)
            except anyio.EndOfStream:
                eof = True
            except READ_ERRORS:
                lost = True
        now = anyio.current_time()
        if eof:
            protocol.receive_eof(now)
        elif lost:
            protocol.connection_lost(now)
        elif data:
            protocol.receive_data(data, now)
        else:
            protocol.handle_timer(now)  # the open timeout (harmless if early)
