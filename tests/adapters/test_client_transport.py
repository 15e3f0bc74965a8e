"""WebsocketClientTransport over real sockets on 127.0.0.1, on asyncio and trio: against
wavewire's own server transport, the ``websockets`` server, odd servers and the CLI."""

from __future__ import annotations

import signal
import struct
import wave
from pathlib import Path

import anyio
import pytest

from wavewire import (
    ConnectError,
    ConnectionClosed,
    HandshakeRejected,
    HandshakeTimeout,
    InputAudioRawFrame,
    InputTransportMessageFrame,
    OutputAudioRawFrame,
    OutputTransportMessageFrame,
    ProtobufFrameSerializer,
    ReconnectPolicy,
    TextFrame,
    WebsocketClientParams,
    WebsocketClientTransport,
    WebsocketServerTransport,
)
from wavewire.core.events import DisconnectCause
from wavewire.core.protocol.handshake import HandshakeRequest, Reject
from wavewire.transports.client import ClientConnection
from wavewire.transports.server import ClientHandle

from .client_support import (
    ClientRecorder,
    ServerInTask,
    client_params,
    environment,
    free_port,
    hooked_params,
    read_until,
    silent_server,
)
from .support import LIMIT, echo_server, make_params, synthetic_clock

AUDIO = bytes(range(256)) * 5  # 1280 bytes: 40 ms of 16 kHz mono PCM16, one output chunk


def uri(port: int, path: str = "/ws") -> str:
    return f"ws://127.0.0.1:{port}{path}"


def fast_policy(**overrides: object) -> ReconnectPolicy:
    settings: dict[str, object] = {"base": 0.02, "cap": 0.1}
    settings.update(overrides)
    return ReconnectPolicy(**settings)  # type: ignore[arg-type]


# --- against wavewire's server -------------------------------------------------------------------


@pytest.mark.anyio
async def test_echo_text_audio_and_messages_with_one_connect_and_disconnect() -> None:
    with anyio.fail_after(LIMIT):
        async with echo_server() as (server, server_events):
            params = client_params(additional_headers={"X-Token": "abc"})
            transport = WebsocketClientTransport(uri(server.port, "/ws?room=1"), params)
            events = ClientRecorder(transport)
            async with transport:
                assert transport.connected
                output, frames = transport.output(), transport.input()
                await output.send(TextFrame(text="héllo"))
                reply = await frames.receive()
                assert isinstance(reply, TextFrame) and reply.text == "héllo"

                await output.send(OutputAudioRawFrame(audio=AUDIO, sample_rate=16000))
                audio = await frames.receive()
                assert isinstance(audio, InputAudioRawFrame)
                assert (audio.audio, audio.sample_rate, audio.num_channels) == (AUDIO, 16000, 1)

                await output.send(OutputTransportMessageFrame(message={"type": "ping", "n": 1}))
                message = await frames.receive()
                assert isinstance(message, InputTransportMessageFrame)
                assert message.message == {"type": "ping", "n": 1}
                await server_events.wait("on_client_connected")
            # Leaving closed with 1000 and waited for it.
            assert transport.connection is None
            assert events.names() == ["on_connected", "on_disconnected"]
            (connection,) = events.args("on_connected")[0]
            assert isinstance(connection, ClientConnection)
            assert events.args("on_disconnected") == [(connection,)]
            assert connection.disconnect is not None
            assert connection.disconnect.code == 1000
            assert connection.disconnect.cause is DisconnectCause.CLOSED_LOCALLY
            assert connection.path == "/ws?room=1"
            assert connection.header("upgrade") == "websocket"

            await server_events.wait("on_client_disconnected")
            handle = server_events.handles[0]
            assert handle.path == "/ws?room=1"
            assert handle.header("x-token") == "abc"
            assert handle.disconnect is not None and handle.disconnect.code == 1000


@pytest.mark.anyio
async def test_audio_goes_out_with_a_wav_header_by_default() -> None:
    server = WebsocketServerTransport(make_params(), host="127.0.0.1", port=0)
    with anyio.fail_after(LIMIT):
        async with server:
            params = WebsocketClientParams(
                audio_out_enabled=True, audio_out_sample_rate=16000, close_timeout=2.0
            )
            assert params.add_wav_header  # Pipecat's default
            async with WebsocketClientTransport(uri(server.port), params) as transport:
                await transport.output().send(OutputAudioRawFrame(audio=AUDIO, sample_rate=16000))
                received = await server.input().receive()  # as it came, not re-chunked
    # The header went out (tests/core/test_outbound.py::test_wav_header_on_each_chunk checks the
    # wire) and the server's core stripped it: the application gets the samples only.
    assert isinstance(received, InputAudioRawFrame)
    assert received.audio == AUDIO


@pytest.mark.anyio
async def test_audio_input_is_dropped_unless_enabled() -> None:
    with anyio.fail_after(LIMIT):
        async with echo_server() as (server, _):
            params = client_params(audio_in_enabled=False)
            async with WebsocketClientTransport(uri(server.port), params) as transport:
                await transport.output().send(OutputAudioRawFrame(audio=AUDIO, sample_rate=16000))
                await transport.output().send(TextFrame(text="after"))
                reply = await transport.input().receive()
    assert isinstance(reply, TextFrame) and reply.text == "after"


@pytest.mark.anyio
async def test_server_close_reports_code_then_send_raises_and_input_ends() -> None:
    with anyio.fail_after(LIMIT):
        async with echo_server() as (server, server_events):
            transport = WebsocketClientTransport(uri(server.port), client_params())
            events = ClientRecorder(transport)
            async with transport:
                await server_events.wait("on_client_connected")
                await server_events.handles[0].close(4001, "go away")
                await events.wait("on_disconnected")
                (connection,) = events.args("on_disconnected")[0]
                assert connection.disconnect is not None
                assert (connection.disconnect.code, connection.disconnect.reason) == (
                    4001,
                    "go away",
                )
                assert connection.disconnect.cause is DisconnectCause.CLOSED_BY_PEER
                assert not transport.connected
                with pytest.raises(ConnectionClosed):
                    await transport.output().send(TextFrame(text="late"))
                assert [frame async for frame in transport.input()] == []
            assert events.names() == ["on_connected", "on_disconnected"]


@pytest.mark.anyio
async def test_send_after_close_raises_connection_closed() -> None:
    with anyio.fail_after(LIMIT):
        async with echo_server() as (server, server_events):
            transport = WebsocketClientTransport(uri(server.port), client_params())
            async with transport:
                connection = transport.connection
                assert connection is not None
                await connection.close(1000, "done")
                assert not connection.connected
                with pytest.raises(ConnectionClosed):
                    await transport.output().send(TextFrame(text="late"))
            with pytest.raises(ConnectionClosed):
                await transport.output().send(TextFrame(text="later"))
            await server_events.wait("on_client_disconnected")
            handle: ClientHandle = server_events.handles[0]
            assert handle.disconnect is not None
            assert (handle.disconnect.code, handle.disconnect.reason) == (1000, "done")


@pytest.mark.anyio
async def test_handshake_rejected_raises_with_the_status() -> None:
    def refuse(request: HandshakeRequest) -> Reject:
        return Reject(status_code=403, body=b"no token")

    with anyio.fail_after(LIMIT):
        async with echo_server(hooked_params(refuse)) as (server, server_events):
            transport = WebsocketClientTransport(uri(server.port), client_params())
            events = ClientRecorder(transport)
            with pytest.raises(HandshakeRejected) as caught:
                async with transport:
                    pytest.fail("connected despite the rejection")
            assert caught.value.status_code == 403
            assert caught.value.body == b"no token"
            assert events.log == []
            assert server_events.count("on_client_connected") == 0


@pytest.mark.anyio
async def test_open_timeout_against_a_server_that_never_answers() -> None:
    with anyio.fail_after(LIMIT):
        async with silent_server() as port:
            params = client_params(open_timeout=0.3)
            started = anyio.current_time()
            with pytest.raises(HandshakeTimeout):
                async with WebsocketClientTransport(uri(port), params):
                    pytest.fail("connected to a silent server")
            if synthetic_clock():  # exact on trio's virtual clock
                assert anyio.current_time() - started == pytest.approx(0.3)


@pytest.mark.anyio
async def test_refused_connection_is_a_clear_connect_error() -> None:
    port = free_port()
    with anyio.fail_after(LIMIT), pytest.raises(ConnectError) as caught:
        async with WebsocketClientTransport(uri(port), client_params()):
            pytest.fail("connected to a closed port")
    assert isinstance(caught.value, OSError)
    assert str(caught.value).startswith(f"cannot connect to 127.0.0.1:{port}: ")
    assert "refused" in str(caught.value).lower()


def test_bad_settings_fail_at_construction() -> None:
    with pytest.raises(ValueError, match="scheme"):
        WebsocketClientTransport("http://127.0.0.1/")
    with pytest.raises(ValueError, match="CR, LF"):
        WebsocketClientTransport("ws://h/", client_params(additional_headers={"X": "a\r\nB: c"}))
    import ssl

    context = ssl.create_default_context()
    with pytest.raises(ValueError, match="wss"):
        WebsocketClientTransport("ws://h/", client_params(ssl_context=context))
    with pytest.raises(ValueError, match="unknown event"):
        WebsocketClientTransport("ws://h/").add_event_handler("on_client_connected", print)


# --- interop -------------------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_interop_with_websockets_server() -> None:
    """A server nobody here wrote: the ``websockets`` library (asyncio only)."""
    from websockets.asyncio.server import ServerConnection, serve

    serializer = ProtobufFrameSerializer()
    seen: dict[str, object] = {}

    async def handler(ws: ServerConnection) -> None:
        seen["token"] = ws.request.headers.get("X-Token") if ws.request else None
        async for message in ws:
            frame = serializer.deserialize(message)
            if isinstance(frame, TextFrame):
                reply = serializer.serialize(TextFrame(text=frame.text.upper()))
            elif isinstance(frame, InputAudioRawFrame):
                reply = serializer.serialize(
                    OutputAudioRawFrame(audio=frame.audio, sample_rate=frame.sample_rate)
                )
            else:
                continue
            assert reply is not None
            await ws.send(reply)
        seen["close"] = ws.close_code

    with anyio.fail_after(LIMIT):
        async with serve(handler, "127.0.0.1", 0, compression=None) as server:
            port = next(iter(server.sockets)).getsockname()[1]
            params = client_params(additional_headers={"X-Token": "t0k"})
            async with WebsocketClientTransport(uri(port), params) as transport:
                await transport.output().send(TextFrame(text="hi there"))
                reply = await transport.input().receive()
                assert isinstance(reply, TextFrame) and reply.text == "HI THERE"
                await transport.output().send(OutputAudioRawFrame(audio=AUDIO, sample_rate=16000))
                audio = await transport.input().receive()
                assert isinstance(audio, InputAudioRawFrame) and audio.audio == AUDIO
            while "close" not in seen:  # noqa: ASYNC110 - the handler's end is all there is
                await anyio.sleep(0.01)
    assert seen == {"token": "t0k", "close": 1000}


# --- reconnect -----------------------------------------------------------------------------------


def test_backoff_grows_is_jittered_and_capped() -> None:
    top = ReconnectPolicy(base=0.5, cap=4.0, random=lambda: 0.999999)
    ceilings = [round(top.delay(n), 3) for n in range(1, 8)]
    assert ceilings == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0, 4.0]  # doubling, then the cap
    assert ReconnectPolicy(random=lambda: 0.0).delay(1) == 0.0  # full jitter reaches zero
    import random

    source = random.Random(7)
    jittered = ReconnectPolicy(base=0.5, cap=4.0, random=source.random)
    delays = [jittered.delay(n) for n in range(1, 200)]
    assert all(0 <= d <= min(4.0, 0.5 * 2 ** (n - 1)) for n, d in enumerate(delays, 1))
    assert len({round(d, 6) for d in delays}) == len(delays)  # random, not a fixed ladder
    assert max(delays) > 3.0 and min(delays[10:]) < 1.0  # spread across the capped range
    # RFC 6455 7.2.3: the first attempt is delayed at random too.
    default = ReconnectPolicy()
    firsts = {default.delay(1) for _ in range(20)}
    assert len(firsts) > 1 and all(0 <= d <= 0.5 for d in firsts)


def test_reconnect_policy_refuses_policy_codes_and_bad_values() -> None:
    assert not ReconnectPolicy().reconnects_after(1008)
    assert not ReconnectPolicy().reconnects_after(4000)
    assert not ReconnectPolicy().reconnects_after(1000)
    assert ReconnectPolicy().reconnects_after(1001)
    assert ReconnectPolicy().reconnects_after(1006)
    with pytest.raises(ValueError, match="1008"):
        ReconnectPolicy(retry_codes=frozenset({1006, 1008}))
    with pytest.raises(ValueError, match="4003"):
        ReconnectPolicy(retry_codes=frozenset({4003}))
    with pytest.raises(ValueError, match="base"):
        ReconnectPolicy(base=0)
    with pytest.raises(ValueError, match="max_attempts"):
        ReconnectPolicy(max_attempts=0)
    assert not ReconnectPolicy().retries_after(HandshakeRejected(401))
    assert ReconnectPolicy().retries_after(HandshakeRejected(503))
    assert ReconnectPolicy().retries_after(ConnectError("refused"))
    assert WebsocketClientParams(reconnect=True).reconnect_policy == ReconnectPolicy()
    assert WebsocketClientParams().reconnect_policy is None


@pytest.mark.anyio
async def test_reconnects_after_a_server_restart() -> None:
    params = client_params(reconnect=fast_policy())
    with anyio.fail_after(LIMIT):
        async with anyio.create_task_group() as tg:
            server = ServerInTask(tg, free_port())
            await server.start()
            transport = WebsocketClientTransport(uri(server.port), params)
            events = ClientRecorder(transport)
            async with transport:
                await server.stop()  # shuts down with 1001: the client retries, refused
                await events.wait("on_disconnected")
                first = events.args("on_disconnected")[0][0]
                assert first.disconnect.code == 1001
                await events.wait("on_reconnecting", 2)  # at least one attempt was refused
                await transport.output().send(TextFrame(text="dropped while reconnecting"))

                server_events = await server.start()
                await events.wait("on_connected", 2)
                assert transport.connected
                await transport.output().send(TextFrame(text="again"))
                reply = await transport.input().receive()
                assert isinstance(reply, TextFrame) and reply.text == "again"
            await server_events.wait("on_client_disconnected")
            await server.stop()
    names = events.names()
    assert names[0:2] == ["on_connected", "on_disconnected"]
    assert names[-2:] == ["on_connected", "on_disconnected"]
    attempts = events.args("on_reconnecting")
    assert [n for n, _ in attempts] == list(range(1, len(attempts) + 1))
    assert all(0 <= delay <= min(0.1, 0.02 * 2 ** (n - 1)) for n, delay in attempts)


@pytest.mark.anyio
@pytest.mark.parametrize("code", [1008, 4003])
async def test_no_reconnect_after_a_policy_close(code: int) -> None:
    with anyio.fail_after(LIMIT):
        async with echo_server() as (server, server_events):
            transport = WebsocketClientTransport(
                uri(server.port), client_params(reconnect=fast_policy())
            )
            events = ClientRecorder(transport)
            async with transport:
                await server_events.wait("on_client_connected")
                await server_events.handles[0].close(code, "policy")
                assert [frame async for frame in transport.input()] == []  # the end, at once
                with pytest.raises(ConnectionClosed):
                    await transport.output().send(TextFrame(text="late"))
                await anyio.sleep(0.15)  # longer than any backoff of fast_policy
            assert events.names() == ["on_connected", "on_disconnected"]
            assert server_events.count("on_client_connected") == 1


@pytest.mark.anyio
async def test_no_retry_after_a_4xx_handshake_rejection() -> None:
    def refuse(request: HandshakeRequest) -> Reject:
        return Reject(status_code=401)

    with anyio.fail_after(LIMIT):
        async with anyio.create_task_group() as tg:
            server = ServerInTask(tg, free_port())
            await server.start()
            transport = WebsocketClientTransport(
                uri(server.port), client_params(reconnect=fast_policy())
            )
            events = ClientRecorder(transport)
            async with transport:
                await server.stop()
                await server.start(hooked_params(refuse))
                await events.wait("on_reconnect_failed")
                await anyio.sleep(0.15)  # longer than any backoff of fast_policy
                (error,) = events.args("on_reconnect_failed")[0]
                assert isinstance(error, HandshakeRejected) and error.status_code == 401
                assert [frame async for frame in transport.input()] == []
            await server.stop()
    assert events.names()[-2:] == ["on_reconnecting", "on_reconnect_failed"]
    assert events.count("on_connected") == 1


@pytest.mark.anyio
async def test_gives_up_after_max_attempts() -> None:
    with anyio.fail_after(LIMIT):
        async with anyio.create_task_group() as tg:
            server = ServerInTask(tg, free_port())
            await server.start()
            transport = WebsocketClientTransport(
                uri(server.port), client_params(reconnect=fast_policy(max_attempts=3))
            )
            events = ClientRecorder(transport)
            async with transport:
                await server.stop()
                await events.wait("on_reconnect_failed")
                (error,) = events.args("on_reconnect_failed")[0]
                assert isinstance(error, ConnectError)
                assert events.count("on_reconnecting") == 3
                assert [frame async for frame in transport.input()] == []


@pytest.mark.anyio
async def test_exit_is_prompt_during_a_long_backoff() -> None:
    slow = ReconnectPolicy(base=30.0, cap=30.0, random=lambda: 1.0)
    with anyio.fail_after(LIMIT):
        async with anyio.create_task_group() as tg:
            server = ServerInTask(tg, free_port())
            await server.start()
            transport = WebsocketClientTransport(uri(server.port), client_params(reconnect=slow))
            events = ClientRecorder(transport)
            async with transport:
                await server.stop()
                await events.wait("on_reconnecting")
                assert events.args("on_reconnecting") == [(1, 30.0)]
                exiting = anyio.current_time()
            # Exited without sitting out the 30 s backoff: fail_after(LIMIT) would have fired,
            # and on trio's virtual clock no time passes at all.
            if synthetic_clock():
                assert anyio.current_time() == exiting


# --- wavewire connect ----------------------------------------------------------------------------


def write_wav(path: Path, seconds: float, rate: int = 16000) -> int:
    frames = int(seconds * rate)
    samples = b"".join(struct.pack("<h", (n * 37) % 20000 - 10000) for n in range(frames))
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(samples)
    return frames


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_cli_connect_sends_a_wav_and_records_the_echo(tmp_path: Path) -> None:
    import sys

    source, record = tmp_path / "in.wav", tmp_path / "out.wav"
    frames = write_wav(source, 0.5)
    port = free_port()
    serve = [sys.executable, "-m", "wavewire", "serve", "--host", "127.0.0.1", "--port", str(port)]
    connect = [
        *[sys.executable, "-m", "wavewire", "connect", uri(port)],
        *["--send", str(source), "--record", str(record), "--header", "X-Test: 1"],
    ]
    with anyio.fail_after(LIMIT * 2):
        async with await anyio.open_process(serve, env=environment()) as server:
            assert server.stderr is not None
            await read_until(server.stderr, b"listening on")
            result = await anyio.run_process(connect, env=environment(), check=False)
            server.send_signal(signal.SIGINT)  # at once (SIGTERM drains)
    assert result.returncode == 0, result.stderr.decode()
    # Its pacing: test_cli_newuser.py::test_connect_sends_on_a_real_time_schedule (synthetic
    # clock).
    with wave.open(str(record), "rb") as recorded:
        assert (recorded.getnchannels(), recorded.getsampwidth()) == (1, 2)
        assert recorded.getframerate() == 16000
        chunk = 16000 * 20 // 1000
        assert abs(recorded.getnframes() - frames) <= chunk


def test_cli_connect_failure_is_one_line_and_exit_1() -> None:
    import subprocess
    import sys

    port = free_port()
    result = subprocess.run(
        [sys.executable, "-m", "wavewire", "connect", uri(port)],
        env=environment(),
        capture_output=True,
        text=True,
        timeout=LIMIT * 2,
        check=False,
    )
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"wavewire: cannot connect to 127.0.0.1:{port}")


@pytest.mark.anyio
async def test_protocol_error_right_after_the_101_closes_the_socket() -> None:
    # A server that answers the upgrade and, in the same write, sends a reserved opcode: the
    # client must fail the connection (1002) and close its socket, not wait for the server.
    import base64
    import hashlib

    import anyio.abc

    async def bad_server(stream: anyio.abc.SocketStream) -> None:
        async with stream:
            head = b""
            while b"\r\n\r\n" not in head:
                head += await stream.receive()
            key = next(
                line.split(b":", 1)[1].strip()
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"sec-websocket-key")
            )
            accept = base64.b64encode(
                hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest()
            )
            await stream.send(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n" + b"\x83\x00"
            )
            with anyio.move_on_after(5):
                try:
                    while await stream.receive():
                        pass
                except (anyio.EndOfStream, anyio.BrokenResourceError):
                    pass  # the client closed its side, as it must

    with anyio.fail_after(5):
        listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
        async with listener, anyio.create_task_group() as tg:
            tg.start_soon(listener.serve, bad_server)
            port = listener.extra(anyio.abc.SocketAttribute.local_port)
            transport = WebsocketClientTransport(
                f"ws://127.0.0.1:{port}/", WebsocketClientParams(add_wav_header=False)
            )
            gone: list[int] = []
            transport.add_event_handler(
                "on_disconnected", lambda t, c: gone.append(c.disconnect.code)
            )
            async with transport:
                async for _ in transport.input():
                    pass
            assert gone == [1002]  # within fail_after(5): not after the 10 s close timeout
            tg.cancel_scope.cancel()
