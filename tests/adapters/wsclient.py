"""A test WebSocket client: wavewire's core ``ClientProtocol`` over an anyio TCP stream, so
adapter tests run on trio as well as asyncio. Deliberately tiny: no timers, no backpressure."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TypeVar

import anyio
import anyio.abc

from wavewire.core.client import ClientProtocol
from wavewire.core.events import ClientEvent, ConnectFailed, Disconnected, FrameReceived
from wavewire.core.frames import Frame

E = TypeVar("E", bound=ClientEvent)


class WsClient:
    def __init__(self, stream: anyio.abc.SocketStream, protocol: ClientProtocol) -> None:
        self.stream = stream
        self.protocol = protocol
        self.events: list[ClientEvent] = []
        self._seen = 0
        self._changed = anyio.Event()
        self._lock = anyio.Lock()
        self.socket_closed = False

    async def flush(self) -> None:
        async with self._lock:
            for transmit in self.protocol.data_to_send():
                if self.socket_closed:
                    break
                if transmit.data:
                    await self.stream.send(transmit.data)
                if transmit.close:
                    self.socket_closed = True
                    await self.stream.aclose()
            self.events += self.protocol.events_received()
            self._changed.set()

    async def read_loop(self) -> None:
        while not self.socket_closed:
            try:
                data = await self.stream.receive()
            except (anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError):
                self.protocol.receive_eof(anyio.current_time())
                await self.flush()
                return
            self.protocol.receive_data(data, anyio.current_time())
            await self.flush()

    async def next(self, kind: type[E]) -> E:
        """The next not yet consumed event of type ``kind`` (earlier others are skipped)."""
        while True:
            while self._seen < len(self.events):
                event = self.events[self._seen]
                self._seen += 1
                if isinstance(event, kind):
                    return event
            self._changed = anyio.Event()
            await self._changed.wait()

    async def next_frame(self) -> Frame:
        return (await self.next(FrameReceived)).frame

    async def send(self, frame: Frame) -> None:
        assert self.protocol.send_frame(frame, anyio.current_time())
        await self.flush()

    async def close(self, code: int = 1000) -> Disconnected:
        self.protocol.close(anyio.current_time(), code)
        await self.flush()
        return await self.next(Disconnected)

    async def abort(self) -> None:
        """Drop the TCP connection without a close frame."""
        self.socket_closed = True
        await anyio.aclose_forcefully(self.stream)


@asynccontextmanager
async def connect(port: int, path: str = "/ws") -> AsyncIterator[WsClient]:
    """Connect and complete the handshake; ``ConnectFailed`` fails the test."""
    stream = await anyio.connect_tcp("127.0.0.1", port)
    protocol = ClientProtocol(
        f"ws://127.0.0.1:{port}{path}", random_bytes=os.urandom, now=anyio.current_time()
    )
    client = WsClient(stream, protocol)
    async with stream, anyio.create_task_group() as tg:
        await client.flush()
        tg.start_soon(client.read_loop)
        while not client.events:
            client._changed = anyio.Event()
            await client._changed.wait()
        assert not isinstance(client.events[0], ConnectFailed), client.events[0]
        yield client
        tg.cancel_scope.cancel()
