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
configured, or learned from ``start`` (its id replaces a configured one). Before that, media
raises :class:`SerializationError` and clear sends nothing (see :mod:`._telephony`). Exotel
plays audio in multiples of 320 bytes (20 ms at 8 kHz): send 20 ms output chunks, or a
multiple. Exotel cannot send DTMF into the call over the stream.

Stateful: the core uses ``for_session()`` (see :mod:`._telephony`).
"""

from __future__ import annotations

from wavewire.core.serializers._telephony import MediaStreamSerializer

__all__ = ["ExotelFrameSerializer"]


class ExotelFrameSerializer(MediaStreamSerializer):
    """Exotel voicebot streams (see the module docstring)."""

    provider = "Exotel"
    stream_key = "stream_sid"
    call_key = "call_sid"

    def __init__(
        self,
        stream_sid: str | None = None,
        call_sid: str | None = None,
        *,
        exotel_sample_rate: int = 8000,
        sample_rate: int = 16000,
        ignore_rtvi_messages: bool = True,
    ) -> None:
        super().__init__(
            received_encoding="L16",
            sent_encoding="L16",
            provider_sample_rate=exotel_sample_rate,
            sample_rate=sample_rate,
            stream_id=stream_sid,
            call_id=call_sid,
            ignore_rtvi_messages=ignore_rtvi_messages,
            config={
                "stream_sid": stream_sid,
                "call_sid": call_sid,
                "exotel_sample_rate": exotel_sample_rate,
                "sample_rate": sample_rate,
                "ignore_rtvi_messages": ignore_rtvi_messages,
            },
        )
