"""wavewire against its peers, side by side: server CPU per message, rates, memory, real-time audio.

    pip install -e '.[bench]'
    python bench/peers.py                       # the default run: 3 rounds, a few minutes
    python bench/peers.py --quick               # smoke run, tiny counts (seconds)
    python bench/peers.py --rounds 5 --count 5000 --rows rt,pipe640 \
        --servers websockets,wavewire-native

Method (issue 11). Each server runs alone in its own process, pinned to one core
(``os.sched_setaffinity``); one fixed client, this process, is pinned to another core. The client
uses plain sockets: every frame it sends is built and masked once before timing, no WebSocket
library runs in its hot loop, and it knows the exact bytes of each echo (a server's frame is
unmasked, so the reply to a masked 640 B frame is 644 bytes). Rounds are interleaved (every
server once per round, the order rotated each round). A row's figures are the medians over the
rounds; each ratio is the median of the per-round ratios to ``websockets`` in the same round.

Server CPU is read from ``/proc/PID/task/*/schedstat`` (first field: nanoseconds on a CPU,
summed over the server's threads) before and after each timed section: on a shared machine this
is the steadiest figure, since it does not count the time the server waited for a CPU.

Rows:

* ``rt``: 640 B binary round trips, one at a time: round trips/s, server CPU per round trip.
* ``pipe640``: 640 B messages with 100 in flight (a new one sent for every echo): msgs/s, CPU/msg.
* ``pipe64k``: 64 KiB messages with 16 in flight: MB/s of payload echoed (10^6 B), CPU/msg.
* ``handshake``: connect, upgrade, one 640 B echo, close handshake, wait for the server's EOF:
  handshakes/s, CPU per handshake.
* ``idle``: VmRSS (``/proc/PID/status``) growth of the server per idle connection, 1,000 open.
* ``audio`` (wavewire only: the others do not pace audio): ``wavewire serve --policy multi`` with
  the protobuf serializer; N sessions, each sending 20 ms frames of 16 kHz mono PCM16 at real
  time (their phases spread over the 20 ms) and reading the echo, which the server paces in
  40 ms chunks. Server CPU-seconds per session-second; p99 of the arrival-gap error (the gap
  between two echoed chunks minus the first one's duration, all sessions); audio lost (bytes
  sent minus echoed bytes arrived by the end of the window: 0.3 s after the last send, so
  late counts as lost); the client's own p99 send lag, which says whether it kept up.

Servers: wavewire's ``serve --echo-raw`` (``wavewire.cli.serve``, the CLI's own code) on its three
driver/backend pairs; ``websockets``; ``aiohttp``; ``picows``; ``raw``, an asyncio TCP echo that
sends back every byte it reads (the floor for Python on that loop: the client takes its replies
as the frames it sent); and each asyncio one again on ``uvloop`` (``…/uvloop``), where installed.
No server logs (logging is left unconfigured, as a library user's would be).

Everything runs on 127.0.0.1, bounded in count and in time (``--timeout`` per timed section).
Absolute numbers depend on the machine and its load (printed from ``/proc/loadavg`` before and
after): compare within one run.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import importlib.util
import json
import math
import os
import resource
import selectors
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

SRC = Path(__file__).resolve().parents[1] / "src"
if str(SRC) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(SRC))

from wsproto.frame_protocol import Opcode  # noqa: E402

from wavewire.core.protocol.framing import encode_frame  # noqa: E402
from wavewire.core.serializers._pb import frames_pb2 as pb  # noqa: E402

# --- servers --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Server:
    name: str
    #: websockets, aiohttp, picows, raw or wavewire
    kind: str
    uvloop: bool = False
    #: wavewire only: (driver, backend)
    driver: str = ""
    backend: str = "asyncio"

    @property
    def needs(self) -> tuple[str, ...]:
        modules = {"wavewire": ("trio",) if self.backend == "trio" else ()}.get(
            self.kind, () if self.kind == "raw" else (self.kind,)
        )
        return (*modules, "uvloop") if self.uvloop else modules


SERVERS = (
    Server("websockets", "websockets"),
    Server("wavewire-anyio", "wavewire", driver="anyio"),
    Server("wavewire-anyio-trio", "wavewire", driver="anyio", backend="trio"),
    Server("wavewire-native", "wavewire", driver="asyncio"),
    Server("aiohttp", "aiohttp"),
    Server("picows", "picows"),
    Server("raw", "raw"),
    Server("websockets/uvloop", "websockets", uvloop=True),
    Server("wavewire-anyio/uvloop", "wavewire", uvloop=True, driver="anyio"),
    Server("wavewire-native/uvloop", "wavewire", uvloop=True, driver="asyncio"),
    Server("aiohttp/uvloop", "aiohttp", uvloop=True),
    Server("picows/uvloop", "picows", uvloop=True),
    Server("raw/uvloop", "raw", uvloop=True),
)
BY_NAME = {server.name: server for server in SERVERS}
BASELINE = "websockets"


def installed(server: Server) -> bool:
    return all(importlib.util.find_spec(module) is not None for module in server.needs)


def run_asyncio(main: Callable[[], Any], use_uvloop: bool) -> None:
    if use_uvloop:
        import uvloop

        uvloop.run(main())
    else:
        asyncio.run(main())


async def forever() -> None:
    await asyncio.Future()  # until SIGTERM


def serve_websockets(port: int) -> Callable[[], Any]:
    from websockets.asyncio.server import ServerConnection, serve
    from websockets.exceptions import ConnectionClosed

    async def echo(ws: ServerConnection) -> None:
        with contextlib.suppress(ConnectionClosed):  # the idle row's clients just go away
            async for message in ws:
                await ws.send(message)

    async def main() -> None:
        async with serve(echo, "127.0.0.1", port, compression=None):
            await forever()

    return main


def serve_aiohttp(port: int) -> Callable[[], Any]:
    from aiohttp import WSMsgType, web

    async def echo(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for message in ws:
            if message.type is WSMsgType.BINARY:
                await ws.send_bytes(message.data)
            elif message.type is WSMsgType.TEXT:
                await ws.send_str(message.data)
        return ws

    async def main() -> None:
        app = web.Application()
        app.router.add_get("/", echo)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        await forever()

    return main


def serve_picows(port: int) -> Callable[[], Any]:
    from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_create_server

    class Echo(WSListener):  # type: ignore[misc, unused-ignore]  # Any without picows
        def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
            if frame.msg_type == WSMsgType.CLOSE:
                transport.send_close(frame.get_close_code(), frame.get_close_message())
                transport.disconnect()
            elif frame.msg_type in (WSMsgType.BINARY, WSMsgType.TEXT):
                transport.send(frame.msg_type, frame.get_payload_as_bytes())

    async def main() -> None:
        server = await ws_create_server(lambda _request: Echo(), "127.0.0.1", port)
        async with server:
            await forever()

    return main


class RawEcho(asyncio.Protocol):
    """Every byte back as it came: no WebSocket at all."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TCPTransport is not an asyncio.Transport subclass: no isinstance check here.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)

    def eof_received(self) -> bool:
        return False  # close


def serve_raw(port: int) -> Callable[[], Any]:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(RawEcho, "127.0.0.1", port)
        async with server:
            await forever()

    return main


def serve_wavewire(server: Server, port: int, audio: bool) -> None:
    """``wavewire serve --echo-raw`` (or, for the audio row, ``--policy multi`` with protobuf)."""
    import anyio

    from wavewire.cli import build_parser, serve

    argv = ["serve", "--host", "127.0.0.1", "--port", str(port)]
    argv += ["--driver", server.driver, "--backend", server.backend]
    argv += ["--policy", "multi", "--serializer", "protobuf"] if audio else ["--echo-raw"]
    options = {"use_uvloop": True} if server.uvloop else {}
    anyio.run(
        serve, build_parser().parse_args(argv), backend=server.backend, backend_options=options
    )


def run_server(name: str, port: int, cpu: int, audio: bool) -> None:
    os.sched_setaffinity(0, {cpu})
    raise_fd_limit()
    server = BY_NAME[name]
    if server.kind == "wavewire":
        serve_wavewire(server, port, audio)
        return
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    factory = {
        "websockets": serve_websockets,
        "aiohttp": serve_aiohttp,
        "picows": serve_picows,
        "raw": serve_raw,
    }[server.kind]
    with contextlib.suppress(SystemExit, KeyboardInterrupt):
        run_asyncio(factory(port), server.uvloop)


# --- process helpers ------------------------------------------------------------------------------


def raise_fd_limit(wanted: int = 4096) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < wanted:
        target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def schedstat(pid: int | Sequence[int]) -> tuple[int, int]:
    """Nanoseconds the process has spent on a CPU, and waiting for one (runnable), all its
    threads (``/proc/PID/task/*/schedstat``, first two fields); summed over the processes
    when given several (bench/scale.py)."""
    on_cpu = waiting = 0
    for one in [pid] if isinstance(pid, int) else pid:
        for task in os.listdir(f"/proc/{one}/task"):
            try:
                with open(f"/proc/{one}/task/{task}/schedstat") as f:
                    fields = f.read().split()
            except FileNotFoundError:  # the thread ended
                continue
            on_cpu += int(fields[0])
            waiting += int(fields[1])
    return on_cpu, waiting


def cpu_ns(pid: int | Sequence[int]) -> int:
    """Nanoseconds the process (or processes) spent on a CPU, all their threads."""
    return schedstat(pid)[0]


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def loadavg() -> str:
    with open("/proc/loadavg") as f:
        return f.read().strip()


def wait_idle(pid: int | Sequence[int], limit: float = 3.0) -> None:
    """Until the server (or servers) used under 1 ms of CPU in 100 ms (earlier work done)."""
    deadline = time.monotonic() + limit
    before = cpu_ns(pid)
    while time.monotonic() < deadline:
        time.sleep(0.1)
        now = cpu_ns(pid)
        if now - before < 1_000_000:
            return
        before = now


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextlib.contextmanager
def running(
    server: Server, cpu: int, audio: bool = False, python_options: Sequence[str] = ()
) -> Iterator[tuple[int, int]]:
    """A server process; yields (pid, port) once it accepts connections.

    ``python_options`` go before the script (``-m cProfile -o FILE``: bench/profile_server.py).
    """
    port = free_port()
    command = [sys.executable, *python_options, __file__, "--serve", server.name]
    command += ["--port", str(port)]
    command += ["--cpu", str(cpu)] + (["--audio"] if audio else [])
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")])),
    )
    process = subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"{server.name} exited with {process.returncode} on start")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{server.name} did not listen within 20 s") from None
                time.sleep(0.05)
        wait_idle(process.pid)
        yield process.pid, port
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)  # a server stuck in its shutdown is killed
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# --- the client -----------------------------------------------------------------------------------

MASK = b"\x37\xfa\x21\x3d"
KEY = base64.b64encode(b"wavewire-peers!!").decode()
CLOSE_FRAME = encode_frame(Opcode.CLOSE, (1000).to_bytes(2, "big"), mask_key=MASK)


class Timeout(Exception):
    pass


def request_bytes(port: int, path: str = "/") -> bytes:
    return (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


@dataclass
class Peer:
    """How to talk to one server: its port, and whether it echoes raw bytes."""

    port: int
    raw: bool
    timeout: float

    def frame(self, payload: bytes) -> tuple[bytes, bytes]:
        """(the masked frame to send, the exact reply expected)."""
        sent = encode_frame(Opcode.BINARY, payload, mask_key=MASK)
        return sent, sent if self.raw else encode_frame(Opcode.BINARY, payload)

    def connect(self) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=self.timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    def upgrade(self, sock: socket.socket) -> None:
        sock.sendall(request_bytes(self.port))
        self.read_upgrade(sock)

    def read_upgrade(self, sock: socket.socket) -> None:
        # No server sends anything after its response before the client's first frame.
        head = b""
        while not head.endswith(b"\r\n\r\n"):
            chunk = sock.recv(4096)
            if not chunk:
                raise RuntimeError(f"EOF during the handshake: {head!r}")
            head += chunk
        if not self.raw and not head.startswith(b"HTTP/1.1 101"):
            raise RuntimeError(f"upgrade refused: {head.splitlines()[0]!r}")

    def open(self) -> socket.socket:
        sock = self.connect()
        self.upgrade(sock)
        return sock

    def close(self, sock: socket.socket) -> None:
        """Close handshake, then wait for the server to end the TCP connection."""
        sock.sendall(CLOSE_FRAME)
        if self.raw:
            recv_exact(sock, len(CLOSE_FRAME))
        else:
            header = recv_exact(sock, 2)
            if header[0] != 0x88:
                raise RuntimeError(f"expected a close frame, got {header!r}")
            recv_exact(sock, header[1] & 0x7F)
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_WR)
            while sock.recv(4096):
                pass
        sock.close()


def recv_exact(sock: socket.socket, n: int, buffer: bytearray | None = None) -> bytearray:
    buf = buffer if buffer is not None else bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        k = sock.recv_into(view[got:n])
        if not k:
            raise RuntimeError("EOF")
        got += k
    return buf


@dataclass
class Sample:
    """One timed section: how many units, how long, how much server CPU."""

    units: int
    seconds: float
    cpu_ns: int
    #: Nanoseconds the server was runnable but waiting for its CPU (taken by other work).
    wait_ns: int = 0

    @property
    def rate(self) -> float:
        return self.units / self.seconds

    @property
    def cpu_us(self) -> float:
        return self.cpu_ns / self.units / 1000


@contextlib.contextmanager
def timed(pid: int, units: int, out: list[Sample]) -> Iterator[None]:
    cpu0, wait0 = schedstat(pid)
    t0 = time.perf_counter()
    yield
    t1 = time.perf_counter()
    cpu1, wait1 = schedstat(pid)
    out.append(Sample(units, t1 - t0, cpu1 - cpu0, wait1 - wait0))


def round_trips(peer: Peer, pid: int, count: int, warmup: int) -> Sample:
    sent, expected = peer.frame(bytes(range(256)) * 2 + bytes(128))
    sock = peer.open()
    reply = bytearray(len(expected))
    for _ in range(warmup):
        sock.sendall(sent)
        if recv_exact(sock, len(expected), reply) != expected:
            raise RuntimeError("the echo differs from what was sent")
    out: list[Sample] = []
    deadline = time.monotonic() + peer.timeout
    with timed(pid, count, out):
        for i in range(count):
            sock.sendall(sent)
            recv_exact(sock, len(expected), reply)
            if i & 255 == 0 and time.monotonic() > deadline:
                raise Timeout
    peer.close(sock)
    return out[0]


def pipelined(peer: Peer, pid: int, size: int, count: int, window: int) -> Sample:
    """``count`` messages of ``size`` bytes, ``window`` in flight, one socket, non-blocking."""
    payload = (bytes(range(256)) * (size // 256 + 1))[:size]
    sent, expected = peer.frame(payload)
    sock = peer.open()
    # One round trip, checked, then a short untimed pipelined burst.
    sock.sendall(sent)
    if recv_exact(sock, len(expected)) != expected:
        raise RuntimeError("the echo differs from what was sent")
    _pipeline(sock, sent, len(expected), min(count, 2 * window), window, peer.timeout)
    out: list[Sample] = []
    with timed(pid, count, out):
        _pipeline(sock, sent, len(expected), count, window, peer.timeout)
    peer.close(sock)
    return out[0]


def _pipeline(
    sock: socket.socket, frame: bytes, reply_len: int, count: int, window: int, timeout: float
) -> None:
    batch = memoryview(frame * window)
    out = bytearray(batch[: len(frame) * min(window, count)])
    queued = min(window, count)
    received = 0
    buf = bytearray(1 << 20)
    sock.setblocking(False)
    selector = selectors.DefaultSelector()
    selector.register(sock, selectors.EVENT_READ | selectors.EVENT_WRITE)
    writing = True
    deadline = time.monotonic() + timeout
    try:
        while received < count * reply_len:
            if out:
                with contextlib.suppress(BlockingIOError):
                    del out[: sock.send(out)]
            if out and not writing:
                selector.modify(sock, selectors.EVENT_READ | selectors.EVENT_WRITE)
                writing = True
            elif not out and writing:
                selector.modify(sock, selectors.EVENT_READ)
                writing = False
            if not selector.select(1.0) and time.monotonic() > deadline:
                raise Timeout
            try:
                n = sock.recv_into(buf)
            except BlockingIOError:
                continue
            if not n:
                raise RuntimeError("EOF")
            done_before = received // reply_len
            received += n
            more = min(received // reply_len - done_before, count - queued)
            if more > 0:
                out += batch[: len(frame) * more]
                queued += more
            if time.monotonic() > deadline:
                raise Timeout
    finally:
        selector.close()
        sock.setblocking(True)
        sock.settimeout(timeout)


def handshakes(peer: Peer, pid: int, count: int) -> Sample:
    sent, expected = peer.frame(bytes(640))
    reply = bytearray(len(expected))

    def one() -> None:
        sock = peer.open()
        sock.sendall(sent)
        recv_exact(sock, len(expected), reply)
        peer.close(sock)

    for _ in range(min(20, count)):
        one()
    wait_idle(pid)
    out: list[Sample] = []
    deadline = time.monotonic() + peer.timeout
    with timed(pid, count, out):
        for _ in range(count):
            one()
            if time.monotonic() > deadline:
                raise Timeout
    return out[0]


def idle_rss(peer: Peer, pid: int, count: int) -> float:
    """KiB of server RSS per idle open connection (``count`` of them)."""
    peer.close(peer.open())  # warm
    wait_idle(pid)
    before = rss_kib(pid)
    socks: list[socket.socket] = []
    deadline = time.monotonic() + peer.timeout
    try:
        request = request_bytes(peer.port)
        while len(socks) < count:  # in batches: all connect and send, then all read
            batch = [peer.connect() for _ in range(min(50, count - len(socks)))]
            socks += batch
            for sock in batch:
                sock.sendall(request)
            for sock in batch:
                peer.read_upgrade(sock)
            if time.monotonic() > deadline:
                raise Timeout
        wait_idle(pid)
        after = rss_kib(pid)
    finally:
        for sock in socks:
            sock.close()
    wait_idle(pid, limit=10)
    return (after - before) / count


# --- real-time audio ------------------------------------------------------------------------------

FRAME_SECONDS = 0.02
RATE = 16000
PCM = b"\x01\x02" * (RATE * 20 // 1000)  # 20 ms, no zero byte: silence padding is not audio


@dataclass
class AudioResult:
    cpu_per_session_second: float
    #: Server CPU time over the window's wall time: near 100 the server is saturated.
    server_cpu_percent: float
    #: The share of the window the server was runnable but its CPU ran other work.
    server_wait_percent: float
    gap_error_p99_ms: float
    lost_percent: float
    send_lag_p99_ms: float


@dataclass
class _Session:
    sock: socket.socket
    inbox: bytearray = field(default_factory=bytearray)
    arrivals: list[tuple[float, float]] = field(default_factory=list)  # (time, seconds of audio)
    audio_bytes: int = 0


def _audio_frames(session: _Session, now: float) -> None:
    """Parse the server's (unmasked) frames out of the session's inbox."""
    buf = session.inbox
    pos = 0
    while len(buf) - pos >= 2:
        length = buf[pos + 1] & 0x7F
        start = pos + 2
        if length == 126:
            if len(buf) - pos < 4:
                break
            length = int.from_bytes(buf[pos + 2 : pos + 4], "big")
            start = pos + 4
        elif length == 127:
            if len(buf) - pos < 10:
                break
            length = int.from_bytes(buf[pos + 2 : pos + 10], "big")
            start = pos + 10
        if len(buf) < start + length:
            break
        if buf[pos] & 0x0F == Opcode.BINARY:
            message = pb.Frame.FromString(bytes(buf[start : start + length]))
            if message.WhichOneof("frame") == "audio":
                audio = message.audio.audio
                session.audio_bytes += len(audio) - audio.count(0)
                session.arrivals.append((now, len(audio) / 2 / RATE))
        pos = start + length
    del buf[:pos]


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]


def audio_sessions(
    peer: Peer, pid: int | Sequence[int], sessions: int, seconds: float, path: str = "/"
) -> AudioResult:
    """``sessions`` paced sessions for ``seconds``; server CPU summed over ``pid`` (several
    processes behind a proxy: bench/scale.py). ``path`` is each session's request target,
    ``{i}`` in it replaced by the session's index (a session key a proxy can hash on)."""
    message = pb.Frame(audio=pb.AudioRawFrame(audio=PCM, sample_rate=RATE, num_channels=1))
    frame = encode_frame(Opcode.BINARY, message.SerializeToString(), mask_key=MASK)
    states: list[_Session] = []
    selector = selectors.DefaultSelector()
    try:
        while len(states) < sessions:
            batch = [peer.connect() for _ in range(min(50, sessions - len(states)))]
            for k, sock in enumerate(batch, start=len(states)):
                sock.sendall(request_bytes(peer.port, path.replace("{i}", str(k))))
            for sock in batch:
                peer.read_upgrade(sock)
                sock.setblocking(False)
                states.append(_Session(sock))
                selector.register(sock, selectors.EVENT_READ, states[-1])
        wait_idle(pid)
        # An even number of 20 ms frames: the echo goes out in whole 40 ms chunks.
        ticks = 2 * max(1, round(seconds / FRAME_SECONDS / 2))
        total = ticks * sessions
        step = FRAME_SECONDS / sessions  # session i sends at t0 + k * 20 ms + i * step
        lags: list[float] = []
        sent_bytes = 0
        cpu0, wait0 = schedstat(pid)
        t0 = time.perf_counter()
        end = t0 + ticks * FRAME_SECONDS + 0.3
        j = 0
        while True:
            now = time.perf_counter()
            while j < total and t0 + j * step <= now:
                session = states[j % sessions]
                lags.append(now - (t0 + j * step))
                try:
                    n = session.sock.send(frame)
                except BlockingIOError:
                    n = 0
                if n != len(frame):  # the server is not reading: count as lost, stay in sync
                    raise RuntimeError("the server stopped reading audio (socket buffer full)")
                sent_bytes += len(PCM)
                j += 1
            if now >= end:
                break
            wait = (t0 + j * step if j < total else end) - now
            for key, _ in selector.select(max(0.0, wait)):
                state: _Session = key.data
                with contextlib.suppress(BlockingIOError):
                    data = state.sock.recv(1 << 16)
                    state.inbox += data
                    _audio_frames(state, time.perf_counter())
        cpu1, wait1 = schedstat(pid)
        cpu, waited = cpu1 - cpu0, wait1 - wait0
        window = time.perf_counter() - t0
    finally:
        selector.close()
        for state in states:
            state.sock.close()
    wait_idle(pid, limit=10)
    gaps = [
        abs((b[0] - a[0]) - a[1]) * 1000
        for state in states
        for a, b in zip(state.arrivals, state.arrivals[1:], strict=False)
    ]
    echoed = sum(state.audio_bytes for state in states)
    return AudioResult(
        cpu_per_session_second=cpu / 1e9 / (sessions * ticks * FRAME_SECONDS),
        server_cpu_percent=100 * cpu / 1e9 / window,
        server_wait_percent=100 * waited / 1e9 / window,
        gap_error_p99_ms=percentile(gaps, 0.99),
        lost_percent=max(0.0, 100 * (1 - echoed / sent_bytes)),
        send_lag_p99_ms=percentile(lags, 0.99) * 1000,
    )


# --- the run --------------------------------------------------------------------------------------

ROWS = ("rt", "pipe640", "pipe64k", "handshake", "idle", "audio")


@dataclass
class Settings:
    rounds: int
    count: int
    count_64k: int
    handshakes: int
    idle: int
    audio_sessions: tuple[int, ...]
    audio_seconds: float
    audio_rounds: int
    timeout: float
    warmup: int


#: (row key, label, unit, figure) for the main table; figure picks a number from a Sample.
METRICS: tuple[tuple[str, str, Callable[[Any], float]], ...] = (
    ("rt", "640 B round trips/s", lambda s: s.rate),
    ("rt", "server CPU per round trip (µs)", lambda s: s.cpu_us),
    ("pipe640", "pipelined 640 B msgs/s (100 in flight)", lambda s: s.rate),
    ("pipe640", "server CPU per pipelined 640 B msg (µs)", lambda s: s.cpu_us),
    ("pipe64k", "pipelined 64 KiB MB/s (16 in flight)", lambda s: s.rate * 65536 / 1e6),
    ("pipe64k", "server CPU per 64 KiB msg (µs)", lambda s: s.cpu_us),
    ("handshake", "handshakes/s (connect, one echo, close)", lambda s: s.rate),
    ("handshake", "server CPU per handshake (µs)", lambda s: s.cpu_us),
    ("idle", "RSS per idle connection (KiB)", lambda kib: kib),
)


def measure(
    server: Server, cpu: int, rows: Sequence[str], settings: Settings, phases: dict[str, float]
) -> dict[str, Any]:
    """One round of the non-audio rows against one server (one fresh process)."""
    results: dict[str, Any] = {}
    started = time.monotonic()
    with running(server, cpu) as (pid, port):
        phases["start"] = time.monotonic() - started
        peer = Peer(port, raw=server.kind == "raw", timeout=settings.timeout)
        steps: dict[str, Callable[[], Any]] = {
            # Idle memory first, in a process that has served one connection only.
            "idle": lambda: idle_rss(peer, pid, settings.idle),
            "rt": lambda: round_trips(peer, pid, settings.count, settings.warmup),
            "pipe640": lambda: pipelined(peer, pid, 640, 3 * settings.count, 100),
            "pipe64k": lambda: pipelined(peer, pid, 65536, settings.count_64k, 16),
            "handshake": lambda: handshakes(peer, pid, settings.handshakes),
        }
        for row, step in steps.items():
            if row in rows:
                started = time.monotonic()
                results[row] = step()
                phases[row] = time.monotonic() - started
    return results


def fmt(value: float) -> str:
    if math.isnan(value):
        return "n/a"
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def ratio(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.2f}x"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="rounds of every server (3)")
    parser.add_argument(
        "--count",
        type=int,
        default=2000,
        help="640 B round trips per round (2000); the pipelined 640 B row sends 3x as many",
    )
    parser.add_argument("--count-64k", type=int, default=500, help="64 KiB messages (500)")
    parser.add_argument("--handshakes", type=int, default=200, help="handshakes per round (200)")
    parser.add_argument("--idle", type=int, default=1000, help="idle connections (1000)")
    parser.add_argument(
        "--rows", default=",".join(ROWS), help=f"comma-separated, of {','.join(ROWS)}"
    )
    parser.add_argument(
        "--servers",
        default=",".join(s.name for s in SERVERS),
        help="comma-separated (default: all that are installed)",
    )
    parser.add_argument("--audio-sessions", default="1,50,200", help="N for the audio row")
    parser.add_argument("--audio-seconds", type=float, default=3.0, help="per audio run (3)")
    parser.add_argument("--audio-rounds", type=int, default=1, help="rounds of the audio row (1)")
    parser.add_argument("--timeout", type=float, default=60.0, help="cap per timed section (60 s)")
    parser.add_argument("--quick", action="store_true", help="tiny counts: a smoke run")
    parser.add_argument("--json", metavar="FILE", help="also write every sample here")
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--cpu", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--audio", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        run_server(args.serve, args.port, args.cpu, args.audio)
        return 0

    # SIGTERM ends the run through the finally blocks that stop the server processes.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    rows = [row for row in args.rows.split(",") if row]
    unknown = set(rows) - set(ROWS) | set(args.servers.split(",")) - set(BY_NAME)
    if unknown:
        parser.error(f"unknown row or server: {', '.join(sorted(unknown))}")
    settings = Settings(
        rounds=args.rounds,
        count=args.count,
        count_64k=args.count_64k,
        handshakes=args.handshakes,
        idle=args.idle,
        audio_sessions=tuple(int(n) for n in args.audio_sessions.split(",")),
        audio_seconds=args.audio_seconds,
        audio_rounds=args.audio_rounds,
        timeout=args.timeout,
        warmup=200,
    )
    if args.quick:
        settings = Settings(1, 100, 20, 10, 20, (1, 3), 0.5, 1, 30.0, 20)

    chosen = [BY_NAME[name] for name in args.servers.split(",")]
    servers = [s for s in chosen if installed(s)]
    missing = [s.name for s in chosen if not installed(s)]
    cpus = sorted(os.sched_getaffinity(0))
    client_cpu, server_cpu = cpus[0], cpus[-1]
    os.sched_setaffinity(0, {client_cpu})
    raise_fd_limit()

    print(f"load before: {loadavg()}")
    print(
        f"python {sys.version.split()[0]}, {len(cpus)} CPUs, client on CPU {client_cpu}, "
        f"servers on CPU {server_cpu}; {settings.rounds} round(s)"
        + (f"; not installed, skipped: {', '.join(missing)}" if missing else ""),
        flush=True,
    )
    speedups = importlib.util.find_spec("wsaccel") is not None
    print(f"wavewire unmasks in {'C (wsaccel)' if speedups else 'pure Python (no wsaccel)'}")
    if client_cpu == server_cpu:
        print("WARNING: one CPU only: client and server share it")

    #: row -> server -> round -> Sample (or KiB for the idle row)
    samples: dict[str, dict[str, dict[int, Any]]] = {}
    main_rows = [row for row in rows if row != "audio"]
    if main_rows:
        for round_index in range(settings.rounds):
            shift = round_index % len(servers)
            for server in servers[shift:] + servers[:shift]:
                started = time.monotonic()
                phases: dict[str, float] = {}
                try:
                    results = measure(server, server_cpu, main_rows, settings, phases)
                except Exception as exc:  # one server's failure is reported, the run goes on
                    print(f"  round {round_index + 1} {server.name}: FAILED: {exc!r}", flush=True)
                    continue
                for row, value in results.items():
                    samples.setdefault(row, {}).setdefault(server.name, {})[round_index] = value
                print(
                    f"  round {round_index + 1} {server.name:24} "
                    f"{time.monotonic() - started:5.1f} s ("
                    + ", ".join(f"{k} {v:.1f}" for k, v in phases.items())
                    + ")",
                    flush=True,
                )

    audio: dict[str, dict[int, list[AudioResult]]] = {}
    if "audio" in rows:
        for _ in range(settings.audio_rounds):
            for server in (s for s in servers if s.kind == "wavewire"):
                try:
                    with running(server, server_cpu, audio=True) as (pid, port):
                        peer = Peer(port, raw=False, timeout=settings.timeout)
                        for n in settings.audio_sessions:
                            result = audio_sessions(peer, pid, n, settings.audio_seconds)
                            audio.setdefault(server.name, {}).setdefault(n, []).append(result)
                except Exception as exc:
                    print(f"  audio {server.name}: FAILED: {exc!r}", flush=True)
                    continue
                print(f"  audio {server.name}", flush=True)

    print(f"load after: {loadavg()}\n")
    names = [s.name for s in servers]
    baseline = BASELINE if BASELINE in names else names[0]
    table: dict[str, dict[str, dict[str, float]]] = {}
    if samples:
        header = "| row | " + " | ".join(names) + " |"
        rule = "|---|" + "---|" * len(names)
        medians: list[str] = []
        ratios: list[str] = []
        for row, label, figure in METRICS:
            if row not in samples:
                continue
            per_server = samples[row]
            base = {k: figure(v) for k, v in per_server.get(baseline, {}).items()}
            cells_median, cells_ratio = [], []
            for name in names:
                values = {k: figure(v) for k, v in per_server.get(name, {}).items()}
                median = statistics.median(values.values()) if values else math.nan
                round_ratios = [v / base[k] for k, v in values.items() if base.get(k)]
                r = statistics.median(round_ratios) if round_ratios else math.nan
                table.setdefault(label, {})[name] = {"median": median, "ratio": r}
                cells_median.append(fmt(median))
                cells_ratio.append(ratio(r))
            medians.append(f"| {label} | " + " | ".join(cells_median) + " |")
            ratios.append(f"| {label} | " + " | ".join(cells_ratio) + " |")
        # How much the machine's other work took from each server during the timed sections.
        waits = []
        for name in names:
            shares = [
                100 * v.wait_ns / 1e9 / v.seconds
                for per_server in samples.values()
                for v in per_server.get(name, {}).values()
                if isinstance(v, Sample)
            ]
            waits.append(f"{statistics.median(shares):.0f}%" if shares else "n/a")
        label = "server waiting for its CPU (% of timed time)"
        medians.append(f"| {label} | " + " | ".join(waits) + " |")
        print(f"Medians over {settings.rounds} round(s):\n")
        print("\n".join([header, rule, *medians]))
        print(f"\nRatio to {baseline}, median of the per-round ratios (CPU: lower is better):\n")
        print("\n".join([header, rule, *ratios]))
    if audio:
        print(
            f"\nReal-time audio (wavewire serve --policy multi, protobuf; 20 ms frames at 16 kHz, "
            f"{settings.audio_seconds:g} s per run, medians of {settings.audio_rounds} run(s)):\n"
        )
        print(
            "| server | N | CPU-s per session-s | server CPU (% of a core) "
            "| server waiting for its CPU (%) | p99 arrival-gap error (ms) | audio lost (%) "
            "| client p99 send lag (ms) |"
        )
        print("|---|---|---|---|---|---|---|---|")
        for name, by_n in audio.items():
            for n, runs in by_n.items():
                cells = {
                    attr: statistics.median(getattr(r, attr) for r in runs)
                    for attr in AudioResult.__dataclass_fields__
                }
                table.setdefault(f"audio N={n}", {})[name] = cells
                print(
                    f"| {name} | {n} | {cells['cpu_per_session_second']:.4f} "
                    f"| {cells['server_cpu_percent']:.0f} | {cells['server_wait_percent']:.0f} "
                    f"| {cells['gap_error_p99_ms']:.1f} | {cells['lost_percent']:.2f} "
                    f"| {cells['send_lag_p99_ms']:.1f} |"
                )
    if args.json:
        Path(args.json).write_text(json.dumps({"load": loadavg(), "table": table}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
