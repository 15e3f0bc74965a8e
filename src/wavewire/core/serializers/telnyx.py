"""Telnyx media streaming (bidirectional, RTP over WebSocket as JSON), as Pipecat's
``TelnyxFrameSerializer``. Needs ``pip install "wavewire[telephony]"``.

Every message is JSON text; audio is base64 G.711 at 8 kHz, mono: ``PCMU`` (mu-law) or ``PCMA``
(A-law), chosen per direction (``inbound_encoding``: what Telnyx streams to us;
``outbound_encoding``: the call's ``stream_bidirectional_codec``). Received:

- ``{"event": "connected", "version": "1.0.0"}``, then ``{"event": "start", "stream_id": ...,
  "start": {"call_control_id": ..., "media_format": {"encoding": "PCMU", "sample_rate": 8000,
  "channels": 1}, ...}}``: the stream id and call control id are kept; both become
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
    ) -> None:
        for arg, value in (
            ("inbound_encoding", inbound_encoding),
            ("outbound_encoding", outbound_encoding),
        ):
            if value not in ("PCMU", "PCMA"):
                raise ValueError(f"{arg} must be 'PCMU' or 'PCMA', got {value!r}")
        super().__init__(
            inbound_encoding=inbound_encoding,
            outbound_encoding=outbound_encoding,
            provider_sample_rate=telnyx_sample_rate,
            sample_rate=sample_rate,
            stream_id=stream_id,
            call_id=call_control_id,
            config={
                "stream_id": stream_id,
                "outbound_encoding": outbound_encoding,
                "inbound_encoding": inbound_encoding,
                "call_control_id": call_control_id,
                "telnyx_sample_rate": telnyx_sample_rate,
                "sample_rate": sample_rate,
            },
        )

    def _media_message(self, audio: bytes) -> str:
        return json.dumps({"event": "media", "media": {"payload": encode_payload(audio)}})

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
        return event_message(message)
