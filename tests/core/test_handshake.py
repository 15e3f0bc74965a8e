"""The opening handshake (RFC 6455 section 4), both roles, driven with literal HTTP bytes.

No sockets and no sleeping: ``ServerProtocol`` and ``ClientProtocol`` are fed bytes and a
synthetic ``now``; what they write is compared with the exact bytes expected.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pytest

from wavewire.core.client import ClientProtocol
from wavewire.core.config import DEFAULT_MAX_HEAD_SIZE, ClientConfig, ServerConfig
from wavewire.core.errors import (
    HandshakeError,
    HandshakeRejected,
    HandshakeTimeout,
    InvalidHandshake,
    InvalidURI,
)
from wavewire.core.events import (
    ClientConnected,
    ClientEvent,
    Connected,
    ConnectFailed,
    ConnectionId,
    Disconnected,
    FrameReceived,
    HandshakeFailed,
    ServerEvent,
)
from wavewire.core.frames import InputTransportMessageFrame
from wavewire.core.protocol.connection import State, Transmit
from wavewire.core.protocol.handshake import (
    Accept,
    HandshakeRequest,
    HttpRequest,
    HttpResponse,
    Reject,
    WebSocketURI,
    parse_uri,
)
from wavewire.core.serializers import RawFrameSerializer
from wavewire.core.server import ServerProtocol

from .pair import CountingRandom

NOW = 1000.0
REMOTE = ("192.0.2.1", 50123)

#: RFC 6455 section 1.3's example key and the accept value it must produce.
RFC_KEY = "dGhlIHNhbXBsZSBub25jZQ=="
RFC_ACCEPT = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="

#: What ``CountingRandom`` gives as the client's key (bytes 0..15) and the matching accept.
CLIENT_KEY = "AAECAwQFBgcICQoLDA0ODw=="
CLIENT_ACCEPT = "Bz3qJYTGdOe8gUSpLosEdiLKDrk="

#: A text message ``"hi"`` (JSON for RawFrameSerializer), masked with key 37 fa 21 3d.
MASKED_TEXT_HI = bytes.fromhex("8184 37fa213d 1592481f")
#: The same message unmasked, as a server sends it.
TEXT_HI = b'\x81\x04"hi"'
HI = InputTransportMessageFrame(message="hi")
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"

UPGRADE_HEADERS = (
    ("Host", "server.example.com"),
    ("Upgrade", "websocket"),
    ("Connection", "Upgrade"),
    ("Sec-WebSocket-Key", RFC_KEY),
    ("Sec-WebSocket-Version", "13"),
)

RESPONSE_101 = (
    b"HTTP/1.1 101 Switching Protocols\r\n"
    b"Upgrade: websocket\r\n"
    b"Connection: Upgrade\r\n"
    b"Sec-WebSocket-Accept: " + RFC_ACCEPT.encode() + b"\r\n"
    b"\r\n"
)


# --- helpers -----------------------------------------------------------------------------------


def http_head(line: str, headers: Sequence[tuple[str, str]]) -> bytes:
    """A request or response head: ``line``, the headers, the blank line."""
    lines = [line, *(f"{name}: {value}" for name, value in headers)]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def upgrade(
    *,
    line: str = "GET /chat?x=1 HTTP/1.1",
    drop: Sequence[str] = (),
    change: dict[str, str] | None = None,
    add: Sequence[tuple[str, str]] = (),
) -> bytes:
    """The RFC's upgrade request, with headers dropped, changed or added (in that order)."""
    change = change or {}
    kept = [(name, change.get(name, value)) for name, value in UPGRADE_HEADERS if name not in drop]
    return http_head(line, [*kept, *add])


def bytewise(data: bytes) -> list[bytes]:
    """``data`` as one-byte chunks."""
    return [data[i : i + 1] for i in range(len(data))]


PLAIN_GET = http_head("GET / HTTP/1.1", [("Host", "a")])


def split_response(data: bytes) -> tuple[bytes, list[tuple[bytes, bytes]], bytes]:
    """Status line, header pairs (names lower-cased) and body of one HTTP response."""
    head, blank, body = data.partition(b"\r\n\r\n")
    assert blank, f"no complete head in {data!r}"
    status, *lines = head.split(b"\r\n")
    pairs = [line.split(b": ", 1) for line in lines]
    return status, [(name.lower(), value) for name, value in pairs], body


class Server:
    """One connection to a ``ServerProtocol``; collects everything it writes and reports."""

    def __init__(self, config: ServerConfig | None = None) -> None:
        self.protocol = ServerProtocol(config)
        self.id = self.protocol.connection_made(NOW, REMOTE)

    def feed(self, *chunks: bytes) -> tuple[list[Transmit], list[ServerEvent]]:
        """Feed each chunk in turn; return the transmits and events they caused."""
        for chunk in chunks:
            self.protocol.receive_data(self.id, chunk, NOW)
        return self.protocol.data_to_send(), self.protocol.events_received()

    def refused(self, *chunks: bytes) -> tuple[bytes, HandshakeFailed]:
        """Feed a request the server must refuse: one response, then close, one failure event."""
        transmits, events = self.feed(*chunks)
        assert [(t.connection_id, t.drop_pending, t.close) for t in transmits] == [
            (self.id, False, True)
        ]
        assert len(events) == 1
        assert isinstance(events[0], HandshakeFailed)
        assert events[0].connection_id == self.id
        return transmits[0].data, events[0]


def refuse(data: bytes, config: ServerConfig | None = None) -> tuple[bytes, HandshakeFailed]:
    """Feed ``data`` to a new server that must refuse it; its response and failure event."""
    return Server(config).refused(data)


def accept(data: bytes, config: ServerConfig | None = None) -> tuple[bytes, ClientConnected]:
    """Feed a request the server must accept: one 101 (connection kept open), one event."""
    server = Server(config)
    transmits, events = server.feed(data)
    assert [(t.drop_pending, t.close) for t in transmits] == [(False, False)]
    assert transmits[0].data.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
    assert len(events) == 1
    assert isinstance(events[0], ClientConnected)
    return transmits[0].data, events[0]


class HookReturning:
    """A handshake hook that records the requests it sees and returns ``decision``."""

    def __init__(self, decision: Any) -> None:
        self.decision = decision
        self.seen: list[HandshakeRequest] = []

    def __call__(self, request: HandshakeRequest) -> Any:
        self.seen.append(request)
        return self.decision


def failing(_: object) -> Any:
    raise RuntimeError("secret internal detail")


def new_client(uri: str = "ws://example.com:8080/chat?x=1", **config: Any) -> ClientProtocol:
    return ClientProtocol(uri, ClientConfig(**config), random_bytes=CountingRandom(), now=NOW)


def request_of(client: ClientProtocol) -> bytes:
    transmits = client.data_to_send()
    assert [(t.drop_pending, t.close) for t in transmits] == [(False, False)]
    return transmits[0].data


def answer(client: ClientProtocol, *chunks: bytes) -> list[ClientEvent]:
    """Feed the server's bytes to a client whose request was sent; return its events."""
    request_of(client)
    for chunk in chunks:
        client.receive_data(chunk, NOW)
    return client.events_received()


def connect_failed(client: ClientProtocol, *chunks: bytes, eof: bool = False) -> HandshakeError:
    """Feed a response the client must refuse; it closes the connection and reports why."""
    events = answer(client, *chunks)
    if eof:
        client.receive_eof(NOW)
        events += client.events_received()
    assert len(events) == 1
    assert isinstance(events[0], ConnectFailed)
    assert [t.close for t in client.data_to_send()] == [True]
    assert client.state is State.CLOSED
    return events[0].error


def switching(*headers: tuple[str, str], accept_key: str = CLIENT_ACCEPT) -> bytes:
    """A 101 response to the client's request, with extra headers."""
    base = [("Upgrade", "websocket"), ("Connection", "Upgrade")]
    return http_head(
        "HTTP/1.1 101 Switching Protocols",
        [*base, ("Sec-WebSocket-Accept", accept_key), *headers],
    )


# --- server: a valid upgrade ---------------------------------------------------------------------


def test_valid_upgrade_gets_the_exact_101_and_a_client_connected_event() -> None:
    response, event = accept(upgrade())
    assert response == RESPONSE_101
    info = event.connection
    assert info.id == ConnectionId(1)
    assert info.path == "/chat?x=1"
    assert info.remote == REMOTE
    assert info.subprotocol is None
    assert info.headers == (
        ("host", "server.example.com"),
        ("upgrade", "websocket"),
        ("connection", "Upgrade"),
        ("sec-websocket-key", RFC_KEY),
        ("sec-websocket-version", "13"),
    )
    assert info.header("Sec-WebSocket-Version") == "13"


def test_byte_at_a_time_gives_the_same_response_and_event() -> None:
    *start, last = bytewise(upgrade())
    server = Server()
    for i, byte in enumerate(start):
        assert server.feed(byte) == ([], []), f"output before the head was complete, at byte {i}"
    assert server.feed(last) == Server().feed(upgrade())


@pytest.mark.parametrize(
    "chunks",
    [
        pytest.param([upgrade() + MASKED_TEXT_HI], id="one-chunk"),
        pytest.param([upgrade()[:-1], b"\n" + MASKED_TEXT_HI], id="split-in-blank-line"),
        pytest.param(
            [upgrade()[:30], upgrade()[30:] + MASKED_TEXT_HI[:3], MASKED_TEXT_HI[3:]],
            id="split-mid-head-and-mid-frame",
        ),
        pytest.param(bytewise(upgrade() + MASKED_TEXT_HI), id="byte-at-a-time"),
    ],
)
def test_frames_after_the_request_head_are_processed(chunks: list[bytes]) -> None:
    server = Server(ServerConfig(serializer=RawFrameSerializer()))
    transmits, events = server.feed(*chunks)
    assert b"".join(t.data for t in transmits) == RESPONSE_101
    assert not any(t.close for t in transmits)
    assert [type(e) for e in events] == [ClientConnected, FrameReceived]
    assert isinstance(events[1], FrameReceived)
    assert events[1].frame == HI


# --- server: refusals ----------------------------------------------------------------------------


def test_malformed_request_gets_400_and_close() -> None:
    response, event = refuse(b"GET /\x00 HTTP/1.1\r\n\r\n")
    status, headers, body = split_response(response)
    assert status == b"HTTP/1.1 400 Bad Request"
    assert (b"connection", b"close") in headers
    assert (b"content-length", str(len(body)).encode()) in headers
    assert body.startswith(b"Failed to open a WebSocket connection: invalid HTTP request")
    assert event.status_code == 400


def test_tls_client_hello_is_refused_at_its_first_byte() -> None:
    # h11 refuses a request line starting with a control byte before waiting for a line end.
    _, event = refuse(b"\x16\x03\x01")
    assert event.status_code == 400


def _head_of_size(size: int) -> bytes:
    head = upgrade(add=[("X-Pad", "")])
    return head[:-4] + b"a" * (size - len(head)) + b"\r\n\r\n"


@pytest.mark.parametrize("byte_at_a_time", [False, True], ids=["one-chunk", "byte-at-a-time"])
def test_head_of_exactly_max_head_size_is_accepted(byte_at_a_time: bool) -> None:
    data = _head_of_size(DEFAULT_MAX_HEAD_SIZE)
    assert len(data) == DEFAULT_MAX_HEAD_SIZE
    chunks = bytewise(data) if byte_at_a_time else [data]
    _, events = Server().feed(*chunks)
    assert [type(e) for e in events] == [ClientConnected]


@pytest.mark.parametrize("excess", [1, 2, 10_000])
@pytest.mark.parametrize("byte_at_a_time", [False, True], ids=["one-chunk", "byte-at-a-time"])
def test_head_over_max_head_size_gets_431(excess: int, byte_at_a_time: bool) -> None:
    data = _head_of_size(DEFAULT_MAX_HEAD_SIZE + excess)
    chunks = bytewise(data) if byte_at_a_time else [data]
    response, event = Server().refused(*chunks)
    assert response.startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n")
    assert event.status_code == 431


def test_small_max_head_size_is_applied() -> None:
    config = ServerConfig(max_head_size=len(upgrade()) - 1)
    _, event = refuse(upgrade(), config)
    assert event.status_code == 431
    accept(upgrade(), ServerConfig(max_head_size=len(upgrade())))


def test_eof_before_the_request_fails_without_a_response() -> None:
    server = Server()
    assert server.feed(b"GET /cha") == ([], [])
    server.protocol.receive_eof(server.id, NOW)
    assert server.protocol.data_to_send() == [Transmit(server.id, b"", close=True)]
    assert server.protocol.events_received() == [
        HandshakeFailed(
            connection_id=server.id,
            status_code=None,
            detail="connection closed during the handshake",
        )
    ]
    assert server.protocol.connection_count == 0


def test_plain_get_gets_426_with_upgrade_header() -> None:
    response, event = refuse(PLAIN_GET)
    status, headers, _ = split_response(response)
    assert status == b"HTTP/1.1 426 Upgrade Required"
    assert (b"upgrade", b"websocket") in headers
    assert (b"sec-websocket-version", b"13") in headers
    assert event.status_code == 426


def test_http_handler_answers_plain_requests_without_a_failure_event() -> None:
    seen: list[HttpRequest] = []

    def handler(request: HttpRequest) -> HttpResponse:
        seen.append(request)
        return HttpResponse(status_code=200, headers=[("X-Health", "ok")], body=b"fine\n")

    server = Server(ServerConfig(http_handler=handler))
    transmits, events = server.feed(http_head("GET /health?full=1 HTTP/1.1", [("Host", "a")]))
    assert transmits == [
        Transmit(
            server.id,
            b"HTTP/1.1 200 OK\r\nX-Health: ok\r\nContent-Length: 5\r\nConnection: close\r\n\r\n"
            b"fine\n",
            close=True,
        )
    ]
    assert events == []
    assert seen == [HttpRequest(method="GET", path="/health?full=1", headers=(("host", "a"),))]


def test_http_response_with_unknown_status_has_no_reason_phrase() -> None:
    config = ServerConfig(http_handler=lambda _: HttpResponse(status_code=599))
    transmits, _ = Server(config).feed(PLAIN_GET)
    assert split_response(transmits[0].data)[0] == b"HTTP/1.1 599 "


def test_http_handler_returning_none_gets_426() -> None:
    _, event = refuse(PLAIN_GET, ServerConfig(http_handler=lambda _: None))
    assert event.status_code == 426


def test_http_handler_raising_gets_500_without_details_on_the_wire() -> None:
    response, event = refuse(PLAIN_GET, ServerConfig(http_handler=failing))
    status, _, body = split_response(response)
    assert status == b"HTTP/1.1 500 Internal Server Error"
    assert body == b""
    assert b"secret" not in response
    assert event.status_code == 500
    assert "secret internal detail" in event.detail


def _echo_handler(calls: list[HttpRequest]) -> Callable[[HttpRequest], HttpResponse]:
    def handler(request: HttpRequest) -> HttpResponse:
        calls.append(request)
        return HttpResponse(body=b"fine\n")

    return handler


@pytest.mark.parametrize(
    ("handled", "expected"),
    [
        pytest.param(True, b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n", id="handler"),
        pytest.param(False, b"HTTP/1.1 426 Upgrade Required\r\n", id="no-handler"),
    ],
)
def test_head_request_gets_the_headers_without_the_body(handled: bool, expected: bytes) -> None:
    # A HEAD response has no body (RFC 9110 9.3.2); sending one made h11 raise out of the core.
    calls: list[HttpRequest] = []
    config = ServerConfig(http_handler=_echo_handler(calls) if handled else None)
    transmits, events = Server(config).feed(http_head("HEAD / HTTP/1.1", [("Host", "a")]))
    assert [t.close for t in transmits] == [True]
    assert transmits[0].data.startswith(expected)
    _, headers, body = split_response(transmits[0].data)
    assert body == b""
    assert int(dict(headers)[b"content-length"]) > 0
    assert len(events) == (0 if handled else 1)


def test_head_upgrade_request_gets_400_without_body() -> None:
    response, event = refuse(upgrade(line="HEAD /chat HTTP/1.1"))
    assert split_response(response)[2] == b""
    assert event.status_code == 400


def test_connect_request_is_not_passed_to_the_http_handler() -> None:
    # A 2xx answer to CONNECT opens a tunnel; h11 then refused to send the body and raised.
    calls: list[HttpRequest] = []
    config = ServerConfig(http_handler=_echo_handler(calls))
    response, event = refuse(http_head("CONNECT a:443 HTTP/1.1", [("Host", "a:443")]), config)
    assert split_response(response)[0] == b"HTTP/1.1 426 Upgrade Required"
    assert event.status_code == 426
    assert calls == []


@pytest.mark.parametrize(
    ("status_code", "status_line"), [(204, b"204 No Content"), (304, b"304 Not Modified")]
)
def test_bodiless_status_is_sent_without_content_length(
    status_code: int, status_line: bytes
) -> None:
    config = ServerConfig(http_handler=lambda _: HttpResponse(status_code=status_code))
    transmits, _ = Server(config).feed(PLAIN_GET)
    assert transmits[0].data == b"HTTP/1.1 " + status_line + b"\r\nConnection: close\r\n\r\n"


def test_only_the_first_request_on_a_connection_is_processed() -> None:
    calls: list[HttpRequest] = []

    def handler(request: HttpRequest) -> HttpResponse:
        calls.append(request)
        return HttpResponse()

    server = Server(ServerConfig(http_handler=handler))
    plain = http_head("GET /one HTTP/1.1", [("Host", "a")])
    transmits, events = server.feed(plain + plain.replace(b"/one", b"/two"))
    assert [c.path for c in calls] == ["/one"]
    assert len(transmits) == 1
    assert transmits[0].data.count(b"HTTP/1.1") == 1
    assert events == []
    # The connection is finished: later bytes are discarded, not parsed.
    assert server.feed(plain) == ([], [])
    assert [c.path for c in calls] == ["/one"]


def test_refused_connection_ignores_later_bytes() -> None:
    server = Server()
    server.refused(upgrade(line="POST /chat HTTP/1.1"))
    assert server.feed(upgrade()) == ([], [])


@pytest.mark.parametrize(
    ("data", "status", "detail"),
    [
        pytest.param(
            upgrade(drop=["Upgrade"]),
            426,
            "not a WebSocket upgrade request",
            id="no-upgrade-header",
        ),
        pytest.param(
            upgrade(drop=["Upgrade"], add=[("Upgrade", "websocket"), ("Upgrade", "websocket")]),
            400,
            "invalid Upgrade header",
            id="two-upgrade-headers",
        ),
        pytest.param(
            upgrade(change={"Upgrade": "websocket, h2c"}),
            400,
            "invalid Upgrade header",
            id="two-upgrade-tokens",
        ),
        pytest.param(
            upgrade(change={"Upgrade": "h2c"}), 400, "invalid Upgrade header", id="upgrade-h2c"
        ),
        pytest.param(
            upgrade(drop=["Sec-WebSocket-Key"]),
            400,
            "exactly one Sec-WebSocket-Key header is required",
            id="no-key",
        ),
        pytest.param(
            upgrade(add=[("Sec-WebSocket-Key", RFC_KEY)]),
            400,
            "exactly one Sec-WebSocket-Key header is required",
            id="two-keys",
        ),
        pytest.param(
            upgrade(drop=["Sec-WebSocket-Version"]),
            400,
            "exactly one Sec-WebSocket-Version header is required",
            id="no-version",
        ),
        pytest.param(
            upgrade(add=[("Sec-WebSocket-Version", "13")]),
            400,
            "exactly one Sec-WebSocket-Version header is required",
            id="two-versions",
        ),
        *(
            pytest.param(
                upgrade(change={"Sec-WebSocket-Key": key}),
                400,
                "Sec-WebSocket-Key must be 16 bytes, base64-encoded",
                id=f"key-{name}",
            )
            for name, key in [
                ("15-bytes", "AAECAwQFBgcICQoLDA0O"),
                ("17-bytes", "AAECAwQFBgcICQoLDA0ODxA="),
                ("unpadded", "dGhlIHNhbXBsZSBub25jZQ"),
                ("not-base64", "dGhlIHNhbXBsZSBub25jZQ=!"),
                ("non-ascii", "dGhlIHNhbXBsZSBub25jZQ\xe9="),
            ]
        ),
        pytest.param(
            upgrade(line="POST /chat HTTP/1.1"),
            400,
            "the upgrade request's method must be GET",
            id="post",
        ),
        pytest.param(
            upgrade(line="GET /chat HTTP/1.0"),
            400,
            "the upgrade request must use HTTP/1.1",
            id="http-1.0",
        ),
        pytest.param(
            upgrade(add=[("Content-Length", "5")]) + b"hello",
            400,
            "the upgrade request must not have a body",
            id="content-length",
        ),
        pytest.param(
            upgrade(add=[("Transfer-Encoding", "chunked")]) + b"0\r\n\r\n",
            400,
            "the upgrade request must not have a body",
            id="chunked",
        ),
        pytest.param(
            upgrade(change={"Connection": "keep-alive"}),
            400,
            "the Connection header must include 'upgrade'",
            id="connection-without-upgrade",
        ),
        pytest.param(
            upgrade(drop=["Connection"]),
            400,
            "the Connection header must include 'upgrade'",
            id="no-connection",
        ),
        pytest.param(
            upgrade(add=[("Origin", "https://a.example"), ("Origin", "https://b.example")]),
            400,
            "more than one Origin header",
            id="two-origins",
        ),
    ],
)
def test_invalid_upgrade_request_is_refused(data: bytes, status: int, detail: str) -> None:
    response, event = refuse(data)
    assert split_response(response)[0].startswith(f"HTTP/1.1 {status} ".encode())
    assert (event.status_code, event.detail) == (status, detail)


def test_unsupported_version_gets_426_naming_version_13() -> None:
    response, event = refuse(upgrade(change={"Sec-WebSocket-Version": "8"}))
    status, headers, _ = split_response(response)
    assert status == b"HTTP/1.1 426 Upgrade Required"
    assert (b"sec-websocket-version", b"13") in headers
    assert event.status_code == 426


@pytest.mark.parametrize(
    "change",
    [
        {"Connection": "keep-alive, Upgrade"},
        {"Connection": "UPGRADE"},
        {"Upgrade": "WebSocket"},
        {"Sec-WebSocket-Version": " 13 "},
    ],
)
def test_header_tokens_are_case_insensitive_and_listed(change: dict[str, str]) -> None:
    response, _ = accept(upgrade(change=change))
    assert response == RESPONSE_101


def test_content_length_zero_is_not_a_body() -> None:
    accept(upgrade(add=[("Content-Length", "0")]))


# --- server: origins -----------------------------------------------------------------------------

ORIGINS = ServerConfig(allowed_origins=["https://app.example"])


def test_allowed_origin_is_accepted() -> None:
    _, event = accept(upgrade(add=[("Origin", "https://app.example")]), ORIGINS)
    assert event.connection.header("origin") == "https://app.example"


@pytest.mark.parametrize(
    "add", [[("Origin", "https://evil.example")], [("Origin", "https://APP.example")], []]
)
def test_other_or_missing_origin_gets_403(add: list[tuple[str, str]]) -> None:
    response, event = refuse(upgrade(add=add), ORIGINS)
    assert split_response(response)[0] == b"HTTP/1.1 403 Forbidden"
    assert event.status_code == 403


def test_a_refused_origin_is_quoted_bounded() -> None:
    origin = "https://" + "a" * 3000 + ".example"
    response, event = refuse(upgrade(add=[("Origin", origin)]), ORIGINS)
    assert len(event.detail) < 200 and "(3016 characters)" in event.detail
    assert len(response) < 500
    _, short = refuse(upgrade(add=[("Origin", "https://evil.example")]), ORIGINS)
    assert short.detail == "origin 'https://evil.example' is not allowed"


def test_missing_origin_is_accepted_when_none_is_allowed() -> None:
    config = ServerConfig(allowed_origins=["https://app.example", None])
    accept(upgrade(), config)
    refuse(upgrade(add=[("Origin", "https://evil.example")]), config)


# --- server: subprotocols and the handshake hook --------------------------------------------------


@pytest.mark.parametrize(
    ("offered", "chosen"),
    [
        ("chat, superchat", "superchat"),
        ("chat", "chat"),
        ("chat,, superchat ,", "superchat"),
        ("mqtt", None),
    ],
)
def test_server_picks_its_preferred_offered_subprotocol(offered: str, chosen: str | None) -> None:
    config = ServerConfig(subprotocols=["superchat", "chat"])
    response, event = accept(upgrade(add=[("Sec-WebSocket-Protocol", offered)]), config)
    _, headers, _ = split_response(response)
    protocol_headers = [v for n, v in headers if n == b"sec-websocket-protocol"]
    assert protocol_headers == ([] if chosen is None else [chosen.encode()])
    assert event.connection.subprotocol == chosen


@pytest.mark.parametrize("offered", ["caf\u00e9", "a b", "chat, a/b", "x=1"])
def test_an_offered_subprotocol_that_is_not_a_token_gets_400(offered: str) -> None:
    # A hook choosing what the client offered: "café" made the 101 unsendable (the server
    # raised UnicodeEncodeError out of receive_data).
    def echo_first(request: HandshakeRequest) -> Accept:
        return Accept(subprotocol=request.subprotocols[0])

    data = upgrade(add=[("Sec-WebSocket-Protocol", offered)])
    _, event = refuse(data, ServerConfig(subprotocols=[offered], handshake_hook=echo_first))
    assert (event.status_code, event.detail) == (400, "invalid Sec-WebSocket-Protocol header")


def test_request_headers_are_decoded_and_common_strings_shared() -> None:
    hook = HookReturning(Accept())
    data = upgrade(add=[("User-Agent", "caf\u00e9/1"), ("X-Custom", "Upgrade")])
    accept(data, ServerConfig(handshake_hook=hook))
    accept(data, ServerConfig(handshake_hook=hook))
    first, second = (request.headers for request in hook.seen)
    assert first == second
    assert first == (
        ("host", "server.example.com"),
        ("upgrade", "websocket"),
        ("connection", "Upgrade"),
        ("sec-websocket-key", RFC_KEY),
        ("sec-websocket-version", "13"),
        ("user-agent", "caf\u00e9/1"),
        ("x-custom", "Upgrade"),
    )
    # Every connection keeps its headers while open: the common names and values are one
    # string for all of them, the others each request's own; common pairs are one tuple.
    assert [a is b for a, b in zip(first, second, strict=True)] == [
        False,
        True,
        True,
        False,
        True,
        False,
        False,
    ]
    pairs = zip(first, second, strict=True)
    shared = [[a is b for a, b in zip(*pair, strict=True)] for pair in pairs]
    assert shared == [
        [True, False],  # host: the value is each request's
        [True, True],
        [True, True],
        [True, False],  # the key
        [True, True],
        [True, False],  # user-agent: not a table value
        [False, True],  # x-custom: not a table name; its value is one
    ]


def test_subprotocol_offered_in_two_headers() -> None:
    data = upgrade(add=[("Sec-WebSocket-Protocol", "a"), ("Sec-WebSocket-Protocol", "b")])
    _, event = accept(data, ServerConfig(subprotocols=["b"]))
    assert event.connection.subprotocol == "b"


def test_hook_sees_the_request_and_its_accept_is_applied() -> None:
    hook = HookReturning(Accept(subprotocol="chat", headers=[("X-A", "b")]))
    data = upgrade(
        line="GET /room?token=t1&token=t2 HTTP/1.1",
        add=[("Sec-WebSocket-Protocol", "superchat, chat"), ("Origin", "https://app.example")],
    )
    response, event = accept(data, ServerConfig(subprotocols=["superchat"], handshake_hook=hook))
    assert response == RESPONSE_101[:-2] + b"Sec-WebSocket-Protocol: chat\r\nX-A: b\r\n\r\n"
    assert event.connection.subprotocol == "chat"
    [request] = hook.seen
    assert request.path == "/room?token=t1&token=t2"
    assert request.query == {"token": ["t1", "t2"]}
    assert request.subprotocols == ("superchat", "chat")
    assert request.origin == "https://app.example"
    assert request.remote == REMOTE
    assert request.header("SEC-WEBSOCKET-KEY") == RFC_KEY
    assert request.header("x-missing") is None


def test_hook_reject_sends_its_response() -> None:
    reject = Reject(status_code=401, headers=[("WWW-Authenticate", "Bearer")], body=b"no token")
    response, event = refuse(upgrade(), ServerConfig(handshake_hook=HookReturning(reject)))
    assert response == (
        b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer\r\n"
        b"Content-Length: 8\r\nConnection: close\r\n\r\nno token"
    )
    assert (event.status_code, event.detail) == (401, "rejected by the handshake hook")


@pytest.mark.parametrize(
    ("hook", "detail"),
    [
        pytest.param(
            failing, "handshake hook raised RuntimeError('secret internal detail')", id="raises"
        ),
        pytest.param(HookReturning("yes"), "handshake hook returned 'yes'", id="bad-type"),
        pytest.param(
            HookReturning(Accept(subprotocol="mqtt")),
            "the handshake hook chose a subprotocol the client did not offer",
            id="unoffered-subprotocol",
        ),
    ],
)
def test_hook_misbehaving_gets_500_without_details(
    hook: Callable[[HandshakeRequest], Any], detail: str
) -> None:
    data = upgrade(add=[("Sec-WebSocket-Protocol", "chat")])
    response, event = refuse(data, ServerConfig(handshake_hook=hook))
    assert split_response(response)[0] == b"HTTP/1.1 500 Internal Server Error"
    assert b"secret" not in response
    assert (event.status_code, event.detail) == (500, detail)


# --- decision types: validated on construction ---------------------------------------------------


@pytest.mark.parametrize("status_code", [101, 200, 302, 399, 600])
def test_reject_needs_an_error_status(status_code: int) -> None:
    with pytest.raises(ValueError, match="4xx or 5xx"):
        Reject(status_code=status_code)


@pytest.mark.parametrize("status_code", [100, 101, 199, 600])
def test_http_response_needs_a_final_status(status_code: int) -> None:
    with pytest.raises(ValueError, match="200-599"):
        HttpResponse(status_code=status_code)


BAD_HEADERS = [
    pytest.param(("X-A", "b\r\nSet-Cookie: x=1"), id="crlf-value"),
    pytest.param(("X-A", "b\nc"), id="lf-value"),
    pytest.param(("X-A", "b\0"), id="nul-value"),
    pytest.param(("X A", "b"), id="space-in-name"),
    pytest.param(("X:A", "b"), id="colon-in-name"),
    pytest.param(("", "b"), id="empty-name"),
]
DECISIONS: list[Callable[[list[tuple[str, str]]], object]] = [
    lambda headers: Accept(headers=headers),
    lambda headers: Reject(headers=headers),
    lambda headers: HttpResponse(headers=headers),
]


@pytest.mark.parametrize("make", DECISIONS, ids=["Accept", "Reject", "HttpResponse"])
@pytest.mark.parametrize("header", BAD_HEADERS)
def test_decision_headers_are_validated(
    make: Callable[[list[tuple[str, str]]], object], header: tuple[str, str]
) -> None:
    with pytest.raises(ValueError, match="header"):
        make([header])


@pytest.mark.parametrize("status_code", [204, 304])
def test_http_response_with_bodiless_status_refuses_a_body(status_code: int) -> None:
    with pytest.raises(ValueError, match="has no body"):
        HttpResponse(status_code=status_code, body=b"x")


@pytest.mark.parametrize("make", DECISIONS, ids=["Accept", "Reject", "HttpResponse"])
@pytest.mark.parametrize("name", ["Content-Length", "transfer-encoding"])
def test_framing_headers_are_the_cores(
    make: Callable[[list[tuple[str, str]]], object], name: str
) -> None:
    # A caller's Content-Length conflicting with the body made h11 raise out of receive_data;
    # a 101 has neither header (RFC 9110 8.6, RFC 9112 6.1).
    with pytest.raises(ValueError, match="set by wavewire"):
        make([(name, "0")])


#: Headers h11 cannot send (non-ASCII value, non-token name) or RFC 9110 5.5 forbids (a control
#: character other than HTAB). Once accepted at construction: the server then raised
#: UnicodeEncodeError/LocalProtocolError out of receive_data, the client out of ClientProtocol().
UNSENDABLE_HEADERS = [
    pytest.param(("X-A", "caf\u00e9"), id="non-ascii-value"),
    pytest.param(("X-A", "a\x01b"), id="control-char-value"),
    pytest.param(("X(A)", "b"), id="non-token-name"),
]


@pytest.mark.parametrize(
    "make",
    [*DECISIONS, lambda headers: ClientConfig(additional_headers=headers)],
    ids=["Accept", "Reject", "HttpResponse", "ClientConfig"],
)
@pytest.mark.parametrize("header", UNSENDABLE_HEADERS)
def test_unsendable_headers_are_refused_at_construction(
    make: Callable[[list[tuple[str, str]]], object], header: tuple[str, str]
) -> None:
    with pytest.raises(ValueError, match="header"):
        make([header])


def test_hook_building_an_unsendable_accept_gets_500_not_an_exception() -> None:
    def hook(_: HandshakeRequest) -> Accept:
        return Accept(headers=[("X-A", "caf\u00e9")])

    _, event = refuse(upgrade(), ServerConfig(handshake_hook=hook))
    assert event.status_code == 500
    assert "printable ASCII" in event.detail


# --- open timeout --------------------------------------------------------------------------------


def test_half_a_request_is_aborted_exactly_at_open_timeout() -> None:
    server = Server(ServerConfig(open_timeout=5.0))
    assert server.feed(upgrade()[:40]) == ([], [])
    assert server.protocol.next_deadline() == NOW + 5.0
    server.protocol.handle_timer(NOW + 5.0 - 0.001)
    assert server.protocol.data_to_send() == []
    assert server.protocol.events_received() == []
    server.protocol.handle_timer(NOW + 5.0)
    assert server.protocol.data_to_send() == [
        Transmit(server.id, b"", drop_pending=True, close=True)
    ]
    assert server.protocol.events_received() == [
        HandshakeFailed(
            connection_id=server.id, status_code=None, detail="opening handshake timed out"
        )
    ]
    assert server.protocol.next_deadline() is None
    assert server.protocol.connection_count == 0


def test_open_timeout_none_never_fires() -> None:
    server = Server(ServerConfig(open_timeout=None))
    server.feed(b"GET")
    assert server.protocol.next_deadline() is None


def test_completed_handshake_disarms_the_open_timeout() -> None:
    server = Server(ServerConfig(open_timeout=5.0, ping_interval=None))
    server.feed(upgrade())
    assert server.protocol.next_deadline() is None


# --- client: the request -------------------------------------------------------------------------


def client_request(*headers: tuple[str, str], target: str = "/chat?x=1") -> bytes:
    """The client's upgrade request with ``headers`` after the fixed ones."""
    return http_head(
        f"GET {target} HTTP/1.1",
        [
            *headers[:1],
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Key", CLIENT_KEY),
            ("Sec-WebSocket-Version", "13"),
            *headers[1:],
        ],
    )


def test_client_request_bytes() -> None:
    assert request_of(new_client()) == client_request(
        ("Host", "example.com:8080"), ("User-Agent", "wavewire")
    )


@pytest.mark.parametrize(
    ("uri", "host", "target"),
    [
        ("ws://example.com/", "example.com", "/"),
        ("ws://example.com", "example.com", "/"),
        ("ws://example.com?q", "example.com", "/?q"),
        ("wss://example.com/", "example.com", "/"),
        ("ws://example.com:80/", "example.com", "/"),
        ("ws://example.com:443/", "example.com:443", "/"),
        ("wss://example.com:443/", "example.com", "/"),
        ("wss://example.com:80/", "example.com:80", "/"),
        ("ws://[::1]/", "[::1]", "/"),
        ("ws://[2001:db8::1]:9000/a/b", "[2001:db8::1]:9000", "/a/b"),
        ("ws://EXAMPLE.com/", "example.com", "/"),
    ],
)
def test_client_host_header(uri: str, host: str, target: str) -> None:
    assert request_of(new_client(uri, user_agent=None)) == client_request(
        ("Host", host), target=target
    )


@pytest.mark.parametrize(
    "additional_headers",
    [{"X-A": "1", "X-B": "2"}, [("X-A", "1"), ("X-B", "2")]],
    ids=["dict", "list"],
)
def test_client_request_with_every_option(additional_headers: Any) -> None:
    client = new_client(
        "ws://alice:s3cret@example.com/",
        subprotocols=["superchat", "chat"],
        origin="https://app.example",
        additional_headers=additional_headers,
        user_agent="agent/1",
    )
    assert request_of(client) == client_request(
        ("Host", "example.com"),
        ("Sec-WebSocket-Protocol", "superchat, chat"),
        ("Origin", "https://app.example"),
        ("Authorization", "Basic YWxpY2U6czNjcmV0"),
        ("User-Agent", "agent/1"),
        ("X-A", "1"),
        ("X-B", "2"),
        target="/",
    )


def test_client_percent_encoded_credentials_are_decoded() -> None:
    uri = parse_uri("ws://al%40ice:p%3Ass@example.com/")
    assert uri.user_info == ("al@ice", "p:ss")
    assert parse_uri("ws://alice@example.com/").user_info == ("alice", "")


@pytest.mark.parametrize("value", ["a\r\nX-Evil: 1", "a\rb", "a\nb", "a\0b"])
@pytest.mark.parametrize("field", ["additional_headers", "origin", "user_agent"])
def test_client_header_values_with_cr_lf_nul_are_refused(field: str, value: str) -> None:
    kwargs: dict[str, Any] = {field: {"X-A": value} if field == "additional_headers" else value}
    with pytest.raises(ValueError, match="CR, LF or NUL"):
        ClientConfig(**kwargs)


@pytest.mark.parametrize("name", ["X A", "X:A", "", "X\r\nA"])
def test_client_bad_header_name_is_refused(name: str) -> None:
    with pytest.raises(ValueError, match="invalid header name"):
        ClientConfig(additional_headers=[(name, "b")])


@pytest.mark.parametrize(
    ("uri", "match"),
    [
        ("http://example.com/", "scheme"),
        ("example.com/", "scheme"),
        ("ws:///path", "no host"),
        ("ws://example.com/#frag", "fragment"),
        ("ws://example.com:99999/", "not a valid URI"),
        ("ws://example.com:port/", "not a valid URI"),
        ("ws://[::1/", "not a valid URI"),
        ("ws://example.com/a b", "whitespace"),
    ],
)
def test_parse_uri_refuses_unusable_uris(uri: str, match: str) -> None:
    with pytest.raises(InvalidURI, match=match) as info:
        parse_uri(uri)
    assert isinstance(info.value, ValueError)
    with pytest.raises(InvalidURI):
        new_client(uri)


def test_parse_uri_result() -> None:
    assert parse_uri("wss://example.com/a?b=c") == WebSocketURI(
        secure=True, host="example.com", port=443, resource="/a?b=c"
    )


# --- client: the response -------------------------------------------------------------------------


def test_valid_101_gives_connected_with_subprotocol_and_headers() -> None:
    client = new_client(subprotocols=["superchat", "chat"])
    events = answer(client, switching(("Sec-WebSocket-Protocol", "chat"), ("X-Server", "1")))
    assert len(events) == 1
    assert isinstance(events[0], Connected)
    info = events[0].connection
    assert info.subprotocol == "chat"
    assert info.path == "/chat?x=1"
    assert info.remote == ("example.com", 8080)
    assert info.header("x-server") == "1"
    assert info.headers[0] == ("upgrade", "websocket")
    assert client.connection == info
    assert client.state is State.OPEN
    assert client.data_to_send() == []


def test_valid_101_byte_at_a_time() -> None:
    client = new_client()
    data = switching()
    events = answer(client, *bytewise(data))
    assert [type(e) for e in events] == [Connected]


def test_server_frames_in_the_same_chunk_as_the_101_are_delivered() -> None:
    client = new_client(serializer=RawFrameSerializer())
    events = answer(client, switching() + TEXT_HI + TEXT_HI[:2], TEXT_HI[2:])
    assert [type(e) for e in events] == [Connected, FrameReceived, FrameReceived]
    assert all(e.frame == HI for e in events[1:] if isinstance(e, FrameReceived))


def test_interim_100_continue_is_skipped() -> None:
    events = answer(new_client(), CONTINUE + switching())
    assert [type(e) for e in events] == [Connected]


@pytest.mark.parametrize(
    ("response", "match"),
    [
        pytest.param(switching(accept_key=RFC_ACCEPT), "Sec-WebSocket-Accept", id="wrong-accept"),
        pytest.param(
            switching(("Sec-WebSocket-Accept", CLIENT_ACCEPT)),
            "Sec-WebSocket-Accept",
            id="two-accepts",
        ),
        pytest.param(
            http_head(
                "HTTP/1.1 101 Switching Protocols",
                [("Connection", "Upgrade"), ("Sec-WebSocket-Accept", CLIENT_ACCEPT)],
            ),
            "Upgrade: websocket",
            id="no-upgrade",
        ),
        pytest.param(
            http_head(
                "HTTP/1.1 101 Switching Protocols",
                [("Upgrade", "websocket"), ("Sec-WebSocket-Accept", CLIENT_ACCEPT)],
            ),
            "Connection: upgrade",
            id="no-connection",
        ),
        pytest.param(
            switching(("Sec-WebSocket-Extensions", "permessage-deflate")),
            "extension",
            id="extension",
        ),
        pytest.param(switching(("Sec-WebSocket-Protocol", "mqtt")), "subprotocol", id="unoffered"),
        pytest.param(
            switching(("Sec-WebSocket-Protocol", "chat, superchat")),
            "subprotocol",
            id="two-protocols",
        ),
        pytest.param(
            switching(("Sec-WebSocket-Protocol", "chat"), ("Sec-WebSocket-Protocol", "chat")),
            "subprotocol",
            id="two-protocol-headers",
        ),
        pytest.param(b"SSH-2.0-OpenSSH_9.6\r\n\r\n", "invalid HTTP response", id="garbage"),
        pytest.param(b"HTTP/1.1 1000 Weird\r\n\r\n", "invalid HTTP response", id="bad-status"),
    ],
)
def test_invalid_101_fails_the_connection(response: bytes, match: str) -> None:
    error = connect_failed(new_client(subprotocols=["chat", "superchat"]), response)
    assert type(error) is InvalidHandshake
    assert match in str(error)


def test_subprotocol_in_101_without_any_offered_fails() -> None:
    error = connect_failed(new_client(), switching(("Sec-WebSocket-Protocol", "chat")))
    assert type(error) is InvalidHandshake


def _forbidden(body: bytes) -> bytes:
    return (
        http_head(
            "HTTP/1.1 403 Forbidden", [("Content-Length", str(len(body))), ("X-Why", "origin")]
        )
        + body
    )


def test_rejection_carries_status_headers_and_body() -> None:
    error = connect_failed(new_client(), _forbidden(b"go away"))
    assert isinstance(error, HandshakeRejected)
    assert error.status_code == 403
    assert error.headers == (("content-length", "7"), ("x-why", "origin"))
    assert error.body == b"go away"
    assert "403" in str(error)


def test_rejection_body_is_truncated_to_max_rejection_body() -> None:
    error = connect_failed(new_client(max_rejection_body=4), _forbidden(b"0123456789"))
    assert isinstance(error, HandshakeRejected)
    assert error.body == b"0123"


def test_rejection_body_limit_zero_keeps_nothing() -> None:
    error = connect_failed(new_client(max_rejection_body=0), _forbidden(b"0123456789"))
    assert isinstance(error, HandshakeRejected)
    assert error.body == b""


def test_rejection_body_arriving_in_pieces() -> None:
    data = _forbidden(b"0123456789")
    error = connect_failed(new_client(), data[:-7], data[-7:-3], data[-3:])
    assert isinstance(error, HandshakeRejected)
    assert error.body == b"0123456789"


def test_rejection_without_body() -> None:
    error = connect_failed(new_client(), _forbidden(b""))
    assert isinstance(error, HandshakeRejected)
    assert error.body == b""


def test_rejection_body_delimited_by_eof() -> None:
    # No Content-Length: the body runs to the end of the connection.
    data = http_head("HTTP/1.1 503 Service Unavailable", [("Retry-After", "5")]) + b"busy"
    error = connect_failed(new_client(), data, eof=True)
    assert isinstance(error, HandshakeRejected)
    assert (error.status_code, error.body) == (503, b"busy")


def test_eof_in_the_rejection_body_keeps_what_arrived() -> None:
    error = connect_failed(new_client(), _forbidden(b"0123456789")[:-4], eof=True)
    assert isinstance(error, HandshakeRejected)
    assert error.body == b"012345"


@pytest.mark.parametrize("received", [b"", b"HTTP/1.1 101 Switching Proto"])
def test_eof_before_the_response_head_fails(received: bytes) -> None:
    error = connect_failed(new_client(), received, eof=True)
    assert type(error) is InvalidHandshake
    assert "closed during the opening handshake" in str(error)


def test_client_open_timeout() -> None:
    client = new_client(open_timeout=5.0)
    assert client.next_deadline() == NOW + 5.0
    client.receive_data(b"HTTP/1.1 101 ", NOW)
    client.handle_timer(NOW + 5.0 - 0.001)
    assert client.events_received() == []
    client.handle_timer(NOW + 5.0)
    [event] = client.events_received()
    assert isinstance(event, ConnectFailed)
    assert type(event.error) is HandshakeTimeout
    # The request was never collected: it is dropped with everything else.
    assert client.data_to_send() == [Transmit(ConnectionId(1), b"", drop_pending=True, close=True)]
    assert client.next_deadline() is None


def test_client_close_during_handshake_aborts_it() -> None:
    client = new_client()
    request_of(client)
    client.close(NOW)
    [event] = client.events_received()
    assert isinstance(event, ConnectFailed)
    assert type(event.error) is HandshakeError
    assert client.data_to_send() == [Transmit(ConnectionId(1), b"", drop_pending=True, close=True)]


def test_client_response_head_over_max_head_size_fails() -> None:
    padded = switching(("X-Pad", "a" * 200))
    error = connect_failed(new_client(max_head_size=len(padded) - 1), padded)
    assert type(error) is InvalidHandshake
    events = answer(new_client(max_head_size=len(padded)), padded)
    assert [type(e) for e in events] == [Connected]
    # The cap is per head: an interim 100 before it does not count.
    events = answer(new_client(max_head_size=len(padded)), CONTINUE + padded)
    assert [type(e) for e in events] == [Connected]


# --- both roles, end to end ----------------------------------------------------------------------


def test_client_request_is_accepted_by_the_server_and_vice_versa() -> None:
    client = new_client(subprotocols=["chat"], serializer=RawFrameSerializer())
    server = Server(ServerConfig(subprotocols=["chat"], serializer=RawFrameSerializer()))
    transmits, server_events = server.feed(request_of(client))
    assert [type(e) for e in server_events] == [ClientConnected]
    client.receive_data(transmits[0].data, NOW)
    [connected] = client.events_received()
    assert isinstance(connected, Connected)
    assert connected.connection.subprotocol == "chat"
    client.receive_eof(NOW)
    assert [type(e) for e in client.events_received()] == [Disconnected]


def test_a_malformed_request_is_not_echoed_back() -> None:
    from wavewire.core.server import ServerProtocol

    server = ServerProtocol()
    cid = server.connection_made(0.0)
    line = b"GET /" + b"\x01" * 8000 + b" HTTP/1.1\r\n\r\n"
    server.receive_data(cid, line, 0.0)
    [transmit] = server.data_to_send()
    assert transmit.data.startswith(b"HTTP/1.1 400 ")
    assert len(transmit.data) < 300  # nothing of the request comes back
    [event] = server.events_received()
    assert isinstance(event, HandshakeFailed)
    assert len(event.detail) <= len("invalid HTTP request: ") + 200
