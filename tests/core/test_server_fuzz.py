"""Stateful fuzzing of the server core: random interleavings of peers, the application and time.

``ServerFuzz`` drives one ``ServerProtocol`` like an adapter would: every input is followed by
``data_to_send()`` and ``events_received()``, and timers are fired as the synthetic clock moves.
Peers are real ``ClientProtocol`` cores (their bytes travel through per-connection queues that
rules deliver in arbitrary splits, so close frames cross, EOFs race data, and so on) or raw byte
sources (junk, half requests, hand-built upgrade requests, hand-built frames). The model checks,
after every step, the event-order contract of ``events.py``, the client policies, the shape of
everything the server writes, and that timers, connections and output stay bounded.
"""

from __future__ import annotations

import base64
import functools
import struct
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import event as statistic
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from wavewire.core.client import ClientProtocol
from wavewire.core.config import ClientConfig, ClientPolicy, ServerConfig
from wavewire.core.errors import InvalidState
from wavewire.core.events import (
    ClientConnected,
    ClientDisconnected,
    ClientEvent,
    ClientRejected,
    Connected,
    ConnectFailed,
    ConnectionId,
    ConnectionInfo,
    DisconnectCause,
    Disconnected,
    FrameReceived,
    HandshakeFailed,
    MessageDropped,
    ServerEvent,
    SessionTimeout,
)
from wavewire.core.frames import (
    AudioRawFrame,
    Frame,
    InputAudioRawFrame,
    InputTransportMessageFrame,
    InterruptionFrame,
    TextFrame,
)
from wavewire.core.protocol.connection import State, Transmit
from wavewire.core.protocol.handshake import (
    Accept,
    HandshakeRequest,
    HttpRequest,
    HttpResponse,
    Reject,
)
from wavewire.core.serializers.base import SerializationError
from wavewire.core.server import REJECTED_CODE, REJECTED_REASON, REPLACED_REASON, ServerProtocol

from .pair import CountingRandom, Network

# --- configuration -------------------------------------------------------------------------------

MAX_MESSAGE = 256
MAX_HEAD = 1024
START = 1000.0
#: Time moves in multiples of 1/64 s so that sums are exact and deadlines get hit exactly.
TICK = 1 / 64

POLICIES: tuple[ClientPolicy, ...] = ("replace", "reject", "multi")
#: Close codes the peer may legitimately put on the wire (RFC 6455 7.4); 1005/1006/1015 never.
WIRE_CODES = frozenset((1000, 1001, 1002, 1003, *range(1007, 1015), *range(3000, 5000)))


class EchoSerializer:
    """Text messages are TextFrames, binary ones audio; a leading NUL byte is malformed and an
    empty binary message is ignored. Reversible, so the model can check message integrity."""

    def serialize(self, frame: Frame) -> bytes | str | None:
        if isinstance(frame, TextFrame):
            return frame.text
        if isinstance(frame, AudioRawFrame):
            return frame.audio
        return None

    def deserialize(self, data: bytes | str) -> Frame | None:
        if isinstance(data, str):
            return TextFrame(text=data)
        if not data:
            return None
        if data[0] == 0:
            raise SerializationError("leading NUL byte")
        return InputAudioRawFrame(audio=data, sample_rate=16000)


Observed = tuple[str, bytes | str]
DROPPED: Observed = ("dropped", b"")


def expected(message: bytes | str) -> Observed | None:
    """What ``EchoSerializer.deserialize`` makes of ``message``, as the model records it."""
    if isinstance(message, str):
        return ("text", message)
    if not message:
        return None
    if message[0] == 0:
        return DROPPED
    return ("bytes", message)


def observed(event: FrameReceived | MessageDropped) -> Observed:
    if isinstance(event, MessageDropped):
        return DROPPED
    frame = event.frame
    if isinstance(frame, TextFrame):
        return ("text", frame.text)
    assert isinstance(frame, InputAudioRawFrame), frame
    return ("bytes", frame.audio)


def expected_all(messages: list[bytes | str]) -> list[Observed]:
    return [e for e in map(expected, messages) if e is not None]


def handshake_hook(request: HandshakeRequest) -> Accept | Reject:
    if request.path.startswith("/forbidden"):
        return Reject(status_code=403, body=b"no")
    if request.path.startswith("/boom"):
        raise RuntimeError("application bug in the handshake hook")
    return Accept(subprotocol="chat" if "chat" in request.subprotocols else None)


def http_handler(request: HttpRequest) -> HttpResponse | None:
    if request.path == "/health":
        return HttpResponse(status_code=200, body=b"ok")
    return None


@dataclass(frozen=True)
class Timeouts:
    open: float
    close: float
    ping_interval: float
    ping_timeout: float
    session: float

    def all(self) -> tuple[float, ...]:
        return (self.open, self.close, self.ping_interval, self.ping_timeout, self.session)


def server_config(policy: ClientPolicy, t: Timeouts) -> ServerConfig:
    return ServerConfig(
        client_policy=policy,
        session_timeout=t.session,
        open_timeout=t.open,
        close_timeout=t.close,
        ping_interval=t.ping_interval,
        ping_timeout=t.ping_timeout,
        max_message_size=MAX_MESSAGE,
        max_head_size=MAX_HEAD,
        serializer=EchoSerializer(),
        handshake_hook=handshake_hook,
        http_handler=http_handler,
    )


def client_config(t: Timeouts, subprotocols: tuple[str, ...]) -> ClientConfig:
    return ClientConfig(
        open_timeout=t.open,
        close_timeout=t.close,
        ping_interval=t.ping_interval,
        ping_timeout=t.ping_timeout,
        max_message_size=MAX_MESSAGE,
        serializer=EchoSerializer(),
        subprotocols=subprotocols,
    )


def transmit_bound(input_len: int, app_len: int) -> int:
    """Most bytes one Transmit may carry after one call.

    Peer input can at most be echoed (pongs, close replies: never more than the frame that caused
    them); an application message adds its own frame (header <= 10 bytes); a handshake answer is
    a fixed head plus, for a malformed request, h11's repr of the buffered request line (<= 4
    bytes per buffered byte, and at most ``MAX_HEAD`` bytes are buffered); timers add a ping or a
    close frame.
    """
    return input_len + app_len + 14 + 4 * MAX_HEAD + 1024


# --- hand-built wire data -------------------------------------------------------------------------

VALID_KEY = base64.b64encode(bytes(range(16))).decode()


def upgrade_request(
    path: str = "/ws",
    *,
    method: str = "GET",
    version: str = "HTTP/1.1",
    key: str = VALID_KEY,
    ws_version: str = "13",
    extra: str = "",
) -> bytes:
    return (
        f"{method} {path} {version}\r\nHost: example.test\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
        f"Sec-WebSocket-Version: {ws_version}\r\n{extra}\r\n"
    ).encode()


VALID_REQUEST = upgrade_request()

BAD_REQUESTS = (
    upgrade_request(method="POST"),
    upgrade_request(version="HTTP/1.0"),
    upgrade_request(key="short"),
    upgrade_request(ws_version="8"),
    upgrade_request(extra="Transfer-Encoding: chunked\r\n"),
    upgrade_request(extra="Content-Length: 5\r\n"),
    upgrade_request(extra="Origin: a\r\nOrigin: b\r\n"),
    upgrade_request(path="/forbidden"),
    upgrade_request(path="/boom"),
    b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /other HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nX: " + b"a" * (2 * MAX_HEAD) + b"\r\n\r\n",
    b"\r\n\r\n",
    b"GET /\xff\xfe HTTP/1.1\r\n\r\n",
)


def encode_client_frame(
    opcode: int,
    payload: bytes,
    *,
    fin: bool = True,
    rsv: int = 0,
    mask: bytes | None = b"\x01\x02\x03\x04",
    declared: int | None = None,
) -> bytes:
    """One frame as a client would write it, or not: any opcode, rsv bits, mask or length."""
    length = len(payload) if declared is None else declared
    first = (0x80 if fin else 0) | (rsv << 4) | opcode
    mask_bit = 0x80 if mask is not None else 0
    if length < 126:
        header = bytes((first, mask_bit | length))
    elif length < 1 << 16:
        header = struct.pack("!BBH", first, mask_bit | 126, length)
    else:
        header = struct.pack("!BBQ", first, mask_bit | 127, length)
    if mask is None:
        return header + payload
    return header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


close_payloads = st.one_of(
    st.just(b""),
    st.just(b"\x03"),
    st.builds(
        lambda code, reason: struct.pack("!H", code) + reason,
        st.sampled_from([1000, 1001, 1002, 1003, 1005, 1006, 1011, 1015, 999, 2999, 3000, 4999]),
        st.one_of(st.just(b""), st.just(b"bye"), st.just(b"\xff\xfe"), st.binary(max_size=130)),
    ),
)


@st.composite
def client_frames(draw: st.DrawFn) -> tuple[bytes, bool]:
    """A frame from the peer, and whether it can change the message stream the server sees
    (anything but a well-formed ping or pong)."""
    opcode = draw(st.sampled_from([0x1, 0x2, 0x0, 0x8, 0x9, 0xA, 0x9, 0xA, 0x3, 0xB]))
    payload = draw(close_payloads if opcode == 0x8 else st.binary(max_size=140))
    fin = draw(st.booleans() | st.just(True))
    rsv = draw(st.sampled_from([0, 0, 0, 0, 1, 4]))
    mask = draw(st.sampled_from([b"\x01\x02\x03\x04", b"\x00\x00\x00\x00", None]))
    declared = draw(st.none() | st.none() | st.sampled_from([MAX_MESSAGE + 1, 1 << 40, 1 << 63]))
    if declared is not None:
        payload = payload[:8]
    frame = encode_client_frame(opcode, payload, fin=fin, rsv=rsv, mask=mask, declared=declared)
    harmless = (
        opcode in (0x9, 0xA)
        and fin
        and rsv == 0
        and mask is not None
        and declared is None
        and len(payload) <= 125
    )
    return frame, not harmless


raw_openings = st.one_of(
    st.binary(max_size=200),
    st.just(VALID_REQUEST),
    st.sampled_from(BAD_REQUESTS),
    st.builds(lambda n: VALID_REQUEST[:n], st.integers(0, len(VALID_REQUEST) - 1)),
    st.builds(
        lambda frames: VALID_REQUEST + b"".join(f for f, _ in frames),
        st.lists(client_frames(), max_size=3),
    ),
    st.builds(lambda junk: VALID_REQUEST + junk, st.binary(min_size=1, max_size=60)),
)

messages = st.one_of(
    st.text(max_size=30),
    st.binary(max_size=40),
    st.binary(min_size=MAX_MESSAGE - 2, max_size=MAX_MESSAGE + 40),
)
client_paths = st.sampled_from(["/ws", "/ws?token=1", "/forbidden", "/boom"])
close_codes = st.sampled_from([1000, 1001, 1003, 1008, 1011, 3000, 4999])
durations = st.one_of(
    st.integers(0, 16).map(lambda k: k * TICK),
    st.integers(0, 64 * 8).map(lambda k: k * TICK),
)


# --- server output, parsed ------------------------------------------------------------------------


@dataclass
class WireFrame:
    fin: bool
    rsv: int
    opcode: int
    payload: bytes


def parse_server_frames(buffer: bytearray) -> list[WireFrame]:
    """Complete frames at the start of ``buffer`` (removed from it); server frames are unmasked."""
    frames = []
    while len(buffer) >= 2:
        first, second = buffer[0], buffer[1]
        assert not second & 0x80, "the server masked a frame (RFC 6455 5.1)"
        length, start = second & 0x7F, 2
        if length == 126:
            if len(buffer) < 4:
                break
            (length,) = struct.unpack_from("!H", buffer, 2)
            start = 4
        elif length == 127:
            if len(buffer) < 10:
                break
            (length,) = struct.unpack_from("!Q", buffer, 2)
            start = 10
        if len(buffer) < start + length:
            break
        frames.append(
            WireFrame(
                bool(first & 0x80), (first >> 4) & 7, first & 0x0F, bytes(buffer[start:][:length])
            )
        )
        del buffer[: start + length]
    return frames


@dataclass
class ServerStream:
    """Everything the server produced for one connection (before any adapter-side drop)."""

    head: bytearray = field(default_factory=bytearray)
    status: int | None = None
    frames: bytearray = field(default_factory=bytearray)
    message_parts: list[bytes] = field(default_factory=list)
    message_opcode: int = 0
    messages: list[bytes | str] = field(default_factory=list)
    close_code: int | None = None
    close_reason: str | None = None
    close_at: float | None = None
    #: When the 101 went out, and when the last ping did: keepalive must keep them coming.
    opened_at: float | None = None
    last_ping_at: float | None = None


# --- the model of one connection -----------------------------------------------------------------


@dataclass
class Peer:
    cid: ConnectionId
    client: ClientProtocol | None
    made_at: float
    #: Peer to server: chunks not yet read by the server, then maybe the peer's EOF.
    to_server: deque[bytes] = field(default_factory=deque)
    to_server_started: int = 0
    to_server_eof: bool = False
    eof_delivered: bool = False
    #: Server to peer: chunks not yet delivered; ``to_peer_started`` bytes of the first are out.
    to_peer: deque[bytes] = field(default_factory=deque)
    to_peer_started: int = 0
    #: For ``drop_pending``: the first chunk (the handshake response) is never dropped.
    to_peer_first_len: int | None = None
    to_peer_delivered: int = 0
    to_peer_eof: bool = False
    #: The server's side of the socket is closed: it told us to close, or we reported it lost.
    told_close: bool = False
    lost: bool = False
    #: The peer's socket is closed: nothing more is delivered to it.
    peer_done: bool = False
    #: Bytes that did not come from the client core went in: no message-integrity checks.
    corrupted: bool = False
    output_dropped: bool = False
    client_sent: list[bytes | str] = field(default_factory=list)
    client_got: list[Observed] = field(default_factory=list)
    client_events: list[ClientEvent] = field(default_factory=list)
    app_sent: list[bytes | str] = field(default_factory=list)
    server_got: list[Observed] = field(default_factory=list)
    stream: ServerStream = field(default_factory=ServerStream)
    detached: bool = False
    expect_replace_transmit: bool = False
    #: A raw peer that sent a request the server must not upgrade.
    must_refuse: bool = False
    expect_reject_close: bool = False

    @property
    def server_side_open(self) -> bool:
        return not (self.told_close or self.lost)


def take(queue: deque[bytes], started: int, n: int) -> tuple[bytes, int]:
    """Up to ``n`` bytes from the front of ``queue``; returns them and the new ``started``."""
    out = bytearray()
    while queue and len(out) < n:
        chunk = queue[0]
        piece = chunk[started : started + n - len(out)]
        out += piece
        started += len(piece)
        if started == len(chunk):
            queue.popleft()
            started = 0
    return bytes(out), started


class ServerFuzz(RuleBasedStateMachine):
    """The machine; one subclass per client policy (``POLICY``) below."""

    POLICY: ClassVar[ClientPolicy] = "replace"
    connections: Bundle[ConnectionId] = Bundle("connections")

    def __init__(self) -> None:
        super().__init__()
        self.now = START
        self.last_timer = START
        self.peers: dict[ConnectionId, Peer] = {}
        self.connected: dict[ConnectionId, ConnectionInfo] = {}
        self.connected_at: dict[ConnectionId, float] = {}
        self.open: list[ConnectionId] = []  # adoption order, as ``server.clients``
        self.disconnected: dict[ConnectionId, ClientDisconnected] = {}
        self.closing_requested: set[ConnectionId] = set()
        self.timed_out: set[ConnectionId] = set()
        self.rejected: set[ConnectionId] = set()
        self.failed: dict[ConnectionId, int | None] = {}  # HandshakeFailed.status_code
        self.dropped: dict[ConnectionId, int] = {}
        self.shutdown_at: float | None = None
        self.policy: ClientPolicy = self.POLICY
        #: How the clock moves now: "step" and "live" fire every deadline at its exact time.
        self.timer_mode = "step"
        self.timeouts = Timeouts(1.0, 0.5, 2.0, 1.0, 3.0)
        self.server = ServerProtocol(server_config(self.policy, self.timeouts))

    # --- setup ---------------------------------------------------------------------------------

    @initialize(
        target=connections,
        handshake_now=st.booleans(),
        open_timeout=st.sampled_from([0.5, 1.0]),
        close_timeout=st.sampled_from([0.25, 0.5, 1.0, 4.0]),
        ping_interval=st.sampled_from([1.0, 2.0]),
        ping_timeout=st.sampled_from([0.5, 1.5, 3.0]),
        session_timeout=st.sampled_from([1.5, 3.0]),
    )
    def configure(
        self,
        handshake_now: bool,
        open_timeout: float,
        close_timeout: float,
        ping_interval: float,
        ping_timeout: float,
        session_timeout: float,
    ) -> ConnectionId:
        """Small timeouts (so that runs cross them) and a first client."""
        self.timeouts = Timeouts(
            open_timeout, close_timeout, ping_interval, ping_timeout, session_timeout
        )
        self.server = ServerProtocol(server_config(self.policy, self.timeouts))
        return self.new_client("/ws", chat=False, handshake_now=handshake_now)

    # --- driving the server like an adapter -----------------------------------------------------

    def call(
        self,
        action: Callable[[], object],
        *,
        input_len: int = 0,
        app_len: int = 0,
    ) -> None:
        """Run one server input or command, then collect and check its output and events.

        Anything ``action`` raises propagates: peer input and timers must never raise.
        """
        try:
            action()
        finally:
            self.collect(input_len, app_len)

    def collect(self, input_len: int, app_len: int) -> None:
        events = self.server.events_received()
        self.check_events(events)
        for transmit in self.server.data_to_send():
            self.on_transmit(transmit, transmit_bound(input_len, app_len))
        for peer in self.peers.values():
            assert not peer.expect_replace_transmit, (
                f"connection {peer.cid} was replaced but got no close frame"
            )
            if peer.expect_reject_close:
                peer.expect_reject_close = False
                stream = peer.stream
                assert (stream.close_code, stream.close_reason) == (REJECTED_CODE, REJECTED_REASON)

    def check_events(self, events: list[ServerEvent]) -> None:
        for index, event in enumerate(events):
            if isinstance(event, ClientConnected):
                cid = event.connection.id
                assert cid in self.peers
                assert cid not in self.connected, f"second ClientConnected for {cid}"
                assert cid not in self.rejected and cid not in self.failed
                assert self.shutdown_at is None, "a client was adopted after shutdown"
                self.connected[cid] = event.connection
                self.connected_at[cid] = self.now
                self.open.append(cid)
                if self.policy != "multi":
                    assert len(self.open) == 1, f"policy {self.policy}: clients {self.open}"
            elif isinstance(event, ClientDisconnected):
                cid = self.check_session_event(event.connection, event)
                self.open.remove(cid)
                self.disconnected[cid] = event
                statistic(f"ClientDisconnected {event.cause.value} {event.code}")
                assert event.code in WIRE_CODES or event.code in (1005, 1006), event
                peer = self.peers[cid]
                if event.cause is DisconnectCause.REPLACED:
                    assert self.policy == "replace"
                    assert (event.code, event.reason) == (1000, REPLACED_REASON)
                    following = events[index + 1] if index + 1 < len(events) else None
                    assert isinstance(following, ClientConnected), (
                        f"REPLACED disconnect of {cid} not immediately followed by the newcomer's "
                        f"ClientConnected: {events}"
                    )
                    assert following.connection.id != cid
                    peer.detached = True
                    # Its close frame goes out in this same call, unless it was already closing.
                    peer.expect_replace_transmit = cid not in self.closing_requested
                elif event.cause is DisconnectCause.KEEPALIVE_TIMEOUT:
                    client = peer.client
                    responsive = (
                        self.timer_mode == "live"
                        and client is not None
                        and client.state is State.OPEN
                        and not peer.peer_done
                        and not peer.corrupted
                    )
                    assert not responsive, f"keepalive timeout for {cid}, a responsive client"
                elif (
                    event.cause is DisconnectCause.CLOSED_BY_PEER
                    and peer.client is not None
                    and not peer.corrupted
                ):
                    # The client's close frame follows every message it sent: all arrived.
                    assert peer.server_got == expected_all(peer.client_sent), (
                        peer.server_got,
                        peer.client_sent,
                    )
                    if peer.client_sent:
                        statistic("checked: the server got all the client sent before its close")
            elif isinstance(event, FrameReceived | MessageDropped):
                cid = self.check_session_event(event.connection, event)
                peer = self.peers[cid]
                seen = observed(event)
                size = len(seen[1].encode() if isinstance(seen[1], str) else seen[1])
                assert size <= MAX_MESSAGE, f"a {size}-byte message passed max_message_size"
                peer.server_got.append(seen)
                origin = "a corrupted" if peer.corrupted else "a clean"
                statistic(f"{type(event).__name__} from {origin} peer")
                if isinstance(event, MessageDropped):
                    self.dropped[cid] = self.dropped.get(cid, 0) + 1
                    assert event.dropped_total == self.dropped[cid]
                if peer.client is not None and not peer.corrupted:
                    sent = expected_all(peer.client_sent)
                    assert peer.server_got == sent[: len(peer.server_got)], (
                        f"connection {cid}: the server got {peer.server_got}, client sent {sent}"
                    )
            elif isinstance(event, SessionTimeout):
                cid = self.check_session_event(event.connection, event)
                assert cid not in self.timed_out, f"second SessionTimeout for {cid}"
                assert self.now >= self.connected_at[cid] + self.timeouts.session, "early timeout"
                assert self.shutdown_at is None, "SessionTimeout after shutdown"
                if self.timer_mode != "jump":
                    due = self.connected_at[cid] + self.timeouts.session
                    assert self.now == due, f"SessionTimeout at {self.now}, due at {due}"
                self.timed_out.add(cid)
                statistic("SessionTimeout")
            elif isinstance(event, ClientRejected):
                cid = event.connection.id
                assert self.policy == "reject"
                assert cid in self.peers and cid not in self.connected
                assert cid not in self.rejected and cid not in self.failed
                assert len(self.open) == 1 and cid not in self.open
                self.rejected.add(cid)
                statistic("ClientRejected")
                # Nothing follows a client core's request (unless frames were injected after
                # it, which the server reads first): the 1013 close goes out now.
                peer = self.peers[cid]
                peer.expect_reject_close = peer.client is not None and not peer.corrupted
            else:
                assert isinstance(event, HandshakeFailed), event
                cid = event.connection_id
                assert cid in self.peers and cid not in self.connected
                assert cid not in self.rejected and cid not in self.failed
                self.failed[cid] = event.status_code
                statistic(f"HandshakeFailed {event.status_code}")

    def check_session_event(self, info: ConnectionInfo, event: ServerEvent) -> ConnectionId:
        cid = info.id
        assert cid in self.connected, f"{event} before ClientConnected"
        assert cid in self.open, f"{event} after ClientDisconnected"
        assert info is self.connected[cid], "a client's ConnectionInfo changed identity"
        return cid

    def on_transmit(self, transmit: Transmit, bound: int) -> None:
        cid = transmit.connection_id
        assert cid in self.peers, transmit
        peer = self.peers[cid]
        assert peer.server_side_open, f"output for {cid} after its close or loss: {transmit}"
        assert len(transmit.data) <= bound, f"{len(transmit.data)}-byte transmit > {bound}"
        assert transmit.data or transmit.close or transmit.drop_pending, "empty transmit"
        frames = self.parse_output(peer, transmit)
        if peer.expect_replace_transmit:
            peer.expect_replace_transmit = False
            assert transmit.drop_pending, "a replaced client's pending output was not dropped"
            assert [f.opcode for f in frames] == [0x8], frames
            close = (peer.stream.close_code, peer.stream.close_reason)
            assert close == (1000, REPLACED_REASON), close
        elif peer.detached:
            assert all(f.opcode == 0x8 for f in frames), f"output to a replaced client: {frames}"
        if transmit.drop_pending:
            peer.output_dropped = True
            # Neither the write in progress nor the connection's first bytes (its handshake
            # response, which the peer needs to read anything after it) are dropped.
            first_out = peer.to_peer_first_len is None or (
                peer.to_peer_delivered >= peer.to_peer_first_len
            )
            keep = (
                peer.to_peer[0]
                if peer.to_peer and (peer.to_peer_started or not first_out)
                else None
            )
            peer.to_peer.clear()
            if keep is not None:
                peer.to_peer.append(keep)
        if transmit.data:
            if peer.to_peer_first_len is None:
                peer.to_peer_first_len = len(transmit.data)
            peer.to_peer.append(transmit.data)
        if transmit.close:
            assert not peer.stream.frames, "the server closed mid-frame"
            assert peer.stream.status is not None or not peer.stream.head, "closed mid-head"
            peer.told_close = True
            peer.to_peer_eof = True
            peer.to_server.clear()  # the adapter reads no more
            peer.to_server_started = 0

    def parse_output(self, peer: Peer, transmit: Transmit) -> list[WireFrame]:
        stream = peer.stream
        data = transmit.data
        if stream.status is None:
            stream.head += data
            end = stream.head.find(b"\r\n\r\n")
            if end < 0:
                assert not transmit.close or not stream.head, "the server closed mid-head"
                return []
            status_line = bytes(stream.head[: stream.head.find(b"\r\n")])
            assert status_line.startswith(b"HTTP/1.1 "), status_line
            stream.status = int(status_line.split(b" ")[1])
            data = bytes(stream.head[end + 4 :])
            if stream.status != 101:
                assert 200 <= stream.status < 600
                assert transmit.close, "a refused handshake must close the connection"
                assert peer.cid not in self.connected
                # HandshakeFailed reports the status sent; a plain request answered is no failure.
                assert self.failed.get(peer.cid, 200) == stream.status, (self.failed, stream)
                return []
            assert not peer.must_refuse, f"upgraded {peer.cid} despite a bad request"
            stream.opened_at = self.now
        elif stream.status != 101:
            raise AssertionError(f"output after an HTTP {stream.status} answer")
        stream.frames += data
        frames = parse_server_frames(stream.frames)
        for frame in frames:
            assert stream.close_code is None, f"{frame} after the close frame"
            assert frame.rsv == 0, frame
            assert frame.opcode in (0x0, 0x1, 0x2, 0x8, 0x9, 0xA), frame
            if frame.opcode >= 0x8:
                assert frame.fin and len(frame.payload) <= 125, frame
            if frame.opcode == 0x8:
                assert len(frame.payload) != 1, frame
                stream.close_code, stream.close_reason = 1005, ""
                if frame.payload:
                    (code,) = struct.unpack_from("!H", frame.payload)
                    assert code in WIRE_CODES, f"close code {code} on the wire"
                    stream.close_code = code
                    stream.close_reason = frame.payload[2:].decode("utf-8")
                stream.close_at = self.now
            elif frame.opcode == 0x9:
                stream.last_ping_at = self.now
            elif frame.opcode in (0x0, 0x1, 0x2):
                assert peer.cid in self.open, f"data frame to {peer.cid}, not a session"
                if frame.opcode != 0x0:
                    assert not stream.message_parts, "a new message inside a fragmented one"
                    stream.message_opcode = frame.opcode
                stream.message_parts.append(frame.payload)
                if frame.fin:
                    payload = b"".join(stream.message_parts)
                    stream.message_parts = []
                    text = stream.message_opcode == 0x1
                    stream.messages.append(payload.decode("utf-8") if text else payload)
        return frames

    # --- driving peers -------------------------------------------------------------------------

    def collect_client(self, peer: Peer) -> None:
        client = peer.client
        assert client is not None
        for transmit in client.data_to_send():
            if transmit.drop_pending:
                first = peer.to_server[0] if peer.to_server_started else None
                peer.to_server.clear()
                if first is not None:
                    peer.to_server.append(first)
            if transmit.data:
                peer.to_server.append(transmit.data)
            if transmit.close:
                peer.to_server_eof = True
                peer.peer_done = True
        for event in client.events_received():
            self.check_client_event(peer, event)
            peer.client_events.append(event)

    def check_client_event(self, peer: Peer, event: ClientEvent) -> None:
        kinds = [type(e) for e in peer.client_events]
        assert ConnectFailed not in kinds and Disconnected not in kinds, (
            f"client event {event} after the end: {peer.client_events}"
        )
        if isinstance(event, Connected | ConnectFailed):
            assert Connected not in kinds, f"second opening outcome {event}"
            return
        assert Connected in kinds, f"client event {event} before Connected"
        if isinstance(event, FrameReceived | MessageDropped):
            statistic("client core received a message")
            peer.client_got.append(observed(event))
            sent = expected_all(peer.app_sent)
            assert peer.client_got == sent[: len(peer.client_got)], (peer.client_got, sent)
        elif (
            isinstance(event, Disconnected)
            and event.cause is DisconnectCause.CLOSED_BY_PEER
            and not peer.output_dropped
        ):
            # The server's close frame follows every message the application sent.
            assert peer.client_got == expected_all(peer.app_sent), (peer.client_got, peer.app_sent)
            if peer.app_sent:
                statistic("checked: the client got all the application sent before its close")

    def deliver_to_server(self, peer: Peer, n: int) -> bool:
        """Up to ``n`` bytes of the peer's output to the server (then its EOF); True if moved."""
        if not peer.server_side_open:
            peer.to_server.clear()
            peer.to_server_started = 0
            return False
        data, peer.to_server_started = take(peer.to_server, peer.to_server_started, n)
        if data:
            self.call(
                lambda: self.server.receive_data(peer.cid, data, self.now), input_len=len(data)
            )
            return True
        if peer.to_server_eof and not peer.eof_delivered:
            peer.eof_delivered = True
            self.call(lambda: self.server.receive_eof(peer.cid, self.now))
            return True
        return False

    def deliver_to_peer(self, peer: Peer, n: int) -> bool:
        """Up to ``n`` bytes of the server's output to the peer (then EOF); True if moved."""
        data, peer.to_peer_started = take(peer.to_peer, peer.to_peer_started, n)
        peer.to_peer_delivered += len(data)
        client = peer.client
        if client is None or peer.peer_done:
            if not data and peer.to_peer_eof:
                peer.to_peer_eof = False
                return True
            return bool(data)
        if data:
            client.receive_data(data, self.now)
        elif peer.to_peer_eof:
            peer.to_peer_eof = False
            client.receive_eof(self.now)
            peer.peer_done = True
        else:
            return False
        self.collect_client(peer)
        return True

    def pump(self, peers: list[Peer] | None = None) -> None:
        """Deliver everything both ways until nothing moves."""
        for _ in range(200):
            moved = False
            for peer in list(self.peers.values()) if peers is None else peers:
                while self.deliver_to_server(peer, 1 << 20):
                    moved = True
                while self.deliver_to_peer(peer, 1 << 20):
                    moved = True
            if not moved:
                return
        raise AssertionError("traffic never settles without time passing")

    def fire_timers(self, now: float) -> None:
        self.now = now
        self.call(lambda: self.server.handle_timer(now))
        self.last_timer = now
        deadline = self.server.next_deadline()
        assert deadline is None or deadline > now, f"deadline {deadline} not after {now}"
        for peer in list(self.peers.values()):
            if peer.client is not None and not peer.peer_done:
                peer.client.handle_timer(now)
                self.collect_client(peer)

    def advance(self, seconds: float, mode: str) -> None:
        target = self.now + seconds
        self.timer_mode = mode
        if mode == "live":
            self.pump()
        if mode == "jump":
            self.fire_timers(target)
            return
        for _ in range(10_000):
            deadlines = [self.server.next_deadline()]
            deadlines += [
                p.client.next_deadline()
                for p in self.peers.values()
                if p.client is not None and not p.peer_done
            ]
            due = [d for d in deadlines if d is not None and d <= target]
            if not due:
                break
            self.fire_timers(max(self.now, min(due)))
            if mode == "live":
                self.pump()
        else:
            raise AssertionError("timers keep falling due without time passing")
        self.fire_timers(target)
        if mode == "live":
            self.pump()

    def new_peer(self, client: ClientProtocol | None) -> Peer:
        cid = ConnectionId(0)

        def made() -> None:
            nonlocal cid
            cid = self.server.connection_made(self.now, ("192.0.2.1", 40000 + len(self.peers)))

        # A connection made during shutdown is answered in the same call: register it first.
        expected_id = ConnectionId(len(self.peers) + 1)
        peer = Peer(expected_id, client, self.now)
        self.peers[expected_id] = peer
        self.call(made)
        assert cid == expected_id, (cid, expected_id)
        return peer

    # --- rules: peers --------------------------------------------------------------------------

    @rule(
        target=connections,
        path=client_paths,
        chat=st.booleans(),
        handshake_now=st.booleans(),
    )
    def connect_client(self, path: str, chat: bool, handshake_now: bool) -> ConnectionId:
        return self.new_client(path, chat, handshake_now)

    def new_client(self, path: str, chat: bool, handshake_now: bool) -> ConnectionId:
        """A client core, its upgrade request queued (and, ``handshake_now``, delivered)."""
        client = ClientProtocol(
            f"ws://example.test{path}",
            client_config(self.timeouts, ("chat",) if chat else ()),
            random_bytes=CountingRandom(),
            now=self.now,
        )
        peer = self.new_peer(client)
        self.collect_client(peer)
        if handshake_now:
            self.pump([peer])
        return peer.cid

    @rule(
        target=connections,
        opening=raw_openings,
        cuts=st.lists(st.integers(1, 200), max_size=4),
        deliver_now=st.booleans(),
    )
    def connect_raw(self, opening: bytes, cuts: list[int], deliver_now: bool) -> ConnectionId:
        """A peer without a client core: junk, half requests, bad or good upgrade requests
        (with frames or junk after them), written in ``cuts``-sized pieces."""
        peer = self.new_peer(None)
        peer.corrupted = True
        peer.must_refuse = opening in BAD_REQUESTS
        rest = opening
        for cut in cuts:
            if rest:
                peer.to_server.append(rest[:cut])
                rest = rest[cut:]
        if rest:
            peer.to_server.append(rest)
        if deliver_now:
            while self.deliver_to_server(peer, 1 << 20):
                pass
        return peer.cid

    def pick_peer(self, pick: int, wanted: Callable[[Peer], bool]) -> Peer | None:
        """One of the peers ``wanted`` picks out (so that rules rarely act on dead ones)."""
        candidates = [p for p in self.peers.values() if wanted(p)]
        return candidates[pick % len(candidates)] if candidates else None

    @rule(pick=st.integers(0, 255), n=st.integers(1, 300))
    def deliver_some_to_server(self, pick: int, n: int) -> None:
        peer = self.pick_peer(pick, lambda p: bool(p.to_server) or p.to_server_eof)
        if peer is not None:
            self.deliver_to_server(peer, n)

    @rule(pick=st.integers(0, 255), n=st.integers(1, 300))
    def deliver_some_to_peer(self, pick: int, n: int) -> None:
        peer = self.pick_peer(pick, lambda p: bool(p.to_peer) or p.to_peer_eof)
        if peer is not None:
            self.deliver_to_peer(peer, n)

    @rule()
    def deliver_everything(self) -> None:
        self.pump()

    @rule(
        pick=st.integers(0, 255),
        batch=st.lists(messages, min_size=1, max_size=3),
        deliver=st.booleans(),
    )
    def client_sends(self, pick: int, batch: list[bytes | str], deliver: bool) -> None:
        """A client core sends messages (an open one, if any: else InvalidState is expected)."""
        peer = self.pick_peer(
            pick, lambda p: p.client is not None and p.client.state is State.OPEN
        ) or self.pick_peer(pick, lambda p: p.client is not None and not p.peer_done)
        if peer is None:
            return
        client = peer.client
        assert client is not None
        for message in batch:
            if client.state is State.OPEN and not peer.peer_done:
                client.send_message(message)
                peer.client_sent.append(message)
            else:
                with pytest.raises(InvalidState):
                    client.send_message(message)
        self.collect_client(peer)
        if deliver:
            self.pump([peer])

    @rule(
        pick=st.integers(0, 255),
        up=st.lists(messages, max_size=3),
        down=st.lists(messages, max_size=3),
        then=st.sampled_from(["nothing", "client closes", "app closes"]),
    )
    def conversation(
        self, pick: int, up: list[bytes | str], down: list[bytes | str], then: str
    ) -> None:
        """A well-behaved exchange with an open client, every byte delivered at once."""
        peer = self.pick_peer(
            pick,
            lambda p: (
                p.cid in self.open
                and p.cid not in self.closing_requested
                and p.client is not None
                and p.client.state is State.OPEN
                and not p.peer_done
            ),
        )
        if peer is None or peer.client is None:
            return
        self.pump([peer])
        for message in up:
            if peer.client.state is State.OPEN:
                peer.client.send_message(message)
                peer.client_sent.append(message)
        self.collect_client(peer)
        for message in down:
            size = len(message.encode() if isinstance(message, str) else message)
            send = functools.partial(self.server.send_message, peer.cid, message)
            if self.app_send(peer.cid, send, size):
                peer.app_sent.append(message)
        self.pump([peer])
        if then == "client closes" and not peer.peer_done:
            peer.client.close(self.now, 1000, "")
            self.collect_client(peer)
        elif then == "app closes":
            self.app_close(peer.cid, 1000, "")
        self.pump([peer])

    @rule(pick=st.integers(0, 255), code=close_codes, deliver=st.booleans())
    def client_closes(self, pick: int, code: int, deliver: bool) -> None:
        peer = self.pick_peer(pick, lambda p: p.client is not None and not p.peer_done)
        if peer is not None and peer.client is not None:
            peer.client.close(self.now, code, "client done")
            self.collect_client(peer)
            if deliver:
                self.pump([peer])

    @rule(
        cid=connections,
        what=st.one_of(
            st.binary(min_size=1, max_size=300).map(lambda b: ("bytes", b, True)),
            st.lists(client_frames(), min_size=1, max_size=4).map(
                lambda fs: ("frames", b"".join(f for f, _ in fs), any(d for _, d in fs))
            ),
        ),
        late=st.booleans(),
    )
    def inject(self, cid: ConnectionId, what: tuple[str, bytes, bool], late: bool) -> None:
        """Foreign input: raw bytes straight into the server, bypassing the peer's queue (even,
        ``late``, after the connection was closed: the core must discard them), or hand-built
        frames put in the peer's byte stream between two of its writes."""
        kind, data, disruptive = what
        peer = self.peers[cid]
        if kind == "frames":
            peer.to_server.append(data)
            peer.corrupted |= disruptive
            return
        if peer.server_side_open:
            peer.corrupted = True
        elif not late:
            return
        self.call(lambda: self.server.receive_data(cid, data, self.now), input_len=len(data))

    @rule(cid=connections, how=st.sampled_from(["peer_eof", "client_sees_eof", "lost"]))
    def disrupt(self, cid: ConnectionId, how: str) -> None:
        """``peer_eof``: the peer half-closes (a raw peer's EOF, or a client core's process dies).
        ``client_sees_eof``: the server-to-client stream ends early (a middlebox closed it).
        ``lost``: the socket is reset (or, if already closed, the adapter reports it late)."""
        peer = self.peers[cid]
        client = peer.client
        if how == "lost":
            self.call(lambda: self.server.connection_lost(cid, self.now))
            peer.lost = True
            peer.to_server.clear()
            peer.to_server_started = 0
            peer.to_peer.clear()
            peer.to_peer_started = 0
        else:
            peer.to_server_eof = True
        if client is not None and not peer.peer_done:
            if how == "client_sees_eof":
                client.receive_eof(self.now)
            else:
                client.connection_lost(self.now)
            self.collect_client(peer)
            peer.peer_done = True

    # --- rules: the application ----------------------------------------------------------------

    def pick_client(self, pick: int) -> ConnectionId | None:
        clients = self.server.clients
        return clients[pick % len(clients)].id if clients else None

    def app_send(self, cid: ConnectionId, send: Callable[[], object], app_len: int) -> bool:
        """Run an application send; it must succeed on an open session, else InvalidState."""
        must_work = cid in self.open and cid not in self.closing_requested
        try:
            self.call(send, app_len=app_len)
        except InvalidState:
            assert not must_work, f"InvalidState sending to open session {cid}"
            return False
        assert cid in self.open, f"a send to {cid}, not a session, was accepted"
        assert must_work, f"a send to closing session {cid} was accepted"
        return True

    @rule(pick=st.integers(0, 7), batch=st.lists(messages, min_size=1, max_size=3), cid=connections)
    def app_sends_messages(self, pick: int, batch: list[bytes | str], cid: ConnectionId) -> None:
        """To a client (or, ``pick`` >= 6, to any connection: InvalidState unless a session)."""
        target = self.pick_client(pick)
        target = cid if target is None or pick >= 6 else target
        for message in batch:
            size = len(message.encode() if isinstance(message, str) else message)
            send = functools.partial(self.server.send_message, target, message)
            if self.app_send(target, send, size):
                self.peers[target].app_sent.append(message)

    @rule(pick=st.integers(0, 7), text=st.text(max_size=20), skipped=st.booleans())
    def app_sends_frame(self, pick: int, text: str, skipped: bool) -> None:
        """``send_frame`` of a TextFrame (one text message), or of a frame the serializer does
        not send (nothing goes out, the result is False)."""
        target = self.pick_client(pick)
        if target is None:
            return
        frame: Frame = InterruptionFrame() if skipped else TextFrame(text=text)
        result: list[bool] = []
        if self.app_send(
            target,
            lambda: result.append(self.server.send_frame(target, frame, self.now)),
            4 * len(text),
        ):
            assert result == [not skipped]
            if not skipped:
                self.peers[target].app_sent.append(text)

    @rule(
        pick=st.integers(0, 7),
        cid=connections,
        code=close_codes,
        reason=st.sampled_from(["", "bye", "é" * 61]),
    )
    def app_closes(self, pick: int, cid: ConnectionId, code: int, reason: str) -> None:
        """Close a client (or, ``pick`` >= 6, any connection: ``close`` never raises for an id
        the server issued, whatever its state)."""
        target = self.pick_client(pick)
        self.app_close(cid if target is None or pick >= 6 else target, code, reason)

    def app_close(self, cid: ConnectionId, code: int, reason: str) -> None:
        if cid in self.open:
            self.closing_requested.add(cid)
        self.call(lambda: self.server.close(cid, self.now, code, reason))

    @rule(bad=st.sampled_from([0, 1]))
    def app_misuses_ids(self, bad: int) -> None:
        """Ids the server never issued are the caller's error (InvalidState), as are close codes
        that may not be sent (ValueError); the server's state is untouched."""
        unknown = ConnectionId(0 if bad == 0 else len(self.peers) + 1)
        with pytest.raises(InvalidState):
            self.server.send_message(unknown, b"x")
        with pytest.raises(InvalidState):
            self.server.close(unknown, self.now)
        with pytest.raises(InvalidState):
            self.server.receive_data(unknown, b"x", self.now)
        with pytest.raises(ValueError, match="may not be sent"):
            self.server.close(ConnectionId(1), self.now, 1006)
        self.collect(0, 0)

    @precondition(lambda self: self.shutdown_at is None and len(self.peers) >= 3)
    @rule()
    def shutdown(self) -> None:
        """Once, after some activity (teardown shuts down again: it must be idempotent)."""
        if self.shutdown_at is None:
            self.shutdown_at = self.now
        self.closing_requested.update(self.open)
        self.call(lambda: self.server.shutdown(self.now))

    # --- rules: time ---------------------------------------------------------------------------

    @rule(seconds=durations, mode=st.sampled_from(["jump", "step", "live"]))
    def time_passes(self, seconds: float, mode: str) -> None:
        self.advance(seconds, mode)

    @rule(which=st.sampled_from(["open", "close", "ping_interval", "ping_timeout", "session"]))
    def time_crosses(self, which: str) -> None:
        """Land exactly on, then just past, one of the configured timeouts."""
        seconds = getattr(self.timeouts, which)
        self.advance(seconds, "step")
        self.advance(TICK, "step")

    @rule()
    def timer_fires_early(self) -> None:
        """``handle_timer`` before anything is due is harmless."""
        self.fire_timers(self.now)

    # --- invariants ----------------------------------------------------------------------------

    @invariant()
    def nothing_left_behind(self) -> None:
        assert self.server.data_to_send() == [], "output produced outside any call"
        assert self.server.events_received() == [], "events produced outside any call"

    @invariant()
    def sessions_match_the_model(self) -> None:
        assert [c.id for c in self.server.clients] == self.open
        if self.policy != "multi":
            assert len(self.server.clients) <= 1
        alive = sum(1 for p in self.peers.values() if p.server_side_open)
        assert self.server.connection_count == alive

    @invariant()
    def output_matches_the_application(self) -> None:
        for peer in self.peers.values():
            assert peer.stream.messages == peer.app_sent, peer.cid

    @invariant()
    def deadlines_are_kept(self) -> None:
        deadline = self.server.next_deadline()
        assert deadline is None or deadline > self.now
        t = self.timeouts
        for cid, peer in self.peers.items():
            settled = (
                cid in self.connected
                or cid in self.rejected
                or cid in self.failed
                or peer.stream.status is not None
            )
            assert settled or peer.made_at + t.open > self.last_timer, (
                f"connection {cid} still handshaking after open_timeout"
            )
            opened_at = peer.stream.opened_at
            if opened_at is not None and peer.stream.close_at is None and peer.server_side_open:
                last = max(opened_at, peer.stream.last_ping_at or opened_at)
                assert last + t.ping_interval + max(t.ping_interval, t.ping_timeout) > (
                    self.last_timer
                ), f"connection {cid}: no ping since {last}, and still open"
            close_at = peer.stream.close_at
            if close_at is not None and peer.server_side_open:
                assert close_at + t.close > self.last_timer, (
                    f"connection {cid} still open close_timeout after its close frame"
                )
        for cid in self.open:
            due = self.connected_at[cid] + t.session
            if due <= self.last_timer and (self.shutdown_at is None or self.shutdown_at >= due):
                assert cid in self.timed_out, f"no SessionTimeout for {cid}"

    def teardown(self) -> None:
        if not self.peers and self.shutdown_at is None:
            return
        self.shutdown()
        self.pump()
        self.advance(max(self.timeouts.all()) + 1, "live")
        assert self.server.connection_count == 0
        assert self.server.clients == ()
        assert self.server.next_deadline() is None
        assert set(self.connected) == set(self.disconnected), "a client was never disconnected"
        for cid, peer in self.peers.items():
            assert not peer.server_side_open
            outcomes = (cid in self.connected) + (cid in self.rejected) + (cid in self.failed)
            answered = peer.stream.status not in (None, 101)
            if self.failed.get(cid, 0) is None:
                assert peer.stream.status is None, "HandshakeFailed(None) but a status was sent"
            assert outcomes == 1 or (outcomes == 0 and answered), (cid, outcomes, peer.stream)


FUZZ_SETTINGS = settings(
    max_examples=150,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


class ReplaceFuzz(ServerFuzz):
    POLICY = "replace"


class RejectFuzz(ServerFuzz):
    POLICY = "reject"


class MultiFuzz(ServerFuzz):
    POLICY = "multi"


TestReplacePolicy = ReplaceFuzz.TestCase
TestReplacePolicy.settings = FUZZ_SETTINGS
TestRejectPolicy = RejectFuzz.TestCase
TestRejectPolicy.settings = FUZZ_SETTINGS
TestMultiPolicy = MultiFuzz.TestCase
TestMultiPolicy.settings = FUZZ_SETTINGS


# --- stateless: random bytes into one connection ------------------------------------------------


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    pieces, last = [], 0
    for cut in sorted({c % (len(data) + 1) for c in cuts}):
        pieces.append(data[last:cut])
        last = cut
    pieces.append(data[last:])
    return [p for p in pieces if p]


payloads = st.one_of(
    st.binary(max_size=600),
    st.lists(client_frames(), max_size=6).map(lambda fs: b"".join(f for f, _ in fs)),
    st.builds(
        lambda fs, junk: b"".join(f for f, _ in fs) + junk,
        st.lists(client_frames(), max_size=3),
        st.binary(max_size=40),
    ),
)


@settings(max_examples=300, deadline=None)
@given(
    policy=st.sampled_from(POLICIES),
    upgrade=st.booleans(),
    payload=payloads,
    cuts=st.lists(st.integers(0, 1000), max_size=8),
)
def test_random_bytes_in_random_splits(
    policy: ClientPolicy, upgrade: bool, payload: bytes, cuts: list[int]
) -> None:
    t = Timeouts(1.0, 0.5, 2.0, 1.0, 3.0)
    server = ServerProtocol(server_config(policy, t))
    now = START
    cid = server.connection_made(now)
    stream = (VALID_REQUEST if upgrade else b"") + payload
    transmits: list[Transmit] = []
    events: list[ServerEvent] = []
    for piece in _split(stream, cuts):
        server.receive_data(cid, piece, now)
        transmits += server.data_to_send()
        events += server.events_received()
        assert all(len(x.data) <= transmit_bound(len(piece), 0) for x in transmits)
    closed = [x for x in transmits if x.close]
    assert len(closed) <= 1
    assert all(x.connection_id == cid for x in transmits)
    kinds = [type(e) for e in events]
    if closed:
        # A documented close: a failed handshake with an HTTP answer, or a session that ended
        # with a close code, in both cases reported.
        assert closed[0] is transmits[-1]
        assert server.connection_count == 0 and server.clients == ()
        if ClientConnected in kinds:
            ends = [e for e in events if isinstance(e, ClientDisconnected)]
            assert len(ends) == 1 and kinds.count(ClientConnected) == 1
            assert ends[0].code in WIRE_CODES or ends[0].code == 1005  # an empty close frame
            assert ends[0].cause in (DisconnectCause.PROTOCOL_ERROR, DisconnectCause.CLOSED_BY_PEER)
        else:
            assert kinds in ([HandshakeFailed], [])  # [] only for /health
            head = b"".join(x.data for x in transmits)
            assert head.startswith(b"HTTP/1.1 ") and not head.startswith(b"HTTP/1.1 101")
        return
    if ClientConnected in kinds:
        # An open session: adopted, not ended, and any close frame already out awaits the peer.
        assert [c.id for c in server.clients] == [cid]
        assert ClientDisconnected not in kinds
        return
    # Still in the handshake: nothing was said, and open_timeout ends it with a documented close.
    assert not transmits and not events
    server.handle_timer(now + t.open)
    (transmit,) = server.data_to_send()
    assert transmit.close and transmit.drop_pending and not transmit.data
    (failed,) = server.events_received()
    assert isinstance(failed, HandshakeFailed) and failed.status_code is None
    assert server.connection_count == 0


# --- bugs the machine found (all fixed since), kept as regression tests ---------------------------


def test_send_frame_of_a_skipped_kind_to_a_closing_session() -> None:
    """Regression: on a closing session every send_frame raises InvalidState, even for a frame
    the serializer has no message for (it used to return False there)."""
    net = Network()
    cid = net.connect().connection_id
    net.server.close(cid, net.clock.now)  # our close frame is out; not delivered, not answered
    assert [c.id for c in net.server.clients] == [cid]
    with pytest.raises(InvalidState):
        net.server.send_frame(cid, TextFrame(text="x"), net.clock.now)
    with pytest.raises(InvalidState):
        net.server.send_frame(cid, InputTransportMessageFrame(message=1), net.clock.now)


def test_a_session_replaced_in_its_failure_grace_has_its_output_dropped() -> None:
    """Found by ServerFuzz against commit 9fcc242: a violation right after valid messages is
    failed a moment later (FAILURE_GRACE); a replacement within that moment sent the 1002 close
    without ``drop_pending``, so the adapter kept writing the replaced client's queued output."""
    server = ServerProtocol(ServerConfig(client_policy="replace", serializer=EchoSerializer()))
    old = server.connection_made(0.0)
    # An upgrade, a valid (empty, masked) text message, then a frame with a reserved opcode.
    server.receive_data(old, VALID_REQUEST + b"\x81\x80\x00\x00\x00\x00\x03\x04", 0.0)
    assert [type(e) for e in server.events_received()] == [ClientConnected, FrameReceived]
    assert [t.close for t in server.data_to_send()] == [False]  # the failure waits
    server.send_message(old, b"queued audio")
    server.data_to_send()
    new = server.connection_made(0.0)
    server.receive_data(new, VALID_REQUEST, 0.0)
    events = server.events_received()
    assert [type(e) for e in events] == [ClientDisconnected, ClientConnected]
    assert isinstance(events[0], ClientDisconnected)
    assert events[0].cause is DisconnectCause.REPLACED
    (replaced,) = [t for t in server.data_to_send() if t.connection_id == old]
    assert replaced.drop_pending and replaced.close
    # Only the close frame: the application's (since d196683; 1002 before).
    assert replaced.data == b"\x88\x20\x03\xe8" + REPLACED_REASON.encode()


def test_a_newcomer_rejected_in_its_failure_grace_is_forgotten() -> None:
    """Found by ServerFuzz against d196683, fixed in b6baad1: policy reject closed the newcomer
    while _settle iterated a snapshot of its events; in its failure grace the close ends it at
    once, and that Ended event stayed queued, so the closed connection was never forgotten (each
    such newcomer leaked a Connection until more input named it)."""
    server = ServerProtocol(ServerConfig(client_policy="reject", serializer=EchoSerializer()))
    first = server.connection_made(0.0)
    server.receive_data(first, VALID_REQUEST, 0.0)
    server.data_to_send()
    assert [type(e) for e in server.events_received()] == [ClientConnected]
    second = server.connection_made(0.0)
    # An upgrade, a valid (empty, masked) text message, then a frame with a reserved opcode.
    server.receive_data(second, VALID_REQUEST + b"\x81\x80\x00\x00\x00\x00\x03\x04", 0.0)
    assert [type(e) for e in server.events_received()] == [ClientRejected]
    (transmit,) = server.data_to_send()
    assert transmit.connection_id == second and transmit.close
    server.handle_timer(1.0)  # anything due, the failure grace included, has fired
    server.data_to_send()
    assert server.connection_count == 1  # stays 2: each such newcomer leaks a Connection
