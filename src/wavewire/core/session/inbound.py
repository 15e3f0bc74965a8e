"""Turning one inbound message into an event, for both roles: a frame, or a counted drop."""

from __future__ import annotations

from wavewire.core.events import ConnectionInfo, FrameReceived, MessageDropped
from wavewire.core.serializers.base import FrameSerializer


def deserialize_message(
    serializer: FrameSerializer, connection: ConnectionInfo, data: bytes | str, dropped: int
) -> FrameReceived | MessageDropped | None:
    """The event for ``data``: ``FrameReceived``, ``MessageDropped`` (the serializer failed;
    ``dropped`` is the count before this one), or None when the serializer ignores it.

    Any exception from the serializer drops just this message: one bad message must not end the
    session (in Pipecat it does).
    """
    try:
        frame = serializer.deserialize(data)
    except Exception as exc:
        detail = f"{type(exc).__name__}: {exc}"
        return MessageDropped(connection=connection, detail=detail, dropped_total=dropped + 1)
    return None if frame is None else FrameReceived(connection=connection, frame=frame)
