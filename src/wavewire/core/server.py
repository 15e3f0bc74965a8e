"""The server core: ``ServerProtocol``, wavewire's own wire composed with the session layer.

Two layers meet here through the ``Link`` seam (``core/link.py``):

* the protocol layer (``core/protocol/``): one ``Connection`` per TCP connection -- the h11
  handshake (admission by ``core/admission.py``), wsproto framing, keepalive, the close
  handshake, open/close timeouts -- turning bytes into link events and link commands into bytes;
* the session layer (``core/session/sessions.py``, ``Sessions``): adoption, the client policy
  (``replace``/``reject``/``multi``), session timers, paced output, inbound deserialization.

``ServerProtocol`` owns the connections, reports their ``Opened``/``MessageIn``/``Ended`` to the
sessions, collects the bytes the sessions' commands produced, and merges both layers' timers
into one ``next_deadline``. ``HandshakeFailed`` (a connection that never opened) is its own.

Usage by an adapter: ``connection_made(now)`` for each accepted socket, then feed
``receive_data``/``receive_eof``/``connection_lost``/``handle_timer``; after *every* call,
write out ``data_to_send()``, dispatch ``events_received()`` and re-arm a timer for
``next_deadline()``.
"""

from __future__ import annotations

import heapq
import itertools

from .admission import Load
from .config import ServerConfig
from .errors import InvalidState
from .events import (
    ConnectionId,
    ConnectionInfo,
    DisconnectCause,
    HandshakeFailed,
    ServerEvent,
)
from .frames import Frame
from .link import Ended, MessageIn, Opened
from .protocol.connection import Connection, HandshakeDone, LowEvent, State, Transmit, check_close
from .protocol.handshake import ServerHandshake, Upgraded
from .session.audio import AudioStats
from .session.sessions import (
    DRAIN_CODE,
    DRAIN_REASON,
    REJECTED_CODE,
    REJECTED_REASON,
    REPLACED_REASON,
    Sessions,
)

__all__ = [
    "DRAIN_CODE",
    "DRAIN_REASON",
    "REJECTED_CODE",
    "REJECTED_REASON",
    "REPLACED_REASON",
    "ServerProtocol",
]


class _Stale:
    """The cached next deadline must be recomputed."""


_STALE = _Stale()


class ServerProtocol:
    """Sans-IO WebSocket server for any number of TCP connections. See the module docstring."""

    def __init__(self, config: ServerConfig | None = None) -> None:
        self.config = config if config is not None else ServerConfig()
        self._next_id = 1
        self._connections: dict[ConnectionId, Connection] = {}
        self._events: list[ServerEvent] = []
        self._sessions = Sessions(self.config, self._events)
        # Connections with output or events to collect, in the order they got them.
        self._touched: dict[ConnectionId, None] = {}
        self._shutting_down = False
        # The connections' own timers (open, keepalive, close), one heap entry per connection,
        # invalidated lazily; the sessions keep theirs.
        self._timers: list[tuple[float, int, ConnectionId]] = []
        self._scheduled: dict[ConnectionId, float] = {}
        self._tiebreak = itertools.count()
        # The earliest of those, kept until one moves (_STALE: recompute): the drivers ask
        # after every input, and few inputs move a connection's timer.
        self._next: float | _Stale | None = _STALE
        #: Bytes fed to ``receive_data`` and returned by ``data_to_send``, over all connections.
        self.bytes_received = 0
        self.bytes_sent = 0

    # --- connection inputs -------------------------------------------------------------------

    def connection_made(self, now: float, remote: object = None) -> ConnectionId:
        """Register a new TCP connection; returns its id for the other calls."""
        connection_id = ConnectionId(self._next_id)
        self._next_id += 1
        handshake = ServerHandshake(self.config, remote, self._sessions.load)
        connection = Connection(connection_id, self.config, handshake, now)
        self._connections[connection_id] = connection
        if self._shutting_down:
            connection.abort(now, "server shutting down")
        self._settle(connection, now)  # arms the open timer
        return connection_id

    def receive_data(self, connection_id: ConnectionId, data: bytes, now: float) -> None:
        """Bytes read from the connection. Never raises for anything the peer sent."""
        connection = self._lookup(connection_id)
        self.bytes_received += len(data)
        if connection is not None:
            connection.receive_data(data, now)
            self._settle(connection, now)

    def receive_eof(self, connection_id: ConnectionId, now: float) -> None:
        """The peer closed its side of the connection."""
        connection = self._lookup(connection_id)
        if connection is not None:
            connection.receive_eof(now)
            self._settle(connection, now)

    def connection_lost(self, connection_id: ConnectionId, now: float) -> None:
        """The socket is gone (reset, write failure, or the adapter closed it)."""
        connection = self._lookup(connection_id)
        if connection is not None:
            connection.connection_lost(now)
            self._settle(connection, now)

    def set_writable(self, connection_id: ConnectionId, writable: bool) -> None:
        """The driver's view of the socket: False while the connection's pending output is over
        ``max_output_buffer`` (pongs owed to a ping flood are then held, the latest only), True
        again once under it (the owed pong is then queued: flush)."""
        connection = self._lookup(connection_id)
        if connection is not None:
            connection.set_writable(writable)
            self._touched[connection_id] = None

    def handle_timer(self, now: float) -> None:
        """Fire every deadline at or before ``now``; harmless to call early or often."""
        while (deadline := self.next_deadline()) is not None and now >= deadline:
            if self._sessions.next_deadline() == deadline:
                self._sessions.handle_timer(now)
                self._settle_touched(now)
                continue
            _, _, connection_id = heapq.heappop(self._timers)
            del self._scheduled[connection_id]
            self._next = _STALE
            connection = self._connections[connection_id]
            connection.handle_timer(now)
            self._settle(connection, now)

    # --- application commands ----------------------------------------------------------------

    def send_frame(self, connection_id: ConnectionId, frame: Frame, now: float) -> bool:
        """Send ``frame`` to the session, through its audio pacing if ``audio_out`` is set.

        Returns False if the serializer has no message for this frame kind. Raises
        ``InvalidState`` if the connection is not an open session, ``ValueError`` for audio the
        output cannot take, ``AudioBufferFull`` when the session's audio queue is full (wait
        for ``audio_writable``). See ``core/session/outbound.py`` for each frame kind.
        """
        self._lookup(connection_id)
        taken = self._sessions.send_frame(connection_id, frame, now)
        self._settle_touched(now)
        return taken

    def audio_stats(self, connection_id: ConnectionId) -> AudioStats | None:
        """The session's output audio counters (underruns, stalls, drops), or None without
        ``audio_out``. ``InvalidState`` if the connection is not a session."""
        self._lookup(connection_id)
        return self._sessions.audio_stats(connection_id)

    def audio_writable(self, connection_id: ConnectionId) -> bool:
        """Whether the session's audio queue would accept audio now."""
        self._lookup(connection_id)
        return self._sessions.audio_writable(connection_id)

    def send_message(self, connection_id: ConnectionId, data: bytes | str) -> None:
        """Queue one raw message (binary for bytes, text for str) for the session."""
        self._lookup(connection_id)
        self._sessions.send_message(connection_id, data)
        self._settle_touched(None)

    def close(
        self, connection_id: ConnectionId, now: float, code: int = 1000, reason: str = ""
    ) -> None:
        """Start closing a session; ``ClientDisconnected`` follows when the close completes.

        Idempotent on a session already closing or gone; ``InvalidState`` only for an id this
        server never issued.
        """
        check_close(code, reason)
        self._lookup(connection_id)
        self._sessions.close(connection_id, now, code, reason)
        self._settle_touched(now)

    def shutdown(self, now: float, code: int = 1001, reason: str = "server shutting down") -> None:
        """Close every connection: sessions get ``code``, handshakes in progress are aborted,
        and connections made from now on are refused at once."""
        check_close(code, reason)
        self._shutting_down = True
        self._sessions.shutdown(now, code, reason)
        self._settle_touched(now)
        for connection in list(self._connections.values()):
            if connection.state is State.CONNECTING:
                connection.abort(now, "server shutting down")
            else:  # a rejected or replaced connection still closing: idempotent
                connection.close(code, reason, now, cause=DisconnectCause.SHUTDOWN)
            self._settle(connection, now)

    def drain(self, now: float, deadline: float | None) -> None:
        """Stop adopting: upgrade requests from now on are refused with 503 and
        ``Retry-After`` (``/readyz`` answers 503); sessions run until they end or until
        ``deadline`` (None: until they end; drivers pass ``now + config.drain_timeout``), when
        the rest are closed with 1012 "service restart". ``Drained`` follows once no session is
        left. Connections stay served meanwhile (health checks, close handshakes); call
        ``shutdown`` after ``Drained`` to close what is left."""
        self._sessions.drain(now, deadline)
        self._settle_touched(now)

    @property
    def draining(self) -> bool:
        """``drain`` was called."""
        return self._sessions.draining

    @property
    def drained(self) -> bool:
        """A drain is complete: no session is left."""
        return self._sessions.drained

    def load(self) -> Load:
        """Sessions, the cap and whether draining: what ``/readyz`` reports."""
        return self._sessions.load()

    # --- outputs -----------------------------------------------------------------------------

    def data_to_send(self) -> list[Transmit]:
        """What to write (and close) on which connection, in order; call after every input."""
        transmits = []
        for connection_id in self._touched:
            # Only data_to_send forgets connections, so every touched one is still here.
            connection = self._connections[connection_id]
            transmit = connection.take_output()
            if transmit is not None:
                self.bytes_sent += len(transmit.data)
                transmits.append(transmit)
            if connection.finished:
                del self._connections[connection_id]
        self._touched.clear()
        return transmits

    def events_received(self) -> list[ServerEvent]:
        """Events since the last call, in order."""
        events = list(self._events)
        self._events.clear()  # in place: the sessions append to this same list
        return events

    def next_deadline(self) -> float | None:
        """The earliest time at which ``handle_timer`` has something to do, or None."""
        sessions = self._sessions.next_deadline()
        connections = self._next
        if isinstance(connections, _Stale):
            connections = None
            timers, scheduled = self._timers, self._scheduled
            while timers:
                earliest, _, connection_id = timers[0]
                if scheduled.get(connection_id) == earliest:
                    connections = earliest
                    break
                heapq.heappop(timers)  # stale: rescheduled, fired, or its owner is gone
            self._next = connections
        if connections is None or (sessions is not None and sessions < connections):
            return sessions
        return connections

    @property
    def clients(self) -> tuple[ConnectionInfo, ...]:
        """The adopted sessions, oldest first."""
        return self._sessions.clients

    @property
    def connection_count(self) -> int:
        """TCP connections the core still tracks (handshaking, open, or closing)."""
        return len(self._connections)

    # --- internals ---------------------------------------------------------------------------

    def _lookup(self, connection_id: ConnectionId) -> Connection | None:
        if not 0 < connection_id < self._next_id:
            raise InvalidState(f"connection {connection_id} was never made by this server")
        # A finished connection's late input (or a late command for it) is discarded.
        return self._connections.get(connection_id)

    def _settle(self, connection: Connection, now: float | None) -> None:
        """Apply a connection's link events now, inside the call that caused them."""
        self._touched[connection.id] = None
        # Handling an event can make the connection emit more (a rejected newcomer closed at
        # once ends at once): drain until nothing is left.
        while events := connection.take_events():
            for event in events:
                self._on_event(connection, event, now)
        if not connection.is_open:  # while open, the sessions re-arm their own timers
            self._sessions.reschedule(connection.id)
        self._schedule(connection)
        self._settle_touched(now)

    def _settle_touched(self, now: float | None) -> None:
        """Collect what the sessions' commands did to their connections."""
        for link in self._sessions.take_touched():
            # A session's connection is forgotten only by data_to_send, never within a call.
            self._settle(self._connections[link.id], now)

    def _schedule(self, connection: Connection) -> None:
        """(Re)arm the one timer entry of ``connection`` after anything that may move it."""
        connection_id = connection.id
        deadline = connection.next_deadline()
        if deadline is None:
            if self._scheduled.pop(connection_id, None) is not None:
                self._next = _STALE
        elif self._scheduled.get(connection_id) != deadline:
            self._scheduled[connection_id] = deadline
            heapq.heappush(self._timers, (deadline, next(self._tiebreak), connection_id))
            self._next = _STALE

    def _on_event(self, connection: Connection, event: LowEvent, now: float | None) -> None:
        if isinstance(event, Opened):
            assert now is not None, "a connection opens on input, which comes with the time"
            upgrade = connection.upgrade
            assert isinstance(upgrade, Upgraded)
            # Taken: the 101's bytes and the request object are not kept for the connection's
            # life (about 350 B per idle connection); the session keeps what it needs in info.
            connection.upgrade = None
            request = upgrade.request
            key = self.config.session_key
            info = ConnectionInfo(
                id=connection.id,
                remote=request.remote,
                path=request.path,
                headers=request.headers,
                subprotocol=upgrade.subprotocol,
                session_key=None if key is None else key.of(request),
            )
            self._sessions.adopt(connection, info, now)
        elif isinstance(event, MessageIn):
            self._sessions.receive(connection.id, event.data)
        elif isinstance(event, Ended):
            self._sessions.end(connection.id, event)
        else:
            assert isinstance(event, HandshakeDone)
            if event.failed:
                self._events.append(
                    HandshakeFailed(
                        connection_id=connection.id,
                        status_code=event.status_code,
                        detail=event.detail,
                    )
                )
