"""Exceptions raised by the core.

Two families, as in h11: a *peer* that misbehaves never makes the core raise; the connection is
failed with the right close code (or HTTP status) and an event reports it. A *caller* that misuses
the core (sends on a closed connection, names an unknown connection, passes a bad config) gets an
exception: ``InvalidState`` for misuse of a live object, ``ValueError`` subclasses for bad values.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "HandshakeError",
    "HandshakeRejected",
    "HandshakeTimeout",
    "InvalidHandshake",
    "InvalidState",
    "InvalidURI",
    "WavewireError",
]


class WavewireError(Exception):
    """Base class of every exception wavewire raises on purpose."""


class InvalidState(WavewireError):
    """The caller asked for something the connection's state does not allow.

    The documented misuse error: sending on a connection that is not open (still connecting,
    closing or closed), or naming a connection the core never made. Closing is idempotent and
    never raises it. Adapters re-raise it as ``ConnectionClosed`` where the cause is a closed
    connection.
    """


class InvalidURI(WavewireError, ValueError):
    """A WebSocket URI that cannot be connected to (bad scheme, no host, bad port)."""


class HandshakeError(WavewireError):
    """The client's opening handshake did not complete."""


class InvalidHandshake(HandshakeError):
    """The server answered the upgrade request with something that is not a valid 101 response."""


class HandshakeTimeout(HandshakeError):
    """The opening handshake did not complete within ``open_timeout``."""


class HandshakeRejected(HandshakeError):
    """The server answered the upgrade request with a non-101 HTTP status."""

    def __init__(
        self, status_code: int, headers: Sequence[tuple[str, str]] = (), body: bytes = b""
    ) -> None:
        super().__init__(f"server rejected the WebSocket handshake with HTTP {status_code}")
        self.status_code = status_code
        self.headers = tuple(headers)
        self.body = body
