"""The application's ends of a transport: frames in (``FrameInput``) and out (``FrameOutput``)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream

from wavewire.core.frames import Frame

__all__ = ["FrameInput", "FrameOutput"]


class FrameInput:
    """Async-iterable of received frames; ends when the client (or the transport) is gone."""

    def __init__(self, receive: MemoryObjectReceiveStream[Frame]) -> None:
        self._receive = receive

    def __aiter__(self) -> FrameInput:
        return self

    async def __anext__(self) -> Frame:
        try:
            return await self._receive.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            raise StopAsyncIteration from None

    async def receive(self) -> Frame:
        """The next frame; ``anyio.EndOfStream`` once there will be no more."""
        try:
            return await self._receive.receive()
        except anyio.ClosedResourceError:
            raise anyio.EndOfStream from None


class FrameOutput:
    """Sends frames to a client, in order; ``send`` waits while that client's output buffer
    is full (so memory stays bounded)."""

    def __init__(self, send: Callable[[Frame], Awaitable[None]]) -> None:
        self._send = send

    async def send(self, frame: Frame) -> None:
        await self._send(frame)
