"""wavewire: real-time audio and data over WebSockets."""

from __future__ import annotations

from wavewire.adapters.anyio_client import ConnectError
from wavewire.adapters.errors import ConnectionClosed
from wavewire.core.admission import (
    Accept,
    HandshakeRequest,
    HttpRequest,
    HttpResponse,
    Reject,
    SessionKey,
)
from wavewire.core.errors import (
    HandshakeError,
    HandshakeRejected,
    HandshakeTimeout,
    InvalidHandshake,
    InvalidURI,
)
from wavewire.core.frames import (
    AudioRawFrame,
    CancelFrame,
    EndFrame,
    Frame,
    InputAudioRawFrame,
    InputDTMFFrame,
    InputTransportMessageFrame,
    InterruptionFrame,
    OutputAudioRawFrame,
    OutputTransportMessageFrame,
    OutputTransportMessageUrgentFrame,
    TextFrame,
    TranscriptionFrame,
    TTSStoppedFrame,
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
from wavewire.transports.client import ClientConnection, WebsocketClientTransport
from wavewire.transports.params import ReconnectPolicy, WebsocketClientParams

__all__ = [
    "Accept",
    "AudioRawFrame",
    "CancelFrame",
    "ClientConnection",
    "ClientHandle",
    "ConnectError",
    "ConnectionClosed",
    "EndFrame",
    "Frame",
    "FrameInput",
    "FrameOutput",
    "FrameSerializer",
    "HandshakeError",
    "HandshakeRejected",
    "HandshakeRequest",
    "HandshakeTimeout",
    "HttpRequest",
    "HttpResponse",
    "InputAudioRawFrame",
    "InputDTMFFrame",
    "InputTransportMessageFrame",
    "InterruptionFrame",
    "InvalidHandshake",
    "InvalidURI",
    "OutputAudioRawFrame",
    "OutputTransportMessageFrame",
    "OutputTransportMessageUrgentFrame",
    "ProtobufFrameSerializer",
    "RawFrameSerializer",
    "ReconnectPolicy",
    "Reject",
    "SerializationError",
    "SessionKey",
    "TTSStoppedFrame",
    "TextFrame",
    "TranscriptionFrame",
    "TransportParams",
    "WebsocketClientParams",
    "WebsocketClientTransport",
    "WebsocketServerParams",
    "WebsocketServerTransport",
]
