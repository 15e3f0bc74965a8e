"""Events the core emits, read with ``events_received()``.

Every event is a frozen, slotted dataclass (with a quicker ``__init__``: ``_fastinit.py``).
Server events carry the ``ConnectionInfo`` of the client they concern; the same object
identifies that client in every event of its life, so applications can key state on it (it is
hashable).

Event-order contract (see docs/architecture.md): for every adopted client exactly one
``ClientConnected`` and, later, exactly one ``ClientDisconnected``; no ``FrameReceived`` or
``SessionTimeout`` for a client before its ``ClientConnected`` or after its
``ClientDisconnected``. On replacement the old client's ``ClientDisconnected`` comes immediately
before the new client's ``ClientConnected``, in the same ``events_received()`` batch.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NewType

from ._fastinit import fast_init
from .errors import HandshakeError
from .frames import Frame

if TYPE_CHECKING:
    from .session.audio import AudioStats

__all__ = [
    "AudioChunkDropped",
    "AudioInterrupted",
    "ClientConnected",
    "ClientDisconnected",
    "ClientEvent",
    "ClientRejected",
    "ConnectFailed",
    "Connected",
    "ConnectionId",
    "ConnectionInfo",
    "DisconnectCause",
    "Disconnected",
    "Drained",
    "FrameReceived",
    "HandshakeFailed",
    "MessageDropped",
    "ServerEvent",
    "SessionTimeout",
]

#: Identifies one TCP connection within one server or client core; never reused.
ConnectionId = NewType("ConnectionId", int)


@fast_init
@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectionInfo:
    """What is known about a WebSocket connection once its handshake completed."""

    id: ConnectionId
    #: The peer's address as the adapter reported it (e.g. ``("127.0.0.1", 50123)``).
    remote: object = field(default=None, compare=False)
    #: Request target of the upgrade request: path and query string.
    path: str = field(default="/", compare=False)
    #: Request headers (server side) or response headers (client side), names lower-cased.
    headers: tuple[tuple[str, str], ...] = field(default=(), compare=False, repr=False)
    subprotocol: str | None = field(default=None, compare=False)
    #: The request's session key (server side, with ``ServerConfig.session_key``), else None.
    session_key: str | None = field(default=None, compare=False)

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (case-insensitive), or ``None``."""
        wanted = name.lower()
        for key, value in self.headers:
            if key == wanted:
                return value
        return None


class DisconnectCause(enum.Enum):
    """Why a connection's session ended."""

    #: The peer sent a close frame.
    CLOSED_BY_PEER = "closed_by_peer"
    #: The application closed it and the close handshake completed.
    CLOSED_LOCALLY = "closed_locally"
    #: The TCP connection ended without a close frame (close code 1006).
    CONNECTION_LOST = "connection_lost"
    #: The peer broke the protocol or a limit; the core failed the connection.
    PROTOCOL_ERROR = "protocol_error"
    #: A newer client replaced this one (policy ``replace``).
    REPLACED = "replaced"
    #: Our close frame was not answered within ``close_timeout``.
    CLOSE_TIMEOUT = "close_timeout"
    #: No pong arrived within ``ping_timeout``.
    KEEPALIVE_TIMEOUT = "keepalive_timeout"
    #: The server is shutting down.
    SHUTDOWN = "shutdown"
    #: The server was draining and its drain deadline passed (close code 1012).
    DRAINED = "drained"


# --- events of both roles -----------------------------------------------------------------------


@fast_init
@dataclass(frozen=True, slots=True, kw_only=True)
class FrameReceived:
    """A message from the peer, deserialized into a frame."""

    connection: ConnectionInfo
    frame: Frame


@fast_init
@dataclass(frozen=True, slots=True, kw_only=True)
class MessageDropped:
    """A message from the peer could not be deserialized; it was dropped, the session goes on."""

    connection: ConnectionInfo
    #: What went wrong, for logs (never sent to the peer).
    detail: str
    #: Messages dropped on this connection so far, this one included.
    dropped_total: int


@fast_init
@dataclass(frozen=True, slots=True, kw_only=True)
class AudioInterrupted:
    """An ``InterruptionFrame`` was sent: queued output audio was dropped at once."""

    connection: ConnectionInfo
    #: Milliseconds of audio that were queued or held and will never be sent.
    dropped_ms: float


@fast_init
@dataclass(frozen=True, slots=True, kw_only=True)
class AudioChunkDropped:
    """The serializer failed on a paced audio chunk when its time came; it was not sent."""

    connection: ConnectionInfo
    detail: str
    #: Chunks dropped on this connection so far, this one included.
    dropped_total: int


# --- server events ------------------------------------------------------------------------------


@fast_init
@dataclass(frozen=True, slots=True, kw_only=True)
class ClientConnected:
    """A client completed its handshake and was adopted as a session."""

    connection: ConnectionInfo


@fast_init
@dataclass(frozen=True, slots=True, kw_only=True)
class ClientDisconnected:
    """An adopted client's session ended. Emitted exactly once per ``ClientConnected``."""

    connection: ConnectionInfo
    #: The WebSocket close code: the peer's, the one we sent, or 1006 without a close frame.
    code: int
    reason: str
    cause: DisconnectCause
    #: The session's output audio counters at its end (None without ``audio_out``).
    audio: AudioStats | None = field(default=None, compare=False)


@fast_init
@dataclass(frozen=True, slots=True, kw_only=True)
class SessionTimeout:
    """The session has lasted ``session_timeout`` seconds. Fires once; nothing is closed."""

    connection: ConnectionInfo


@fast_init
@dataclass(frozen=True, slots=True, kw_only=True)
class ClientRejected:
    """A client completed its handshake but is closed and never adopted: policy ``reject``
    while another client (with the same session key) is adopted, or ``max_sessions`` reached
    (both 1013), or the server is draining (1012)."""

    connection: ConnectionInfo
    code: int = 1013
    reason: str = "another client is connected"


@fast_init
@dataclass(frozen=True, slots=True, kw_only=True)
class Drained:
    """A drain (``drain()``) is complete: no session is left. ``closed`` sessions were still
    running at the drain deadline and were closed with 1012; the rest ended on their own."""

    closed: int


@fast_init
@dataclass(frozen=True, slots=True, kw_only=True)
class HandshakeFailed:
    """A connection ended before becoming a WebSocket: bad or refused request, or a timeout.

    ``status_code`` is the HTTP status sent (``None`` when nothing was sent, e.g. on timeout or
    EOF). Plain HTTP requests answered by the application's handler are not failures and are not
    reported.
    """

    connection_id: ConnectionId
    status_code: int | None
    detail: str


ServerEvent = (
    AudioChunkDropped
    | AudioInterrupted
    | ClientConnected
    | ClientDisconnected
    | SessionTimeout
    | ClientRejected
    | Drained
    | HandshakeFailed
    | FrameReceived
    | MessageDropped
)

# --- client events ------------------------------------------------------------------------------


@fast_init
@dataclass(frozen=True, slots=True, kw_only=True)
class Connected:
    """The server accepted the upgrade; frames may flow."""

    connection: ConnectionInfo


@fast_init
@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectFailed:
    """The opening handshake failed; the connection is closed. No ``Disconnected`` follows."""

    error: HandshakeError


@fast_init
@dataclass(frozen=True, slots=True, kw_only=True)
class Disconnected:
    """The connection ended after ``Connected``. Emitted exactly once per ``Connected``."""

    connection: ConnectionInfo
    code: int
    reason: str
    cause: DisconnectCause


ClientEvent = (
    AudioChunkDropped
    | AudioInterrupted
    | Connected
    | ConnectFailed
    | Disconnected
    | FrameReceived
    | MessageDropped
)
