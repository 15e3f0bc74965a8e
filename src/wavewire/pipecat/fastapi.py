"""``FastAPIWebsocketTransport``: Pipecat 1.14's FastAPI transport, on wavewire.

Same constructor (``websocket, params, input_name=None, output_name=None``), parameters (a
subclass of Pipecat's ``FastAPIWebsocketParams``: ``add_wav_header``, ``serializer``,
``session_timeout``, ``fixed_audio_packet_size``, ``allowed_origins``, ``ws_close_timeout``, with
Pipecat's defaults) and events (``on_client_connected``, ``on_client_disconnected``,
``on_session_timeout``, each called with ``(transport, websocket)``, the route's Starlette
``WebSocket``) as ``pipecat.transports.websocket.fastapi``; a Twilio/Telnyx bot's route changes
its import line only.

The route owns the Starlette ``WebSocket``, accepted already (the usual telephony route, which
reads the provider's first messages itself) or not (wavewire's admission then accepts or refuses
it). The input's ``start()`` serves it with ``wavewire.asgi``: one ``AsgiServerTransport`` for
this WebSocket, run in a task of the pipeline, whose session layer gives the events (exactly
once), the session timeout, paced audio, bounded sends (``write_timeout``) and the close. The
output is the server drop-in's (``_transport.DropinOutputTransport``): Pipecat's serializer, the
core's pacing, Pipecat's write contract. ``docs/pipecat.md`` lists the differences.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Sequence
from typing import Any

import anyio
from pipecat.frames.frames import ClientConnectedFrame
from pipecat.processors.frame_processor import FrameProcessor
from pipecat.transports.base_transport import BaseTransport
from pipecat.transports.websocket.fastapi import FastAPIWebsocketParams as _PipecatFastAPIParams
from pipecat.utils.security.allowed_origins import is_origin_allowed

from wavewire.asgi import AsgiServerTransport
from wavewire.core.admission import Accept, HandshakeRequest, Reject
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

__all__ = [
    "FastAPIWebsocketInputTransport",
    "FastAPIWebsocketOutputTransport",
    "FastAPIWebsocketParams",
    "FastAPIWebsocketTransport",
]

logger = logging.getLogger("wavewire.pipecat.fastapi")


class FastAPIWebsocketParams(_PipecatFastAPIParams):
    """Pipecat's FastAPI parameters (fields and defaults unchanged) plus wavewire's.

    The ASGI server owns the handshake, framing, keepalive and compression (uvicorn's
    ``--ws-max-size``, ``--ws-ping-interval``, ``--ws-per-message-deflate``: docs/asgi.md).
    """

    #: Seconds one ASGI ``send`` may take (client not reading) before the session ends.
    write_timeout: float | None = 10.0
    #: Larger received messages: close 1009.
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE
    #: Bytes of output queued for the client above which writes wait.
    max_output_buffer: int = 256 * 1024
    #: Received messages buffered before the WebSocket stops being read.
    max_input_queue: int = 64
    #: For a WebSocket the route has not accepted: decides the upgrade (``Accept(...)`` or
    #: ``Reject(status_code=401, ...)``); ignored once the route accepted it.
    handshake_hook: Callable[[HandshakeRequest], Accept | Reject] | None = None
    #: For a WebSocket the route has not accepted: subprotocols, in order of preference.
    subprotocols: Sequence[str] = ()
    #: Seconds of audio sent ahead of real time at the start of each stream (0: as Pipecat).
    audio_out_lead_secs: float = 0.0


def _as_params(params: _PipecatFastAPIParams) -> FastAPIWebsocketParams:
    """Pipecat's own params class is accepted too (its fields kept, wavewire's at defaults)."""
    if isinstance(params, FastAPIWebsocketParams):
        return params
    fields = {name: getattr(params, name) for name in type(params).model_fields}
    return FastAPIWebsocketParams(**fields)


class _Session:
    """The ``AsgiServerTransport`` serving this transport's WebSocket, held like the server
    drop-in's: the input's ``start()`` starts it in a task of the pipeline, the output holds it
    too, and the last release closes the session. Closing is bounded by ``ws_close_timeout``
    past which the task is cancelled (the ASGI server finishes the close when the route
    returns)."""

    def __init__(self, transport: FastAPIWebsocketTransport) -> None:
        self._transport = transport
        self._task: Any = None  # asyncio.Task, created by the input processor's task manager
        self._owner: FrameProcessor | None = None
        self._holds = 0
        self._stop = anyio.Event()
        self._done = anyio.Event()
        #: Set once the session began (``on_client_connected``), or serving the WebSocket ended.
        self.began = anyio.Event()
        self._running: AsgiServerTransport | None = None
        #: wavewire's handle of the session, once it began.
        self.handle: ClientHandle | None = None

    def link(self) -> Link | None:
        handle = self.handle
        return None if handle is None or not handle.connected else HandleLink(handle)

    def start(self, owner: FrameProcessor) -> None:
        if self._task is None and not self._done.is_set():
            self._owner = owner
            self._task = owner.create_task(self._run(), "wavewire_fastapi")
        self._holds += 1

    def acquire(self) -> None:
        self._holds += 1

    async def release(self) -> None:
        self._holds -= 1
        if self._holds <= 0:
            await self.cancel()

    async def cancel(self) -> None:
        self._holds = 0
        self._stop.set()
        task, self._task = self._task, None
        if task is None or self._owner is None:
            return
        bound = self._transport._params.ws_close_timeout
        with anyio.move_on_after(bound):
            await self._done.wait()
        if not self._done.is_set():
            logger.debug("the WebSocket's close exceeded %s s; proceeding", bound)
        await self._owner.cancel_task(task, timeout=bound)

    def _wavewire_params(self) -> _WavewireServerParams:
        transport = self._transport
        params = transport._params
        return _WavewireServerParams(
            **audio_out_settings(params, transport._output),
            audio_out_lead_secs=params.audio_out_lead_secs,
            session_timeout=params.session_timeout,
            # The constructor checked the origin, as Pipecat's.
            allowed_origins=None,
            max_message_size=params.max_message_size,
            # Leaving the ASGI transport waits this long (plus 1 s) for a close the ASGI server
            # has not finished, and as long for the handlers of the events the end caused.
            close_timeout=params.ws_close_timeout,
            write_timeout=params.write_timeout,
            max_output_buffer=params.max_output_buffer,
            max_input_queue=params.max_input_queue,
            handshake_hook=params.handshake_hook,
            subprotocols=tuple(params.subprotocols),
        )

    async def _run(self) -> None:
        server = AsgiServerTransport(self._wavewire_params())
        server.add_event_handler("on_client_connected", self._on_connected)
        server.add_event_handler("on_client_disconnected", self._on_disconnected)
        server.add_event_handler("on_session_timeout", self._on_session_timeout)
        try:
            async with server, anyio.create_task_group() as tg:
                self._running = server
                tg.start_soon(self._read, server)
                tg.start_soon(self._serve, server)
                await self._stop.wait()
                # Stopped with the session still open (no output, or a CancelFrame): close it.
                handle = server.client
                if handle is not None and handle.connected:
                    with contextlib.suppress(Exception):
                        await handle.close(1000)
                tg.cancel_scope.cancel()
        finally:
            self._running = None
            self.began.set()
            self._done.set()

    async def _serve(self, server: AsgiServerTransport) -> None:
        try:
            await server.serve_websocket(self._transport._websocket)
        finally:
            self.began.set()  # refused, or over before it began: nothing to wait for

    async def _read(self, server: AsgiServerTransport) -> None:
        async for frame in server.input():
            if isinstance(frame, ReceivedMessage):
                await self._transport.input()._receive(frame.data)

    async def _on_connected(self, server: AsgiServerTransport, handle: ClientHandle) -> None:
        self.handle = handle
        self.began.set()
        transport = self._transport
        await transport._call_event_handler("on_client_connected", transport._websocket)
        await transport.input().push_frame(ClientConnectedFrame())

    async def _on_disconnected(self, server: AsgiServerTransport, handle: ClientHandle) -> None:
        transport = self._transport
        await transport._call_event_handler("on_client_disconnected", transport._websocket)

    async def _on_session_timeout(self, server: AsgiServerTransport, handle: ClientHandle) -> None:
        transport = self._transport
        await transport._call_event_handler("on_session_timeout", transport._websocket)


class FastAPIWebsocketInputTransport(DropinInputTransport):
    """Received messages, decoded by Pipecat's serializer, into the pipeline; its ``start()``
    starts serving the WebSocket."""

    def __init__(
        self, transport: FastAPIWebsocketTransport, params: FastAPIWebsocketParams, **kwargs: Any
    ) -> None:
        super().__init__(transport, transport._session, params, logger=logger, **kwargs)
        self._session = transport._session

    async def _hold(self) -> None:
        # As Pipecat's, whose WebSocket is connected when start() returns: frames behind the
        # StartFrame (a greeting queued with the pipeline) wait here until the session began.
        self._session.start(self)
        await self._session.began.wait()


class FastAPIWebsocketOutputTransport(DropinOutputTransport):
    """Frames to the client, serialized by Pipecat's serializer, audio paced by the core;
    ``fixed_audio_packet_size`` re-cuts serialized audio into packets of that size."""

    def __init__(
        self, transport: FastAPIWebsocketTransport, params: FastAPIWebsocketParams, **kwargs: Any
    ) -> None:
        super().__init__(
            transport,
            transport._session,
            params,
            logger=logger,
            packet_size=params.fixed_audio_packet_size,
            **kwargs,
        )
        self._session = transport._session
        self._close_bound = params.ws_close_timeout

    async def _hold(self) -> None:
        self._session.acquire()


class FastAPIWebsocketTransport(BaseTransport):
    """Pipecat's FastAPI WebSocket transport on wavewire (see the module docstring).

    ``ValueError`` if ``params.allowed_origins`` is set and the WebSocket's ``Origin`` is
    missing or not allowed (as Pipecat: closing the WebSocket is then the caller's).

    Events, each handler called with ``(transport, websocket)``: ``on_client_connected``,
    ``on_client_disconnected`` (exactly once per connected session, however it ended),
    ``on_session_timeout``.
    """

    def __init__(
        self,
        websocket: Any,
        params: _PipecatFastAPIParams,
        input_name: str | None = None,
        output_name: str | None = None,
    ) -> None:
        params = _as_params(params)
        if params.allowed_origins:
            origin = websocket.headers.get("origin", "")
            if not is_origin_allowed(origin, params.allowed_origins):
                raise ValueError(f"WebSocket connection rejected: origin '{origin}' not allowed")
        super().__init__(input_name=input_name, output_name=output_name)
        self._websocket = websocket
        self._params = params
        self._session = _Session(self)
        self._input: FastAPIWebsocketInputTransport | None = None
        self._output: FastAPIWebsocketOutputTransport | None = None
        self._register_event_handler("on_client_connected")
        self._register_event_handler("on_client_disconnected")
        self._register_event_handler("on_session_timeout")

    def input(self) -> FastAPIWebsocketInputTransport:
        if self._input is None:
            self._input = FastAPIWebsocketInputTransport(self, self._params, name=self._input_name)
        return self._input

    def output(self) -> FastAPIWebsocketOutputTransport:
        if self._output is None:
            self._output = FastAPIWebsocketOutputTransport(
                self, self._params, name=self._output_name
            )
        return self._output

    @property
    def websocket(self) -> Any:
        """The route's Starlette ``WebSocket``."""
        return self._websocket

    @property
    def client(self) -> ClientHandle | None:
        """wavewire's handle of the session, once it began (how it ended, audio counters)."""
        return self._session.handle
