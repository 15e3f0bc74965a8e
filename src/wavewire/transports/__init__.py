"""Pipecat-style transports built on the core and the adapters."""

from __future__ import annotations

from wavewire.transports.params import TransportParams, WebsocketServerParams
from wavewire.transports.server import ClientHandle, WebsocketServerTransport
from wavewire.transports.streams import FrameInput, FrameOutput

__all__ = [
    "ClientHandle",
    "FrameInput",
    "FrameOutput",
    "TransportParams",
    "WebsocketServerParams",
    "WebsocketServerTransport",
]
