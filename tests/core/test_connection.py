"""Framing, limits, close handshake and timers of one connection, with literal wire bytes."""

from __future__ import annotations

import pytest
from wsproto.frame_protocol import Opcode

from wavewire.core.client import ClientProtocol
from wavewire.core.config import ClientConfig, ServerConfig
from wavewire.core.errors import HandshakeTimeout, InvalidState
from wavewire.core.events import (
    ClientDisconnected,
    Connected,
    ConnectFailed,
    ConnectionId,
    DisconnectCause,
    Disconnected,
    FrameReceived,
    MessageDropped,
)
from wavewire.core.frames import TextFrame
from wavewire.core.protocol.connection import State, Transmit
from wavewire.core.protocol.framing import apply_mask, encode_frame
from wavewire.core.serializers.raw import RawFrameSerializer
from wavewire.core.server import ServerProtocol

from .pair import FIXED_MASK, CountingRandom, Network

UPGRADE = (
    b"GET /ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)
T0 = 100.0


def masked(opcode: Opcode, payload: bytes, *, fin: bool = True) -> bytes:
    return encode_frame(opcode, payload, fin=fin, mask_key=FIXED_MASK)


class RawServer:
    """A server core with one upgraded connection driven by literal bytes."""

    def __init__(self, **config: object) -> None:
        defaults: dict[str, object] = {"serializer": RawFrameSerializer(), "ping_interval": None}
        self.server = ServerProtocol(ServerConfig(**{**defaults, **config}))  # type: ignore[arg-type]
        self.now = T0
        self.cid = self.server.connection_made(T0)
        self.server.receive_data(self.cid, UPGRADE, T0)
        [handshake] = self.server.data_to_send()
        assert handshake.data.startswith(b"HTTP/1.1 101 ")
        self.server.events_received()

    def feed(self, data: bytes) -> Transmit | None:
        self.server.receive_data(self.cid, data, self.now)
        return self.out()

    def out(self) -> Transmit | None:
        transmits = self.server.data_to_send()
        assert len(transmits) <= 1
        return transmits[0] if transmits else None

    def at(self, now: float) -> Transmit | None:
        self.now = now
        self.server.handle_timer(now)
        return self.out()

    def disconnected(self) -> ClientDisconnected:
        [event] = [e for e in self.server.events_received() if isinstance(e, ClientDisconnected)]
        return event


def close_frame(code: int, reason: bytes) -> bytes:
    """An unmasked server close frame, written out by hand."""
    payload = code.to_bytes(2, "big") + reason
    return bytes((0x88, len(payload))) + payload


# --- wire format -------------------------------------------------------------------------------


def test_masking_matches_rfc_6455_example() -> None:
    # RFC 6455 5.7: "Hello" masked with 37 fa 21 3d.
    assert masked(Opcode.TEXT, b"Hello") == bytes.fromhex("818537fa213d7f9f4d5158")
    assert encode_frame(Opcode.TEXT, b"Hello") == bytes.fromhex("810548656c6c6f")
    assert apply_mask(b"", FIXED_MASK) == b""
    assert apply_mask(apply_mask(b"x" * 1001, FIXED_MASK), FIXED_MASK) == b"x" * 1001


@pytest.mark.parametrize(
    ("length", "header"),
    [(125, "827d"), (126, "827e007e"), (65535, "827effff"), (65536, "827f0000000000010000")],
)
def test_length_encodings(length: int, header: str) -> None:
    assert encode_frame(Opcode.BINARY, b"\0" * length)[: len(header) // 2] == bytes.fromhex(header)


def test_client_frames_use_the_injected_mask_source() -> None:
    random = CountingRandom()
    net = Network()
    link = net.connect()
    client = link.client
    assert isinstance(client, ClientProtocol)
    client.send_message("Hello")
    [transmit] = client.data_to_send()
    assert transmit.data == bytes.fromhex("818537fa213d7f9f4d5158")
    assert random.calls == 0  # the link has its own source; this one was never read


def test_server_echo_of_text_and_binary_with_fragments() -> None:
    raw = RawServer()
    raw.feed(masked(Opcode.TEXT, b'{"a":', fin=False))
    raw.feed(masked(Opcode.CONTINUATION, b"1}"))
    raw.feed(masked(Opcode.BINARY, b"\x01\x00\x02\x00"))
    frames = [e.frame for e in raw.server.events_received() if isinstance(e, FrameReceived)]
    assert [type(f).__name__ for f in frames] == [
        "InputTransportMessageFrame",
        "InputAudioRawFrame",
    ]
    raw.server.send_message(raw.cid, "hi")
    out = raw.out()
    assert out is not None
    assert out.data == b"\x81\x02hi"


def test_byte_at_a_time_replay_gives_the_same_messages() -> None:
    raw = RawServer()
    stream = masked(Opcode.TEXT, b'{"k":"' + b"v" * 300 + b'"}') + masked(Opcode.PING, b"p")
    pongs = b""
    for byte in stream:
        transmit = raw.feed(bytes([byte]))
        pongs += transmit.data if transmit else b""
    frames = [e.frame for e in raw.server.events_received() if isinstance(e, FrameReceived)]
    assert len(frames) == 1
    assert pongs == b"\x8a\x01p"  # the ping was answered with a pong carrying its payload


# --- limits ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("extra", "too_big"), [(0, False), (1, True), (2, True)])
def test_message_size_limit_at_limit_and_past_it(extra: int, too_big: bool) -> None:
    limit = 1000
    raw = RawServer(max_message_size=limit)
    # Only the header and 10 payload bytes arrive: an oversize is refused from the header alone.
    frame = masked(Opcode.BINARY, b"\0" * (limit + extra))
    transmit = raw.feed(frame[: 2 + 2 + 4 + 10])
    if too_big:
        assert transmit is not None
        assert transmit.close
        assert transmit.data == close_frame(1009, b"message too big")
        assert raw.disconnected().code == 1009
    else:
        assert transmit is None
        raw.feed(frame[14:])
        assert any(isinstance(e, FrameReceived) for e in raw.server.events_received())


def test_size_limit_sums_fragments_even_near_2_to_63() -> None:
    raw = RawServer(max_message_size=100)
    raw.feed(masked(Opcode.BINARY, b"\0" * 60, fin=False))
    # A continuation header that declares 2**63 - 1 bytes: refused before any payload.
    header = bytes((0x00, 0x80 | 127)) + (2**63 - 1).to_bytes(8, "big") + FIXED_MASK
    transmit = raw.feed(header)
    assert transmit is not None and transmit.close
    assert raw.disconnected().code == 1009


def test_fragment_count_limit() -> None:
    raw = RawServer(max_fragments=3)
    for _ in range(3):
        assert (
            raw.feed(masked(Opcode.BINARY if _ == 0 else Opcode.CONTINUATION, b"", fin=False))
            is None
        )
    transmit = raw.feed(masked(Opcode.CONTINUATION, b"", fin=False))
    assert transmit is not None and transmit.close
    assert raw.disconnected().code == 1009


def test_default_fragment_limit_derives_from_the_size_cap() -> None:
    assert ServerConfig().fragment_limit == 1024 + (1 << 20) // 64
    assert ServerConfig(max_fragments=7).fragment_limit == 7


# --- protocol violations: right close code, no internal details ---------------------------------


@pytest.mark.parametrize(
    ("frame", "code", "reason"),
    [
        (encode_frame(Opcode.TEXT, b"unmasked"), 1002, b"protocol error"),
        (masked(Opcode.TEXT, b"\xff\xfe"), 1007, b"invalid frame payload data"),
        (masked(Opcode.CONTINUATION, b"x"), 1002, b"protocol error"),
        (bytes((0x83, 0x80)) + FIXED_MASK, 1002, b"protocol error"),  # reserved opcode 3
        (bytes((0xC1, 0x80)) + FIXED_MASK, 1002, b"protocol error"),  # RSV1 without extension
        (masked(Opcode.PING, b"p", fin=False), 1002, b"protocol error"),
        (masked(Opcode.PING, b"p" * 126), 1002, b"protocol error"),
        (masked(Opcode.CLOSE, b"\x03"), 1002, b"protocol error"),  # one-byte close payload
        (masked(Opcode.CLOSE, b"\x03\xed"), 1002, b"protocol error"),  # 1005 on the wire
    ],
)
def test_peer_violations_fail_the_connection_with_the_right_code(
    frame: bytes, code: int, reason: bytes
) -> None:
    raw = RawServer()
    transmit = raw.feed(frame)  # never raises
    assert transmit is not None and transmit.close
    assert transmit.data == close_frame(code, reason)
    event = raw.disconnected()
    assert (event.code, event.cause) == (code, DisconnectCause.PROTOCOL_ERROR)
    assert raw.server.connection_count == 0
    assert raw.feed(masked(Opcode.TEXT, b"late")) is None  # data after the failure is discarded


def test_serializer_error_drops_one_message_and_keeps_the_session() -> None:
    raw = RawServer()
    raw.feed(masked(Opcode.TEXT, b"not json"))
    raw.feed(masked(Opcode.TEXT, b"{also not"))
    raw.feed(masked(Opcode.TEXT, b'{"ok": true}'))
    events = raw.server.events_received()
    drops = [e for e in events if isinstance(e, MessageDropped)]
    assert [d.dropped_total for d in drops] == [1, 2]
    assert "not json" not in drops[0].detail or "JSON" in drops[0].detail
    assert [type(e).__name__ for e in events][-1] == "FrameReceived"
    assert raw.server.clients != ()


# --- close handshake ---------------------------------------------------------------------------


def test_peer_close_is_echoed_and_server_closes_tcp_first() -> None:
    raw = RawServer()
    transmit = raw.feed(masked(Opcode.CLOSE, b"\x03\xe8bye"))
    assert transmit == Transmit(ConnectionId(raw.cid), close_frame(1000, b"bye"), False, True)
    event = raw.disconnected()
    assert (event.code, event.reason, event.cause) == (1000, "bye", DisconnectCause.CLOSED_BY_PEER)


def test_empty_close_frame_is_1005_and_echoed_empty() -> None:
    raw = RawServer()
    transmit = raw.feed(masked(Opcode.CLOSE, b""))
    assert transmit is not None and transmit.data == b"\x88\x00"
    assert raw.disconnected().code == 1005


def test_server_close_waits_for_reply_then_times_out() -> None:
    raw = RawServer(close_timeout=5)
    raw.server.close(raw.cid, raw.now, 4000, "done")
    transmit = raw.out()
    assert transmit is not None and transmit.data == close_frame(4000, b"done")
    assert not transmit.close
    assert raw.server.next_deadline() == T0 + 5
    # Data arriving while closing is still delivered; then nothing until the deadline.
    raw.feed(masked(Opcode.TEXT, b'{"late": 1}'))
    assert any(isinstance(e, FrameReceived) for e in raw.server.events_received())
    assert raw.at(T0 + 4.999) is None
    transmit = raw.at(T0 + 5)
    assert transmit is not None and transmit.close and transmit.drop_pending
    event = raw.disconnected()
    assert (event.code, event.cause) == (1006, DisconnectCause.CLOSE_TIMEOUT)


def test_server_close_answered_completes_with_our_code() -> None:
    raw = RawServer()
    raw.server.close(raw.cid, raw.now, 4001, "bye")
    raw.out()
    transmit = raw.feed(masked(Opcode.CLOSE, b"\x0f\xa1"))
    assert transmit is not None and transmit.close and transmit.data == b""
    event = raw.disconnected()
    assert (event.code, event.reason, event.cause) == (4001, "bye", DisconnectCause.CLOSED_LOCALLY)


def test_ping_after_our_close_is_not_answered() -> None:
    raw = RawServer()
    raw.server.close(raw.cid, raw.now)
    raw.out()
    assert raw.feed(masked(Opcode.PING, b"x")) is None


def test_ping_flood_while_not_writable_owes_only_the_latest_pong() -> None:
    raw = RawServer()
    raw.server.set_writable(raw.cid, False)
    flood = b"".join(masked(Opcode.PING, b"%d" % n) for n in range(1000))
    assert raw.feed(flood) is None  # nothing queued: one pong owed
    raw.server.set_writable(raw.cid, False)  # still blocked: still owed, still one
    assert raw.out() is None
    raw.server.set_writable(raw.cid, True)
    transmit = raw.out()
    assert transmit is not None and transmit.data == b"\x8a\x03999"  # RFC 6455 5.5.3
    raw.server.set_writable(raw.cid, True)  # nothing owed any more
    assert raw.out() is None
    assert raw.feed(masked(Opcode.PING, b"w")) == Transmit(raw.cid, b"\x8a\x01w")


def test_owed_pong_is_forgone_once_our_close_is_out() -> None:
    raw = RawServer()
    raw.server.set_writable(raw.cid, False)
    raw.feed(masked(Opcode.PING, b"x"))
    raw.server.close(raw.cid, raw.now)
    raw.out()
    raw.server.set_writable(raw.cid, True)
    assert raw.out() is None  # 5.5.2: no pong after our close frame


def test_set_writable_for_a_finished_connection_is_ignored() -> None:
    raw = RawServer()
    raw.server.connection_lost(raw.cid, raw.now)
    raw.out()
    raw.server.set_writable(raw.cid, True)
    assert raw.out() is None


@pytest.mark.parametrize("split", [0, 3, 9])
def test_eof_between_or_inside_frames_is_1006_once(split: int) -> None:
    raw = RawServer()
    raw.feed(masked(Opcode.TEXT, b"{}")[:split])
    raw.server.receive_eof(raw.cid, raw.now)
    transmit = raw.out()
    assert transmit is not None and transmit.close
    event = raw.disconnected()
    assert (event.code, event.cause) == (1006, DisconnectCause.CONNECTION_LOST)
    raw.server.receive_eof(raw.cid, raw.now)
    raw.server.connection_lost(raw.cid, raw.now)
    assert raw.server.events_received() == []


def test_send_after_close_is_invalid_state() -> None:
    raw = RawServer()
    raw.server.close(raw.cid, raw.now)
    with pytest.raises(InvalidState, match=r"not a connected client|closing"):
        raw.server.send_message(raw.cid, b"x")


def test_client_waits_for_server_tcp_close_after_close_handshake() -> None:
    net = Network(ServerConfig(ping_interval=None))
    link = net.connect(config=ClientConfig(ping_interval=None, close_timeout=3))
    link.client.close(net.clock.now, 1000, "client done")
    # Deliver the client's close frame, and the server's reply, but hold the server's TCP close.
    net.client_to_server(link)
    [reply] = net.server.data_to_send()
    assert reply.close
    link.client.receive_data(reply.data, net.clock.now)
    assert link.client.state is State.CLOSING
    # Disconnected waits for the server's TCP close; meanwhile nothing may be sent, and what
    # arrives after the close frames crossed is discarded (RFC 6455 7.1.1).
    link.client.receive_data(b"\x81\x02hi", net.clock.now)
    assert not any(
        isinstance(e, Disconnected | FrameReceived) for e in link.client.events_received()
    )
    with pytest.raises(InvalidState, match="closing"):
        link.client.send_message("after close")
    # Without the TCP close, the client gives up after close_timeout and closes itself.
    net.clock.now += 3
    link.client.handle_timer(net.clock.now)
    [transmit] = link.client.data_to_send()
    assert transmit.close
    [event] = [e for e in link.client.events_received() if isinstance(e, Disconnected)]
    assert (event.code, event.reason, event.cause) == (
        1000,
        "client done",
        DisconnectCause.CLOSED_LOCALLY,
    )


def test_client_answers_server_close_and_ends_on_eof() -> None:
    net = Network(ServerConfig(ping_interval=None))
    link = net.connect()
    net.server.close(link.connection_id, net.clock.now, 1001, "bye")
    net.pump()
    [event] = [e for e in link.client_events if isinstance(e, Disconnected)]
    assert (event.code, event.reason, event.cause) == (1001, "bye", DisconnectCause.CLOSED_BY_PEER)
    assert link.client.state is State.CLOSED


# --- keepalive ---------------------------------------------------------------------------------


def test_keepalive_ping_and_pong() -> None:
    raw = RawServer(ping_interval=20, ping_timeout=10)
    assert raw.server.next_deadline() == T0 + 20
    transmit = raw.at(T0 + 20)
    assert transmit is not None and transmit.data == b"\x89\x04\x00\x00\x00\x01"
    # The pong timer started when the ping was queued.
    assert raw.server.next_deadline() == T0 + 30
    raw.feed(masked(Opcode.PONG, b"\x00\x00\x00\x01"))
    assert raw.server.next_deadline() == T0 + 40
    assert raw.at(T0 + 30) is None


def test_keepalive_timeout_fails_with_1011_and_aborts() -> None:
    raw = RawServer(ping_interval=20, ping_timeout=10)
    raw.at(T0 + 20)
    raw.feed(masked(Opcode.PONG, b"wrong"))  # an unsolicited pong does not count
    assert raw.at(T0 + 29.9) is None
    transmit = raw.at(T0 + 30)
    assert transmit is not None and transmit.close and transmit.drop_pending
    event = raw.disconnected()
    assert (event.code, event.cause) == (1011, DisconnectCause.KEEPALIVE_TIMEOUT)


# --- client handshake timers -----------------------------------------------------------------


def test_client_open_timeout() -> None:
    client = ClientProtocol(
        "ws://localhost/", ClientConfig(open_timeout=2), random_bytes=CountingRandom(), now=T0
    )
    assert client.next_deadline() == T0 + 2
    client.handle_timer(T0 + 1)
    assert client.events_received() == []
    client.handle_timer(T0 + 2)
    [event] = client.events_received()
    assert isinstance(event, ConnectFailed) and isinstance(event.error, HandshakeTimeout)
    with pytest.raises(InvalidState):
        client.send_frame(TextFrame(text="x"), T0)


def test_client_close_while_connecting_aborts() -> None:
    client = ClientProtocol("ws://localhost/", random_bytes=CountingRandom(), now=T0)
    client.data_to_send()
    client.close(T0)
    [event] = client.events_received()
    assert isinstance(event, ConnectFailed)
    [transmit] = client.data_to_send()
    assert transmit.close and transmit.drop_pending


def test_client_connected_event_and_serializer_skip() -> None:
    net = Network()
    link = net.connect()
    [event] = link.client_events
    assert isinstance(event, Connected) and event.connection.path == "/ws"
    from wavewire.core.frames import InputTransportMessageFrame

    # The protobuf serializer has no message for an inbound-only frame kind.
    assert link.client.send_frame(InputTransportMessageFrame(message=1), net.clock.now) is False


def test_client_receives_frames_and_survives_a_bad_message() -> None:
    net = Network()
    link = net.connect()
    assert link.client.connection is not None
    assert link.client.connection.path == "/ws"
    assert net.server.send_frame(link.connection_id, TextFrame(text="to client"), net.clock.now)
    net.server.send_message(link.connection_id, "text is not protobuf")
    from wavewire.core.frames import InputTransportMessageFrame

    skipped = InputTransportMessageFrame(message={"inbound": "kinds are not sent"})
    assert net.server.send_frame(link.connection_id, skipped, net.clock.now) is False
    net.pump()
    received = [e.frame for e in link.client_events if isinstance(e, FrameReceived)]
    assert [f.text for f in received if isinstance(f, TextFrame)] == ["to client"]
    [dropped] = [e for e in link.client_events if isinstance(e, MessageDropped)]
    assert dropped.dropped_total == 1
    assert "SerializationError" in dropped.detail
    assert link.client.state is State.OPEN


def test_client_connection_lost_is_1006_once() -> None:
    net = Network()
    link = net.connect()
    link.client.connection_lost(net.clock.now)
    link.client.connection_lost(net.clock.now)
    assert link.client.data_to_send() == []  # the socket is gone: nothing to write
    events = [e for e in link.client.events_received() if isinstance(e, Disconnected)]
    assert [(e.code, e.cause) for e in events] == [(1006, DisconnectCause.CONNECTION_LOST)]


def test_client_eof_during_handshake_is_connect_failed() -> None:
    client = ClientProtocol("ws://localhost/", random_bytes=CountingRandom(), now=T0)
    client.receive_eof(T0)
    [event] = client.events_received()
    assert isinstance(event, ConnectFailed)
    assert "closed during the opening handshake" in str(event.error)


def test_early_timer_calls_do_nothing() -> None:
    raw = RawServer(ping_interval=20, ping_timeout=10, close_timeout=5)
    connection = raw.server._connections[raw.cid]
    connection.handle_timer(T0 + 1)  # OPEN, nothing due
    assert raw.out() is None
    raw.server.close(raw.cid, T0)
    raw.out()
    connection.handle_timer(T0 + 1)  # CLOSING, close deadline not reached
    assert raw.out() is None
    assert connection.state is State.CLOSING


def test_keepalive_without_pong_timeout_keeps_pinging() -> None:
    raw = RawServer(ping_interval=5, ping_timeout=None)
    first = raw.at(T0 + 5)
    second = raw.at(T0 + 10)
    assert first is not None and first.data == b"\x89\x04\x00\x00\x00\x01"
    assert second is not None and second.data == b"\x89\x04\x00\x00\x00\x02"
    assert raw.server.next_deadline() == T0 + 15


def test_no_close_timeout_waits_forever() -> None:
    raw = RawServer(close_timeout=None)
    raw.server.close(raw.cid, T0)
    raw.out()
    assert raw.server.next_deadline() is None


def test_eof_while_our_close_is_unanswered_is_1006() -> None:
    raw = RawServer()
    raw.server.close(raw.cid, T0, 1000)
    raw.out()
    raw.server.receive_eof(raw.cid, T0)
    event = raw.disconnected()
    assert (event.code, event.cause) == (1006, DisconnectCause.CONNECTION_LOST)


def test_ws_connection_guards() -> None:
    from wsproto.events import Ping

    from wavewire.core.protocol.framing import WsConnection

    with pytest.raises(ValueError, match="mask source"):
        WsConnection(client=True, max_message_size=10, max_fragments=1)
    short = WsConnection(
        client=True, max_message_size=10, max_fragments=1, mask_source=lambda n: b"abc"
    )
    with pytest.raises(ValueError, match="exactly the bytes"):
        short.send(Ping(payload=b"x"))
    server = WsConnection(client=False, max_message_size=10, max_fragments=1)
    with pytest.raises(ValueError, match="at most 125"):
        server.send(Ping(payload=b"x" * 126))


def test_ws_connection_parses_nothing_after_a_close_frame() -> None:
    from wsproto.events import BytesMessage, CloseConnection

    from wavewire.core.protocol.framing import WsConnection

    server = WsConnection(client=False, max_message_size=100, max_fragments=4)
    close = masked(Opcode.CLOSE, (1000).to_bytes(2, "big"))
    server.receive_data(masked(Opcode.BINARY, b"first") + close + masked(Opcode.BINARY, b"late"))
    events = list(server.events())  # read to the end: the parser finishes at the close frame
    assert events == [
        BytesMessage(data=b"first", frame_finished=True, message_finished=True),
        CloseConnection(code=1000, reason=""),
    ]
    assert list(server.events()) == []  # the frame after the close is never parsed
    assert server.failure is None


def test_ws_connection_waits_for_a_whole_header() -> None:
    from wsproto.events import BytesMessage

    from wavewire.core.protocol.framing import WsConnection

    server = WsConnection(client=False, max_message_size=100, max_fragments=4)
    frame = masked(Opcode.BINARY, b"split")
    for byte in frame[:6]:  # 1 byte, then the 2-byte header without its 4-byte mask key
        server.receive_data(bytes([byte]))
        assert list(server.events()) == []
    server.receive_data(frame[6:])
    assert list(server.events()) == [
        BytesMessage(data=b"split", frame_finished=True, message_finished=True)
    ]
    # Extended lengths (2 and 8 bytes) and the mask key after them may arrive in pieces.
    for size in (200, 70_000):
        server = WsConnection(client=False, max_message_size=100_000, max_fragments=4)
        frame = masked(Opcode.BINARY, bytes(size))
        header = 8 if size < 65536 else 14
        for cut in range(1, header):
            server.receive_data(frame[cut - 1 : cut])
            assert list(server.events()) == [], (size, cut)
        server.receive_data(frame[header - 1 :])
        events = list(server.events())
        assert b"".join(e.data for e in events if isinstance(e, BytesMessage)) == bytes(size)
    # The smallest frame there is, 2 bytes (unmasked, empty), is parsed, not waited on.
    client = WsConnection(
        client=True, max_message_size=100, max_fragments=4, mask_source=lambda n: bytes(n)
    )
    client.receive_data(encode_frame(Opcode.BINARY, b""))
    assert list(client.events()) == [
        BytesMessage(data=b"", frame_finished=True, message_finished=True)
    ]


def test_close_is_idempotent_while_closing() -> None:
    raw = RawServer()
    raw.server.close(raw.cid, T0, 1000)
    first = raw.out()
    raw.server.close(raw.cid, T0, 4000, "again")
    assert first is not None
    assert raw.out() is None  # no second close frame


def test_messages_the_serializer_ignores_produce_no_event() -> None:
    raw = RawServer()
    raw.feed(masked(Opcode.BINARY, b""))  # the raw serializer maps empty audio to None
    assert raw.server.events_received() == []


def test_early_timer_call_while_connecting_does_nothing() -> None:
    server = ServerProtocol(ServerConfig(open_timeout=5))
    cid = server.connection_made(T0)
    server._connections[cid].handle_timer(T0 + 1)
    assert server.data_to_send() == []
    assert server.next_deadline() == T0 + 5


def test_client_ignores_messages_its_serializer_skips() -> None:
    net = Network()
    link = net.connect(config=ClientConfig(serializer=RawFrameSerializer()))
    net.server.send_message(link.connection_id, b"")
    net.pump()
    assert [e for e in link.client_events if isinstance(e, FrameReceived)] == []


def test_slow_pongs_within_the_timeout_keep_the_connection() -> None:
    # ping_timeout > ping_interval and a 6 s round trip: each ping is answered in time.
    raw = RawServer(ping_interval=5, ping_timeout=20)
    first = raw.at(T0 + 5)
    assert first is not None
    assert raw.at(T0 + 10) is None  # no second ping while the first is awaited
    raw.now = T0 + 11
    raw.feed(masked(Opcode.PONG, first.data[2:]))
    second = raw.at(T0 + 15)
    assert second is not None
    assert second.data == b"\x89\x04\x00\x00\x00\x02"
    raw.now = T0 + 21
    raw.feed(masked(Opcode.PONG, second.data[2:]))
    assert raw.at(T0 + 40) is not None  # the third ping; nothing was failed
    assert raw.server.clients != ()


def test_bytes_after_the_end_are_discarded() -> None:
    net = Network()
    link = net.connect()
    link.client.connection_lost(net.clock.now)
    link.client.events_received()
    # A buffered server frame read after the loss must not surface after Disconnected.
    link.client.receive_data(b"\x82\x00", net.clock.now)
    assert link.client.events_received() == []
    raw = RawServer(ping_interval=1, ping_timeout=1)
    raw.at(T0 + 1)
    raw.at(T0 + 2)  # keepalive timeout: the connection is aborted
    raw.server.receive_data(raw.cid, masked(Opcode.CLOSE, b"\x03\xe8"), raw.now)
    assert raw.disconnected().cause is DisconnectCause.KEEPALIVE_TIMEOUT


def test_violation_right_behind_a_message_fails_after_a_grace() -> None:
    from wavewire.core.protocol.connection import FAILURE_GRACE

    raw = RawServer()
    # Autobahn 3.2: a valid message, then a frame with RSV1 set, then a ping, in one read.
    rsv1 = bytes((0xC1, 0x80)) + FIXED_MASK
    transmit = raw.feed(masked(Opcode.TEXT, b'{"a": 1}') + rsv1 + masked(Opcode.PING, b""))
    assert transmit is None  # nothing yet: no pong for what follows the violation
    [event] = raw.server.events_received()
    assert isinstance(event, FrameReceived)
    raw.server.send_message(raw.cid, "echo")  # the application answers within the grace
    echo = raw.out()
    assert echo is not None
    assert echo.data == b"\x81\x04echo"
    assert raw.server.next_deadline() == T0 + FAILURE_GRACE
    failed = raw.at(T0 + FAILURE_GRACE)
    assert failed is not None
    assert failed.close
    assert failed.data == close_frame(1002, b"protocol error")
    assert raw.disconnected().cause is DisconnectCause.PROTOCOL_ERROR


def test_input_during_the_grace_fails_at_once() -> None:
    raw = RawServer()
    raw.feed(masked(Opcode.TEXT, b"{}") + bytes((0xC1, 0x80)) + FIXED_MASK)
    transmit = raw.feed(masked(Opcode.TEXT, b"{}"))
    assert transmit is not None
    assert transmit.close
    assert raw.disconnected().code == 1002


def test_closing_during_the_grace_reports_the_violation() -> None:
    raw = RawServer(close_timeout=5)
    raw.feed(masked(Opcode.TEXT, b"{}") + bytes((0xC1, 0x80)) + FIXED_MASK)
    raw.server.close(raw.cid, T0, 4000, "bye")
    transmit = raw.out()
    assert transmit is not None
    assert transmit.close  # at once: input stopped at the violation, no handshake can finish
    assert transmit.data == close_frame(4000, b"bye")
    event = raw.disconnected()
    assert (event.code, event.cause) == (4000, DisconnectCause.PROTOCOL_ERROR)
