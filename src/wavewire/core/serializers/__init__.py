"""Frame serializers: frames to WebSocket messages and back.

:class:`ProtobufFrameSerializer` speaks Pipecat's protobuf wire format (the default);
:class:`RawFrameSerializer` speaks raw PCM16 and JSON, for peers without protobuf. The telephony
serializers (:class:`TwilioFrameSerializer`, :class:`TelnyxFrameSerializer`,
:class:`PlivoFrameSerializer`, :class:`ExotelFrameSerializer`, :class:`VonageFrameSerializer`)
speak phone providers' media streams; they need ``pip install "wavewire[telephony]"`` when
created, not when imported.
"""

from __future__ import annotations

from wavewire.core.serializers.base import FrameSerializer, SerializationError
from wavewire.core.serializers.exotel import ExotelFrameSerializer
from wavewire.core.serializers.plivo import PlivoFrameSerializer
from wavewire.core.serializers.protobuf import ProtobufFrameSerializer
from wavewire.core.serializers.raw import RawFrameSerializer
from wavewire.core.serializers.telnyx import TelnyxFrameSerializer
from wavewire.core.serializers.twilio import TwilioFrameSerializer
from wavewire.core.serializers.vonage import VonageFrameSerializer

__all__ = [
    "ExotelFrameSerializer",
    "FrameSerializer",
    "PlivoFrameSerializer",
    "ProtobufFrameSerializer",
    "RawFrameSerializer",
    "SerializationError",
    "TelnyxFrameSerializer",
    "TwilioFrameSerializer",
    "VonageFrameSerializer",
]
