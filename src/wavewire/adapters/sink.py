"""What a server driver tells the layer above it (the transport), whatever the backend.

A driver owns a ``ServerProtocol`` and the sockets; the transport owns handles, streams and
event handlers. The split lets the anyio driver and a native asyncio driver serve the same
transport classes.
"""

from __future__ import annotations

from typing import Protocol

from wavewire.core.events import ConnectionId, FrameReceived, ServerEvent

__all__ = ["ServerEventSink"]


class ServerEventSink(Protocol):
    def on_events(self, events: list[ServerEvent]) -> None:
        """Every event except ``FrameReceived``, in core order, from inside the flush.

        Must not block or call back into the driver's core-feeding methods.
        """
        ...

    async def on_frame(self, event: FrameReceived) -> None:
        """One received frame, awaited by the connection's reader: while this waits, that
        socket is not read (receive backpressure)."""
        ...

    def on_connection_done(self, connection_id: ConnectionId) -> None:
        """The connection's socket is closed and every frame it received was delivered."""
        ...
