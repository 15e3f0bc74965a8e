"""The telephony serializers against Pipecat's own, the same frames through both, message by
message: equal JSON apart from the audio payloads, and the audio within a stated SNR.

Audio is never bit-identical: Pipecat resamples at soxr ``VHQ`` on int16 samples, wavewire at
``HQ`` on float32 (docs/telephony.md measures both), so the two G.711 streams differ by a code
step here and there. Both are delay-compensated, so sample ``i`` of one lines up with sample
``i`` of the other; their lengths differ by what each resampler holds back. Over the common
length the two must agree to ``MIN_SNR_DB`` (measured: 50-60 dB through G.711, over 90 dB for
PCM16), far above what G.711 itself keeps (about 37 dB).

Where wavewire differs from Pipecat on purpose (control events become
``InputTransportMessageFrame``; Pipecat drops them) the test says so; the full list is
docs/telephony.md's table.

Pipecat is reached through ``importlib`` (its modules come back as ``Any``), so that mypy
--strict checks this file the same way with or without Pipecat installed (the ``type`` env
does not install it) and no mypy override for ``pipecat.*`` is needed.
"""

from __future__ import annotations

import asyncio
import base64
import importlib
import json
import math
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from wavewire.core import frames as ww
from wavewire.core.serializers import (
    ExotelFrameSerializer,
    PlivoFrameSerializer,
    TelnyxFrameSerializer,
    TwilioFrameSerializer,
    VonageFrameSerializer,
)
from wavewire.core.serializers import _codecs as codecs

AnySerializer = (
    TwilioFrameSerializer
    | TelnyxFrameSerializer
    | PlivoFrameSerializer
    | ExotelFrameSerializer
    | VonageFrameSerializer
)

#: Lowest agreement between the two serializers' audio (decoded to PCM16), in dB.
MIN_SNR_DB = 40.0
APP_RATE = 16000

# Pipecat imports audioop, which warns on import (3.11, 3.12) and the suite's warnings are
# errors: import it first, as wavewire does, with that one warning silenced.
codecs.require_audioop()
pc_frames: Any = importlib.import_module("pipecat.frames.frames")
pc_keypad: Any = importlib.import_module("pipecat.audio.dtmf.types")


def pipecat_serializer(name: str, cls: str, *args: Any, **params: Any) -> Any:
    """A Pipecat serializer, set up for a pipeline at ``APP_RATE`` (no hang-up, no wall-clock
    resampler reset: both would make the comparison depend on the network or the clock)."""
    module: Any = importlib.import_module(f"pipecat.serializers.{name}")
    klass = getattr(module, cls)
    settings: dict[str, Any] = {"resampler_clear_after_secs": None, **params}
    if "auto_hang_up" in klass.InputParams.model_fields:
        settings["auto_hang_up"] = False
    serializer = klass(*args, params=klass.InputParams(**settings))
    asyncio.run(serializer.setup(SimpleNamespace(audio_in_sample_rate=APP_RATE)))
    return serializer


def tones(rate: int, seconds: float) -> bytes:
    """Speech-band tones at a speaking level, PCM16."""
    t = np.arange(round(rate * seconds)) / rate
    signal = sum(0.15 * np.sin(2 * math.pi * f * t) for f in (220.0, 700.0, 1900.0, 3100.0))
    return bytes(np.round(np.asarray(signal) * 32767).astype("<i2").tobytes())


def snr_db(reference: bytes, other: bytes) -> float:
    """``other`` against ``reference`` over their common length, in dB."""
    n = min(len(reference), len(other)) // 2
    assert n > 1000, "too little audio to compare"
    a = np.frombuffer(reference[: 2 * n], dtype="<i2").astype(np.float64)
    b = np.frombuffer(other[: 2 * n], dtype="<i2").astype(np.float64)
    noise = float(np.mean((a - b) ** 2))
    return math.inf if noise == 0 else 10 * math.log10(float(np.mean(a**2)) / noise)


class Provider:
    """One provider, configured alike on both sides."""

    def __init__(
        self,
        name: str,
        wavewire: Callable[[], AnySerializer],
        pipecat: Callable[[], Any],
        received: codecs.Encoding,
        sent: codecs.Encoding,
        media_in: Callable[[bytes], str | bytes],
    ) -> None:
        self.name = name
        self.wavewire = wavewire
        self.pipecat = pipecat
        self.received = received
        self.sent = sent
        self.media_in = media_in


def json_media(key: str | None, stream: str | None) -> Callable[[bytes], str]:
    def build(payload: bytes) -> str:
        message: dict[str, Any] = {
            "event": "media",
            "media": {"track": "inbound", "payload": base64.b64encode(payload).decode()},
        }
        if key is not None:
            message[key] = stream
        return json.dumps(message)

    return build


def binary_media(payload: bytes) -> bytes:
    return payload


PROVIDERS = [
    Provider(
        "twilio",
        lambda: TwilioFrameSerializer("MZ1", "CA1", sample_rate=APP_RATE),
        lambda: pipecat_serializer("twilio", "TwilioFrameSerializer", "MZ1", "CA1"),
        "PCMU",
        "PCMU",
        json_media("streamSid", "MZ1"),
    ),
    Provider(
        # A PCMA call, configured as Pipecat's runner does it: outbound_encoding from the start
        # event's media_format (what Telnyx streams to us), inbound_encoding "PCMU".
        "telnyx-pcma",
        lambda: TelnyxFrameSerializer(
            "st-1", outbound_encoding="PCMA", inbound_encoding="PCMU", sample_rate=APP_RATE
        ),
        lambda: pipecat_serializer("telnyx", "TelnyxFrameSerializer", "st-1", "PCMA", "PCMU"),
        "PCMA",
        "PCMU",
        json_media("stream_id", "st-1"),
    ),
    Provider(
        "telnyx-pcmu-in-pcma-out",
        lambda: TelnyxFrameSerializer(
            "st-1", outbound_encoding="PCMU", inbound_encoding="PCMA", sample_rate=APP_RATE
        ),
        lambda: pipecat_serializer("telnyx", "TelnyxFrameSerializer", "st-1", "PCMU", "PCMA"),
        "PCMU",
        "PCMA",
        json_media("stream_id", "st-1"),
    ),
    Provider(
        "plivo",
        lambda: PlivoFrameSerializer("pl-1", "call-1", sample_rate=APP_RATE),
        lambda: pipecat_serializer("plivo", "PlivoFrameSerializer", "pl-1", "call-1"),
        "PCMU",
        "PCMU",
        json_media("streamId", "pl-1"),
    ),
    Provider(
        "exotel",
        lambda: ExotelFrameSerializer("ex-1", "excall-1", sample_rate=APP_RATE),
        lambda: pipecat_serializer("exotel", "ExotelFrameSerializer", "ex-1", "excall-1"),
        "L16",
        "L16",
        json_media("stream_sid", "ex-1"),
    ),
    Provider(
        "vonage",
        lambda: VonageFrameSerializer(vonage_sample_rate=8000, sample_rate=APP_RATE),
        lambda: pipecat_serializer("vonage", "VonageFrameSerializer", vonage_sample_rate=8000),
        "L16",
        "L16",
        binary_media,
    ),
]


@pytest.fixture(params=PROVIDERS, ids=[p.name for p in PROVIDERS])
def provider(request: pytest.FixtureRequest) -> Provider:
    value = request.param
    assert isinstance(value, Provider)
    return value


def pc_serialize(serializer: Any, frame: Any) -> str | bytes | None:
    result: str | bytes | None = asyncio.run(serializer.serialize(frame))
    return result


def pc_deserialize(serializer: Any, data: str | bytes) -> Any:
    return asyncio.run(serializer.deserialize(data))


def split_media(message: str | bytes, encoding: codecs.Encoding) -> tuple[object, bytes]:
    """A media message's structure (payload blanked) and its audio as PCM16."""
    if isinstance(message, bytes):
        return "binary", codecs.decode(encoding, message)
    parsed = json.loads(message)
    payload = base64.b64decode(parsed["media"]["payload"])
    parsed["media"]["payload"] = "<audio>"
    return parsed, codecs.decode(encoding, payload)


def test_sent_audio_matches(provider: Provider) -> None:
    ours, theirs = provider.wavewire(), provider.pipecat()
    speech = tones(APP_RATE, 1.0)
    our_messages, their_messages = [], []
    for start in range(0, len(speech), APP_RATE // 50 * 2):  # 20 ms frames
        piece = speech[start : start + APP_RATE // 50 * 2]
        our_messages.append(
            ours.serialize(ww.OutputAudioRawFrame(audio=piece, sample_rate=APP_RATE))
        )
        their_messages.append(
            pc_serialize(theirs, pc_frames.OutputAudioRawFrame(piece, APP_RATE, 1))
        )
    our_split = [split_media(m, provider.sent) for m in our_messages if m is not None]
    their_split = [split_media(m, provider.sent) for m in their_messages if m is not None]
    # The same message shape, every time (only the payload differs).
    assert {json.dumps(s, sort_keys=True) for s, _ in our_split} == {
        json.dumps(s, sort_keys=True) for s, _ in their_split
    }
    ours_pcm = b"".join(a for _, a in our_split)
    theirs_pcm = b"".join(a for _, a in their_split)
    assert snr_db(theirs_pcm, ours_pcm) >= MIN_SNR_DB
    # And both carry the signal itself (not two copies of the same mistake).
    ideal = tones(8000, 1.0)
    assert snr_db(ideal, ours_pcm) >= 30.0


def test_received_audio_matches(provider: Provider) -> None:
    ours, theirs = provider.wavewire(), provider.pipecat()
    call = codecs.encode(provider.received, tones(8000, 1.0))
    step = 160 * (2 if provider.received == "L16" else 1)  # 20 ms at 8 kHz
    our_audio, their_audio = b"", b""
    for start in range(0, len(call), step):
        data = provider.media_in(call[start : start + step])
        frame = ours.deserialize(data)
        if frame is not None:
            assert isinstance(frame, ww.InputAudioRawFrame)
            assert (frame.sample_rate, frame.num_channels) == (APP_RATE, 1)
            our_audio += frame.audio
        their = pc_deserialize(theirs, data)
        if their is not None:
            assert their.sample_rate == APP_RATE
            their_audio += their.audio
    assert snr_db(their_audio, our_audio) >= MIN_SNR_DB
    assert snr_db(tones(APP_RATE, 1.0), our_audio) >= 30.0


def test_clear_and_transport_messages_match(provider: Provider) -> None:
    ours, theirs = provider.wavewire(), provider.pipecat()
    assert ours.serialize(ww.InterruptionFrame()) == pc_serialize(
        theirs, pc_frames.InterruptionFrame()
    )
    mark = {"event": "mark", "mark": {"name": "m1"}}
    assert ours.serialize(ww.OutputTransportMessageFrame(message=mark)) == pc_serialize(
        theirs, pc_frames.OutputTransportMessageFrame(message=mark)
    )
    rtvi = {"label": "rtvi-ai", "type": "bot-started-speaking"}
    for our_cls, their_cls in (
        (ww.OutputTransportMessageFrame, pc_frames.OutputTransportMessageFrame),
        (ww.OutputTransportMessageUrgentFrame, pc_frames.OutputTransportMessageUrgentFrame),
    ):
        assert ours.serialize(our_cls(message=rtvi)) is None
        assert pc_serialize(theirs, their_cls(message=rtvi)) is None


DTMF = {
    "twilio": '{"event": "dtmf", "streamSid": "MZ1", "dtmf": {"digit": "7"}}',
    "telnyx-pcma": '{"event": "dtmf", "stream_id": "st-1", "dtmf": {"digit": "7"}}',
    "telnyx-pcmu-in-pcma-out": '{"event": "dtmf", "stream_id": "st-1", "dtmf": {"digit": "7"}}',
    "plivo": '{"event": "dtmf", "streamId": "pl-1", "dtmf": {"digit": "7"}}',
    "exotel": '{"event": "dtmf", "stream_sid": "ex-1", "dtmf": {"digit": "7", "duration": "80"}}',
    "vonage": '{"event": "websocket:dtmf", "digit": 7, "duration": 260}',
}


def test_dtmf_matches(provider: Provider) -> None:
    ours, theirs = provider.wavewire(), provider.pipecat()
    data = DTMF[provider.name]
    frame = ours.deserialize(data)
    their = pc_deserialize(theirs, data)
    assert isinstance(frame, ww.InputDTMFFrame)
    assert their.button == pc_keypad.KeypadEntry(frame.button)


def test_control_events_reach_the_application_where_pipecat_drops_them(
    provider: Provider,
) -> None:
    ours, theirs = provider.wavewire(), provider.pipecat()
    event = '{"event": "websocket:cleared"}' if provider.name == "vonage" else '{"event": "stop"}'
    frame = ours.deserialize(event)
    assert isinstance(frame, ww.InputTransportMessageFrame)
    assert frame.message == json.loads(event)
    assert pc_deserialize(theirs, event) is None
