"""Telnyx media streaming (bidirectional, RTP over WebSocket as JSON), as Pipecat's
``TelnyxFrameSerializer``. Needs ``pip install "wavewire[telephony]"``.

Every message is JSON text; audio is base64 G.711 at 8 kHz, mono: ``PCMU`` (mu-law) or ``PCMA``
(A-law), chosen per direction. The two keywords are Pipecat's, with Pipecat's meaning, named
from Telnyx's side of the call (into Telnyx, out of Telnyx):

- ``outbound_encoding``: the audio Telnyx streams **to us** (we decode it). Telnyx's
  ``stream_codec`` (the "codec to be used for the streamed audio", the call's own codec by
  default); the ``start`` event reports it as ``start.media_format.encoding``. Pipecat's
  runner passes exactly that value here.
- ``inbound_encoding``: the audio we send **to Telnyx** (we encode it), to be played into the
  call. Telnyx's ``stream_bidirectional_codec`` ("codec for bidirectional streaming RTP
  payloads", default ``PCMU``); the ``start`` event does not report it. Pipecat's runner
  passes ``"PCMU"``.

So a PCMA call streamed with the defaults is ``outbound_encoding="PCMA",
inbound_encoding="PCMU"``. Received:

- ``{"event": "connected", "version": "1.0.0"}``, then ``{"event": "start", "stream_id": ...,
  "start": {"call_control_id": ..., "media_format": {"encoding": "PCMU", "sample_rate": 8000,
  "channels": 1}, ...}}``: the stream id and call control id are kept, and the
  ``media_format.encoding`` (``PCMU`` or ``PCMA``; anything else leaves the configured one)
  replaces ``outbound_encoding`` for the rest of the call: it is what Telnyx streams (Pipecat's
  runner configures the serializer from this same field). Both become
  :class:`InputTransportMessageFrame`.
- ``{"event": "media", "stream_id": ..., "media": {"track": "inbound", "payload": "<base64>",
  ...}}``: :class:`InputAudioRawFrame` at ``sample_rate``.
- ``{"event": "dtmf", "dtmf": {"digit": "1"}, ...}``: :class:`InputDTMFFrame`.
- ``mark``, ``stop``, ``error`` and anything else: :class:`InputTransportMessageFrame`.

Sent: ``{"event": "media", "media": {"payload": "<base64>"}}`` for audio, ``{"event":
"clear"}`` for :class:`InterruptionFrame`, and an :class:`OutputTransportMessageFrame`'s JSON as
is (a ``mark``: ``{"event": "mark", "mark": {"name": ...}}``). None of them needs the stream
id. Telnyx cannot send DTMF into the call over the stream; hanging up (Pipecat's
``auto_hang_up``) is a REST call for the application to make.

Stateful: the core uses ``for_session()`` (see :mod:`._telephony`).
"""

from __future__ import annotations

import json

from wavewire.core.frames import Frame
from wavewire.core.serializers._codecs import Encoding
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

__all__ = ["TelnyxFrameSerializer"]


class TelnyxFrameSerializer(TelephonySerializer):
    """Telnyx media streaming (see the module docstring)."""

    provider = "Telnyx"

    def __init__(
        self,
        stream_id: str | None = None,
        outbound_encoding: Encoding = "PCMU",
        inbound_encoding: Encoding = "PCMU",
        call_control_id: str | None = None,
        *,
        telnyx_sample_rate: int = 8000,
        sample_rate: int = 16000,
        ignore_rtvi_messages: bool = True,
    ) -> None:
        for arg, value in (
            ("inbound_encoding", inbound_encoding),
            ("outbound_encoding", outbound_encoding),
        ):
            if value not in ("PCMU", "PCMA"):
                raise ValueError(f"{arg} must be 'PCMU' or 'PCMA', got {value!r}")
        super().__init__(
            # Pipecat's meaning (see the module docstring): out of Telnyx to us, into Telnyx.
            received_encoding=outbound_encoding,
            sent_encoding=inbound_encoding,
            provider_sample_rate=telnyx_sample_rate,
            sample_rate=sample_rate,
            stream_id=stream_id,
            call_id=call_control_id,
            ignore_rtvi_messages=ignore_rtvi_messages,
            config={
                "stream_id": stream_id,
                "outbound_encoding": outbound_encoding,
                "inbound_encoding": inbound_encoding,
                "call_control_id": call_control_id,
                "telnyx_sample_rate": telnyx_sample_rate,
                "sample_rate": sample_rate,
                "ignore_rtvi_messages": ignore_rtvi_messages,
            },
        )

    def _media_message(self, audio: bytes) -> str:
        return json.dumps({"event": "media", "media": {"payload": encode_payload(audio)}})

    @property
    def inbound_encoding(self) -> Encoding:
        """The encoding of the audio sent into Telnyx (Pipecat's meaning): what we send."""
        return self.sent_encoding

    @property
    def outbound_encoding(self) -> Encoding:
        """The encoding of the audio out of Telnyx (Pipecat's meaning): what we receive."""
        return self.received_encoding

    def _clear_message(self) -> str:
        return json.dumps({"event": "clear"})

    def deserialize(self, data: bytes | str) -> Frame | None:
        """Decode a Telnyx event (see the module docstring)."""
        message = load_event(data)
        event = get_str(message, "event")
        if event == "media":
            return self.audio_frame(decode_payload(get_object(message, "media")))
        if event == "dtmf":
            return dtmf_frame(get_str(get_object(message, "dtmf"), "digit"))
        if event == "start":
            start = get_object(message, "start")
            self.learn_ids(
                get_optional_str(message, "stream_id"), get_optional_str(start, "call_control_id")
            )
            media_format = start.get("media_format")
            if isinstance(media_format, dict):
                encoding = media_format.get("encoding")
                # What the stream really carries wins over the configuration (as the stream
                # id does); an encoding we cannot decode leaves the configured one.
                if encoding == "PCMU" or encoding == "PCMA":
                    self._received_encoding = encoding
        return event_message(message)
