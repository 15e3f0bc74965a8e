"""The interface between a server driver and the layer above it (the transport).

A driver owns a ``ServerProtocol`` and the sockets; the transport owns handles, streams and
event handlers. ``ServerDriver`` is what the transport calls, ``ServerEventSink`` what the
driver calls back, and ``DriverFactory`` how a driver is made (bound and listening, not yet
serving). Two drivers implement it: ``anyio_server`` (asyncio or trio, through anyio) and
``asyncio_server`` (asyncio's own protocols and transports, asyncio only), so both serve the
same transport classes.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol, TypeVar

import anyio
import anyio.abc

from wavewire.adapters.ratelimit import LogLimiter
from wavewire.core.events import ConnectionId, FrameReceived, ServerEvent
from wavewire.core.frames import Frame
from wavewire.core.server import ServerProtocol

__all__ = [
    "DriverFactory",
    "ListenOptions",
    "ServerDriver",
    "ServerEventSink",
    "split_events",
]


class HoldsFrames(Protocol):
    """A driver's per-connection state: the received frames not yet delivered."""

    frames: list[FrameReceived]


Holder = TypeVar("Holder", bound=HoldsFrames)


def split_events(
    events: Iterable[ServerEvent], holders: Mapping[ConnectionId, Holder]
) -> tuple[list[ServerEvent], list[Holder]]:
    """Every driver's flush step: each received frame onto its connection's ``frames`` (dropped
    for a connection already gone), the other events returned for the sink in core order,
    with the connections that got frames (each once)."""
    rest: list[ServerEvent] = []
    fed: dict[ConnectionId, Holder] = {}
    for event in events:
        if isinstance(event, FrameReceived):
            holder = holders.get(event.connection.id)
            if holder is not None:
                holder.frames.append(event)
                fed[event.connection.id] = holder
        else:
            rest.append(event)
    return rest, list(fed.values())


class ServerEventSink(Protocol):
    def on_events(self, events: list[ServerEvent]) -> None:
        """Every event except ``FrameReceived``, in core order, from inside the flush.

        Must not block or call back into the driver's core-feeding methods.
        """
        ...

    def offer_frame(self, event: FrameReceived) -> bool:
        """Deliver one received frame without waiting, if there is room: False if the frame
        was not taken (the input queue is full), and the driver must ``await on_frame`` for
        it, and for every later frame of that connection, before reading on. True also when
        the frame is dropped (no reader, a replaced client). Called from inside the flush."""
        ...

    async def on_frame(self, event: FrameReceived) -> None:
        """One received frame, awaited by the driver: while this waits, that socket is not
        read (receive backpressure)."""
        ...

    def on_connection_done(self, connection_id: ConnectionId) -> None:
        """The connection's socket is closed and every frame it received was delivered."""
        ...

    def input_pending(self, connection_id: ConnectionId) -> bool:
        """Whether frames from this connection wait, unread, in the input queue they went to.

        The native driver batches a send to the connection to the loop pass's end only then
        (the replies to those frames join it in one write); otherwise it writes at once.
        """
        ...


@dataclass(frozen=True, kw_only=True)
class ListenOptions:
    """Where and how a driver listens; the transport fills it from its parameters."""

    host: str | None
    port: int
    ssl_context: ssl.SSLContext | None = None
    #: Bytes pending per connection above which ``drain`` waits.
    high_water: int = 256 * 1024
    #: Seconds a write may make no progress before the connection is aborted; None: forever.
    write_timeout: float | None = 10.0
    #: Where the driver's per-peer log lines go (shared with the transport's); None: its own.
    log: LogLimiter | None = None


class ServerDriver(Protocol):
    """A running server: what ``WebsocketServerTransport`` needs from a driver.

    Every method that feeds the core (``send_frame``, ``close``) flushes before returning.
    ``ConnectionClosed`` is the only exception a send raises for a connection that is gone.
    """

    @property
    def local_address(self) -> tuple[str, int]:
        """The bound (host, port) of the first listening socket."""
        ...

    async def serve(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Serve connections; ``task_status.started()`` once accepting; return after
        ``shutdown()`` has finished."""
        ...

    async def shutdown(self, code: int = 1001, reason: str = "server shutting down") -> None:
        """Stop accepting, close every connection with ``code``, wait for them (bounded by
        ``close_timeout`` plus a second), then let ``serve`` return."""
        ...

    async def drain_sessions(self) -> None:
        """Stop adopting new sessions (refused with 503; ``/readyz`` 503) and wait until every
        session has ended, those still running at ``drain_timeout`` closed with 1012."""
        ...

    async def aclose(self) -> None:
        """Close the listening sockets (idempotent): for an error before ``serve`` starts."""
        ...

    def send_frame(self, connection_id: ConnectionId, frame: Frame) -> bool:
        """Queue ``frame`` with the driver's clock as ``now``; False if the serializer skips
        it; ``ConnectionClosed`` if the client is not connected; ``AudioBufferFull`` (nothing
        queued) while the session's audio queue is full: ``wait_audio_writable``, then retry."""
        ...

    async def wait_audio_writable(self, connection_id: ConnectionId) -> None:
        """Wait until the session's audio queue accepts audio again (the timer sends chunks,
        or an interruption empties it); ``ConnectionClosed`` if the session ends first."""
        ...

    async def drain(self, connection_id: ConnectionId) -> None:
        """Wait while the connection's pending output is above the high-water mark; a
        checkpoint at least every few calls (a loop of sends cannot starve the event loop)."""
        ...

    def close(self, connection_id: ConnectionId, code: int = 1000, reason: str = "") -> None:
        """Start closing the session (idempotent)."""
        ...

    async def wait_done(self, connection_id: ConnectionId) -> None:
        """Wait until the connection's socket is closed and its frames delivered."""
        ...


class DriverFactory(Protocol):
    async def __call__(
        self, protocol: ServerProtocol, sink: ServerEventSink, options: ListenOptions
    ) -> ServerDriver:
        """Bind and listen (``OSError`` if that fails), without accepting yet."""
        ...
