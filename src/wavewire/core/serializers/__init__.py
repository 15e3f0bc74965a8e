"""Frame serializers: frames to WebSocket messages and back.

:class:`ProtobufFrameSerializer` speaks Pipecat's protobuf wire format (the default);
:class:`RawFrameSerializer` speaks raw PCM16 and JSON, for peers without protobuf.
"""

from __future__ import annotations

from wavewire.core.serializers.base import FrameSerializer, SerializationError
from wavewire.core.serializers.protobuf import ProtobufFrameSerializer
from wavewire.core.serializers.raw import RawFrameSerializer

__all__ = [
    "FrameSerializer",
    "ProtobufFrameSerializer",
    "RawFrameSerializer",
    "SerializationError",
]
