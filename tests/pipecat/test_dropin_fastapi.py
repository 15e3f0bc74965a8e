"""The FastAPI drop-in (``wavewire.pipecat.FastAPIWebsocketTransport``): a real Pipecat pipeline
inside a real FastAPI route, served by uvicorn on 127.0.0.1, with a real ``websockets`` client.

The route is written as Pipecat's telephony examples write it (create the transport from the
route's WebSocket, run the pipeline, cancel it when the client disconnects); only the import
line is wavewire's. Every wait is bounded; nothing asserts how long anything took.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import inspect
import json
from collections.abc import AsyncIterator, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

import anyio
import pytest
import websockets
from fastapi import FastAPI, WebSocket
from pipecat.frames.frames import (
    BotStoppedSpeakingFrame,
    ClientConnectedFrame,
    EndFrame,
    Frame,
    InputAudioRawFrame,
    InputTransportMessageFrame,
    InterruptionFrame,
    OutputTransportMessageFrame,
    OutputTransportMessageUrgentFrame,
    TTSAudioRawFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
)
from pipecat.pipeline.worker import PipelineWorker
from pipecat.serializers.protobuf import ProtobufFrameSerializer as PipecatProtobuf
from pipecat.serializers.twilio import TwilioFrameSerializer
from pipecat.transports.base_input import BaseInputTransport
from pipecat.transports.base_output import BaseOutputTransport
from pipecat.transports.base_transport import BaseTransport
from pipecat.transports.websocket import fastapi as pipecat_fastapi

from tests.asgi.stacks import _uvicorn
from wavewire.core.events import DisconnectCause
from wavewire.core.frames import InputAudioRawFrame as CoreInputAudio
from wavewire.core.frames import InterruptionFrame as CoreInterruption
from wavewire.core.frames import OutputAudioRawFrame as CoreOutputAudio
from wavewire.core.frames import OutputTransportMessageFrame as CoreOutputMessage
from wavewire.core.serializers._codecs import decode, encode
from wavewire.core.session.wav import wav_chunk
from wavewire.pipecat import FastAPIWebsocketParams, FastAPIWebsocketTransport

from .dropin_harness import CHUNK, RATE, Recorder, pcm, pipeline, queue
from .test_dropin_server import CORE_PROTO, FlakySerializer, Peer, audio_of, chunks, tts, wire

pytestmark = pytest.mark.anyio

PATH = "/ws"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # Pipecat runs on asyncio only


@dataclass
class Call:
    """One call the route served: its transport, the bot's recorder, the events it saw."""

    websocket: Any
    transport: FastAPIWebsocketTransport
    bot: Recorder
    worker: PipelineWorker
    events: list[tuple[str, Any]] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    #: Set when the route returned (the pipeline is over).
    over: asyncio.Event = field(default_factory=asyncio.Event)

    def names(self) -> list[str]:
        return [name for name, _ in self.events]

    async def wait_for(self, name: str) -> None:
        while name not in self.names():
            self.changed.clear()
            await self.changed.wait()


class Bot:
    """A FastAPI app with one WebSocket route running a Pipecat pipeline per call, as
    Pipecat's Twilio/Telnyx examples do."""

    def __init__(
        self,
        *,
        accept_first: bool = True,
        sample_rate: int = RATE,
        greeting: bytes = b"",
        **params: Any,
    ) -> None:
        self.accept_first = accept_first
        #: Audio queued before the pipeline runs (a pre-recorded greeting).
        self.greeting = greeting
        self.sample_rate = sample_rate
        self.params: dict[str, Any] = {
            "audio_in_enabled": True,
            "audio_out_enabled": True,
            "serializer": PipecatProtobuf(),
            "audio_out_end_silence_secs": 0,
            **params,
        }
        self.calls: list[Call] = []
        self._new_call = asyncio.Event()
        self.app = FastAPI()
        self.app.add_api_websocket_route(PATH, self._route)

    async def _route(self, websocket: WebSocket) -> None:
        if self.accept_first:
            await websocket.accept()  # telephony routes read the provider's start message first
        transport = FastAPIWebsocketTransport(websocket, FastAPIWebsocketParams(**self.params))
        bot = Recorder()
        processors = [transport.input(), bot, transport.output()]
        worker, runner = await pipeline(processors, sample_rate=self.sample_rate)
        call = Call(websocket, transport, bot, worker)
        for name in ("on_client_connected", "on_client_disconnected", "on_session_timeout"):
            transport.add_event_handler(name, self._recorder(call, name))

        async def hang_up(transport: FastAPIWebsocketTransport, websocket: WebSocket) -> None:
            await worker.cancel()  # what Pipecat's telephony examples do

        transport.add_event_handler("on_client_disconnected", hang_up)

        self.calls.append(call)
        self._new_call.set()
        if self.greeting:
            await queue(worker, *tts(self.greeting))
        try:
            await runner.run()
        finally:
            call.over.set()

    @staticmethod
    def _recorder(call: Call, name: str) -> Callable[..., Any]:
        async def record(transport: object, websocket: object) -> None:
            call.events.append((name, websocket))
            call.changed.set()

        return record

    async def call(self, index: int = 0) -> Call:
        while len(self.calls) <= index:
            self._new_call.clear()
            await self._new_call.wait()
        return self.calls[index]


@contextlib.asynccontextmanager
async def serving(bot: Bot, implementation: str = "wsproto") -> AsyncIterator[str]:
    """``bot``'s app under uvicorn (its ``wsproto`` or ``websockets-sansio`` implementation)."""
    async with _uvicorn(bot.app, implementation) as port:
        yield f"ws://127.0.0.1:{port}{PATH}"


@contextlib.asynccontextmanager
async def peer(url: str, *, raw: bool = False, **kwargs: Any) -> AsyncIterator[Peer]:
    async with websockets.connect(url, max_size=None, **kwargs) as ws:
        client = Peer(ws, raw=raw)
        task = asyncio.create_task(client.run())
        try:
            yield client
        finally:
            await ws.close()
            await task


def test_the_drop_in_has_pipecats_constructor_params_and_events() -> None:
    ours = inspect.signature(FastAPIWebsocketTransport.__init__)
    pipecat_signature = inspect.signature(pipecat_fastapi.FastAPIWebsocketTransport.__init__)
    assert list(ours.parameters) == list(pipecat_signature.parameters)
    assert [p.default for p in ours.parameters.values()] == [
        p.default for p in pipecat_signature.parameters.values()
    ]
    assert issubclass(FastAPIWebsocketParams, pipecat_fastapi.FastAPIWebsocketParams)
    mine, pipecats = FastAPIWebsocketParams(), pipecat_fastapi.FastAPIWebsocketParams()
    for name in pipecat_fastapi.FastAPIWebsocketParams.model_fields:
        assert getattr(mine, name) == getattr(pipecats, name), name
    assert mine.ws_close_timeout == 0.5 and mine.fixed_audio_packet_size is None
    transport = FastAPIWebsocketTransport(object(), FastAPIWebsocketParams())
    assert isinstance(transport, BaseTransport)
    assert isinstance(transport.input(), BaseInputTransport)
    assert isinstance(transport.output(), BaseOutputTransport)
    assert set(transport._event_handlers) >= {
        "on_client_connected",
        "on_client_disconnected",
        "on_session_timeout",
    }
    # Pipecat's params object, only the transport's import changed, is accepted as it is.
    theirs = pipecat_fastapi.FastAPIWebsocketParams(ws_close_timeout=2.0, session_timeout=7)
    adopted = FastAPIWebsocketTransport(object(), theirs)._params
    assert adopted.ws_close_timeout == 2.0 and adopted.session_timeout == 7


def test_a_disallowed_origin_raises_value_error_as_pipecat() -> None:
    class Socket:
        headers = {"origin": "https://evil.example"}

    with pytest.raises(ValueError, match="origin"):
        FastAPIWebsocketTransport(
            Socket(), FastAPIWebsocketParams(allowed_origins=["https://app.example"])
        )


@pytest.mark.parametrize("implementation", ["wsproto", "websockets-sansio"])
@pytest.mark.parametrize("accept_first", [True, False], ids=["accepted", "not-accepted"])
async def test_audio_and_messages_both_ways_events_once_end_frame_plays_out(
    accept_first: bool, implementation: str
) -> None:
    bot = Bot(accept_first=accept_first)
    spoken, said = pcm(5), pcm(6, start=7)
    with anyio.fail_after(30):
        async with serving(bot, implementation) as url, peer(url) as client:
            call = await bot.call()
            await call.wait_for("on_client_connected")
            await call.bot.wait_for(lambda: bool(call.bot.of(ClientConnectedFrame)))
            # Client -> bot: audio byte-exact, a message.
            for chunk in chunks(spoken):
                audio = CoreOutputAudio(audio=chunk, sample_rate=RATE, num_channels=1)
                await client.ws.send(wire(audio))
            await client.ws.send(wire(CoreOutputMessage(message={"from": "caller"})))
            heard = lambda: b"".join(f.audio for f in call.bot.of(InputAudioRawFrame))  # noqa: E731
            await call.bot.wait_for(lambda: len(heard()) >= len(spoken))
            assert heard() == spoken
            await call.bot.wait_for(lambda: bool(call.bot.of(InputTransportMessageFrame)))
            assert [f.message for f in call.bot.of(InputTransportMessageFrame)] == [
                {"from": "caller"}
            ]
            # Bot -> client: paced chunks byte-exact, a message behind them, then EndFrame:
            # everything played out, then 1000.
            await queue(
                call.worker,
                *tts(said),
                OutputTransportMessageFrame(message={"from": "bot"}),
                EndFrame(),
            )
            await client.closed.wait()
            await call.over.wait()
    assert client.close_code == 1000
    assert client.audio() == chunks(said)
    assert [f.message for f in client.received if isinstance(f, CoreInputAudio) is False] == [
        {"from": "bot"}
    ]
    # Exactly one connect and one disconnect, with the route's WebSocket as the argument.
    assert call.names() == ["on_client_connected", "on_client_disconnected"]
    assert all(websocket is call.websocket for _, websocket in call.events)
    handle = call.transport.client
    assert handle is not None and handle.disconnect is not None
    assert handle.disconnect.code == 1000


async def test_a_client_hanging_up_fires_disconnected_once_and_the_route_returns() -> None:
    bot = Bot()
    with anyio.fail_after(30):
        async with serving(bot) as url:
            async with peer(url):
                call = await bot.call()
                await call.wait_for("on_client_connected")
            await call.over.wait()  # the handler cancelled the pipeline, the route returned
    assert call.names() == ["on_client_connected", "on_client_disconnected"]
    handle = call.transport.client
    assert handle is not None and handle.disconnect is not None
    assert handle.disconnect.cause is DisconnectCause.CLOSED_BY_PEER


async def test_twilio_media_streams_both_ways_with_pipecats_serializer() -> None:
    twilio = TwilioFrameSerializer(
        "MZ0001", params=TwilioFrameSerializer.InputParams(auto_hang_up=False)
    )
    bot = Bot(serializer=twilio, sample_rate=8000)
    caller = pcm(2)[: 8000 // 100 * 2 * 4 * 2]  # 80 ms of 8 kHz PCM16
    said = pcm(3, start=500)[: 8000 // 100 * 2 * 4 * 3]  # three 40 ms chunks at 8 kHz
    with anyio.fail_after(30):
        async with serving(bot) as url, peer(url, raw=True) as client:
            call = await bot.call()
            await call.wait_for("on_client_connected")
            payload = base64.b64encode(encode("PCMU", caller)).decode()
            media = {"event": "media", "streamSid": "MZ0001", "media": {"payload": payload}}
            await client.ws.send(json.dumps(media))
            await call.bot.wait_for(lambda: bool(call.bot.of(InputAudioRawFrame)))
            await queue(call.worker, *tts_at(said, 8000))
            await client.wait_for(lambda: len(client.received) >= 3)
            await queue(call.worker, InterruptionFrame())
            await client.wait_for(lambda: len(client.received) >= 4)
    [heard] = call.bot.of(InputAudioRawFrame)
    assert heard.audio == decode("PCMU", encode("PCMU", caller))
    out = [json.loads(m) for m in client.received]
    sent = [e for e in out if e["event"] == "media"]
    assert [e["streamSid"] for e in sent] == ["MZ0001"] * 3
    assert b"".join(base64.b64decode(e["media"]["payload"]) for e in sent) == encode("PCMU", said)
    assert out[-1] == {"event": "clear", "streamSid": "MZ0001"}


def tts_at(audio: bytes, rate: int) -> list[Frame]:
    return [
        TTSStartedFrame(),
        TTSAudioRawFrame(audio=audio, sample_rate=rate, num_channels=1),
        TTSStoppedFrame(),
    ]


async def test_the_session_timeout_fires_with_the_websocket() -> None:
    bot = Bot(session_timeout=1)
    with anyio.fail_after(30):
        async with serving(bot) as url:
            async with peer(url) as client:
                call = await bot.call()
                await call.wait_for("on_session_timeout")
                assert not client.closed.is_set()  # the event only: closing is the handler's
            await call.wait_for("on_client_disconnected")
    assert call.names() == ["on_client_connected", "on_session_timeout", "on_client_disconnected"]
    assert call.events[1][1] is call.websocket


async def test_cancel_frame_closes_at_once_dropping_queued_audio() -> None:
    bot = Bot()
    said = pcm(250)  # 10 s
    with anyio.fail_after(30):
        async with serving(bot) as url, peer(url) as client:
            call = await bot.call()
            await call.wait_for("on_client_connected")
            await queue(call.worker, *tts(said))
            await client.wait_for(lambda: len(client.audio()) >= 2)
            await call.worker.cancel()
            await client.closed.wait()
            await call.over.wait()
    received = client.audio()
    assert received == chunks(said)[: len(received)]
    assert len(received) < 250
    assert call.names().count("on_client_disconnected") == 1


async def test_interruption_sends_the_interruption_first_and_drops_queued_audio() -> None:
    bot = Bot()
    old, new = pcm(250, start=1), pcm(3, start=20000)
    with anyio.fail_after(30):
        async with serving(bot) as url, peer(url) as client:
            call = await bot.call()
            await call.wait_for("on_client_connected")
            await queue(call.worker, *tts(old))
            await client.wait_for(lambda: len(client.audio()) >= 3)
            await queue(
                call.worker,
                InterruptionFrame(),
                OutputTransportMessageFrame(message={"after": "interruption"}),
                *tts(new),
            )
            await client.wait_for(lambda: client.audio()[-3:] == chunks(new))
            await call.bot.wait_for(lambda: bool(call.bot.of(BotStoppedSpeakingFrame)))
    kinds = [type(f) for f in client.received]
    cut = kinds.index(CoreInterruption)
    before, after = client.received[:cut], client.received[cut + 1 :]
    assert audio_of(before) == old[: len(audio_of(before))]
    assert len(audio_of(before)) < len(old)
    assert [f.message for f in after[:1]] == [{"after": "interruption"}]
    assert audio_of(after) == new


async def test_a_client_that_stops_reading_is_dropped_after_write_timeout() -> None:
    # Pipecat's FastAPI send waits for as long as such a peer stays (#5216, #5789).
    bot = Bot(write_timeout=0.5)
    big = "x" * 500_000
    with anyio.fail_after(30):
        # max_queue=1: the client stops reading its socket after one buffered message.
        async with (
            serving(bot) as url,
            websockets.connect(url, max_size=None, max_queue=1, close_timeout=0.5),
        ):
            call = await bot.call()
            await call.wait_for("on_client_connected")
            for _ in range(16):  # 8 MB: more than the socket buffers hold
                await queue(call.worker, OutputTransportMessageUrgentFrame(message=big))
            await call.wait_for("on_client_disconnected")
            await call.over.wait()
    assert call.names() == ["on_client_connected", "on_client_disconnected"]
    handle = call.transport.client
    assert handle is not None and handle.disconnect is not None
    assert handle.disconnect.cause is DisconnectCause.CONNECTION_LOST


class RawPcm(PipecatProtobuf):
    """A raw-PCM media endpoint's serializer: audio out as bare bytes, nothing in."""

    async def serialize(self, frame: Any) -> str | bytes | None:
        from pipecat.frames.frames import OutputAudioRawFrame

        return bytes(frame.audio) if isinstance(frame, OutputAudioRawFrame) else None


@pytest.mark.parametrize("packet", [CHUNK // 2, CHUNK * 3 // 2], ids=["half", "one-and-a-half"])
async def test_fixed_audio_packet_size_recuts_audio_into_whole_packets(packet: int) -> None:
    bot = Bot(serializer=RawPcm(), fixed_audio_packet_size=packet)
    said = pcm(6, start=3)  # 6 chunks: 12 half packets, or 4 packets of 1.5 chunks
    with anyio.fail_after(30):
        async with serving(bot) as url, peer(url, raw=True) as client:
            call = await bot.call()
            await call.wait_for("on_client_connected")
            await queue(call.worker, *tts(said))
            await client.wait_for(lambda: sum(map(len, client.received)) >= len(said))
    assert all(len(message) == packet for message in client.received)
    assert b"".join(client.received) == said


def test_the_drop_in_is_exported_with_pipecats_names() -> None:
    import wavewire.pipecat as dropin

    assert dropin.FastAPIWebsocketTransport is FastAPIWebsocketTransport
    assert "FastAPIWebsocketParams" in dropin.__all__


class StuckCloseServer:
    """The ASGI side of one WebSocket whose close never completes, as a server waiting for a
    peer that already hung up would (Pipecat's reason for ``ws_close_timeout``): everything
    else is accepted; the ``websocket.close`` send waits forever."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.connected = False
        self.closing = asyncio.Event()

    async def receive(self) -> dict[str, Any]:
        if not self.connected:
            self.connected = True
            return {"type": "websocket.connect"}
        await asyncio.Event().wait()  # the client says nothing more
        raise AssertionError("unreachable")

    async def send(self, message: MutableMapping[str, Any]) -> None:
        self.sent.append(dict(message))
        if message["type"] == "websocket.close":
            self.closing.set()
            await asyncio.Event().wait()


async def test_ws_close_timeout_bounds_a_close_that_never_completes() -> None:
    from starlette.websockets import WebSocket as StarletteWebSocket

    asgi = StuckCloseServer()
    scope = {"type": "websocket", "path": PATH, "headers": [], "client": ("127.0.0.1", 1)}
    websocket = StarletteWebSocket(scope, asgi.receive, asgi.send)
    await websocket.accept()
    transport = FastAPIWebsocketTransport(
        websocket,
        FastAPIWebsocketParams(
            audio_out_enabled=True,
            serializer=PipecatProtobuf(),
            audio_out_end_silence_secs=0,
            ws_close_timeout=0.2,
            write_timeout=None,  # only ws_close_timeout can end the wait
        ),
    )
    worker, runner = await pipeline([transport.input(), Recorder(), transport.output()])
    said = pcm(3, start=9)
    with anyio.fail_after(20):
        run = asyncio.create_task(runner.run())
        await queue(worker, *tts(said), EndFrame())
        await run  # the pipeline ended although the close never completed
    assert asgi.closing.is_set()
    audio: list[object] = [CORE_PROTO.deserialize(m["bytes"]) for m in asgi.sent if m.get("bytes")]
    assert audio_of(audio) == said  # played out before the close
    assert asgi.sent[-1] == {"type": "websocket.close", "code": 1000, "reason": ""}


async def test_a_raising_serializer_loses_one_message_not_the_session() -> None:
    # Pipecat's FastAPI input ends its receive loop (and the session) on the first one.
    bot = Bot(serializer=FlakySerializer())
    with anyio.fail_after(30):
        async with serving(bot) as url, peer(url) as client:
            call = await bot.call()
            await call.wait_for("on_client_connected")
            await client.ws.send(b"boom")
            await client.ws.send(wire(CoreOutputMessage(message={"still": "here"})))
            await call.bot.wait_for(lambda: bool(call.bot.of(InputTransportMessageFrame)))
            await queue(
                call.worker,
                OutputTransportMessageUrgentFrame(message="boom"),
                OutputTransportMessageUrgentFrame(message="fine"),
            )
            await client.wait_for(lambda: bool(client.received))
            assert not client.closed.is_set()
    assert [f.message for f in call.bot.of(InputTransportMessageFrame)] == [{"still": "here"}]
    assert [f.message for f in client.received] == ["fine"]
    assert call.transport.input()._codec.decode_failures == 1
    assert call.transport.output()._codec.encode_failures == 1


async def test_audio_queued_before_the_pipeline_runs_is_not_lost() -> None:
    # Pipecat's transport is connected from its start(): a greeting queued with the pipeline
    # reaches the caller whole. So here: the input's start() waits until the session began.
    greeting = pcm(4, start=300)
    bot = Bot(greeting=greeting)
    with anyio.fail_after(30):
        async with serving(bot) as url, peer(url) as client:
            await client.wait_for(lambda: len(client.audio()) >= 4)
    assert client.audio() == chunks(greeting)


async def test_the_wav_header_is_added_per_chunk_when_asked() -> None:
    bot = Bot(add_wav_header=True)
    said = pcm(3, start=11)
    with anyio.fail_after(30):
        async with serving(bot) as url, peer(url) as client:
            call = await bot.call()
            await call.wait_for("on_client_connected")
            await queue(call.worker, *tts(said))
            await client.wait_for(lambda: len(client.audio()) >= 3)
    assert client.audio() == [wav_chunk(chunk, RATE) for chunk in chunks(said)]
