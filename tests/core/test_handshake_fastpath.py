"""The server handshake's fast path (``_read_plain_request``) against h11.

The fast path reads a strict subset of what h11 accepts and leaves everything else to h11: on
every generated request head, whatever the fast path reads h11 reads alike (same target,
headers, head size and trailing bytes), and the handshake's outcome (the 101 or the refusal,
byte for byte, and the detail) is the same with the fast path as through h11 alone.
"""

from __future__ import annotations

import h11
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from wavewire.core.config import ServerConfig
from wavewire.core.events import ClientConnected
from wavewire.core.protocol import handshake
from wavewire.core.protocol.handshake import (
    Refused,
    ServerHandshake,
    Upgraded,
    _read_plain_request,
)
from wavewire.core.server import ServerProtocol

KEY = b"dGhlIHNhbXBsZSBub25jZQ=="
UPGRADE = [
    (b"Host", b"127.0.0.1:8765"),
    (b"Upgrade", b"websocket"),
    (b"Connection", b"Upgrade"),
    (b"Sec-WebSocket-Key", KEY),
    (b"Sec-WebSocket-Version", b"13"),
]
BROWSER = (
    b"GET /ws?room=1 HTTP/1.1\r\nHost: example.com\r\nConnection: Upgrade\r\n"
    b"Pragma: no-cache\r\nCache-Control: no-cache\r\nUser-Agent: Mozilla/5.0 (X11; Linux)\r\n"
    b"Upgrade: websocket\r\nOrigin: https://example.com\r\nSec-WebSocket-Version: 13\r\n"
    b"Accept-Encoding: gzip, deflate, br\r\nAccept-Language: en-US,en;q=0.9\r\n"
    b"Sec-WebSocket-Key: " + KEY + b"\r\n"
    b"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n"
)
CONFIGS = [
    ServerConfig(),
    ServerConfig(allowed_origins=["https://example.com"], subprotocols=["chat"], compression=True),
    ServerConfig(max_head_size=120),
]

# Bytes that each of h11's rules treats specially.
_PIECES = [b"\x00", b"\x01", b"\x0b", b"\x7f", b"\x80", b"\xff", b" ", b"\t", b"\r", b"\n"]
_PIECES += [b"\r\n", b"\r\n ", b"\n\n", b":", b",", b'"', b"a", b""]
_NAMES = st.sampled_from(
    [
        *(b"Host", b"host", b"HOST", b"Upgrade", b"Connection", b"Sec-WebSocket-Key"),
        *(b"Sec-WebSocket-Version", b"Origin", b"Sec-WebSocket-Protocol", b"X-A", b"x_~!"),
        *(b"Content-Length", b"content-length", b"Transfer-Encoding", b"Bad Name"),
    ]
)
_VALUES = st.sampled_from(
    [
        *(b"websocket", b"Upgrade", b"keep-alive, Upgrade", b"13", b"12", KEY, b"chat, json"),
        *(b"https://example.com", b"0", b"5", b"chunked", b"permessage-deflate", b"", b"a \t b"),
        *(b"\tpadded ", b"x\x01y", b"caf\xc3\xa9", b"no\x7fdel"),
    ]
)
_COLONS = st.sampled_from([b":", b": "] * 6 + [b":  ", b":\t", b" :"])


@st.composite
def request_heads(draw: st.DrawFn) -> bytes:
    """A well-formed upgrade head (or a near one), then up to three faults: a byte that one
    of h11's rules treats specially, inserted or written over one, anywhere in it."""
    method = draw(st.sampled_from([b"GET"] * 10 + [b"HEAD", b"POST", b"get"]))
    target = draw(st.sampled_from([b"/", b"/ws", b"/a?b=c", b"*", b"http://x/"]))
    version = draw(st.sampled_from([b"HTTP/1.1"] * 10 + [b"HTTP/1.0", b"HTTP/2.0"]))
    headers = list(UPGRADE) if draw(st.integers(0, 7)) else []
    headers += draw(st.lists(st.tuples(_NAMES, _VALUES), max_size=3))
    head = method + b" " + target + b" " + version + b"\r\n"
    for name, value in draw(st.permutations(headers)):
        head += name + draw(_COLONS) + value + b"\r\n"
    head += b"\r\n"
    for _ in range(draw(st.sampled_from([0, 0, 0, 1, 1, 2, 3]))):
        at = draw(st.integers(0, len(head) - 1))
        cut = at + draw(st.integers(0, 1))  # insert, or write over one byte
        head = head[:at] + draw(st.sampled_from(_PIECES)) + head[cut:]
    return head + draw(st.binary(max_size=6))


def h11_request(data: bytes) -> tuple[h11.Request, bytes]:
    connection = h11.Connection(h11.SERVER)
    connection.receive_data(data)
    event = connection.next_event()
    assert isinstance(event, h11.Request), event
    return event, bytes(connection.trailing_data[0])


def test_a_browsers_upgrade_is_read_without_h11() -> None:
    plain = _read_plain_request(BROWSER + b"\x81", 16384)
    assert plain is not None
    target, headers, size = plain
    assert (target, size) == (b"/ws?room=1", len(BROWSER))
    assert (b"User-Agent", b"Mozilla/5.0 (X11; Linux)") in headers
    server = ServerHandshake(ServerConfig())
    outcome = server.receive_data(BROWSER + b"\x81")
    assert isinstance(outcome, Upgraded) and outcome.trailing == b"\x81"
    assert server._h11 is None  # never made


def test_a_refusal_after_the_fast_path_is_written_by_h11() -> None:
    config = ServerConfig(allowed_origins=["https://other.example"])
    server = ServerHandshake(config)
    outcome = server.receive_data(BROWSER)
    assert isinstance(outcome, Refused) and outcome.status_code == 403
    assert outcome.response.startswith(b"HTTP/1.1 403 Forbidden\r\n")
    assert server._h11 is not None


@pytest.mark.parametrize(
    "head",
    [
        BROWSER.replace(b"\r\n", b"\n"),  # bare LF: h11 takes it
        BROWSER.replace(b"Pragma: no-cache\r\n", b"Pragma: no-cache\r\n  folded\r\n"),
        BROWSER.replace(b"Mozilla", b"Mo\x80zilla"),  # obs-text: h11 takes it
        BROWSER.replace(b"Host: example.com\r\n", b""),  # h11: 400, no Host
        BROWSER.replace(b"Host: example.com\r\n", b"Host: a\r\nHost: b\r\n"),
        BROWSER.replace(b"Pragma", b"Content-Length: 0\r\nPragma"),
        BROWSER.replace(b"HTTP/1.1", b"HTTP/1.0"),
        BROWSER.replace(b"GET", b"HEAD"),
        BROWSER[:-2],  # incomplete head
    ],
)
def test_requests_outside_the_subset_are_left_to_h11(head: bytes) -> None:
    assert _read_plain_request(head, 16384) is None


def test_a_head_over_max_head_size_is_left_to_h11() -> None:
    assert _read_plain_request(BROWSER, len(BROWSER)) is not None
    assert _read_plain_request(BROWSER, len(BROWSER) - 1) is None
    outcome = ServerHandshake(ServerConfig(max_head_size=len(BROWSER) - 1)).receive_data(BROWSER)
    assert isinstance(outcome, Refused) and outcome.status_code == 431


@settings(max_examples=400, deadline=None)
@given(request_heads())
@example(BROWSER)
@example(BROWSER.replace(b"Pragma: no-cache", b"Pragma:\tno-cache\t"))
@example(BROWSER.replace(b"Pragma: no-cache", b"Pragma: no\x01cache"))
def test_h11_reads_whatever_the_fast_path_reads_alike(data: bytes) -> None:
    plain = _read_plain_request(data, 16384)
    if plain is None:
        return
    target, headers, size = plain
    request, trailing = h11_request(data)
    assert (request.method, request.target, request.http_version) == (b"GET", target, b"1.1")
    assert request.headers.raw_items() == headers
    assert trailing == data[size:]


@settings(max_examples=300, deadline=None)
@given(request_heads(), st.sampled_from(CONFIGS))
@example(BROWSER, CONFIGS[0])
@example(BROWSER, CONFIGS[1])
def test_the_outcome_is_the_same_through_h11_alone(data: bytes, config: ServerConfig) -> None:
    fast = ServerHandshake(config).receive_data(data)
    original = handshake._read_plain_request
    handshake._read_plain_request = lambda data, max_head_size: None
    try:
        through_h11 = ServerHandshake(config).receive_data(data)
    finally:
        handshake._read_plain_request = original
    assert fast == through_h11


def test_an_open_connection_keeps_no_upgrade_outcome() -> None:
    server = ServerProtocol(ServerConfig(client_policy="multi"))
    connection_id = server.connection_made(0.0, ("127.0.0.1", 1))
    server.receive_data(connection_id, BROWSER, 0.0)
    assert server.data_to_send()[0].data.startswith(b"HTTP/1.1 101 ")
    (connected,) = server.events_received()
    assert isinstance(connected, ClientConnected)
    assert connected.connection.path == "/ws?room=1"
    assert ("user-agent", "Mozilla/5.0 (X11; Linux)") in connected.connection.headers
    assert server._connections[connection_id].upgrade is None
