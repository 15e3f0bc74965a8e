"""``WebsocketClientTransport``: Pipecat 1.14's WebSocket client transport, on wavewire.

Same constructor (``uri``, ``params``), parameters (a subclass of Pipecat's
``WebsocketClientParams``: ``add_wav_header=True``, ``additional_headers``, ``serializer`` None
meaning Pipecat's protobuf serializer) and events (``on_connected(transport, connection)``,
``on_disconnected(transport, connection)``) as ``pipecat.transports.websocket.client``; wavewire's
settings are extra fields, among them ``reconnect`` (off by default, as Pipecat has none), which
adds the events ``on_reconnecting(transport, attempt, delay)`` and
``on_reconnect_failed(transport, error)``.

As in Pipecat, the input and the output connect while the pipeline is set up (the first one
dials) and the connection is closed once both have let go of it; the output's ``EndFrame`` plays
out the audio first and closes with 1000. Output goes through ``_output.PacedOutput``, the same
as the server drop-in's: Pipecat's serializer, the core's pacing, Pipecat's write contract.
"""

from __future__ import annotations

import logging
import ssl
from typing import Any

import anyio
from pipecat.processors.frame_processor import FrameProcessor, FrameProcessorSetup
from pipecat.serializers.protobuf import ProtobufFrameSerializer
from pipecat.transports.base_transport import BaseTransport
from pipecat.transports.websocket.client import WebsocketClientParams as _PipecatClientParams

from wavewire.adapters.anyio_client import ConnectError
from wavewire.core.config import DEFAULT_MAX_MESSAGE_SIZE
from wavewire.core.errors import HandshakeError
from wavewire.core.frames import Frame as CoreFrame
from wavewire.pipecat._output import Link
from wavewire.pipecat._transport import (
    DropinInputTransport,
    DropinOutputTransport,
    audio_out_settings,
)
from wavewire.pipecat._wire import ReceivedMessage
from wavewire.transports.client import ClientConnection
from wavewire.transports.client import WebsocketClientTransport as _WavewireClient
from wavewire.transports.params import ReconnectPolicy
from wavewire.transports.params import WebsocketClientParams as _WavewireClientParams

__all__ = [
    "WebsocketClientConnection",
    "WebsocketClientInputTransport",
    "WebsocketClientOutputTransport",
    "WebsocketClientParams",
    "WebsocketClientTransport",
]

logger = logging.getLogger("wavewire.pipecat.client")


class WebsocketClientParams(_PipecatClientParams):
    """Pipecat's client parameters (fields and defaults unchanged) plus wavewire's."""

    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE
    #: Seconds for TCP connect, TLS and the opening handshake together (Pipecat: 10).
    open_timeout: float | None = 10.0
    close_timeout: float | None = 10.0
    ping_interval: float | None = 20.0
    ping_timeout: float | None = 20.0
    #: TLS settings for ``wss://`` (None: the system's CAs, hostname checked).
    ssl_context: ssl.SSLContext | None = None
    #: Seconds a socket write may block (server not reading) before the connection is dropped.
    write_timeout: float | None = 10.0
    max_output_buffer: int = 256 * 1024
    max_input_queue: int = 64
    compression: bool = False
    #: Reconnect after a lost connection: False (Pipecat's behaviour), True for the default
    #: ``ReconnectPolicy()``, or a policy.
    reconnect: ReconnectPolicy | bool = False
    #: Seconds of audio sent ahead of real time at the start of each stream (0: as Pipecat).
    audio_out_lead_secs: float = 0.0


class WebsocketClientConnection:
    """What ``on_connected``/``on_disconnected`` receive, where Pipecat passes its ``websockets``
    connection: ``remote_address``, ``response.headers``, ``subprotocol``, ``close()``;
    ``connection`` is wavewire's (``disconnect`` says how it ended)."""

    def __init__(self, connection: ClientConnection) -> None:
        self.connection = connection
        self.response = _Response(connection.headers)

    @property
    def remote_address(self) -> object:
        return self.connection.remote

    @property
    def subprotocol(self) -> str | None:
        return self.connection.subprotocol

    async def close(self, code: int = 1000, reason: str = "") -> None:
        await self.connection.close(code, reason)

    def __repr__(self) -> str:
        return f"<WebsocketClientConnection remote={self.remote_address!r}>"


class _Response:
    def __init__(self, headers: tuple[tuple[str, str], ...]) -> None:
        self.headers = dict(headers)


class _ConnectionLink:
    """The client's current connection as the output's ``Link``."""

    def __init__(self, client: _WavewireClient, connection: ClientConnection) -> None:
        self._client = client
        self._connection = connection

    def offer(self, frame: CoreFrame) -> bool:
        return self._connection.offer(frame)

    async def wait_audio_writable(self) -> None:
        await self._connection.wait_audio_writable()

    async def drain(self) -> None:
        await self._connection.drain()

    async def send(self, frame: CoreFrame) -> None:
        await self._client.output().send(frame)


class _Session:
    """The wavewire client both halves share: the first ``connect`` (from either half's setup)
    starts it, in a task of its own (anyio's task groups must be left by the task that entered
    them), and the last ``disconnect`` closes it."""

    def __init__(self, transport: WebsocketClientTransport) -> None:
        self._transport = transport
        self._task: Any = None
        self._owner: FrameProcessor | None = None
        self._holds = 0
        self._started = anyio.Event()
        self._stop = anyio.Event()
        self._running: _WavewireClient | None = None
        self._wrappers: dict[int, WebsocketClientConnection] = {}

    @property
    def wavewire(self) -> _WavewireClient | None:
        return self._running

    def link(self) -> Link | None:
        client = self._running
        if client is None or client.connection is None or not client.connection.connected:
            return None
        return _ConnectionLink(client, client.connection)

    async def connect(self, owner: FrameProcessor) -> None:
        self._holds += 1
        if self._task is None:
            self._owner = owner
            self._task = owner.create_task(self._run(), "wavewire_client")
        await self._started.wait()

    async def release(self) -> None:
        self._holds -= 1
        if self._holds > 0:
            return
        self._stop.set()
        task, self._task = self._task, None
        if task is not None:
            await task

    async def cancel(self) -> None:
        self._holds = 0
        task, self._task = self._task, None
        if task is not None and self._owner is not None:
            self._stop.set()
            params = self._transport._params
            bound = None if params.close_timeout is None else params.close_timeout + 2
            await self._owner.cancel_task(task, timeout=bound)

    def _wavewire_params(self) -> _WavewireClientParams:
        params = self._transport._params
        return _WavewireClientParams(
            **audio_out_settings(params, self._transport._output),
            audio_out_lead_secs=params.audio_out_lead_secs,
            additional_headers=params.additional_headers,
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
            reconnect=params.reconnect,
        )

    async def _run(self) -> None:
        transport = self._transport
        client = _WavewireClient(transport._uri, self._wavewire_params())
        client.add_event_handler("on_connected", self._on_connected)
        client.add_event_handler("on_disconnected", self._on_disconnected)
        client.add_event_handler("on_reconnecting", self._on_reconnecting)
        client.add_event_handler("on_reconnect_failed", self._on_reconnect_failed)
        try:
            async with client, anyio.create_task_group() as tg:
                self._running = client
                self._started.set()
                tg.start_soon(self._read, client)
                await self._stop.wait()
                tg.cancel_scope.cancel()
        except (HandshakeError, ConnectError) as exc:
            # Pipecat logs a connect timeout and goes on unconnected; so does this, for any
            # connect failure: writes then return False.
            logger.error("cannot connect to %s: %s", transport._uri, exc)
        finally:
            self._running = None
            self._started.set()

    async def _read(self, client: _WavewireClient) -> None:
        async for frame in client.input():
            if isinstance(frame, ReceivedMessage) and self._transport._input is not None:
                await self._transport._input._receive(frame.data)

    def _wrap(
        self, connection: ClientConnection, *, last: bool = False
    ) -> WebsocketClientConnection:
        """The same wrapper for one connection in every event; forgotten after its last."""
        wrapper = self._wrappers.get(id(connection))
        if wrapper is None or wrapper.connection is not connection:
            wrapper = self._wrappers[id(connection)] = WebsocketClientConnection(connection)
        if last:
            del self._wrappers[id(connection)]
        return wrapper

    async def _on_connected(self, client: _WavewireClient, connection: ClientConnection) -> None:
        await self._transport._call_event_handler("on_connected", self._wrap(connection))

    async def _on_disconnected(self, client: _WavewireClient, connection: ClientConnection) -> None:
        wrapper = self._wrap(connection, last=True)
        await self._transport._call_event_handler("on_disconnected", wrapper)

    async def _on_reconnecting(self, client: _WavewireClient, attempt: int, delay: float) -> None:
        await self._transport._call_event_handler("on_reconnecting", attempt, delay)

    async def _on_reconnect_failed(self, client: _WavewireClient, error: Exception) -> None:
        await self._transport._call_event_handler("on_reconnect_failed", error)


class WebsocketClientInputTransport(DropinInputTransport):
    """Received messages, decoded by Pipecat's serializer, into the pipeline."""

    def __init__(
        self, transport: WebsocketClientTransport, params: WebsocketClientParams, **kwargs: Any
    ) -> None:
        super().__init__(transport, transport._session, params, logger=logger, **kwargs)
        self._session = transport._session

    async def setup(self, setup: FrameProcessorSetup) -> None:  # type: ignore[override]
        await super().setup(setup)
        await self._session.connect(self)


class WebsocketClientOutputTransport(DropinOutputTransport):
    """Frames to the server, serialized by Pipecat's serializer, audio paced by the core."""

    def __init__(
        self, transport: WebsocketClientTransport, params: WebsocketClientParams, **kwargs: Any
    ) -> None:
        super().__init__(transport, transport._session, params, logger=logger, **kwargs)
        self._session = transport._session

    async def setup(self, setup: FrameProcessorSetup) -> None:  # type: ignore[override]
        await super().setup(setup)
        await self._session.connect(self)


class WebsocketClientTransport(BaseTransport):
    """Pipecat's WebSocket client transport on wavewire (see the module docstring)."""

    def __init__(self, uri: str, params: _PipecatClientParams | None = None) -> None:
        super().__init__()
        self._uri = uri
        self._params = _as_params(params)
        if self._params.serializer is None:
            self._params.serializer = ProtobufFrameSerializer()  # Pipecat's default here
        self._session = _Session(self)
        self._input: WebsocketClientInputTransport | None = None
        self._output: WebsocketClientOutputTransport | None = None
        for name in ("on_connected", "on_disconnected", "on_reconnecting", "on_reconnect_failed"):
            self._register_event_handler(name)

    def input(self) -> WebsocketClientInputTransport:
        if self._input is None:
            self._input = WebsocketClientInputTransport(self, self._params)
        return self._input

    def output(self) -> WebsocketClientOutputTransport:
        if self._output is None:
            self._output = WebsocketClientOutputTransport(self, self._params)
        return self._output

    @property
    def connection(self) -> WebsocketClientConnection | None:
        """The open connection, if any."""
        client = self._session.wavewire
        if client is None or client.connection is None:
            return None
        return self._session._wrap(client.connection)


def _as_params(params: _PipecatClientParams | None) -> WebsocketClientParams:
    if params is None:
        return WebsocketClientParams()
    if isinstance(params, WebsocketClientParams):
        return params
    fields = {name: getattr(params, name) for name in type(params).model_fields}
    return WebsocketClientParams(**fields)
