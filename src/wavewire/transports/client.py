"""``WebsocketClientTransport``: Pipecat's WebSocket client transport on wavewire's core.

::

    async with WebsocketClientTransport("ws://localhost:8765/ws") as transport:
        await transport.output().send(TextFrame(text="hello"))
        async for frame in transport.input():
            ...

Entering connects (TCP, TLS for ``wss``, the opening handshake, within ``open_timeout``) and
raises if that fails: ``InvalidHandshake``, ``HandshakeRejected`` (with ``status_code``),
``HandshakeTimeout`` (all ``HandshakeError``), or ``ConnectError`` (an ``OSError``: refused,
unreachable, unknown host, untrusted certificate). Leaving closes the connection with 1000,
bounded by ``close_timeout``, and ends every task.

Events (``@transport.event_handler(name)``), run one at a time, in order, in one task:

* ``on_connected(transport, connection)``: a connection is open (again, after a reconnect).
* ``on_disconnected(transport, connection)``: it ended; ``connection.disconnect`` says how
  (code, reason, cause). Exactly once per ``on_connected``.
* ``on_reconnecting(transport, attempt, delay)``: with ``reconnect`` on, attempt ``attempt``
  starts after ``delay`` seconds (counted from 1 since the last connection that stayed open
  ``stable_after`` seconds: see ``ReconnectPolicy``).
* ``on_reconnect_failed(transport, error)``: reconnecting stopped for good: ``error`` is the
  last attempt's (a 4xx rejection, or the ``max_attempts``-th failure).
* ``on_audio_interrupted(transport, dropped_ms)``: an ``InterruptionFrame`` sent through
  ``output()`` dropped ``dropped_ms`` milliseconds of queued audio (also logged at debug).

Audio: with ``audio_out_enabled``, audio sent through ``output()`` is chunked and paced at real
time by the core, each chunk a complete WAV file when ``add_wav_header`` (Pipecat's default);
``send`` waits while ``audio_out_max_queued_secs`` of audio are queued; sending audio without
``audio_out_enabled`` is a ``ValueError``. ``EndFrame`` plays out the queued audio and the end
silence, then closes with 1000 (never reconnected); ``CancelFrame`` closes at once; both
``send`` calls return once the connection is over. Received audio reaches ``input()`` only with
``audio_in_enabled``, whole sample frames only.

``input()`` is one stream for the transport's life (across reconnects); it ends when the
transport will not connect again. ``output().send()`` raises ``ConnectionClosed`` once the
connection is closed and no reconnect is coming; while a reconnect is pending, frames are
dropped (real-time audio is stale by the time a new connection is up), as the server transport
drops frames while no client is connected.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from contextlib import AsyncExitStack
from types import TracebackType
from typing import Any, TypeVar

import anyio
import anyio.abc
import anyio.lowlevel

from wavewire.adapters.anyio_client import AnyioClientDriver, ConnectError
from wavewire.adapters.errors import ConnectionClosed
from wavewire.adapters.ratelimit import LogLimiter
from wavewire.core.errors import HandshakeError
from wavewire.core.events import (
    AudioInterrupted,
    ClientEvent,
    ConnectionInfo,
    Disconnected,
    FrameReceived,
    MessageDropped,
)
from wavewire.core.frames import Frame
from wavewire.core.protocol.handshake import parse_uri
from wavewire.core.session.audio import AudioBufferFull
from wavewire.transports.events import EventHandlers
from wavewire.transports.params import ReconnectPolicy, WebsocketClientParams
from wavewire.transports.streams import (
    ENDING_FRAMES,
    AudioInputGate,
    FrameInput,
    FrameOutput,
    FrameQueue,
    check_output,
)

__all__ = ["CLIENT_EVENTS", "ClientConnection", "WebsocketClientTransport"]

logger = logging.getLogger("wavewire.client")

H = TypeVar("H", bound=Callable[..., Any])

CLIENT_EVENTS = (
    "on_audio_interrupted",
    "on_connected",
    "on_disconnected",
    "on_reconnecting",
    "on_reconnect_failed",
)
#: Seconds the exit waits for the close handshake when ``close_timeout`` is None.
CLOSE_FALLBACK = 10.0


class ClientConnection:
    """One connection of a client transport to its server (a new one after each reconnect)."""

    def __init__(self, driver: AnyioClientDriver) -> None:
        self._driver = driver
        self.info: ConnectionInfo = driver.connection
        #: Set once disconnected: how the connection ended.
        self.disconnect: Disconnected | None = None
        #: Set by ``close()``: the application ended it, so it is never reconnected.
        self.closed_locally = False

    @property
    def remote(self) -> object:
        """The server's ``(host, port)`` as connected to."""
        return self.info.remote

    @property
    def path(self) -> str:
        return self.info.path

    @property
    def headers(self) -> tuple[tuple[str, str], ...]:
        """The server's 101 response headers, names lower-cased."""
        return self.info.headers

    def header(self, name: str) -> str | None:
        return self.info.header(name)

    @property
    def subprotocol(self) -> str | None:
        return self.info.subprotocol

    @property
    def connected(self) -> bool:
        return self.disconnect is None

    def offer(self, frame: Frame) -> bool:
        """Queue ``frame`` on this connection without waiting: False, with nothing queued,
        while its audio queue is full (``wait_audio_writable``, then offer it again);
        ``ConnectionClosed`` once it is closing. For a caller that decides, between tries,
        whether the frame is still wanted (``wavewire.pipecat``); others use the transport's
        ``output().send()``, which also checks ``audio_out_enabled``."""
        if self.disconnect is not None:
            raise ConnectionClosed("the connection is closed")
        if isinstance(frame, ENDING_FRAMES):
            self.closed_locally = True  # the application ends it: never reconnected
        try:
            self._driver.send_frame(frame)
        except AudioBufferFull:
            return False
        return True

    async def wait_audio_writable(self) -> None:
        """Wait until the audio queue accepts audio again; ``ConnectionClosed`` if the
        connection closes first."""
        await self._driver.wait_audio_writable()

    async def drain(self) -> None:
        """Wait while the socket buffer is above ``max_output_buffer``."""
        await self._driver.drain()

    async def wait_closed(self) -> None:
        """Wait until the connection is over (its socket closed)."""
        await self._driver.done.wait()

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close this connection (never reconnected) and wait until it is over, bounded by
        ``close_timeout``."""
        self.closed_locally = True
        self._driver.close(code, reason)
        await self._driver.done.wait()

    def __repr__(self) -> str:
        return f"<ClientConnection remote={self.remote!r} path={self.path!r}>"


class WebsocketClientTransport:
    """See the module docstring. ``input_name``/``output_name`` are kept for Pipecat parity."""

    def __init__(
        self,
        uri: str,
        params: WebsocketClientParams | None = None,
        input_name: str | None = None,
        output_name: str | None = None,
    ) -> None:
        self.uri = uri
        self.params = params if params is not None else WebsocketClientParams()
        # Validate now, not when entering.
        self._config = self.params.client_config()
        self._policy: ReconnectPolicy | None = self.params.reconnect_policy
        target = parse_uri(uri)
        if self.params.ssl_context is not None and not target.secure:
            raise ValueError(f"an ssl_context was given for {uri!r}: use a wss:// URI for TLS")
        self.input_name = input_name
        self.output_name = output_name
        self._handlers = EventHandlers(CLIENT_EVENTS)
        self._stack: AsyncExitStack | None = None
        self._tasks: anyio.abc.TaskGroup | None = None
        self._current: ClientConnection | None = None
        #: A reconnect is pending (sends are dropped rather than refused).
        self._reconnecting = False
        # Reconnect attempts since the last stable connection (the backoff's exponent), when
        # the current connection was adopted, and the close code that ended the last one.
        self._attempts = 0
        self._connected_at = 0.0
        self._last_code: int | None = None
        self._exiting = False
        self._pending: deque[tuple[str, tuple[object, ...]]] = deque()
        # Created on entering (anyio's events need a running event loop).
        self._pending_wake: anyio.Event
        self._dispatcher_done: anyio.Event
        self._finished: anyio.Event
        # The pending reconnect's scope (a new one per reconnect: trio's scopes are single-use).
        self._reconnect_scope: anyio.CancelScope | None = None
        #: ``input()``'s frames, one queue across reconnects.
        self._inbox: FrameQueue | None = None
        #: The server is a peer too: its bad messages must not flood our log either.
        self._log = LogLimiter(logger)
        self._audio_in = AudioInputGate(self.params.audio_in_enabled, self._log)

    # --- event handlers ----------------------------------------------------------------------

    def event_handler(self, name: str) -> Callable[[H], H]:
        """Decorator: ``@transport.event_handler("on_connected")``."""
        return self._handlers.decorator(name)

    def add_event_handler(self, name: str, handler: Callable[..., Any]) -> None:
        self._handlers.add(name, handler)

    # --- lifecycle ---------------------------------------------------------------------------

    async def __aenter__(self) -> WebsocketClientTransport:
        if self._stack is not None:
            raise RuntimeError("this transport is already running")
        self._exiting = False
        self._reconnecting = False
        self._pending_wake = anyio.Event()
        self._finished = anyio.Event()
        self._dispatcher_done = anyio.Event()
        self._reconnect_scope = None
        # Connect first, in this task: a failure is raised as is, with nothing left behind.
        driver = await self._connect()
        async with AsyncExitStack() as stack:
            stack.push_async_callback(driver.abort)
            self._inbox = FrameQueue(self.params.max_input_queue)
            tg = await stack.enter_async_context(anyio.create_task_group())
            self._tasks = tg
            self._adopt(driver)
            tg.start_soon(self._dispatch_events)
            tg.start_soon(self._run_connections, driver)
            self._stack = stack.pop_all()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        stack = self._stack
        assert stack is not None
        self._exiting = True
        self._reconnecting = False
        if self._reconnect_scope is not None:
            self._reconnect_scope.cancel()  # a pending reconnect is abandoned at once
        # Input is over: a driver blocked on a full input queue must not hold up the close.
        if self._inbox is not None:
            self._inbox.close()
        close_timeout = self.params.close_timeout
        bound = (close_timeout if close_timeout is not None else CLOSE_FALLBACK) + 1.0
        try:
            with anyio.CancelScope(shield=True):
                current = self._current
                if current is not None:
                    current.closed_locally = True
                    current._driver.close(1000)
                with anyio.move_on_after(bound):
                    await self._finished.wait()
                # Let handlers see the last disconnect, within the close bound.
                self._pending_wake.set()
                with anyio.move_on_after(bound):
                    await self._dispatcher_done.wait()
        finally:
            self._stack = None
            self._current = None
            # Whatever is left (a handler that never returns) is cancelled: no task outlives us.
            assert self._tasks is not None
            self._tasks.cancel_scope.cancel()
            self._tasks = None
            await stack.__aexit__(exc_type, exc, tb)

    # --- application API ---------------------------------------------------------------------

    def input(self) -> FrameInput:
        """Frames from the server, across reconnects; ends when the transport is done."""
        if self._inbox is None:
            raise RuntimeError("the transport is not running: use 'async with transport:'")
        return FrameInput(self._inbox)

    def output(self) -> FrameOutput:
        """Frames to the server; ``ConnectionClosed`` once closed for good."""
        return FrameOutput(self._send)

    @property
    def connection(self) -> ClientConnection | None:
        """The open connection, if any."""
        return self._current

    @property
    def connected(self) -> bool:
        return self._current is not None and self._current.connected

    @property
    def audio_in_dropped(self) -> int:
        """Received audio frames dropped because they held a partial sample frame."""
        return self._audio_in.dropped

    # --- ClientEventSink (called by the driver) ----------------------------------------------

    def on_events(self, events: list[ClientEvent]) -> None:
        for event in events:
            if isinstance(event, Disconnected):
                current = self._current
                if current is None or current.disconnect is not None:
                    continue
                current.disconnect = event
                self._current = None
                self._last_code = event.code
                if self._policy is not None:
                    connected_for = anyio.current_time() - self._connected_at
                    self._attempts = self._policy.attempts_after(self._attempts, connected_for)
                self._reconnecting = (
                    self._policy is not None
                    and not self._exiting
                    and not current.closed_locally
                    and self._policy.reconnects_after(event.code)
                )
                self._queue("on_disconnected", current)
            elif isinstance(event, MessageDropped):
                self._log.log(
                    logging.WARNING,
                    ("message dropped", "server"),
                    "message dropped (%d so far): %s",
                    event.dropped_total,
                    event.detail,
                )
            elif isinstance(event, AudioInterrupted):
                logger.debug("interrupted: %.1f ms of queued audio dropped", event.dropped_ms)
                self._queue("on_audio_interrupted", event.dropped_ms)

    async def on_frame(self, event: FrameReceived) -> None:
        frame = event.frame
        if not self._audio_in.admit(frame, "server"):
            return  # audio input off (as Pipecat), or not whole samples (counted)
        if self._inbox is not None:
            await self._inbox.put(frame)  # dropped once closed: nobody will read it any more

    # --- internals ---------------------------------------------------------------------------

    async def _connect(self) -> AnyioClientDriver:
        return await AnyioClientDriver.connect(
            self.uri,
            self._config,
            self,
            ssl_context=self.params.ssl_context,
            high_water=self.params.max_output_buffer,
            write_timeout=self.params.write_timeout,
        )

    def _adopt(self, driver: AnyioClientDriver) -> None:
        connection = ClientConnection(driver)
        self._current = connection
        self._connected_at = anyio.current_time()
        self._reconnecting = False
        self._queue("on_connected", connection)

    async def _run_connections(self, driver: AnyioClientDriver) -> None:
        """Run each connection to its end; reconnect as the policy says; then finish."""
        try:
            next_driver: AnyioClientDriver | None = driver
            while next_driver is not None:
                await next_driver.run()
                next_driver = None
                if self._reconnecting:
                    scope = self._reconnect_scope = anyio.CancelScope()
                    with scope:
                        next_driver = await self._reconnect()
        finally:
            self._reconnecting = False
            if self._inbox is not None:
                self._inbox.end()  # input() ends after what is buffered
            self._finished.set()

    async def _reconnect(self) -> AnyioClientDriver | None:
        policy = self._policy
        assert policy is not None
        failed = 0  # consecutive failed attempts in this reconnect, for max_attempts
        after_code = self._last_code
        while True:
            self._attempts += 1
            attempt = self._attempts
            delay = policy.delay(attempt, after_code=after_code)
            after_code = None  # later attempts follow a failed connect, not a close
            self._queue("on_reconnecting", attempt, delay)
            await anyio.sleep(delay)
            try:
                driver = await self._connect()
            except (HandshakeError, ConnectError) as exc:
                logger.info("reconnect attempt %d failed: %s", attempt, exc)
                failed += 1
                exhausted = policy.max_attempts is not None and failed >= policy.max_attempts
                if exhausted or not policy.retries_after(exc):
                    self._queue("on_reconnect_failed", exc)
                    return None
                continue
            if self._exiting:  # the exit came while connecting: do not adopt it
                driver.close(1000)
                return driver
            self._adopt(driver)
            return driver

    async def _send(self, frame: Frame) -> None:
        check_output(frame, self.params.audio_out_enabled)
        current = self._current
        if current is None or not current.connected:
            if self._reconnecting:
                await anyio.lowlevel.checkpoint()  # dropped; still a checkpoint for send loops
                return
            raise ConnectionClosed("the client transport is not connected")
        # The queue is full: wait until the timer has sent enough chunks, then retry.
        while not current.offer(frame):
            await current.wait_audio_writable()
        if isinstance(frame, ENDING_FRAMES):
            await current.wait_closed()  # after the drain (EndFrame) and the close handshake
        else:
            await current.drain()

    def _queue(self, name: str, *args: object) -> None:
        self._pending.append((name, args))
        self._pending_wake.set()

    async def _dispatch_events(self) -> None:
        """The one task that runs handlers, in event order, until the transport is left."""
        try:
            while True:
                while self._pending:
                    name, args = self._pending.popleft()
                    await self._handlers.call(name, self, *args)
                if self._exiting and self._finished.is_set():
                    return
                self._pending_wake = anyio.Event()
                await self._pending_wake.wait()
        finally:
            self._dispatcher_done.set()
