"""The seam between the protocol layer and the session layer: a *link*.

A link is one peer's message channel, whatever carries it. The session layer
(``core/session/sessions.py``) drives links through the commands of ``Link`` and is told what
happened on them with the events below; it never sees a byte of the wire. Two links exist:

* ``core/protocol/connection.py``'s ``Connection``: RFC 6455 over a byte stream (h11 handshake,
  wsproto framing, keepalive, close handshake), composed with the sessions by ``ServerProtocol``;
* ``wavewire.asgi``'s link: an ASGI server's ``websocket.*`` messages (the server frames).

Events a link's owner reports to the sessions, in this order for one link: ``Opened`` once (the
owner then calls ``Sessions.adopt``), any number of ``MessageIn``, ``Ended`` once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from .events import ConnectionId, DisconnectCause

__all__ = ["Ended", "Link", "LinkEvent", "MessageIn", "Opened"]


class Link(Protocol):
    """What a session needs from a wire: send a message, close, know whether it is open."""

    @property
    def id(self) -> ConnectionId:
        """Unique among the links one ``Sessions`` drives; never reused."""
        ...

    @property
    def is_open(self) -> bool:
        """Messages may be sent (open, and no close started)."""
        ...

    def send_message(self, data: bytes | str) -> None:
        """Queue one message (binary for bytes, text for str); only while ``is_open``."""
        ...

    def close(
        self,
        code: int,
        reason: str,
        now: float,
        *,
        drop_pending: bool = False,
        cause: DisconnectCause = DisconnectCause.CLOSED_LOCALLY,
    ) -> None:
        """Start closing (idempotent); ``Ended`` follows. ``drop_pending``: discard output not
        yet written. ``cause`` is what ``Ended`` reports if the close completes."""
        ...


@dataclass(frozen=True, slots=True)
class Opened:
    """The handshake completed (server: 101 sent; client: valid 101 received)."""


@dataclass(frozen=True, slots=True)
class MessageIn:
    """One whole message from the peer."""

    data: bytes | str


@dataclass(frozen=True, slots=True)
class Ended:
    """The link closed after ``Opened``; exactly once."""

    code: int
    reason: str
    cause: DisconnectCause


LinkEvent = Opened | MessageIn | Ended
