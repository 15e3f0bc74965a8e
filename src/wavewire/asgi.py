"""wavewire's sessions inside an ASGI server (uvicorn, hypercorn) or router (Starlette, FastAPI).

An ASGI server owns the socket, the HTTP handshake and the WebSocket framing; the application
sees ``websocket.connect``/``receive``/``disconnect`` and answers ``websocket.accept``/``send``/
``close``. Everything above the frames is wavewire's, the same code as on its own wire: the
session layer (``core/session/sessions.py``: client policy, exactly-once events, session timeout,
paced audio with backpressure and interruption, serializers, dropping a bad message) drives one
``AsgiLink`` per WebSocket through the ``Link`` seam (``core/link.py``), and admission is the
same pure decision (``core/admission.py``).

Two entry points::

    transport = AsgiServerTransport(WebsocketServerParams(...))

    # 1. The transport is an ASGI application (``uvicorn module:transport``): its lifespan
    #    runs the sessions; every WebSocket connection is a client.
    # 2. Inside a route you already have (Starlette/FastAPI); enter the transport in the
    #    application's lifespan (``async with transport:``), then:
    @app.websocket("/ws")
    async def ws(websocket: WebSocket) -> None:
        await transport.serve_websocket(websocket)   # returns when the session is over

The same events, ``input()`` and ``output()`` as ``WebsocketServerTransport``.

What this module guarantees, and what it leaves to the ASGI server (docs/asgi.md):

* admission: a refusal answers with the real status and body when the server offers the
  ``websocket.http.response`` extension, else ``websocket.close`` before accept (HTTP 403);
* every ``send`` is bounded by ``write_timeout``: past it the session ends (``ClientDisconnected``
  1006, logged with the reason) and the application returns, so the server closes the socket;
* ``max_message_size`` is enforced on each received message (close 1009); the memory a message
  takes before that is the server's bound (uvicorn ``--ws-max-size``);
* keepalive pings, open/close timeouts, permessage-deflate and the close handshake are the
  server's (uvicorn ``--ws-ping-interval``/``--ws-ping-timeout``, ``--ws-per-message-deflate``);
  ``open_timeout``, ``ping_*``, ``compression`` and ``ssl_context`` of the params are not used.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import signal
from collections import deque
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Coroutine,
    Iterator,
    MutableMapping,
    Sequence,
)
from dataclasses import dataclass, field
from typing import Any, Protocol

import anyio
import anyio.abc
import anyio.lowlevel

from wavewire.adapters.errors import ConnectionClosed
from wavewire.adapters.sink import ListenOptions, ServerDriver, ServerEventSink, split_events
from wavewire.adapters.timer import DeadlineTimer
from wavewire.core.admission import (
    Denial,
    HandshakeRequest,
    HttpRequest,
    Load,
    admit,
    health_response,
)
from wavewire.core.config import ServerConfig
from wavewire.core.errors import InvalidState
from wavewire.core.events import (
    ConnectionId,
    ConnectionInfo,
    DisconnectCause,
    FrameReceived,
    HandshakeFailed,
    ServerEvent,
)
from wavewire.core.frames import Frame
from wavewire.core.link import Ended
from wavewire.core.protocol.connection import check_close
from wavewire.core.session.sessions import Sessions
from wavewire.transports.params import WebsocketServerParams
from wavewire.transports.server import WebsocketServerTransport

__all__ = ["AsgiDriver", "AsgiLink", "AsgiServerTransport"]

logger = logging.getLogger("wavewire.asgi")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
#: What runs beside the transport for the server's life (an echo loop, a bot).
Main = Callable[[], Coroutine[Any, Any, None]]

#: Seconds a shutdown waits for sessions to close when ``close_timeout`` is None.
SHUTDOWN_FALLBACK = 10.0
#: What an ASGI server's ``send`` raises once the client is gone: uvicorn's
#: ``ClientDisconnected`` is an ``OSError`` (ASGI spec 2.4); others raise ``RuntimeError``
#: after a disconnect (Starlette's state checks, hypercorn).
SEND_ERRORS = (OSError, RuntimeError)


class _LinkState(enum.Enum):
    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"


class AsgiLink:
    """One accepted ASGI WebSocket as a ``Link``: the sessions' commands become an outbox of
    ASGI messages, sent in order by the connection's writer task."""

    def __init__(self, link_id: ConnectionId, wake: Callable[[], None]) -> None:
        self._id = link_id
        self._wake = wake
        self.state = _LinkState.OPEN
        self.outbox: deque[bytes | str] = deque()
        #: Bytes (or characters) in ``outbox``, for ``drain``'s high-water mark.
        self.pending = 0
        #: The close to send after the outbox, and the ``Ended`` it reports.
        self.closing: Ended | None = None

    @property
    def id(self) -> ConnectionId:
        return self._id

    @property
    def is_open(self) -> bool:
        return self.state is _LinkState.OPEN

    def send_message(self, data: bytes | str) -> None:
        if self.state is not _LinkState.OPEN:
            raise InvalidState(f"cannot send on a connection that is {self.state.value}")
        self.outbox.append(data)
        self.pending += len(data)
        self._wake()

    def close(
        self,
        code: int,
        reason: str,
        now: float,
        *,
        drop_pending: bool = False,
        cause: DisconnectCause = DisconnectCause.CLOSED_LOCALLY,
    ) -> None:
        if self.state is not _LinkState.OPEN:
            return
        if drop_pending:
            self.outbox.clear()
            self.pending = 0
        self.state = _LinkState.CLOSING
        self.closing = Ended(code, reason, cause)
        self._wake()


class _WebSocket(Protocol):
    """What ``serve_websocket`` uses of a Starlette ``WebSocket`` (duck-typed: Starlette is
    not a dependency of this module)."""

    scope: Scope

    async def receive(self) -> Message: ...
    async def send(self, message: Message) -> None: ...


@dataclass(eq=False)
class _Connection:
    link: AsgiLink
    frames: list[FrameReceived] = field(default_factory=list)
    wake: anyio.Event = field(default_factory=anyio.Event)
    #: Scope of the receive in progress; cancelled once the link is over.
    receive_scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)
    receiving: bool = False
    ended: bool = False
    done: anyio.Event = field(default_factory=anyio.Event)
    writable: anyio.Event = field(default_factory=anyio.Event)


class AsgiDriver:
    """Drives ``Sessions`` over ASGI WebSockets; implements ``ServerDriver`` (the ASGI server
    listens, so ``serve`` only runs the timer until ``shutdown``)."""

    def __init__(self, config: ServerConfig, sink: ServerEventSink, options: ListenOptions):
        self.config = config
        self._events: list[ServerEvent] = []
        self.sessions = Sessions(config, self._events)
        self._sink = sink
        self._high_water = options.high_water
        self._write_timeout = options.write_timeout
        self._next_id = 1
        self._connections: dict[ConnectionId, _Connection] = {}
        self._timer = DeadlineTimer(self._on_timer)
        self._flushed: anyio.Event | None = None
        self._shutting_down = False
        self._stopped = anyio.Event()

    # --- ServerDriver ------------------------------------------------------------------------

    @property
    def local_address(self) -> tuple[str, int]:
        """The ASGI server owns the address: ``("", 0)``."""
        return "", 0

    async def serve(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._timer.run)
            task_status.started()
            await self._stopped.wait()
            tg.cancel_scope.cancel()

    async def shutdown(self, code: int = 1001, reason: str = "server shutting down") -> None:
        with anyio.CancelScope(shield=True):
            self._shutting_down = True
            self.sessions.shutdown(anyio.current_time(), code, reason)
            self._flush()
            close_timeout = self.config.close_timeout
            bound = (close_timeout if close_timeout is not None else SHUTDOWN_FALLBACK) + 1.0
            with anyio.move_on_after(bound):
                for connection in list(self._connections.values()):
                    await connection.done.wait()
        self._stopped.set()

    async def drain_sessions(self) -> None:
        """Stop adopting (new WebSockets get 503, ``/readyz`` 503) and wait until every
        session has ended, those still running at ``drain_timeout`` closed with 1012."""
        now = anyio.current_time()
        timeout = self.config.drain_timeout
        self.sessions.drain(now, None if timeout is None else now + timeout)
        self._flush()
        while not self.sessions.drained:  # Drained comes from a flush: wait for the next one
            if self._flushed is None:
                self._flushed = anyio.Event()
            await self._flushed.wait()

    async def aclose(self) -> None:
        await anyio.lowlevel.checkpoint()

    def send_frame(self, connection_id: ConnectionId, frame: Frame) -> bool:
        try:
            sent = self.sessions.send_frame(connection_id, frame, anyio.current_time())
        except InvalidState as exc:
            raise ConnectionClosed(str(exc)) from None
        self._flush()
        return sent

    async def wait_audio_writable(self, connection_id: ConnectionId) -> None:
        while True:
            try:
                if self.sessions.audio_writable(connection_id):
                    return
            except InvalidState as exc:
                raise ConnectionClosed(str(exc)) from None
            if self._flushed is None:
                self._flushed = anyio.Event()
            await self._flushed.wait()

    async def drain(self, connection_id: ConnectionId) -> None:
        connection = self._connections.get(connection_id)
        while connection is not None and connection.link.pending > self._high_water:
            if connection.ended:
                break
            connection.writable = anyio.Event()
            await connection.writable.wait()
        await anyio.lowlevel.checkpoint()

    def close(self, connection_id: ConnectionId, code: int = 1000, reason: str = "") -> None:
        check_close(code, reason)
        self.sessions.close(connection_id, anyio.current_time(), code, reason)
        self._flush()

    async def wait_done(self, connection_id: ConnectionId) -> None:
        connection = self._connections.get(connection_id)
        if connection is not None:
            await connection.done.wait()

    # --- one WebSocket -----------------------------------------------------------------------

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one ASGI ``websocket`` connection, from ``websocket.connect`` to its end."""
        message = await receive()
        if message["type"] != "websocket.connect":
            return  # websocket.disconnect before connecting: nothing to do
        connection_id = ConnectionId(self._next_id)
        self._next_id += 1
        request = _handshake_request(scope)
        decision = (
            Denial(503, "server shutting down", (), b"")
            if self._shutting_down
            else admit(request, self.config, self.sessions.load())
        )
        if isinstance(decision, Denial):
            failed = HandshakeFailed(
                connection_id=connection_id,
                status_code=decision.status_code,
                detail=decision.detail,
            )
            self._emit(failed)
            with contextlib.suppress(*SEND_ERRORS), anyio.move_on_after(self._send_bound):
                await _deny(scope, send, decision)
            return
        accept: Message = {"type": "websocket.accept", "subprotocol": decision.subprotocol}
        if decision.headers:
            accept["headers"] = _encode_headers(decision.headers)
        try:
            with anyio.fail_after(self._send_bound):
                await send(accept)
        except (TimeoutError, *SEND_ERRORS):
            return
        info = ConnectionInfo(
            id=connection_id,
            remote=request.remote,
            path=request.path,
            headers=request.headers,
            subprotocol=decision.subprotocol,
            session_key=None
            if self.config.session_key is None
            else self.config.session_key.of(request),
        )
        await self._run(info, receive, send)

    async def handle_accepted(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve a WebSocket the application already accepted (a route that called
        ``websocket.accept()``): no admission, the subprotocol is unknown."""
        connection_id = ConnectionId(self._next_id)
        self._next_id += 1
        request = _handshake_request(scope)
        info = ConnectionInfo(
            id=connection_id, remote=request.remote, path=request.path, headers=request.headers
        )
        await self._run(info, receive, send)

    async def _run(self, info: ConnectionInfo, receive: Receive, send: Send) -> None:
        connection: _Connection | None = None

        def wake() -> None:
            if connection is not None:
                connection.wake.set()

        link = AsgiLink(info.id, wake)
        connection = _Connection(link)
        self._connections[info.id] = connection
        try:
            if self._shutting_down:
                link.close(1001, "server shutting down", anyio.current_time())
            else:
                self.sessions.adopt(link, info, anyio.current_time())
            self._flush()
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._write, connection, send)
                await self._read(connection, receive)
        except Exception:
            logger.exception("connection %d: internal error; connection dropped", info.id)
        finally:
            # However it ended, the sessions hear of it once (exactly one disconnect event).
            self._end(connection, Ended(1006, "", DisconnectCause.CONNECTION_LOST))
            del self._connections[info.id]
            connection.done.set()
            try:
                self._sink.on_connection_done(info.id)
            except Exception:
                logger.exception("event sink failed")

    async def _read(self, connection: _Connection, receive: Receive) -> None:
        limit = self.config.max_message_size
        while not connection.ended:
            message: Message | None = None
            connection.receive_scope = anyio.CancelScope()
            with connection.receive_scope:
                connection.receiving = True
                try:
                    message = await receive()
                finally:
                    connection.receiving = False
            if message is None:
                break  # cancelled: the link is over
            kind = message["type"]
            if kind == "websocket.disconnect":
                code = int(message.get("code", 1005))
                cause = (
                    DisconnectCause.CONNECTION_LOST
                    if code == 1006
                    else DisconnectCause.CLOSED_BY_PEER
                )
                self._end(connection, Ended(code, str(message.get("reason") or ""), cause))
                break
            if kind != "websocket.receive":
                continue
            data: bytes | str | None = message.get("bytes")
            if data is None:
                data = message.get("text")
            if data is None:
                continue
            # max_message_size counts bytes: a text message's UTF-8 length (4 bytes a character
            # at most, so short texts need no encoding to know they fit).
            size = len(data)
            if isinstance(data, str) and size * 4 > limit:
                size = len(data.encode("utf-8"))
            if size > limit:
                # RFC 6455 7.4.1: 1009. The server has buffered it (its own bound); we drop it.
                connection.link.close(
                    1009, "message too big", anyio.current_time(),
                    drop_pending=True, cause=DisconnectCause.PROTOCOL_ERROR,
                )  # fmt: skip
                self._flush()
                continue
            if connection.link.is_open:
                self.sessions.receive(connection.link.id, data)
                self._flush()
            while connection.frames:
                await self._sink.on_frame(connection.frames.pop(0))

    async def _write(self, connection: _Connection, send: Send) -> None:
        link = connection.link
        reason = ""
        try:
            while not connection.ended:
                if link.outbox:
                    data = link.outbox.popleft()
                    link.pending -= len(data)
                    message: Message = {"type": "websocket.send"}
                    message["bytes" if isinstance(data, bytes) else "text"] = data
                    reason = "send"
                    with anyio.fail_after(self._send_bound):
                        await send(message)
                    if link.pending <= self._high_water:
                        connection.writable.set()
                elif link.closing is not None:
                    ended = link.closing
                    reason = "close"
                    with anyio.fail_after(self._send_bound):
                        await send(
                            {"type": "websocket.close", "code": ended.code, "reason": ended.reason}
                        )
                    self._end(connection, ended)
                else:
                    connection.wake = anyio.Event()
                    await connection.wake.wait()
        except TimeoutError:
            logger.warning(
                "connection %d: a %s made no progress for %s s (write_timeout); session ended",
                link.id, reason, self._write_timeout,
            )  # fmt: skip
            self._end(connection, Ended(1006, "", DisconnectCause.CONNECTION_LOST))
        except SEND_ERRORS as exc:
            logger.info("connection %d: send failed (%r); session ended", link.id, exc)
            self._end(connection, Ended(1006, "", DisconnectCause.CONNECTION_LOST))
        finally:
            connection.writable.set()
            if connection.receiving:
                connection.receive_scope.cancel()  # the reader keeps frames it holds

    @property
    def _send_bound(self) -> float:
        return float("inf") if self._write_timeout is None else self._write_timeout

    # --- the flush choke point ---------------------------------------------------------------

    def _end(self, connection: _Connection, ended: Ended) -> None:
        """The link is over (idempotent): the session ends, the writer stops."""
        if connection.ended:
            return
        connection.ended = True
        connection.link.state = _LinkState.CLOSED
        self.sessions.end(connection.link.id, ended)
        connection.wake.set()
        self._flush()

    def _emit(self, event: ServerEvent) -> None:
        self._events.append(event)
        self._flush()

    def _flush(self) -> None:
        for link in self.sessions.take_touched():
            touched = self._connections.get(link.id)
            if touched is not None:
                touched.wake.set()
        events, _ = split_events(self.sessions.events_received(), self._connections)
        if events:
            try:
                self._sink.on_events(events)
            except Exception:
                logger.exception("event sink failed")
        self._timer.arm(self.sessions.next_deadline())
        if self._flushed is not None:
            self._flushed.set()
            self._flushed = None

    def _on_timer(self, now: float) -> None:
        self.sessions.handle_timer(now)
        self._flush()


def _handshake_request(scope: Scope) -> HandshakeRequest:
    """The upgrade request as admission sees it, from an ASGI ``websocket`` scope."""
    headers = tuple(
        (bytes(name).decode("latin-1").lower(), bytes(value).decode("latin-1"))
        for name, value in scope.get("headers", ())
    )
    path = scope.get("raw_path") or scope.get("path", "/").encode("utf-8")
    target = bytes(path).decode("latin-1")
    query = bytes(scope.get("query_string", b"")).decode("latin-1")
    if query:
        target += "?" + query
    origin = next((value for key, value in headers if key == "origin"), None)
    client = scope.get("client")
    return HandshakeRequest(
        path=target,
        headers=headers,
        subprotocols=tuple(scope.get("subprotocols", ())),
        origin=origin,
        remote=tuple(client) if client is not None else None,
    )


async def _deny(scope: Scope, send: Send, denial: Denial) -> None:
    """Refuse before accepting: the real response if the server can send one, else 403."""
    if "websocket.http.response" in scope.get("extensions", {}):
        headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in denial.headers]
        headers.append((b"content-length", str(len(denial.body)).encode("ascii")))
        await send(
            {
                "type": "websocket.http.response.start",
                "status": denial.status_code,
                "headers": headers,
            }
        )
        await send({"type": "websocket.http.response.body", "body": denial.body})
    else:
        await send({"type": "websocket.close", "code": 1008, "reason": ""})


def _encode_headers(headers: Sequence[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    return [(name.encode("latin-1"), value.encode("latin-1")) for name, value in headers]


async def _http_response(
    send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes
) -> None:
    headers.append((b"content-length", str(len(body)).encode("ascii")))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class AsgiServerTransport(WebsocketServerTransport):
    """``WebsocketServerTransport`` served by an ASGI server; see the module docstring.

    Entering it (``async with``, or the ASGI lifespan when it is the application) starts the
    sessions' timer and event dispatch, and ``on_websocket_ready`` fires; leaving it closes
    every session with 1001. ``address`` is ``("", 0)``: the ASGI server owns the socket.
    """

    def __init__(
        self,
        params: WebsocketServerParams | None = None,
        input_name: str | None = None,
        output_name: str | None = None,
    ) -> None:
        super().__init__(params, host="", port=0, input_name=input_name, output_name=output_name)
        self._asgi_driver: AsgiDriver | None = None

    async def _start_driver(self, options: ListenOptions) -> ServerDriver:
        driver = AsgiDriver(self._config, self, options)
        self._asgi_driver = driver
        return driver

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The ASGI application: ``lifespan`` runs the transport, ``websocket`` serves a
        client, ``http`` gets the params' ``http_handler`` (or 426)."""
        kind = scope["type"]
        if kind == "lifespan":
            await self._lifespan(receive, send)
        elif kind == "websocket":
            driver = self._running_driver()
            if driver is None:
                await receive()
                await send({"type": "websocket.close", "code": 1011, "reason": ""})
                return
            await driver.handle(scope, receive, send)
        elif kind == "http":
            await self._http(scope, send)

    async def serve_websocket(self, websocket: _WebSocket) -> None:
        """Serve a Starlette/FastAPI ``WebSocket`` as a client until its session is over.

        Not yet accepted: admission runs (origins, handshake hook, subprotocols) and the
        socket is accepted or refused. Already accepted by the route: adopted as it is.
        """
        driver = self._running_driver()
        if driver is None:
            raise RuntimeError(
                "enter the transport first ('async with transport:' in the lifespan)"
            )
        state = getattr(websocket, "application_state", None)
        if getattr(state, "name", None) == "CONNECTED":
            await driver.handle_accepted(websocket.scope, websocket.receive, websocket.send)
        else:
            await driver.handle(websocket.scope, websocket.receive, websocket.send)

    def _running_driver(self) -> AsgiDriver | None:
        if self._driver is None:
            logger.error("a WebSocket arrived while the transport is not running; refused")
            return None
        return self._asgi_driver

    async def _lifespan(
        self,
        receive: Receive,
        send: Send,
        main: Callable[[], Coroutine[Any, Any, None]] | None = None,
    ) -> None:
        """Run the transport (and ``main``, cancelled at shutdown) for the server's life."""
        message = await receive()
        assert message["type"] == "lifespan.startup", message
        try:
            await self.__aenter__()
        except Exception as exc:
            await send({"type": "lifespan.startup.failed", "message": repr(exc)})
            return
        try:
            async with anyio.create_task_group() as tg:
                if main is not None:
                    tg.start_soon(main)
                await send({"type": "lifespan.startup.complete"})
                await receive()  # lifespan.shutdown
                tg.cancel_scope.cancel()
        finally:
            await self.__aexit__(None, None, None)
        await send({"type": "lifespan.shutdown.complete"})

    async def _http(self, scope: Scope, send: Send) -> None:
        handler = self.params.http_handler
        request = _handshake_request(scope)
        driver = self._asgi_driver
        if self._config.health_checks and scope.get("method", "GET") in ("GET", "HEAD"):
            load = driver.sessions.load() if driver is not None else Load(draining=True)
            health = health_response(request.path, load)
            if health is not None:
                headers = _encode_headers(health.headers)
                await _http_response(send, health.status_code, headers, health.body)
                return
        if handler is not None:
            try:
                answer = handler(
                    HttpRequest(
                        method=scope.get("method", "GET"),
                        path=request.path,
                        headers=request.headers,
                    )
                )
            except Exception:
                logger.exception("http handler raised")
                await _http_response(send, 500, [], b"")
                return
            if answer is not None:
                headers = _encode_headers(answer.headers)
                await _http_response(send, answer.status_code, headers, answer.body)
                return
        body = b"Failed to open a WebSocket connection: not a WebSocket upgrade request.\n"
        headers = [
            (b"upgrade", b"websocket"),
            (b"sec-websocket-version", b"13"),
            (b"content-type", b"text/plain; charset=utf-8"),
        ]
        await _http_response(send, 426, headers, body)


async def serve_with_uvicorn(
    transport: AsgiServerTransport,
    host: str,
    port: int,
    *,
    main: Main | None = None,
    ssl_certfile: str | None = None,
    ssl_keyfile: str | None = None,
) -> None:
    """Serve ``transport`` with uvicorn (the ``asgi`` extra) until SIGINT or SIGTERM; ``main``
    runs while the transport does (``wavewire serve --asgi`` runs its echo loop there).
    SIGTERM drains first (``transport.drain()``: new WebSockets get 503, sessions run until
    they end or ``drain_timeout``, then 1012); SIGINT, or a second signal, stops at once.

    uvicorn is set up as docs/asgi.md recommends: the wsproto implementation, permessage-deflate
    off, ``--ws-max-size`` at the params' ``max_message_size``, its keepalive at their
    ``ping_interval``/``ping_timeout``.
    """
    try:
        import uvicorn
    except ImportError:
        raise ValueError("--asgi needs uvicorn: pip install 'wavewire[asgi]'") from None

    class _QuietServer(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield  # the caller handles signals

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await transport._lifespan(receive, send, main)
        else:
            await transport(scope, receive, send)

    params = transport.params
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        ws="wsproto",
        lifespan="on",
        ws_max_size=params.max_message_size,
        ws_per_message_deflate=False,
        ws_ping_interval=params.ping_interval,
        ws_ping_timeout=params.ping_timeout,
        ssl_certfile=ssl_certfile,
        ssl_keyfile=ssl_keyfile,
        log_level="info",
    )
    server = _QuietServer(config)

    async def drain_then_stop() -> None:
        await transport.drain()
        logger.info("drained: shutting down")
        server.should_exit = True

    async def stop_on_signal(signals: AsyncIterator[int], tg: anyio.abc.TaskGroup) -> None:
        draining = False
        async for signum in signals:
            if signum == signal.SIGTERM and not draining and transport._driver is not None:
                draining = True
                logger.info("SIGTERM: draining (at most %s s)", params.drain_timeout)
                tg.start_soon(drain_then_stop)
                continue
            logger.info("%s: shutting down", signal.Signals(signum).name)
            server.should_exit = True

    # Our signal handling, as without --asgi (uvicorn's re-raises the signal once stopped).
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with anyio.create_task_group() as tg:
            tg.start_soon(stop_on_signal, signals, tg)
            await server.serve()
            tg.cancel_scope.cancel()
