"""wavewire: real-time audio and data over WebSockets."""

from __future__ import annotations

from wavewire.adapters.errors import ConnectionClosed
from wavewire.core.frames import (
    AudioRawFrame,
    CancelFrame,
    EndFrame,
    Frame,
    InputAudioRawFrame,
    InputTransportMessageFrame,
    InterruptionFrame,
    OutputAudioRawFrame,
    OutputTransportMessageFrame,
    OutputTransportMessageUrgentFrame,
    TextFrame,
    TranscriptionFrame,
)
from wavewire.core.serializers import (
    FrameSerializer,
    ProtobufFrameSerializer,
    RawFrameSerializer,
    SerializationError,
)
from wavewire.transports import (
    ClientHandle,
    FrameInput,
    FrameOutput,
    TransportParams,
    WebsocketServerParams,
    WebsocketServerTransport,
)

__all__ = [
    "AudioRawFrame",
    "CancelFrame",
    "ClientHandle",
    "ConnectionClosed",
    "EndFrame",
    "Frame",
    "FrameInput",
    "FrameOutput",
    "FrameSerializer",
    "InputAudioRawFrame",
    "InputTransportMessageFrame",
    "InterruptionFrame",
    "OutputAudioRawFrame",
    "OutputTransportMessageFrame",
    "OutputTransportMessageUrgentFrame",
    "ProtobufFrameSerializer",
    "RawFrameSerializer",
    "SerializationError",
    "TextFrame",
    "TranscriptionFrame",
    "TransportParams",
    "WebsocketServerParams",
    "WebsocketServerTransport",
]
