"""The server core: every TCP connection, the sessions adopted from them, and the client policy.

A *session* is the unit: each connection that completes its handshake may be adopted as a
session, with its own session timer, serializer calls and drop counter. The client policy is a
rule applied at the moment of adoption, on top of that:

* ``replace`` (default): the current session is detached at once -- ``ClientDisconnected(old)``
  then ``ClientConnected(new)`` in the same step -- its unsent output is dropped and it gets a
  close frame 1000 "replaced by a newer connection" (1000, not 1001, so that a client with
  reconnect logic does not fight the newcomer), whose handshake finishes in the background,
  bounded by ``close_timeout``. Nothing the old connection does afterwards reaches the
  application.
* ``reject``: the newcomer gets close code 1013 (try again later) and is never adopted; the
  current session is untouched.
* ``multi``: every newcomer is adopted; nothing is replaced.

Usage by an adapter: ``connection_made(now)`` for each accepted socket, then feed
``receive_data``/``receive_eof``/``connection_lost``/``handle_timer``; after *every* call,
write out ``data_to_send()``, dispatch ``events_received()`` and re-arm a timer for
``next_deadline()``.
"""

from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass

from .audio import AudioStats
from .config import ServerConfig
from .connection import (
    Connection,
    Ended,
    HandshakeDone,
    LowEvent,
    MessageIn,
    Opened,
    State,
    Transmit,
    check_close,
)
from .errors import InvalidState
from .events import (
    ClientConnected,
    ClientDisconnected,
    ClientRejected,
    ConnectionId,
    ConnectionInfo,
    DisconnectCause,
    HandshakeFailed,
    MessageDropped,
    ServerEvent,
    SessionTimeout,
)
from .frames import Frame
from .handshake import ServerHandshake, Upgraded
from .inbound import deserialize_message
from .outbound import Outbound
from .serializers.base import session_serializer

__all__ = ["ServerProtocol"]

#: Reason sent in the close frame of a replaced client.
REPLACED_REASON = "replaced by a newer connection"
#: Close code and reason for a newcomer refused under policy ``reject`` (RFC 6455 7.4.1).
REJECTED_CODE, REJECTED_REASON = 1013, "another client is connected"


@dataclass(slots=True)
class _Session:
    info: ConnectionInfo
    timeout_at: float | None
    outbound: Outbound
    dropped: int = 0


class ServerProtocol:
    """Sans-IO WebSocket server for any number of TCP connections. See the module docstring."""

    def __init__(self, config: ServerConfig | None = None) -> None:
        self.config = config if config is not None else ServerConfig()
        self._next_id = 1
        self._connections: dict[ConnectionId, Connection] = {}
        self._sessions: dict[ConnectionId, _Session] = {}
        self._events: list[ServerEvent] = []
        # Connections with output or events to collect, in the order they got them.
        self._touched: dict[ConnectionId, None] = {}
        self._shutting_down = False
        # Timers: one entry per connection id for the earliest of its connection's, its session's
        # and its audio's deadlines, in a heap invalidated lazily, so that next_deadline() and
        # handle_timer() cost O(log n) rather than a scan of every connection.
        self._timers: list[tuple[float, int, ConnectionId]] = []
        self._scheduled: dict[ConnectionId, float] = {}
        self._tiebreak = itertools.count()

    # --- connection inputs -------------------------------------------------------------------

    def connection_made(self, now: float, remote: object = None) -> ConnectionId:
        """Register a new TCP connection; returns its id for the other calls."""
        connection_id = ConnectionId(self._next_id)
        self._next_id += 1
        handshake = ServerHandshake(self.config, remote)
        connection = Connection(connection_id, self.config, handshake, now)
        self._connections[connection_id] = connection
        if self._shutting_down:
            connection.abort(now, "server shutting down")
        self._settle(connection, now)  # arms the open timer
        return connection_id

    def receive_data(self, connection_id: ConnectionId, data: bytes, now: float) -> None:
        """Bytes read from the connection. Never raises for anything the peer sent."""
        connection = self._lookup(connection_id)
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
            _, _, connection_id = heapq.heappop(self._timers)
            del self._scheduled[connection_id]
            self._fire(connection_id, now)

    # --- application commands ----------------------------------------------------------------

    def send_frame(self, connection_id: ConnectionId, frame: Frame, now: float) -> bool:
        """Send ``frame`` to the session, through its audio pacing if ``audio_out`` is set.

        Returns False if the serializer has no message for this frame kind. Raises
        ``InvalidState`` if the connection is not an open session, ``ValueError`` for audio the
        output cannot take, ``AudioBufferFull`` when the session's audio queue is full (wait
        for ``audio_writable``). See ``core/outbound.py`` for each frame kind.
        """
        connection = self._open_session(connection_id)
        session = self._sessions[connection_id]
        messages, taken = session.outbound.send(frame, now)
        self._write(session, connection, messages, now)
        return taken

    def audio_stats(self, connection_id: ConnectionId) -> AudioStats | None:
        """The session's output audio counters (underruns, stalls, drops), or None without
        ``audio_out``. ``InvalidState`` if the connection is not a session."""
        connection = self._lookup(connection_id)
        if connection is None or connection_id not in self._sessions:
            raise InvalidState(f"connection {connection_id} is not a connected client")
        return self._sessions[connection_id].outbound.stats

    def audio_writable(self, connection_id: ConnectionId) -> bool:
        """Whether the session's audio queue would accept audio now."""
        self._open_session(connection_id)
        return self._sessions[connection_id].outbound.writable

    def send_message(self, connection_id: ConnectionId, data: bytes | str) -> None:
        """Queue one raw message (binary for bytes, text for str) for the session."""
        self._open_session(connection_id).send_message(data)
        self._touched[connection_id] = None

    def close(
        self, connection_id: ConnectionId, now: float, code: int = 1000, reason: str = ""
    ) -> None:
        """Start closing a session; ``ClientDisconnected`` follows when the close completes.

        Idempotent on a session already closing or gone; ``InvalidState`` only for an id this
        server never issued.
        """
        check_close(code, reason)
        connection = self._lookup(connection_id)
        if connection is not None and connection_id in self._sessions:
            connection.close(code, reason, now)
            self._settle(connection, now)

    def shutdown(self, now: float, code: int = 1001, reason: str = "server shutting down") -> None:
        """Close every connection: sessions get ``code``, handshakes in progress are aborted,
        and connections made from now on are refused at once."""
        check_close(code, reason)
        self._shutting_down = True
        for connection in list(self._connections.values()):
            if connection.state is State.CONNECTING:
                connection.abort(now, "server shutting down")
            else:
                connection.close(code, reason, now, cause=DisconnectCause.SHUTDOWN)
            self._settle(connection, now)
        for session in self._sessions.values():
            session.timeout_at = None

    # --- outputs -----------------------------------------------------------------------------

    def data_to_send(self) -> list[Transmit]:
        """What to write (and close) on which connection, in order; call after every input."""
        transmits = []
        for connection_id in self._touched:
            # Only data_to_send forgets connections, so every touched one is still here.
            connection = self._connections[connection_id]
            transmit = connection.take_output()
            if transmit is not None:
                transmits.append(transmit)
            if connection.finished:
                del self._connections[connection_id]
        self._touched.clear()
        return transmits

    def events_received(self) -> list[ServerEvent]:
        """Events since the last call, in order."""
        events, self._events = self._events, []
        return events

    def next_deadline(self) -> float | None:
        """The earliest time at which ``handle_timer`` has something to do, or None."""
        while self._timers:
            deadline, _, connection_id = self._timers[0]
            if self._scheduled.get(connection_id) == deadline:
                return deadline
            heapq.heappop(self._timers)  # stale: rescheduled, fired, or its owner is gone
        return None

    @property
    def clients(self) -> tuple[ConnectionInfo, ...]:
        """The adopted sessions, oldest first."""
        return tuple(session.info for session in self._sessions.values())

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

    def _open_session(self, connection_id: ConnectionId) -> Connection:
        connection = self._lookup(connection_id)
        if connection is None or connection_id not in self._sessions:
            raise InvalidState(f"connection {connection_id} is not a connected client")
        if connection.state is not State.OPEN:
            raise InvalidState(f"cannot send on a connection that is {connection.state.value}")
        return connection

    def _settle(self, connection: Connection, now: float) -> None:
        """Apply a connection's low-level events now, inside the call that caused them."""
        self._touched[connection.id] = None
        # Handling an event can make the connection emit more (a rejected newcomer closed at
        # once ends at once): drain until nothing is left.
        while events := connection.take_events():
            for event in events:
                self._on_event(connection, event, now)
        self._schedule(connection.id)

    def _schedule(self, connection_id: ConnectionId) -> None:
        """(Re)arm the one timer entry of ``connection_id`` after anything that may move it."""
        deadlines = []
        connection = self._connections.get(connection_id)
        if connection is not None and (deadline := connection.next_deadline()) is not None:
            deadlines.append(deadline)
        session = self._sessions.get(connection_id)
        if session is not None:
            if session.timeout_at is not None:
                deadlines.append(session.timeout_at)
            # Output is paced only while open: a closing session's queued audio is never sent.
            if (
                connection is not None
                and connection.state is State.OPEN
                and (deadline := session.outbound.next_deadline()) is not None
            ):
                deadlines.append(deadline)
        if not deadlines:
            self._scheduled.pop(connection_id, None)
        elif self._scheduled.get(connection_id) != (earliest := min(deadlines)):
            self._scheduled[connection_id] = earliest
            heapq.heappush(self._timers, (earliest, next(self._tiebreak), connection_id))

    def _fire(self, connection_id: ConnectionId, now: float) -> None:
        """Run whatever of this connection's timers is due; each moves its deadline past now."""
        connection = self._connections[connection_id]
        session = self._sessions.get(connection_id)
        if session is not None:
            if session.timeout_at is not None and now >= session.timeout_at:
                session.timeout_at = None
                self._events.append(SessionTimeout(connection=session.info))
            deadline = session.outbound.next_deadline()
            if deadline is not None and now >= deadline and connection.state is State.OPEN:
                self._write(session, connection, session.outbound.take_due(now), now)
        deadline = connection.next_deadline()
        if deadline is not None and now >= deadline:
            connection.handle_timer(now)
        self._settle(connection, now)

    def _write(
        self, session: _Session, connection: Connection, messages: list[bytes | str], now: float
    ) -> None:
        """Queue a session's outbound messages; close it once its output has finished."""
        self._events += session.outbound.take_events(session.info)
        for data in messages:
            connection.send_message(data)
        if session.outbound.finished and connection.state is State.OPEN:
            # EndFrame drained (close after the last chunk) or CancelFrame (drop and close now).
            connection.close(1000, "", now, drop_pending=session.outbound.cancelled)
        self._settle(connection, now)

    def _on_event(self, connection: Connection, event: LowEvent, now: float) -> None:
        session = self._sessions.get(connection.id)
        if isinstance(event, Opened):
            self._adopt(connection, now)
        elif isinstance(event, MessageIn):
            if session is not None:  # a detached or rejected connection's messages are dropped
                self._deliver(session, event.data)
        elif isinstance(event, Ended):
            if session is not None:
                del self._sessions[connection.id]
                self._events.append(
                    ClientDisconnected(
                        connection=session.info,
                        code=event.code,
                        reason=event.reason,
                        cause=event.cause,
                    )
                )
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

    def _adopt(self, connection: Connection, now: float) -> None:
        upgrade = connection.upgrade
        assert isinstance(upgrade, Upgraded)
        request = upgrade.request
        info = ConnectionInfo(
            id=connection.id,
            remote=request.remote,
            path=request.path,
            headers=request.headers,
            subprotocol=upgrade.subprotocol,
        )
        policy = self.config.client_policy
        if self._sessions and policy == "reject":
            connection.close(REJECTED_CODE, REJECTED_REASON, now)
            self._events.append(ClientRejected(connection=info))
            return
        if policy == "replace":
            for old_id, old in list(self._sessions.items()):
                self._detach(old_id, old, now)
        timeout = self.config.session_timeout
        # The session timer starts at adoption, for every session (Pipecat arms it once, ever).
        outbound = Outbound(session_serializer(self.config.serializer), self.config.audio_out)
        self._sessions[connection.id] = _Session(
            info, None if timeout is None else now + timeout, outbound
        )
        self._events.append(ClientConnected(connection=info))

    def _detach(self, connection_id: ConnectionId, session: _Session, now: float) -> None:
        del self._sessions[connection_id]
        self._events.append(
            ClientDisconnected(
                connection=session.info,
                code=1000,
                reason=REPLACED_REASON,
                cause=DisconnectCause.REPLACED,
            )
        )
        old = self._connections[connection_id]
        old.close(1000, REPLACED_REASON, now, drop_pending=True)
        self._settle(old, now)

    def _deliver(self, session: _Session, data: bytes | str) -> None:
        serializer = session.outbound.serializer
        event = deserialize_message(serializer, session.info, data, session.dropped)
        if isinstance(event, MessageDropped):
            session.dropped = event.dropped_total
        if event is not None:
            self._events.append(event)
