"""The server side of the browser demo, without a browser: what ``GET /`` serves, the origin
check, and the echo bot's answers to the page's interrupt and ping messages."""

from __future__ import annotations

import re
from pathlib import Path

from wavewire.cli import build_parser, echo_frame, make_params
from wavewire.core.admission import Accept, HandshakeRequest, HttpRequest, Reject
from wavewire.core.frames import (
    InputTransportMessageFrame,
    InterruptionFrame,
    OutputTransportMessageFrame,
    OutputTransportMessageUrgentFrame,
)
from wavewire.demo import demo_http_handler, demo_origins, origin_check

DEMO = Path(__file__).resolve().parents[2] / "src" / "wavewire" / "demo"


def get(path: str, method: str = "GET", serializer: str = "protobuf") -> object:
    handler = demo_http_handler(serializer=serializer, sample_rate=16000)
    return handler(HttpRequest(method=method, path=path, headers=()))


def test_page_and_its_files_are_served_with_the_wire_format() -> None:
    page = get("/", serializer="raw")
    assert page is not None and page.status_code == 200  # type: ignore[attr-defined]
    headers = dict(page.headers)  # type: ignore[attr-defined]
    assert headers["Content-Type"] == "text/html; charset=utf-8"
    assert "default-src 'self'" in headers["Content-Security-Policy"]
    body = page.body.decode()  # type: ignore[attr-defined]
    assert (
        'content="{&quot;serializer&quot;: &quot;raw&quot;, &quot;sampleRate&quot;: 16000}"' in body
    )
    for name in ("demo.js", "worklet.js", "demo.css"):
        served = get(f"/{name}?v=1")
        assert served is not None
        assert served.body == (DEMO / name).read_bytes()  # type: ignore[attr-defined]
    assert get("/favicon.ico").status_code == 204  # type: ignore[attr-defined]


def test_page_is_self_contained() -> None:
    """No CDN: every script, style and module the page loads is one of its own files."""
    html = (DEMO / "index.html").read_text()
    assert not re.search(r"https?://", html)
    assert set(re.findall(r'(?:src|href)="([^"]+)"', html)) == {"demo.js", "demo.css"}
    script = (DEMO / "demo.js").read_text()
    assert re.findall(r'new URL\("([^"]+)"', script) == ["worklet.js"]
    assert not re.search(r"https?://", script + (DEMO / "worklet.js").read_text())


def test_other_requests_get_the_servers_426() -> None:
    assert get("/nothing-here") is None
    assert get("/", method="POST") is None


def request(origin: str | None) -> HandshakeRequest:
    return HandshakeRequest(path="/", headers=(), origin=origin)


def test_origin_check() -> None:
    allowed = demo_origins("localhost", 8765, tls=False) | {"https://app.example"}
    check = origin_check(lambda: allowed)
    for origin in (
        None,
        "http://localhost:8765",
        "http://127.0.0.1:8765",
        "http://[::1]:8765",
        "https://app.example",
    ):
        assert isinstance(check(request(origin)), Accept), origin
    for origin in ("http://localhost:8766", "https://localhost:8765", "http://evil.example"):
        refused = check(request(origin))
        assert isinstance(refused, Reject) and refused.status_code == 403, origin
    assert isinstance(origin_check(lambda: (), any_origin=True)(request("http://x")), Accept)
    assert "https://[::1]" in demo_origins("::1", 443, tls=True)


def test_serve_admits_its_own_page_and_allow_origin() -> None:
    args = build_parser().parse_args(["serve", "--port", "9000", "--allow-origin", "HTTP://A.B/"])
    hook = make_params(args).handshake_hook
    assert hook is not None
    assert isinstance(hook(request("http://localhost:9000")), Accept)
    assert isinstance(hook(request("http://a.b")), Accept)
    assert isinstance(hook(request("http://c.d")), Reject)
    anyone = make_params(build_parser().parse_args(["serve", "--allow-origin", "*"]))
    assert anyone.handshake_hook is not None
    assert isinstance(anyone.handshake_hook(request("http://c.d")), Accept)


def test_echo_bot_answers_interrupt_and_ping() -> None:
    def reply(message: object) -> object:
        return echo_frame(InputTransportMessageFrame(message=message))

    assert isinstance(reply({"type": "interrupt"}), InterruptionFrame)
    ping = reply({"type": "ping", "t": 1.5})
    assert isinstance(ping, OutputTransportMessageUrgentFrame) and ping.message["t"] == 1.5
    other = reply(["not", "a", "dict"])
    assert type(other) is OutputTransportMessageFrame
