"""Telephony serializers: each provider's documented message shapes as literal JSON, G.711
against hand-derived vectors, streaming resampling, per-session state, and every error path.

G.711 vectors are worked out from the encoding rules (ITU-T G.711), not from audioop:

- mu-law: add the bias 132 to the magnitude, exponent = position of its top bit above bit 7,
  mantissa = the 4 bits below the top bit; byte = NOT(sign << 7 | exponent << 4 | mantissa).
  1000 + 132 = 1132 = 0b100_0110_1100: exponent 3, mantissa 0b0001, NOT 0x31 = 0xCE; -1000 sets
  the sign: NOT 0xB1 = 0x4E; 0 -> NOT 0x00 = 0xFF. Decoding inverts it: 0x00 -> -32124,
  0x80 -> 32124, 0x7F and 0xFF -> 0.
- A-law: 13-bit magnitude (16-bit >> 3); segment 0 holds 0..31 (mantissa = value >> 1),
  segment s > 0 holds 2**(s+4)..2**(s+5)-1 (mantissa = (value >> s) & 15); byte =
  (0x80 if positive) | segment << 4 | mantissa, XOR 0x55. 1000 >> 3 = 125: segment 2, mantissa
  (125 >> 2) & 15 = 15: 0xAF ^ 0x55 = 0xFA; -1000: 0x2F ^ 0x55 = 0x7A; 0: 0x80 ^ 0x55 = 0xD5.
  Decoding 0xD5 gives the middle of the first step, +8; 0x55 gives -8.
"""

from __future__ import annotations

import base64
import json
import math
import struct
import subprocess
import sys
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wavewire.core.frames import (
    CancelFrame,
    EndFrame,
    Frame,
    InputAudioRawFrame,
    InputDTMFFrame,
    InputTransportMessageFrame,
    InterruptionFrame,
    OutputAudioRawFrame,
    OutputTransportMessageFrame,
    OutputTransportMessageUrgentFrame,
    TextFrame,
)
from wavewire.core.serializers import (
    ExotelFrameSerializer,
    FrameSerializer,
    PlivoFrameSerializer,
    SerializationError,
    TelnyxFrameSerializer,
    TwilioFrameSerializer,
    VonageFrameSerializer,
)
from wavewire.core.serializers import _codecs as codecs
from wavewire.core.serializers._telephony import TelephonySerializer
from wavewire.core.serializers.base import session_serializer

AnySerializer = (
    TwilioFrameSerializer
    | TelnyxFrameSerializer
    | PlivoFrameSerializer
    | ExotelFrameSerializer
    | VonageFrameSerializer
)


def pcm(*samples: int) -> bytes:
    return struct.pack(f"<{len(samples)}h", *samples)


def samples_of(data: bytes) -> list[int]:
    return list(struct.unpack(f"<{len(data) // 2}h", data))


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def sine(rate: int, seconds: float, freq: float = 440.0, amplitude: int = 8000) -> bytes:
    n = int(rate * seconds)
    return pcm(*(round(amplitude * math.sin(2 * math.pi * freq * i / rate)) for i in range(n)))


def rms(data: bytes) -> float:
    values = samples_of(data)
    return math.sqrt(sum(v * v for v in values) / len(values))


def chunks(data: bytes, size: int) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def out(audio: bytes, rate: int = 8000, channels: int = 1) -> OutputAudioRawFrame:
    return OutputAudioRawFrame(audio=audio, sample_rate=rate, num_channels=channels)


def all_serializers(sample_rate: int = 8000) -> list[AnySerializer]:
    """One of each, at the provider's rate (no resampling), ids configured."""
    return [
        TwilioFrameSerializer("MZ1", "CA1", sample_rate=sample_rate),
        TelnyxFrameSerializer("st-1", sample_rate=sample_rate),
        PlivoFrameSerializer("pl-1", "call-1", sample_rate=sample_rate),
        ExotelFrameSerializer("ex-1", "excall-1", sample_rate=sample_rate),
        VonageFrameSerializer(vonage_sample_rate=8000, sample_rate=sample_rate),
    ]


IDS = ["twilio", "telnyx", "plivo", "exotel", "vonage"]


@pytest.fixture(params=range(len(IDS)), ids=IDS)
def serializer(request: pytest.FixtureRequest) -> AnySerializer:
    """Each provider at its own rate (built per test: soxr objects must not outlive it)."""
    return all_serializers()[int(request.param)]


@pytest.fixture(params=range(len(IDS)), ids=IDS)
def serializer_16k(request: pytest.FixtureRequest) -> AnySerializer:
    """Each provider, for an application at 16 kHz."""
    return all_serializers(sample_rate=16000)[int(request.param)]


# -- codecs -----------------------------------------------------------------------------------


def test_mulaw_known_vectors() -> None:
    assert codecs.encode("PCMU", pcm(0, 1000, -1000, 32767, -32768)) == bytes(
        [0xFF, 0xCE, 0x4E, 0x80, 0x00]
    )
    assert samples_of(codecs.decode("PCMU", bytes([0xFF, 0x00, 0x80, 0x7F]))) == [
        0,
        -32124,
        32124,
        0,
    ]


def test_alaw_known_vectors() -> None:
    assert codecs.encode("PCMA", pcm(0, 1000, -1000)) == bytes([0xD5, 0xFA, 0x7A])
    assert samples_of(codecs.decode("PCMA", bytes([0xD5, 0x55]))) == [8, -8]


def test_l16_passes_through_and_refuses_half_samples() -> None:
    assert codecs.encode("L16", pcm(1, -1)) == pcm(1, -1)
    assert codecs.decode("L16", pcm(1, -1)) == pcm(1, -1)
    with pytest.raises(SerializationError, match="odd length 3"):
        codecs.decode("L16", b"\x00\x01\x02")


def test_g711_round_trip_error_is_small() -> None:
    # Below 4096 both laws step by at most 128 (mu-law's segment 4, A-law's 5): an error of half
    # a step, plus what dropping the low bits (14 bits for mu-law, 13 for A-law) adds.
    signal = sine(8000, 0.05, amplitude=3000)
    encodings: tuple[codecs.Encoding, ...] = ("PCMU", "PCMA")
    for encoding in encodings:
        back = codecs.decode(encoding, codecs.encode(encoding, signal))
        worst = max(abs(a - b) for a, b in zip(samples_of(signal), samples_of(back), strict=True))
        assert worst <= 64 + 8, (encoding, worst)


def test_resampler_passes_through_at_equal_rates() -> None:
    resampler = codecs.StreamResampler(8000, 8000)
    assert resampler.process(pcm(1, 2, 3)) == pcm(1, 2, 3)
    resampler.clear()  # nothing to clear


@pytest.mark.parametrize(("low", "high"), [(8000, 16000), (8000, 24000), (16000, 24000)])
def test_resampler_up_and_down_keeps_length_and_energy(low: int, high: int) -> None:
    signal = sine(low, 1.0)
    up = codecs.StreamResampler(low, high)
    down = codecs.StreamResampler(high, low)
    raised = b"".join(up.process(piece) for piece in chunks(signal, low // 50 * 2))
    assert up.process(b"") == b""
    back = b"".join(down.process(piece) for piece in chunks(raised, high // 50 * 2))
    # The stream holds back its filter delay and a block (at most ~150 ms here), never more.
    assert len(signal) * high // low - len(raised) < high * 0.15 * 2
    assert len(signal) - len(back) < low * 0.3 * 2
    # Steady-state energy is kept: a sine's RMS is amplitude / sqrt(2).
    assert rms(raised[len(raised) // 2 :]) == pytest.approx(8000 / math.sqrt(2), rel=0.05)
    assert rms(back[len(back) // 2 :]) == pytest.approx(8000 / math.sqrt(2), rel=0.05)


def test_resampler_clear_starts_a_new_signal() -> None:
    resampler = codecs.StreamResampler(16000, 8000)
    fresh = codecs.StreamResampler(16000, 8000)
    loud = sine(16000, 0.5, amplitude=20000)
    for piece in chunks(loud, 640):
        resampler.process(piece)
    resampler.clear()
    quiet = bytes(16000)
    assert resampler.process(quiet) == fresh.process(quiet)


def test_audioop_import_is_silent() -> None:
    # filterwarnings=error: audioop's DeprecationWarning (3.11, 3.12) would fail this.
    script = (
        "import warnings; warnings.simplefilter('error');"
        "from wavewire.core.serializers._codecs import require_audioop;"
        "assert require_audioop().lin2ulaw(b'\\0\\0', 2) == b'\\xff'"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr


def test_importing_wavewire_does_not_import_the_extra() -> None:
    script = (
        "import sys, wavewire.core.serializers, wavewire.core.server;"
        "print(sorted({'soxr', 'numpy', 'audioop'} & set(sys.modules)))"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


@pytest.fixture
def fresh_imports() -> Iterator[None]:
    codecs.require_audioop.cache_clear()
    codecs.require_soxr.cache_clear()
    yield
    codecs.require_audioop.cache_clear()
    codecs.require_soxr.cache_clear()


@pytest.mark.usefixtures("fresh_imports")
def test_missing_audioop_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "audioop", None)
    with pytest.raises(ImportError, match=r'pip install "wavewire\[telephony\]"'):
        TwilioFrameSerializer("MZ1", sample_rate=8000)
    # Exotel and Vonage carry PCM16: they need no audioop.
    ExotelFrameSerializer("ex", sample_rate=8000)


@pytest.mark.usefixtures("fresh_imports")
def test_missing_soxr_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "soxr", None)
    with pytest.raises(ImportError, match=r'pip install "wavewire\[telephony\]"'):
        TwilioFrameSerializer("MZ1", sample_rate=16000)
    # At the provider's rate there is nothing to resample.
    assert TwilioFrameSerializer("MZ1", sample_rate=8000).sample_rate == 8000


# -- constructors and per-session state -------------------------------------------------------


def test_constructors_validate() -> None:
    with pytest.raises(ValueError, match="sample_rate must be a positive int"):
        TwilioFrameSerializer(sample_rate=0)
    with pytest.raises(ValueError, match="provider sample rate"):
        TwilioFrameSerializer(twilio_sample_rate=True)
    with pytest.raises(TypeError, match="stream id must be a str"):
        TwilioFrameSerializer(123)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="inbound_encoding must be 'PCMU' or 'PCMA'"):
        TelnyxFrameSerializer(inbound_encoding="L16")
    with pytest.raises(ValueError, match="outbound_encoding must be 'PCMU' or 'PCMA'"):
        TelnyxFrameSerializer(outbound_encoding="G722")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="sent_encoding must be one of"):
        TelephonySerializer(
            received_encoding="PCMU",
            sent_encoding="G722",  # type: ignore[arg-type]
            provider_sample_rate=8000,
            sample_rate=8000,
            stream_id=None,
            call_id=None,
            ignore_rtvi_messages=True,
            config={},
        )
    with pytest.raises(TypeError, match="ignore_rtvi_messages must be a bool"):
        PlivoFrameSerializer(ignore_rtvi_messages=1)  # type: ignore[arg-type]


def test_base_leaves_the_messages_to_providers() -> None:
    base = TelephonySerializer(
        received_encoding="L16",
        sent_encoding="L16",
        provider_sample_rate=8000,
        sample_rate=8000,
        stream_id=None,
        call_id=None,
        ignore_rtvi_messages=True,
        config={},
    )
    with pytest.raises(NotImplementedError):
        base.serialize(out(pcm(0)))
    with pytest.raises(NotImplementedError):
        base.serialize(InterruptionFrame())


def test_serializers_are_frame_serializers(serializer: AnySerializer) -> None:
    assert isinstance(serializer, FrameSerializer)
    assert serializer.sample_rate == 8000
    assert serializer.provider_sample_rate == 8000
    assert serializer.received_encoding == serializer.sent_encoding
    assert repr(serializer).startswith(f"{type(serializer).__name__}(")
    session = session_serializer(serializer)
    assert type(session) is type(serializer) and session is not serializer
    assert repr(session) == repr(serializer)


def test_for_session_forgets_learned_ids() -> None:
    configured = TwilioFrameSerializer(sample_rate=8000)
    first = configured.for_session()
    start = {"event": "start", "start": {"streamSid": "MZa", "callSid": "CA"}}
    first.deserialize(json.dumps(start))
    assert (first.stream_id, first.call_id) == ("MZa", "CA")
    second = configured.for_session()
    assert (second.stream_id, second.call_id, configured.stream_id) == (None, None, None)
    with pytest.raises(SerializationError, match="needs the stream id"):
        second.serialize(out(pcm(0, 0)))


def test_repr_shows_configuration() -> None:
    assert repr(TelnyxFrameSerializer("s", "PCMA", sample_rate=8000)) == (
        "TelnyxFrameSerializer(stream_id='s', outbound_encoding='PCMA', inbound_encoding='PCMU',"
        " call_control_id=None, telnyx_sample_rate=8000, sample_rate=8000,"
        " ignore_rtvi_messages=True)"
    )


# -- Twilio -----------------------------------------------------------------------------------

TWILIO_CONNECTED = '{"event": "connected", "protocol": "Call", "version": "1.0.0"}'
TWILIO_START = json.dumps(
    {
        "event": "start",
        "sequenceNumber": "1",
        "start": {
            "accountSid": "AC123",
            "streamSid": "MZ18ad3ab5a668481ce02b83e7395059f0",
            "callSid": "CA123",
            "tracks": ["inbound"],
            "customParameters": {"caller": "alice"},
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
        },
        "streamSid": "MZ18ad3ab5a668481ce02b83e7395059f0",
    }
)


def test_twilio_wire_format() -> None:
    twilio = TwilioFrameSerializer(sample_rate=8000).for_session()
    connected = twilio.deserialize(TWILIO_CONNECTED)
    assert isinstance(connected, InputTransportMessageFrame)
    assert connected.message == {"event": "connected", "protocol": "Call", "version": "1.0.0"}
    start = twilio.deserialize(TWILIO_START)
    assert isinstance(start, InputTransportMessageFrame)
    assert start.message["start"]["customParameters"] == {"caller": "alice"}
    assert twilio.stream_id == "MZ18ad3ab5a668481ce02b83e7395059f0"
    assert twilio.call_id == "CA123"

    media = twilio.deserialize(
        '{"event": "media", "sequenceNumber": "3", "media": {"track": "inbound", "chunk": "1",'
        ' "timestamp": "5", "payload": "/wCAfw=="}, "streamSid": "MZ18ad3ab5a668"}'
    )
    assert media == InputAudioRawFrame(audio=pcm(0, -32124, 32124, 0), sample_rate=8000)
    dtmf = twilio.deserialize(
        '{"event": "dtmf", "streamSid": "MZ1", "sequenceNumber": "5",'
        ' "dtmf": {"track": "inbound_track", "digit": "#"}}'
    )
    assert dtmf == InputDTMFFrame(button="#")
    mark = twilio.deserialize('{"event": "mark", "streamSid": "MZ1", "mark": {"name": "m1"}}')
    assert isinstance(mark, InputTransportMessageFrame) and mark.message["mark"] == {"name": "m1"}
    stop = twilio.deserialize('{"event": "stop", "stop": {"callSid": "CA123"}}')
    assert isinstance(stop, InputTransportMessageFrame)

    assert twilio.serialize(out(pcm(0, 0, 1000, -1000))) == (
        '{"event": "media", "streamSid": "MZ18ad3ab5a668481ce02b83e7395059f0",'
        ' "media": {"payload": "///OTg=="}}'
    )
    assert twilio.serialize(InterruptionFrame()) == (
        '{"event": "clear", "streamSid": "MZ18ad3ab5a668481ce02b83e7395059f0"}'
    )
    mark_out = {"event": "mark", "streamSid": "MZ1", "mark": {"name": "done"}}
    assert twilio.serialize(OutputTransportMessageFrame(message=mark_out)) == json.dumps(mark_out)
    assert twilio.serialize(OutputTransportMessageUrgentFrame(message=[1])) == "[1]"


def test_twilio_media_payload_is_base64_mulaw() -> None:
    twilio = TwilioFrameSerializer("MZ1", sample_rate=8000)
    sent = twilio.serialize(out(pcm(0, 1000, -1000, 32767, -32768)))
    assert isinstance(sent, str)
    payload = json.loads(sent)["media"]["payload"]
    assert base64.b64decode(payload) == bytes([0xFF, 0xCE, 0x4E, 0x80, 0x00])


def test_twilio_start_stream_sid_from_top_level() -> None:
    twilio = TwilioFrameSerializer(sample_rate=8000)
    twilio.deserialize('{"event": "start", "streamSid": "MZtop", "start": {}}')
    assert (twilio.stream_id, twilio.call_id) == ("MZtop", None)
    twilio.deserialize('{"event": "start", "start": {}}')  # no id: the known one stays
    assert twilio.stream_id == "MZtop"


def test_twilio_needs_the_stream_sid_for_media_and_clear() -> None:
    twilio = TwilioFrameSerializer(sample_rate=8000)
    with pytest.raises(SerializationError, match="Twilio's media message needs the stream id"):
        twilio.serialize(out(pcm(0)))
    # No media can have gone out without the sid: there is nothing to clear.
    assert twilio.serialize(InterruptionFrame()) is None


# -- Telnyx -----------------------------------------------------------------------------------


def test_telnyx_wire_format() -> None:
    telnyx = TelnyxFrameSerializer(sample_rate=8000)
    start = telnyx.deserialize(
        json.dumps(
            {
                "event": "start",
                "sequence_number": "1",
                "start": {
                    "user_id": "u",
                    "call_control_id": "v3:abc",
                    "client_state": "aGF2ZSBhIG5pY2UgZGF5ID1d",
                    "media_format": {"encoding": "PCMU", "sample_rate": 8000, "channels": 1},
                },
                "stream_id": "32de0dea-53cb-4b21-89a4-9282a59e6e8b",
            }
        )
    )
    assert isinstance(start, InputTransportMessageFrame)
    assert telnyx.stream_id == "32de0dea-53cb-4b21-89a4-9282a59e6e8b"
    assert telnyx.call_id == "v3:abc"
    media = telnyx.deserialize(
        '{"event": "media", "sequence_number": "4", "media": {"track": "inbound", "chunk": "2",'
        ' "timestamp": "5", "payload": "/wCAfw=="}, "stream_id": "32de0dea"}'
    )
    assert media == InputAudioRawFrame(audio=pcm(0, -32124, 32124, 0), sample_rate=8000)
    dtmf = telnyx.deserialize(
        '{"event": "dtmf", "stream_id": "s", "occurred_at": "2022-06-08T13:21:09.000Z",'
        ' "sequence_number": "7", "dtmf": {"digit": "5"}}'
    )
    assert dtmf == InputDTMFFrame(button="5")
    assert telnyx.serialize(out(pcm(0, 1000))) == json.dumps(
        {"event": "media", "media": {"payload": b64(bytes([0xFF, 0xCE]))}}
    )
    assert telnyx.serialize(InterruptionFrame()) == '{"event": "clear"}'


def test_telnyx_pcma_per_direction() -> None:
    # Pipecat's meaning: inbound_encoding is what goes into Telnyx (sent), outbound_encoding
    # what comes out of it (received).
    telnyx = TelnyxFrameSerializer(
        outbound_encoding="PCMU", inbound_encoding="PCMA", sample_rate=8000
    )
    assert (telnyx.sent_encoding, telnyx.received_encoding) == ("PCMA", "PCMU")
    assert (telnyx.inbound_encoding, telnyx.outbound_encoding) == ("PCMA", "PCMU")
    sent = telnyx.serialize(out(pcm(0, 1000, -1000)))
    assert isinstance(sent, str)
    assert base64.b64decode(json.loads(sent)["media"]["payload"]) == bytes([0xD5, 0xFA, 0x7A])
    media = telnyx.deserialize(json.dumps({"event": "media", "media": {"payload": "/wCAfw=="}}))
    assert media == InputAudioRawFrame(audio=pcm(0, -32124, 32124, 0), sample_rate=8000)
    telnyx = TelnyxFrameSerializer(outbound_encoding="PCMA", sample_rate=8000)
    media = telnyx.deserialize(json.dumps({"event": "media", "media": {"payload": "1VU="}}))
    assert media == InputAudioRawFrame(audio=pcm(8, -8), sample_rate=8000)
    sent = telnyx.serialize(out(pcm(0, 1000)))
    assert isinstance(sent, str)
    assert base64.b64decode(json.loads(sent)["media"]["payload"]) == bytes([0xFF, 0xCE])


def test_telnyx_sends_before_start() -> None:
    # Telnyx's media and clear carry no stream id: nothing to wait for.
    telnyx = TelnyxFrameSerializer(sample_rate=8000)
    assert telnyx.serialize(out(pcm(0))) == '{"event": "media", "media": {"payload": "/w=="}}'


# -- Plivo ------------------------------------------------------------------------------------


def test_plivo_wire_format() -> None:
    plivo = PlivoFrameSerializer(sample_rate=8000)
    assert plivo.serialize(InterruptionFrame()) is None  # no stream id yet: nothing to clear
    start = plivo.deserialize(
        json.dumps(
            {
                "event": "start",
                "sequenceNumber": 0,
                "start": {
                    "callId": "c-1",
                    "streamId": "s-1",
                    "accountId": "a",
                    "tracks": ["inbound"],
                    "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000},
                },
                "extra_headers": "{}",
            }
        )
    )
    assert isinstance(start, InputTransportMessageFrame)
    assert (plivo.stream_id, plivo.call_id) == ("s-1", "c-1")
    media = plivo.deserialize(
        '{"event": "media", "sequenceNumber": 2, "streamId": "s-1", "media": {"track": "inbound",'
        ' "timestamp": "1", "chunk": 1, "payload": "/wCAfw=="}, "extra_headers": "{}"}'
    )
    assert media == InputAudioRawFrame(audio=pcm(0, -32124, 32124, 0), sample_rate=8000)
    dtmf = plivo.deserialize('{"event": "dtmf", "streamId": "s-1", "dtmf": {"digit": "*"}}')
    assert dtmf == InputDTMFFrame(button="*")
    played = plivo.deserialize('{"event": "playedStream", "streamId": "s-1", "name": "cp"}')
    assert isinstance(played, InputTransportMessageFrame) and played.message["name"] == "cp"
    assert plivo.serialize(out(pcm(0, 1000))) == json.dumps(
        {
            "event": "playAudio",
            "media": {"contentType": "audio/x-mulaw", "sampleRate": 8000, "payload": "/84="},
            "streamId": "s-1",
        }
    )
    assert plivo.serialize(InterruptionFrame()) == '{"event": "clearAudio", "streamId": "s-1"}'


def test_plivo_start_stream_id_from_top_level() -> None:
    plivo = PlivoFrameSerializer(sample_rate=8000)
    plivo.deserialize('{"event": "start", "streamId": "top", "start": {}}')
    assert plivo.stream_id == "top"


# -- Exotel -----------------------------------------------------------------------------------


def test_exotel_wire_format() -> None:
    exotel = ExotelFrameSerializer(sample_rate=8000)
    with pytest.raises(SerializationError, match="Exotel's media message needs the stream id"):
        exotel.serialize(out(pcm(1)))
    assert isinstance(exotel.deserialize('{"event": "connected"}'), InputTransportMessageFrame)
    exotel.deserialize(
        json.dumps(
            {
                "event": "start",
                "sequence_number": 1,
                "stream_sid": "ex-top",
                "start": {
                    "stream_sid": "ex-123",
                    "call_sid": "call-9",
                    "account_sid": "acc",
                    "from": "+911",
                    "to": "+912",
                    "custom_parameters": {},
                    "media_format": {"encoding": "base64", "sample_rate": "8000"},
                },
            }
        )
    )
    assert (exotel.stream_id, exotel.call_id) == ("ex-123", "call-9")
    media = exotel.deserialize(
        json.dumps(
            {
                "event": "media",
                "sequence_number": 3,
                "stream_sid": "ex-123",
                "media": {"chunk": 1, "timestamp": "100", "payload": b64(pcm(1, -2, 300))},
            }
        )
    )
    assert media == InputAudioRawFrame(audio=pcm(1, -2, 300), sample_rate=8000)
    dtmf = exotel.deserialize(
        '{"event": "dtmf", "stream_sid": "ex-123", "dtmf": {"duration": "50", "digit": "9"}}'
    )
    assert dtmf == InputDTMFFrame(button="9")
    assert exotel.serialize(out(pcm(1, -2))) == (
        '{"event": "media", "stream_sid": "ex-123", "media": {"payload": "AQD+/w=="}}'
    )
    assert exotel.serialize(InterruptionFrame()) == '{"event": "clear", "stream_sid": "ex-123"}'


def test_exotel_start_stream_sid_from_top_level_and_odd_payload() -> None:
    exotel = ExotelFrameSerializer(sample_rate=8000)
    exotel.deserialize('{"event": "start", "stream_sid": "top", "start": {}}')
    assert exotel.stream_id == "top"
    with pytest.raises(SerializationError, match="odd length"):
        exotel.deserialize(json.dumps({"event": "media", "media": {"payload": b64(b"abc")}}))


# -- Vonage -----------------------------------------------------------------------------------


def test_vonage_wire_format() -> None:
    vonage = VonageFrameSerializer(sample_rate=16000)
    assert vonage.provider_sample_rate == 16000
    connected = vonage.deserialize(
        '{"event": "websocket:connected", "content-type": "audio/l16;rate=16000", "caller": "x"}'
    )
    assert isinstance(connected, InputTransportMessageFrame)
    assert connected.message["caller"] == "x"
    assert vonage.provider_sample_rate == 16000
    assert vonage.deserialize(pcm(5, -5)) == InputAudioRawFrame(audio=pcm(5, -5), sample_rate=16000)
    assert vonage.deserialize(b"") is None
    assert vonage.deserialize('{"event": "websocket:dtmf", "digit": "1", "duration": 260}') == (
        InputDTMFFrame(button="1")
    )
    assert vonage.deserialize('{"event": "websocket:dtmf", "dtmf": {"digit": "0"}}') == (
        InputDTMFFrame(button="0")
    )
    cleared = vonage.deserialize('{"event": "websocket:cleared"}')
    assert isinstance(cleared, InputTransportMessageFrame)
    assert isinstance(vonage.deserialize('{"no": "event"}'), InputTransportMessageFrame)
    assert vonage.serialize(out(pcm(7, -7), rate=16000)) == pcm(7, -7)
    assert vonage.serialize(InterruptionFrame()) == '{"action": "clear"}'
    notify = {"action": "notify", "payload": {"n": 1}}
    assert vonage.serialize(OutputTransportMessageFrame(message=notify)) == json.dumps(notify)
    with pytest.raises(SerializationError, match="odd length"):
        vonage.deserialize(b"\x01")


def test_vonage_adopts_the_rate_the_call_announces() -> None:
    vonage = VonageFrameSerializer(vonage_sample_rate=16000, sample_rate=8000)
    for content_type in ("audio/l16;rate=0", "audio/l16"):
        connected = {"event": "websocket:connected", "content-type": content_type}
        vonage.deserialize(json.dumps(connected))
        assert vonage.provider_sample_rate == 16000
    vonage.deserialize('{"event": "websocket:connected"}')
    assert vonage.provider_sample_rate == 16000
    vonage.serialize(out(pcm(0, 0), rate=8000))  # an outgoing resampler to 16 kHz exists now
    vonage.deserialize('{"event": "websocket:connected", "content-type": "audio/l16; rate=8000"}')
    assert vonage.provider_sample_rate == 8000
    # No resampling left: 8 kHz application audio goes out as is, and comes in as is.
    assert vonage.serialize(out(pcm(3, 4), rate=8000)) == pcm(3, 4)
    assert vonage.deserialize(pcm(3, 4)) == InputAudioRawFrame(audio=pcm(3, 4), sample_rate=8000)


# -- shared behaviour -------------------------------------------------------------------------


def test_frames_not_sent(serializer: AnySerializer) -> None:
    for frame in (TextFrame(text="hi"), EndFrame(), CancelFrame()):
        assert serializer.serialize(frame) is None


def test_audio_that_cannot_go_on_a_phone_line(serializer: AnySerializer) -> None:
    with pytest.raises(SerializationError, match="mono audio"):
        serializer.serialize(out(pcm(0, 0), channels=2))
    with pytest.raises(SerializationError, match="whole 16-bit samples"):
        serializer.serialize(out(b"\x00"))
    with pytest.raises(SerializationError, match="not JSON-serializable"):
        serializer.serialize(OutputTransportMessageFrame(message={"x": math.nan}))


def test_malformed_messages(serializer: AnySerializer) -> None:
    bad: list[tuple[str | bytes, str]] = [
        ("not json", "not valid JSON"),
        ("[1, 2]", "not a JSON object"),
    ]
    if not isinstance(serializer, VonageFrameSerializer):
        bad += [
            (b"\xff\xfe", "not UTF-8"),
            ("{}", "'event' is not a string in the message"),
            ('{"event": "media"}', "'media' is not a JSON object in the 'media' event"),
            ('{"event": "media", "media": {"payload": 5}}', "'payload' is not a string"),
            ('{"event": "media", "media": {"payload": "@@"}}', "'payload' is not base64"),
            ('{"event": "media", "media": {"payload": "é"}}', "'payload' is not base64"),
            ('{"event": "dtmf", "dtmf": []}', "'dtmf' is not a JSON object"),
            ('{"event": "start"}', "'start' is not a JSON object"),
            ('{"event": "dtmf", "dtmf": {"digit": "x"}}', "not a DTMF key"),
        ]
    else:
        bad += [
            ('{"event": "websocket:dtmf", "digit": 10}', "'digit' is not a string"),
            ('{"event": "websocket:dtmf", "digit": true}', "'digit' is not a string"),
            ('{"event": "websocket:dtmf", "digit": "x"}', "not a DTMF key"),
            ('{"event": "websocket:dtmf"}', "'dtmf' is not a JSON object"),
            ('{"event": "websocket:connected", "content-type": 1}', "'content-type' is not"),
        ]
    for data, match in bad:
        with pytest.raises(SerializationError, match=match):
            serializer.deserialize(data)


def test_json_bytes_are_accepted(serializer: AnySerializer) -> None:
    if isinstance(serializer, VonageFrameSerializer):
        pytest.skip("Vonage's binary messages are audio")
    frame = serializer.deserialize(b'{"event": "stop"}')
    assert isinstance(frame, InputTransportMessageFrame)
    assert frame.message == {"event": "stop"}
    assert serializer.deserialize('{"event": "future-event", "x": 1}') == (
        InputTransportMessageFrame(message={"event": "future-event", "x": 1})
    )


def _media_message(serializer: AnySerializer, audio: bytes) -> str | bytes:
    """A received media message carrying ``audio`` (provider rate, PCM16 before encoding)."""
    if isinstance(serializer, VonageFrameSerializer):
        return audio
    encoded = codecs.encode(serializer.received_encoding, audio)
    return json.dumps({"event": "media", "media": {"payload": b64(encoded)}})


def test_resampling_8k_to_16k_and_back(serializer_16k: AnySerializer) -> None:
    serializer = serializer_16k
    signal = sine(8000, 1.0, amplitude=6000)
    received = []
    for piece in chunks(signal, 320):  # 20 ms messages, as the providers send
        frame = serializer.deserialize(_media_message(serializer, piece))
        if frame is not None:
            assert isinstance(frame, InputAudioRawFrame)
            assert frame.sample_rate == 16000
            received.append(frame.audio)
    upsampled = b"".join(received)
    assert 2 * len(signal) - len(upsampled) < 16000 * 0.15 * 2
    assert rms(upsampled[len(upsampled) // 2 :]) == pytest.approx(rms(signal), rel=0.05)

    sent = []
    for piece in chunks(upsampled, 640):
        message = serializer.serialize(out(piece, rate=16000))
        if message is not None:
            sent.append(message)
    wire = b"".join(_wire_audio(serializer, message) for message in sent)
    back = codecs.decode(serializer.sent_encoding, wire)
    assert len(upsampled) // 2 - len(back) < 8000 * 0.15 * 2
    assert rms(back[len(back) // 2 :]) == pytest.approx(rms(signal), rel=0.05)


def _wire_audio(serializer: AnySerializer, message: str | bytes) -> bytes:
    if isinstance(message, bytes):
        return message
    media = json.loads(message)["media"]
    assert isinstance(media, dict)
    return base64.b64decode(media["payload"])


def test_interruption_clears_and_resets_the_outgoing_resampler(serializer: AnySerializer) -> None:
    loud = sine(24000, 0.5, amplitude=20000)
    for piece in chunks(loud, 960):
        serializer.serialize(out(piece, rate=24000))
    clear = serializer.serialize(InterruptionFrame())
    assert isinstance(clear, str)
    assert "clear" in clear
    # After the clear, silence comes out as silence: no tail of the interrupted speech.
    silence = bytes(960 * 4)
    message = serializer.serialize(out(silence, rate=24000))
    if message is not None:
        audio = codecs.decode(serializer.sent_encoding, _wire_audio(serializer, message))
        assert set(audio) == {0}


def test_output_rate_change_restarts_the_resampler(serializer: AnySerializer) -> None:
    assert serializer.serialize(out(pcm(0) * 160, rate=8000)) is not None
    for _ in range(20):
        serializer.serialize(out(bytes(640), rate=16000))
    assert serializer.serialize(out(pcm(0) * 160, rate=8000)) is not None


# -- fuzz: only SerializationError, ever -------------------------------------------------------

JSON_SCALARS = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
EVENTS = st.sampled_from(
    ["media", "dtmf", "start", "stop", "mark", "connected", "websocket:dtmf", "websocket:connected"]
)
FIELDS = st.sampled_from(
    ["media", "dtmf", "start", "payload", "digit", "streamSid", "stream_id", "streamId",
     "stream_sid", "content-type"]
)  # fmt: skip
EVENT_MESSAGES = st.builds(
    lambda event, fields: json.dumps({"event": event, **fields}),
    EVENTS,
    st.dictionaries(
        FIELDS,
        JSON_VALUES
        | st.dictionaries(FIELDS, JSON_VALUES | st.text(alphabet="/+=AQ#1", max_size=12)),
        max_size=3,
    ),
)


def _check_deserialize(data: str | bytes) -> None:
    for serializer in all_serializers(sample_rate=16000):
        try:
            frame = serializer.deserialize(data)
        except SerializationError:
            continue
        assert frame is None or isinstance(frame, Frame)


@given(st.text() | st.binary())
def test_fuzz_arbitrary_messages(data: str | bytes) -> None:
    _check_deserialize(data)


@given(EVENT_MESSAGES)
def test_fuzz_event_shaped_messages(data: str) -> None:
    _check_deserialize(data)
    _check_deserialize(data.encode())


def test_dtmf_frame_validates() -> None:
    assert InputDTMFFrame(button="D").button == "D"
    for button in ("", "12", "x"):
        with pytest.raises(ValueError, match="not a DTMF key"):
            InputDTMFFrame(button=button)


def test_interruption_through_the_core_outbound() -> None:
    from wavewire.core.session.outbound import Outbound

    outbound = Outbound(session_serializer(TwilioFrameSerializer("MZ9", sample_rate=8000)), None)
    messages, taken = outbound.send(InterruptionFrame(), 0.0)
    assert (messages, taken) == (['{"event": "clear", "streamSid": "MZ9"}'], True)
