"""A wavewire echo server driven by a plain ``selectors`` loop: no asyncio, no trio, no threads.

It shows everything a driver owes the sans-IO core (docs/embedding.md walks through it):
feed it bytes and the time, then after *every* call write ``data_to_send()``, handle
``events_received()`` and sleep no longer than ``next_deadline()``.

    python examples/selectors_echo_server.py --port 8765 [--max-seconds 30]

Prints ``listening on HOST:PORT`` once ready; every frame a client sends is sent back.
"""

from __future__ import annotations

import argparse
import selectors
import socket
import time

from wavewire.core.config import ServerConfig
from wavewire.core.events import ClientConnected, ClientDisconnected, ConnectionId, FrameReceived
from wavewire.core.frames import (
    AudioRawFrame,
    Frame,
    InputTransportMessageFrame,
    OutputTransportMessageFrame,
)
from wavewire.core.serializers import RawFrameSerializer
from wavewire.core.server import ServerProtocol


class SelectorsServer:
    def __init__(self, host: str, port: int) -> None:
        self.protocol = ServerProtocol(ServerConfig(serializer=RawFrameSerializer()))
        self.selector = selectors.DefaultSelector()
        self.listener = socket.create_server((host, port))
        self.listener.setblocking(False)
        self.selector.register(self.listener, selectors.EVENT_READ)
        self.sockets: dict[ConnectionId, socket.socket] = {}
        self.pending: dict[ConnectionId, bytearray] = {}  # written by flush, drained when writable
        self.closing: set[ConnectionId] = set()

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.listener.getsockname()[:2]
        return host, port

    def run(self, max_seconds: float) -> None:
        stop_at = time.monotonic() + max_seconds
        while time.monotonic() < stop_at:
            deadline = self.protocol.next_deadline()
            timeout = 1.0 if deadline is None else max(0.0, deadline - time.monotonic())
            for key, mask in self.selector.select(min(timeout, 1.0)):
                if key.fileobj is self.listener:
                    self.accept()
                else:
                    self.on_socket(key.data, mask)
            self.protocol.handle_timer(time.monotonic())
            self.flush()
        self.protocol.shutdown(time.monotonic())
        self.flush()

    def accept(self) -> None:
        sock, remote = self.listener.accept()
        sock.setblocking(False)
        connection_id = self.protocol.connection_made(time.monotonic(), remote)
        self.sockets[connection_id] = sock
        self.pending[connection_id] = bytearray()
        self.selector.register(sock, selectors.EVENT_READ, connection_id)
        self.flush()

    def on_socket(self, connection_id: ConnectionId, mask: int) -> None:
        sock = self.sockets[connection_id]
        if mask & selectors.EVENT_WRITE:
            self.write_some(connection_id)
        if mask & selectors.EVENT_READ and connection_id in self.sockets:
            try:
                data = sock.recv(65536)
            except ConnectionError:
                self.protocol.connection_lost(connection_id, time.monotonic())
                self.forget(connection_id)
            else:
                if data:
                    self.protocol.receive_data(connection_id, data, time.monotonic())
                else:
                    self.protocol.receive_eof(connection_id, time.monotonic())
        self.flush()

    def flush(self) -> None:
        """The one choke point, after every core call: route output, then handle events.

        Handling an event may queue more output (the echo), so repeat until both are empty.
        """
        while True:
            transmits = self.protocol.data_to_send()
            events = self.protocol.events_received()
            if not transmits and not events:
                return
            for transmit in transmits:
                connection_id = transmit.connection_id
                if connection_id not in self.sockets:
                    continue  # the socket already failed; the core has been told
                if transmit.drop_pending:
                    self.pending[connection_id].clear()
                self.pending[connection_id] += transmit.data
                if transmit.close:
                    self.closing.add(connection_id)
                self.write_some(connection_id)
            for event in events:
                if isinstance(event, ClientConnected | ClientDisconnected):
                    print(type(event).__name__, event.connection.id, flush=True)
                elif isinstance(event, FrameReceived):
                    self.echo(event.connection.id, event.frame)

    def echo(self, connection_id: ConnectionId, frame: Frame) -> None:
        if isinstance(frame, AudioRawFrame):
            # Echoed as received, message for message: raw PCM is its own wire format, and
            # nothing here needs the core's real-time pacing (ServerConfig.audio_out).
            self.protocol.send_message(connection_id, frame.audio)
        elif isinstance(frame, InputTransportMessageFrame):
            reply = OutputTransportMessageFrame(message=frame.message)
            self.protocol.send_frame(connection_id, reply, time.monotonic())

    def write_some(self, connection_id: ConnectionId) -> None:
        sock, buffer = self.sockets[connection_id], self.pending[connection_id]
        try:
            sent = sock.send(buffer) if buffer else 0
        except BlockingIOError:
            sent = 0
        except ConnectionError:
            self.protocol.connection_lost(connection_id, time.monotonic())
            self.forget(connection_id)
            return
        del buffer[:sent]
        if not buffer and connection_id in self.closing:
            self.forget(connection_id)
            return
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if buffer else 0)
        self.selector.modify(sock, events, connection_id)

    def forget(self, connection_id: ConnectionId) -> None:
        sock = self.sockets.pop(connection_id)
        self.pending.pop(connection_id, None)
        self.closing.discard(connection_id)
        self.selector.unregister(sock)
        sock.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--max-seconds", type=float, default=30.0)
    args = parser.parse_args()
    server = SelectorsServer(args.host, args.port)
    print("listening on {}:{}".format(*server.address), flush=True)
    server.run(args.max_seconds)


if __name__ == "__main__":
    main()
