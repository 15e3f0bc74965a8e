"""The client core: one connection to a WebSocket server, from the upgrade request to the close.

Create it with the URI, the config and a random source (adapters pass the OS random source; the core
never reads one itself), then send ``data_to_send()`` on a fresh TCP connection to
``uri.host``/``uri.port`` (TLS for ``wss``) and feed what comes back. Exactly one of
``ConnectFailed`` or ``Connected`` comes; after ``Connected``, exactly one ``Disconnected``.
"""

from __future__ import annotations

from .config import ClientConfig
from .errors import HandshakeError, InvalidState
from .events import (
    ClientEvent,
    Connected,
    ConnectFailed,
    ConnectionId,
    ConnectionInfo,
    Disconnected,
    MessageDropped,
)
from .frames import Frame
from .protocol.connection import (
    Connection,
    Ended,
    HandshakeDone,
    MessageIn,
    Opened,
    State,
    Transmit,
)
from .protocol.framing import MaskSource
from .protocol.handshake import ClientHandshake, HandshakeAccepted, WebSocketURI, parse_uri
from .serializers.base import session_serializer
from .session.audio import AudioStats
from .session.inbound import deserialize_message
from .session.outbound import Outbound

__all__ = ["ClientProtocol"]


class ClientProtocol:
    """Sans-IO WebSocket client for one connection. See the module docstring."""

    def __init__(
        self,
        uri: str,
        config: ClientConfig | None = None,
        *,
        random_bytes: MaskSource,
        now: float,
    ) -> None:
        self.uri: WebSocketURI = parse_uri(uri)
        self.config = config if config is not None else ClientConfig()
        handshake = ClientHandshake(self.uri, self.config, random_bytes)
        self._connection = Connection(
            ConnectionId(1), self.config, handshake, now, mask_source=random_bytes
        )
        self._events: list[ClientEvent] = []
        self._outbound = Outbound(session_serializer(self.config.serializer), self.config.audio_out)
        self._info: ConnectionInfo | None = None
        self._dropped = 0

    # --- inputs ------------------------------------------------------------------------------

    def receive_data(self, data: bytes, now: float) -> None:
        """Bytes read from the socket. Never raises for anything the server sent."""
        self._connection.receive_data(data, now)
        self._settle()

    def receive_eof(self, now: float) -> None:
        self._connection.receive_eof(now)
        self._settle()

    def connection_lost(self, now: float) -> None:
        self._connection.connection_lost(now)
        self._settle()

    def handle_timer(self, now: float) -> None:
        deadline = self._outbound_deadline()
        if deadline is not None and now >= deadline:
            self._write(self._outbound.take_due(now), now)
        deadline = self._connection.next_deadline()
        if deadline is not None and now >= deadline:
            self._connection.handle_timer(now)
            self._settle()

    # --- commands ----------------------------------------------------------------------------

    def send_frame(self, frame: Frame, now: float) -> bool:
        """Send ``frame``, through audio pacing if ``audio_out`` is set
        (``core/session/outbound.py``).

        False if the serializer has no message for this frame kind. ``InvalidState`` unless
        connected; ``ValueError`` for audio in another format than the output's;
        ``AudioBufferFull`` while the audio queue is full (wait for ``audio_writable``).
        """
        if self._connection.state is not State.OPEN:
            raise InvalidState(f"cannot send on a connection that is {self.state.value}")
        messages, taken = self._outbound.send(frame, now)
        self._write(messages, now)
        return taken

    @property
    def audio_stats(self) -> AudioStats | None:
        """The output audio counters (underruns, stalls, drops), or None without ``audio_out``."""
        return self._outbound.stats

    @property
    def audio_writable(self) -> bool:
        """Whether the audio queue would accept audio now."""
        return self._outbound.writable

    def send_message(self, data: bytes | str) -> None:
        """Queue one raw message: binary for bytes, text for str."""
        self._connection.send_message(data)

    def close(self, now: float, code: int = 1000, reason: str = "") -> None:
        """Start the close handshake (abort, if still connecting). Idempotent."""
        self._connection.close(code, reason, now)
        self._settle()

    # --- outputs -----------------------------------------------------------------------------

    def data_to_send(self) -> list[Transmit]:
        transmit = self._connection.take_output()
        return [] if transmit is None else [transmit]

    def events_received(self) -> list[ClientEvent]:
        events, self._events = self._events, []
        return events

    def next_deadline(self) -> float | None:
        deadlines = [
            d
            for d in (self._connection.next_deadline(), self._outbound_deadline())
            if d is not None
        ]
        return min(deadlines) if deadlines else None

    @property
    def state(self) -> State:
        return self._connection.state

    @property
    def connection(self) -> ConnectionInfo | None:
        """What is known of the connection once ``Connected``."""
        return self._info

    # --- internals ---------------------------------------------------------------------------

    def _outbound_deadline(self) -> float | None:
        # Output is paced only while open: once closing, queued audio is never sent.
        if self._connection.state is not State.OPEN:
            return None
        return self._outbound.next_deadline()

    def _write(self, messages: list[bytes | str], now: float) -> None:
        assert self._info is not None  # only an open connection sends
        self._events += self._outbound.take_events(self._info)
        for data in messages:
            self._connection.send_message(data)
        if self._outbound.finished and self._connection.state is State.OPEN:
            # EndFrame drained (close after the last chunk) or CancelFrame (drop and close now).
            self._connection.close(1000, "", now, drop_pending=self._outbound.cancelled)
        self._settle()

    def _settle(self) -> None:
        for event in self._connection.take_events():  # handling these emits no more
            if isinstance(event, Opened):
                upgrade = self._connection.upgrade
                assert isinstance(upgrade, HandshakeAccepted)
                self._info = ConnectionInfo(
                    id=self._connection.id,
                    remote=(self.uri.host, self.uri.port),
                    path=self.uri.resource,
                    headers=upgrade.headers,
                    subprotocol=upgrade.subprotocol,
                )
                self._events.append(Connected(connection=self._info))
            elif isinstance(event, MessageIn):
                self._deliver(event.data)
            elif isinstance(event, Ended):
                assert self._info is not None
                self._events.append(
                    Disconnected(
                        connection=self._info,
                        code=event.code,
                        reason=event.reason,
                        cause=event.cause,
                    )
                )
            else:
                assert isinstance(event, HandshakeDone)
                error = event.error if event.error is not None else HandshakeError(event.detail)
                self._events.append(ConnectFailed(error=error))

    def _deliver(self, data: bytes | str) -> None:
        assert self._info is not None
        serializer = self._outbound.serializer
        event = deserialize_message(serializer, self._info, data, self._dropped)
        if isinstance(event, MessageDropped):
            self._dropped = event.dropped_total
        if event is not None:
            self._events.append(event)
