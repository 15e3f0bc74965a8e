"""Admission: whether a valid WebSocket upgrade request becomes a connection, as one pure decision.

Both wires use it: the h11 handshake (``core/protocol/handshake.py``) on wavewire's own server,
and ``wavewire.asgi`` on an ASGI server's ``websocket.connect``. In order:

1. the Origin allowlist (``allowed_origins``; 403 when the origin is not in it);
2. the application's handshake hook, if any (its ``Reject`` keeps its status, headers and body;
   a hook that raises or returns something else is the application's bug: 500, no details);
3. the subprotocol: the hook's choice (500 if the client did not offer it), or without a hook
   the first of ``subprotocols`` the client offered.

Before all of these, two refusals that depend on the server's state (``Load``), not on the
request's merits: a draining server answers 503 with ``Retry-After`` (the client, or the proxy,
goes elsewhere), and with ``session_key`` configured a request without a key gets 400.

``health_response`` answers ``GET /healthz`` and ``GET /readyz`` from the same ``Load``: small
JSON bodies, 503 from ``/readyz`` while draining or at ``max_sessions``.

The outcome is ``Accept`` or ``Denial``; rendering a denial (an HTTP response over h11, an
``websocket.http.response`` or a 403 ``websocket.close`` under ASGI) is the wire's job.
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

from .headers import NO_BODY_STATUSES, check_response_headers

__all__ = [
    "MAX_ORIGIN_QUOTED",
    "Accept",
    "AdmissionPolicy",
    "Denial",
    "HandshakeRequest",
    "HttpRequest",
    "HttpResponse",
    "Load",
    "Reject",
    "SessionKey",
    "admit",
    "health_response",
    "refusal",
]

#: Seconds a draining server asks a refused client to wait (``Retry-After``, RFC 9110 10.2.3).
DRAIN_RETRY_AFTER = 1
#: The paths ``health_response`` answers.
HEALTH_PATHS = ("/healthz", "/readyz")

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
    """Accept the upgrade, optionally choosing one of the offered subprotocols; ``headers``
    are added to the 101 response (never ``Content-Length`` or ``Transfer-Encoding``: a 1xx
    response has neither, RFC 9110 8.6 and RFC 9112 6.1)."""

    subprotocol: str | None = None
    headers: Sequence[tuple[str, str]] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "headers", check_response_headers(self.headers))


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


@dataclass(frozen=True, slots=True)
class SessionKey:
    """Where a request's session key is read: the session's identity across servers (a proxy
    hashes on it) and within one (the client policy applies per key).

    ``source``: ``"path"`` (segment ``segment`` of the path, 0 the first, -1 the last),
    ``"query"`` (query parameter ``name``) or ``"header"`` (header ``name``).
    """

    source: Literal["path", "query", "header"]
    name: str = ""
    segment: int = -1

    def __post_init__(self) -> None:
        if self.source not in ("path", "query", "header"):
            raise ValueError(f"session key source must be path, query or header: {self.source!r}")
        if self.source != "path" and not self.name:
            raise ValueError(f"a {self.source} session key needs a name")
        if isinstance(self.segment, bool) or not isinstance(self.segment, int):
            raise ValueError("session key segment must be an int")
        if self.source == "header":
            object.__setattr__(self, "name", self.name.lower())

    def of(self, request: HandshakeRequest) -> str | None:
        """The key ``request`` carries, or None (missing or empty)."""
        if self.source == "header":
            value = request.header(self.name)
        elif self.source == "query":
            value = next(iter(request.query.get(self.name, ())), None)
        else:
            path = urllib.parse.urlsplit(request.path).path
            segments = [urllib.parse.unquote(s) for s in path.split("/") if s]
            in_range = -len(segments) <= self.segment < len(segments)
            value = segments[self.segment] if in_range else None
        return value or None


@dataclass(frozen=True, slots=True)
class Load:
    """The server's state as admission and the health checks see it."""

    sessions: int = 0
    max_sessions: int | None = None
    draining: bool = False

    @property
    def ready(self) -> bool:
        """Would a new session be taken: not draining and under ``max_sessions``."""
        full = self.max_sessions is not None and self.sessions >= self.max_sessions
        return not (self.draining or full)


def health_response(path: str, load: Load) -> HttpResponse | None:
    """The answer to ``GET path`` if it is a health check (``/healthz``: the process is alive,
    always 200; ``/readyz``: 200 if ``load.ready``, else 503), or None."""
    route = urllib.parse.urlsplit(path).path
    if route not in HEALTH_PATHS:
        return None
    body: dict[str, object]
    if route == "/healthz":
        status, body = 200, {"status": "alive"}
    else:
        state = "draining" if load.draining else "ready" if load.ready else "full"
        status = 200 if load.ready else 503
        body = {"status": state, "sessions": load.sessions, "max_sessions": load.max_sessions}
    return HttpResponse(
        status_code=status,
        headers=(("Content-Type", "application/json"), ("Cache-Control", "no-store")),
        body=json.dumps(body, separators=(",", ":")).encode() + b"\n",
    )


class AdmissionPolicy(Protocol):
    """What the decision reads from the configuration (``ServerConfig`` provides it)."""

    @property
    def allowed_origins(self) -> Sequence[str | None] | None: ...
    @property
    def subprotocols(self) -> Sequence[str]: ...
    @property
    def handshake_hook(self) -> Callable[[HandshakeRequest], Accept | Reject] | None: ...
    @property
    def session_key(self) -> SessionKey | None: ...


#: The usual decision, made once (frozen): accept, no subprotocol, no headers.
_ACCEPT = Accept()

#: Characters of a refused Origin quoted in the 403 body and event: the peer chose its length.
MAX_ORIGIN_QUOTED = 100


def admit(
    request: HandshakeRequest, policy: AdmissionPolicy, load: Load | None = None
) -> Accept | Denial:
    """Decide ``request``; see the module docstring. Never raises for the hook's faults."""
    if load is not None and load.draining:
        return refusal(503, "the server is draining", (("Retry-After", str(DRAIN_RETRY_AFTER)),))
    key = policy.session_key
    if key is not None and key.of(request) is None:
        return refusal(400, f"the request carries no session key ({key.source} {key.name})")
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
        return _ACCEPT if chosen is None else Accept(subprotocol=chosen)
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
