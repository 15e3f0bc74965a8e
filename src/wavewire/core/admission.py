"""Admission: whether a valid WebSocket upgrade request becomes a connection, as one pure decision.

Both wires use it: the h11 handshake (``core/protocol/handshake.py``) on wavewire's own server,
and ``wavewire.asgi`` on an ASGI server's ``websocket.connect``. In order:

1. the Origin allowlist (``allowed_origins``; 403 when the origin is not in it);
2. the application's handshake hook, if any (its ``Reject`` keeps its status, headers and body;
   a hook that raises or returns something else is the application's bug: 500, no details);
3. the subprotocol: the hook's choice (500 if the client did not offer it), or without a hook
   the first of ``subprotocols`` the client offered.

The outcome is ``Accept`` or ``Denial``; rendering a denial (an HTTP response over h11, an
``websocket.http.response`` or a 403 ``websocket.close`` under ASGI) is the wire's job.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from .headers import NO_BODY_STATUSES, check_headers, check_response_headers

__all__ = [
    "MAX_ORIGIN_QUOTED",
    "Accept",
    "AdmissionPolicy",
    "Denial",
    "HandshakeRequest",
    "HttpRequest",
    "HttpResponse",
    "Reject",
    "admit",
    "refusal",
]

Headers = tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class HandshakeRequest:
    """A valid WebSocket upgrade request, as the application's handshake hook sees it."""

    #: Request target: path and query string, e.g. ``"/ws?token=abc"``.
    path: str
    #: Header pairs in order, names lower-cased.
    headers: Headers = field(repr=False)
    #: Subprotocols the client offered, in its order of preference.
    subprotocols: tuple[str, ...] = ()
    origin: str | None = None
    remote: object = None

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (case-insensitive), or ``None``."""
        wanted = name.lower()
        return next((value for key, value in self.headers if key == wanted), None)

    @property
    def query(self) -> dict[str, list[str]]:
        """The query string, parsed (``?token=x`` gives ``{"token": ["x"]}``)."""
        return urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)


@dataclass(frozen=True, slots=True, kw_only=True)
class Accept:
    """Accept the upgrade, optionally choosing one of the offered subprotocols."""

    subprotocol: str | None = None
    headers: Sequence[tuple[str, str]] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "headers", check_headers(self.headers))


@dataclass(frozen=True, slots=True, kw_only=True)
class Reject:
    """Refuse the upgrade with an HTTP response; the connection is then closed."""

    status_code: int = 403
    headers: Sequence[tuple[str, str]] = ()
    body: bytes = b""

    def __post_init__(self) -> None:
        if not 400 <= self.status_code <= 599:
            raise ValueError("a rejection's status_code must be a 4xx or 5xx status")
        object.__setattr__(self, "headers", check_response_headers(self.headers))


@dataclass(frozen=True, slots=True, kw_only=True)
class HttpRequest:
    """A plain (non-upgrade) HTTP request, for ``ServerConfig.http_handler``."""

    method: str
    path: str
    headers: Headers = field(repr=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class HttpResponse:
    """The answer to a plain HTTP request; the connection is closed after it."""

    status_code: int = 200
    headers: Sequence[tuple[str, str]] = ()
    body: bytes = b""

    def __post_init__(self) -> None:
        if not 200 <= self.status_code <= 599:
            raise ValueError("status_code must be a final status (200-599)")
        if self.body and self.status_code in NO_BODY_STATUSES:
            raise ValueError(f"a {self.status_code} response has no body")
        object.__setattr__(self, "headers", check_response_headers(self.headers))


@dataclass(frozen=True, slots=True)
class Denial:
    """The request is refused with this HTTP response; ``detail`` is for logs and events."""

    status_code: int
    detail: str
    headers: Headers
    body: bytes


def refusal(
    status: int, detail: str, headers: Sequence[tuple[str, str]] = (), body: bytes | None = None
) -> Denial:
    """The core's own refusal: a plain-text body saying why (or ``body``), never the request's
    bytes."""
    if body is None:
        body = f"Failed to open a WebSocket connection: {detail}.\n".encode("utf-8", "replace")
    return Denial(status, detail, (*headers, ("Content-Type", "text/plain; charset=utf-8")), body)


class AdmissionPolicy(Protocol):
    """What the decision reads from the configuration (``ServerConfig`` provides it)."""

    @property
    def allowed_origins(self) -> Sequence[str | None] | None: ...
    @property
    def subprotocols(self) -> Sequence[str]: ...
    @property
    def handshake_hook(self) -> Callable[[HandshakeRequest], Accept | Reject] | None: ...


#: Characters of a refused Origin quoted in the 403 body and event: the peer chose its length.
MAX_ORIGIN_QUOTED = 100


def admit(request: HandshakeRequest, policy: AdmissionPolicy) -> Accept | Denial:
    """Decide ``request``; see the module docstring. Never raises for the hook's faults."""
    allowed = policy.allowed_origins
    origin = request.origin
    if allowed is not None and origin not in allowed:
        quoted = repr(origin)
        if len(quoted) > MAX_ORIGIN_QUOTED:  # the peer chose its length: quote a bounded part
            quoted = f"{quoted[:MAX_ORIGIN_QUOTED]}... ({len(origin or '')} characters)"
        return refusal(403, f"origin {quoted} is not allowed")
    hook = policy.handshake_hook
    if hook is None:
        chosen = next((p for p in policy.subprotocols if p in request.subprotocols), None)
        return Accept(subprotocol=chosen)
    try:
        decision: object = hook(request)  # the application's code: trust nothing
    except Exception as exc:
        # The application's bug: answer 500 without details, report it for the logs.
        return refusal(500, f"handshake hook raised {exc!r}", body=b"")
    if isinstance(decision, Reject):
        return Denial(
            decision.status_code,
            "rejected by the handshake hook",
            tuple(decision.headers),
            decision.body,
        )
    if not isinstance(decision, Accept):
        return refusal(500, f"handshake hook returned {decision!r}", body=b"")
    if decision.subprotocol is not None and decision.subprotocol not in request.subprotocols:
        return refusal(500, "the handshake hook chose a subprotocol the client did not offer")
    return decision
