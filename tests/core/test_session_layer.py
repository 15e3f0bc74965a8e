"""The session layer alone (``core/session/sessions.py``), driven through a fake link: no bytes,
no handshake, no framing. Examples first, then a hypothesis state machine with random opens,
messages, ends and clock moves, checked against the invariants of the server fuzz
(tests/core/test_server_fuzz.py): the event-order contract, the policies, timers and output only
to open links."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from wavewire.core.config import AudioOutConfig, ClientPolicy, ServerConfig
from wavewire.core.errors import InvalidState
from wavewire.core.events import (
    AudioInterrupted,
    ClientConnected,
    ClientDisconnected,
    ClientRejected,
    ConnectionId,
    ConnectionInfo,
    DisconnectCause,
    Drained,
    FrameReceived,
    HandshakeFailed,
    MessageDropped,
    ServerEvent,
    SessionTimeout,
)
from wavewire.core.frames import (
    EndFrame,
    Frame,
    InterruptionFrame,
    OutputAudioRawFrame,
    TextFrame,
)
from wavewire.core.link import Ended, Link
from wavewire.core.serializers.protobuf import ProtobufFrameSerializer
from wavewire.core.session.audio import AudioBufferFull
from wavewire.core.session.sessions import (
    REJECTED_CODE,
    REJECTED_REASON,
    REPLACED_REASON,
    Sessions,
)

SERIALIZER = ProtobufFrameSerializer()


def _message(frame: Frame) -> bytes | str:
    data = SERIALIZER.serialize(frame)
    assert data is not None
    return data


GOOD = _message(TextFrame(text="hello"))


@dataclass(eq=False)
class FakeLink:
    """A ``Link`` that records what the sessions asked of it."""

    id: ConnectionId
    state: str = "open"
    sent: list[bytes | str] = field(default_factory=list)
    #: The close the sessions asked for (code, reason, drop_pending, cause).
    closed: tuple[int, str, bool, DisconnectCause] | None = None

    @property
    def is_open(self) -> bool:
        return self.state == "open"

    def send_message(self, data: bytes | str) -> None:
        assert self.is_open, f"a message to link {self.id}, which is {self.state}"
        self.sent.append(data)

    def close(
        self,
        code: int,
        reason: str,
        now: float,
        *,
        drop_pending: bool = False,
        cause: DisconnectCause = DisconnectCause.CLOSED_LOCALLY,
    ) -> None:
        if self.state == "open":
            self.state = "closing"
            self.closed = (code, reason, drop_pending, cause)

    def ended(self) -> Ended:
        """How the link ends: its close, completed, or (never closed) the peer's 1000."""
        self.state = "closed"
        if self.closed is None:
            return Ended(1000, "", DisconnectCause.CLOSED_BY_PEER)
        code, reason, _, cause = self.closed
        return Ended(code, reason, cause)


def _link(n: int) -> FakeLink:
    return FakeLink(ConnectionId(n))


def _info(link: Link) -> ConnectionInfo:
    return ConnectionInfo(id=link.id, path=f"/{link.id}")


def test_a_link_is_adopted_gets_messages_and_ends_once() -> None:
    sessions = Sessions(ServerConfig())
    link = _link(1)
    sessions.adopt(link, _info(link), 0.0)
    sessions.receive(link.id, GOOD)
    sessions.receive(link.id, b"\xff junk")
    assert sessions.send_frame(link.id, TextFrame(text="hi"), 0.0)
    assert sessions.take_touched() == [link]
    sessions.end(link.id, link.ended())
    sessions.end(link.id, Ended(1006, "", DisconnectCause.CONNECTION_LOST))  # a late repeat
    events = sessions.events_received()
    assert [type(e) for e in events] == [
        ClientConnected,
        FrameReceived,
        MessageDropped,
        ClientDisconnected,
    ]
    assert isinstance(events[1], FrameReceived) and events[1].frame == TextFrame(text="hello")
    assert isinstance(events[2], MessageDropped) and events[2].dropped_total == 1
    assert [SERIALIZER.deserialize(m) for m in link.sent] == [TextFrame(text="hi")]
    assert sessions.events_received() == []
    assert sessions.clients == ()


def test_replace_detaches_the_old_session_in_the_same_step() -> None:
    sessions = Sessions(ServerConfig(client_policy="replace"))
    old, new = _link(1), _link(2)
    sessions.adopt(old, _info(old), 0.0)
    sessions.adopt(new, _info(new), 1.0)
    events = sessions.events_received()
    assert [type(e) for e in events] == [ClientConnected, ClientDisconnected, ClientConnected]
    assert isinstance(events[1], ClientDisconnected)
    assert (events[1].code, events[1].reason, events[1].cause) == (
        1000,
        REPLACED_REASON,
        DisconnectCause.REPLACED,
    )
    assert old.closed == (1000, REPLACED_REASON, True, DisconnectCause.CLOSED_LOCALLY)
    sessions.receive(old.id, GOOD)  # the old link's late messages never reach the application
    sessions.end(old.id, old.ended())
    assert sessions.events_received() == []
    assert [c.id for c in sessions.clients] == [new.id]


def test_reject_closes_the_newcomer_with_1013() -> None:
    sessions = Sessions(ServerConfig(client_policy="reject"))
    first, second = _link(1), _link(2)
    sessions.adopt(first, _info(first), 0.0)
    sessions.adopt(second, _info(second), 0.0)
    assert [type(e) for e in sessions.events_received()] == [ClientConnected, ClientRejected]
    assert second.closed is not None and second.closed[:2] == (REJECTED_CODE, REJECTED_REASON)
    with pytest.raises(InvalidState, match="not a connected client"):
        sessions.send_frame(second.id, TextFrame(text="x"), 0.0)


def test_session_timeout_fires_once_on_the_synthetic_clock() -> None:
    sessions = Sessions(ServerConfig(session_timeout=5.0))
    link = _link(1)
    sessions.adopt(link, _info(link), 10.0)
    assert sessions.next_deadline() == 15.0
    sessions.handle_timer(14.999)
    sessions.events_received()
    sessions.handle_timer(15.0)
    assert [type(e) for e in sessions.events_received()] == [SessionTimeout]
    assert sessions.next_deadline() is None
    sessions.handle_timer(100.0)
    assert sessions.events_received() == []


def test_paced_audio_stops_when_the_link_is_no_longer_open() -> None:
    audio = AudioOutConfig(sample_rate=8000, end_silence_secs=0.0, max_queued_seconds=0.2)
    sessions = Sessions(ServerConfig(audio_out=audio))
    link = _link(1)
    sessions.adopt(link, _info(link), 0.0)
    second = OutputAudioRawFrame(audio=b"\x00\x01" * 8000, sample_rate=8000)
    sessions.send_frame(link.id, second, 0.0)  # taken whole, paced from now
    assert not sessions.audio_writable(link.id)
    with pytest.raises(AudioBufferFull):
        sessions.send_frame(link.id, second, 0.0)
    sessions.send_frame(link.id, InterruptionFrame(), 0.0)
    interrupted = [e for e in sessions.events_received() if isinstance(e, AudioInterrupted)]
    assert [e.dropped_ms for e in interrupted] == [960.0]
    link.sent.clear()
    sessions.send_frame(
        link.id, OutputAudioRawFrame(audio=second.audio[:3200], sample_rate=8000), 0.0
    )
    assert len(link.sent) == 1  # the first 40 ms chunk at once, the rest paced
    assert sessions.next_deadline() == pytest.approx(0.04)
    sessions.handle_timer(0.04)
    assert len(link.sent) == 2
    sessions.close(link.id, 0.05)
    sessions.reschedule(link.id)
    assert sessions.next_deadline() is None  # a closing link's queued audio is never sent
    with pytest.raises(InvalidState, match="closing"):
        sessions.audio_writable(link.id)
    sessions.end(link.id, link.ended())
    with pytest.raises(InvalidState):
        sessions.audio_stats(link.id)


def test_a_sessions_one_timer_is_the_earlier_of_its_timeout_and_its_audio() -> None:
    # next_deadline() is cached between moves: each move below must show in it at once.
    audio = AudioOutConfig(sample_rate=8000, end_silence_secs=0.0)
    sessions = Sessions(ServerConfig(audio_out=audio, session_timeout=0.05))
    link = _link(1)
    sessions.adopt(link, _info(link), 0.0)
    assert sessions.next_deadline() == 0.05
    # 120 ms of audio: a chunk at once, the others due at 40 and 80 ms.
    sessions.send_frame(
        link.id, OutputAudioRawFrame(audio=b"\x00\x01" * 960, sample_rate=8000), 0.0
    )
    assert sessions.next_deadline() == pytest.approx(0.04)  # the audio, before the timeout
    sessions.handle_timer(0.04)
    assert len(link.sent) == 2
    assert sessions.next_deadline() == 0.05  # now the timeout, before the chunk due at 80 ms
    sessions.handle_timer(0.05)
    assert [type(e) for e in sessions.events_received()] == [
        ClientConnected,
        SessionTimeout,
    ]
    assert sessions.next_deadline() == pytest.approx(0.08)
    sessions.handle_timer(0.08)
    assert len(link.sent) == 3
    assert sessions.next_deadline() is None


def test_end_frame_drains_then_closes_and_shutdown_closes_the_rest() -> None:
    audio = AudioOutConfig(sample_rate=8000, end_silence_secs=0.0)
    draining, other = _link(1), _link(2)
    sessions = Sessions(ServerConfig(audio_out=audio, session_timeout=60.0, client_policy="multi"))
    for link in (draining, other):
        sessions.adopt(link, _info(link), 0.0)
    chunk = b"\x00\x01" * 640  # 80 ms: two chunks
    sessions.send_frame(draining.id, OutputAudioRawFrame(audio=chunk, sample_rate=8000), 0.0)
    sessions.send_frame(draining.id, EndFrame(), 0.0)
    assert draining.is_open
    sessions.handle_timer(0.04)
    assert draining.closed == (1000, "", False, DisconnectCause.CLOSED_LOCALLY)
    assert len(draining.sent) == 2
    stats = sessions.audio_stats(other.id)
    assert stats is not None and stats.chunks_sent == 0
    sessions.send_message(other.id, "raw")
    sessions.shutdown(1.0, 1001, "bye")
    assert other.sent == ["raw"]
    assert other.closed == (1001, "bye", False, DisconnectCause.SHUTDOWN)
    assert sessions.next_deadline() is None  # no session timeout after a shutdown
    events = sessions.events_received()
    assert not any(isinstance(e, SessionTimeout | AudioInterrupted) for e in events)


# --- the state machine -------------------------------------------------------------------------

TIMEOUT = 3.0
AUDIO = AudioOutConfig(sample_rate=8000, end_silence_secs=0.04, max_queued_seconds=0.2)
FRAMES: list[Frame] = [
    TextFrame(text="t"),
    OutputAudioRawFrame(audio=b"\x00\x01" * 480, sample_rate=8000),  # 60 ms
    InterruptionFrame(),
    EndFrame(),
]


class SessionsMachine(RuleBasedStateMachine):
    POLICY: ClassVar[ClientPolicy] = "replace"

    def __init__(self) -> None:
        super().__init__()
        self.policy = self.POLICY
        config = ServerConfig(client_policy=self.policy, session_timeout=TIMEOUT, audio_out=AUDIO)
        self.sessions = Sessions(config)
        self.now = 0.0
        self.links: dict[ConnectionId, FakeLink] = {}
        self.open: list[ConnectionId] = []  # adopted, not yet disconnected, oldest first
        self.connected: dict[ConnectionId, ConnectionInfo] = {}
        self.connected_at: dict[ConnectionId, float] = {}
        self.disconnected: set[ConnectionId] = set()
        self.rejected: set[ConnectionId] = set()
        self.timed_out: set[ConnectionId] = set()
        self.dropped: dict[ConnectionId, int] = {}
        self.shut_down = False
        self.ending: set[ConnectionId] = set()
        self.drain_deadline: float | None = None  # set by the drain rule
        self.draining = False
        self.drained = 0  # Drained events seen
        self.drain_closed: set[ConnectionId] = set()  # closed with 1012 at the deadline

    # --- the model's checks, after every call ------------------------------------------------

    def settle(self) -> None:
        events = self.sessions.events_received()
        for i, event in enumerate(events):
            self.check(event, events[i + 1 :])
        for link in self.sessions.take_touched():
            assert link.id in self.links

    def check(self, event: ServerEvent, following: list[ServerEvent]) -> None:
        if isinstance(event, ClientConnected):
            cid = event.connection.id
            assert cid not in self.connected and cid not in self.rejected
            assert not self.shut_down
            assert not self.draining, "adopted during a drain"
            if self.policy != "multi":
                assert self.open == [], f"policy {self.policy}: {self.open} still open"
            self.connected[cid] = event.connection
            self.connected_at[cid] = self.now
            self.open.append(cid)
        elif isinstance(event, ClientDisconnected):
            cid = self.session_event(event.connection)
            self.open.remove(cid)
            self.disconnected.add(cid)
            if event.cause is DisconnectCause.DRAINED:
                assert self.drain_deadline is not None and self.now >= self.drain_deadline
                assert (event.code, event.reason) == (1012, "service restart")
            if event.cause is DisconnectCause.REPLACED:
                assert self.policy == "replace"
                assert (event.code, event.reason) == (1000, REPLACED_REASON)
                assert following and isinstance(following[0], ClientConnected)
        elif isinstance(event, ClientRejected):
            cid = event.connection.id
            closed = self.links[cid].closed
            if self.draining:
                assert closed is not None and closed[:2] == (1012, "service restart")
            else:
                assert self.policy == "reject" and len(self.open) == 1
                assert closed is not None and closed[:2] == (REJECTED_CODE, REJECTED_REASON)
            self.rejected.add(cid)
        elif isinstance(event, Drained):
            assert self.draining and self.open == [] and self.drained == 0
            self.drained += 1
        elif isinstance(event, SessionTimeout):
            cid = self.session_event(event.connection)
            assert cid not in self.timed_out, "a second SessionTimeout"
            assert self.now >= self.connected_at[cid] + TIMEOUT, "an early SessionTimeout"
            assert not self.shut_down
            self.timed_out.add(cid)
        elif isinstance(event, MessageDropped):
            cid = self.session_event(event.connection)
            self.dropped[cid] = self.dropped.get(cid, 0) + 1
            assert event.dropped_total == self.dropped[cid]
        else:
            assert not isinstance(event, HandshakeFailed), "the sessions never handshake"
            self.session_event(event.connection)

    def session_event(self, info: ConnectionInfo) -> ConnectionId:
        cid = info.id
        assert cid in self.open, f"an event for {cid}, not an open session"
        assert info is self.connected[cid], "a session's ConnectionInfo changed identity"
        return cid

    # --- rules -------------------------------------------------------------------------------

    @rule()
    def open_link(self) -> None:
        link = _link(len(self.links) + 1)
        self.links[link.id] = link
        if self.shut_down:
            link.state = "closed"  # a shut-down owner refuses new links before adopting
            return
        self.sessions.adopt(link, _info(link), self.now)
        self.settle()

    @precondition(lambda self: self.links)
    @rule(data=st.data(), good=st.booleans())
    def message(self, data: st.DataObject, good: bool) -> None:
        link = data.draw(st.sampled_from(sorted(self.links.values(), key=lambda lk: lk.id)))
        if link.state == "closed":
            return  # an ended link delivers nothing more
        self.sessions.receive(link.id, GOOD if good else b"\x01junk")
        self.settle()

    @precondition(lambda self: self.links)
    @rule(data=st.data(), lost=st.booleans())
    def link_ends(self, data: st.DataObject, lost: bool) -> None:
        """The peer closes, the socket is lost, or a close we started completes."""
        link = data.draw(st.sampled_from(sorted(self.links.values(), key=lambda lk: lk.id)))
        if link.state == "closed":
            return
        ended = link.ended()
        if lost:
            ended = Ended(1006, "", DisconnectCause.CONNECTION_LOST)
        self.sessions.end(link.id, ended)
        self.settle()

    @precondition(lambda self: self.open)
    @rule(data=st.data(), frame=st.sampled_from(FRAMES))
    def send(self, data: st.DataObject, frame: Frame) -> None:
        cid = data.draw(st.sampled_from(self.open))
        link = self.links[cid]
        try:
            self.sessions.send_frame(cid, frame, self.now)
        except InvalidState:
            # Closing, or its EndFrame is draining (the audio output takes nothing more).
            assert not link.is_open or cid in self.ending, "InvalidState on an open session"
        except AudioBufferFull:
            assert not self.sessions.audio_writable(cid)
        else:
            if isinstance(frame, EndFrame):
                self.ending.add(cid)
        self.settle()

    @precondition(lambda self: self.open)
    @rule(data=st.data())
    def close(self, data: st.DataObject) -> None:
        cid = data.draw(st.sampled_from(self.open))
        self.sessions.close(cid, self.now, 4000, "app")
        assert not self.links[cid].is_open
        self.settle()

    @rule(dt=st.sampled_from([0.0, 0.01, 0.04, 0.5, TIMEOUT]))
    def advance(self, dt: float) -> None:
        self.now += dt
        was_open = self.open_links()
        self.sessions.handle_timer(self.now)
        self.settle()
        self.check_drain_deadline(was_open)

    @precondition(lambda self: not self.shut_down)
    @rule()
    def shutdown(self) -> None:
        still_open = [cid for cid in self.open if self.links[cid].is_open]
        self.sessions.shutdown(self.now, 1001, "bye")
        self.shut_down = True
        self.settle()
        for cid in self.open:
            assert not self.links[cid].is_open  # already closing ones keep their close
        for cid in still_open:
            assert self.links[cid].closed == (1001, "bye", False, DisconnectCause.SHUTDOWN)

    @precondition(lambda self: not self.shut_down)
    @rule(dt=st.sampled_from([None, 0.0, 0.04, 0.5, TIMEOUT]))
    def drain(self, dt: float | None) -> None:
        deadline = None if dt is None else self.now + dt
        if self.drained == 0 and deadline is not None:
            current = self.drain_deadline if self.draining else None
            if current is None or deadline < current:
                self.drain_deadline = deadline  # brought forward, never back
        self.draining = True
        was_open = self.open_links()
        self.sessions.drain(self.now, deadline)
        self.settle()
        self.check_drain_deadline(was_open)

    def open_links(self) -> list[ConnectionId]:
        return [cid for cid in self.open if self.links[cid].is_open]

    def check_drain_deadline(self, was_open: list[ConnectionId]) -> None:
        """Past the drain deadline, every session still open was closed with 1012."""
        if self.drain_deadline is None or self.now < self.drain_deadline:
            return
        for cid in was_open:
            if cid not in self.drain_closed:
                closed = self.links[cid].closed
                expected = (1012, "service restart", False, DisconnectCause.DRAINED)
                assert closed == expected, closed
        self.drain_closed.update(self.open)

    # --- invariants --------------------------------------------------------------------------

    @invariant()
    def a_drain_ends_once_no_session_is_left(self) -> None:
        assert self.sessions.draining == self.draining
        if self.draining:
            assert self.drained == (1 if not self.open else 0)
            if self.drain_deadline is not None and self.now >= self.drain_deadline:
                assert all(not self.links[cid].is_open for cid in self.open)

    @invariant()
    def clients_match_the_model(self) -> None:
        assert [c.id for c in self.sessions.clients] == self.open
        if self.policy != "multi":
            assert len(self.open) <= 1

    @invariant()
    def deadlines_are_kept(self) -> None:
        deadline = self.sessions.next_deadline()
        assert deadline is None or deadline > self.now, "a deadline left behind"
        for cid in self.open:
            due = self.connected_at[cid] + TIMEOUT
            if not self.shut_down and cid not in self.timed_out | self.drain_closed:
                assert self.now < due, f"session {cid} passed its timeout without the event"

    @invariant()
    def output_only_while_open(self) -> None:
        for link in self.links.values():
            if link.id in self.rejected:
                assert link.sent == [], "output to a rejected link"


MACHINE_SETTINGS = settings(
    max_examples=120,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


class ReplaceMachine(SessionsMachine):
    POLICY = "replace"


class RejectMachine(SessionsMachine):
    POLICY = "reject"


class MultiMachine(SessionsMachine):
    POLICY = "multi"


TestReplaceSessions = ReplaceMachine.TestCase
TestReplaceSessions.settings = MACHINE_SETTINGS
TestRejectSessions = RejectMachine.TestCase
TestRejectSessions.settings = MACHINE_SETTINGS
TestMultiSessions = MultiMachine.TestCase
TestMultiSessions.settings = MACHINE_SETTINGS
