"""Sessions and client policies: adoption, replacement, rejection, multi, timeouts, shutdown."""

from __future__ import annotations

import pytest

from wavewire.core.config import ServerConfig
from wavewire.core.errors import InvalidState
from wavewire.core.events import (
    ClientDisconnected,
    ClientRejected,
    DisconnectCause,
    Disconnected,
    Drained,
    FrameReceived,
    HandshakeFailed,
    ServerEvent,
    SessionTimeout,
)
from wavewire.core.frames import Frame, TextFrame
from wavewire.core.server import REJECTED_CODE, REPLACED_REASON

from .pair import Link, Network


def kinds(events: list[ServerEvent]) -> list[tuple[str, int]]:
    """Each event as (type name, connection id), for exact order assertions."""
    out: list[tuple[str, int]] = []
    for event in events:
        assert not isinstance(event, HandshakeFailed | Drained)
        out.append((type(event).__name__, event.connection.id))
    return out


def send_text(net: Network, link: Link, text: str) -> None:
    link.client.send_frame(TextFrame(text=text), net.clock.now)
    net.pump()


def texts_from(net: Network, connection_id: int) -> list[str]:
    return [
        e.frame.text
        for e in net.server_events
        if isinstance(e, FrameReceived)
        and e.connection.id == connection_id
        and isinstance(e.frame, TextFrame)
    ]


def test_replace_detaches_old_then_adopts_new_in_one_batch() -> None:
    net = Network()
    a = net.connect()
    net.server_events.clear()
    b = net.connect()
    # ClientDisconnected(old) immediately followed by ClientConnected(new), in the same step.
    assert kinds(net.server_events) == [
        ("ClientDisconnected", a.connection_id),
        ("ClientConnected", b.connection_id),
    ]
    gone = net.server_events[0]
    assert isinstance(gone, ClientDisconnected)
    assert (gone.code, gone.reason, gone.cause) == (1000, REPLACED_REASON, DisconnectCause.REPLACED)
    assert [c.id for c in net.server.clients] == [b.connection_id]
    # The old client saw a close frame 1000 and the close handshake completed in the background.
    [closed] = [e for e in a.client_events if isinstance(e, Disconnected)]
    assert (closed.code, closed.reason) == (1000, REPLACED_REASON)
    assert net.server.connection_count == 1


def test_replaced_client_frames_never_reach_the_application() -> None:
    net = Network()
    a = net.connect()
    b = net.connect()
    # The old connection is closing: its sends are refused at its own core...
    with pytest.raises(InvalidState):
        a.client.send_frame(TextFrame(text="late"), net.clock.now)
    send_text(net, b, "from b")
    assert texts_from(net, a.connection_id) == []
    assert texts_from(net, b.connection_id) == ["from b"]


def test_replacement_drops_old_unsent_output_and_sends_close_frame() -> None:
    net = Network()
    a = net.connect()
    net.server.send_frame(a.connection_id, TextFrame(text="stale audio"), net.clock.now)
    # Before the adapter collected the old client's output, a newcomer's handshake arrives.
    b = net.connect(pump=False)
    net.client_to_server(b)
    transmits = {t.connection_id: t for t in net.server.data_to_send()}
    old = transmits[a.connection_id]
    assert old.drop_pending  # and the adapter must drop what it had queued, too
    assert b"stale audio" not in old.data
    assert old.data[:1] == b"\x88"  # only the close frame: FIN + opcode 8
    assert old.data[4:] == REPLACED_REASON.encode()
    assert transmits[b.connection_id].data.startswith(b"HTTP/1.1 101 ")


def test_old_connection_late_events_do_not_touch_new_session() -> None:
    net = Network()
    a = net.connect()
    b = net.connect()
    net.server_events.clear()
    # The old peer now vanishes without finishing anything: nothing for the new session.
    net.server.receive_eof(a.connection_id, net.clock.now)
    net.server.connection_lost(a.connection_id, net.clock.now)
    net.pump()
    net.advance(60)
    assert [e for e in net.server_events if not isinstance(e, SessionTimeout)] == []
    assert [c.id for c in net.server.clients] == [b.connection_id]


def test_reject_policy_refuses_newcomer_with_1013_and_keeps_incumbent() -> None:
    net = Network(ServerConfig(client_policy="reject"))
    a = net.connect()
    net.server_events.clear()
    b = net.connect()
    assert kinds(net.server_events) == [("ClientRejected", b.connection_id)]
    assert isinstance(net.server_events[0], ClientRejected)
    [closed] = [e for e in b.client_events if isinstance(e, Disconnected)]
    assert closed.code == REJECTED_CODE == 1013
    send_text(net, a, "still here")
    assert texts_from(net, a.connection_id) == ["still here"]
    assert [c.id for c in net.server.clients] == [a.connection_id]


def test_reject_policy_admits_a_new_client_once_the_incumbent_left() -> None:
    net = Network(ServerConfig(client_policy="reject"))
    a = net.connect()
    a.client.close(net.clock.now)
    net.pump()
    b = net.connect()
    assert kinds(net.server_events)[-1] == ("ClientConnected", b.connection_id)


def test_multi_policy_keeps_every_session_separate() -> None:
    net = Network(ServerConfig(client_policy="multi", session_timeout=5))
    a = net.connect()
    net.advance(2)
    b = net.connect()
    send_text(net, a, "a1")
    send_text(net, b, "b1")
    assert texts_from(net, a.connection_id) == ["a1"]
    assert texts_from(net, b.connection_id) == ["b1"]
    assert {c.id for c in net.server.clients} == {a.connection_id, b.connection_id}
    net.advance(3)  # a's timer (t0+5) fires, b's (t0+7) not yet
    assert [e.connection.id for e in net.server_events if isinstance(e, SessionTimeout)] == [
        a.connection_id
    ]
    net.advance(2)
    assert [e.connection.id for e in net.server_events if isinstance(e, SessionTimeout)] == [
        a.connection_id,
        b.connection_id,
    ]


def test_session_timeout_fires_once_per_session_at_its_deadline() -> None:
    net = Network(ServerConfig(session_timeout=30))
    a = net.connect()
    assert net.server.next_deadline() is not None
    net.advance(29.999)
    assert not any(isinstance(e, SessionTimeout) for e in net.server_events)
    net.advance(0.001)
    timeouts = [e for e in net.server_events if isinstance(e, SessionTimeout)]
    assert [t.connection.id for t in timeouts] == [a.connection_id]
    net.advance(100)
    assert len([e for e in net.server_events if isinstance(e, SessionTimeout)]) == 1
    # By default the event is all that happens: the session is still open.
    assert [c.id for c in net.server.clients] == [a.connection_id]


def test_session_timeout_is_armed_for_every_later_client_too() -> None:
    # Pipecat arms it only for the first client ever; here each session has its own timer.
    net = Network(ServerConfig(session_timeout=10))
    a = net.connect()
    net.advance(4)
    b = net.connect()  # replaces a: a's timer is cancelled with its session
    net.advance(9)
    assert not any(isinstance(e, SessionTimeout) for e in net.server_events)
    net.advance(1)
    timeouts = [e.connection.id for e in net.server_events if isinstance(e, SessionTimeout)]
    assert timeouts == [b.connection_id]
    assert a.connection_id not in timeouts


def test_session_timer_cancelled_when_session_ends() -> None:
    net = Network(ServerConfig(session_timeout=10))
    a = net.connect()
    a.client.close(net.clock.now)
    net.pump()
    net.advance(20)
    assert not any(isinstance(e, SessionTimeout) for e in net.server_events)
    assert net.server.next_deadline() is None


def test_application_closes_session_from_timeout_handler() -> None:
    net = Network(ServerConfig(session_timeout=1))
    a = net.connect()
    net.advance(1)
    net.server.close(a.connection_id, net.clock.now, 1000, "session expired")
    net.pump()
    [gone] = [e for e in net.server_events if isinstance(e, ClientDisconnected)]
    assert (gone.code, gone.reason, gone.cause) == (
        1000,
        "session expired",
        DisconnectCause.CLOSED_LOCALLY,
    )
    assert net.server.connection_count == 0


@pytest.mark.parametrize("policy", ["replace", "reject", "multi"])
def test_shutdown_closes_sessions_with_1001_and_reports_each_once(policy: str) -> None:
    net = Network(ServerConfig(client_policy=policy))  # type: ignore[arg-type]
    links = [net.connect(), net.connect()]
    half_open = net.server.connection_made(net.clock.now)
    net.server.receive_data(half_open, b"GET / HTTP/1.1\r\n", net.clock.now)
    adopted = [c.id for c in net.server.clients]
    net.server_events.clear()
    net.server.shutdown(net.clock.now)
    net.pump()
    disconnected = [e for e in net.server_events if isinstance(e, ClientDisconnected)]
    assert sorted(e.connection.id for e in disconnected) == sorted(adopted)
    assert {(e.code, e.cause) for e in disconnected} == {(1001, DisconnectCause.SHUTDOWN)}
    assert net.server.clients == ()
    for link in links:
        if link.connection_id in adopted:
            [closed] = [e for e in link.client_events if isinstance(e, Disconnected)]
            assert closed.code == 1001
    # The handshake in progress was aborted without a response.
    [aborted] = [t for t in net.raw_transmits if t.connection_id == half_open]
    assert (aborted.data, aborted.close) == (b"", True)
    # A connection made after shutdown is closed at once.
    late = net.server.connection_made(net.clock.now)
    [transmit] = [t for t in net.server.data_to_send() if t.connection_id == late]
    assert transmit.close
    assert net.server.connection_count == 0


def test_every_adopted_client_gets_exactly_one_disconnect_whatever_ends_it() -> None:
    net = Network(ServerConfig(client_policy="multi", ping_interval=None))
    by_peer_close = net.connect()
    by_eof = net.connect()
    by_app = net.connect()
    by_lost = net.connect()
    by_peer_close.client.close(net.clock.now)
    net.server.receive_eof(by_eof.connection_id, net.clock.now)
    net.server.close(by_app.connection_id, net.clock.now)
    net.server.connection_lost(by_lost.connection_id, net.clock.now)
    net.pump()
    net.advance(30)
    causes = {
        e.connection.id: e.cause for e in net.server_events if isinstance(e, ClientDisconnected)
    }
    assert causes == {
        by_peer_close.connection_id: DisconnectCause.CLOSED_BY_PEER,
        by_eof.connection_id: DisconnectCause.CONNECTION_LOST,
        by_app.connection_id: DisconnectCause.CLOSED_LOCALLY,
        by_lost.connection_id: DisconnectCause.CONNECTION_LOST,
    }
    assert len([e for e in net.server_events if isinstance(e, ClientDisconnected)]) == 4


def test_commands_on_unknown_or_gone_connections() -> None:
    net = Network()
    a = net.connect()
    with pytest.raises(InvalidState):
        net.server.send_frame(a.connection_id + 100, TextFrame(text="x"), net.clock.now)  # type: ignore[arg-type]
    with pytest.raises(InvalidState):
        net.server.receive_data(a.connection_id + 100, b"x", net.clock.now)  # type: ignore[arg-type]
    a.client.close(net.clock.now)
    net.pump()
    with pytest.raises(InvalidState):
        net.server.send_message(a.connection_id, b"gone")
    # Late input and repeated closes for a finished connection are ignored, not errors.
    net.server.receive_data(a.connection_id, b"\x81\x00", net.clock.now)
    net.server.close(a.connection_id, net.clock.now)
    assert net.server.data_to_send() == []
    with pytest.raises(ValueError, match="may not be sent"):
        net.server.close(a.connection_id, net.clock.now, code=1006)


def test_frames_of_a_rejected_newcomer_are_dropped() -> None:
    net = Network(ServerConfig(client_policy="reject"))
    net.connect()
    b = net.connect(pump=False)
    net.client_to_server(b)  # b's handshake completes at the server: 101 then close 1013
    # b's frame arrives before b learnt it was refused (b's core is told the 101 only now).
    net.server.data_to_send()
    b.client.receive_data(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: " + _accept_for(b) + b"\r\n\r\n",
        net.clock.now,
    )
    b.client.send_frame(TextFrame(text="sneaky"), net.clock.now)
    net.client_to_server(b)
    assert texts_from(net, b.connection_id) == []
    assert not any(
        isinstance(e, FrameReceived) and e.connection.id == b.connection_id
        for e in net.server.events_received()
    )


def _accept_for(link: Link) -> bytes:
    import base64
    import hashlib

    # The client's key comes from CountingRandom: bytes 0..15.
    key = base64.b64encode(bytes(range(16)))
    digest = hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest()
    return base64.b64encode(digest)


class _Numbering:
    """A stateful serializer: numbers the messages it sends, per session."""

    def __init__(self) -> None:
        self.sent = 0

    def for_session(self) -> _Numbering:
        return _Numbering()

    def serialize(self, frame: Frame) -> bytes | str | None:
        self.sent += 1
        return str(self.sent)

    def deserialize(self, data: bytes | str) -> Frame | None:
        return TextFrame(text=str(data))


def test_stateful_serializers_get_one_instance_per_session() -> None:
    net = Network(ServerConfig(client_policy="multi", serializer=_Numbering()))
    a, b = net.connect(), net.connect()
    for link in (a, a, b):
        net.server.send_frame(link.connection_id, TextFrame(text="x"), net.clock.now)
    net.pump()
    # Each session numbers from 1: a's instance is not b's.
    assert a.server_wrote[-1] == b"\x81\x011\x81\x012"
    assert b.server_wrote[-1] == b"\x81\x011"


def test_for_session_must_return_a_serializer() -> None:
    class Broken(_Numbering):
        def for_session(self) -> _Numbering:
            return object()  # type: ignore[return-value]

    net = Network(ServerConfig(serializer=Broken()))
    with pytest.raises(TypeError, match="for_session"):
        net.connect()
