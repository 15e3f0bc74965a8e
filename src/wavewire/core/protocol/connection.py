"""One TCP connection's WebSocket life, for either role: handshake, messages, close, timers.

Theory of operation
-------------------
A ``Connection`` is fed bytes (``receive_data``), the end of the byte stream (``receive_eof``),
the loss of the socket (``connection_lost``) and the passing of time (``handle_timer``); every
call takes ``now``, the caller's monotonic clock in seconds. It answers with bytes to write and
at most one final instruction (close the socket, after or instead of writing), collected by its
owner through ``take_output()``, and with low-level events -- the link events of ``core/link.py``
(``Opened``, ``MessageIn``, ``Ended``) and ``HandshakeDone`` -- that the owner (``ServerProtocol``
or ``ClientProtocol``) turns into public events. It is a ``Link``: the session layer drives it
with ``send_message``/``close``. It never raises because of what the peer sent: a violation
fails the connection with the RFC 6455 close code and ends it.

States and the only transitions between them (``TRANSITIONS``; docs/architecture.md draws it)::

    CONNECTING --opened--> OPEN --close_started--> CLOSING --ended--> CLOSED
        |                   |                                           ^
        +------ended--------+--------------------ended------------------+

CLOSING means our close frame is out and we wait for the peer's (close_timeout bounds it), or,
as a client, the close frames have crossed and we wait for the server to close TCP first
(RFC 6455 section 7.1.1). Timers: ``open_timeout`` in CONNECTING; keepalive ping and pong
deadlines in OPEN; ``close_timeout`` in CLOSING. ``next_deadline()`` is the earliest armed one.
State changes happen inside the call that caused them, never lazily (wsproto #181).

Pongs under a ping flood: while the owner says the socket is not writable (its pending output
is over ``max_output_buffer``, ``set_writable(False)``), only the pong for the most recent ping
is kept (RFC 6455 section 5.5.3 allows answering only that one), and written once writable
again: a peer that pings without reading cannot make us hold a pong per ping.
"""

from __future__ import annotations

import enum
import io
from dataclasses import dataclass

from wsproto.connection import ConnectionState as WsState
from wsproto.events import (
    BytesMessage,
    CloseConnection,
    Message,
    Ping,
    Pong,
    TextMessage,
)
from wsproto.frame_protocol import CloseReason

from wavewire.core.config import _ConnectionLimits
from wavewire.core.errors import HandshakeError, HandshakeTimeout, InvalidState
from wavewire.core.events import ConnectionId, DisconnectCause
from wavewire.core.link import Ended, MessageIn, Opened

from .framing import MaskSource, WsConnection
from .handshake import (
    ClientHandshake,
    HandshakeAccepted,
    HandshakeFailure,
    Refused,
    ServerHandshake,
    Upgraded,
)

__all__ = ["Connection", "Ended", "HandshakeDone", "MessageIn", "Opened", "State", "Transmit"]


class State(enum.Enum):
    CONNECTING = "connecting"
    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"


class Trigger(enum.Enum):
    OPENED = "opened"
    CLOSE_STARTED = "close_started"
    ENDED = "ended"


#: Every legal (state, trigger) pair; a missing pair is a bug in the core, not in the peer.
TRANSITIONS: dict[tuple[State, Trigger], State] = {
    (State.CONNECTING, Trigger.OPENED): State.OPEN,
    (State.CONNECTING, Trigger.ENDED): State.CLOSED,
    (State.OPEN, Trigger.CLOSE_STARTED): State.CLOSING,
    (State.OPEN, Trigger.ENDED): State.CLOSED,
    (State.CLOSING, Trigger.ENDED): State.CLOSED,
}

#: Seconds a connection stays open after a violation that arrived right behind valid messages
#: in the same read: the application can still answer them (Autobahn 3.2, 4.1.3, 5.15 expect
#: the echo before the close). Nothing more is read meanwhile.
FAILURE_GRACE = 0.1

#: Close codes an application may send (RFC 6455 section 7.4; 1004-1006 and 1015 are reserved).
_SENDABLE_CODES = frozenset((1000, 1001, 1002, 1003, *range(1007, 1015), *range(3000, 5000)))

#: What we tell the peer when failing a connection: the code's meaning, never internal details.
_FAILURE_REASONS = {
    CloseReason.PROTOCOL_ERROR: "protocol error",
    CloseReason.UNSUPPORTED_DATA: "unsupported data",
    CloseReason.INVALID_FRAME_PAYLOAD_DATA: "invalid frame payload data",
    CloseReason.POLICY_VIOLATION: "policy violation",
    CloseReason.MESSAGE_TOO_BIG: "message too big",
    CloseReason.MANDATORY_EXT: "mandatory extension",
    CloseReason.INTERNAL_ERROR: "internal error",
}


def check_close(code: int, reason: str) -> None:
    """Refuse a close code or reason the caller may not send (``ValueError``)."""
    if code not in _SENDABLE_CODES:
        raise ValueError(f"close code {code} may not be sent (RFC 6455 7.4)")
    if len(reason.encode("utf-8")) > 123:
        raise ValueError("a close reason is at most 123 bytes of UTF-8 (RFC 6455 5.5)")


@dataclass(frozen=True, slots=True)
class Transmit:
    """What an adapter must do for one connection: write ``data``, then maybe close.

    ``drop_pending``: first discard whatever is queued for this connection and not yet written
    (a replaced or aborted connection's stale audio), except the connection's first bytes, its
    opening-handshake response, which must still reach the peer. ``close``: after writing
    ``data``, close the TCP connection; nothing more will come for this connection.
    """

    connection_id: ConnectionId
    data: bytes = b""
    drop_pending: bool = False
    close: bool = False


# --- low-level events, for the owning protocol object -------------------------------------------


@dataclass(frozen=True, slots=True)
class HandshakeDone:
    """The connection closed without ever opening; exactly once, and no ``Ended`` follows.

    Server: ``status_code`` is the HTTP status sent (None if none), ``failed`` is False for a plain
    request the application's handler answered. Client: ``error`` says why.
    """

    status_code: int | None
    detail: str
    failed: bool = True
    error: HandshakeError | None = None


LowEvent = Opened | MessageIn | Ended | HandshakeDone


class Connection:
    """See the module docstring."""

    def __init__(
        self,
        connection_id: ConnectionId,
        limits: _ConnectionLimits,
        handshake: ServerHandshake | ClientHandshake,
        now: float,
        *,
        mask_source: MaskSource | None = None,
    ) -> None:
        self.id = connection_id
        self._limits = limits
        self._handshake: ServerHandshake | ClientHandshake | None = handshake
        self._client = isinstance(handshake, ClientHandshake)
        self._mask_source = mask_source
        self.state = State.CONNECTING
        self._ws: WsConnection | None = None
        # Bytes to write, in pieces joined once by take_output (a message's payload is not
        # copied before that).
        self._out: list[bytes] = []
        # Pieces at the start of _out that are the server's 101 response, until taken.
        self._unsent_response = 0
        self._drop_pending = False
        self._close_socket = False
        self._socket_gone = False
        self._events: list[LowEvent] = []
        # The message being reassembled. One growing buffer, not a list of pieces: a peer that
        # trickles a frame in 1-byte reads makes wsproto yield one piece per read, and a list of
        # small objects would cost ~130 bytes of heap per payload byte (aiohttp PR #13350).
        self._binary = bytearray()
        # Made for the first text message that comes in pieces (200 bytes per idle connection).
        self._text: io.StringIO | None = None
        # How the session ended, decided when the close handshake starts, reported at CLOSED.
        self._end: Ended | None = None
        self._open_deadline = None if limits.open_timeout is None else now + limits.open_timeout
        self._close_deadline: float | None = None
        self._ping_at: float | None = None
        self._pong_deadline: float | None = None
        self._ping_payload: bytes | None = None
        # A peer violation whose failure waits FAILURE_GRACE behind the messages before it.
        self._deferred_failure: CloseReason | None = None
        self._failure_at: float | None = None
        self._pings_sent = 0
        self._writable = True
        # While not writable: the pong owed to the most recent ping (earlier ones are forgone).
        self._owed_pong: Pong | None = None
        #: Set once upgraded, for the owner: the request (server) or response (client).
        self.upgrade: Upgraded | HandshakeAccepted | None = None
        if isinstance(handshake, ClientHandshake):
            self._out.append(handshake.request)

    # --- inputs ------------------------------------------------------------------------------

    def receive_data(self, data: bytes, now: float) -> None:
        if not data:
            return
        if self.state is State.CONNECTING:
            self._receive_handshake(data, now)
        elif self._deferred_failure is not None:
            self._fail_deferred()  # more input after a violation: no more grace
        elif self.state is not State.CLOSED:
            assert self._ws is not None
            # Once the close frames have crossed, what still arrives is discarded (RFC 6455 7.1.1).
            if self._ws.state is not WsState.CLOSED:
                self._ws.receive_data(data)
                self._process_frames(now)
        # CLOSED: the connection ended (failed, lost, timed out); late bytes are discarded.

    def receive_eof(self, now: float) -> None:
        """The peer closed its sending side (or the socket); end the connection."""
        self._lost(now)
        self._close_socket = True

    def connection_lost(self, now: float) -> None:
        """The socket is gone (reset, write error, adapter abort); nothing more can be written."""
        self._socket_gone = True
        self._lost(now)

    def abort(self, now: float, detail: str = "handshake aborted") -> None:
        """End the connection at once: drop unsent output and close the socket.

        ``detail`` explains the end of a connection still in its handshake.
        """
        self._lost(now, detail)
        self._out.clear()
        self._drop_pending = True
        self._close_socket = True

    def handle_timer(self, now: float) -> None:
        if self.state is State.CONNECTING:
            if self._open_deadline is not None and now >= self._open_deadline:
                self._abort_handshake("opening handshake timed out", HandshakeTimeout)
        elif self.state is State.OPEN:
            if self._failure_at is not None and now >= self._failure_at:
                self._fail_deferred()
                return
            if self._pong_deadline is not None and now >= self._pong_deadline:
                self._fail(
                    CloseReason.INTERNAL_ERROR, DisconnectCause.KEEPALIVE_TIMEOUT, abort=True
                )
                return
            if self._ping_at is not None and now >= self._ping_at:
                self._send_ping(now)
        elif (
            self.state is State.CLOSING
            and self._close_deadline is not None
            and now >= self._close_deadline
        ):
            end = self._end
            assert end is not None
            assert self._ws is not None
            if self._ws.state is not WsState.CLOSED:
                # Our close frame was never answered.
                end = Ended(1006, "", DisconnectCause.CLOSE_TIMEOUT)
            # Else a client whose close frames crossed just stops waiting for TCP close.
            self._finish(end, drop_pending=True)

    # --- commands (with ``id`` and ``is_open``, the ``Link`` the sessions drive) -------------

    @property
    def is_open(self) -> bool:
        return self.state is State.OPEN

    def send_message(self, data: bytes | str) -> None:
        """Queue one message; ``InvalidState`` unless the connection is open."""
        if self.state is not State.OPEN:
            raise InvalidState(f"cannot send on a connection that is {self.state.value}")
        assert self._ws is not None
        header, payload = self._ws.data_frame(data)
        self._out.append(header)
        if payload:
            self._out.append(payload)

    def close(
        self,
        code: int,
        reason: str,
        now: float,
        *,
        drop_pending: bool = False,
        cause: DisconnectCause = DisconnectCause.CLOSED_LOCALLY,
    ) -> None:
        """Start the close handshake (idempotent once closing or closed).

        ``drop_pending`` discards output not yet written before the close frame goes out.
        Closing a connection still in its handshake aborts it.
        """
        check_close(code, reason)
        if self.state is State.CONNECTING:
            self._abort_handshake("handshake aborted by the application", HandshakeError)
        elif self.state is State.OPEN:
            if drop_pending:
                # Never the opening-handshake response: without it the client cannot even read
                # the close frame that follows (a client replaced in the same burst of reads).
                del self._out[self._unsent_response :]
                self._drop_pending = True
            if self._deferred_failure is not None:
                # Input stopped at the peer's violation, so no close handshake can complete:
                # send the application's close frame and end now, as the protocol error it is.
                assert self._ws is not None
                self._deferred_failure = self._failure_at = None
                self._out.append(self._ws.send(CloseConnection(code=code, reason=reason)))
                self._finish(Ended(code, reason, DisconnectCause.PROTOCOL_ERROR))
            else:
                self._start_close(code, reason, cause, now)

    # --- outputs -----------------------------------------------------------------------------

    def set_writable(self, writable: bool) -> None:
        """The owner's view of the socket: False while its pending output is over the limit
        (pongs are then held back, the latest only), True again once under it."""
        self._writable = writable
        if writable and self._owed_pong is not None:
            pong, self._owed_pong = self._owed_pong, None
            assert self._ws is not None, "a pong is owed only once open"
            if self._ws.state is WsState.OPEN:  # not once our close frame is out (5.5.2)
                self._out.append(self._ws.send(pong))

    def take_events(self) -> list[LowEvent]:
        events, self._events = self._events, []
        return events

    def take_output(self) -> Transmit | None:
        """Everything to do on the socket since the last call, or None if nothing."""
        if self._socket_gone:
            self._out.clear()
            return None
        if not self._out and not self._close_socket and not self._drop_pending:
            return None
        transmit = Transmit(self.id, b"".join(self._out), self._drop_pending, self._close_socket)
        self._out.clear()
        self._unsent_response = 0
        self._drop_pending = False
        if self._close_socket:
            self._socket_gone = True  # after the close instruction, the socket is the adapter's
        return transmit

    def next_deadline(self) -> float | None:
        if self.state is State.CONNECTING:
            return self._open_deadline
        if self.state is State.OPEN:
            # Called after every input: no containers for the usual case (the ping timer only).
            deadline = self._ping_at
            for other in (self._pong_deadline, self._failure_at):
                if other is not None and (deadline is None or other < deadline):
                    deadline = other
            return deadline
        if self.state is State.CLOSING:
            return self._close_deadline
        return None

    @property
    def finished(self) -> bool:
        """Closed, with the close instruction collected (or the socket already gone)."""
        return self.state is State.CLOSED and self._socket_gone and not self._events

    # --- internals ---------------------------------------------------------------------------

    def _move(self, trigger: Trigger) -> None:
        next_state = TRANSITIONS.get((self.state, trigger))
        if next_state is None:
            raise AssertionError(f"no transition from {self.state} on {trigger}")
        self.state = next_state

    def _receive_handshake(self, data: bytes, now: float) -> None:
        handshake = self._handshake
        assert handshake is not None
        outcome = handshake.receive_data(data)
        if outcome is None:
            return
        if isinstance(outcome, Refused):
            self._out.append(outcome.response)
            self._handshake_done(HandshakeDone(outcome.status_code, outcome.detail, outcome.failed))
        elif isinstance(outcome, HandshakeFailure):
            self._handshake_done(HandshakeDone(None, str(outcome.error), error=outcome.error))
        else:
            if isinstance(outcome, Upgraded):
                self._out.append(outcome.response)
                self._unsent_response = len(self._out)
            self._open(outcome, now)

    def _open(self, outcome: Upgraded | HandshakeAccepted, now: float) -> None:
        self._handshake = None
        self.upgrade = outcome
        self._open_deadline = None
        self._ws = WsConnection(
            client=self._client,
            max_message_size=self._limits.max_message_size,
            max_fragments=self._limits.fragment_limit,
            mask_source=self._mask_source,
            deflate=outcome.deflate,
        )
        if self._limits.ping_interval is not None:
            self._ping_at = now + self._limits.ping_interval
        self._move(Trigger.OPENED)
        self._events.append(Opened())
        if outcome.trailing:
            self._ws.receive_data(outcome.trailing)
            self._process_frames(now)

    def _handshake_done(self, done: HandshakeDone) -> None:
        self._handshake = None
        self._open_deadline = None
        self._close_socket = True
        self._move(Trigger.ENDED)
        self._events.append(done)

    def _abort_handshake(self, detail: str, error: type[HandshakeError]) -> None:
        self._out.clear()
        self._drop_pending = True
        self._handshake_done(HandshakeDone(None, detail, error=error(detail)))

    def _process_frames(self, now: float) -> None:
        ws = self._ws
        assert ws is not None
        delivered = False
        for event in ws.received_events():
            if type(event) is bytes or type(event) is str:
                # A whole message read straight from the buffer (framing.py's shortcut).
                self._events.append(MessageIn(event))
                delivered = True
            elif isinstance(event, Message):
                joined: bytes | str
                if isinstance(event, TextMessage):
                    text = self._text
                    if event.message_finished and text is None:
                        joined = event.data  # the whole message in one piece
                    else:
                        if text is None:
                            text = self._text = io.StringIO()
                        text.write(event.data)
                        if event.message_finished:
                            joined = text.getvalue()
                            self._text = None
                else:
                    assert isinstance(event, BytesMessage)
                    if event.message_finished and not self._binary:
                        joined = bytes(event.data)  # one copy (none if it is bytes already)
                    else:
                        self._binary += event.data
                        if event.message_finished:
                            joined = bytes(self._binary)
                            self._binary = bytearray()
                if event.message_finished:
                    self._events.append(MessageIn(joined))
                    delivered = True
            elif isinstance(event, Ping):
                # No pong once our close frame is out (5.5.2); while not writable, the latest
                # ping's pong only (5.5.3).
                if ws.state is WsState.OPEN and self._writable:
                    self._out.append(ws.send(event.response()))
                elif ws.state is WsState.OPEN:
                    self._owed_pong = event.response()
            elif isinstance(event, Pong):
                if self._ping_payload is not None and event.payload == self._ping_payload:
                    self._ping_payload = None
                    self._pong_deadline = None
            else:
                assert isinstance(event, CloseConnection)
                if ws.failure is not None and delivered:
                    # Valid messages came just before the violation: read no further, and fail
                    # a moment later, so the application can still answer what it accepted.
                    self._deferred_failure = CloseReason(ws.failure.code)
                    self._failure_at = now + FAILURE_GRACE
                elif ws.failure is not None:
                    self._fail(CloseReason(ws.failure.code), DisconnectCause.PROTOCOL_ERROR)
                else:
                    self._peer_closed(event, now)
                return  # wsproto parses nothing after a close frame or a failure

    def _peer_closed(self, event: CloseConnection, now: float) -> None:
        ws = self._ws
        assert ws is not None
        if self.state is State.OPEN:
            # The peer started the close handshake: echo its code (RFC 6455 5.5.1).
            self._out.append(ws.send(event.response()))
            self._end = Ended(int(event.code), event.reason or "", DisconnectCause.CLOSED_BY_PEER)
            if not self._client:
                self._finish(self._end)  # the server closes TCP first (7.1.1)
                return
            self._move(Trigger.CLOSE_STARTED)
            self._arm_close_timer(now)
        elif not self._client:
            # Our close was answered; the server closes TCP now.
            end = self._end
            assert end is not None
            self._finish(end)
        # A client whose close was answered keeps waiting for the server's TCP close.

    def _start_close(self, code: int, reason: str, cause: DisconnectCause, now: float) -> None:
        ws = self._ws
        assert ws is not None
        self._out.append(ws.send(CloseConnection(code=code, reason=reason)))
        self._end = Ended(code, reason, cause)
        self._move(Trigger.CLOSE_STARTED)
        self._arm_close_timer(now)

    def _arm_close_timer(self, now: float) -> None:
        self._ping_at = self._pong_deadline = None
        if self._limits.close_timeout is not None:
            self._close_deadline = now + self._limits.close_timeout

    def _fail_deferred(self) -> None:
        code = self._deferred_failure
        assert code is not None
        self._deferred_failure = self._failure_at = None
        self._fail(code, DisconnectCause.PROTOCOL_ERROR)

    def _fail(self, code: CloseReason, cause: DisconnectCause, *, abort: bool = False) -> None:
        """Fail the WebSocket connection (RFC 6455 7.1.7): close frame if possible, then TCP."""
        ws = self._ws
        assert ws is not None
        reason = _FAILURE_REASONS.get(code, "")
        if ws.state is WsState.OPEN and not abort:
            self._out.append(ws.send(CloseConnection(code=code, reason=reason)))
        self._finish(Ended(int(code), reason, cause), drop_pending=abort)

    def _finish(self, end: Ended, *, drop_pending: bool = False) -> None:
        if drop_pending:
            self._out.clear()
            self._drop_pending = True
        self._close_socket = True
        self._ping_at = self._pong_deadline = self._close_deadline = self._failure_at = None
        self._deferred_failure = None
        self._binary = bytearray()
        self._text = None
        self._move(Trigger.ENDED)
        self._events.append(end)

    def _lost(self, now: float, detail: str = "connection closed during the handshake") -> None:
        if self.state is State.CONNECTING:
            handshake = self._handshake
            if isinstance(handshake, ClientHandshake):
                failure = handshake.receive_eof()
                self._handshake_done(HandshakeDone(None, str(failure.error), error=failure.error))
            else:
                self._handshake_done(HandshakeDone(None, detail))
        elif self.state is State.OPEN:
            self._finish(Ended(1006, "", DisconnectCause.CONNECTION_LOST))
        elif self.state is State.CLOSING:
            end = self._end
            assert end is not None
            ws = self._ws
            assert ws is not None
            if ws.state is not WsState.CLOSED:
                # Our close frame was never answered: the close handshake did not complete.
                end = Ended(1006, "", DisconnectCause.CONNECTION_LOST)
            self._finish(end)

    def _send_ping(self, now: float) -> None:
        ws = self._ws
        assert ws is not None
        interval = self._limits.ping_interval
        assert interval is not None
        self._ping_at = now + interval
        if self._pong_deadline is not None:
            # A ping is still awaited: only its own pong may clear its deadline, so no new ping
            # (which would make that pong unrecognised) until it is answered or times out.
            return
        self._pings_sent += 1
        self._ping_payload = self._pings_sent.to_bytes(4, "big")
        self._out.append(ws.send(Ping(payload=self._ping_payload)))
        if self._limits.ping_timeout is not None:
            # The pong timer starts when the ping is queued, not when it is flushed.
            self._pong_deadline = now + self._limits.ping_timeout
