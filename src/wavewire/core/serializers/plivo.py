"""Plivo audio streams (bidirectional, ``<Stream bidirectional="true">``), as Pipecat's
``PlivoFrameSerializer``. Needs ``pip install "wavewire[telephony]"``.

Every message is JSON text; audio is base64 G.711 mu-law (``audio/x-mulaw``) at 8 kHz, mono.
Received:

- ``{"event": "start", "sequenceNumber": 0, "start": {"streamId": ..., "callId": ...,
  "accountId": ..., "tracks": [...], "mediaFormat": {"encoding": "audio/x-mulaw",
  "sampleRate": 8000}}, "extra_headers": ...}``: the stream and call ids are kept;
  :class:`InputTransportMessageFrame`.
- ``{"event": "media", "streamId": ..., "media": {"track": "inbound", "payload":
  "<base64>", ...}}``: :class:`InputAudioRawFrame` at ``sample_rate``.
- ``{"event": "dtmf", "streamId": ..., "dtmf": {"digit": "1", ...}}``: :class:`InputDTMFFrame`.
- ``playedStream`` (a checkpoint has played), ``clearedAudio``, ``stop`` and anything else:
  :class:`InputTransportMessageFrame`.

Sent: ``{"event": "playAudio", "media": {"contentType": "audio/x-mulaw", "sampleRate": 8000,
"payload": "<base64>"}}`` for audio, ``{"event": "clearAudio", "streamId": ...}`` for
:class:`InterruptionFrame` (it needs the stream id: configured, or learned from ``start``;
before that :class:`SerializationError`), and an :class:`OutputTransportMessageFrame`'s JSON as
is (a ``checkpoint``: ``{"event": "checkpoint", "streamId": ..., "name": ...}``). Plivo cannot
send DTMF into the call over the stream; hanging up is a REST call for the application.

Stateful: the core uses ``for_session()`` (see :mod:`._telephony`).
"""

from __future__ import annotations

import json

from wavewire.core.frames import Frame
from wavewire.core.serializers._telephony import (
    TelephonySerializer,
    decode_payload,
    dtmf_frame,
    encode_payload,
    event_message,
    get_object,
    get_optional_str,
    get_str,
    load_event,
)

__all__ = ["PlivoFrameSerializer"]


class PlivoFrameSerializer(TelephonySerializer):
    """Plivo audio streams (see the module docstring)."""

    provider = "Plivo"

    def __init__(
        self,
        stream_id: str | None = None,
        call_id: str | None = None,
        *,
        plivo_sample_rate: int = 8000,
        sample_rate: int = 16000,
    ) -> None:
        super().__init__(
            inbound_encoding="PCMU",
            outbound_encoding="PCMU",
            provider_sample_rate=plivo_sample_rate,
            sample_rate=sample_rate,
            stream_id=stream_id,
            call_id=call_id,
            config={
                "stream_id": stream_id,
                "call_id": call_id,
                "plivo_sample_rate": plivo_sample_rate,
                "sample_rate": sample_rate,
            },
        )

    def _media_message(self, audio: bytes) -> str:
        return json.dumps(
            {
                "event": "playAudio",
                "media": {
                    "contentType": "audio/x-mulaw",
                    "sampleRate": self.provider_sample_rate,
                    "payload": encode_payload(audio),
                },
            }
        )

    def _clear_message(self) -> str:
        return json.dumps({"event": "clearAudio", "streamId": self.require_stream_id("clearAudio")})

    def deserialize(self, data: bytes | str) -> Frame | None:
        """Decode a Plivo event (see the module docstring)."""
        message = load_event(data)
        event = get_str(message, "event")
        if event == "media":
            return self.audio_frame(decode_payload(get_object(message, "media")))
        if event == "dtmf":
            return dtmf_frame(get_str(get_object(message, "dtmf"), "digit"))
        if event == "start":
            start = get_object(message, "start")
            stream_id = get_optional_str(start, "streamId")
            if stream_id is None:
                stream_id = get_optional_str(message, "streamId")
            self.learn_ids(stream_id, get_optional_str(start, "callId"))
        return event_message(message)
