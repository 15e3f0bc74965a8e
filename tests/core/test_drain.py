"""Drain, health checks, session keys and the session cap, on the synthetic clock.

Every time asserted here is exact: the core takes ``now`` and nothing else moves time.
"""

from __future__ import annotations

import json

import pytest

from wavewire.core.admission import HandshakeRequest, Load, SessionKey, health_response
from wavewire.core.config import ServerConfig
from wavewire.core.errors import HandshakeRejected
from wavewire.core.events import (
    ClientConnected,
    ClientDisconnected,
    ClientRejected,
    ConnectFailed,
    ConnectionId,
    ConnectionInfo,
    DisconnectCause,
    Disconnected,
    Drained,
    HandshakeFailed,
    ServerEvent,
)
from wavewire.core.link import Ended
from wavewire.core.server import DRAIN_CODE, DRAIN_REASON, REPLACED_REASON
from wavewire.core.session.sessions import FULL_REASON, Sessions

from .pair import Link, Network


def drained(events: list[ServerEvent]) -> list[Drained]:
    return [e for e in events if isinstance(e, Drained)]


def disconnects(events: list[ServerEvent]) -> dict[int, ClientDisconnected]:
    return {e.connection.id: e for e in events if isinstance(e, ClientDisconnected)}


def client_close(link: Link) -> Disconnected:
    [closed] = [e for e in link.client_events if isinstance(e, Disconnected)]
    return closed


def refused_status(link: Link) -> HandshakeRejected:
    [failed] = [e for e in link.client_events if isinstance(e, ConnectFailed)]
    assert isinstance(failed.error, HandshakeRejected)
    return failed.error


def http_get(net: Network, path: str) -> tuple[int, dict[str, object]]:
    cid = net.server.connection_made(net.clock.now)
    request = f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
    net.server.receive_data(cid, request, net.clock.now)
    [transmit] = net.server.data_to_send()
    assert transmit.close
    head, _, body = transmit.data.partition(b"\r\n\r\n")
    assert b"application/json" in head
    return int(head.split()[1]), json.loads(body)


# --- drain ------------------------------------------------------------------------------------


def test_drain_closes_sessions_left_at_the_deadline_with_1012_then_reports_drained() -> None:
    # No keepalive: the drain deadline is the only timer.
    net = Network(ServerConfig(client_policy="multi", ping_interval=None))
    a, b = net.connect(), net.connect()
    start = net.clock.now
    net.server.drain(net.clock.now, net.clock.now + 30)
    assert net.server.draining
    assert net.server.next_deadline() == start + 30.0
    net.advance(29.999)
    assert net.server.load().sessions == 2
    assert net.server_events and drained(net.server_events) == []
    net.advance(0.001)
    assert net.clock.now == start + 30.0
    gone = disconnects(net.server_events)
    for link in (a, b):
        ended = gone[link.connection_id]
        assert (ended.code, ended.reason, ended.cause) == (
            DRAIN_CODE,
            DRAIN_REASON,
            DisconnectCause.DRAINED,
        )
        closed = client_close(link)
        assert (closed.code, closed.reason) == (1012, "service restart")
    assert drained(net.server_events) == [Drained(closed=2)]
    assert net.server.drained and net.server.clients == ()
    # The Drained event comes after the last disconnect, once.
    assert isinstance(net.server_events[-1], Drained)
    net.advance(100)
    assert len(drained(net.server_events)) == 1


def test_sessions_that_end_before_the_deadline_drain_without_a_1012() -> None:
    net = Network()
    a = net.connect()
    net.server.drain(net.clock.now, net.clock.now + 30)
    net.advance(5)
    a.client.close(net.clock.now, 1000, "bye")
    net.pump()
    assert drained(net.server_events) == [Drained(closed=0)]
    assert client_close(a).code == 1000
    # Nothing is left to fire: the drain deadline went with the last session.
    assert net.server.next_deadline() is None


def test_drain_with_no_session_is_drained_at_once() -> None:
    net = Network()
    net.server.drain(net.clock.now, net.clock.now + 30)
    assert net.server.events_received() == [Drained(closed=0)]
    assert net.server.drained


def test_upgrades_during_a_drain_get_503_with_retry_after_and_sessions_go_on() -> None:
    net = Network(ServerConfig(client_policy="replace"))
    a = net.connect()
    net.server.drain(net.clock.now, net.clock.now + 30)
    b = net.connect()
    error = refused_status(b)
    assert error.status_code == 503
    assert ("retry-after", "1") in [(k.lower(), v) for k, v in error.headers]
    failed = [e for e in net.server_events if isinstance(e, HandshakeFailed)]
    assert [(e.connection_id, e.status_code) for e in failed] == [(b.connection_id, 503)]
    # Under replace, a refused newcomer never replaced the running session.
    assert [c.id for c in net.server.clients] == [a.connection_id]


def test_drain_without_a_deadline_waits_for_sessions_forever() -> None:
    net = Network()
    a = net.connect()
    net.server.drain(net.clock.now, None)
    net.advance(10_000)
    assert drained(net.server_events) == []
    # The keepalive still runs: the session is alive and untouched.
    assert [c.id for c in net.server.clients] == [a.connection_id]
    net.server.drain(net.clock.now, net.clock.now + 1)  # brings a deadline in
    net.advance(1)
    assert client_close(a).code == 1012
    assert drained(net.server_events) == [Drained(closed=1)]


def test_a_second_drain_brings_the_deadline_forward_never_back() -> None:
    net = Network(ServerConfig(ping_interval=None))
    a = net.connect()
    start = net.clock.now
    net.server.drain(start, start + 10)
    net.server.drain(start, start + 20)  # later: ignored
    net.server.drain(start, None)  # no deadline: ignored
    assert net.server.next_deadline() == start + 10
    net.server.drain(start, start + 4)
    assert net.server.next_deadline() == start + 4
    net.advance(4)
    assert client_close(a).code == 1012
    net.server.drain(net.clock.now, net.clock.now)  # after the drain: nothing happens
    assert len(drained(net.server_events)) == 1


def test_a_deadline_already_passed_closes_at_once() -> None:
    net = Network()
    a = net.connect()
    net.server.drain(net.clock.now, net.clock.now - 1)
    net.pump()
    assert client_close(a).code == 1012
    assert drained(net.server_events) == [Drained(closed=1)]


def test_a_session_closing_at_the_deadline_is_not_counted_as_drained() -> None:
    net = Network(ServerConfig(client_policy="multi"))
    a, b = net.connect(), net.connect()
    net.server.drain(net.clock.now, net.clock.now + 5)
    net.server.close(a.connection_id, net.clock.now, 1000, "done")  # not answered yet
    net.advance(5)
    assert client_close(b).code == 1012
    assert drained(net.server_events) == [Drained(closed=1)]


# --- the session layer alone (a link that opened despite the drain) ------------------------------


class FakeLink:
    def __init__(self, link_id: int) -> None:
        self.id = ConnectionId(link_id)
        self.closed: tuple[int, str] | None = None

    @property
    def is_open(self) -> bool:
        return self.closed is None

    def send_message(self, data: bytes | str) -> None:
        raise AssertionError("nothing is sent")

    def close(
        self,
        code: int,
        reason: str,
        now: float,
        *,
        drop_pending: bool = False,
        cause: DisconnectCause = DisconnectCause.CLOSED_LOCALLY,
    ) -> None:
        self.closed = (code, reason)


def test_a_link_opened_while_draining_is_closed_with_1012_and_not_adopted() -> None:
    sessions = Sessions(ServerConfig())
    sessions.drain(0.0, 10.0)
    assert sessions.events_received() == [Drained(closed=0)]
    link = FakeLink(1)
    info = ConnectionInfo(id=ConnectionId(1))
    sessions.adopt(link, info, 1.0)  # an ASGI server may open one admitted just before
    assert link.closed == (1012, "service restart")
    assert sessions.events_received() == [
        ClientRejected(connection=info, code=1012, reason="service restart")
    ]
    assert sessions.load() == Load(0, None, draining=True)
    sessions.end(ConnectionId(1), Ended(1012, "", DisconnectCause.CLOSED_LOCALLY))
    assert sessions.events_received() == []


# --- health checks -----------------------------------------------------------------------------


def test_healthz_and_readyz_answer_json_and_readyz_turns_503_while_draining() -> None:
    net = Network(ServerConfig(max_sessions=3))
    net.connect()
    assert http_get(net, "/healthz") == (200, {"status": "alive"})
    assert http_get(net, "/readyz") == (
        200,
        {"status": "ready", "sessions": 1, "max_sessions": 3},
    )
    net.server.drain(net.clock.now, net.clock.now + 30)
    assert net.server.load() == Load(1, 3, draining=True)
    assert http_get(net, "/readyz?probe=1") == (
        503,
        {"status": "draining", "sessions": 1, "max_sessions": 3},
    )
    assert http_get(net, "/healthz") == (200, {"status": "alive"})


def test_readyz_is_503_at_max_sessions_and_the_next_session_is_closed_with_1013() -> None:
    net = Network(ServerConfig(client_policy="multi", max_sessions=2))
    a, b = net.connect(), net.connect()
    assert http_get(net, "/readyz") == (503, {"status": "full", "sessions": 2, "max_sessions": 2})
    c = net.connect()
    assert client_close(c).code == 1013
    assert client_close(c).reason == FULL_REASON
    rejected = [e for e in net.server_events if isinstance(e, ClientRejected)]
    assert [(e.connection.id, e.code) for e in rejected] == [(c.connection_id, 1013)]
    a.client.close(net.clock.now)
    net.pump()
    assert http_get(net, "/readyz")[0] == 200
    assert [x.id for x in net.server.clients] == [b.connection_id]


def test_health_checks_come_before_the_http_handler_unless_turned_off() -> None:
    from wavewire.core.admission import HttpResponse

    def handler(_request: object) -> HttpResponse:
        return HttpResponse(status_code=200, body=b"app", headers=(("Content-Type", "x/y"),))

    net = Network(ServerConfig(http_handler=handler, health_checks=False))
    cid = net.server.connection_made(net.clock.now)
    net.server.receive_data(cid, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", net.clock.now)
    [transmit] = net.server.data_to_send()
    assert transmit.data.endswith(b"app")
    net = Network(ServerConfig(http_handler=handler))
    assert http_get(net, "/healthz")[0] == 200


def test_health_response_is_none_for_other_paths() -> None:
    assert health_response("/", Load()) is None
    assert health_response("/readyz/x", Load()) is None


# --- session keys ------------------------------------------------------------------------------


def request(path: str = "/", headers: tuple[tuple[str, str], ...] = ()) -> HandshakeRequest:
    return HandshakeRequest(path=path, headers=headers)


@pytest.mark.parametrize(
    ("key", "req", "expected"),
    [
        (SessionKey("path"), request("/call/abc%20d?x=1"), "abc d"),
        (SessionKey("path", segment=0), request("/call/abc"), "call"),
        (SessionKey("path", segment=2), request("/call/abc"), None),
        (SessionKey("path"), request("/"), None),
        (SessionKey("query", "sid"), request("/ws?sid=k1&sid=k2"), "k1"),
        (SessionKey("query", "sid"), request("/ws?sid="), None),
        (SessionKey("header", "X-Session"), request(headers=(("x-session", "h"),)), "h"),
        (SessionKey("header", "X-Session"), request(), None),
    ],
)
def test_session_key_sources(key: SessionKey, req: HandshakeRequest, expected: str | None) -> None:
    assert key.of(req) == expected


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("cookie",), "path, query or header"),
        (("query",), "needs a name"),
        (("header", ""), "needs a name"),
    ],
)
def test_bad_session_keys_are_refused(args: tuple[str, ...], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SessionKey(*args)  # type: ignore[arg-type]


def test_bad_session_key_segment_and_config_types_are_refused() -> None:
    with pytest.raises(ValueError, match="segment"):
        SessionKey("path", segment="1")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="session_key"):
        ServerConfig(session_key="path")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="health_checks"):
        ServerConfig(health_checks=1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_sessions"):
        ServerConfig(max_sessions=0)
    with pytest.raises(ValueError, match="drain_timeout"):
        ServerConfig(drain_timeout=-1)


def test_replace_applies_per_session_key() -> None:
    net = Network(ServerConfig(session_key=SessionKey("query", "sid")))
    a1 = net.connect("ws://h/ws?sid=a")
    b1 = net.connect("ws://h/ws?sid=b")
    assert {c.session_key for c in net.server.clients} == {"a", "b"}
    a2 = net.connect("ws://h/ws?sid=a")
    assert (client_close(a1).code, client_close(a1).reason) == (1000, REPLACED_REASON)
    assert [c.id for c in net.server.clients] == [b1.connection_id, a2.connection_id]
    assert not [e for e in b1.client_events if isinstance(e, Disconnected)]
    connected = [
        e.connection.session_key for e in net.server_events if isinstance(e, ClientConnected)
    ]
    assert connected == ["a", "b", "a"]


def test_reject_applies_per_session_key_and_a_missing_key_gets_400() -> None:
    net = Network(ServerConfig(client_policy="reject", session_key=SessionKey("path")))
    a = net.connect("ws://h/call/one")
    b = net.connect("ws://h/call/two")
    c = net.connect("ws://h/call/one")
    assert client_close(c).code == 1013
    assert {x.id for x in net.server.clients} == {a.connection_id, b.connection_id}
    # Once "one" ends, its key is free again.
    a.client.close(net.clock.now)
    net.pump()
    d = net.connect("ws://h/call/one")
    assert d.connection_id in {x.id for x in net.server.clients}
    missing = net.connect("ws://h/")
    assert refused_status(missing).status_code == 400


def test_without_a_key_the_policy_applies_per_server() -> None:
    net = Network(ServerConfig())
    net.connect("ws://h/ws?sid=a")
    b = net.connect("ws://h/ws?sid=b")
    assert [c.id for c in net.server.clients] == [b.connection_id]
    assert net.server.clients[0].session_key is None


def test_the_cap_counts_no_replacement() -> None:
    net = Network(ServerConfig(session_key=SessionKey("query", "k"), max_sessions=1))
    net.connect("ws://h/?k=a")
    a2 = net.connect("ws://h/?k=a")  # replaces: the count stays 1
    assert [c.id for c in net.server.clients] == [a2.connection_id]
    b = net.connect("ws://h/?k=b")
    assert client_close(b).code == 1013
