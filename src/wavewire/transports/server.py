"""``WebsocketServerTransport``: Pipecat's WebSocket server transport on wavewire's core.

::

    async with WebsocketServerTransport(WebsocketServerParams(), port=8765) as transport:
        async for frame in transport.input():
            await transport.output().send(frame)

Entering binds and listens (then ``on_websocket_ready`` fires); leaving closes every client with
1001, bounded by ``close_timeout``, closes the listener and ends every task. Handlers run one
at a time, in event order, in a dedicated task: keep them short.

Two drivers move the bytes (``driver=``, same behaviour, same API): ``"anyio"`` (default) runs
on asyncio and trio through anyio streams and tasks; ``"asyncio"`` uses asyncio's own protocols
and transports (``loop.create_server``), runs only under asyncio and does less work per message.
Both implement ``wavewire.adapters.sink.ServerDriver``.

Audio. With ``audio_out_enabled``, the core cuts output audio into chunks and sends each at its
real-time place (``core/session/audio.py``); ``output().send()`` waits while the client's queue
holds ``audio_out_max_queued_secs`` of audio (backpressure), and sending audio without it is a
``ValueError``. ``InterruptionFrame`` drops the queued audio at once and is sent ahead of
everything: ``on_audio_interrupted(transport, client, dropped_ms)`` says how much was dropped
(also logged at debug, and kept in ``client.audio_interrupted_ms``). ``EndFrame`` plays out the
queued audio and ``audio_out_end_silence_secs`` of silence, then closes with 1000;
``CancelFrame`` closes at once. Both ``send`` calls return once the client is disconnected.
Received audio reaches ``input()`` only with ``audio_in_enabled``, whole sample frames only
(``transports/streams.py``, ``AudioInputGate``), and without the WAV header that Pipecat's client
puts at the start of each audio message by default (the core strips it: ``core/inbound.py``).
"""

from __future__ import annotations

import contextlib
import logging
import weakref
from collections import deque
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal, TypeVar, get_args

import anyio
import anyio.abc
import anyio.lowlevel

from wavewire.adapters.anyio_server import listen_anyio
from wavewire.adapters.asyncio_server import listen_asyncio
from wavewire.adapters.errors import ConnectionClosed
from wavewire.adapters.ratelimit import LogLimiter
from wavewire.adapters.sink import DriverFactory, ListenOptions, ServerDriver
from wavewire.core.events import (
    AudioInterrupted,
    ClientConnected,
    ClientDisconnected,
    ClientRejected,
    ConnectionId,
    ConnectionInfo,
    DisconnectCause,
    Drained,
    FrameReceived,
    HandshakeFailed,
    MessageDropped,
    ServerEvent,
    SessionTimeout,
)
from wavewire.core.frames import Frame
from wavewire.core.server import ServerProtocol
from wavewire.core.session.audio import AudioBufferFull
from wavewire.transports.events import EventHandlers
from wavewire.transports.params import WebsocketServerParams
from wavewire.transports.streams import (
    ENDING_FRAMES,
    AudioInputGate,
    FrameInput,
    FrameOutput,
    FrameQueue,
    check_output,
)

__all__ = ["ClientHandle", "DriverName", "WebsocketServerTransport", "WireStats"]


logger = logging.getLogger("wavewire.server")

H = TypeVar("H", bound=Callable[..., Any])

#: The drivers ``WebsocketServerTransport(driver=...)`` accepts.
DriverName = Literal["anyio", "asyncio"]
DRIVERS: dict[str, DriverFactory] = {"anyio": listen_anyio, "asyncio": listen_asyncio}

SERVER_EVENTS = (
    "on_audio_interrupted",
    "on_client_connected",
    "on_client_disconnected",
    "on_session_timeout",
    "on_websocket_ready",
)


class _Inbox:
    """One client's input queue (policy ``multi``). Whoever may still read it holds it: the
    client's handle until its ``on_client_disconnected`` handlers have run, and every
    ``FrameInput`` made from it; the driver only reaches the queue through the handle's weak
    reference. Once nobody holds it, it is collected, and closing the queue then frees the
    frames nobody will read and lets a driver waiting to add one go on (dropping it)."""

    __slots__ = ("__weakref__", "queue")

    def __init__(self, size: int) -> None:
        self.queue = FrameQueue(size)

    def __del__(self) -> None:
        self.queue.close()


def _ended() -> FrameQueue:
    """An input with nothing in it and nothing to come."""
    queue = FrameQueue(0)
    queue.close()
    return queue


@dataclass(frozen=True, slots=True)
class WireStats:
    """``WebsocketServerTransport.wire_stats()``: the core's own wire counters."""

    connections: int
    bytes_received: int
    bytes_sent: int


class ClientHandle:
    """One connected client, as handlers and applications see it: the same object in every
    event of its life (hashable, so usable as a key)."""

    def __init__(self, transport: WebsocketServerTransport, info: ConnectionInfo) -> None:
        self._transport = transport
        self.info = info
        #: Set at the disconnect; made only when a task waits for it (most never do).
        self._gone: anyio.Event | None = None
        #: Set once disconnected: how the session ended.
        self.disconnect: ClientDisconnected | None = None
        #: Policy ``multi``: the input queue, held until the disconnect has been handled...
        self._inbox: _Inbox | None = None
        #: ...then only followed, while readers hold it.
        self._inbox_ref: weakref.ref[_Inbox] | None = None
        #: Milliseconds of queued output audio each ``InterruptionFrame`` dropped, in order.
        self.audio_interrupted_ms: list[float] = []

    @property
    def id(self) -> ConnectionId:
        return self.info.id

    @property
    def remote(self) -> object:
        """The peer's address, e.g. ``("127.0.0.1", 50123)``."""
        return self.info.remote

    @property
    def path(self) -> str:
        return self.info.path

    @property
    def headers(self) -> tuple[tuple[str, str], ...]:
        return self.info.headers

    def header(self, name: str) -> str | None:
        return self.info.header(name)

    @property
    def connected(self) -> bool:
        return self.disconnect is None

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close the session and wait until it is over (bounded by ``close_timeout``)."""
        self._transport._driver_or_raise().close(self.id, code, reason)
        await self._wait_gone()

    def input(self) -> FrameInput:
        """Frames from this client (policy ``multi`` or a ``session_key`` only: otherwise
        ``transport.input()``).

        Frames a departed client sent are kept for the readers made before its
        ``on_client_disconnected`` handlers returned; a reader made later ends at once if
        nobody held the input meanwhile (they were freed)."""
        if self._inbox_ref is None:
            raise RuntimeError(
                "client.input() needs client_policy='multi' or a session_key; use transport.input()"
            )
        inbox = self._live_inbox()
        if inbox is None:
            return FrameInput(_ended())
        return FrameInput(inbox.queue, keep=inbox)

    async def _wait_gone(self) -> None:
        """Wait until the client is disconnected."""
        if self.disconnect is not None:
            await anyio.lowlevel.checkpoint()
            return
        if self._gone is None:
            self._gone = anyio.Event()
        await self._gone.wait()

    def _mark_gone(self, event: ClientDisconnected) -> None:
        self.disconnect = event
        if self._gone is not None:
            self._gone.set()

    def _live_inbox(self) -> _Inbox | None:
        return None if self._inbox_ref is None else self._inbox_ref()

    def _release_inbox(self) -> None:
        """The disconnect was handled: from now on the readers alone keep the input."""
        self._inbox = None

    def output(self) -> FrameOutput:
        """Frames to this client; ``ConnectionClosed`` once it is gone."""
        return FrameOutput(self._send)

    def offer(self, frame: Frame) -> bool:
        """Queue ``frame`` without waiting: False, with nothing queued, while this client's
        audio queue is full (``wait_audio_writable``, then offer it again); ``ConnectionClosed``
        once the client is gone. For a caller that decides, between tries, whether the frame is
        still wanted (``wavewire.pipecat`` drops interrupted audio that way); others use
        ``output().send()``."""
        check_output(frame, self._transport.params.audio_out_enabled)
        if self.disconnect is not None:
            raise ConnectionClosed(f"client {self.id} is disconnected")
        try:
            self._transport._driver_or_raise().send_frame(self.id, frame)
        except AudioBufferFull:
            return False
        return True

    async def wait_audio_writable(self) -> None:
        """Wait until this client's audio queue accepts audio again (a paced chunk left, or an
        interruption emptied it); ``ConnectionClosed`` if the client goes first."""
        await self._transport._driver_or_raise().wait_audio_writable(self.id)

    async def drain(self) -> None:
        """Wait while this client's socket buffer is above ``max_output_buffer``."""
        await self._transport._driver_or_raise().drain(self.id)

    async def _send(self, frame: Frame) -> None:
        # The queue is full: wait until the timer has sent enough chunks, then retry.
        while not self.offer(frame):
            await self.wait_audio_writable()
        if isinstance(frame, ENDING_FRAMES):
            await self._wait_gone()  # after the drain (EndFrame) and the close handshake
        else:  # drain(), without its call: this is every send's path
            await self._transport._driver_or_raise().drain(self.info.id)

    def __repr__(self) -> str:
        return f"<ClientHandle id={self.id} remote={self.remote!r} path={self.path!r}>"


class WebsocketServerTransport:
    """See the module docstring. ``input_name``/``output_name`` are kept for Pipecat parity.

    ``driver``: ``"anyio"`` (asyncio or trio) or ``"asyncio"`` (native asyncio protocols;
    entering it under trio raises ``RuntimeError``).
    """

    def __init__(
        self,
        params: WebsocketServerParams | None = None,
        host: str = "localhost",
        port: int = 8765,
        input_name: str | None = None,
        output_name: str | None = None,
        *,
        driver: DriverName = "anyio",
    ) -> None:
        if driver not in get_args(DriverName):
            raise ValueError(f"unknown driver {driver!r}; choose from {get_args(DriverName)}")
        self.driver: DriverName = driver
        self.params = params if params is not None else WebsocketServerParams()
        self._config = self.params.server_config()  # validate now, not when entering
        self.host = host
        self.port = port
        self.input_name = input_name
        self.output_name = output_name
        self._handlers = EventHandlers(SERVER_EVENTS)
        self._driver: ServerDriver | None = None
        self._stack: AsyncExitStack | None = None
        self._tasks: anyio.abc.TaskGroup | None = None
        self._handles: dict[ConnectionId, ClientHandle] = {}
        self._current: ClientHandle | None = None
        # Several sessions at once (policy multi, or one per session key): each client has its
        # own input, and transport.input()/output() have no single client to mean.
        self._multi = self.params.client_policy == "multi" or self.params.session_key is not None
        self._pending: deque[tuple[str, tuple[object, ...]]] = deque()
        self._pending_wake = anyio.Event()
        self._closing = False
        self._dispatcher_done = anyio.Event()
        #: Policies ``replace``/``reject``: the input of whoever is the current client.
        self._input_queue: FrameQueue | None = None
        #: Policy ``multi``: every client's input still held by someone, closed on exit.
        self._inboxes: weakref.WeakSet[_Inbox] = weakref.WeakSet()
        #: Every per-peer log line of this transport and its driver goes through it.
        self._log = LogLimiter(logger)
        self._audio_in = AudioInputGate(self.params.audio_in_enabled, self._log)

    # --- event handlers ----------------------------------------------------------------------

    def event_handler(self, name: str) -> Callable[[H], H]:
        """Decorator: ``@transport.event_handler("on_client_connected")``."""
        return self._handlers.decorator(name)

    def add_event_handler(self, name: str, handler: Callable[..., Any]) -> None:
        self._handlers.add(name, handler)

    # --- lifecycle ---------------------------------------------------------------------------

    async def __aenter__(self) -> WebsocketServerTransport:
        if self._stack is not None:
            raise RuntimeError("this transport is already running")
        options = ListenOptions(
            host=self.host,
            port=self.port,
            ssl_context=self.params.ssl_context,
            high_water=self.params.max_output_buffer,
            write_timeout=self.params.write_timeout,
            log=self._log,
        )
        driver = await self._start_driver(options)
        async with AsyncExitStack() as stack:
            stack.push_async_callback(driver.aclose)
            self._input_queue = FrameQueue(self.params.max_input_queue)
            tg = await stack.enter_async_context(anyio.create_task_group())
            self._tasks = tg
            await tg.start(driver.serve)
            tg.start_soon(self._dispatch_events)
            self._driver = driver
            self.port = driver.local_address[1]
            self._queue("on_websocket_ready")
            self._stack = stack.pop_all()
        return self

    async def _start_driver(self, options: ListenOptions) -> ServerDriver:
        """Bind, listen and make the driver (``wavewire.asgi`` overrides it: there the ASGI
        server listens)."""
        return await DRIVERS[self.driver](ServerProtocol(self._config), self, options)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        stack, driver = self._stack, self._driver
        assert stack is not None and driver is not None
        # Input is over: drivers blocked on a full input queue must not hold up the close
        # handshakes (their frames are dropped), and the application's input loops end.
        assert self._input_queue is not None
        self._input_queue.close()
        for inbox in list(self._inboxes):
            inbox.queue.close()
        try:
            with anyio.CancelScope(shield=True):
                await driver.shutdown()
                # Let handlers see the disconnects the shutdown caused, within the close bound.
                self._closing = True
                self._pending_wake.set()
                with anyio.move_on_after(self.params.close_timeout):
                    await self._dispatcher_done.wait()
        finally:
            self._driver = None
            self._stack = None
            for inbox in list(self._inboxes):
                inbox.queue.close()
            # Whatever is left (a handler that never returns) is cancelled: no task outlives us.
            assert self._tasks is not None
            self._tasks.cancel_scope.cancel()
            self._tasks = None
            await stack.__aexit__(exc_type, exc, tb)

    async def drain(self) -> None:
        """Graceful drain: stop adopting clients (upgrades are refused with 503 and
        ``Retry-After``, ``/readyz`` answers 503) and return once every session has ended;
        those still running after ``drain_timeout`` are closed with 1012 "service restart"
        (a wavewire client reconnects after it, with backoff). The port stays open meanwhile
        (health checks); leave the transport afterwards to close it."""
        await self._driver_or_raise().drain_sessions()

    # --- application API ---------------------------------------------------------------------

    def input(self) -> FrameInput:
        """Frames from the current client (policies ``replace``/``reject``)."""
        if self._multi:
            raise RuntimeError(
                "several clients (client_policy='multi' or a session_key):"
                " read each client's client.input()"
            )
        if self._input_queue is None:
            raise RuntimeError("the transport is not running: use 'async with transport:'")
        return FrameInput(self._input_queue)

    def output(self) -> FrameOutput:
        """Frames to the current client; dropped while no client is connected (as Pipecat)."""
        if self._multi:
            raise RuntimeError(
                "several clients (client_policy='multi' or a session_key):"
                " send with each client's client.output()"
            )
        return FrameOutput(self._send_current)

    @property
    def client(self) -> ClientHandle | None:
        """The current client (policies ``replace``/``reject``)."""
        return self._current

    @property
    def clients(self) -> tuple[ClientHandle, ...]:
        """Every connected client, oldest first."""
        return tuple(h for h in self._handles.values() if h.connected)

    @property
    def audio_in_dropped(self) -> int:
        """Received audio frames dropped because they held a partial sample frame."""
        return self._audio_in.dropped

    def wire_stats(self) -> WireStats | None:
        """TCP connections open and bytes moved, as wavewire's own core counts them; None
        when another server owns the wire (``wavewire.asgi``) or the transport is stopped."""
        protocol = getattr(self._driver, "protocol", None)
        if not isinstance(protocol, ServerProtocol):
            return None
        return WireStats(
            connections=protocol.connection_count,
            bytes_received=protocol.bytes_received,
            bytes_sent=protocol.bytes_sent,
        )

    @property
    def address(self) -> tuple[str, int]:
        """The bound address (read the port from here when listening on port 0)."""
        return self._driver_or_raise().local_address

    # --- ServerEventSink (called by the driver) ----------------------------------------------

    def on_events(self, events: list[ServerEvent]) -> None:
        observer = self.params.event_observer
        if observer is not None:
            try:
                observer(events)
            except Exception:
                logger.exception("event observer failed")
        for event in events:
            if isinstance(event, ClientConnected):
                handle = ClientHandle(self, event.connection)
                self._handles[handle.id] = handle
                if self._multi:
                    inbox = _Inbox(self.params.max_input_queue)
                    handle._inbox, handle._inbox_ref = inbox, weakref.ref(inbox)
                    self._inboxes.add(inbox)
                else:
                    self._current = handle
                self._queue("on_client_connected", handle)
            elif isinstance(event, ClientDisconnected):
                handle = self._handles[event.connection.id]
                handle._mark_gone(event)
                if self._current is handle:
                    self._current = None
                self._queue("on_client_disconnected", handle)
                peer = f"client {handle.id}"
                self._log.forget(("message dropped", peer), logging.WARNING, peer)
                self._log.forget(("input audio dropped", peer), logging.WARNING, peer)
            elif isinstance(event, AudioInterrupted):
                logger.debug(
                    "client %d: interrupted, %.1f ms of queued audio dropped",
                    event.connection.id,
                    event.dropped_ms,
                )
                interrupted = self._handles.get(event.connection.id)
                if interrupted is not None:
                    interrupted.audio_interrupted_ms.append(event.dropped_ms)
                    self._queue("on_audio_interrupted", interrupted, event.dropped_ms)
            elif isinstance(event, SessionTimeout):
                self._queue("on_session_timeout", self._handles[event.connection.id])
            elif isinstance(event, ClientRejected):
                self._log.log(
                    logging.INFO,
                    ("rejected",),
                    "client %s rejected (%d): %s",
                    event.connection,
                    event.code,
                    event.reason,
                )
            elif isinstance(event, Drained):
                logger.info("drained: %d session(s) closed at the drain deadline", event.closed)
            elif isinstance(event, HandshakeFailed):
                self._log.log(
                    logging.INFO,
                    ("handshake failed",),
                    "connection %d: handshake failed (%s): %s",
                    event.connection_id,
                    event.status_code,
                    event.detail,
                )
            elif isinstance(event, MessageDropped):
                self._log.log(
                    logging.WARNING,
                    ("message dropped", f"client {event.connection.id}"),
                    "client %d: message dropped (%d so far): %s",
                    event.connection.id,
                    event.dropped_total,
                    event.detail,
                )

    def offer_frame(self, event: FrameReceived) -> bool:
        queue = self._frame_destination(event)
        return queue is None or queue.offer(event.frame)

    async def on_frame(self, event: FrameReceived) -> None:
        queue = self._frame_destination(event)
        if queue is not None:
            await queue.put(event.frame)

    def on_connection_done(self, connection_id: ConnectionId) -> None:
        handle = self._handles.pop(connection_id, None)
        inbox = None if handle is None else handle._live_inbox()
        if inbox is not None:
            inbox.queue.end()  # a reader gets what is buffered, then the end

    def input_pending(self, connection_id: ConnectionId) -> bool:
        handle = self._handles.get(connection_id)
        if handle is None:
            return False
        if handle._inbox_ref is None:
            queue = self._input_queue
        else:
            inbox = handle._live_inbox()
            queue = None if inbox is None else inbox.queue
        return queue is not None and len(queue) > 0

    # --- internals ---------------------------------------------------------------------------

    def _frame_destination(self, event: FrameReceived) -> FrameQueue | None:
        """Where a received frame goes, or None if it is dropped."""
        handle = self._handles.get(event.connection.id)
        if handle is None:
            return None
        disconnect = handle.disconnect
        if disconnect is not None and disconnect.cause is DisconnectCause.REPLACED:
            return None  # a replaced client's last input is stale, like its dropped output
        if not self._audio_in.admit(event.frame, event.connection.id):
            return None  # audio input off (as Pipecat), or not whole samples (counted)
        if handle._inbox_ref is None:
            return self._input_queue
        inbox = handle._live_inbox()
        return None if inbox is None else inbox.queue  # None: nobody will ever read it

    def _driver_or_raise(self) -> ServerDriver:
        if self._driver is None:
            raise ConnectionClosed("the transport is not running")
        return self._driver

    async def _send_current(self, frame: Frame) -> None:
        check_output(frame, self.params.audio_out_enabled)
        handle = self._current
        if handle is None:
            await anyio.lowlevel.checkpoint()  # dropped; still a checkpoint for send loops
            return
        with contextlib.suppress(ConnectionClosed):  # gone meanwhile: dropped, as with no client
            await handle._send(frame)

    def _queue(self, name: str, *args: object) -> None:
        self._pending.append((name, args))
        self._pending_wake.set()

    async def _dispatch_events(self) -> None:
        """The one task that runs handlers, in event order, until the transport closes."""
        try:
            while True:
                while self._pending:
                    name, args = self._pending.popleft()
                    await self._handlers.call(name, self, *args)
                    if name == "on_client_disconnected":
                        # Let readers the handlers started take hold of the input first.
                        await anyio.lowlevel.checkpoint()
                        handle = args[0]
                        assert isinstance(handle, ClientHandle)
                        handle._release_inbox()
                if self._closing:
                    return
                self._pending_wake = anyio.Event()
                await self._pending_wake.wait()
        finally:
            self._dispatcher_done.set()
