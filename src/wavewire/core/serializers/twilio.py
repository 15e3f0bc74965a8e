"""Twilio Media Streams (bidirectional, ``<Connect><Stream>``), as Pipecat's
``TwilioFrameSerializer``. Needs ``pip install "wavewire[telephony]"``.

Every message is JSON text; audio is base64 G.711 mu-law at 8 kHz, mono. Received:

- ``{"event": "connected", "protocol": "Call", "version": "1.0.0"}``, then
  ``{"event": "start", "streamSid": "MZ...", "start": {"streamSid": "MZ...", "callSid":
  "CA...", "accountSid": ..., "customParameters": {...}, "mediaFormat": {...}}, ...}``: the
  stream and call sids are kept; both become :class:`InputTransportMessageFrame`.
- ``{"event": "media", "streamSid": ..., "media": {"track": "inbound", "payload": "<base64>",
  ...}}``: :class:`InputAudioRawFrame` at ``sample_rate``.
- ``{"event": "dtmf", "dtmf": {"track": "inbound_track", "digit": "1"}, ...}``:
  :class:`InputDTMFFrame`.
- ``mark`` (a mark the application sent has played), ``stop`` and anything else:
  :class:`InputTransportMessageFrame`.

Sent: ``{"event": "media", "streamSid": ..., "media": {"payload": "<base64>"}}`` for audio,
``{"event": "clear", "streamSid": ...}`` for :class:`InterruptionFrame`, and an
:class:`OutputTransportMessageFrame`'s JSON as is (a ``mark``: ``{"event": "mark",
"streamSid": ..., "mark": {"name": ...}}``). Media and clear need the stream sid: configured,
or learned from ``start`` (Twilio sends it first; its id replaces a configured one). Before
that, media raises :class:`SerializationError` and clear sends nothing (Pipecat sends
``null``; see :mod:`._telephony`). Twilio cannot send DTMF into the call over the stream.

Pipecat's serializer can also hang the call up through Twilio's REST API when the pipeline
ends; that is I/O, which the core does not do: the application calls the REST API itself.

Stateful: the core uses ``for_session()`` (see :mod:`._telephony`).
"""

from __future__ import annotations

from wavewire.core.serializers._telephony import MediaStreamSerializer

__all__ = ["TwilioFrameSerializer"]


class TwilioFrameSerializer(MediaStreamSerializer):
    """Twilio Media Streams (see the module docstring)."""

    provider = "Twilio"
    stream_key = "streamSid"
    call_key = "callSid"

    def __init__(
        self,
        stream_sid: str | None = None,
        call_sid: str | None = None,
        *,
        twilio_sample_rate: int = 8000,
        sample_rate: int = 16000,
        ignore_rtvi_messages: bool = True,
    ) -> None:
        super().__init__(
            received_encoding="PCMU",
            sent_encoding="PCMU",
            provider_sample_rate=twilio_sample_rate,
            sample_rate=sample_rate,
            stream_id=stream_sid,
            call_id=call_sid,
            ignore_rtvi_messages=ignore_rtvi_messages,
            config={
                "stream_sid": stream_sid,
                "call_sid": call_sid,
                "twilio_sample_rate": twilio_sample_rate,
                "sample_rate": sample_rate,
                "ignore_rtvi_messages": ignore_rtvi_messages,
            },
        )
