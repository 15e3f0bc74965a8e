"""The browser demo ``wavewire serve`` answers on plain HTTP ``GET /``, on its WebSocket port.

A self-contained page (``index.html``, ``demo.css``, ``demo.js``, ``worklet.js`` in this
package, no CDN, no build step): microphone capture in an AudioWorklet, PCM16 frames in the
server's wire format (protobuf encoded by the page's own code, or raw), playback through a small
jitter buffer, an Interrupt button, live counters.

Browsers send an ``Origin`` header and WebSockets have no same-origin policy of their own, so
any page the user visits could otherwise talk to a server on localhost. ``origin_check`` admits
the demo page's own origins (the server's host and port, ``localhost`` and the loopback
addresses), clients that send no ``Origin`` (not browsers), and the origins the operator lists;
every other browser gets 403.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from importlib import resources

from wavewire.core.admission import Accept, HandshakeRequest, HttpRequest, HttpResponse, Reject

__all__ = ["demo_http_handler", "demo_origins", "origin_check"]

#: Paths the demo answers, and the file and content type of each.
_FILES = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/demo.css": ("demo.css", "text/css; charset=utf-8"),
    "/demo.js": ("demo.js", "text/javascript; charset=utf-8"),
    "/worklet.js": ("worklet.js", "text/javascript; charset=utf-8"),
}

#: The page runs only its own scripts and styles; it may open WebSockets to any server (the
#: server's origin check decides whether it is let in).
_HEADERS = (
    ("Cache-Control", "no-store"),
    ("X-Content-Type-Options", "nosniff"),
    (
        "Content-Security-Policy",
        "default-src 'self'; connect-src 'self' ws: wss:; frame-ancestors 'none'",
    ),
)


def demo_http_handler(
    *, serializer: str, sample_rate: int
) -> Callable[[HttpRequest], HttpResponse | None]:
    """An ``http_handler`` serving the demo page; other requests get None (the server's 426).

    ``serializer`` ("protobuf" or "raw") and ``sample_rate`` tell the page the wire format.
    """
    config = json.dumps({"serializer": serializer, "sampleRate": sample_rate})
    package = resources.files(__name__)
    bodies: dict[str, tuple[bytes, str]] = {}
    for path, (name, content_type) in _FILES.items():
        body = package.joinpath(name).read_bytes()
        if name == "index.html":  # the config goes in an attribute: HTML-escape its quotes
            body = body.replace(b"{{CONFIG}}", config.replace('"', "&quot;").encode())
        bodies[path] = (body, content_type)

    def handler(request: HttpRequest) -> HttpResponse | None:
        if request.method not in ("GET", "HEAD"):
            return None
        path = request.path.partition("?")[0]
        if path == "/favicon.ico":  # browsers ask for one: no icon, and no error in the console
            return HttpResponse(status_code=204, headers=_HEADERS)
        found = bodies.get(path)
        if found is None:
            return None
        body, content_type = found
        return HttpResponse(headers=(("Content-Type", content_type), *_HEADERS), body=body)

    return handler


def demo_origins(host: str, port: int, *, tls: bool) -> frozenset[str]:
    """The origins the demo page has when loaded from this server: its host as given, and
    ``localhost`` and the loopback addresses, on ``port``."""
    scheme = "https" if tls else "http"
    default_port = 443 if tls else 80
    suffix = "" if port == default_port else f":{port}"
    hosts = {host, "localhost", "127.0.0.1", "[::1]"}
    if ":" in host and not host.startswith("["):
        hosts.add(f"[{host}]")  # an IPv6 address, as it appears in a URL
    return frozenset(f"{scheme}://{name}{suffix}" for name in hosts)


def origin_check(
    allowed: Callable[[], Iterable[str]], *, any_origin: bool = False
) -> Callable[[HandshakeRequest], Accept | Reject]:
    """A handshake hook admitting requests without ``Origin`` and those whose ``Origin`` is in
    ``allowed()`` (called per request: the port may be known only once listening)."""

    def check(request: HandshakeRequest) -> Accept | Reject:
        origin = request.origin
        if origin is None or any_origin or origin.lower() in allowed():
            return Accept()
        body = f"origin {origin} is not allowed (wavewire serve --allow-origin)\n"
        return Reject(
            status_code=403,
            headers=(("Content-Type", "text/plain; charset=utf-8"),),
            body=body.encode("utf-8", "replace"),
        )

    return check
