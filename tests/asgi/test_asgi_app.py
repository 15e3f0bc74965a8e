"""``AsgiServerTransport`` paths the stack suite does not take, each over a real uvicorn:
a route that accepted the socket itself, a server without ``websocket.http.response`` (403),
plain HTTP (426 or the params' handler), a WebSocket before the transport runs, shutdown,
and ``wavewire serve --asgi`` as a real subprocess."""

from __future__ import annotations

import signal
import sys
from collections.abc import AsyncIterator, MutableMapping
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.abc
import pytest
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket

from tests.adapters.client_support import environment, free_port, read_until
from tests.adapters.faults import read_head, upgrade_request
from tests.adapters.support import LIMIT, Recorder, make_params
from tests.adapters.wsclient import connect
from wavewire import HttpRequest, HttpResponse, InputAudioRawFrame, OutputAudioRawFrame
from wavewire.asgi import AsgiServerTransport
from wavewire.cli import echo
from wavewire.core.events import DisconnectCause, Disconnected
from wavewire.core.frames import TextFrame

from .stacks import PATH, _uvicorn

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@asynccontextmanager
async def running(app: Any) -> AsyncIterator[int]:
    async with _uvicorn(app, "wsproto") as port:
        yield port


async def test_a_route_that_accepted_first_is_served_as_it_is() -> None:
    transport = AsgiServerTransport(make_params())
    recorder = Recorder(transport)

    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()  # as Pipecat's FastAPI examples do, before the transport
        await transport.serve_websocket(websocket)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with transport, anyio.create_task_group() as tg:
            tg.start_soon(echo, transport.input(), transport.output())
            yield
            tg.cancel_scope.cancel()

    app = Starlette(routes=[WebSocketRoute(PATH, ws)], lifespan=lifespan)
    with anyio.fail_after(LIMIT):
        async with running(app) as port, connect(port, PATH) as client:
            await client.send(TextFrame(text="hello"))
            assert await client.next_frame() == TextFrame(text="hello")
            assert recorder.handles[0].path == PATH
            await client.close()
            await recorder.wait("on_client_disconnected")


async def test_without_the_http_response_extension_a_refusal_is_a_403_close() -> None:
    transport = AsgiServerTransport(make_params(allowed_origins=["https://ok.example"]))
    recorder = Recorder(transport)

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        scope = {**scope, "extensions": {}}  # a server that does not offer it
        await transport(scope, receive, send)

    with anyio.fail_after(LIMIT):
        async with running(app) as port:
            stream = await anyio.connect_tcp("127.0.0.1", port)
            async with stream:
                await stream.send(upgrade_request("Origin: https://evil"))
                head, _ = await read_head(stream)
                assert head.startswith(b"HTTP/1.1 403 "), head
    assert recorder.names() == []


async def test_plain_http_gets_426_or_the_params_handler() -> None:
    def handler(request: HttpRequest) -> HttpResponse | None:
        return HttpResponse(body=b"ok\n") if request.path == "/health" else None

    transport = AsgiServerTransport(make_params(http_handler=handler))
    with anyio.fail_after(LIMIT):
        async with running(transport) as port:
            for path, status, body in (("/health", 200, b"ok\n"), ("/", 426, b"not a WebSocket")):
                stream = await anyio.connect_tcp("127.0.0.1", port)
                async with stream:
                    await stream.send(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
                    head, rest = await read_head(stream)
                    assert head.startswith(f"HTTP/1.1 {status} ".encode()), head
                    while body not in rest:
                        rest += await stream.receive()


async def test_a_websocket_before_the_transport_runs_is_refused_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    transport = AsgiServerTransport(make_params())

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "lifespan":  # the lifespan never enters the transport here
            await transport(scope, receive, send)

    config_app: Any = app
    with anyio.fail_after(LIMIT):
        async with _uvicorn_no_lifespan(config_app) as port:
            stream = await anyio.connect_tcp("127.0.0.1", port)
            async with stream:
                await stream.send(upgrade_request())
                head, _ = await read_head(stream)
                assert head.startswith(b"HTTP/1.1 403 "), head
    assert any("not running" in r.getMessage() for r in caplog.records)
    with pytest.raises(RuntimeError, match="enter the transport"):
        await transport.serve_websocket(_FakeSocket())


class _FakeSocket:
    scope: MutableMapping[str, Any] = {}

    async def receive(self) -> MutableMapping[str, Any]:
        raise AssertionError("not reached")

    async def send(self, message: MutableMapping[str, Any]) -> None:
        raise AssertionError("not reached")


@asynccontextmanager
async def _uvicorn_no_lifespan(app: Any) -> AsyncIterator[int]:
    import uvicorn

    from .stacks import _bound_socket

    sock = _bound_socket()
    config = uvicorn.Config(app, ws="wsproto", lifespan="off", log_level="warning")
    server = uvicorn.Server(config)
    async with anyio.create_task_group() as tg:
        tg.start_soon(server.serve, [sock])
        while not server.started:  # noqa: ASYNC110
            await anyio.sleep(0.01)
        try:
            yield sock.getsockname()[1]
        finally:
            server.should_exit = True
    sock.close()


async def test_leaving_the_transport_closes_sessions_with_1001() -> None:
    transport = AsgiServerTransport(make_params())
    recorder = Recorder(transport)

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await transport(scope, receive, send)

    stop = anyio.Event()

    async def run_transport(*, task_status: anyio.abc.TaskStatus[None]) -> None:
        async with transport:  # entered and left in this task, as anyio requires
            task_status.started()
            await stop.wait()

    with anyio.fail_after(LIMIT):
        async with _uvicorn_no_lifespan(app) as port, anyio.create_task_group() as tg:
            await tg.start(run_transport)
            async with connect(port, PATH) as client:
                await recorder.wait("on_client_connected")
                stop.set()
                ended = await client.next(Disconnected)
    assert ended.code == 1001
    disconnect = recorder.handles[0].disconnect
    assert disconnect is not None and disconnect.cause is DisconnectCause.SHUTDOWN


async def test_wavewire_serve_asgi_runs_the_echo_bot_under_uvicorn() -> None:
    port = free_port()
    args = [sys.executable, "-m", "wavewire", "serve", "--asgi", "--host", "127.0.0.1"]
    args += ["--port", str(port)]
    with anyio.fail_after(LIMIT * 2):
        async with await anyio.open_process(args, env=environment()) as process:
            assert process.stderr is not None
            started = await read_until(process.stderr, b"Uvicorn running on")
            # The demo's address names uvicorn's port (the transport itself binds none).
            assert b"browser demo: http://127.0.0.1:%d/" % port in started
            async with connect(port) as client:
                await client.send(TextFrame(text="echo?"))
                assert await client.next_frame() == TextFrame(text="echo?")
                await client.send(OutputAudioRawFrame(audio=b"\x00\x01" * 640, sample_rate=16000))
                audio = await client.next_frame()
                assert isinstance(audio, InputAudioRawFrame) and audio.audio == b"\x00\x01" * 640
                process.send_signal(signal.SIGINT)
                ended = await client.next(Disconnected)
                assert ended.code in (1001, 1012)  # uvicorn closes its sockets with 1012 first
            assert await process.wait() == 0
            log = await read_to_end_of(process)
            assert b"Traceback" not in log


async def read_to_end_of(process: anyio.abc.Process) -> bytes:
    assert process.stderr is not None
    data = b""
    async for chunk in process.stderr:
        data += chunk
    return data
