"""The opening handshake (RFC 6455 section 4) over h11, for both roles.

h11 parses and serializes HTTP/1.1 and enforces the head-size cap; this module applies the
WebSocket rules on top: which requests are upgrades, what makes one invalid (and with which
status), the application's accept/reject decision, and the client's checks of the 101 response.
Both handshakes are incremental: feed bytes, get ``None`` until an outcome is known.

The server reads the common case without h11: a ``GET ... HTTP/1.1`` request whose whole head
comes in the first read, in a strict subset of what h11 accepts (``_read_plain_request``:
printable ASCII, CRLF line ends, no folding, one Host, no body headers). Anything else, even a
request h11 would accept, goes to h11 as before, so the subset only has to be inside h11's
rules (``tests/core/test_handshake_fastpath.py`` checks both read every generated request
alike). h11 is made only when needed: for a request outside the subset, or to write a refusal.
"""

from __future__ import annotations

import base64
import binascii
import http
import re
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import h11
from wsproto.utilities import generate_accept_token

from wavewire.core.admission import (
    Accept,
    Denial,
    HandshakeRequest,
    HttpRequest,
    HttpResponse,
    Load,
    Reject,
    admit,
    health_response,
    refusal,
)
from wavewire.core.config import _HANDSHAKE_HEADERS, ClientConfig, ServerConfig
from wavewire.core.errors import HandshakeError, HandshakeRejected, InvalidHandshake, InvalidURI
from wavewire.core.headers import _TOKEN_CHARS, NO_BODY_STATUSES

from .framing import Deflate, MaskSource

__all__ = [
    "Accept",
    "ClientHandshake",
    "HandshakeRequest",
    "HttpRequest",
    "HttpResponse",
    "Reject",
    "ServerHandshake",
    "WebSocketURI",
    "parse_uri",
]

Headers = tuple[tuple[str, str], ...]


#: Header names and values most upgrade requests carry, decoded once: a server keeps each
#: connection's request headers for as long as it is open (``ClientHandle.headers``), and these
#: shared strings save about 500 bytes per connection. Fixed tables, never grown by a peer.
_COMMON_NAMES = {
    name.encode(): name
    for name in (
        *_HANDSHAKE_HEADERS,
        "user-agent",
        "accept",
        "accept-encoding",
        "accept-language",
        "authorization",
        "cache-control",
        "cookie",
        "pragma",
        "referer",
        "forwarded",
        "x-forwarded-for",
        "x-forwarded-host",
        "x-forwarded-proto",
        "x-real-ip",
        "x-request-id",
    )
}
_COMMON_VALUES = {
    value.encode(): value
    for value in (
        "websocket",
        "Websocket",
        "WebSocket",
        "Upgrade",
        "upgrade",
        "keep-alive, Upgrade",
        "Keep-Alive, Upgrade",
        "13",
        "permessage-deflate; client_max_window_bits",
        "permessage-deflate",
        "no-cache",
        "gzip, deflate",
        "gzip, deflate, br",
        "gzip, deflate, br, zstd",
        "*/*",
        "http",
        "https",
    )
}


#: Whole header pairs most upgrade requests carry, shared too (a pair is a 56-byte tuple).
_COMMON_PAIRS = {
    (name.encode(), value.encode()): (_COMMON_NAMES[name.encode()], _COMMON_VALUES[value.encode()])
    for name, value in (
        ("upgrade", "websocket"),
        ("connection", "Upgrade"),
        ("connection", "upgrade"),
        ("connection", "keep-alive, Upgrade"),
        ("sec-websocket-version", "13"),
        ("sec-websocket-extensions", "permessage-deflate; client_max_window_bits"),
        ("cache-control", "no-cache"),
        ("pragma", "no-cache"),
    )
}


RawHeaders = list[tuple[bytes, bytes]]


def _decode_headers(raw: RawHeaders) -> Headers:
    """Parsed headers (h11's ``raw_items()``, or the fast path's) as str pairs, names
    lower-cased. CR, LF and NUL were rejected in values; latin-1 maps every remaining byte."""
    pairs, names, values = _COMMON_PAIRS, _COMMON_NAMES, _COMMON_VALUES
    decoded = []
    for raw_name, value in raw:
        name = raw_name.lower()
        pair = pairs.get((name, value))
        if pair is None:
            pair = (
                names.get(name) or name.decode("ascii"),
                values.get(value) or value.decode("latin-1"),
            )
        decoded.append(pair)
    return tuple(decoded)


def _index(headers: Headers) -> dict[str, list[str]]:
    """Each header name's values, in order: the request's headers read once."""
    index: dict[str, list[str]] = {}
    for name, value in headers:
        values = index.get(name)
        if values is None:
            index[name] = [value]
        else:
            values.append(value)
    return index


def _values(headers: Headers, name: str) -> list[str]:
    return [value for key, value in headers if key == name]


def _split_tokens(values: Sequence[str]) -> list[str]:
    # Comma-separated list headers may also be repeated (RFC 9110 5.3); a linear split, no regex
    # (ws CVE-2021-32640 was a ReDoS in exactly this parsing).
    return [token.strip() for value in values for token in value.split(",")]


def _tokens(headers: Headers, name: str) -> list[str]:
    return _split_tokens(_values(headers, name))


# --- permessage-deflate negotiation (RFC 7692 section 7.1) ---------------------------------------

Params = tuple[tuple[str, str | None], ...]

_DEFLATE = "permessage-deflate"
_DEFLATE_PARAMS = frozenset(
    (
        "server_no_context_takeover",
        "client_no_context_takeover",
        "server_max_window_bits",
        "client_max_window_bits",
    )
)
#: RFC 7692 7.1.2: a window size is 8 to 15, written without leading zeros.
_WINDOW_BITS = {str(bits): bits for bits in range(8, 16)}
#: What the client offers: compression, and that the server may cap the client's window.
CLIENT_DEFLATE_OFFER = "permessage-deflate; client_max_window_bits"


def _split_unquoted(text: str, separator: str) -> list[str] | None:
    """``text`` split at ``separator`` outside quoted strings; None if a quote is unclosed."""
    parts: list[str] = []
    current: list[str] = []
    quoted = escaped = False
    for char in text:
        if escaped:
            escaped = False
        elif quoted:
            escaped = char == "\\"
            quoted = char != '"'
        elif char == separator:
            parts.append("".join(current))
            current = []
            continue
        else:
            quoted = char == '"'
        current.append(char)
    if quoted:  # (an escape is only ever inside quotes)
        return None
    parts.append("".join(current))
    return parts


def _is_token(text: str) -> bool:
    return bool(text) and _TOKEN_CHARS.issuperset(text)


def _param_value(raw: str) -> str | None:
    """A parameter's value: a token, or a quoted string holding one (RFC 6455 section 9.1)."""
    value = raw.strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        chars: list[str] = []
        escaped = False
        for char in value[1:-1]:
            if char == "\\" and not escaped:
                escaped = True
                continue
            escaped = False
            chars.append(char)
        value = "".join(chars)
    return value if _is_token(value) else None


def parse_extensions(values: Sequence[str]) -> list[tuple[str, Params]] | None:
    """``Sec-WebSocket-Extensions`` header values as ``(name, params)`` in order; a parameter
    without a value has None. None if the header is malformed. A linear scan, no regex."""
    extensions: list[tuple[str, Params]] = []
    for value in values:
        items = _split_unquoted(value, ",")
        if items is None:
            return None
        for item in items:
            if not item.strip():
                continue  # empty list elements are allowed (RFC 9110 5.6.1)
            pieces = _split_unquoted(item, ";")
            assert pieces is not None  # the quotes balanced in the whole item
            name = pieces[0].strip()
            if not _is_token(name):
                return None
            params: list[tuple[str, str | None]] = []
            for piece in pieces[1:]:
                key, eq, raw = piece.partition("=")
                key = key.strip()
                parsed = _param_value(raw) if eq else None
                if not _is_token(key) or (eq and parsed is None):
                    return None
                params.append((key, parsed))
            extensions.append((name, tuple(params)))
    return extensions


def _deflate_params(params: Params, *, response: bool) -> Deflate | None:
    """The permessage-deflate parameters ``params`` name, or None if one is unknown, repeated or
    has a bad value. In an offer ``client_max_window_bits`` may come without a value (the
    client supports the parameter); in a response every window size has one."""
    seen: dict[str, str | None] = {}
    for name, value in params:
        if name in seen or name not in _DEFLATE_PARAMS:
            return None
        if name.endswith("_no_context_takeover"):
            if value is not None:
                return None
        elif value is None:
            if response or name == "server_max_window_bits":
                return None
        elif value not in _WINDOW_BITS:
            return None
        seen[name] = value
    server_bits = seen.get("server_max_window_bits")
    client_bits = seen.get("client_max_window_bits") if response else None
    return Deflate(
        server_no_context_takeover="server_no_context_takeover" in seen,
        client_no_context_takeover="client_no_context_takeover" in seen,
        server_max_window_bits=None if server_bits is None else _WINDOW_BITS[server_bits],
        client_max_window_bits=None if client_bits is None else _WINDOW_BITS[client_bits],
    )


def accept_deflate(values: Sequence[str]) -> Deflate | None:
    """The server's choice among the client's offers (the ``Sec-WebSocket-Extensions`` header
    ``values``): the first valid permessage-deflate offer, agreed as offered (the server honours
    every request and caps nothing itself), or None.

    An offer's ``client_max_window_bits`` is not echoed: without it the client may use any
    window, and we inflate with the largest (15 bits), which reads them all.
    """
    offers = parse_extensions(values)
    for name, params in offers or ():
        if name == _DEFLATE:
            agreed = _deflate_params(params, response=False)
            if agreed is not None:
                return agreed
    return None


def _check_deflate_response(values: list[str]) -> Deflate | str:
    """The client's check of the server's ``Sec-WebSocket-Extensions``: what was agreed, or
    why the response is invalid."""
    extensions = parse_extensions(values)
    if extensions is None:
        return "the server's Sec-WebSocket-Extensions header is malformed"
    if [name for name, _ in extensions] != [_DEFLATE]:
        return "the server chose an extension not offered"
    agreed = _deflate_params(extensions[0][1], response=True)
    if agreed is None:
        return "the server's permessage-deflate parameters are invalid"
    return agreed


def _status_line_response(
    status_code: int,
    headers: Sequence[tuple[str, str]],
    body: bytes,
    connection: h11.Connection,
    *,
    head: bool = False,
) -> bytes:
    """A complete response that closes the connection; ``head``: the request was a HEAD, so
    the body is left out (its Content-Length stays, as for the GET, RFC 9110 9.3.2)."""
    phrase = http.HTTPStatus(status_code).phrase.encode() if status_code in _KNOWN else b""
    all_headers = [*headers]
    if status_code not in NO_BODY_STATUSES:
        all_headers.append(("Content-Length", str(len(body))))
    all_headers.append(("Connection", "close"))
    out = connection.send(h11.Response(status_code=status_code, headers=all_headers, reason=phrase))
    if body and not head:
        out += connection.send(h11.Data(data=body))
    out += connection.send(h11.EndOfMessage())
    return out


_KNOWN = frozenset(status.value for status in http.HTTPStatus)


#: A ``GET`` request head in a strict subset of h11's grammar (h11/_abnf.py): the request
#: line's target is visible ASCII (h11: the same), each header line is a token, a colon and
#: printable ASCII, spaces and tabs (h11 also takes other bytes but NUL and whitespace, and
#: folded lines), CRLF after every line (h11 also takes a bare LF). No group can match what the
#: next one starts with, so matching is linear; ``endpos`` bounds it by ``max_head_size``.
_PLAIN_REQUEST = re.compile(
    rb"GET ([\x21-\x7e]+) HTTP/1\.1\r\n"
    rb"((?:[-!#$%&'*+.^_`|~0-9A-Za-z]+:[\x20-\x7e\t]*\r\n)*)\r\n"
)


def _read_plain_request(data: bytes, max_head_size: int) -> tuple[bytes, RawHeaders, int] | None:
    """``(target, headers, head length)`` of a request head that ``data`` starts with, if it is
    in the fast path's subset and no larger than ``max_head_size``; else None (h11 reads it).

    Besides the grammar, h11 refuses a request without exactly one Host header (RFC 9112
    3.2) and checks Content-Length and Transfer-Encoding: such requests are left to it."""
    match = _PLAIN_REQUEST.match(data, 0, max_head_size)
    if match is None:
        return None
    headers: RawHeaders = []
    hosts = 0
    for line in match[2].split(b"\r\n")[:-1]:
        name, _, value = line.partition(b":")
        lower = name.lower()
        if lower == b"host":
            hosts += 1
        elif lower == b"content-length" or lower == b"transfer-encoding":
            return None
        headers.append((name, value.strip(b" \t")))
    if hosts != 1:
        return None
    return match[1], headers, match.end()


def _consumed(connection: h11.Connection, received: int) -> int:
    """How many of the ``received`` bytes fed to ``connection`` h11 has parsed."""
    return received - len(connection.trailing_data[0])


# --- server handshake outcomes -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Upgraded:
    request: HandshakeRequest
    subprotocol: str | None
    response: bytes
    #: Bytes the client sent after its request head: the first WebSocket frames, if any.
    trailing: bytes
    #: permessage-deflate, if agreed.
    deflate: Deflate | None = None


@dataclass(frozen=True, slots=True)
class Refused:
    status_code: int
    response: bytes
    detail: str
    #: False when the application's HTTP handler answered a plain request: not a failure.
    failed: bool = True


class ServerHandshake:
    """Reads one HTTP request and decides: upgrade, refusal, or a plain HTTP answer.

    ``load``: the server's state when the request is complete (admission refuses while
    draining; ``/readyz`` reports it); without it, an idle server's."""

    def __init__(
        self, config: ServerConfig, remote: object = None, load: Callable[[], Load] = Load
    ) -> None:
        self._config = config
        self._remote = remote
        self._load = load
        # Made when first needed (``_http``): the fast path reads most upgrades without it.
        self._h11: h11.Connection | None = None
        #: The first read, while only the fast path has read it (h11 is fed it to refuse).
        self._fast_read = b""
        self._received = 0
        #: The request is a HEAD: responses to it carry no body.
        self._head = False

    def receive_data(self, data: bytes) -> Upgraded | Refused | None:
        if not self._received:
            plain = _read_plain_request(data, self._config.max_head_size)
            if plain is not None:
                self._received = len(data)
                self._fast_read = data
                target, raw_headers, head_size = plain
                return self._handle_request(b"GET", target, b"1.1", raw_headers, data[head_size:])
        self._received += len(data)
        connection = self._http()
        connection.receive_data(data)
        try:
            event = connection.next_event()
        except h11.RemoteProtocolError as exc:
            status = exc.error_status_hint
            # h11's message quotes the offending bytes: keep a bounded copy for the event, and
            # echo none of it to the peer (a 16 KiB request line must not earn a 64 KiB answer).
            return self._refuse(
                status,
                f"invalid HTTP request: {str(exc)[:200]}",
                body=b"Failed to open a WebSocket connection: invalid HTTP request.\n",
            )
        if event is h11.NEED_DATA:
            return None
        # A server h11 connection in IDLE yields nothing but a Request or NEED_DATA first.
        assert isinstance(event, h11.Request)
        self._head = event.method == b"HEAD"
        # h11 caps only a head still incomplete (by more than the cap): one that arrives whole
        # in a chunk is checked here, so that the cap holds however the bytes were split.
        if _consumed(connection, self._received) > self._config.max_head_size:
            return self._refuse(431, "the request head is larger than max_head_size")
        trailing, _closed = connection.trailing_data
        return self._handle_request(
            event.method, event.target, event.http_version, event.headers.raw_items(), trailing
        )

    def _http(self) -> h11.Connection:
        """h11's connection, made on first use; a request the fast path read is fed to it
        first, so that it can write the refusal (it reads that request alike: see the module
        docstring)."""
        connection = self._h11
        if connection is None:
            connection = h11.Connection(
                h11.SERVER, max_incomplete_event_size=self._config.max_head_size
            )
            self._h11 = connection
            if self._fast_read:
                connection.receive_data(self._fast_read)
                self._fast_read = b""
                request = connection.next_event()
                assert isinstance(request, h11.Request)
        return connection

    def _handle_request(
        self,
        method: bytes,
        raw_target: bytes,
        http_version: bytes,
        raw_headers: RawHeaders,
        trailing: bytes | bytearray,
    ) -> Upgraded | Refused:
        headers = _decode_headers(raw_headers)
        index = _index(headers)
        target = raw_target.decode("ascii", "replace")
        if "upgrade" not in index:
            return self._plain_http(method.decode("ascii", "replace"), target, headers)
        problem = _upgrade_problem(method, http_version, index)
        if problem is not None:
            status, detail, extra = problem
            return self._refuse(status, detail, extra)
        origins = index.get("origin")
        offered = index.get("sec-websocket-protocol")
        request = HandshakeRequest(
            path=target,
            headers=headers,
            subprotocols=tuple(t for t in _split_tokens(offered) if t) if offered else (),
            origin=origins[0] if origins else None,
            remote=self._remote,
        )
        decision = admit(request, self._config, self._load())
        if isinstance(decision, Denial):
            return self._deny(decision)
        deflate = None
        if self._config.compression:
            deflate = accept_deflate(index.get("sec-websocket-extensions", ()))
        key = index["sec-websocket-key"][0]
        response = _switching_protocols(key, decision, deflate)
        return Upgraded(request, decision.subprotocol, response, bytes(trailing), deflate)

    def _plain_http(self, method: str, target: str, headers: Headers) -> Refused:
        if self._config.health_checks and method in ("GET", "HEAD"):
            health = health_response(target, self._load())
            if health is not None:
                return self._answer(health)
        handler = self._config.http_handler
        # A 2xx answer to CONNECT would turn the connection into a tunnel (h11 then refuses to
        # send the body), so CONNECT never reaches the handler: it gets the 426 below.
        if handler is not None and method != "CONNECT":
            try:
                answer = handler(HttpRequest(method=method, path=target, headers=headers))
            except Exception as exc:
                return self._refuse(500, f"http handler raised {exc!r}", body=b"")
            if answer is not None:
                return self._answer(answer)
        return self._refuse(
            426,
            "not a WebSocket upgrade request",
            (("Upgrade", "websocket"), ("Sec-WebSocket-Version", "13")),
        )

    def _answer(self, answer: HttpResponse) -> Refused:
        response = _status_line_response(
            answer.status_code, answer.headers, answer.body, self._http(), head=self._head
        )
        return Refused(answer.status_code, response, "plain HTTP request", failed=False)

    def _refuse(
        self,
        status: int,
        detail: str,
        headers: Sequence[tuple[str, str]] = (),
        body: bytes | None = None,
    ) -> Refused:
        return self._deny(refusal(status, detail, headers, body))

    def _deny(self, denial: Denial) -> Refused:
        response = _status_line_response(
            denial.status_code, denial.headers, denial.body, self._http(), head=self._head
        )
        return Refused(denial.status_code, response, denial.detail)


def _switching_protocols(key: str, decision: Accept, deflate: Deflate | None) -> bytes:
    """The 101 response (RFC 6455 section 4.2.2), written here rather than through h11: every
    value in it is printable ASCII already (a valid key's accept token; a subprotocol the
    client offered as a token; the extension we render; the hook's headers, checked by
    ``Accept``), and nothing follows it on this connection in HTTP."""
    accept = generate_accept_token(key.encode("ascii")).decode("ascii")
    lines = [
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Accept: {accept}\r\n"
    ]
    if decision.subprotocol is not None:
        lines.append(f"Sec-WebSocket-Protocol: {decision.subprotocol}\r\n")
    if deflate is not None:
        lines.append(f"Sec-WebSocket-Extensions: {deflate.header_value()}\r\n")
    lines.extend(f"{name}: {value}\r\n" for name, value in decision.headers)
    lines.append("\r\n")
    return "".join(lines).encode("ascii")


def _upgrade_problem(
    method: bytes, http_version: bytes, index: dict[str, list[str]]
) -> tuple[int, str, tuple[tuple[str, str], ...]] | None:
    """Why an upgrade request is invalid (status, detail, extra headers), or None if valid."""
    if method != b"GET":
        return 400, "the upgrade request's method must be GET", ()
    if http_version != b"1.1":
        return 400, "the upgrade request must use HTTP/1.1", ()
    # A body on an upgrade request is a smuggling vector (h11 CVE-2025-43859 class).
    if "transfer-encoding" in index or any(
        v.strip() != "0" for v in index.get("content-length", ())
    ):
        return 400, "the upgrade request must not have a body", ()
    upgrade = index["upgrade"]
    if len(upgrade) != 1 or [t.lower() for t in _split_tokens(upgrade)] != ["websocket"]:
        return 400, "invalid Upgrade header", ()
    if "upgrade" not in (t.lower() for t in _split_tokens(index.get("connection", ()))):
        return 400, "the Connection header must include 'upgrade'", ()
    version = index.get("sec-websocket-version", ())
    if len(version) != 1:
        return 400, "exactly one Sec-WebSocket-Version header is required", ()
    if version[0].strip() != "13":
        return 426, "unsupported WebSocket version", (("Sec-WebSocket-Version", "13"),)
    key = index.get("sec-websocket-key", ())
    if len(key) != 1:
        return 400, "exactly one Sec-WebSocket-Key header is required", ()
    try:
        raw_key = base64.b64decode(key[0].encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raw_key = b""
    if len(raw_key) != 16:
        return 400, "Sec-WebSocket-Key must be 16 bytes, base64-encoded", ()
    if len(index.get("origin", ())) > 1:
        return 400, "more than one Origin header", ()
    # RFC 6455 4.1: each offered subprotocol is a token. One that is not could not be chosen
    # and sent back (it may hold bytes that are not ASCII).
    offered = _split_tokens(index.get("sec-websocket-protocol", ()))
    if not all(_is_token(t) for t in offered if t):
        return 400, "invalid Sec-WebSocket-Protocol header", ()
    return None


# --- client side -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WebSocketURI:
    secure: bool
    host: str
    port: int
    #: Path and query, as sent in the request line.
    resource: str
    user_info: tuple[str, str] | None = None

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.secure else 80
        return host if self.port == default else f"{host}:{self.port}"


def parse_uri(uri: str) -> WebSocketURI:
    """Parse a ``ws://`` or ``wss://`` URI (RFC 6455 section 3); ``InvalidURI`` if unusable."""
    try:
        parts = urllib.parse.urlsplit(uri)
        port = parts.port
    except ValueError as exc:
        raise InvalidURI(f"{uri!r} is not a valid URI: {exc}") from None
    if parts.scheme not in ("ws", "wss"):
        raise InvalidURI(f"{uri!r} is not a WebSocket URI: the scheme must be ws or wss")
    if not parts.hostname:
        raise InvalidURI(f"{uri!r} has no host")
    if parts.fragment:
        raise InvalidURI(f"{uri!r} has a fragment, which WebSocket URIs may not have")
    secure = parts.scheme == "wss"
    resource = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    if any(c in resource for c in " \r\n\0"):
        raise InvalidURI(f"{uri!r} has whitespace or control characters in its path")
    user_info = None
    if parts.username is not None:
        user_info = (
            urllib.parse.unquote(parts.username),
            urllib.parse.unquote(parts.password or ""),
        )
    return WebSocketURI(
        secure=secure,
        host=parts.hostname,
        port=port if port is not None else (443 if secure else 80),
        resource=resource,
        user_info=user_info,
    )


@dataclass(frozen=True, slots=True)
class HandshakeAccepted:
    headers: Headers
    subprotocol: str | None
    trailing: bytes
    deflate: Deflate | None = None


@dataclass(frozen=True, slots=True)
class HandshakeFailure:
    error: HandshakeError


class ClientHandshake:
    """Builds the upgrade request and checks the server's answer."""

    def __init__(self, uri: WebSocketURI, config: ClientConfig, random_bytes: MaskSource) -> None:
        self._config = config
        self._key = base64.b64encode(random_bytes(16)).decode("ascii")
        self._h11 = h11.Connection(h11.CLIENT, max_incomplete_event_size=config.max_head_size)
        self._rejection: h11.Response | None = None
        self._body = bytearray()
        self._received = 0
        self._consumed = 0
        headers = [
            ("Host", uri.host_header),
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Key", self._key),
            ("Sec-WebSocket-Version", "13"),
        ]
        if config.subprotocols:
            headers.append(("Sec-WebSocket-Protocol", ", ".join(config.subprotocols)))
        if config.compression:
            headers.append(("Sec-WebSocket-Extensions", CLIENT_DEFLATE_OFFER))
        if config.origin is not None:
            headers.append(("Origin", config.origin))
        if uri.user_info is not None:
            credentials = ":".join(uri.user_info).encode("utf-8")
            headers.append(("Authorization", "Basic " + base64.b64encode(credentials).decode()))
        if config.user_agent is not None:
            headers.append(("User-Agent", config.user_agent))
        headers.extend(config.headers)
        self.request = self._h11.send(
            h11.Request(method="GET", target=uri.resource, headers=headers)
        )

    def receive_data(self, data: bytes) -> HandshakeAccepted | HandshakeFailure | None:
        self._received += len(data)
        self._h11.receive_data(data)
        while True:
            try:
                event = self._h11.next_event()
            except h11.RemoteProtocolError as exc:
                return HandshakeFailure(InvalidHandshake(f"invalid HTTP response: {exc}"))
            if event is h11.NEED_DATA:
                return None
            if isinstance(event, h11.InformationalResponse | h11.Response):
                # As on the server: h11 does not cap a head that arrives whole. Only heads
                # come before a head, so what h11 parsed since the last one is this head.
                consumed = _consumed(self._h11, self._received)
                size, self._consumed = consumed - self._consumed, consumed
                if size > self._config.max_head_size:
                    return HandshakeFailure(
                        InvalidHandshake("the response head is larger than max_head_size")
                    )
            if isinstance(event, h11.InformationalResponse):
                if event.status_code == 101:
                    return self._check_switch(event)
                continue  # 1xx interim responses carry nothing for us (RFC 9110 15.2)
            if isinstance(event, h11.Response):
                self._rejection = event
            elif isinstance(event, h11.Data):
                room = self._config.max_rejection_body - len(self._body)
                self._body += event.data[:room]
                if len(self._body) >= self._config.max_rejection_body:
                    return self._rejected()
            else:
                # EndOfMessage, or ConnectionClosed / PAUSED after an upgrade refused mid-body.
                return self._rejected()

    def receive_eof(self) -> HandshakeFailure:
        if self._rejection is not None:
            return self._rejected()
        return HandshakeFailure(InvalidHandshake("connection closed during the opening handshake"))

    def _rejected(self) -> HandshakeFailure:
        response = self._rejection
        assert response is not None
        return HandshakeFailure(
            HandshakeRejected(
                response.status_code,
                _decode_headers(response.headers.raw_items()),
                bytes(self._body),
            )
        )

    def _check_switch(
        self, event: h11.InformationalResponse
    ) -> HandshakeAccepted | HandshakeFailure:
        headers = _decode_headers(event.headers.raw_items())
        # RFC 6455 section 4.1, the client's checks of the server's handshake, in order.
        if [t.lower() for t in _tokens(headers, "upgrade")] != ["websocket"]:
            return HandshakeFailure(
                InvalidHandshake("the 101 response has no 'Upgrade: websocket'")
            )
        if "upgrade" not in (t.lower() for t in _tokens(headers, "connection")):
            return HandshakeFailure(
                InvalidHandshake("the 101 response has no 'Connection: upgrade'")
            )
        expected = generate_accept_token(self._key.encode("ascii")).decode("ascii")
        if _values(headers, "sec-websocket-accept") != [expected]:
            return HandshakeFailure(InvalidHandshake("wrong or missing Sec-WebSocket-Accept"))
        extensions = _values(headers, "sec-websocket-extensions")
        deflate: Deflate | None = None
        if extensions:
            if not self._config.compression:
                return HandshakeFailure(
                    InvalidHandshake("the server chose an extension not offered")
                )
            checked = _check_deflate_response(extensions)
            if isinstance(checked, str):
                return HandshakeFailure(InvalidHandshake(checked))
            deflate = checked
        protocols = _tokens(headers, "sec-websocket-protocol")
        subprotocol = None
        if protocols:
            if len(protocols) != 1 or protocols[0] not in self._config.subprotocols:
                return HandshakeFailure(
                    InvalidHandshake("the server chose a subprotocol not offered")
                )
            subprotocol = protocols[0]
        trailing, _closed = self._h11.trailing_data
        return HandshakeAccepted(headers, subprotocol, bytes(trailing), deflate)


__all__ += ["HandshakeAccepted", "HandshakeFailure", "Refused", "Upgraded"]
