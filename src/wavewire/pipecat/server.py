"""``SingleClientWebsocketServerTransport``: Pipecat 1.14's WebSocket server transport, on wavewire.

Same constructor, parameters (a subclass of Pipecat's ``SingleClientWebsocketServerParams``, so
every Pipecat field and default is there), events and handler arguments as
``pipecat.transports.websocket.server``; wavewire's settings are extra fields with wavewire's
defaults. Pipecat's ``BaseOutputTransport`` keeps doing everything it does (chunking, resampling,
mixing, bot-speaking frames, uninterruptible frames, end silence); wavewire owns the wire and the
clock:

- ``write_audio_frame`` serializes the chunk with the user's Pipecat serializer and hands it to
  the core as a ``SerializedAudioFrame``, which the core paces in its drift-free schedule. The
  core holds at most one chunk ahead (``audio_out_max_queued_secs`` = one chunk), so a write
  returns when the chunk before it is due on the wire: Pipecat's contract ("written" = "about
  to be heard"), with no sleep in the transport, so ``Bot*SpeakingFrame`` and every frame after
  the audio stay within one chunk of what the client hears.
- ``InterruptionFrame``: a write waiting for its slot gives up (its chunk is never sent, unless
  it is uninterruptible), the core drops its queued chunk and sends the serializer's encoding of
  the interruption (Twilio's ``clear``, ...) ahead of everything. If the chunk last handed to
  the core was uninterruptible, it is kept and the interruption goes out as an urgent message.
- ``EndFrame``: Pipecat's sender plays out its queue and its end silence (paced as ordinary
  chunks), the serializer's encoding of the ``EndFrame`` is sent (Twilio's hang-up runs there),
  then the core closes with 1000 once the last chunk is out. ``CancelFrame`` closes at once.

``docs/pipecat.md`` lists every difference from Pipecat 1.14 and the reasons.
"""

from __future__ import annotations

import contextlib
import logging
import ssl
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Literal

import anyio
from pipecat.frames.frames import ClientConnectedFrame
from pipecat.transports.base_input import BaseInputTransport
from pipecat.transports.base_transport import BaseTransport, TransportParams
from pipecat.transports.websocket.server import (
    SingleClientWebsocketServerParams as _PipecatServerParams,
)

from wavewire.adapters.errors import ConnectionClosed
from wavewire.core.admission import Accept, HandshakeRequest, HttpRequest, HttpResponse, Reject
from wavewire.core.config import DEFAULT_MAX_MESSAGE_SIZE
from wavewire.pipecat._output import Link
from wavewire.pipecat._transport import (
    DropinInputTransport,
    DropinOutputTransport,
    HandleLink,
    audio_out_settings,
)
from wavewire.pipecat._wire import ReceivedMessage
from wavewire.transports.params import WebsocketServerParams as _WavewireServerParams
from wavewire.transports.server import ClientHandle
from wavewire.transports.server import WebsocketServerTransport as _WavewireServer

__all__ = [
    "SingleClientWebsocketServerInputTransport",
    "SingleClientWebsocketServerOutputTransport",
    "SingleClientWebsocketServerParams",
    "SingleClientWebsocketServerTransport",
    "WebsocketServerClient",
    "WebsocketServerParams",
    "WebsocketServerTransport",
]

logger = logging.getLogger("wavewire.pipecat.server")


class SingleClientWebsocketServerParams(_PipecatServerParams):
    """Pipecat's server parameters (fields and defaults unchanged) plus wavewire's.

    ``serializer`` stays None by default, as in Pipecat (every message is then dropped, with a
    warning here).
    """

    #: ``replace`` (the default: a new client takes over and the old one is closed with 1000)
    #: or ``reject`` (Pipecat 1.14: the new client is closed with 1013).
    client_policy: Literal["replace", "reject"] = "replace"
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE
    open_timeout: float | None = 10.0
    close_timeout: float | None = 10.0
    ping_interval: float | None = 20.0
    ping_timeout: float | None = 20.0
    #: Serve ``wss://`` with this context.
    ssl_context: ssl.SSLContext | None = None
    #: Seconds a socket write may block (client not reading) before the client is dropped.
    write_timeout: float | None = 10.0
    #: Bytes of output queued for the client above which writes wait.
    max_output_buffer: int = 256 * 1024
    #: Received messages buffered before the socket stops being read.
    max_input_queue: int = 64
    #: permessage-deflate (RFC 7692), off: audio does not compress.
    compression: bool = False
    #: Decides each upgrade request: ``Accept(...)`` or ``Reject(status_code=401, ...)``
    #: (authentication; quick, synchronous, no I/O).
    handshake_hook: Callable[[HandshakeRequest], Accept | Reject] | None = None
    #: Answers plain HTTP requests on the same port (a health check).
    http_handler: Callable[[HttpRequest], HttpResponse | None] | None = None
    #: Subprotocols the server speaks, in order of preference.
    subprotocols: Sequence[str] = ()
    #: Seconds of audio sent ahead of real time at the start of each stream (0: as Pipecat).
    audio_out_lead_secs: float = 0.0
    #: ``"anyio"`` or ``"asyncio"`` (wavewire's native asyncio driver).
    driver: Literal["anyio", "asyncio"] = "anyio"


#: Pipecat's older name, for the same class.
WebsocketServerParams = SingleClientWebsocketServerParams


def _as_params(params: TransportParams) -> SingleClientWebsocketServerParams:
    """The user's params as ours: Pipecat's own params class is accepted too (its fields kept,
    wavewire's at their defaults), so that only the transport's import has to change."""
    if isinstance(params, SingleClientWebsocketServerParams):
        return params
    fields = {name: getattr(params, name) for name in type(params).model_fields}
    return SingleClientWebsocketServerParams(**fields)


class _Headers(Mapping[str, str]):
    """The upgrade request's headers: case-insensitive, first value (``get_all`` for all)."""

    def __init__(self, headers: tuple[tuple[str, str], ...]) -> None:
        self._raw = headers
        self._first: dict[str, str] = {}
        for name, value in headers:
            self._first.setdefault(name.lower(), value)

    def __getitem__(self, name: str) -> str:
        return self._first[name.lower()]

    def __iter__(self) -> Iterator[str]:
        return iter(self._first)

    def __len__(self) -> int:
        return len(self._first)

    def get_all(self, name: str) -> list[str]:
        return [value for key, value in self._raw if key.lower() == name.lower()]

    def raw_items(self) -> tuple[tuple[str, str], ...]:
        return self._raw


class _Request:
    def __init__(self, path: str, headers: _Headers) -> None:
        self.path = path
        self.headers = headers


class WebsocketServerClient:
    """What handlers receive for a client, where Pipecat passes its ``websockets`` connection:
    the attributes Pipecat users read from it (``remote_address``, ``request.path``,
    ``request.headers``, ``close()``), the same object in every event of one client's life.
    ``handle`` is wavewire's ``ClientHandle`` (audio counters, the disconnect's cause)."""

    def __init__(self, handle: ClientHandle) -> None:
        self.handle = handle
        headers = _Headers(handle.headers)
        self.request = _Request(handle.path, headers)
        #: The older ``websockets`` spellings of the same.
        self.path = handle.path
        self.request_headers = headers

    @property
    def id(self) -> int:
        return self.handle.id

    @property
    def remote_address(self) -> object:
        return self.handle.remote

    @property
    def open(self) -> bool:
        return self.handle.connected

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close the connection and wait until it is closed (bounded by ``close_timeout``)."""
        with contextlib.suppress(ConnectionClosed):
            await self.handle.close(code, reason)

    def __repr__(self) -> str:
        return f"<WebsocketServerClient id={self.id} remote={self.remote_address!r}>"


class _Server:
    """The wavewire server both halves share, held like Pipecat's: the input starts it and
    holds it, the output holds it too, and the last release (the output, once it has flushed
    after an ``EndFrame``) drains it. It runs in one task, which enters and leaves the wavewire
    transport (anyio's task groups must be left by the task that entered them)."""

    def __init__(self, transport: SingleClientWebsocketServerTransport) -> None:
        self._transport = transport
        self._task: Any = None  # asyncio.Task, created by the input processor's task manager
        self._owner: BaseInputTransport | None = None
        self._holds = 0
        self._stop = anyio.Event()
        self._running: _WavewireServer | None = None
        self._clients: dict[int, WebsocketServerClient] = {}

    @property
    def wavewire(self) -> _WavewireServer | None:
        return self._running

    @property
    def client(self) -> ClientHandle | None:
        return None if self._running is None else self._running.client

    def start(self, owner: BaseInputTransport) -> None:
        if self._task is None:
            self._owner = owner
            self._task = owner.create_task(self._run(), "wavewire_server")
        self._holds += 1

    def acquire(self) -> None:
        self._holds += 1

    async def release(self) -> None:
        self._holds -= 1
        if self._holds > 0:
            return
        self._stop.set()
        task, self._task = self._task, None
        if task is not None:
            await task

    async def cancel(self) -> None:
        task, self._task = self._task, None
        if task is not None and self._owner is not None:
            params = self._transport._params
            # The close handshakes are bounded by close_timeout inside the task.
            bound = None if params.close_timeout is None else params.close_timeout + 2
            await self._owner.cancel_task(task, timeout=bound)

    def link(self) -> Link | None:
        handle = self.client
        return None if handle is None else HandleLink(handle)

    def _wavewire_params(self) -> _WavewireServerParams:
        params = self._transport._params
        return _WavewireServerParams(
            **audio_out_settings(params, self._transport._output),
            audio_out_lead_secs=params.audio_out_lead_secs,
            session_timeout=params.session_timeout,
            client_policy=params.client_policy,
            allowed_origins=list(params.allowed_origins) or None,
            max_message_size=params.max_message_size,
            open_timeout=params.open_timeout,
            close_timeout=params.close_timeout,
            ping_interval=params.ping_interval,
            ping_timeout=params.ping_timeout,
            ssl_context=params.ssl_context,
            write_timeout=params.write_timeout,
            max_output_buffer=params.max_output_buffer,
            max_input_queue=params.max_input_queue,
            compression=params.compression,
            handshake_hook=params.handshake_hook,
            http_handler=params.http_handler,
            subprotocols=tuple(params.subprotocols),
        )

    async def _run(self) -> None:
        transport = self._transport
        server = _WavewireServer(
            self._wavewire_params(),
            transport._host,
            transport._port,
            driver=transport._params.driver,
        )
        server.add_event_handler("on_websocket_ready", self._on_ready)
        server.add_event_handler("on_client_connected", self._on_connected)
        server.add_event_handler("on_client_disconnected", self._on_disconnected)
        server.add_event_handler("on_session_timeout", self._on_session_timeout)
        logger.info("starting websocket server on %s:%s", transport._host, transport._port)
        try:
            async with server, anyio.create_task_group() as tg:
                self._running = server
                tg.start_soon(self._read, server)
                await self._stop.wait()
                tg.cancel_scope.cancel()
        except OSError as exc:
            logger.error(
                "websocket server on %s:%s failed: %s", transport._host, transport._port, exc
            )
        finally:
            self._running = None

    async def _read(self, server: _WavewireServer) -> None:
        async for frame in server.input():
            if isinstance(frame, ReceivedMessage):
                await self._transport.input()._receive(frame.data)

    def _client(self, handle: ClientHandle) -> WebsocketServerClient:
        client = self._clients.get(handle.id)
        if client is None:
            client = self._clients[handle.id] = WebsocketServerClient(handle)
        return client

    async def _on_ready(self, server: _WavewireServer) -> None:
        await self._transport._call_event_handler("on_websocket_ready")

    async def _on_connected(self, server: _WavewireServer, handle: ClientHandle) -> None:
        logger.info("new client connection from %s", handle.remote)
        transport = self._transport
        await transport._call_event_handler("on_client_connected", self._client(handle))
        if transport._input is not None:
            await transport._input.push_frame(ClientConnectedFrame())

    async def _on_disconnected(self, server: _WavewireServer, handle: ClientHandle) -> None:
        client = self._clients.pop(handle.id, None) or WebsocketServerClient(handle)
        await self._transport._call_event_handler("on_client_disconnected", client)

    async def _on_session_timeout(self, server: _WavewireServer, handle: ClientHandle) -> None:
        await self._transport._call_event_handler("on_session_timeout", self._client(handle))


class SingleClientWebsocketServerInputTransport(DropinInputTransport):
    """Received messages, decoded by Pipecat's serializer, into the pipeline; its ``start()``
    starts the server."""

    def __init__(
        self,
        transport: SingleClientWebsocketServerTransport,
        host: str,
        port: int,
        params: SingleClientWebsocketServerParams,
        **kwargs: Any,
    ) -> None:
        super().__init__(transport, transport._server, params, logger=logger, **kwargs)
        self._host = host
        self._port = port
        self._server = transport._server

    async def _hold(self) -> None:
        self._server.start(self)


class SingleClientWebsocketServerOutputTransport(DropinOutputTransport):
    """Frames to the client, serialized by Pipecat's serializer, audio paced by the core
    (``_output.PacedOutput``)."""

    def __init__(
        self,
        transport: SingleClientWebsocketServerTransport,
        params: SingleClientWebsocketServerParams,
        **kwargs: Any,
    ) -> None:
        super().__init__(transport, transport._server, params, logger=logger, **kwargs)
        self._server = transport._server

    async def _hold(self) -> None:
        self._server.acquire()


class SingleClientWebsocketServerTransport(BaseTransport):
    """Pipecat's single-client WebSocket server transport on wavewire (see the module docstring).

    Events (Pipecat's names and arguments; the client is a ``WebsocketServerClient``):
    ``on_client_connected(transport, client)``, ``on_client_disconnected(transport, client)``
    (exactly once per connected client), ``on_session_timeout(transport, client)`` (every
    session), ``on_websocket_ready(transport)``.
    """

    def __init__(
        self,
        params: TransportParams,
        host: str = "localhost",
        port: int = 8765,
        input_name: str | None = None,
        output_name: str | None = None,
    ) -> None:
        super().__init__(input_name=input_name, output_name=output_name)
        self._host = host
        self._port = port
        self._params = _as_params(params)
        self._input: SingleClientWebsocketServerInputTransport | None = None
        self._output: SingleClientWebsocketServerOutputTransport | None = None
        self._server = _Server(self)
        self._register_event_handler("on_client_connected")
        self._register_event_handler("on_client_disconnected")
        self._register_event_handler("on_session_timeout")
        self._register_event_handler("on_websocket_ready")

    def input(self) -> SingleClientWebsocketServerInputTransport:
        if self._input is None:
            self._input = SingleClientWebsocketServerInputTransport(
                self, self._host, self._port, self._params, name=self._input_name
            )
        return self._input

    def output(self) -> SingleClientWebsocketServerOutputTransport:
        if self._output is None:
            self._output = SingleClientWebsocketServerOutputTransport(
                self, self._params, name=self._output_name
            )
        return self._output

    @property
    def address(self) -> tuple[str, int]:
        """The bound address once ``on_websocket_ready`` fired (listen on port 0, read it here);
        ``RuntimeError`` before."""
        server = self._server.wavewire
        if server is None:
            raise RuntimeError("the server is not running (the pipeline has not started it)")
        return server.address

    @property
    def client(self) -> WebsocketServerClient | None:
        """The connected client, if any."""
        handle = self._server.client
        return None if handle is None else self._server._client(handle)


#: Pipecat's older name, for the same class.
WebsocketServerTransport = SingleClientWebsocketServerTransport
