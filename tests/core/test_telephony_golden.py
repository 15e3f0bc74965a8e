"""Golden messages: each provider's documented wire format, as literal JSON text and bytes, in
both directions; the decisions docs/telephony.md records (stream ids, RTVI, Vonage digits and
rates, Telnyx's per-direction encodings); and the end-of-utterance flush on a synthetic clock.

Received messages are the providers' documented examples (ids shortened where long). Sent
messages are compared as the exact text that goes on the wire. Audio vectors are G.711 worked
out by hand (see test_telephony_serializers.py): PCM16 (0, 1000, -1000) is mu-law FF CE 4E
(base64 ``/85O``) and A-law D5 FA 7A (``1fp6``); mu-law FF 00 80 7F (``/wCAfw==``) decodes to
(0, -32124, 32124, 0), A-law D5 55 (``1VU=``) to (8, -8).

Sources: Twilio "Media Streams - WebSocket Messages"; Telnyx "Stream call media over
WebSocket" (AsyncAPI) and the streaming_start command (``stream_codec``,
``stream_bidirectional_codec``); Plivo "Audio Stream" XML and its playAudio, clearAudio,
checkpoint events; Exotel "Working with the Stream and Voicebot Applet"; Vonage "WebSockets in
the Voice API".
"""

from __future__ import annotations

import base64
import json
import math
import struct
from collections.abc import Callable
from typing import Any

import pytest

from wavewire.core.config import AudioOutConfig
from wavewire.core.events import AudioChunkDropped, ConnectionId, ConnectionInfo
from wavewire.core.frames import (
    EndFrame,
    Frame,
    InputAudioRawFrame,
    InputDTMFFrame,
    InputTransportMessageFrame,
    InterruptionFrame,
    OutputAudioRawFrame,
    OutputTransportMessageFrame,
    OutputTransportMessageUrgentFrame,
    TTSStoppedFrame,
)
from wavewire.core.serializers import (
    ExotelFrameSerializer,
    PlivoFrameSerializer,
    ProtobufFrameSerializer,
    SerializationError,
    TelnyxFrameSerializer,
    TwilioFrameSerializer,
    VonageFrameSerializer,
)
from wavewire.core.serializers import _codecs as codecs
from wavewire.core.serializers._telephony import TelephonySerializer
from wavewire.core.serializers.base import session_serializer
from wavewire.core.session.outbound import Outbound


def pcm(*samples: int) -> bytes:
    return struct.pack(f"<{len(samples)}h", *samples)


SPEECH = pcm(0, 1000, -1000)  # mu-law /85O, A-law 1fp6
RTVI = {"label": "rtvi-ai", "type": "bot-llm-text", "data": {"text": "hi"}}


def out(audio: bytes, rate: int = 8000) -> OutputAudioRawFrame:
    return OutputAudioRawFrame(audio=audio, sample_rate=rate)


def message(frame: Frame | None) -> Any:
    assert isinstance(frame, InputTransportMessageFrame)
    return frame.message


# -- Twilio -----------------------------------------------------------------------------------


def test_twilio_golden() -> None:
    twilio = TwilioFrameSerializer(sample_rate=8000).for_session()
    assert message(
        twilio.deserialize('{"event":"connected","protocol":"Call","version":"1.0.0"}')
    ) == {"event": "connected", "protocol": "Call", "version": "1.0.0"}
    start = twilio.deserialize(
        '{"event":"start","sequenceNumber":"1","start":{"accountSid":"AC11","streamSid":"MZ18",'
        '"callSid":"CA12","tracks":["inbound"],"mediaFormat":{"encoding":"audio/x-mulaw",'
        '"sampleRate":8000,"channels":1},"customParameters":{"FirstName":"Jane"}},'
        '"streamSid":"MZ18"}'
    )
    assert message(start) == {
        "event": "start",
        "sequenceNumber": "1",
        "start": {
            "accountSid": "AC11",
            "streamSid": "MZ18",
            "callSid": "CA12",
            "tracks": ["inbound"],
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
            "customParameters": {"FirstName": "Jane"},
        },
        "streamSid": "MZ18",
    }
    assert (twilio.stream_id, twilio.call_id) == ("MZ18", "CA12")
    assert twilio.deserialize(
        '{"event":"media","sequenceNumber":"3","media":{"track":"inbound","chunk":"1",'
        '"timestamp":"5","payload":"/wCAfw=="},"streamSid":"MZ18"}'
    ) == InputAudioRawFrame(audio=pcm(0, -32124, 32124, 0), sample_rate=8000)
    assert twilio.deserialize(
        '{"event":"dtmf","streamSid":"MZ18","sequenceNumber":"5",'
        '"dtmf":{"track":"inbound_track","digit":"1"}}'
    ) == InputDTMFFrame(button="1")
    played = twilio.deserialize(
        '{"event":"mark","sequenceNumber":"4","streamSid":"MZ18","mark":{"name":"my label"}}'
    )
    assert message(played) == {
        "event": "mark",
        "sequenceNumber": "4",
        "streamSid": "MZ18",
        "mark": {"name": "my label"},
    }

    assert twilio.serialize(out(SPEECH)) == (
        '{"event": "media", "streamSid": "MZ18", "media": {"payload": "/85O"}}'
    )
    assert twilio.serialize(InterruptionFrame()) == '{"event": "clear", "streamSid": "MZ18"}'
    mark = {"event": "mark", "streamSid": "MZ18", "mark": {"name": "my label"}}
    assert twilio.serialize(OutputTransportMessageFrame(message=mark)) == (
        '{"event": "mark", "streamSid": "MZ18", "mark": {"name": "my label"}}'
    )


# -- Telnyx -----------------------------------------------------------------------------------

TELNYX_START = (
    '{"event":"start","sequence_number":"1","stream_id":"32DE0DEA","start":{"user_id":"3E6F",'
    '"call_control_id":"v2:T02l","call_session_id":"ff55","from":"+13122010094",'
    '"to":"+13122123456","client_state":"aGF2ZSBhIG5pY2UgZGF5ID1d",'
    '"custom_parameters":{"customer_id":"customer_123"},'
    '"media_format":{"encoding":"%s","sample_rate":8000,"channels":1}}}'
)


def test_telnyx_golden_a_pcma_call() -> None:
    # Pipecat's runner for a PCMA call: outbound_encoding from start's media_format (what
    # Telnyx streams to us), inbound_encoding "PCMU" (what we stream into Telnyx).
    telnyx = TelnyxFrameSerializer(
        "32DE0DEA", outbound_encoding="PCMA", inbound_encoding="PCMU", sample_rate=8000
    )
    assert message(telnyx.deserialize('{"event":"connected","version":"1.0.0"}')) == {
        "event": "connected",
        "version": "1.0.0",
    }
    assert telnyx.deserialize(
        '{"event":"media","sequence_number":"4","media":{"track":"inbound","chunk":"2",'
        '"timestamp":"5","payload":"1VU="},"stream_id":"32DE0DEA"}'
    ) == InputAudioRawFrame(audio=pcm(8, -8), sample_rate=8000)
    assert telnyx.serialize(out(SPEECH)) == '{"event": "media", "media": {"payload": "/85O"}}'
    assert telnyx.serialize(InterruptionFrame()) == '{"event": "clear"}'
    assert telnyx.deserialize(
        '{"event":"dtmf","stream_id":"32DE0DEA","occurred_at":"2022-06-08T13:21:09.000Z",'
        '"sequence_number":"7","dtmf":{"digit":"#"}}'
    ) == InputDTMFFrame(button="#")
    mark = {"event": "mark", "mark": {"name": "greeting"}}
    assert telnyx.serialize(OutputTransportMessageFrame(message=mark)) == (
        '{"event": "mark", "mark": {"name": "greeting"}}'
    )


def test_telnyx_start_tells_the_received_encoding() -> None:
    telnyx = TelnyxFrameSerializer(sample_rate=8000)  # defaults: PCMU both ways
    start = telnyx.deserialize(TELNYX_START % "PCMA")
    assert message(start)["start"]["custom_parameters"] == {"customer_id": "customer_123"}
    assert (telnyx.stream_id, telnyx.call_id) == ("32DE0DEA", "v2:T02l")
    assert (telnyx.outbound_encoding, telnyx.inbound_encoding) == ("PCMA", "PCMU")
    media = '{"event":"media","media":{"track":"inbound","payload":"1VU="}}'
    assert telnyx.deserialize(media) == InputAudioRawFrame(audio=pcm(8, -8), sample_rate=8000)
    # What we send is the bidirectional codec, which start does not report: unchanged.
    assert telnyx.serialize(out(SPEECH)) == '{"event": "media", "media": {"payload": "/85O"}}'
    # An encoding we cannot decode leaves the configured one; a new session starts afresh.
    telnyx.deserialize(TELNYX_START % "G722")
    assert telnyx.outbound_encoding == "PCMA"
    assert telnyx.for_session().outbound_encoding == "PCMU"
    telnyx.deserialize('{"event":"start","stream_id":"s","start":{"media_format":"PCMU"}}')
    assert telnyx.outbound_encoding == "PCMA"


def test_telnyx_swapped_setup_decodes_noise() -> None:
    # What the wrong direction costs: A-law bytes read as mu-law are far from the signal.
    alaw = codecs.encode("PCMA", SPEECH)
    assert codecs.decode("PCMU", alaw) != SPEECH
    assert codecs.decode("PCMA", alaw) == pcm(8, 1008, -1008)


# -- Plivo ------------------------------------------------------------------------------------


def test_plivo_golden() -> None:
    plivo = PlivoFrameSerializer(sample_rate=8000).for_session()
    # Before start: playAudio as Plivo documents it (no streamId), no clearAudio to address.
    assert plivo.serialize(out(SPEECH)) == (
        '{"event": "playAudio", "media": {"contentType": "audio/x-mulaw", "sampleRate": 8000,'
        ' "payload": "/85O"}}'
    )
    assert plivo.serialize(InterruptionFrame()) is None
    start = plivo.deserialize(
        '{"event":"start","sequenceNumber":0,"start":{"callId":"2dd1a5b8","streamId":'
        '"20170ada-f610-433b-8758-c02a2aab3662","accountId":"MA1","tracks":["inbound"],'
        '"mediaFormat":{"encoding":"audio/x-mulaw","sampleRate":8000}},"extra_headers":"{}"}'
    )
    assert message(start)["start"]["callId"] == "2dd1a5b8"
    assert plivo.stream_id == "20170ada-f610-433b-8758-c02a2aab3662"
    assert plivo.deserialize(
        '{"event":"media","sequenceNumber":2,"streamId":"20170ada-f610-433b-8758-c02a2aab3662",'
        '"media":{"track":"inbound","timestamp":"1","chunk":1,"payload":"/wCAfw=="},'
        '"extra_headers":"{}"}'
    ) == InputAudioRawFrame(audio=pcm(0, -32124, 32124, 0), sample_rate=8000)
    assert plivo.deserialize(
        '{"event":"dtmf","streamId":"20170ada-f610-433b-8758-c02a2aab3662","dtmf":{"digit":"5"}}'
    ) == InputDTMFFrame(button="5")
    # After start: Pipecat's shape, streamId last.
    assert plivo.serialize(out(SPEECH)) == (
        '{"event": "playAudio", "media": {"contentType": "audio/x-mulaw", "sampleRate": 8000,'
        ' "payload": "/85O"}, "streamId": "20170ada-f610-433b-8758-c02a2aab3662"}'
    )
    assert plivo.serialize(InterruptionFrame()) == (
        '{"event": "clearAudio", "streamId": "20170ada-f610-433b-8758-c02a2aab3662"}'
    )
    checkpoint = {
        "event": "checkpoint",
        "streamId": "20170ada-f610-433b-8758-c02a2aab3662",
        "name": "customer greeting audio",
    }
    assert plivo.serialize(OutputTransportMessageFrame(message=checkpoint)) == (
        '{"event": "checkpoint", "streamId": "20170ada-f610-433b-8758-c02a2aab3662",'
        ' "name": "customer greeting audio"}'
    )
    assert message(
        plivo.deserialize(
            '{"event":"playedStream","streamId":"20170ada-f610-433b-8758-c02a2aab3662",'
            '"name":"customer greeting audio"}'
        )
    ) == {
        "event": "playedStream",
        "streamId": "20170ada-f610-433b-8758-c02a2aab3662",
        "name": "customer greeting audio",
    }


# -- Exotel -----------------------------------------------------------------------------------


def test_exotel_golden() -> None:
    exotel = ExotelFrameSerializer(sample_rate=8000).for_session()
    with pytest.raises(SerializationError, match="Exotel's media message needs the stream id"):
        exotel.serialize(out(SPEECH))
    assert exotel.serialize(InterruptionFrame()) is None
    assert message(exotel.deserialize('{"event": "connected"}')) == {"event": "connected"}
    exotel.deserialize(
        '{"event":"start","sequence_number":1,"stream_sid":"b5d4","start":{"stream_sid":"b5d4",'
        '"call_sid":"cf10","account_sid":"exo1","from":"09999","to":"08888",'
        '"custom_parameters":{},"media_format":{"encoding":"base64","sample_rate":"8000",'
        '"bit_rate":"128kbps"}}}'
    )
    assert (exotel.stream_id, exotel.call_id) == ("b5d4", "cf10")
    # slin: raw 16-bit little-endian PCM, base64. (0, 1000, -1000) is 00 00 E8 03 18 FC.
    assert exotel.deserialize(
        '{"event":"media","sequence_number":3,"stream_sid":"b5d4",'
        '"media":{"chunk":2,"timestamp":"40","payload":"AADoAxj8"}}'
    ) == InputAudioRawFrame(audio=SPEECH, sample_rate=8000)
    assert exotel.deserialize(
        '{"event":"dtmf","sequence_number":4,"stream_sid":"b5d4",'
        '"dtmf":{"duration":"120","digit":"9"}}'
    ) == InputDTMFFrame(button="9")
    assert exotel.serialize(out(SPEECH)) == (
        '{"event": "media", "stream_sid": "b5d4", "media": {"payload": "AADoAxj8"}}'
    )
    assert exotel.serialize(InterruptionFrame()) == '{"event": "clear", "stream_sid": "b5d4"}'


# -- Vonage -----------------------------------------------------------------------------------


def test_vonage_golden() -> None:
    vonage = VonageFrameSerializer(vonage_sample_rate=16000, sample_rate=8000).for_session()
    connected = vonage.deserialize(
        '{"event":"websocket:connected","content-type":"audio/l16;rate=8000","prop1":"value1"}'
    )
    assert message(connected) == {
        "event": "websocket:connected",
        "content-type": "audio/l16;rate=8000",
        "prop1": "value1",
    }
    # The call carries 8 kHz: that rate is used from now on (Pipecat keeps 16 kHz).
    assert vonage.provider_sample_rate == 8000
    assert vonage.deserialize(b"\x00\x00\xe8\x03\x18\xfc") == InputAudioRawFrame(
        audio=SPEECH, sample_rate=8000
    )
    assert vonage.serialize(out(SPEECH)) == b"\x00\x00\xe8\x03\x18\xfc"
    assert vonage.serialize(InterruptionFrame()) == '{"action": "clear"}'
    assert vonage.deserialize('{"event":"websocket:dtmf","digit":"5","duration":260}') == (
        InputDTMFFrame(button="5")
    )
    # A digit as a JSON number is the same key (Pipecat: str(digit)).
    assert vonage.deserialize('{"event":"websocket:dtmf","digit":5,"duration":260}') == (
        InputDTMFFrame(button="5")
    )
    assert vonage.deserialize('{"event":"websocket:dtmf","dtmf":{"digit":0}}') == (
        InputDTMFFrame(button="0")
    )
    assert message(vonage.deserialize('{"event":"websocket:cleared"}')) == {
        "event": "websocket:cleared"
    }
    notify = {"action": "notify", "payload": {"tag": "end"}}
    assert vonage.serialize(OutputTransportMessageFrame(message=notify)) == (
        '{"action": "notify", "payload": {"tag": "end"}}'
    )


# -- decisions shared by the providers --------------------------------------------------------

ALL: list[Callable[..., TelephonySerializer]] = [
    lambda **kw: TwilioFrameSerializer("MZ1", sample_rate=8000, **kw),
    lambda **kw: TelnyxFrameSerializer("st-1", sample_rate=8000, **kw),
    lambda **kw: PlivoFrameSerializer("pl-1", sample_rate=8000, **kw),
    lambda **kw: ExotelFrameSerializer("ex-1", sample_rate=8000, **kw),
    lambda **kw: VonageFrameSerializer(vonage_sample_rate=8000, sample_rate=8000, **kw),
]
IDS = ["twilio", "telnyx", "plivo", "exotel", "vonage"]


@pytest.mark.parametrize("make", ALL, ids=IDS)
def test_rtvi_messages_do_not_go_to_the_phone(make: Callable[..., TelephonySerializer]) -> None:
    serializer = make()
    assert serializer.serialize(OutputTransportMessageFrame(message=RTVI)) is None
    assert serializer.serialize(OutputTransportMessageUrgentFrame(message=RTVI)) is None
    # Only the label decides: other labels and non-objects still go.
    assert serializer.serialize(OutputTransportMessageFrame(message={"label": "x"})) == (
        '{"label": "x"}'
    )
    assert serializer.serialize(OutputTransportMessageFrame(message=["rtvi-ai"])) == '["rtvi-ai"]'
    sending = make(ignore_rtvi_messages=False).for_session()
    assert sending.serialize(OutputTransportMessageFrame(message=RTVI)) == (
        '{"label": "rtvi-ai", "type": "bot-llm-text", "data": {"text": "hi"}}'
    )


@pytest.mark.parametrize(
    ("configured", "start", "media"),
    [
        (
            TwilioFrameSerializer,
            '{"event":"start","start":{"streamSid":"MZnew","callSid":"CA1"}}',
            '{"event": "media", "streamSid": "MZnew", "media": {"payload": "/85O"}}',
        ),
        (
            ExotelFrameSerializer,
            '{"event":"start","start":{"stream_sid":"MZnew","call_sid":"c"}}',
            '{"event": "media", "stream_sid": "MZnew", "media": {"payload": "AADoAxj8"}}',
        ),
        (
            PlivoFrameSerializer,
            '{"event":"start","start":{"streamId":"MZnew","callId":"c"}}',
            '{"event": "playAudio", "media": {"contentType": "audio/x-mulaw", "sampleRate": 8000,'
            ' "payload": "/85O"}, "streamId": "MZnew"}',
        ),
    ],
    ids=["twilio", "exotel", "plivo"],
)
def test_the_start_events_stream_id_replaces_a_configured_one(
    configured: type[TwilioFrameSerializer], start: str, media: str
) -> None:
    serializer = configured("MZold", sample_rate=8000).for_session()
    assert serializer.stream_id == "MZold"
    serializer.deserialize(start)
    assert serializer.stream_id == "MZnew"
    assert serializer.serialize(out(SPEECH)) == media


# -- the end of an utterance: the serializer's resampler tail --------------------------------


def sine(rate: int, seconds: float, amplitude: int = 8000, freq: float = 440.0) -> bytes:
    n = round(rate * seconds)
    return pcm(*(round(amplitude * math.sin(2 * math.pi * freq * i / rate)) for i in range(n)))


def wire_samples(messages: list[bytes | str]) -> list[int]:
    """Twilio media messages' audio, decoded to PCM16 samples at 8 kHz."""
    audio = b"".join(
        base64.b64decode(json.loads(m)["media"]["payload"])
        for m in messages
        if isinstance(m, str) and '"media"' in m
    )
    data = codecs.decode("PCMU", audio)
    return list(struct.unpack(f"<{len(data) // 2}h", data))


def rms(samples: list[int]) -> float:
    return math.sqrt(sum(s * s for s in samples) / len(samples))


def test_flush_sends_what_the_resampler_holds() -> None:
    twilio = TwilioFrameSerializer("MZ1", sample_rate=16000)
    assert twilio.flush() is None  # nothing was ever sent
    sentence = sine(16000, 0.5)
    sent: list[bytes | str] = []
    for start in range(0, len(sentence), 640):
        data = twilio.serialize(out(sentence[start : start + 640], rate=16000))
        if data is not None:
            sent.append(data)
    held = 4000 - len(wire_samples(sent))
    assert held > 8000 * 0.04  # without a flush, over 40 ms of the sentence is missing
    tail = twilio.flush()
    assert tail is not None
    assert len(wire_samples([*sent, tail])) == 4000  # every sample, exactly
    assert twilio.flush() is None  # the resampler starts afresh, holding nothing
    # An interruption drops the held tail instead: nothing left to flush.
    twilio.serialize(out(sentence[:6400], rate=16000))
    twilio.serialize(InterruptionFrame())
    assert twilio.flush() is None


CONNECTION = ConnectionInfo(id=ConnectionId(1))


def paced_twilio(end_silence_secs: float = 0.0) -> Outbound:
    serializer = session_serializer(TwilioFrameSerializer("MZ1", sample_rate=16000))
    config = AudioOutConfig(sample_rate=16000, chunks_10ms=2, end_silence_secs=end_silence_secs)
    return Outbound(serializer, config)


def run_until(outbound: Outbound, now: float, until: float, sent: list[bytes | str]) -> float:
    """Fire the timer at each deadline up to ``until`` (the synthetic clock), as a driver would."""
    deadline = outbound.next_deadline()
    while deadline is not None and deadline <= until:
        now = max(now, deadline)
        sent += outbound.take_due(now)
        deadline = outbound.next_deadline()
    return now


@pytest.mark.parametrize("end", [TTSStoppedFrame, EndFrame])
def test_the_last_chunk_of_a_sentence_is_on_the_wire_within_one_chunk(
    end: type[TTSStoppedFrame] | type[EndFrame],
) -> None:
    outbound = paced_twilio()
    # 1.01 s of speech at 16 kHz, written in real time as a TTS service would (20 ms frames),
    # ending in half a chunk. At 8 kHz on the wire: 8080 samples of speech.
    sentence = sine(16000, 1.01)
    sent: list[bytes | str] = []
    now = 0.0
    for index, start in enumerate(range(0, len(sentence), 640)):
        now = run_until(outbound, now, index * 0.02, sent)
        now = index * 0.02
        messages, _ = outbound.send(out(sentence[start : start + 640], rate=16000), now)
        sent += messages
    stopped_at = now
    messages, _ = outbound.send(end(), stopped_at)
    sent += messages
    run_until(outbound, stopped_at, stopped_at + 0.02, sent)  # one chunk later
    samples = wire_samples(sent)
    # 51 chunks (the last padded with silence) are 16320 samples at 16 kHz: 8160 at 8 kHz, all
    # of them out, the sentence's last 10 ms (samples 8000-8080) included, at full level.
    assert len(samples) == 8160
    assert rms(samples[8000:8080]) == pytest.approx(8000 / math.sqrt(2), rel=0.1)
    assert rms(samples[8100:]) < 300  # the padding: silence (and the filter's ringing)
    assert outbound.next_deadline() is None
    assert outbound.finished is (end is EndFrame)


def test_the_flush_comes_before_the_end_silence() -> None:
    outbound = paced_twilio(end_silence_secs=0.3)
    sent, _ = outbound.send(out(sine(16000, 0.2), rate=16000), 0.0)
    sent += outbound.send(EndFrame(), 0.0)[0]
    run_until(outbound, 0.0, 1.0, sent)
    samples = wire_samples(sent)
    # The speech, all of it, then the end silence (less what the resampler keeps of it, as
    # silence needs no flush).
    assert len(samples) > 1600
    assert rms(samples[1500:1600]) == pytest.approx(8000 / math.sqrt(2), rel=0.1)
    assert samples[1600:] and max(map(abs, samples[1600:])) < 300
    assert outbound.finished


def test_a_stop_after_the_end_queues_no_second_flush() -> None:
    outbound = paced_twilio(end_silence_secs=0.04)
    outbound.send(out(sine(16000, 0.1), rate=16000), 0.0)
    outbound.send(EndFrame(), 0.0)
    messages, taken = outbound.send(TTSStoppedFrame(), 0.0)  # the output is ending: no error
    assert taken
    assert messages == []


def test_an_interruption_drops_the_held_tail() -> None:
    outbound = paced_twilio()
    outbound.send(out(sine(16000, 0.5), rate=16000), 0.0)  # queued ahead of real time
    outbound.send(TTSStoppedFrame(), 0.0)
    sent = outbound.send(InterruptionFrame(), 0.1)[0]
    assert sent[0] == '{"event": "clear", "streamSid": "MZ1"}'
    # The flush queued behind the dropped audio finds nothing to send.
    assert wire_samples(sent[1:]) == []


def test_without_audio_out_the_flush_goes_at_once() -> None:
    outbound = Outbound(session_serializer(TwilioFrameSerializer("MZ1", sample_rate=16000)), None)
    sentence = sine(16000, 0.3)
    sent = outbound.send(out(sentence, rate=16000), 0.0)[0]
    assert len(wire_samples(sent)) < 2400
    tail, taken = outbound.send(TTSStoppedFrame(), 0.0)
    assert taken and len(tail) == 1
    assert len(wire_samples(sent + tail)) == 2400
    assert outbound.send(TTSStoppedFrame(), 0.0) == ([], True)  # nothing held: nothing sent
    outbound.send(out(sentence, rate=16000), 0.0)
    tail, _ = outbound.send(EndFrame(), 0.0)
    assert len(tail) == 1 and outbound.finished


def test_a_serializer_without_flush_is_left_alone() -> None:
    outbound = Outbound(ProtobufFrameSerializer(), AudioOutConfig(sample_rate=16000))
    outbound.send(out(bytes(1280), rate=16000), 0.0)
    items = outbound.send(TTSStoppedFrame(), 0.0)[0]
    assert all(isinstance(item, bytes) for item in items)


class _FailingFlush(TwilioFrameSerializer):
    def flush(self) -> bytes | str | None:
        raise SerializationError("no")


def test_a_flush_that_fails_is_dropped_and_reported() -> None:
    outbound = Outbound(_FailingFlush("MZ1", sample_rate=16000), AudioOutConfig(sample_rate=16000))
    outbound.send(out(bytes(1280), rate=16000), 0.0)
    outbound.send(TTSStoppedFrame(), 0.0)
    events = outbound.take_events(CONNECTION)
    assert [type(e) for e in events] == [AudioChunkDropped]
    assert isinstance(events[0], AudioChunkDropped) and "SerializationError: no" in events[0].detail
