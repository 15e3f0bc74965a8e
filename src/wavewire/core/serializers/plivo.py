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
"payload": "<base64>"}, "streamId": ...}`` for audio: the shape Pipecat sends. Plivo's
documentation of ``playAudio`` lists only ``event`` and ``media`` (``contentType``,
``sampleRate``, ``payload``), so ``streamId`` is optional: it is sent once known (configured,
or learned from ``start``, which Plivo sends first) and left out before, rather than sent as
``null``. ``{"event": "clearAudio", "streamId": ...}`` for :class:`InterruptionFrame` (nothing
before the stream id is known: see :mod:`._telephony`), and an
:class:`OutputTransportMessageFrame`'s JSON as is (a ``checkpoint``: ``{"event":
"checkpoint", "streamId": ..., "name": ...}``). Plivo cannot send DTMF into the call over the
stream; hanging up is a REST call for the application.

Stateful: the core uses ``for_session()`` (see :mod:`._telephony`).
"""

from __future__ import annotations

import json

from wavewire.core.frames import Frame
from wavewire.core.serializers._telephony import (
    JSONObject,
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
        ignore_rtvi_messages: bool = True,
    ) -> None:
        super().__init__(
            received_encoding="PCMU",
            sent_encoding="PCMU",
            provider_sample_rate=plivo_sample_rate,
            sample_rate=sample_rate,
            stream_id=stream_id,
            call_id=call_id,
            ignore_rtvi_messages=ignore_rtvi_messages,
            config={
                "stream_id": stream_id,
                "call_id": call_id,
                "plivo_sample_rate": plivo_sample_rate,
                "sample_rate": sample_rate,
                "ignore_rtvi_messages": ignore_rtvi_messages,
            },
        )

    def _media_message(self, audio: bytes) -> str:
        message: JSONObject = {
            "event": "playAudio",
            "media": {
                "contentType": "audio/x-mulaw",
                "sampleRate": self.provider_sample_rate,
                "payload": encode_payload(audio),
            },
        }
        # Plivo documents playAudio without it; Pipecat sends it (Plivo accepts both).
        if self.stream_id is not None:
            message["streamId"] = self.stream_id
        return json.dumps(message)

    def _clear_message(self) -> str | None:
        # Without the stream id there is no clearAudio to address (see _telephony).
        if self.stream_id is None:
            return None
        return json.dumps({"event": "clearAudio", "streamId": self.stream_id})

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
