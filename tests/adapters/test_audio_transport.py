"""Paced output audio over real sockets on 127.0.0.1: the server transport on every driver and
backend (``MATRIX``), the client transport on both backends.

No assertion reads the wall clock. On trio the tests run on trio's ``MockClock`` (virtual time
that jumps to the next deadline once every task has waited ``AUTOJUMP_AFTER`` real seconds, by
which time loopback data is readable), so arrival times there are exact and asserted exactly:
the anyio driver sleeps until the core's deadlines and nothing else. On asyncio only what
arrives, and in which order, is asserted; bench/pacing.py measures real-time precision on both
drivers.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.abc
import pytest

from wavewire import (
    CancelFrame,
    ConnectionClosed,
    EndFrame,
    Frame,
    InputAudioRawFrame,
    InputTransportMessageFrame,
    InterruptionFrame,
    OutputAudioRawFrame,
    OutputTransportMessageFrame,
    OutputTransportMessageUrgentFrame,
    TextFrame,
    WebsocketClientTransport,
    WebsocketServerTransport,
)
from wavewire.cli import build_parser, echo
from wavewire.cli import make_params as serve_params
from wavewire.core.events import Disconnected, FrameReceived
from wavewire.transports.params import WebsocketServerParams
from wavewire.transports.server import DriverName

from .client_support import client_params
from .support import LIMIT, Recorder, backend_on_synthetic_clock, make_params, synthetic_clock
from .wsclient import WsClient, connect

pytestmark = pytest.mark.anyio

MATRIX: list[tuple[DriverName, str]] = [
    ("anyio", "asyncio"),
    ("anyio", "trio"),
    ("asyncio", "asyncio"),
]


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


RATE = 16000
#: One 40 ms output chunk at 16 kHz mono (the default audio_out_10ms_chunks=4).
CHUNK_BYTES = 1280
CHUNK_SECONDS = 0.04


def pcm(chunks: int, first: int = 0) -> bytes:
    """``chunks`` whole chunks; chunk ``k`` holds the 16-bit value ``first + k`` throughout, so
    that order and identity can be read back from any chunk."""
    return b"".join(struct.pack("<h", first + k) * (CHUNK_BYTES // 2) for k in range(chunks))


def label(audio: bytes) -> int:
    value: int = struct.unpack_from("<h", audio)[0]
    return value


def audio_frame(data: bytes) -> OutputAudioRawFrame:
    return OutputAudioRawFrame(audio=data, sample_rate=RATE)


class Arrivals:
    """Frames as they arrive, each with its arrival time (``anyio.current_time()``)."""

    def __init__(self) -> None:
        self.log: list[tuple[float, Frame]] = []
        #: How the test client's connection ended, once it has.
        self.ended: Disconnected | None = None
        self._changed = anyio.Event()

    def add(self, frame: Frame) -> None:
        self.log.append((anyio.current_time(), frame))
        self.notify()

    def notify(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    async def wait(self, condition: Callable[[], bool]) -> None:
        while not condition():
            await self._changed.wait()

    def audio(self) -> list[tuple[float, bytes]]:
        return [(t, f.audio) for t, f in self.log if isinstance(f, InputAudioRawFrame)]

    def count_audio(self) -> int:
        return len(self.audio())

    def index(self, kind: type[Frame]) -> int:
        return next(i for i, (_, f) in enumerate(self.log) if isinstance(f, kind))


async def collect_ws(client: WsClient, arrivals: Arrivals) -> None:
    """The one reader of ``client``'s events (tests must not call ``client.next``)."""
    seen = 0
    while True:
        while seen < len(client.events):
            event = client.events[seen]
            seen += 1
            if isinstance(event, FrameReceived):
                arrivals.add(event.frame)
            elif isinstance(event, Disconnected):
                arrivals.ended = event
                arrivals.notify()
        client._changed = anyio.Event()
        await client._changed.wait()


@asynccontextmanager
async def paced_server(
    params: WebsocketServerParams, driver: DriverName
) -> AsyncIterator[tuple[WebsocketServerTransport, Recorder, WsClient, Arrivals]]:
    """A server transport (no echo: the test drives ``output()``) and one connected test
    client whose received frames are timestamped."""
    server = WebsocketServerTransport(params, host="127.0.0.1", port=0, driver=driver)
    recorder = Recorder(server)
    arrivals = Arrivals()
    async with server, connect(server.port) as client, anyio.create_task_group() as tg:
        tg.start_soon(collect_ws, client, arrivals)
        await recorder.wait("on_client_connected")
        yield server, recorder, client, arrivals
        tg.cancel_scope.cancel()


def audio_params(**overrides: Any) -> WebsocketServerParams:
    settings: dict[str, Any] = {"audio_out_end_silence_secs": 0}
    settings.update(overrides)
    return make_params(**settings)


def on_schedule(times: list[float], start: float) -> list[float]:
    """Each time's distance from ``start + k`` chunk durations (all 0 when exactly paced)."""
    return [round(t - (start + k * CHUNK_SECONDS), 6) for k, t in enumerate(times)]


# --- pacing ----------------------------------------------------------------------------------


async def test_wavewire_serve_echo_is_paced(driver: DriverName) -> None:
    """``wavewire serve``'s parameters and echo: 1 s of audio sent as one message comes back as
    25 chunks of 40 ms, the first at once, then one every 40 ms (not in a burst)."""
    params = serve_params(build_parser().parse_args(["serve"]))
    server = WebsocketServerTransport(params, host="127.0.0.1", port=0, driver=driver)
    arrivals = Arrivals()
    audio = pcm(25)
    with anyio.fail_after(LIMIT):
        async with server, connect(server.port) as client, anyio.create_task_group() as tg:
            tg.start_soon(echo, server.input(), server.output())
            tg.start_soon(collect_ws, client, arrivals)
            await client.send(audio_frame(audio))  # no pacing here: the core client has none
            sent = anyio.current_time()
            await arrivals.wait(lambda: arrivals.count_audio() == 25)
            tg.cancel_scope.cancel()
    chunks = arrivals.audio()
    assert [len(data) for _, data in chunks] == [CHUNK_BYTES] * 25
    assert b"".join(data for _, data in chunks) == audio  # in order, nothing lost
    if synthetic_clock():
        assert on_schedule([t for t, _ in chunks], sent) == [0.0] * 25


async def test_client_transport_paces_its_output() -> None:
    """The client's core paces too: 0.4 s sent as one frame reaches the server as 10 chunks,
    one every 40 ms (exactly, on the synthetic clock)."""
    server = WebsocketServerTransport(make_params(), host="127.0.0.1", port=0)
    arrivals = Arrivals()

    async def collect() -> None:
        async for frame in server.input():
            arrivals.add(frame)

    with anyio.fail_after(LIMIT):
        async with server, anyio.create_task_group() as tg:
            tg.start_soon(collect)
            uri = f"ws://127.0.0.1:{server.port}/"
            async with WebsocketClientTransport(uri, client_params()) as client:
                sent = anyio.current_time()
                await client.output().send(audio_frame(pcm(10)))
                await arrivals.wait(lambda: arrivals.count_audio() == 10)
            tg.cancel_scope.cancel()
    chunks = arrivals.audio()
    assert [label(data) for _, data in chunks] == list(range(10))
    if synthetic_clock():
        assert on_schedule([t for t, _ in chunks], sent) == [0.0] * 10


# --- interruption ----------------------------------------------------------------------------


async def test_interruption_drops_queued_audio_and_nothing_old_follows(driver: DriverName) -> None:
    interrupted: list[float] = []
    with anyio.fail_after(LIMIT):
        async with paced_server(audio_params(), driver) as (server, recorder, _, arrivals):
            server.add_event_handler(
                "on_audio_interrupted", lambda t, c, ms: interrupted.append(ms)
            )
            output = server.output()
            await output.send(audio_frame(pcm(25)))  # 1 s, labels 0..24
            await arrivals.wait(lambda: arrivals.count_audio() >= 5)
            start = anyio.current_time()
            await output.send(InterruptionFrame())
            # New audio (labels 100..101), then a marker: what the client sees after the
            # interruption is exactly these, whatever the timing.
            await output.send(audio_frame(pcm(2, first=100)))
            await output.send(OutputTransportMessageFrame(message="marker"))
            await arrivals.wait(
                lambda: any(isinstance(f, InterruptionFrame) for _, f in arrivals.log)
            )
            latency = arrivals.log[arrivals.index(InterruptionFrame)][0] - start
            await arrivals.wait(
                lambda: any(isinstance(f, InputTransportMessageFrame) for _, f in arrivals.log)
            )
            await recorder.wait("on_audio_interrupted")
            handle = recorder.handles[0]
    cut = arrivals.index(InterruptionFrame)
    before = [label(f.audio) for _, f in arrivals.log[:cut] if isinstance(f, InputAudioRawFrame)]
    after = [label(f.audio) for _, f in arrivals.log[cut:] if isinstance(f, InputAudioRawFrame)]
    assert before == list(range(len(before))) and 5 <= len(before) < 25
    assert after == [100, 101]  # no chunk of the interrupted stream after the interruption
    assert isinstance(arrivals.log[-1][1], InputTransportMessageFrame)
    if synthetic_clock():
        assert latency == 0  # sent at once, ahead of everything
    # What was dropped: the chunks never sent, within a chunk or two of timing slack.
    [dropped] = interrupted
    assert handle.audio_interrupted_ms == [dropped]
    expected_ms = (25 - len(before)) * CHUNK_SECONDS * 1000
    assert expected_ms - 2 * 40 <= dropped <= expected_ms + 40
    if synthetic_clock():
        assert dropped == pytest.approx(expected_ms)


# --- end and cancel --------------------------------------------------------------------------


async def test_end_frame_drains_then_silence_then_close_1000(driver: DriverName) -> None:
    params = audio_params(audio_out_end_silence_secs=0.2)
    with anyio.fail_after(LIMIT):
        async with paced_server(params, driver) as (server, recorder, _client, arrivals):
            output = server.output()
            start = anyio.current_time()
            await output.send(audio_frame(pcm(10, first=1)))  # 0.4 s, labels 1..10
            await output.send(EndFrame())  # returns once the client is gone
            took = anyio.current_time() - start
            await arrivals.wait(lambda: arrivals.ended is not None)
            assert recorder.count("on_client_disconnected") == 1
    assert arrivals.ended is not None and arrivals.ended.code == 1000
    labels = [label(data) for _, data in arrivals.audio()]
    assert labels == [*range(1, 11), *[0] * 5]  # the audio, then 0.2 s of silence, paced
    if synthetic_clock():
        # 15 chunks paced from the first send, and send(EndFrame) returns at the close: once
        # the last chunk is due (0.56 s) plus the close handshake (no time on loopback).
        assert on_schedule([t for t, _ in arrivals.audio()], start) == [0.0] * 15
        assert took == pytest.approx(0.56, abs=1e-6)


async def test_cancel_frame_closes_at_once(driver: DriverName) -> None:
    with anyio.fail_after(LIMIT):
        async with paced_server(audio_params(), driver) as (server, recorder, _client, arrivals):
            output = server.output()
            await output.send(audio_frame(pcm(25)))
            start = anyio.current_time()
            await output.send(CancelFrame())
            took = anyio.current_time() - start
            await arrivals.wait(lambda: arrivals.ended is not None)
            with pytest.raises(ConnectionClosed):
                await recorder.handles[0].output().send(TextFrame(text="late"))
    assert arrivals.ended is not None and arrivals.ended.code == 1000
    if synthetic_clock():
        assert took == 0  # at once: nothing waits for the queued audio
    assert arrivals.count_audio() <= 3  # the first chunk, not the queued second


# --- messages and audio ----------------------------------------------------------------------


async def test_urgent_message_jumps_the_audio_ordered_one_waits(driver: DriverName) -> None:
    with anyio.fail_after(LIMIT):
        async with paced_server(audio_params(), driver) as (server, _, _, arrivals):
            output = server.output()
            await output.send(audio_frame(pcm(10)))
            await output.send(OutputTransportMessageFrame(message="ordered"))
            await output.send(OutputTransportMessageUrgentFrame(message="urgent"))
            await arrivals.wait(lambda: len(arrivals.log) == 12)
    kinds = [
        f.message if isinstance(f, InputTransportMessageFrame) else label(f.audio)
        for _, f in arrivals.log
        if isinstance(f, InputTransportMessageFrame | InputAudioRawFrame)
    ]
    assert kinds.index("urgent") <= 2  # ahead of the queued audio
    assert kinds[-1] == "ordered"  # behind all the audio sent before it
    assert [k for k in kinds if isinstance(k, int)] == list(range(10))


async def test_sending_audio_with_audio_out_disabled_is_a_value_error(driver: DriverName) -> None:
    params = make_params(audio_out_enabled=False)
    with anyio.fail_after(LIMIT):
        async with paced_server(params, driver) as (server, recorder, _, arrivals):
            with pytest.raises(ValueError, match="audio_out_enabled"):
                await server.output().send(audio_frame(pcm(1)))
            with pytest.raises(ValueError, match="audio_out_enabled"):
                await recorder.handles[0].output().send(audio_frame(pcm(1)))
            # Without audio output, other frames go out at once, as before.
            await server.output().send(TextFrame(text="still fine"))
            await arrivals.wait(lambda: len(arrivals.log) == 1)
    assert isinstance(arrivals.log[0][1], TextFrame)


async def test_client_sending_audio_with_audio_out_disabled_is_a_value_error() -> None:
    server = WebsocketServerTransport(make_params(), host="127.0.0.1", port=0)
    params = client_params(audio_out_enabled=False)
    with anyio.fail_after(LIMIT):
        async with server:
            uri = f"ws://127.0.0.1:{server.port}/"
            async with WebsocketClientTransport(uri, params) as client:
                with pytest.raises(ValueError, match="audio_out_enabled"):
                    await client.output().send(audio_frame(pcm(1)))


# --- input -----------------------------------------------------------------------------------


async def test_input_audio_with_a_partial_sample_is_dropped_counted_and_logged_once(
    driver: DriverName, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "wavewire.server")
    with anyio.fail_after(LIMIT):
        async with paced_server(make_params(), driver) as (server, _, client, _):
            for _ in range(3):
                await client.send(OutputAudioRawFrame(audio=b"\x01" * 641, sample_rate=RATE))
            await client.send(OutputAudioRawFrame(audio=b"\x02" * 640, sample_rate=RATE))
            await client.send(TextFrame(text="after"))
            frames = server.input()
            good = await frames.receive()
            after = await frames.receive()
            assert server.client is not None
            peer = f"client {server.client.id}"
    assert isinstance(good, InputAudioRawFrame)
    assert (good.audio, good.sample_rate, good.num_channels) == (b"\x02" * 640, RATE, 1)
    assert isinstance(after, TextFrame) and after.text == "after"
    assert server.audio_in_dropped == 3
    drops = [r for r in caplog.records if "input audio dropped" in r.getMessage()]
    assert len(drops) == 1  # the first drop only, not one per frame (LogLimiter)
    assert drops[0].getMessage().startswith(f"{peer}: input audio dropped")


# --- backpressure ----------------------------------------------------------------------------


async def test_send_waits_while_the_audio_queue_is_full(driver: DriverName) -> None:
    """A producer far ahead of real time (60 s of audio in 40 ms frames, as fast as it can) is
    held to ``audio_out_max_queued_secs`` ahead: memory stays bounded, order is kept."""
    params = audio_params(audio_out_max_queued_secs=0.2)
    accepted = [0]
    total = 1500  # 60 s

    async def produce(output: Any) -> None:
        for k in range(total):
            await output.send(audio_frame(pcm(1, first=k)))
            accepted[0] += 1

    with anyio.fail_after(LIMIT):
        async with (
            paced_server(params, driver) as (server, _, _, arrivals),
            anyio.create_task_group() as tg,
        ):
            tg.start_soon(produce, server.output())
            start = anyio.current_time()
            ahead: list[int] = []
            while (received := arrivals.count_audio()) < 12:  # about 0.5 s of audio
                await arrivals.wait(lambda: arrivals.count_audio() > received)
                ahead.append(accepted[0] - arrivals.count_audio())
            elapsed = anyio.current_time() - start
            tg.cancel_scope.cancel()
    # Queued at most max_queued (5 chunks) plus the write that went past it, plus a chunk in
    # flight: never the 60 s the producer had.
    assert max(ahead) <= 5 + 1 + 2
    if synthetic_clock():  # the producer is held to real time plus the queue
        assert accepted[0] * CHUNK_SECONDS <= elapsed + 0.2 + CHUNK_SECONDS
    labels = [label(data) for _, data in arrivals.audio()]
    assert labels == list(range(len(labels)))
