"""The three stacks the behavioural suite runs over, each a real server on 127.0.0.1:

* ``wavewire``: ``WebsocketServerTransport`` on wavewire's own drivers (h11 + wsproto);
* ``uvicorn-wsproto``: uvicorn's wsproto implementation serving ``AsgiServerTransport`` as
  the ASGI application itself (its lifespan runs the transport);
* ``uvicorn-websockets``: uvicorn's ``websockets-sansio`` implementation serving a FastAPI
  route that hands its ``WebSocket`` to ``serve_websocket`` (the FastAPI lifespan runs the
  transport);
* ``hypercorn``, ``hypercorn-trio``: hypercorn (h11 + wsproto of its own) serving a Starlette
  route, on asyncio and on trio.

Servers run in the test's event loop (asyncio, or trio for ``hypercorn-trio``),
on a socket bound to port 0 and handed to them, so tests read the transport's events directly.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
from fastapi import FastAPI, WebSocket

from tests.adapters.support import LIMIT, Recorder
from wavewire import WebsocketServerParams, WebsocketServerTransport
from wavewire.asgi import AsgiServerTransport

STACKS = ["wavewire", "uvicorn-wsproto", "uvicorn-websockets", "hypercorn", "hypercorn-trio"]
#: The event loop each stack runs on (the test's own: servers run in the test's loop).
BACKENDS = {"hypercorn-trio": "trio"}
#: Stacks whose server shields its socket write from cancellation (hypercorn 0.18's trio
#: ``TCPServer.protocol_send``): a send to a client that stopped reading cannot be timed out.
SHIELDED_SENDS = frozenset({"hypercorn-trio"})
PATH = "/ws"
#: Stacks that report the peer's close code. Hypercorn (0.18) sends ``websocket.disconnect``
#: with 1006 even after a clean close handshake the client started.
REPORTS_PEER_CLOSE_CODE = {"wavewire": True, "uvicorn-wsproto": True, "uvicorn-websockets": True}


def _bound_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(100)
    sock.setblocking(False)
    return sock


def fastapi_app(transport: AsgiServerTransport) -> Any:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with transport:
            yield

    app = FastAPI(lifespan=lifespan)

    @app.websocket(PATH)
    async def ws(websocket: WebSocket) -> None:
        await transport.serve_websocket(websocket)

    return app


def starlette_app(transport: AsgiServerTransport) -> Any:
    from starlette.applications import Starlette
    from starlette.routing import WebSocketRoute

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with transport:
            yield

    async def ws(websocket: WebSocket) -> None:
        await transport.serve_websocket(websocket)

    return Starlette(routes=[WebSocketRoute(PATH, ws)], lifespan=lifespan)


@asynccontextmanager
async def _uvicorn(app: Any, ws: str) -> AsyncIterator[int]:
    import uvicorn

    sock = _bound_socket()
    # Flags as docs/asgi.md recommends: no deflate (audio does not compress).
    config = uvicorn.Config(
        app, ws=ws, lifespan="on", log_level="warning", ws_per_message_deflate=False
    )
    server = uvicorn.Server(config)
    async with anyio.create_task_group() as tg:
        tg.start_soon(server.serve, [sock])
        with anyio.fail_after(LIMIT):
            while not server.started:  # noqa: ASYNC110 - uvicorn exposes no event for it
                await anyio.sleep(0.01)
        try:
            yield sock.getsockname()[1]
        finally:
            server.should_exit = True
    sock.close()


@asynccontextmanager
async def _hypercorn(app: Any, *, trio: bool = False) -> AsyncIterator[int]:
    import hypercorn.asyncio
    import hypercorn.trio
    from hypercorn.config import Config

    serve: Any = hypercorn.trio.serve if trio else hypercorn.asyncio.serve

    sock = _bound_socket()
    port = sock.getsockname()[1]
    config = Config()
    config.bind = [f"fd://{sock.detach()}"]  # hypercorn owns (and closes) the socket
    config.loglevel = "WARNING"
    stop = anyio.Event()
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: serve(app, config, shutdown_trigger=stop.wait))
        try:
            yield port
        finally:
            stop.set()


@asynccontextmanager
async def serve(
    stack: str, params: WebsocketServerParams
) -> AsyncIterator[tuple[WebsocketServerTransport, Recorder, int]]:
    """``params`` served on ``stack``: the transport, its event recorder and the port."""
    if stack == "wavewire":
        transport = WebsocketServerTransport(params, "127.0.0.1", 0)
        recorder = Recorder(transport)
        async with transport:
            yield transport, recorder, transport.port
        return
    asgi = AsgiServerTransport(params)
    recorder = Recorder(asgi)
    if stack == "uvicorn-wsproto":
        server = _uvicorn(asgi, "wsproto")
    elif stack == "uvicorn-websockets":
        # "websockets-sansio": uvicorn's implementation on the websockets library's sans-I/O
        # protocol (its older "websockets" one, on websockets' legacy API, is deprecated).
        server = _uvicorn(fastapi_app(asgi), "websockets-sansio")
    else:
        assert stack in ("hypercorn", "hypercorn-trio"), stack
        server = _hypercorn(starlette_app(asgi), trio=stack == "hypercorn-trio")
    async with server as port:
        with anyio.fail_after(LIMIT):
            await recorder.wait("on_websocket_ready")
        yield asgi, recorder, port
