"""The drop-in server (``wavewire.pipecat``) in real Pipecat pipelines over real sockets: with
Pipecat's own ``WebsocketClientTransport`` and with a plain ``websockets`` client.

Every socket wait is bounded (``anyio.fail_after``); nothing here asserts how long anything took:
pacing is proven on the synthetic clock (test_dropin_pacing.py, tests/core).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest
import websockets
from pipecat.frames.frames import (
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    ClientConnectedFrame,
    EndFrame,
    Frame,
    InputAudioRawFrame,
    InputTransportMessageFrame,
    InterruptionFrame,
    OutputAudioRawFrame,
    OutputTransportMessageFrame,
    OutputTransportMessageUrgentFrame,
    TTSAudioRawFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
)
from pipecat.serializers.protobuf import ProtobufFrameSerializer as PipecatProtobuf
from pipecat.serializers.twilio import TwilioFrameSerializer
from pipecat.transports.websocket.client import WebsocketClientParams as PipecatClientParams
from pipecat.transports.websocket.client import (
    WebsocketClientTransport as PipecatClientTransport,
)

from wavewire.core.admission import Accept, HandshakeRequest, Reject
from wavewire.core.events import DisconnectCause
from wavewire.core.frames import Frame as CoreFrame
from wavewire.core.frames import InputAudioRawFrame as CoreInputAudio
from wavewire.core.frames import InputTransportMessageFrame as CoreInputMessage
from wavewire.core.frames import InterruptionFrame as CoreInterruption
from wavewire.core.frames import OutputAudioRawFrame as CoreOutputAudio
from wavewire.core.frames import OutputTransportMessageFrame as CoreOutputMessage
from wavewire.core.serializers._codecs import decode, encode
from wavewire.core.serializers.protobuf import ProtobufFrameSerializer as CoreProtobuf
from wavewire.core.session.wav import wav_chunk
from wavewire.pipecat import (
    SingleClientWebsocketServerParams,
    SingleClientWebsocketServerTransport,
    WebsocketServerClient,
    WebsocketServerParams,
    WebsocketServerTransport,
)

from .dropin_harness import CHUNK, RATE, Recorder, pcm, queue, running

pytestmark = pytest.mark.anyio

CORE_PROTO = CoreProtobuf()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # Pipecat runs on asyncio only


class Events:
    """Every event the drop-in server emits, in order, with its client argument."""

    def __init__(self, transport: SingleClientWebsocketServerTransport) -> None:
        self.log: list[tuple[str, WebsocketServerClient | None]] = []
        self.ready = asyncio.Event()
        self.changed = asyncio.Event()
        for name in ("on_client_connected", "on_client_disconnected", "on_session_timeout"):
            transport.add_event_handler(name, self._recorder(name))

        async def on_ready(transport: SingleClientWebsocketServerTransport) -> None:
            self.log.append(("on_websocket_ready", None))
            self.ready.set()

        transport.add_event_handler("on_websocket_ready", on_ready)

    def _recorder(self, name: str) -> Any:
        async def record(transport: object, client: WebsocketServerClient) -> None:
            self.log.append((name, client))
            self.changed.set()

        return record

    def names(self) -> list[str]:
        return [name for name, _ in self.log]

    async def wait_for(self, name: str, count: int = 1) -> None:
        while self.names().count(name) < count:
            self.changed.clear()
            await self.changed.wait()


def server(**params: Any) -> tuple[SingleClientWebsocketServerTransport, Events]:
    settings: dict[str, Any] = {
        "audio_in_enabled": True,
        "audio_out_enabled": True,
        "serializer": PipecatProtobuf(),
        "audio_out_end_silence_secs": 0,
        **params,
    }
    transport = SingleClientWebsocketServerTransport(
        SingleClientWebsocketServerParams(**settings), host="127.0.0.1", port=0
    )
    return transport, Events(transport)


def url(transport: SingleClientWebsocketServerTransport, path: str = "/ws") -> str:
    host, port = transport.address
    return f"ws://{host}:{port}{path}"


def wire(frame: CoreFrame) -> bytes:
    """``frame`` as a plain client sends it (protobuf)."""
    data = CORE_PROTO.serialize(frame)
    assert isinstance(data, bytes)
    return data


def audio_of(frames: list[object]) -> bytes:
    return b"".join(f.audio for f in frames if isinstance(f, CoreInputAudio))


def test_the_classes_are_pipecat_transports_with_pipecats_signatures() -> None:
    from pipecat.transports.base_input import BaseInputTransport
    from pipecat.transports.base_output import BaseOutputTransport
    from pipecat.transports.base_transport import BaseTransport
    from pipecat.transports.websocket import server as pipecat_server

    assert WebsocketServerTransport is SingleClientWebsocketServerTransport
    assert WebsocketServerParams is SingleClientWebsocketServerParams
    ours = SingleClientWebsocketServerParams()
    theirs = pipecat_server.SingleClientWebsocketServerParams()
    assert isinstance(ours, pipecat_server.SingleClientWebsocketServerParams)
    for name in type(theirs).model_fields:  # every Pipecat field, with Pipecat's default
        assert getattr(ours, name) == getattr(theirs, name), name
    assert ours.client_policy == "replace" and ours.write_timeout == 10.0
    transport = SingleClientWebsocketServerTransport(ours)
    assert isinstance(transport, BaseTransport)
    assert isinstance(transport.input(), BaseInputTransport)
    assert isinstance(transport.output(), BaseOutputTransport)
    assert transport.input() is transport.input()
    assert set(transport._event_handlers) == {
        "on_client_connected",
        "on_client_disconnected",
        "on_session_timeout",
        "on_websocket_ready",
    }
    # Pipecat's own params object is accepted as is (only the import changed).
    plain = SingleClientWebsocketServerTransport(
        pipecat_server.SingleClientWebsocketServerParams(add_wav_header=True), port=0
    )
    assert plain._params.add_wav_header and plain._params.client_policy == "replace"


async def test_with_pipecats_client_audio_and_messages_both_ways_byte_exact() -> None:
    transport, events = server()
    bot = Recorder()
    client_transport = PipecatClientTransport(
        "ws://unused",  # replaced below, once the server has a port
        PipecatClientParams(
            audio_in_enabled=True,
            audio_out_enabled=True,
            audio_out_end_silence_secs=0,
            serializer=PipecatProtobuf(),
        ),
    )
    user = Recorder()
    client_events: list[str] = []

    async def on_connected(t: object, ws: object) -> None:
        client_events.append("on_connected")

    async def on_disconnected(t: object, ws: object) -> None:
        client_events.append("on_disconnected")
        user._changed.set()

    client_transport.add_event_handler("on_connected", on_connected)
    client_transport.add_event_handler("on_disconnected", on_disconnected)

    with anyio.fail_after(30):
        async with running([transport.input(), bot, transport.output()]) as server_worker:
            await events.ready.wait()
            client_transport._session._uri = url(transport)
            async with running(
                [client_transport.input(), user, client_transport.output()]
            ) as client_worker:
                await events.wait_for("on_client_connected")
                await bot.wait_for(lambda: bool(bot.of(ClientConnectedFrame)))
                # Client -> server: Pipecat's client adds a WAV header to each chunk
                # (add_wav_header=True): the bot gets the samples only.
                spoken = pcm(5)
                await queue(
                    client_worker,
                    OutputAudioRawFrame(audio=spoken, sample_rate=RATE, num_channels=1),
                    OutputTransportMessageUrgentFrame(message={"from": "user"}),
                )
                await bot.wait_for(
                    lambda: (
                        len(b"".join(f.audio for f in bot.of(InputAudioRawFrame))) >= len(spoken)
                    )
                )
                heard = bot.of(InputAudioRawFrame)
                assert b"".join(f.audio for f in heard) == spoken
                assert all(f.audio[:4] != b"RIFF" for f in heard)
                await bot.wait_for(lambda: bool(bot.of(InputTransportMessageFrame)))
                [message] = bot.of(InputTransportMessageFrame)
                assert message.message == {"from": "user"}
                # Server -> client: paced chunks, byte-exact, then a message behind them.
                said = pcm(6, start=7)
                await queue(
                    server_worker,
                    TTSStartedFrame(),
                    TTSAudioRawFrame(audio=said, sample_rate=RATE, num_channels=1),
                    TTSStoppedFrame(),
                    OutputTransportMessageFrame(message={"from": "bot"}),
                )
                # (Pipecat's input queues audio on a task of its own, messages go straight on:
                # on this side of the client they may overtake each other.)
                await user.wait_for(
                    lambda: len(b"".join(f.audio for f in user.of(InputAudioRawFrame))) >= len(said)
                )
                await user.wait_for(lambda: bool(user.of(InputTransportMessageFrame)))
                received = b"".join(f.audio for f in user.of(InputAudioRawFrame))
                assert received == said
                assert [f.message for f in user.of(InputTransportMessageFrame)] == [{"from": "bot"}]
                await bot.wait_for(lambda: bool(bot.of(BotStoppedSpeakingFrame)))
                assert len(bot.of(BotStartedSpeakingFrame)) == 1
                # The bot ends: the client is closed with 1000 and the server stops.
                await queue(server_worker, EndFrame())
                await events.wait_for("on_client_disconnected")
                await user.wait_for(lambda: "on_disconnected" in client_events)
                await queue(client_worker, EndFrame())
    assert events.names() == ["on_websocket_ready", "on_client_connected", "on_client_disconnected"]
    assert client_events == ["on_connected", "on_disconnected"]
    connected, disconnected = events.log[1][1], events.log[2][1]
    assert connected is disconnected and connected is not None
    assert connected.remote_address[0] == "127.0.0.1"  # type: ignore[index]
    assert connected.request.path == "/ws"
    assert connected.handle.disconnect is not None and connected.handle.disconnect.code == 1000


class Peer:
    """A plain ``websockets`` client, collecting what it receives (decoded as protobuf unless
    ``raw``) until the server closes the connection."""

    def __init__(self, ws: websockets.ClientConnection, *, raw: bool = False) -> None:
        self.ws = ws
        self.raw = raw
        self.received: list[Any] = []
        self.closed = asyncio.Event()
        self._changed = asyncio.Event()

    async def run(self) -> None:
        try:
            async for message in self.ws:
                self.received.append(message if self.raw else CORE_PROTO.deserialize(message))
                self._changed.set()
        except websockets.ConnectionClosed:
            pass
        finally:
            self.closed.set()
            self._changed.set()

    @property
    def close_code(self) -> int | None:
        return self.ws.close_code

    def audio(self) -> list[bytes]:
        return [f.audio for f in self.received if isinstance(f, CoreInputAudio)]

    async def wait_for(self, ready: Any) -> None:
        while not ready():
            if self.closed.is_set():
                raise AssertionError(f"closed ({self.close_code}) before the condition held")
            self._changed.clear()
            await self._changed.wait()


@contextlib.asynccontextmanager
async def peer(
    transport: SingleClientWebsocketServerTransport, path: str = "/ws", *, raw: bool = False
) -> AsyncIterator[Peer]:
    async with websockets.connect(url(transport, path), max_size=None) as ws:
        client = Peer(ws, raw=raw)
        task = asyncio.create_task(client.run())
        try:
            yield client
        finally:
            await ws.close()
            await task


def tts(audio: bytes) -> list[Frame]:
    return [
        TTSStartedFrame(),
        TTSAudioRawFrame(audio=audio, sample_rate=RATE, num_channels=1),
        TTSStoppedFrame(),
    ]


def chunks(audio: bytes) -> list[bytes]:
    return [audio[i : i + CHUNK] for i in range(0, len(audio), CHUNK)]


@pytest.mark.parametrize("driver", ["anyio", "asyncio"])
async def test_a_new_client_replaces_the_old_one_each_event_exactly_once(driver: str) -> None:
    transport, events = server(driver=driver)
    bot = Recorder()
    with anyio.fail_after(30):
        async with running([transport.input(), bot, transport.output()]):
            await events.ready.wait()
            async with peer(transport, "/first") as first:
                await events.wait_for("on_client_connected")
                async with peer(transport, "/second") as second:
                    await first.closed.wait()
                    await events.wait_for("on_client_connected", 2)
                    assert first.close_code == 1000
                    await second.ws.send(wire(CoreOutputAudio(audio=pcm(1), sample_rate=RATE)))
                    await bot.wait_for(lambda: bool(bot.of(InputAudioRawFrame)))
                    assert not second.closed.is_set()
                await events.wait_for("on_client_disconnected", 2)
    paths = [(name, client.request.path) for name, client in events.log if client is not None]
    assert paths == [
        ("on_client_connected", "/first"),
        ("on_client_disconnected", "/first"),
        ("on_client_connected", "/second"),
        ("on_client_disconnected", "/second"),
    ]
    assert [f.audio for f in bot.of(InputAudioRawFrame)] == [pcm(1)]
    assert len(bot.of(ClientConnectedFrame)) == 2


async def test_reject_policy_refuses_a_second_client_with_1013() -> None:
    transport, events = server(client_policy="reject")
    with anyio.fail_after(30):
        async with running([transport.input(), Recorder(), transport.output()]):
            await events.ready.wait()
            async with peer(transport) as first:
                await events.wait_for("on_client_connected")
                async with peer(transport) as second:
                    await second.closed.wait()
                    assert second.close_code == 1013
                assert not first.closed.is_set()
            await events.wait_for("on_client_disconnected")
    assert events.names() == ["on_websocket_ready", "on_client_connected", "on_client_disconnected"]


async def test_the_session_timeout_fires_for_every_session() -> None:
    # Pipecat 1.14 arms it once, for the first client ever.
    transport, events = server(session_timeout=1)
    with anyio.fail_after(30):
        async with running([transport.input(), Recorder(), transport.output()]):
            await events.ready.wait()
            for count in (1, 2):
                async with peer(transport, f"/{count}"):
                    await events.wait_for("on_session_timeout", count)
                await events.wait_for("on_client_disconnected", count)
    timed_out = [c.request.path for n, c in events.log if n == "on_session_timeout" and c]
    assert timed_out == ["/1", "/2"]


async def test_end_frame_plays_out_the_audio_and_end_silence_then_closes_with_1000() -> None:
    transport, events = server(audio_out_end_silence_secs=1)
    said = pcm(10, start=3)
    with anyio.fail_after(30):
        async with running([transport.input(), Recorder(), transport.output()]) as worker:
            await events.ready.wait()
            address = url(transport)
            async with peer(transport) as client:
                await events.wait_for("on_client_connected")
                await queue(worker, *tts(said), EndFrame())
                await client.closed.wait()
    assert client.close_code == 1000
    received = client.audio()
    assert received[:10] == chunks(said)  # every chunk, in order, none lost at the close
    assert received[10:] == [bytes(CHUNK)] * 25  # 1 s of end silence, paced as chunks
    # The server stopped listening after the EndFrame (as Pipecat's since 1.6).
    with pytest.raises(ConnectionRefusedError):
        async with websockets.connect(address):
            pass


async def test_cancel_frame_closes_at_once_dropping_queued_audio() -> None:
    transport, events = server()
    said = pcm(250)  # 10 s
    with anyio.fail_after(30):
        async with running([transport.input(), Recorder(), transport.output()]) as worker:
            await events.ready.wait()
            async with peer(transport) as client:
                await events.wait_for("on_client_connected")
                await queue(worker, *tts(said))
                await client.wait_for(lambda: len(client.audio()) >= 2)
                await worker.cancel()
                await client.closed.wait()
    received = client.audio()
    assert received == chunks(said)[: len(received)]
    assert len(received) < 250


async def test_interruption_drops_queued_audio_and_sends_the_interruption_first() -> None:
    transport, events = server()
    bot = Recorder()
    old, new = pcm(250, start=1), pcm(3, start=20000)  # 10 s, then 120 ms
    with anyio.fail_after(30):
        async with running([transport.input(), bot, transport.output()]) as worker:
            await events.ready.wait()
            async with peer(transport) as client:
                await events.wait_for("on_client_connected")
                await queue(worker, *tts(old))
                await client.wait_for(lambda: len(client.audio()) >= 3)
                await queue(
                    worker,
                    InterruptionFrame(),
                    OutputTransportMessageFrame(message={"after": "interruption"}),
                    *tts(new),
                )
                await client.wait_for(lambda: client.audio()[-3:] == chunks(new))
                await bot.wait_for(lambda: bool(bot.of(BotStoppedSpeakingFrame)))
    kinds = [type(f) for f in client.received]
    cut = kinds.index(CoreInterruption)
    before, after = client.received[:cut], client.received[cut + 1 :]
    assert audio_of(before) == old[: len(audio_of(before))]  # old audio, in order, up to the cut
    assert len(audio_of(before)) < len(old)
    # After the interruption: only the message and the new utterance, none of the old audio.
    assert [type(f) for f in after[:1]] == [CoreInputMessage]
    assert audio_of(after) == new


class FlakySerializer(PipecatProtobuf):
    """Pipecat's protobuf serializer, failing on some messages as a buggy one would."""

    async def deserialize(self, data: str | bytes) -> Frame | None:
        if data == b"boom":
            raise ValueError("cannot decode boom")
        return await super().deserialize(data)

    async def serialize(self, frame: Frame) -> str | bytes | None:
        messages = (OutputTransportMessageFrame, OutputTransportMessageUrgentFrame)
        if isinstance(frame, messages) and frame.message == "boom":
            raise ValueError("cannot encode boom")
        return await super().serialize(frame)


async def test_a_raising_pipecat_serializer_loses_one_message_not_the_session() -> None:
    transport, events = server(serializer=FlakySerializer())
    bot = Recorder()
    with anyio.fail_after(30):
        async with running([transport.input(), bot, transport.output()]) as worker:
            await events.ready.wait()
            async with peer(transport) as client:
                await events.wait_for("on_client_connected")
                await client.ws.send(b"boom")
                await client.ws.send("not protobuf at all")
                await client.ws.send(wire(CoreOutputMessage(message={"still": "here"})))
                await bot.wait_for(lambda: bool(bot.of(InputTransportMessageFrame)))
                await queue(
                    worker,
                    OutputTransportMessageUrgentFrame(message="boom"),
                    OutputTransportMessageUrgentFrame(message="fine"),
                )
                await client.wait_for(lambda: bool(client.received))
                assert not client.closed.is_set()
    assert [f.message for f in bot.of(InputTransportMessageFrame)] == [{"still": "here"}]
    assert [f.message for f in client.received] == ["fine"]
    assert events.names().count("on_client_disconnected") == 1
    assert transport.input()._codec.decode_failures == 2
    assert transport.output()._codec.encode_failures == 1


async def test_twilio_media_streams_both_ways() -> None:
    twilio = TwilioFrameSerializer(
        "MZ0001", params=TwilioFrameSerializer.InputParams(auto_hang_up=False)
    )
    transport, events = server(serializer=twilio)
    bot = Recorder()
    caller = pcm(2)[: 8000 // 100 * 2 * 4 * 2]  # 80 ms of 8 kHz PCM16
    said = pcm(3, start=500)[: 8000 // 100 * 2 * 4 * 3]  # three 40 ms chunks at 8 kHz
    with anyio.fail_after(30):
        async with running([transport.input(), bot, transport.output()], sample_rate=8000) as w:
            await events.ready.wait()
            async with peer(transport, "/media", raw=True) as client:
                await events.wait_for("on_client_connected")
                payload = base64.b64encode(encode("PCMU", caller)).decode()
                await client.ws.send(
                    json.dumps(
                        {"event": "media", "streamSid": "MZ0001", "media": {"payload": payload}}
                    )
                )
                await bot.wait_for(lambda: bool(bot.of(InputAudioRawFrame)))
                await queue(
                    w,
                    TTSStartedFrame(),
                    TTSAudioRawFrame(audio=said, sample_rate=8000, num_channels=1),
                    TTSStoppedFrame(),
                )
                await client.wait_for(lambda: len(client.received) >= 3)
                await queue(w, InterruptionFrame())
                await client.wait_for(lambda: len(client.received) >= 4)
    [heard] = bot.of(InputAudioRawFrame)
    assert heard.audio == decode("PCMU", encode("PCMU", caller))
    events_out = [json.loads(m) for m in client.received]
    media = [e for e in events_out if e["event"] == "media"]
    assert [e["streamSid"] for e in media] == ["MZ0001"] * 3
    ulaw = b"".join(base64.b64decode(e["media"]["payload"]) for e in media)
    assert ulaw == encode("PCMU", said)
    assert events_out[-1] == {"event": "clear", "streamSid": "MZ0001"}


async def test_uninterruptible_audio_plays_out_through_an_interruption() -> None:
    transport, events = server()
    kept = pcm(10, start=40)
    frame = TTSAudioRawFrame(audio=kept, sample_rate=RATE, num_channels=1)
    frame.interruptible = False  # Pipecat's rule: an interruption does not drop it
    with anyio.fail_after(30):
        async with running([transport.input(), Recorder(), transport.output()]) as worker:
            await events.ready.wait()
            async with peer(transport) as client:
                await events.wait_for("on_client_connected")
                await queue(worker, TTSStartedFrame(), frame, TTSStoppedFrame())
                await client.wait_for(lambda: len(client.audio()) >= 2)
                await queue(worker, InterruptionFrame())
                await client.wait_for(lambda: len(client.audio()) >= 10)
                await client.wait_for(
                    lambda: any(isinstance(f, CoreInterruption) for f in client.received)
                )
    assert audio_of(client.received) == kept  # every chunk, none dropped
    assert any(isinstance(f, CoreInterruption) for f in client.received)  # the client was told


async def test_the_wav_header_is_added_per_chunk_when_asked() -> None:
    transport, events = server(add_wav_header=True)
    said = pcm(3, start=11)
    with anyio.fail_after(30):
        async with running([transport.input(), Recorder(), transport.output()]) as worker:
            await events.ready.wait()
            async with peer(transport) as client:
                await events.wait_for("on_client_connected")
                await queue(worker, *tts(said))
                await client.wait_for(lambda: len(client.audio()) >= 3)
    assert client.audio() == [wav_chunk(chunk, RATE) for chunk in chunks(said)]


async def test_wavewires_settings_reach_the_server_auth_hook_and_origins() -> None:
    def token_only(request: HandshakeRequest) -> Accept | Reject:
        ok = request.query.get("token") == ["s3cret"]
        return Accept() if ok else Reject(status_code=401)

    transport, events = server(handshake_hook=token_only, allowed_origins=["https://app.example"])
    with anyio.fail_after(30):
        async with running([transport.input(), Recorder(), transport.output()]):
            await events.ready.wait()
            good = url(transport, "/ws?token=s3cret")
            with pytest.raises(websockets.InvalidStatus) as refused:
                await websockets.connect(url(transport, "/ws?token=nope"), origin=ORIGIN)
            assert refused.value.response.status_code == 401
            with pytest.raises(websockets.InvalidStatus) as foreign:
                await websockets.connect(good, origin=websockets.Origin("https://evil.example"))
            assert foreign.value.response.status_code == 403
            async with websockets.connect(good, origin=ORIGIN):
                await events.wait_for("on_client_connected")
            await events.wait_for("on_client_disconnected")
    [(_, client)] = [entry for entry in events.log if entry[0] == "on_client_connected"]
    assert client is not None and client.request.headers["Origin"] == "https://app.example"


ORIGIN = websockets.Origin("https://app.example")


async def test_a_client_that_stops_reading_is_dropped_and_the_next_one_served() -> None:
    # Pipecat's send can block for as long as such a peer stays (#5216, #5789).
    transport, events = server(write_timeout=0.5)
    big = "x" * 500_000
    with anyio.fail_after(30):
        async with running([transport.input(), Recorder(), transport.output()]) as worker:
            await events.ready.wait()
            # max_queue=1: the client stops reading its socket after one buffered message.
            async with websockets.connect(
                url(transport), max_size=None, max_queue=1, close_timeout=0.5
            ):
                await events.wait_for("on_client_connected")
                for _ in range(48):  # 24 MB: more than loopback's autotuned buffers hold
                    await queue(worker, OutputTransportMessageUrgentFrame(message=big))
                await events.wait_for("on_client_disconnected")
            async with peer(transport) as second:
                await events.wait_for("on_client_connected", 2)
                await queue(worker, OutputTransportMessageUrgentFrame(message="hello"))
                await second.wait_for(lambda: bool(second.received))
    first = next(c for n, c in events.log if n == "on_client_disconnected")
    assert first is not None and first.handle.disconnect is not None
    assert first.handle.disconnect.cause is DisconnectCause.CONNECTION_LOST  # aborted
    assert second.received[-1].message == "hello"
