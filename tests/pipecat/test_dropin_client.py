"""The drop-in client (``wavewire.pipecat.WebsocketClientTransport``) in a real Pipecat pipeline,
against Pipecat 1.14's own server transport, over a real socket."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import anyio
import pytest
import websockets
from pipecat.frames.frames import (
    EndFrame,
    InputAudioRawFrame,
    InputTransportMessageFrame,
    OutputAudioRawFrame,
    OutputTransportMessageUrgentFrame,
)
from pipecat.serializers.protobuf import ProtobufFrameSerializer as PipecatProtobuf
from pipecat.transports.base_input import BaseInputTransport
from pipecat.transports.base_output import BaseOutputTransport
from pipecat.transports.base_transport import BaseTransport
from pipecat.transports.websocket import client as pipecat_client
from pipecat.transports.websocket.server import (
    SingleClientWebsocketServerParams as PipecatServerParams,
)
from pipecat.transports.websocket.server import (
    SingleClientWebsocketServerTransport as PipecatServerTransport,
)

from wavewire.core.session.wav import wav_chunk
from wavewire.pipecat import (
    WebsocketClientConnection,
    WebsocketClientParams,
    WebsocketClientTransport,
)
from wavewire.transports.params import ReconnectPolicy

from .dropin_harness import CHUNK, RATE, Recorder, pcm, queue, running

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def free_port() -> int:
    # Pipecat's server cannot listen on port 0 and report the port: take one the OS hands out.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def test_the_client_classes_are_pipecat_transports_with_pipecats_params() -> None:
    ours, theirs = WebsocketClientParams(), pipecat_client.WebsocketClientParams()
    assert isinstance(ours, pipecat_client.WebsocketClientParams)
    for name in type(theirs).model_fields:
        assert getattr(ours, name) == getattr(theirs, name), name
    assert ours.add_wav_header and ours.reconnect is False
    transport = WebsocketClientTransport("ws://127.0.0.1:1/ws")
    assert isinstance(transport, BaseTransport)
    assert isinstance(transport.input(), BaseInputTransport)
    assert isinstance(transport.output(), BaseOutputTransport)
    assert isinstance(transport._params.serializer, PipecatProtobuf)  # Pipecat's default
    assert {"on_connected", "on_disconnected"} <= set(transport._event_handlers)
    # Pipecat's own params are accepted as they are.
    plain = WebsocketClientTransport("ws://x/", pipecat_client.WebsocketClientParams())
    assert plain._params.add_wav_header and plain._params.write_timeout == 10.0


async def test_against_pipecats_server_audio_and_messages_both_ways() -> None:
    port = free_port()
    server = PipecatServerTransport(
        PipecatServerParams(
            audio_in_enabled=True,
            audio_out_enabled=True,
            audio_out_end_silence_secs=0,
            serializer=PipecatProtobuf(),
        ),
        host="127.0.0.1",
        port=port,
    )
    ready = asyncio.Event()
    server_events: list[str] = []

    async def on_ready(transport: object) -> None:
        ready.set()

    async def on_connected(transport: object, websocket: object) -> None:
        server_events.append("connected")

    async def on_disconnected(transport: object, websocket: object) -> None:
        server_events.append("disconnected")
        bot._changed.set()

    server.add_event_handler("on_websocket_ready", on_ready)
    server.add_event_handler("on_client_connected", on_connected)
    server.add_event_handler("on_client_disconnected", on_disconnected)

    client = WebsocketClientTransport(
        f"ws://127.0.0.1:{port}/ws",
        WebsocketClientParams(
            audio_in_enabled=True, audio_out_enabled=True, audio_out_end_silence_secs=0
        ),
    )
    client_events: list[tuple[str, WebsocketClientConnection]] = []

    def record(name: str) -> Any:
        async def handler(transport: object, connection: WebsocketClientConnection) -> None:
            client_events.append((name, connection))

        return handler

    client.add_event_handler("on_connected", record("on_connected"))
    client.add_event_handler("on_disconnected", record("on_disconnected"))
    bot, user = Recorder(), Recorder()
    with anyio.fail_after(30):
        async with running([server.input(), bot, server.output()]) as server_worker:
            await ready.wait()
            async with running([client.input(), user, client.output()]) as client_worker:
                await bot.wait_for(lambda: "connected" in server_events)
                # Client -> Pipecat's server: a WAV file per chunk (add_wav_header=True, as
                # Pipecat's client), which Pipecat's server passes on as it came.
                spoken = pcm(4)
                await queue(
                    client_worker,
                    OutputAudioRawFrame(audio=spoken, sample_rate=RATE, num_channels=1),
                    OutputTransportMessageUrgentFrame(message={"from": "user"}),
                )
                await bot.wait_for(lambda: len(bot.of(InputAudioRawFrame)) >= 4)
                heard = [f.audio for f in bot.of(InputAudioRawFrame)]
                assert heard == [
                    wav_chunk(spoken[i : i + CHUNK], RATE) for i in range(0, len(spoken), CHUNK)
                ]
                await bot.wait_for(lambda: bool(bot.of(InputTransportMessageFrame)))
                assert bot.of(InputTransportMessageFrame)[0].message == {"from": "user"}
                # Pipecat's server -> client.
                said = pcm(5, start=99)
                await queue(
                    server_worker,
                    OutputAudioRawFrame(audio=said, sample_rate=RATE, num_channels=1),
                    OutputTransportMessageUrgentFrame(message={"from": "bot"}),
                )
                await user.wait_for(
                    lambda: len(b"".join(f.audio for f in user.of(InputAudioRawFrame))) >= len(said)
                )
                assert b"".join(f.audio for f in user.of(InputAudioRawFrame)) == said
                await user.wait_for(lambda: bool(user.of(InputTransportMessageFrame)))
                assert user.of(InputTransportMessageFrame)[0].message == {"from": "bot"}
                # The client ends: its output plays out, then closes; Pipecat's server sees it.
                await queue(client_worker, EndFrame())
                await bot.wait_for(lambda: "disconnected" in server_events)
            await queue(server_worker, EndFrame())
    assert server_events == ["connected", "disconnected"]
    assert [name for name, _ in client_events] == ["on_connected", "on_disconnected"]
    connected, disconnected = (connection for _, connection in client_events)
    assert connected is disconnected
    disconnect = connected.connection.disconnect
    assert disconnect is not None and disconnect.code == 1000


async def test_refused_by_pipecats_server_with_1013_the_client_backs_off() -> None:
    # The issue's case: Pipecat 1.14's server accepts a second client's handshake and closes it
    # with 1013 at once; every handshake used to reset the backoff (about 4 reconnects/s).
    port = free_port()
    server = PipecatServerTransport(
        PipecatServerParams(serializer=PipecatProtobuf()), host="127.0.0.1", port=port
    )
    ready = asyncio.Event()

    async def on_ready(transport: object) -> None:
        ready.set()

    server.add_event_handler("on_websocket_ready", on_ready)
    policy = ReconnectPolicy(base=0.05, cap=0.4, random=lambda: 0.5)
    client = WebsocketClientTransport(
        f"ws://127.0.0.1:{port}/ws", WebsocketClientParams(reconnect=policy)
    )
    attempts: list[tuple[int, float]] = []
    enough = asyncio.Event()

    async def on_reconnecting(transport: object, attempt: int, delay: float) -> None:
        attempts.append((attempt, delay))
        if len(attempts) >= 3:
            enough.set()

    client.add_event_handler("on_reconnecting", on_reconnecting)
    with anyio.fail_after(30):
        async with running([server.input(), Recorder(), server.output()]):
            await ready.wait()
            async with (
                websockets.connect(f"ws://127.0.0.1:{port}/ws"),  # holds the one place
                running([client.input(), Recorder(), client.output()]),
            ):
                await enough.wait()
    first = sorted(attempts)[:3]
    assert [n for n, _ in first] == [1, 2, 3]
    assert [d for _, d in first] == pytest.approx([0.05, 0.075, 0.125])
