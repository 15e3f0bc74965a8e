"""Audio the application serialized itself (``SerializedAudioFrame``, ``AudioOutput.write_encoded``)
paced by the core's schedule, and WAV headers stripped from received audio (``wav_samples``,
``inbound.strip_wav_header``). Synthetic clock only."""

from __future__ import annotations

import pytest

from wavewire.core.config import AudioOutConfig, ClientConfig, ServerConfig
from wavewire.core.errors import InvalidState
from wavewire.core.events import AudioInterrupted, ConnectionId, FrameReceived
from wavewire.core.frames import (
    EndFrame,
    Frame,
    InputAudioRawFrame,
    InputTransportMessageFrame,
    InterruptionFrame,
    OutputAudioRawFrame,
    OutputTransportMessageFrame,
    SerializedAudioFrame,
    TextFrame,
)
from wavewire.core.serializers.protobuf import ProtobufFrameSerializer
from wavewire.core.session.audio import (
    AudioBufferFull,
    AudioChunk,
    AudioOutput,
    EncodedChunk,
    Message,
)
from wavewire.core.session.wav import wav_chunk, wav_samples

from .pair import Network

T0 = 500.0
RATE = 16000
STEP = 0.04  # one chunk: 4 x 10 ms
PROTO = ProtobufFrameSerializer()


def out(**kwargs: object) -> AudioOutput[str]:
    return AudioOutput(sample_rate=RATE, **kwargs)  # type: ignore[arg-type]


def test_encoded_chunks_take_the_slots_of_audio_chunks() -> None:
    output = out()
    for i in range(3):
        output.write_encoded(f"c{i}", T0)
    output.queue_message("after")
    assert output.take_due(T0) == [EncodedChunk("c0")]
    assert output.next_deadline() == pytest.approx(T0 + STEP)
    assert output.take_due(T0 + STEP - 1e-6) == []
    assert output.take_due(T0 + STEP) == [EncodedChunk("c1")]
    assert output.take_due(T0 + 2 * STEP) == [EncodedChunk("c2"), Message("after")]
    assert output.stats.chunks_sent == 3


def test_encoded_and_pcm_chunks_share_one_drift_free_schedule() -> None:
    output = out(add_wav_header=True)
    output.write_encoded("e0", T0)
    output.write_audio(bytes(1280), T0)  # one whole PCM chunk
    output.write_encoded(None, T0)  # a slot with nothing to send
    items = [*output.take_due(T0), *output.take_due(T0 + STEP), *output.take_due(T0 + 2 * STEP)]
    assert isinstance(items[0], EncodedChunk) and items[0].item == "e0"
    assert isinstance(items[1], AudioChunk) and items[1].due == pytest.approx(T0 + STEP)
    assert items[1].data[:4] == b"RIFF"  # the core's WAV header is for its own chunks only
    assert items[2] == EncodedChunk(None)


def test_encoded_chunks_are_backpressured_interrupted_and_refused_after_a_partial() -> None:
    output = out(max_queued_seconds=STEP)  # room for one chunk
    output.write_encoded("a", T0)
    with pytest.raises(AudioBufferFull):
        output.write_encoded("b", T0)
    assert not output.writable
    assert output.interrupt() == pytest.approx(40.0)
    assert output.take_due(T0 + 10) == []  # dropped, never sent
    output.write_audio(bytes(100), T0 + 10)  # a partial chunk is held
    with pytest.raises(ValueError, match="partial chunk"):
        output.write_encoded("c", T0 + 10)
    output.cancel()
    with pytest.raises(InvalidState):
        output.write_encoded("d", T0 + 10)


def server_with(audio_out: AudioOutConfig | None) -> tuple[Network, ConnectionId]:
    net = Network(ServerConfig(ping_interval=None, audio_out=audio_out))
    link = net.connect(config=ClientConfig(ping_interval=None))
    return net, link.connection_id


def client_frames(net: Network) -> list[Frame]:
    [link] = net.links.values()
    frames = [e.frame for e in link.client_events if isinstance(e, FrameReceived)]
    link.client_events.clear()
    return frames


def encoded(fill: int) -> SerializedAudioFrame:
    pcm = bytes([fill, 0]) * 640
    data = PROTO.serialize(OutputAudioRawFrame(audio=pcm, sample_rate=RATE))
    return SerializedAudioFrame(data=data)


def test_serialized_audio_leaves_at_its_paced_slot_as_sent() -> None:
    net, cid = server_with(AudioOutConfig(sample_rate=RATE, end_silence_secs=0))
    for fill in (1, 2, 3):
        net.server.send_frame(cid, encoded(fill), net.clock.now)
    net.server.send_frame(cid, OutputTransportMessageFrame(message={"n": 1}), net.clock.now)
    net.pump()
    [first] = client_frames(net)
    assert isinstance(first, InputAudioRawFrame) and first.audio[:1] == b"\x01"
    net.advance(STEP - 1e-4)
    assert client_frames(net) == []
    net.advance(1e-4)
    [second] = client_frames(net)
    assert isinstance(second, InputAudioRawFrame) and second.audio[:1] == b"\x02"
    net.server.send_frame(cid, InterruptionFrame(), net.clock.now)
    net.pump()
    # The third chunk is dropped; the interruption goes first, then the message behind it.
    assert [type(f) for f in client_frames(net)] == [InterruptionFrame, InputTransportMessageFrame]
    [event] = [e for e in net.server_events if isinstance(e, AudioInterrupted)]
    assert event.dropped_ms == pytest.approx(40.0)
    net.server.send_frame(cid, SerializedAudioFrame(data=None), net.clock.now)
    net.server.send_frame(cid, EndFrame(), net.clock.now)
    net.advance(1.0)
    assert client_frames(net) == []  # the None slot sent nothing


def test_serialized_audio_without_audio_out_is_sent_at_once() -> None:
    net, cid = server_with(None)
    net.server.send_frame(cid, encoded(7), net.clock.now)
    net.server.send_frame(cid, encoded(8), net.clock.now)
    assert net.server.send_frame(cid, SerializedAudioFrame(data=None), net.clock.now)
    net.pump()
    assert [f.audio[:1] for f in client_frames(net) if isinstance(f, InputAudioRawFrame)] == [
        b"\x07",
        b"\x08",
    ]


# --- received WAV headers -----------------------------------------------------------------


def test_wav_samples_finds_the_data_chunk() -> None:
    pcm = bytes(range(1, 33))
    assert wav_samples(wav_chunk(pcm, 16000)) == pcm
    # Another chunk (odd-sized, so padded) before "data", and trailing bytes after it.
    riff = b"RIFF\x00\x00\x00\x00WAVE" + b"LIST\x03\x00\x00\x00abc\x00"
    assert wav_samples(riff + b"data\x04\x00\x00\x00" + pcm[:4] + b"tail") == pcm[:4]
    # Streamed WAV: size unknown (0 or 0xFFFFFFFF): the rest of the message.
    assert wav_samples(riff + b"data\xff\xff\xff\xff" + pcm) == pcm
    assert wav_samples(riff + b"data\x00\x00\x00\x00" + pcm) == pcm


@pytest.mark.parametrize(
    "data",
    [
        bytes(64),  # plain PCM
        b"RIFF\x24\x00\x00\x00WAVX" + bytes(40),  # not WAVE
        b"RIFF\x24\x00\x00\x00WAVEfmt \x10\x00\x00\x00" + bytes(8),  # cut before "data"
        b"RIFF",
    ],
)
def test_wav_samples_leaves_other_payloads_alone(data: bytes) -> None:
    assert wav_samples(data) is None


def test_received_audio_reaches_the_application_without_its_wav_header() -> None:
    net = Network(ServerConfig(ping_interval=None))
    link = net.connect(config=ClientConfig(ping_interval=None))
    pcm = bytes([5, 0]) * 160
    wav = OutputAudioRawFrame(audio=wav_chunk(pcm, RATE), sample_rate=RATE)
    link.client.send_frame(wav, net.clock.now)
    link.client.send_frame(OutputAudioRawFrame(audio=pcm, sample_rate=RATE), net.clock.now)
    link.client.send_frame(TextFrame(text="RIFF....WAVE"), net.clock.now)
    net.pump()
    frames = [e.frame for e in net.server_events if isinstance(e, FrameReceived)]
    assert [f.audio for f in frames if isinstance(f, InputAudioRawFrame)] == [pcm, pcm]
    assert [f.text for f in frames if isinstance(f, TextFrame)] == ["RIFF....WAVE"]
