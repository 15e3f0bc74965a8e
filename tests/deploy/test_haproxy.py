"""A real HAProxy in front of three ``wavewire serve`` processes on 127.0.0.1, configured with
the HAProxy block of docs/deploy.md (read from the page, so the two cannot differ).

Clients with distinct session keys stream paced audio through the proxy, each 40 ms frame
tagged with its sequence number; the echo server sends each back. Then:

* a client reconnecting with a key already in use lands on the same process (``X-Served-By``)
  and replaces the old session there (1000 "replaced by a newer connection");
* one process gets SIGTERM mid-stream: its sessions end with 1012 after the drain deadline, its
  clients reconnect through the proxy to the other processes, and it exits 0;
* every session on the other processes saw no gap: one connection, and every frame it sent came
  back, in order (sequence numbers), none missing;
* the metrics the surviving processes export match what the clients saw.

Nothing here asserts how long anything took: only codes, counts and orders. The drain figures
(sessions drained, time to exit) are printed for the record (``pytest -s``).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import struct
import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import anyio
import anyio.abc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from wavewire import (
    ConnectionClosed,
    InputAudioRawFrame,
    OutputAudioRawFrame,
    ReconnectPolicy,
    WebsocketClientParams,
    WebsocketClientTransport,
)
from wavewire.transports.client import ClientConnection

ROOT = Path(__file__).resolve().parents[2]
HAPROXY = shutil.which("haproxy") or (
    "/usr/sbin/haproxy" if Path("/usr/sbin/haproxy").exists() else None
)

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(
        HAPROXY is None,
        reason="haproxy is not installed (Debian: apt-get install haproxy; .ci/run does it)",
    ),
]

#: Clients streaming at once (the issue's 60), each for about 10 s: 3 s, the replacement, 2 s,
#: SIGTERM and the drain (DRAIN_TIMEOUT), 2 s more.
CLIENTS = int(os.environ.get("WAVEWIRE_HAPROXY_CLIENTS", "60"))
#: The drain deadline of each process (must exceed the proxy's check interval x fall).
DRAIN_TIMEOUT = 3.0
RATE = 16000
FRAME_BYTES = 1280  # 40 ms of 16 kHz mono PCM16: one output chunk of the echo server
FRAME_SECONDS = 0.04
#: Bound of the whole scenario (seconds).
LIMIT = 90.0


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def haproxy_config(**ports: int) -> str:
    """The ```haproxy block of docs/deploy.md, its placeholders filled in."""
    page = (ROOT / "docs" / "deploy.md").read_text(encoding="utf-8")
    [block] = re.findall(r"```haproxy\n(.*?)```", page, re.S)
    return str(block).format(**ports)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def frame(seq: int) -> bytes:
    return struct.pack(">I", seq) * (FRAME_BYTES // 4)


def environment() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), env.get("PYTHONPATH")]))
    return env


async def wait_listening(port: int) -> None:
    while True:
        try:
            stream = await anyio.connect_tcp("127.0.0.1", port)
        except OSError:
            await anyio.sleep(0.05)
            continue
        await stream.aclose()
        return


async def http_get(port: int, path: str) -> tuple[int, bytes]:
    async with await anyio.connect_tcp("127.0.0.1", port) as stream:
        await stream.send(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        data = b""
        while True:
            try:
                data += await stream.receive()
            except (anyio.EndOfStream, anyio.BrokenResourceError):
                break
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


async def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    status, body = await http_get(port, "/metrics")
    assert status == 200
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
    }


@dataclass
class Connection:
    """One connection of a client: the process that served it and how it ended."""

    server: str
    first_seq: int | None = None
    code: int | None = None
    reason: str = ""


@dataclass
class StreamingClient:
    """A wavewire client that streams sequence-numbered frames and records the echo."""

    key: str
    proxy_port: int
    sent: list[int] = field(default_factory=list)
    received: list[int] = field(default_factory=list)
    corrupt: int = 0
    connections: list[Connection] = field(default_factory=list)
    connected: anyio.Event = field(default_factory=anyio.Event)
    sending: bool = True
    transport: WebsocketClientTransport | None = None
    changed: anyio.Event = field(default_factory=anyio.Event)

    def params(self) -> WebsocketClientParams:
        return WebsocketClientParams(
            add_wav_header=False,
            audio_in_enabled=True,
            audio_out_enabled=True,
            audio_out_sample_rate=RATE,
            close_timeout=2.0,
            reconnect=ReconnectPolicy(base=0.2, cap=1.0),
        )

    @property
    def current(self) -> Connection | None:
        if self.connections and self.connections[-1].code is None:
            return self.connections[-1]
        return None

    def _notify(self) -> None:
        self.changed.set()
        self.changed = anyio.Event()

    async def run(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        uri = f"ws://127.0.0.1:{self.proxy_port}/ws?sid={self.key}"
        transport = WebsocketClientTransport(uri, self.params())
        self.transport = transport

        @transport.event_handler("on_connected")
        def on_connected(_: WebsocketClientTransport, connection: ClientConnection) -> None:
            self.connections.append(Connection(server=connection.header("x-served-by") or "?"))
            self.connected.set()
            self._notify()

        @transport.event_handler("on_disconnected")
        def on_disconnected(_: WebsocketClientTransport, connection: ClientConnection) -> None:
            end = connection.disconnect
            assert end is not None
            self.connections[-1].code = end.code
            self.connections[-1].reason = end.reason
            self._notify()

        async with transport, anyio.create_task_group() as tg:
            tg.start_soon(self._receive, transport)
            task_status.started()
            seq = 0
            while self.sending:
                current = self.current
                if current is not None:
                    try:
                        await transport.output().send(
                            OutputAudioRawFrame(audio=frame(seq), sample_rate=RATE)
                        )
                    except ConnectionClosed:
                        pass  # closing (replaced, drained) before its disconnect event: not sent
                    else:
                        if current.first_seq is None:
                            current.first_seq = seq
                        self.sent.append(seq)
                        seq += 1
                await anyio.sleep(FRAME_SECONDS)
            await self.wait_for_echo()
            tg.cancel_scope.cancel()

    async def _receive(self, transport: WebsocketClientTransport) -> None:
        async for received in transport.input():
            if isinstance(received, InputAudioRawFrame):
                audio = received.audio
                seq = struct.unpack(">I", audio[:4])[0]
                if audio != frame(seq):
                    self.corrupt += 1
                self.received.append(seq)
                self._notify()

    async def wait_for_echo(self) -> None:
        """Until the last frame sent on the current connection came back (callers bound it)."""
        while self.current is not None and self.sent and self.received[-1:] != self.sent[-1:]:
            await self.changed.wait()


@asynccontextmanager
async def process(
    args: list[str], log: IO[bytes], stack: AsyncExitStack
) -> AsyncIterator[anyio.abc.Process]:
    proc = await anyio.open_process(args, env=environment(), stdout=log, stderr=log)
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.kill()
        with anyio.move_on_after(5, shield=True):
            await proc.wait()


async def test_haproxy_three_processes_keys_replacement_drain_and_metrics(
    tmp_path: Path,
) -> None:
    assert HAPROXY is not None
    ports = {f"port{i}": free_port() for i in (1, 2, 3)}
    proxy_port = free_port()
    config = tmp_path / "haproxy.cfg"
    config.write_text(haproxy_config(proxy_port=proxy_port, **ports))
    names = {"s1": ports["port1"], "s2": ports["port2"], "s3": ports["port3"]}
    logs = {name: (tmp_path / f"{name}.log").open("wb") for name in [*names, "haproxy"]}
    procs: dict[str, anyio.abc.Process] = {}
    clients = [StreamingClient(f"k{i}", proxy_port) for i in range(CLIENTS)]
    with anyio.fail_after(LIMIT):
        async with AsyncExitStack() as stack:
            for log in logs.values():
                stack.callback(log.close)
            for name, port in names.items():
                args = [
                    sys.executable, "-m", "wavewire", "serve", "--host", "127.0.0.1",
                    "--port", str(port), "--session-key", "query:sid",
                    "--drain-timeout", str(DRAIN_TIMEOUT), "--metrics",
                ]  # fmt: skip
                procs[name] = await stack.enter_async_context(process(args, logs[name], stack))
            for port in names.values():
                await wait_listening(port)
            procs["haproxy"] = await stack.enter_async_context(
                process([HAPROXY, "-f", str(config), "-db"], logs["haproxy"], stack)
            )
            await wait_listening(proxy_port)

            async with anyio.create_task_group() as tg:
                for client in clients:
                    await tg.start(client.run)
                for client in clients:
                    await client.connected.wait()
                placement = {c.key: c.connections[0].server for c in clients}
                assert set(placement.values()) <= set(names), placement
                await anyio.sleep(3.0)  # streaming

                # A reconnect with a key in use lands on the same process and replaces it.
                old = clients[0]
                newcomer = StreamingClient(old.key, proxy_port)
                await tg.start(newcomer.run)
                await newcomer.connected.wait()
                assert newcomer.connections[0].server == placement[old.key]
                while old.connections[0].code is None:
                    await old.changed.wait()
                assert (old.connections[0].code, old.connections[0].reason) == (
                    1000,
                    "replaced by a newer connection",
                )
                old.sending = False

                # SIGTERM a process holding sessions, other than the one that replaced.
                by_server: dict[str, list[StreamingClient]] = {}
                for c in clients[1:]:
                    by_server.setdefault(placement[c.key], []).append(c)
                victim = max(
                    (s for s in by_server if s != placement[old.key]),
                    key=lambda s: len(by_server[s]),
                )
                drained = by_server[victim]
                survivors = [c for c in [*clients[1:], newcomer] if c not in drained]
                await anyio.sleep(2.0)
                started = anyio.current_time()
                procs[victim].send_signal(signal.SIGTERM)
                assert await procs[victim].wait() == 0
                exited_after = anyio.current_time() - started
                for c in drained:  # every drained client is back, on another process
                    while c.current is None or c.current.server == victim:
                        await c.changed.wait()
                await anyio.sleep(2.0)  # streaming on the new connections

                survivor_ports = [names[s] for s in names if s != victim]
                scraped = [await scrape(port) for port in survivor_ports]
                open_at_scrape = sum(1 for c in [*survivors, *drained] if c.current is not None)
                for c in [*survivors, *drained]:
                    c.sending = False
            # Every client's run has ended: each waited for the echo of its last frame.

        print(
            f"\ndrain: {len(drained)} sessions drained by {victim}, exited "
            f"{exited_after:.2f} s after SIGTERM (drain_timeout {DRAIN_TIMEOUT} s); "
            f"{len(survivors)} sessions on the other processes"
        )

    for c in [*clients, newcomer]:
        assert c.corrupt == 0
        # In order, never twice: sequence numbers only go up.
        assert c.received == sorted(set(c.received)), c.key
    for c in survivors:
        # No gap: one connection, and every frame sent on it came back, in order.
        assert len(c.connections) == 1, (c.key, c.connections)
        assert c.received == c.sent, c.key
    for c in drained:
        first, *later = c.connections
        assert (first.server, first.code, first.reason) == (victim, 1012, "service restart")
        assert later and all(conn.server not in (victim, "?") for conn in later)
        last = c.connections[-1]
        assert last.first_seq is not None
        # The session it has now got every frame sent on it, in order.
        tail = [s for s in c.sent if s >= last.first_seq]
        assert [s for s in c.received if s >= last.first_seq] == tail

    # The metrics of the surviving processes match what the clients saw.
    def total(name: str, **labels: str) -> float:
        wanted = tuple(sorted(labels.items()))
        return sum(m.get((name, wanted), 0.0) for m in scraped)

    assert total("wavewire_replacements_total") == 1  # the one replacement made
    served_here = [
        conn for c in [*clients, newcomer] for conn in c.connections if conn.server != victim
    ]
    assert total("wavewire_handshakes_total", outcome="accepted", status="101") == len(served_here)
    assert total("wavewire_sessions_active") == open_at_scrape == len(survivors) + len(drained)
