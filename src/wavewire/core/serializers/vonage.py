"""Vonage Voice API WebSockets (the NCCO ``connect`` action to a ``websocket`` endpoint), as
Pipecat's ``VonageFrameSerializer``. Needs ``pip install "wavewire[telephony]"``.

Audio travels in binary messages as raw 16-bit little-endian PCM, mono, at the rate the NCCO's
``content-type`` asked for (``audio/l16;rate=16000``; 8000 and 24000 also exist); control and
events travel as JSON text. Received:

- A binary message: :class:`InputAudioRawFrame` at ``sample_rate`` (an empty one is ignored).
- ``{"event": "websocket:connected", "content-type": "audio/l16;rate=16000", ...}``, the first
  message (with the NCCO's custom headers): :class:`InputTransportMessageFrame`. Its rate, if
  it differs from ``vonage_sample_rate``, is the one used from then on (``provider_sample_rate``
  says which): it is what the call actually carries, and audio sent at another rate would
  play at the wrong speed. Pipecat keeps the configured rate. The switch is not logged here
  (the core does no I/O, logging included); the application sees it in this frame's
  ``content-type``.
- ``{"event": "websocket:dtmf", "digit": "5", "duration": 260}`` (or the digit in a ``dtmf``
  object; or a number, ``"digit": 5``, read as ``"5"`` as Pipecat does):
  :class:`InputDTMFFrame`.
- ``websocket:cleared``, ``websocket:notify`` and any other JSON object:
  :class:`InputTransportMessageFrame`.

Sent: audio as binary PCM16 at the provider's rate, ``{"action": "clear"}`` for
:class:`InterruptionFrame`, and an :class:`OutputTransportMessageFrame`'s JSON as is (a
``notify``: ``{"action": "notify", "payload": {...}}``). Vonage plays 20 ms messages (640
bytes at 16 kHz): give the output 20 ms chunks (``chunks_10ms=2``) at the provider's rate, so
that no resampling changes their length.

Stateful: the core uses ``for_session()`` (see :mod:`._telephony`).
"""

from __future__ import annotations

import json
import re

from wavewire.core.frames import Frame
from wavewire.core.serializers._telephony import (
    TelephonySerializer,
    dtmf_frame,
    event_message,
    get_object,
    get_optional_str,
    get_str,
    load_event,
)

__all__ = ["VonageFrameSerializer"]

_RATE = re.compile(r";\s*rate=(\d{1,6})\b")


class VonageFrameSerializer(TelephonySerializer):
    """Vonage Voice API WebSockets (see the module docstring)."""

    provider = "Vonage"

    def __init__(
        self,
        *,
        vonage_sample_rate: int = 16000,
        sample_rate: int = 16000,
        ignore_rtvi_messages: bool = True,
    ) -> None:
        super().__init__(
            received_encoding="L16",
            sent_encoding="L16",
            provider_sample_rate=vonage_sample_rate,
            sample_rate=sample_rate,
            stream_id=None,
            call_id=None,
            ignore_rtvi_messages=ignore_rtvi_messages,
            config={
                "vonage_sample_rate": vonage_sample_rate,
                "sample_rate": sample_rate,
                "ignore_rtvi_messages": ignore_rtvi_messages,
            },
        )

    def _media_message(self, audio: bytes) -> bytes:
        return audio

    def _clear_message(self) -> str:
        return json.dumps({"action": "clear"})

    def deserialize(self, data: bytes | str) -> Frame | None:
        """Decode a binary audio message or a JSON event (see the module docstring)."""
        if isinstance(data, bytes):
            return self.audio_frame(data)
        message = load_event(data)
        event = message.get("event")
        if event == "websocket:dtmf":
            holder = message if "digit" in message else get_object(message, "dtmf")
            digit = holder.get("digit")
            # A digit as a JSON number (5, not "5") is the same key, as Pipecat reads it.
            if isinstance(digit, int) and not isinstance(digit, bool) and 0 <= digit <= 9:
                return dtmf_frame(str(digit))
            return dtmf_frame(get_str(holder, "digit"))
        if event == "websocket:connected":
            match = _RATE.search(get_optional_str(message, "content-type") or "")
            if match is not None and int(match[1]) > 0:
                self.set_provider_sample_rate(int(match[1]))
        return event_message(message)
