"""WebsocketServerTransport over real sockets on 127.0.0.1: every test runs on each driver and
backend it supports (``MATRIX``)."""

from __future__ import annotations

import contextlib
import logging
from contextlib import AsyncExitStack
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from wavewire import (
    ConnectionClosed,
    InputAudioRawFrame,
    InputTransportMessageFrame,
    OutputAudioRawFrame,
    OutputTransportMessageFrame,
    ProtobufFrameSerializer,
    TextFrame,
    WebsocketServerTransport,
)
from wavewire.cli import echo
from wavewire.core.events import ConnectionId, DisconnectCause, Disconnected
from wavewire.transports.server import ClientHandle, DriverName

from .support import (
    LIMIT,
    Recorder,
    backend_on_synthetic_clock,
    echo_server,
    make_params,
    synthetic_clock,
    wait_until,
)
from .wsclient import connect

pytestmark = pytest.mark.anyio

#: (driver, anyio backend) pairs: the anyio driver on both backends, the native one on asyncio.
MATRIX: list[tuple[DriverName, str]] = [
    ("anyio", "asyncio"),
    ("anyio", "trio"),
    ("asyncio", "asyncio"),
]
ASYNCIO_ONLY = [pair for pair in MATRIX if pair[1] == "asyncio"]


def IDS(pair: tuple[DriverName, str]) -> str:
    return f"{pair[0]}-driver-on-{pair[1]}"


@pytest.fixture(params=MATRIX, ids=IDS)
def driver_backend(request: pytest.FixtureRequest) -> tuple[DriverName, str]:
    pair: tuple[DriverName, str] = request.param
    return pair


@pytest.fixture
def anyio_backend(driver_backend: tuple[DriverName, str]) -> str | tuple[str, dict[str, Any]]:
    return backend_on_synthetic_clock(driver_backend[1])


@pytest.fixture
def driver(driver_backend: tuple[DriverName, str]) -> DriverName:
    return driver_backend[0]


UPGRADE = (
    b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)
AUDIO = bytes(range(256)) * 5  # 1280 bytes: 40 ms of 16 kHz mono PCM16, one output chunk


async def test_echo_text_audio_and_messages(driver: DriverName) -> None:
    with anyio.fail_after(LIMIT):
        async with echo_server(driver=driver) as (transport, recorder):
            async with connect(transport.port, "/ws?token=abc") as client:
                await client.send(TextFrame(text="hello"))
                reply = await client.next_frame()
                assert isinstance(reply, TextFrame) and reply.text == "hello"

                await client.send(OutputAudioRawFrame(audio=AUDIO, sample_rate=16000))
                audio = await client.next_frame()
                assert isinstance(audio, InputAudioRawFrame)
                assert (audio.audio, audio.sample_rate, audio.num_channels) == (AUDIO, 16000, 1)

                await client.send(OutputTransportMessageFrame(message={"type": "ping", "n": 1}))
                message = await client.next_frame()
                assert isinstance(message, InputTransportMessageFrame)
                assert message.message == {"type": "ping", "n": 1}

                ended = await client.close()
                assert ended.code == 1000
            await recorder.wait("on_client_disconnected")
            handle = recorder.handles[0]
            assert handle.path == "/ws?token=abc"
            assert isinstance(handle.remote, tuple) and handle.remote[0] == "127.0.0.1"
            assert handle.header("host") == f"127.0.0.1:{transport.port}"
            assert handle.disconnect is not None
            assert handle.disconnect.cause is DisconnectCause.CLOSED_BY_PEER
            assert recorder.names() == [
                ("on_client_connected", handle.id),
                ("on_client_disconnected", handle.id),
            ]
        assert recorder.log[0] == ("on_websocket_ready", None)


@pytest.mark.parametrize("driver_backend", ASYNCIO_ONLY, ids=IDS)
async def test_interop_with_websockets_client_and_shutdown_1001(driver: DriverName) -> None:
    """A client nobody here wrote: the ``websockets`` library (asyncio only)."""
    from websockets.asyncio.client import connect as ws_connect

    serializer = ProtobufFrameSerializer()
    with anyio.fail_after(LIMIT):
        async with AsyncExitStack() as stack:
            # A close timeout past fail_after: a shutdown that waited it out would fail.
            params = make_params(close_timeout=LIMIT * 4)
            server = echo_server(params, driver=driver)
            transport, recorder = await stack.enter_async_context(server)
            uri = f"ws://127.0.0.1:{transport.port}/"
            async with ws_connect(uri, compression=None) as ws:
                text = serializer.serialize(TextFrame(text="héllo"))
                assert text is not None
                await ws.send(text)
                reply = serializer.deserialize(await ws.recv())
                assert isinstance(reply, TextFrame) and reply.text == "héllo"

                audio = serializer.serialize(OutputAudioRawFrame(audio=AUDIO, sample_rate=16000))
                assert audio is not None
                await ws.send(audio)
                echoed = serializer.deserialize(await ws.recv())
                assert isinstance(echoed, InputAudioRawFrame) and echoed.audio == AUDIO

                await stack.aclose()  # shut the server down with the client connected
                await ws.wait_closed()
                assert ws.close_code == 1001
            assert recorder.count("on_client_disconnected") == 1
            handle = recorder.handles[0]
            assert handle.disconnect is not None
            assert handle.disconnect.cause is DisconnectCause.SHUTDOWN


async def test_shutdown_with_client_connected_sends_1001(driver: DriverName) -> None:
    codes: list[int] = []

    async def client_task(port: int) -> None:
        async with connect(port) as client:
            codes.append((await client.next(Disconnected)).code)

    with anyio.fail_after(LIMIT):
        # The client lives in its own task: the transport's task group is exited under it.
        # A close timeout past fail_after: a shutdown that waited it out would fail the test.
        async with (
            anyio.create_task_group() as tg,
            echo_server(make_params(close_timeout=LIMIT * 4), driver=driver) as (
                transport,
                recorder,
            ),
        ):
            tg.start_soon(client_task, transport.port)
            await recorder.wait("on_client_connected")
            closing = anyio.current_time()
        if synthetic_clock():  # the close handshake with a live client takes no waiting
            assert anyio.current_time() == closing
        assert codes == [1001]
        assert recorder.count("on_client_disconnected") == 1
        assert recorder.handles[0].disconnect is not None
        assert recorder.handles[0].disconnect.cause is DisconnectCause.SHUTDOWN


async def test_replacement_closes_old_client_with_1000(driver: DriverName) -> None:
    with anyio.fail_after(LIMIT):
        async with (
            echo_server(driver=driver) as (transport, recorder),
            connect(transport.port) as first,
        ):
            await recorder.wait("on_client_connected")
            async with connect(transport.port) as second:
                ended = await first.next(Disconnected)
                assert (ended.code, ended.reason) == (1000, "replaced by a newer connection")
                await recorder.wait("on_client_connected", 2)
                old, new = recorder.handles
                assert recorder.names() == [
                    ("on_client_connected", old.id),
                    ("on_client_disconnected", old.id),
                    ("on_client_connected", new.id),
                ]
                assert transport.client is new
                await second.send(TextFrame(text="I am the new one"))
                reply = await second.next_frame()
                assert isinstance(reply, TextFrame) and reply.text == "I am the new one"
                await second.close()


async def test_reject_policy_refuses_newcomer_with_1013(driver: DriverName) -> None:
    with anyio.fail_after(LIMIT):
        params = make_params(client_policy="reject")
        async with (
            echo_server(params, driver=driver) as (transport, recorder),
            connect(transport.port) as first,
        ):
            await recorder.wait("on_client_connected")
            async with connect(transport.port) as second:
                ended = await second.next(Disconnected)
                assert ended.code == 1013
            await first.send(TextFrame(text="still here"))
            reply = await first.next_frame()
            assert isinstance(reply, TextFrame) and reply.text == "still here"
            assert recorder.count("on_client_connected") == 1
            await first.close()


async def test_session_timeout_fires_for_each_session(driver: DriverName) -> None:
    """Pipecat arms one timer, at the first client, ever; here every session gets its own."""
    timeout = 0.2
    with anyio.fail_after(LIMIT):
        async with echo_server(make_params(session_timeout=timeout), driver=driver) as (
            transport,
            recorder,
        ):
            for n in (1, 2):
                started = anyio.current_time()  # before the adoption that starts the timer
                async with connect(transport.port) as client:
                    await recorder.wait("on_session_timeout", n)
                    if synthetic_clock():  # exact on trio's virtual clock
                        assert anyio.current_time() - started == pytest.approx(timeout)
                    handle = recorder.handles[-1]
                    assert recorder.log[-1] == ("on_session_timeout", handle.id)
                    assert handle.connected  # the timeout closes nothing
                    await client.close()
                await recorder.wait("on_client_disconnected", n)


async def test_disconnect_without_close_frame_reported_once(driver: DriverName) -> None:
    with anyio.fail_after(LIMIT):
        async with echo_server(driver=driver) as (transport, recorder):
            async with connect(transport.port) as client:
                await recorder.wait("on_client_connected")
                await client.abort()
                await recorder.wait("on_client_disconnected")
            handle = recorder.handles[0]
            assert handle.disconnect is not None
            assert handle.disconnect.code == 1006
            assert handle.disconnect.cause is DisconnectCause.CONNECTION_LOST
            assert transport.client is None
        assert recorder.count("on_client_disconnected") == 1


async def test_raising_handlers_are_logged_and_not_fatal(
    driver: DriverName, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[str] = []
    with anyio.fail_after(LIMIT):
        async with echo_server(driver=driver) as (transport, recorder):

            @transport.event_handler("on_client_connected")
            def broken(transport: WebsocketServerTransport, client: ClientHandle) -> None:
                calls.append("sync")
                raise RuntimeError("sync handler bug")

            @transport.event_handler("on_client_connected")
            async def broken_async(
                transport: WebsocketServerTransport, client: ClientHandle
            ) -> None:
                calls.append("async")
                await anyio.lowlevel.checkpoint()
                raise RuntimeError("async handler bug")

            for _ in range(2):
                async with connect(transport.port) as client:
                    await client.send(TextFrame(text="ok"))
                    reply = await client.next_frame()
                    assert isinstance(reply, TextFrame) and reply.text == "ok"
                    await client.close()
                await recorder.wait("on_client_disconnected", recorder.count("on_client_connected"))
    assert calls == ["sync", "async", "sync", "async"]
    raised = [r for r in caplog.records if r.levelno == logging.ERROR and r.exc_info]
    assert len(raised) == 4


def test_unknown_event_name_is_refused_at_registration() -> None:
    transport = WebsocketServerTransport(make_params())
    with pytest.raises(ValueError, match="unknown event 'on_client_conected'"):
        transport.add_event_handler("on_client_conected", print)
    with pytest.raises(ValueError, match="on_client_connected"):
        transport.event_handler("on_connected")


async def test_multi_policy_gives_each_client_its_own_streams(driver: DriverName) -> None:
    transport = WebsocketServerTransport(
        make_params(client_policy="multi"), "127.0.0.1", 0, driver=driver
    )
    recorder = Recorder(transport)
    with anyio.fail_after(LIMIT):
        async with transport, anyio.create_task_group() as tg:

            @transport.event_handler("on_client_connected")
            def start_echo(transport: WebsocketServerTransport, client: ClientHandle) -> None:
                tg.start_soon(echo, client.input(), client.output())

            with pytest.raises(RuntimeError, match="multi"):
                transport.input()
            async with connect(transport.port) as one, connect(transport.port) as two:
                await recorder.wait("on_client_connected", 2)
                assert len(transport.clients) == 2
                await one.send(TextFrame(text="one"))
                await two.send(TextFrame(text="two"))
                reply_two = await two.next_frame()
                reply_one = await one.next_frame()
                assert isinstance(reply_one, TextFrame) and reply_one.text == "one"
                assert isinstance(reply_two, TextFrame) and reply_two.text == "two"
                await one.close()
                await two.close()
            await recorder.wait("on_client_disconnected", 2)
            with pytest.raises(ConnectionClosed):
                await recorder.handles[0].output().send(TextFrame(text="late"))


async def test_peer_that_stops_reading_is_disconnected_after_write_timeout(
    driver: DriverName,
) -> None:
    params = make_params(write_timeout=0.3, max_output_buffer=64 * 1024)
    with anyio.fail_after(LIMIT):
        async with echo_server(params, driver=driver) as (transport, recorder):
            stream = await anyio.connect_tcp("127.0.0.1", transport.port)
            async with stream:
                await stream.send(UPGRADE)
                head = b""
                while b"\r\n\r\n" not in head:
                    head += await stream.receive()
                assert head.startswith(b"HTTP/1.1 101")
                await recorder.wait("on_client_connected")
                handle = recorder.handles[0]
                # Not audio: audio is paced at real time, and would never fill the socket.
                chunk = TextFrame(text="x" * 64 * 1024)
                # Never read again: the server's writes must stall, time out and abort.
                while handle.connected:
                    await transport.output().send(chunk)
                await recorder.wait("on_client_disconnected")
                assert handle.disconnect is not None
                assert handle.disconnect.cause is DisconnectCause.CONNECTION_LOST


async def test_input_backpressure_then_fast_shutdown(driver: DriverName) -> None:
    """Nobody reads ``input()``: the queue holds ``max_input_queue`` frames and the reader
    blocks (so the socket is not read) instead of buffering; frames then arrive in order, and
    a shutdown with a blocked reader still closes promptly with 1001."""
    transport = WebsocketServerTransport(
        # A close timeout past fail_after: a shutdown that waited it out would fail the test.
        make_params(max_input_queue=2, close_timeout=LIMIT * 4),
        "127.0.0.1",
        0,
        driver=driver,
    )
    codes: list[int] = []
    sent = anyio.Event()

    async def client_task(port: int) -> None:
        async with connect(port) as client:
            for n in range(20):
                await client.send(TextFrame(text=str(n)))
            sent.set()
            codes.append((await client.next(Disconnected)).code)

    with anyio.fail_after(LIMIT):
        async with anyio.create_task_group() as tg, transport:
            queue = transport._input_queue
            assert queue is not None
            tg.start_soon(client_task, transport.port)
            await sent.wait()
            # The reader parks on the full queue.
            await wait_until(lambda: queue.waiting_writers == 1)
            assert len(queue) == 2
            frames = transport.input()
            texts = [getattr(await frames.receive(), "text", None) for _ in range(5)]
            assert texts == ["0", "1", "2", "3", "4"]
            await wait_until(lambda: queue.waiting_writers == 1)  # again, on the rest
        assert codes == [1001]


async def test_keepalive_timeout_disconnects_a_silent_peer(driver: DriverName) -> None:
    params = make_params(ping_interval=0.1, ping_timeout=0.1)
    with anyio.fail_after(LIMIT):
        async with echo_server(params, driver=driver) as (transport, recorder):
            stream = await anyio.connect_tcp("127.0.0.1", transport.port)
            async with stream:
                await stream.send(UPGRADE)
                await recorder.wait("on_client_connected")
                # Never answer the ping: the core's deadline fires through the timer task.
                await recorder.wait("on_client_disconnected")
            handle = recorder.handles[0]
            assert handle.disconnect is not None
            assert handle.disconnect.cause is DisconnectCause.KEEPALIVE_TIMEOUT


async def test_handler_can_close_the_client_and_await_it(driver: DriverName) -> None:
    closed: list[bool] = []
    with anyio.fail_after(LIMIT):
        async with echo_server(driver=driver) as (transport, recorder):

            @transport.event_handler("on_client_connected")
            async def go_away(transport: WebsocketServerTransport, client: ClientHandle) -> None:
                await client.close(4001, "go away")
                closed.append(client.connected)

            async with connect(transport.port) as client:
                ended = await client.next(Disconnected)
                assert (ended.code, ended.reason) == (4001, "go away")
            await recorder.wait("on_client_disconnected")
            assert closed == [False]
            assert recorder.handles[0].disconnect is not None
            assert recorder.handles[0].disconnect.cause is DisconnectCause.CLOSED_LOCALLY


async def test_plain_http_request_is_refused_and_server_keeps_serving(driver: DriverName) -> None:
    with anyio.fail_after(LIMIT):
        async with echo_server(driver=driver) as (transport, recorder):
            stream = await anyio.connect_tcp("127.0.0.1", transport.port)
            async with stream:
                await stream.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                response = b""
                with contextlib.suppress(anyio.EndOfStream):
                    while True:
                        response += await stream.receive()
            assert response.startswith(b"HTTP/1.1 426")
            async with connect(transport.port) as client:
                await client.send(TextFrame(text="fine"))
                reply = await client.next_frame()
                assert isinstance(reply, TextFrame) and reply.text == "fine"
                await client.close()
            assert recorder.count("on_client_connected") == 1


async def test_shutdown_is_bounded_when_a_handler_never_returns(driver: DriverName) -> None:
    transport = WebsocketServerTransport(
        make_params(close_timeout=0.3), "127.0.0.1", 0, driver=driver
    )
    entered = anyio.Event()

    @transport.event_handler("on_websocket_ready")
    async def stuck(transport: WebsocketServerTransport) -> None:
        entered.set()
        await anyio.sleep_forever()

    with anyio.fail_after(LIMIT):
        async with transport:  # exits after close_timeout, not never (fail_after bounds it)
            await entered.wait()
            started = anyio.current_time()
        if synthetic_clock():
            assert anyio.current_time() - started == pytest.approx(0.3)


@pytest.mark.anyio
async def test_authentication_hook_refuses_a_bad_token_before_the_upgrade() -> None:
    import hmac

    import wavewire

    secret = "s3cret"

    def authenticate(request: wavewire.HandshakeRequest) -> wavewire.Accept | wavewire.Reject:
        token = (request.query.get("token") or [""])[0]
        if hmac.compare_digest(token.encode(), secret.encode()):
            return wavewire.Accept()
        return wavewire.Reject(status_code=401, body=b"bad token")

    params = wavewire.WebsocketServerParams(handshake_hook=authenticate)
    with anyio.fail_after(5):
        async with wavewire.WebsocketServerTransport(params, host="127.0.0.1", port=0) as server:
            base = f"ws://127.0.0.1:{server.port}/"
            with pytest.raises(wavewire.HandshakeRejected) as refused:
                async with wavewire.WebsocketClientTransport(base + "?token=nope"):
                    pass
            assert refused.value.status_code == 401
            assert refused.value.body == b"bad token"
            async with wavewire.WebsocketClientTransport(base + "?token=s3cret") as client:
                assert client.connection is not None


@pytest.mark.parametrize("policy", ["multi", "replace"])
async def test_input_pending_says_whether_a_clients_frames_wait_unread(
    driver: DriverName, policy: str
) -> None:
    """What the native driver asks before batching a send: True while a frame the client sent
    waits in the queue it went to (the client's own, or the transport's), False once read,
    and False for a connection it does not know."""
    transport = WebsocketServerTransport(
        make_params(client_policy=policy), "127.0.0.1", 0, driver=driver
    )
    recorder = Recorder(transport)
    with anyio.fail_after(LIMIT):
        async with transport, connect(transport.port) as client:
            await recorder.wait("on_client_connected")
            handle = recorder.handles[0]
            frames = handle.input() if policy == "multi" else transport.input()
            assert not transport.input_pending(handle.id)
            await client.send(TextFrame(text="waiting"))
            await wait_until(lambda: transport.input_pending(handle.id))
            assert await frames.receive() == TextFrame(text="waiting")
            assert not transport.input_pending(handle.id)
            assert not transport.input_pending(ConnectionId(handle.id + 1000))
