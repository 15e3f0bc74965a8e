"""In-memory wiring of client and server cores, with a synthetic clock: no sockets, no sleeping."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

from wavewire.core.client import ClientProtocol
from wavewire.core.config import ClientConfig, ServerConfig
from wavewire.core.events import ClientEvent, ConnectionId, ServerEvent
from wavewire.core.protocol.connection import Transmit
from wavewire.core.server import ServerProtocol

FIXED_MASK = b"\x37\xfa\x21\x3d"


def counter_bytes() -> CountingRandom:
    return CountingRandom()


@dataclass
class CountingRandom:
    """A deterministic 'random' source: mask keys are FIXED_MASK, nonces count up."""

    calls: int = 0

    def __call__(self, n: int) -> bytes:
        self.calls += 1
        if n == 4:
            return FIXED_MASK
        return bytes(itertools.islice(itertools.cycle(range(256)), n))


@dataclass
class Clock:
    now: float = 1000.0

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now


@dataclass
class Link:
    """One client core connected to one server connection, both sides' outputs routed."""

    server: ServerProtocol
    client: ClientProtocol
    connection_id: ConnectionId
    clock: Clock
    client_events: list[ClientEvent] = field(default_factory=list)
    client_closed: bool = False
    server_closed: bool = False
    #: Everything the server wrote to this client, in order.
    server_wrote: list[bytes] = field(default_factory=list)


@dataclass
class Network:
    """A server and any number of clients, with explicit delivery (nothing moves by itself)."""

    server_config: ServerConfig = field(default_factory=ServerConfig)
    clock: Clock = field(default_factory=Clock)
    server: ServerProtocol = field(init=False)
    links: dict[ConnectionId, Link] = field(default_factory=dict)
    server_events: list[ServerEvent] = field(default_factory=list)
    #: Server output for connections made without a client core (raw bytes tests).
    raw_transmits: list[Transmit] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.server = ServerProtocol(self.server_config)

    def connect(
        self,
        uri: str = "ws://localhost/ws",
        config: ClientConfig | None = None,
        *,
        pump: bool = True,
    ) -> Link:
        """A new client and its server connection; ``pump=False`` leaves all bytes unsent."""
        client = ClientProtocol(uri, config, random_bytes=CountingRandom(), now=self.clock.now)
        connection_id = self.server.connection_made(self.clock.now, ("127.0.0.1", 40000))
        link = Link(self.server, client, connection_id, self.clock)
        self.links[connection_id] = link
        if pump:
            self.pump()
        return link

    def client_to_server(self, link: Link) -> None:
        """Deliver only what this client has written, collecting no server output."""
        for transmit in link.client.data_to_send():
            self._to_server(link, transmit)

    def pump(self) -> None:
        """Deliver every pending byte both ways until nothing moves."""
        moved = True
        while moved:
            moved = False
            for transmit in self.server.data_to_send():
                moved = True
                self._to_client(transmit)
            for link in self.links.values():
                for transmit in link.client.data_to_send():
                    moved = True
                    self._to_server(link, transmit)
            self.server_events += self.server.events_received()
            for link in self.links.values():
                link.client_events += link.client.events_received()

    def _to_client(self, transmit: Transmit) -> None:
        link = self.links.get(transmit.connection_id)
        if link is None:  # a connection the test drives by hand
            self.raw_transmits.append(transmit)
            return
        now = self.clock.now
        if transmit.data:
            link.server_wrote.append(transmit.data)
            if not link.client_closed:
                link.client.receive_data(transmit.data, now)
        if transmit.close:
            link.server_closed = True
            if not link.client_closed:
                link.client.receive_eof(now)

    def _to_server(self, link: Link, transmit: Transmit) -> None:
        now = self.clock.now
        if transmit.data and not link.server_closed:
            self.server.receive_data(link.connection_id, transmit.data, now)
        if transmit.close:
            link.client_closed = True
            if not link.server_closed:
                self.server.receive_eof(link.connection_id, now)

    def advance(self, seconds: float) -> None:
        """Move the clock and fire every timer that falls due, in deadline order."""
        target = self.clock.now + seconds
        while True:
            deadlines = [self.server.next_deadline()]
            deadlines += [link.client.next_deadline() for link in self.links.values()]
            due = [d for d in deadlines if d is not None and d <= target]
            if not due:
                break
            self.clock.now = max(self.clock.now, min(due))
            self.server.handle_timer(self.clock.now)
            for link in self.links.values():
                link.client.handle_timer(self.clock.now)
            self.pump()
        self.clock.now = target
        self.pump()
