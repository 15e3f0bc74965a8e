"""The drop-in's output contract on a synthetic clock: Pipecat's ``write_audio_frame`` returns when
the chunk before it is due on the wire, and the wire follows the core's drift-free schedule.

The drop-in's real output transport and the core's real ``Outbound`` run here; only the driver
is replaced, by ``SyntheticClient`` below, which does what wavewire's drivers do (sleep until
the core's next deadline, then take what is due) on a clock that the test owns. So every time
below is exact: no sleeping, no wall clock.
"""

from __future__ import annotations

from fractions import Fraction

import pytest
from pipecat.frames.frames import InterruptionFrame, OutputAudioRawFrame
from pipecat.serializers.protobuf import ProtobufFrameSerializer as PipecatProtobuf

from wavewire.core.config import AudioOutConfig
from wavewire.core.frames import Frame, InputAudioRawFrame, SerializedAudioFrame
from wavewire.core.frames import OutputAudioRawFrame as CoreOutputAudio
from wavewire.core.serializers.protobuf import ProtobufFrameSerializer as CoreProtobuf
from wavewire.core.session.audio import AudioBufferFull
from wavewire.core.session.outbound import Outbound
from wavewire.pipecat import SingleClientWebsocketServerParams, SingleClientWebsocketServerTransport
from wavewire.pipecat._transport import HandleLink
from wavewire.pipecat._wire import WireSerializer
from wavewire.pipecat.server import SingleClientWebsocketServerOutputTransport

pytestmark = pytest.mark.anyio

CORE_PROTO = CoreProtobuf()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class SyntheticClient:
    """A ``ClientHandle`` whose driver runs on a synthetic clock: what wavewire's drivers do
    (arm a timer for ``next_deadline``, ``take_due`` when it fires), with the sleep replaced by
    moving the clock."""

    def __init__(self, rate: int, channels: int, chunks_10ms: int = 4) -> None:
        chunk_seconds = (rate // 100 * chunks_10ms) / rate
        self.outbound = Outbound(
            WireSerializer(),
            AudioOutConfig(
                sample_rate=rate,
                num_channels=channels,
                chunks_10ms=chunks_10ms,
                end_silence_secs=0,
                max_queued_seconds=chunk_seconds,
            ),
        )
        self.now = 0.0
        #: (time on the synthetic clock, message) for everything put on the wire.
        self.wire: list[tuple[float, bytes | str]] = []

    def offer(self, frame: Frame) -> bool:
        try:
            messages, _ = self.outbound.send(frame, self.now)
        except AudioBufferFull:
            return False
        self.wire += [(self.now, message) for message in messages]
        return True

    async def wait_audio_writable(self) -> None:
        while not self.outbound.writable:
            self.fire_timer()

    def fire_timer(self) -> None:
        deadline = self.outbound.next_deadline()
        assert deadline is not None, "nothing scheduled: the writer would wait forever"
        self.now = max(self.now, deadline)
        self.wire += [(self.now, message) for message in self.outbound.take_due(self.now)]

    async def drain(self) -> None:
        pass

    def output(self) -> SyntheticClient:
        return self

    async def send(self, frame: Frame) -> None:
        assert self.offer(frame)


class FakeServer:
    def __init__(self, client: SyntheticClient) -> None:
        self.client = client

    def link(self) -> HandleLink:
        return HandleLink(self.client)  # type: ignore[arg-type]


def output_for(
    client: SyntheticClient, rate: int, channels: int
) -> SingleClientWebsocketServerOutputTransport:
    params = SingleClientWebsocketServerParams(
        audio_out_enabled=True,
        audio_out_sample_rate=rate,
        audio_out_channels=channels,
        serializer=PipecatProtobuf(),
    )
    transport = SingleClientWebsocketServerTransport(params)
    transport._server = FakeServer(client)  # type: ignore[assignment]
    output = transport.output()
    # What BaseOutputTransport.setup() computes from the pipeline's setup.
    output._sample_rate = rate
    output._audio_chunk_size = rate // 100 * channels * 2 * 4
    return output


@pytest.mark.parametrize(("rate", "channels"), [(16000, 1), (24000, 2), (8000, 1)])
async def test_a_write_returns_when_the_chunk_before_it_is_due_on_the_wire(
    rate: int, channels: int
) -> None:
    client = SyntheticClient(rate, channels)
    output = output_for(client, rate, channels)
    chunk_bytes = rate // 100 * channels * 2 * 4
    returned: list[float] = []
    for k in range(200):  # 8 s of audio, one Pipecat write per chunk (as its MediaSender does)
        audio = bytes([k % 250 + 1, 0]) * (chunk_bytes // 2)
        frame = OutputAudioRawFrame(audio=audio, sample_rate=rate, num_channels=channels)
        assert await output.write_audio_frame(frame)
        returned.append(client.now)
    while client.outbound.next_deadline() is not None:
        client.fire_timer()
    duration = Fraction(rate // 100 * 4, rate)  # 40 ms whatever the channel count
    # Pipecat's contract, kept: write k returns when chunk k-1 is due (the first two at once).
    assert returned == [float(max(k - 1, 0) * duration) for k in range(200)]
    # The wire: chunk k exactly at k x 40 ms, no drift over the stream, stereo at full speed
    # (Pipecat 1.14 paces stereo at half speed), every chunk whole and in order.
    assert [t for t, _ in client.wire] == [float(k * duration) for k in range(200)]
    received = [CORE_PROTO.deserialize(message) for _, message in client.wire]
    assert all(isinstance(f, InputAudioRawFrame) for f in received)
    assert [f.audio[0] for f in received if isinstance(f, InputAudioRawFrame)] == [
        k % 250 + 1 for k in range(200)
    ]


async def test_a_long_write_end_silence_is_paced_as_ordinary_chunks() -> None:
    client = SyntheticClient(16000, 1)
    output = output_for(client, 16000, 1)
    silence = OutputAudioRawFrame(audio=bytes(16000 * 2 * 2), sample_rate=16000, num_channels=1)
    assert await output.write_audio_frame(silence)  # Pipecat's 2 s end silence: one write
    assert client.now == pytest.approx(48 * 0.04)  # when the chunk before its last one left
    while client.outbound.next_deadline() is not None:
        client.fire_timer()
    assert [round(t / 0.04) for t, _ in client.wire] == list(range(50))


async def test_after_an_interruption_a_waiting_write_is_dropped_unless_uninterruptible() -> None:
    client = SyntheticClient(16000, 1)
    output = output_for(client, 16000, 1)
    chunk = bytes([9, 0]) * 640
    first = OutputAudioRawFrame(audio=chunk, sample_rate=16000, num_channels=1)
    assert await output.write_audio_frame(first)  # on the wire at 0
    assert await output.write_audio_frame(first)  # queued in the core for 0.04
    # An InterruptionFrame reaches the output (the Pipecat base part is skipped here).
    paced = output._paced
    paced.interruptions += 1
    await paced.interrupt(client, InterruptionFrame())
    stale = OutputAudioRawFrame(audio=chunk, sample_rate=16000, num_channels=1)
    stale_epoch = paced.interruptions - 1
    assert not await paced.write_paced(
        client,
        _serialized(stale),
        interruptible=True,
        epoch=stale_epoch,
    )
    kept = await paced.write_paced(
        client,
        _serialized(stale),
        interruptible=False,
        epoch=stale_epoch,
    )
    assert kept
    while client.outbound.next_deadline() is not None:
        client.fire_timer()
    kinds = [type(CORE_PROTO.deserialize(m)).__name__ for _, m in client.wire]
    # The queued chunk was dropped; the interruption went out at once; only the
    # uninterruptible chunk followed it.
    assert kinds == ["InputAudioRawFrame", "InterruptionFrame", "InputAudioRawFrame"]


def _serialized(frame: OutputAudioRawFrame) -> SerializedAudioFrame:
    data = CORE_PROTO.serialize(
        CoreOutputAudio(audio=frame.audio, sample_rate=frame.sample_rate, num_channels=1)
    )
    return SerializedAudioFrame(data=data)


async def test_bot_stopped_speaking_waits_for_the_last_chunk_to_be_on_the_wire() -> None:
    client = SyntheticClient(16000, 1)
    output = output_for(client, 16000, 1)
    for _ in range(5):
        chunk = OutputAudioRawFrame(audio=bytes([3, 0]) * 640, sample_rate=16000, num_channels=1)
        assert await output.write_audio_frame(chunk)
    assert client.now == pytest.approx(0.12)  # the last write returned one chunk early...
    await output._paced.settle(client)
    assert client.now == pytest.approx(0.16)  # ...BotStoppedSpeakingFrame leaves with it
    assert client.wire[-1][0] == pytest.approx(0.16)
    assert client.outbound.next_deadline() is None


async def test_a_chunk_made_before_the_interruption_is_not_written_after_it() -> None:
    client = SyntheticClient(16000, 1)
    output = output_for(client, 16000, 1)
    audio = bytes([5, 0]) * 640
    stale = OutputAudioRawFrame(audio=audio, sample_rate=16000, num_channels=1)
    uninterruptible = OutputAudioRawFrame(audio=audio, sample_rate=16000, num_channels=1)
    uninterruptible.interruptible = False
    output._paced.mark_interruption()  # Pipecat's sender had already taken these from its queue
    fresh = OutputAudioRawFrame(audio=audio, sample_rate=16000, num_channels=1)
    assert not await output.write_audio_frame(stale)
    assert await output.write_audio_frame(uninterruptible)
    assert await output.write_audio_frame(fresh)
    while client.outbound.next_deadline() is not None:
        client.fire_timer()
    assert len(client.wire) == 2
