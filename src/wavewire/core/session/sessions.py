"""The session layer: sessions adopted from links, the client policy, session timers, events.

Theory of operation
-------------------
A *session* is what the application talks to: one adopted link (``core/link.py``) with its own
session timer, ``Outbound`` (serializer, paced audio) and drop counter. ``Sessions`` is fed link
events by whoever owns the links -- ``adopt`` on ``Opened``, ``receive`` on ``MessageIn``,
``end`` on ``Ended`` -- and the passing of time (``handle_timer``); the application's commands
(``send_frame``, ``close``, ...) come in the same way, each with ``now``. Out come server events
(``events_received``), commands on links (``send_message``/``close``, called at once; the owner
collects which links it touched with ``take_touched``) and ``next_deadline``. It never sees a
byte of the wire, so the same sessions run over wavewire's own connections (``ServerProtocol``)
and over an ASGI server's WebSockets (``wavewire.asgi``).

The client policy is a rule applied at adoption:

* ``replace`` (default): the current session is detached at once -- ``ClientDisconnected(old)``
  then ``ClientConnected(new)`` in the same step -- its unsent output is dropped and its link
  closed with 1000 "replaced by a newer connection" (1000, not 1001, so that a client with
  reconnect logic does not fight the newcomer). Nothing the old link does afterwards reaches
  the application.
* ``reject``: the newcomer's link is closed with 1013 (try again later) and never adopted; the
  current session is untouched.
* ``multi``: every newcomer is adopted; nothing is replaced.

With ``session_key`` configured, "the current session" is the one with the newcomer's key
(``ConnectionInfo.session_key``): several keys, one session each. Without it, every session
has the key None: one per server. ``max_sessions`` closes a newcomer that would add a session
with 1013 (a replacement adds none).

Drain (``drain(now, deadline)``): no newcomer is adopted any more (the wire refuses them with
503 before they open; one that opens anyway is closed with 1012); current sessions run on until
they end or ``deadline``, when the rest are closed with 1012 "service restart" (cause
``DRAINED``). Once no session is left, ``Drained`` is emitted, once.

Event-order contract (``core/events.py``): exactly one ``ClientConnected`` and later exactly one
``ClientDisconnected`` per adopted link; nothing for a session outside that span.
"""

from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass

from wavewire.core.admission import Load
from wavewire.core.config import ServerConfig
from wavewire.core.errors import InvalidState
from wavewire.core.events import (
    ClientConnected,
    ClientDisconnected,
    ClientRejected,
    ConnectionId,
    ConnectionInfo,
    DisconnectCause,
    Drained,
    MessageDropped,
    ServerEvent,
    SessionTimeout,
)
from wavewire.core.frames import Frame
from wavewire.core.link import Ended, Link
from wavewire.core.serializers.base import session_serializer

from .audio import AudioStats
from .inbound import deserialize_message
from .outbound import Outbound

__all__ = [
    "DRAIN_CODE",
    "DRAIN_REASON",
    "FULL_REASON",
    "REJECTED_CODE",
    "REJECTED_REASON",
    "REPLACED_REASON",
    "Sessions",
]

#: Reason sent in the close frame of a replaced client.
REPLACED_REASON = "replaced by a newer connection"
#: Close code and reason for a newcomer refused under policy ``reject`` (RFC 6455 7.4.1).
REJECTED_CODE, REJECTED_REASON = 1013, "another client is connected"
#: Reason of a newcomer closed (1013) because ``max_sessions`` sessions are running.
FULL_REASON = "the server is at its session limit"
#: Close code and reason of the sessions a drain closes (RFC 6455 7.4.1, IANA registry).
DRAIN_CODE, DRAIN_REASON = 1012, "service restart"


class _Stale:
    """The cached next deadline must be recomputed."""


_STALE = _Stale()


@dataclass(slots=True, eq=False)
class _Session:
    link: Link
    info: ConnectionInfo
    timeout_at: float | None
    outbound: Outbound
    dropped: int = 0


class Sessions:
    """See the module docstring. ``events``: the list events are appended to (an owner that
    emits events of its own passes its list, so that one order holds for both)."""

    def __init__(self, config: ServerConfig, events: list[ServerEvent] | None = None) -> None:
        self.config = config
        self._sessions: dict[ConnectionId, _Session] = {}
        self._events: list[ServerEvent] = [] if events is None else events
        self._touched: dict[ConnectionId, Link] = {}
        # One timer entry per session for the earlier of its timeout and its audio deadline, in
        # a heap invalidated lazily: next_deadline() and handle_timer() cost O(log n).
        self._timers: list[tuple[float, int, ConnectionId]] = []
        self._scheduled: dict[ConnectionId, float] = {}
        self._tiebreak = itertools.count()
        # next_deadline()'s answer, kept until a timer moves (_STALE: recompute). The owner asks
        # after every input; most inputs (a received message, audio queued behind a chunk
        # already scheduled) move none.
        self._next: float | _Stale | None = _STALE
        # Policies replace/reject: the one session of each session key (None without keys).
        self._by_key: dict[str | None, ConnectionId] = {}
        self._draining = False
        self._drain_deadline: float | None = None
        self._drain_closed = 0
        self._drained = False

    # --- link events -------------------------------------------------------------------------

    def adopt(self, link: Link, info: ConnectionInfo, now: float) -> None:
        """``link`` opened (``info.id == link.id``): adopt it as a session, or reject it."""
        config = self.config
        policy = config.client_policy
        current = None if policy == "multi" else self._by_key.get(info.session_key)
        if self._draining:
            self._refuse(link, info, DRAIN_CODE, DRAIN_REASON, now)
            return
        if current is not None and policy == "reject":
            self._refuse(link, info, REJECTED_CODE, REJECTED_REASON, now)
            return
        cap = config.max_sessions
        if cap is not None and current is None and len(self._sessions) >= cap:
            self._refuse(link, info, REJECTED_CODE, FULL_REASON, now)
            return
        if current is not None:  # policy replace
            self._detach(self._sessions[current], now)
        timeout = config.session_timeout
        # The session timer starts at adoption, for every session (Pipecat arms it once, ever).
        outbound = Outbound(session_serializer(config.serializer), config.audio_out)
        session = _Session(link, info, None if timeout is None else now + timeout, outbound)
        self._sessions[link.id] = session
        if policy != "multi":
            self._by_key[info.session_key] = link.id
        self._events.append(ClientConnected(connection=info))
        self._schedule(session)

    def receive(self, link_id: ConnectionId, data: bytes | str) -> None:
        """One message on the link; dropped unless it is a session's (a rejected or replaced
        link's messages never reach the application)."""
        session = self._sessions.get(link_id)
        if session is None:
            return
        event = deserialize_message(
            session.outbound.serializer, session.info, data, session.dropped
        )
        if isinstance(event, MessageDropped):
            session.dropped = event.dropped_total
        if event is not None:
            self._events.append(event)

    def end(self, link_id: ConnectionId, ended: Ended) -> None:
        """The link closed: its session (if any) ends with ``ClientDisconnected``."""
        session = self._sessions.get(link_id)
        if session is None:
            return
        self._forget(session)
        self._events.append(
            ClientDisconnected(
                connection=session.info,
                code=ended.code,
                reason=ended.reason,
                cause=ended.cause,
                audio=session.outbound.stats,
            )
        )
        self._check_drained()

    # --- drain -------------------------------------------------------------------------------

    def drain(self, now: float, deadline: float | None) -> None:
        """Stop adopting; close the sessions still running at ``deadline`` (None: never) with
        1012. ``Drained`` follows once none is left (at once if there is none). A second call
        may bring the deadline forward, never back."""
        if self._drained:
            return
        later = deadline is None or (
            self._drain_deadline is not None and self._drain_deadline <= deadline
        )
        if self._draining and later:
            return
        self._draining = True
        self._drain_deadline = deadline
        self._next = _STALE
        if deadline is not None and now >= deadline:
            self._close_drained(now)
        self._check_drained()

    @property
    def draining(self) -> bool:
        """``drain`` was called: no newcomer is adopted any more."""
        return self._draining

    @property
    def drained(self) -> bool:
        """A drain is complete: no session is left (``Drained`` was emitted)."""
        return self._drained

    def load(self) -> Load:
        """The state admission and the health checks read."""
        return Load(len(self._sessions), self.config.max_sessions, self._draining)

    # --- time ----------------------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        """The earliest time at which ``handle_timer`` has something to do, or None."""
        cached = self._next
        if not isinstance(cached, _Stale):
            return cached
        drain = self._drain_deadline
        earliest = drain
        timers, scheduled = self._timers, self._scheduled
        while timers:
            deadline, _, link_id = timers[0]
            if scheduled.get(link_id) == deadline:
                earliest = deadline if drain is None else min(deadline, drain)
                break
            heapq.heappop(timers)  # stale: rescheduled, fired, or its session is gone
        self._next = earliest
        return earliest

    def handle_timer(self, now: float) -> None:
        """Fire every deadline at or before ``now``; harmless to call early or often."""
        if self._drain_deadline is not None and now >= self._drain_deadline:
            self._close_drained(now)
        while (deadline := self.next_deadline()) is not None and now >= deadline:
            _, _, link_id = heapq.heappop(self._timers)
            del self._scheduled[link_id]
            self._next = _STALE
            session = self._sessions[link_id]  # an ended session is unscheduled
            if session.timeout_at is not None and now >= session.timeout_at:
                session.timeout_at = None
                self._events.append(SessionTimeout(connection=session.info))
            due = session.outbound.next_deadline()
            if due is not None and now >= due and session.link.is_open:
                self._write(session, session.outbound.take_due(now), now)
            self._schedule(session)

    def reschedule(self, link_id: ConnectionId) -> None:
        """The link's state may have changed (no pacing once it is not open): re-arm. Only a
        link that is no longer open needs it: while open, every change of a session's timers
        comes through this object's own calls, which re-arm it."""
        session = self._sessions.get(link_id)
        if session is not None:
            self._schedule(session)

    # --- application commands ----------------------------------------------------------------

    def send_frame(self, link_id: ConnectionId, frame: Frame, now: float) -> bool:
        """Send ``frame`` through the session's ``Outbound`` (``core/session/outbound.py``).

        False if the serializer has no message for this frame kind; ``InvalidState`` unless the
        session is open; ``ValueError`` for audio the output cannot take; ``AudioBufferFull``
        while the audio queue is full (wait for ``audio_writable``).
        """
        session = self._open_session(link_id)
        messages, taken = session.outbound.send(frame, now)
        self._write(session, messages, now)
        return taken

    def send_message(self, link_id: ConnectionId, data: bytes | str) -> None:
        """Queue one raw message (binary for bytes, text for str) for the session."""
        session = self._open_session(link_id)
        session.link.send_message(data)
        self._touched[link_id] = session.link

    def close(self, link_id: ConnectionId, now: float, code: int = 1000, reason: str = "") -> None:
        """Start closing the session's link; idempotent, and a no-op for a non-session."""
        session = self._sessions.get(link_id)
        if session is not None:
            self._close_link(session.link, code, reason, now)
            self._schedule(session)

    def shutdown(self, now: float, code: int, reason: str) -> None:
        """Close every session's link with ``code``; no session timer fires any more."""
        for session in list(self._sessions.values()):
            session.timeout_at = None
            self._close_link(session.link, code, reason, now, cause=DisconnectCause.SHUTDOWN)
            self._schedule(session)

    def audio_stats(self, link_id: ConnectionId) -> AudioStats | None:
        """The session's output audio counters, or None without ``audio_out``."""
        session = self._sessions.get(link_id)
        if session is None:
            raise InvalidState(f"connection {link_id} is not a connected client")
        return session.outbound.stats

    def audio_writable(self, link_id: ConnectionId) -> bool:
        """Whether the session's audio queue would accept audio now."""
        return self._open_session(link_id).outbound.writable

    # --- outputs -----------------------------------------------------------------------------

    def events_received(self) -> list[ServerEvent]:
        """Events since the last call, in order."""
        events = list(self._events)
        self._events.clear()
        return events

    def take_touched(self) -> list[Link]:
        """Links given commands since the last call: their owner collects their output."""
        if not self._touched:
            return []
        touched = list(self._touched.values())
        self._touched.clear()
        return touched

    @property
    def clients(self) -> tuple[ConnectionInfo, ...]:
        """The adopted sessions, oldest first."""
        return tuple(session.info for session in self._sessions.values())

    # --- internals ---------------------------------------------------------------------------

    def _open_session(self, link_id: ConnectionId) -> _Session:
        session = self._sessions.get(link_id)
        if session is None:
            raise InvalidState(f"connection {link_id} is not a connected client")
        if not session.link.is_open:
            raise InvalidState(f"cannot send on connection {link_id}: it is closing")
        return session

    def _close_link(
        self,
        link: Link,
        code: int,
        reason: str,
        now: float,
        *,
        drop_pending: bool = False,
        cause: DisconnectCause = DisconnectCause.CLOSED_LOCALLY,
    ) -> None:
        link.close(code, reason, now, drop_pending=drop_pending, cause=cause)
        self._touched[link.id] = link

    def _schedule(self, session: _Session) -> None:
        """(Re)arm the one timer entry of ``session`` after anything that may move it."""
        link = session.link
        earliest = session.timeout_at
        # Output is paced only while open: a closing session's queued audio is never sent.
        if (
            link.is_open
            and (deadline := session.outbound.next_deadline()) is not None
            and (earliest is None or deadline < earliest)
        ):
            earliest = deadline
        link_id = link.id
        if earliest is None:
            if self._scheduled.pop(link_id, None) is not None:
                self._next = _STALE
        elif self._scheduled.get(link_id) != earliest:
            self._scheduled[link_id] = earliest
            heapq.heappush(self._timers, (earliest, next(self._tiebreak), link_id))
            self._next = _STALE

    def _write(self, session: _Session, messages: list[bytes | str], now: float) -> None:
        """Send a session's outbound messages; close its link once its output has finished."""
        outbound = session.outbound
        if outbound.has_events:
            self._events += outbound.take_events(session.info)
        link = session.link
        if messages:
            for data in messages:
                link.send_message(data)
            self._touched[link.id] = link
        if outbound.finished and link.is_open:
            # EndFrame drained (close after the last chunk) or CancelFrame (drop and close now).
            self._close_link(link, 1000, "", now, drop_pending=outbound.cancelled)
        self._schedule(session)

    def _refuse(self, link: Link, info: ConnectionInfo, code: int, reason: str, now: float) -> None:
        """Close a newcomer that is not adopted."""
        self._close_link(link, code, reason, now)
        self._events.append(ClientRejected(connection=info, code=code, reason=reason))

    def _forget(self, session: _Session) -> None:
        link_id = session.link.id
        del self._sessions[link_id]
        if self._scheduled.pop(link_id, None) is not None:
            self._next = _STALE
        if self._by_key.get(session.info.session_key) == link_id:
            del self._by_key[session.info.session_key]

    def _close_drained(self, now: float) -> None:
        """The drain deadline: close every session still running with 1012."""
        self._drain_deadline = None
        self._next = _STALE
        for session in list(self._sessions.values()):
            session.timeout_at = None
            if session.link.is_open:
                self._drain_closed += 1
            self._close_link(
                session.link, DRAIN_CODE, DRAIN_REASON, now, cause=DisconnectCause.DRAINED
            )
            self._schedule(session)

    def _check_drained(self) -> None:
        if self._draining and not self._sessions and not self._drained:
            self._drained = True
            self._drain_deadline = None
            self._next = _STALE
            self._events.append(Drained(closed=self._drain_closed))

    def _detach(self, session: _Session, now: float) -> None:
        """Policy ``replace``: the old session ends now; its link closes in the background."""
        self._forget(session)
        self._events.append(
            ClientDisconnected(
                connection=session.info,
                code=1000,
                reason=REPLACED_REASON,
                cause=DisconnectCause.REPLACED,
                audio=session.outbound.stats,
            )
        )
        self._close_link(session.link, 1000, REPLACED_REASON, now, drop_pending=True)
