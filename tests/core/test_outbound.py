"""Paced output audio end to end through the in-memory pair: what leaves when, with a synthetic
clock. The scheduler itself is tested in test_audio.py; this tests the core's use of it."""

from __future__ import annotations

import pytest

from wavewire.core.config import AudioOutConfig, ClientConfig, ServerConfig
from wavewire.core.errors import InvalidState
from wavewire.core.events import (
    AudioChunkDropped,
    AudioInterrupted,
    ClientDisconnected,
    DisconnectCause,
    Disconnected,
    FrameReceived,
)
from wavewire.core.frames import (
    CancelFrame,
    EndFrame,
    Frame,
    InputAudioRawFrame,
    InputTransportMessageFrame,
    InterruptionFrame,
    OutputAudioRawFrame,
    OutputTransportMessageFrame,
    OutputTransportMessageUrgentFrame,
    TTSStoppedFrame,
)
from wavewire.core.session.audio import AudioBufferFull

from .pair import Link, Network

RATE = 16000
CHUNK = 640  # 20 ms of 16 kHz mono PCM16 with chunks_10ms=2
STEP = 0.02


def audio_net(**audio: object) -> tuple[Network, Link]:
    settings: dict[str, object] = {"sample_rate": RATE, "chunks_10ms": 2, **audio}
    config = ServerConfig(ping_interval=None, audio_out=AudioOutConfig(**settings))  # type: ignore[arg-type]
    net = Network(config)
    return net, net.connect(config=ClientConfig(ping_interval=None))


def pcm(chunks: float, fill: int = 1) -> bytes:
    return bytes([fill, 0]) * int(chunks * CHUNK // 2)


def audio(data: bytes) -> OutputAudioRawFrame:
    return OutputAudioRawFrame(audio=data, sample_rate=RATE)


def received(link: Link) -> list[Frame]:
    frames = [e.frame for e in link.client_events if isinstance(e, FrameReceived)]
    link.client_events = [e for e in link.client_events if not isinstance(e, FrameReceived)]
    return frames


def test_audio_leaves_one_chunk_per_chunk_duration() -> None:
    net, link = audio_net()
    net.server.send_frame(link.connection_id, audio(pcm(3.5)), net.clock.now)
    net.pump()
    first = received(link)
    assert [len(f.audio) for f in first if isinstance(f, InputAudioRawFrame)] == [CHUNK]
    net.advance(STEP - 0.0001)
    assert received(link) == []
    net.advance(0.0001)
    assert len(received(link)) == 1
    net.advance(STEP)
    assert len(received(link)) == 1
    net.advance(1.0)
    assert received(link) == []  # the half chunk is held for more audio
    net.server.send_frame(link.connection_id, TTSStoppedFrame(), net.clock.now)
    net.pump()
    [last] = received(link)
    assert isinstance(last, InputAudioRawFrame)
    assert last.audio == pcm(0.5) + bytes(CHUNK // 2)  # padded with silence


def test_interruption_drops_queued_audio_and_reaches_the_client_at_once() -> None:
    net, link = audio_net()
    net.server.send_frame(link.connection_id, audio(pcm(10)), net.clock.now)
    net.advance(STEP)  # two chunks sent
    assert len(received(link)) == 2
    net.server.send_frame(link.connection_id, InterruptionFrame(), net.clock.now)
    net.pump()
    assert [type(f) for f in received(link)] == [InterruptionFrame]
    [event] = [e for e in net.server_events if isinstance(e, AudioInterrupted)]
    assert event.dropped_ms == pytest.approx(8 * 20)
    net.advance(1.0)
    assert received(link) == []  # no chunk leaves after the interruption


def test_messages_keep_their_place_and_urgent_ones_jump_the_queue() -> None:
    net, link = audio_net()
    cid = link.connection_id
    net.server.send_frame(cid, audio(pcm(3)), net.clock.now)
    net.server.send_frame(
        cid, OutputTransportMessageFrame(message={"after": "audio"}), net.clock.now
    )
    net.server.send_frame(
        cid, OutputTransportMessageUrgentFrame(message={"now": True}), net.clock.now
    )
    net.pump()
    net.advance(2 * STEP)
    kinds = [
        f.message if isinstance(f, InputTransportMessageFrame) else "audio" for f in received(link)
    ]
    assert kinds == ["audio", {"now": True}, "audio", "audio", {"after": "audio"}]


def test_end_frame_drains_audio_then_paced_silence_then_closes() -> None:
    net, link = audio_net(end_silence_secs=0.04)
    cid = link.connection_id
    net.server.send_frame(cid, audio(pcm(2)), net.clock.now)
    net.server.send_frame(cid, EndFrame(), net.clock.now)
    net.pump()
    start = net.clock.now
    assert len(received(link)) == 1
    net.advance(3 * STEP - 0.0001)
    assert len(received(link)) == 2  # the second chunk of audio and the first of silence
    assert not any(isinstance(e, Disconnected) for e in link.client_events)
    net.advance(0.0001)
    silence = received(link)
    assert [f.audio for f in silence if isinstance(f, InputAudioRawFrame)] == [bytes(CHUNK)]
    [closed] = [e for e in link.client_events if isinstance(e, Disconnected)]
    assert (closed.code, net.clock.now) == (1000, start + 3 * STEP)
    [gone] = [e for e in net.server_events if isinstance(e, ClientDisconnected)]
    assert gone.cause is DisconnectCause.CLOSED_LOCALLY


def test_cancel_frame_drops_everything_and_closes_now() -> None:
    net, link = audio_net()
    cid = link.connection_id
    net.server.send_frame(cid, audio(pcm(10)), net.clock.now)
    net.server.send_frame(cid, CancelFrame(), net.clock.now)
    net.pump()
    frames = received(link)
    assert len(frames) <= 1  # the first chunk may have left before the cancel
    assert any(isinstance(e, Disconnected) for e in link.client_events)
    with pytest.raises(InvalidState):
        net.server.send_frame(cid, audio(pcm(1)), net.clock.now)


def test_mono_audio_at_another_rate_is_resampled_to_the_output_rate() -> None:
    pytest.importorskip("soxr")
    net, link = audio_net()
    cid = link.connection_id
    second_at_8k = bytes(2 * 8000)  # 1 s of 8 kHz mono silence
    net.server.send_frame(
        cid, OutputAudioRawFrame(audio=second_at_8k, sample_rate=8000), net.clock.now
    )
    net.server.send_frame(cid, TTSStoppedFrame(), net.clock.now)  # flushes the resampler's tail
    net.server.send_frame(cid, TTSStoppedFrame(), net.clock.now)  # nothing left to flush
    net.advance(2.0)
    total = sum(len(f.audio) for f in received(link) if isinstance(f, InputAudioRawFrame))
    # 1 s at the output's 16 kHz, give or take the last padded chunk.
    assert 2 * 16000 <= total <= 2 * 16000 + CHUNK
    net.server.send_frame(
        cid, OutputAudioRawFrame(audio=b"\1\0" * 80, sample_rate=8000), net.clock.now
    )
    net.server.send_frame(cid, InterruptionFrame(), net.clock.now)  # clears the resampler too


def test_a_resampler_between_equal_rates_passes_through() -> None:
    from wavewire.core.serializers._codecs import StreamResampler

    same = StreamResampler(16000, 16000)
    assert same.process(b"\1\0\2\0") == b"\1\0\2\0"
    assert same.flush() == b""


def test_audio_that_cannot_be_resampled_is_refused() -> None:
    net, link = audio_net()
    with pytest.raises(ValueError, match="channel"):
        net.server.send_frame(
            link.connection_id,
            OutputAudioRawFrame(audio=b"", sample_rate=RATE, num_channels=2),
            net.clock.now,
        )
    stereo = audio_net(num_channels=2)
    with pytest.raises(ValueError, match="only mono audio is resampled"):
        stereo[0].server.send_frame(
            stereo[1].connection_id,
            OutputAudioRawFrame(audio=b"", sample_rate=8000, num_channels=2),
            stereo[0].clock.now,
        )
    with pytest.raises(ValueError, match="whole number"):
        net.server.send_frame(
            link.connection_id, OutputAudioRawFrame(audio=b"\0", sample_rate=8000), net.clock.now
        )


def test_resampling_without_the_extra_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    import wavewire.core.session.outbound as outbound

    def missing(in_rate: int, out_rate: int) -> None:
        raise ImportError('pip install "wavewire[telephony]"')

    monkeypatch.setattr(outbound, "StreamResampler", missing)
    net, link = audio_net()
    with pytest.raises(ValueError, match=r"wavewire\[telephony\]"):
        net.server.send_frame(
            link.connection_id, OutputAudioRawFrame(audio=b"", sample_rate=8000), net.clock.now
        )


def test_a_full_audio_queue_refuses_until_it_drains() -> None:
    net, link = audio_net(max_queued_seconds=0.1)
    cid = link.connection_id
    net.server.send_frame(cid, audio(pcm(6)), net.clock.now)  # 120 ms queued (one went out)
    assert not net.server.audio_writable(cid)
    with pytest.raises(AudioBufferFull):
        net.server.send_frame(cid, audio(pcm(1)), net.clock.now)
    net.advance(2 * STEP)
    assert net.server.audio_writable(cid)
    net.server.send_frame(cid, audio(pcm(1)), net.clock.now)


def test_closing_session_sends_no_more_audio() -> None:
    net, link = audio_net()
    cid = link.connection_id
    net.server.send_frame(cid, audio(pcm(10)), net.clock.now)
    net.pump()
    received(link)
    net.server.close(cid, net.clock.now)
    net.advance(1.0)
    assert received(link) == []


def test_replaced_session_audio_is_never_sent() -> None:
    net, old = audio_net()
    net.server.send_frame(old.connection_id, audio(pcm(10)), net.clock.now)
    net.pump()
    received(old)
    net.connect()
    net.advance(1.0)
    assert received(old) == []


def test_wav_header_on_each_chunk() -> None:
    net, link = audio_net(add_wav_header=True)
    net.server.send_frame(link.connection_id, audio(pcm(1)), net.clock.now)
    net.pump()
    [frame] = received(link)
    [wire] = link.server_wrote[-1:]
    # On the wire: a WebSocket frame holding a protobuf frame holding a WAV file.
    assert b"RIFF" in wire and wire.index(b"WAVEfmt ") == wire.index(b"RIFF") + 8
    # The receiving core strips the header again: the application gets the samples only.
    assert isinstance(frame, InputAudioRawFrame)
    assert frame.audio == pcm(1)


def test_without_audio_out_everything_goes_at_once() -> None:
    net = Network(ServerConfig(ping_interval=None))
    link = net.connect()
    cid = link.connection_id
    assert net.server.send_frame(cid, audio(pcm(3.5)), net.clock.now)
    assert net.server.send_frame(cid, TTSStoppedFrame(), net.clock.now)
    net.pump()
    [frame] = received(link)
    assert isinstance(frame, InputAudioRawFrame)
    assert len(frame.audio) == len(pcm(3.5))
    assert net.server.audio_writable(cid)
    assert net.server.next_deadline() is None
    net.server.send_frame(cid, EndFrame(), net.clock.now)
    net.pump()
    assert any(isinstance(e, Disconnected) for e in link.client_events)


def test_client_paces_audio_and_reports_interruptions() -> None:
    net = Network(ServerConfig(ping_interval=None))
    config = ClientConfig(
        ping_interval=None, audio_out=AudioOutConfig(sample_rate=RATE, chunks_10ms=2)
    )
    link = net.connect(config=config)
    assert link.client.send_frame(audio(pcm(5)), net.clock.now)
    assert link.client.audio_writable
    assert link.client.next_deadline() == pytest.approx(net.clock.now + STEP)
    net.advance(STEP)
    got = [e for e in net.server_events if isinstance(e, FrameReceived)]
    assert len(got) == 2
    link.client.send_frame(InterruptionFrame(), net.clock.now)
    [event] = [e for e in link.client.events_received() if isinstance(e, AudioInterrupted)]
    assert event.dropped_ms == pytest.approx(60)
    link.client.send_frame(EndFrame(), net.clock.now)
    net.advance(5.0)
    assert any(isinstance(e, Disconnected) and e.code == 1000 for e in link.client_events)
    assert link.client.next_deadline() is None


def test_client_cancel_closes_at_once() -> None:
    net = Network(ServerConfig(ping_interval=None))
    link = net.connect(config=ClientConfig(ping_interval=None))
    link.client.send_frame(CancelFrame(), net.clock.now)
    net.pump()
    assert any(isinstance(e, Disconnected) for e in link.client_events)


class _TextOnly:
    """A serializer with no audio message: paced chunks are skipped, messages still flow."""

    def serialize(self, frame: Frame) -> bytes | str | None:
        if isinstance(frame, OutputTransportMessageFrame):
            return str(frame.message)
        return None

    def deserialize(self, data: bytes | str) -> Frame | None:
        return None


def test_a_serializer_without_audio_skips_the_chunks() -> None:
    config = ServerConfig(
        ping_interval=None,
        serializer=_TextOnly(),
        audio_out=AudioOutConfig(sample_rate=RATE, chunks_10ms=2),
    )
    net = Network(config)
    link = net.connect(config=ClientConfig(ping_interval=None))
    cid = link.connection_id
    net.server.send_frame(cid, audio(pcm(2)), net.clock.now)
    net.server.send_frame(cid, OutputTransportMessageFrame(message="after"), net.clock.now)
    net.advance(STEP)
    transmits = [t for t in link.server_wrote if t[:1] in (b"\x81", b"\x82")]
    assert transmits == [b"\x81\x05after"]


class _FailsOnSecondChunk:
    """Sends audio as raw bytes, but fails on the second chunk (a stream id not yet known...)."""

    def __init__(self) -> None:
        self.chunks = 0

    def serialize(self, frame: Frame) -> bytes | str | None:
        if isinstance(frame, OutputAudioRawFrame):
            self.chunks += 1
            if self.chunks == 2:
                raise ValueError("no stream id yet")
            return frame.audio
        return None

    def deserialize(self, data: bytes | str) -> Frame | None:
        return None


def test_a_paced_chunk_the_serializer_fails_on_is_dropped_and_reported() -> None:
    config = ServerConfig(
        ping_interval=None,
        serializer=_FailsOnSecondChunk(),
        audio_out=AudioOutConfig(sample_rate=RATE, chunks_10ms=2),
    )
    net = Network(config)
    link = net.connect(config=ClientConfig(ping_interval=None))
    net.server.send_frame(link.connection_id, audio(pcm(3)), net.clock.now)
    net.advance(2 * STEP)  # chunk 2 fails inside handle_timer: nothing may escape
    [dropped] = [e for e in net.server_events if isinstance(e, AudioChunkDropped)]
    assert (dropped.detail, dropped.dropped_total) == ("ValueError: no stream id yet", 1)
    binary = [w for w in link.server_wrote if w[:1] == b"\x82"]
    assert len(binary) == 2  # chunks 1 and 3
    assert net.server.clients != ()


def test_audio_stats_are_exposed_per_session_and_on_the_client() -> None:
    net, link = audio_net()
    net.server.send_frame(link.connection_id, audio(pcm(2)), net.clock.now)
    net.advance(STEP)
    stats = net.server.audio_stats(link.connection_id)
    assert stats is not None
    assert (stats.chunks_sent, stats.bytes_sent) == (2, 2 * CHUNK)
    assert link.client.audio_stats is None  # the client has no audio_out here
    plain = Network(ServerConfig(ping_interval=None))
    other = plain.connect()
    assert plain.server.audio_stats(other.connection_id) is None
    other.client.close(plain.clock.now)
    plain.pump()
    with pytest.raises(InvalidState):
        plain.server.audio_stats(other.connection_id)
