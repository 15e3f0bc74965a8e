"""Exotel voicebot streams (bidirectional, the Voicebot applet), as Pipecat's
``ExotelFrameSerializer``. Needs ``pip install "wavewire[telephony]"``.

Every message is JSON text; audio is base64 raw 16-bit little-endian PCM (``slin``), mono, at
``exotel_sample_rate`` (8 kHz unless the stream URL asks for 16 or 24 kHz). Received:

- ``{"event": "connected"}``, then ``{"event": "start", "sequence_number": 1, "stream_sid":
  ..., "start": {"stream_sid": ..., "call_sid": ..., "account_sid": ..., "from": ..., "to":
  ..., "custom_parameters": {...}, "media_format": {"encoding": "base64", "sample_rate":
  "8000", ...}}}``: the stream and call sids are kept; both become
  :class:`InputTransportMessageFrame`.
- ``{"event": "media", "stream_sid": ..., "media": {"chunk": ..., "timestamp": ...,
  "payload": "<base64>"}}``: :class:`InputAudioRawFrame` at ``sample_rate``.
- ``{"event": "dtmf", "stream_sid": ..., "dtmf": {"digit": "1", "duration": ...}}``:
  :class:`InputDTMFFrame`.
- ``mark``, ``clear``, ``stop`` and anything else: :class:`InputTransportMessageFrame`.

Sent: ``{"event": "media", "stream_sid": ..., "media": {"payload": "<base64>"}}`` for audio,
``{"event": "clear", "stream_sid": ...}`` for :class:`InterruptionFrame`, and an
:class:`OutputTransportMessageFrame`'s JSON as is (a ``mark``: ``{"event": "mark",
"stream_sid": ..., "mark": {"name": ...}}``). Media and clear need the stream sid:
configured, or learned from ``start``; before that :class:`SerializationError`. Exotel
plays audio in multiples of 320 bytes (20 ms at 8 kHz): send 20 ms output chunks, or a
multiple. Exotel cannot send DTMF into the call over the stream.

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

__all__ = ["ExotelFrameSerializer"]


class ExotelFrameSerializer(TelephonySerializer):
    """Exotel voicebot streams (see the module docstring)."""

    provider = "Exotel"

    def __init__(
        self,
        stream_sid: str | None = None,
        call_sid: str | None = None,
        *,
        exotel_sample_rate: int = 8000,
        sample_rate: int = 16000,
    ) -> None:
        super().__init__(
            inbound_encoding="L16",
            outbound_encoding="L16",
            provider_sample_rate=exotel_sample_rate,
            sample_rate=sample_rate,
            stream_id=stream_sid,
            call_id=call_sid,
            config={
                "stream_sid": stream_sid,
                "call_sid": call_sid,
                "exotel_sample_rate": exotel_sample_rate,
                "sample_rate": sample_rate,
            },
        )

    def _check_can_send_media(self) -> None:
        self.require_stream_id("media")

    def _media_message(self, audio: bytes) -> str:
        return json.dumps(
            {
                "event": "media",
                "stream_sid": self.require_stream_id("media"),
                "media": {"payload": encode_payload(audio)},
            }
        )

    def _clear_message(self) -> str:
        return json.dumps({"event": "clear", "stream_sid": self.require_stream_id("clear")})

    def deserialize(self, data: bytes | str) -> Frame | None:
        """Decode an Exotel event (see the module docstring)."""
        message = load_event(data)
        event = get_str(message, "event")
        if event == "media":
            return self.audio_frame(decode_payload(get_object(message, "media")))
        if event == "dtmf":
            return dtmf_frame(get_str(get_object(message, "dtmf"), "digit"))
        if event == "start":
            start = get_object(message, "start")
            stream_sid = get_optional_str(start, "stream_sid")
            if stream_sid is None:
                stream_sid = get_optional_str(message, "stream_sid")
            self.learn_ids(stream_sid, get_optional_str(start, "call_sid"))
        return event_message(message)
