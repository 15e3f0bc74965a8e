"""The attack campaign of issue 8: ``wavewire serve`` in a child process on 127.0.0.1, on each
driver/backend pair, against peers that misbehave on purpose; prints one table.

    python bench/attacks.py                      # every scenario, every pair (about 2 minutes)
    python bench/attacks.py --pairs anyio-trio --scenarios fd-exhaustion,ping-flood

Every scenario is bounded in count and time. What each row means, and the limit behind it:
docs/security.md. Exit status 1 if a scenario found a fault (the server died, a traceback was
logged, memory stayed up, a handshake outlived its bound, the log grew with the input).

Not a test: numbers depend on the machine (run it on an idle one); tests/adversarial/ holds the
per-fault tests that CI runs.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import ssl
import struct
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import anyio
import anyio.abc
from wsproto.frame_protocol import Opcode

from wavewire.core.frames import TextFrame
from wavewire.core.protocol.framing import encode_frame
from wavewire.core.serializers.protobuf import ProtobufFrameSerializer

SRC = Path(__file__).resolve().parents[1] / "src"
PAIRS = [("anyio", "asyncio"), ("anyio", "trio"), ("asyncio", "asyncio")]
MASK = b"\x37\xfa\x21\x3d"
UPGRADE = (
    b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)
#: Runs wavewire with RLIMIT_NOFILE lowered (argv[1]) before anything else.
LIMITED = (
    "import resource, runpy, sys; limit = int(sys.argv.pop(1)); "
    "resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit)); "
    "sys.argv[0] = 'wavewire'; runpy.run_module('wavewire', run_name='__main__')"
)


def masked(opcode: int, payload: bytes) -> bytes:
    return encode_frame(Opcode(opcode), payload, fin=True, mask_key=MASK)


def text_message(text: str) -> bytes:
    data = ProtobufFrameSerializer().serialize(TextFrame(text=text))
    assert isinstance(data, bytes)
    return masked(0x2, data)


CLOSE = masked(0x8, (1000).to_bytes(2, "big"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Outcome:
    cell: str
    ok: bool


class Server:
    """``wavewire serve`` in a child process, its stderr in a file."""

    def __init__(self, process: anyio.abc.Process, port: int, log_path: Path) -> None:
        self.process = process
        self.port = port
        self.log_path = log_path
        #: The whole log, kept once the process is gone (its file is deleted then).
        self.final_log: str | None = None

    def log(self) -> str:
        if self.final_log is not None:
            return self.final_log
        return self.log_path.read_text(errors="replace")

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0

    @property
    def alive(self) -> bool:
        return self.process.returncode is None


@asynccontextmanager
async def serve(
    pair: tuple[str, str], *args: str, descriptors: int | None = None
) -> AsyncIterator[Server]:
    port = free_port()
    launcher = ["-m", "wavewire"] if descriptors is None else ["-c", LIMITED, str(descriptors)]
    command = [
        sys.executable, *launcher, "serve", "--host", "127.0.0.1", "--port", str(port),
        "--driver", pair[0], "--backend", pair[1], *args,
    ]  # fmt: skip
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]))
    with tempfile.TemporaryDirectory() as tmp:
        log_path = Path(tmp) / "serve.log"
        with log_path.open("wb") as log_file:
            process = await anyio.open_process(command, env=env, stdout=None, stderr=log_file)
        server = Server(process, port, log_path)
        try:
            with anyio.fail_after(15):
                while "listening on" not in server.log():
                    if process.returncode is not None:
                        raise RuntimeError(f"serve exited: {server.log()}")
                    await anyio.sleep(0.05)
            yield server
        finally:
            if process.returncode is None:
                process.send_signal(signal.SIGINT)
                with anyio.move_on_after(10):
                    await process.wait()
            if process.returncode is None:
                process.kill()
            await process.wait()
            await process.aclose()
            server.final_log = server.log()


async def read_head(stream: anyio.abc.ByteReceiveStream) -> bytes:
    seen = b""
    while b"\r\n\r\n" not in seen:
        seen += await stream.receive()
    return seen


@asynccontextmanager
async def session(port: int) -> AsyncIterator[anyio.abc.SocketStream]:
    """A raw WebSocket session (the upgrade done); reset on exit."""
    stream = await anyio.connect_tcp("127.0.0.1", port)
    try:
        await stream.send(UPGRADE)
        head = await read_head(stream)
        assert head.startswith(b"HTTP/1.1 101 "), head[:40]
        yield stream
    finally:
        with contextlib.suppress(OSError):
            raw: socket.socket = stream.extra(anyio.abc.SocketAttribute.raw_socket)
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        await anyio.aclose_forcefully(stream)


async def echoes(port: int, text: str = "ping?") -> bool:
    """A fresh session gets its echo back."""
    with anyio.move_on_after(5):
        async with session(port) as stream:
            await stream.send(text_message(text))
            seen = b""
            while text.encode() not in seen:
                seen += await stream.receive()
            await stream.send(CLOSE)
            return True
    return False


# --- scenarios: each returns one table cell ----------------------------------------------------


async def fd_exhaustion(pair: tuple[str, str]) -> Outcome:
    """RLIMIT_NOFILE 64, 150 idle connects: served on, one log line, accepts again after."""
    async with serve(pair, "--policy", "multi", descriptors=64) as server:
        async with session(server.port) as kept:
            flood = []
            try:
                with contextlib.suppress(OSError):  # refused: the server is gone
                    for _ in range(150):
                        flood.append(await anyio.connect_tcp("127.0.0.1", server.port))
                await anyio.sleep(3)
                seen = b""
                with anyio.move_on_after(5), contextlib.suppress(Exception):
                    await kept.send(text_message("kept"))
                    while b"kept" not in seen:
                        seen += await kept.receive()
                kept_ok = b"kept" in seen
            finally:
                for stream in flood:
                    await anyio.aclose_forcefully(stream)
            try:
                again = await echoes(server.port)
            except OSError:
                again = False
        alive = server.alive
    lines = server.log().count("accept() failed")
    tracebacks = server.log().count("Traceback")
    ok = alive and kept_ok and again and lines <= 2 and tracebacks == 0
    cell = f"{'up' if alive else 'DIED'}, kept {'ok' if kept_ok else 'LOST'}, "
    cell += f"re-accepts {'yes' if again else 'NO'}, {lines} log lines, {tracebacks} tracebacks"
    return Outcome(cell, ok)


async def departed_clients(pair: tuple[str, str]) -> Outcome:
    """Policy multi: 10 clients send 100 x 100 KB for 3 s, read nothing, reset; twice: the
    server's RSS growth over the second round (the first warms the allocator up)."""
    data = text_message("m" * 100_000) * 100

    async def one() -> None:
        async with session(server.port) as stream:
            # The echo stalls on our full socket, then the server's input queue fills and it
            # stops reading: what it holds then must go when we do.
            with anyio.move_on_after(3), contextlib.suppress(OSError, anyio.BrokenResourceError):
                await stream.send(data)

    async def departures() -> None:
        async with anyio.create_task_group() as tg:
            for _ in range(10):
                tg.start_soon(one)

    async with serve(pair, "--policy", "multi") as server:
        await departures()
        await anyio.sleep(3)
        before = server.rss_kib()
        await departures()
        # The departures are processed asynchronously: up to 10 s on a loaded machine.
        after = server.rss_kib()
        with anyio.move_on_after(10):
            while after - before > 8 * 1024:
                await anyio.sleep(0.5)
                after = server.rss_kib()
    grown = (after - before) / 1024
    return Outcome(f"{before / 1024:.0f} -> {after / 1024:.0f} MiB ({grown:+.1f})", grown < 8)


async def close_while_owed(pair: tuple[str, str]) -> Outcome:
    """10 clients are owed a 6 MB echo; each sends its close once the echo has started, then
    reads: no traceback (the native driver closed from inside asyncio's write callback)."""

    async def one() -> None:
        with anyio.move_on_after(10):
            async with session(server.port) as stream:
                await stream.send(text_message("x" * 6_000_000))
                await stream.receive(1)
                await stream.send(CLOSE)
                await anyio.sleep(0.2)
                with contextlib.suppress(anyio.EndOfStream, anyio.BrokenResourceError, OSError):
                    while True:
                        await stream.receive()

    async with serve(pair, "--policy", "multi", "--max-message-size", "8000000") as server:
        async with anyio.create_task_group() as tg:
            for _ in range(10):
                tg.start_soon(one)
        await anyio.sleep(0.5)
        alive = server.alive
    errors = server.log().count("Traceback") + server.log().count("Exception in callback")
    return Outcome(f"{errors} tracebacks", alive and errors == 0)


async def bad_message_flood(pair: tuple[str, str]) -> Outcome:
    """One client sends undecodable 2-byte messages for 3 s: log bytes per wire byte."""
    junk = masked(0x2, b"\xff\xff") * 2000
    sent = 0
    async with serve(pair) as server:
        before = len(server.log())
        async with session(server.port) as stream:
            with anyio.move_on_after(3):
                while True:
                    await stream.send(junk)
                    sent += len(junk)
        await anyio.sleep(0.5)
        log = len(server.log()) - before
    ratio = log / max(sent, 1)
    return Outcome(f"{sent / 1e6:.1f} MB in, {log} B of log ({ratio:.5f} B/B)", ratio < 0.01)


async def ping_flood(pair: tuple[str, str]) -> Outcome:
    """200k pings (125-byte payloads), nothing read: server RSS growth."""
    ping = masked(0x9, b"p" * 125)
    async with serve(pair) as server:
        await anyio.sleep(0.5)
        before = server.rss_kib()
        async with session(server.port) as stream:
            raw: socket.socket = stream.extra(anyio.abc.SocketAttribute.raw_socket)
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 256 * 1024)
            with anyio.move_on_after(20):
                for _ in range(20):
                    await stream.send(ping * 10_000)
            await anyio.sleep(0.5)
            after = server.rss_kib()
        alive = server.alive
    grown = (after - before) / 1024
    return Outcome(f"RSS {grown:+.1f} MiB", alive and grown < 10)


def tls_files(directory: Path) -> tuple[ssl.SSLContext, list[str]]:
    import trustme

    authority = trustme.CA()
    cert = authority.issue_cert("127.0.0.1")
    certfile, keyfile = directory / "cert.pem", directory / "key.pem"
    cert.private_key_pem.write_to_path(str(keyfile))
    certfile.write_bytes(b"".join(blob.bytes() for blob in cert.cert_chain_pems))
    client = ssl.create_default_context()
    authority.configure_trust(client)
    return client, ["--certfile", str(certfile), "--keyfile", str(keyfile)]


def client_hello() -> bytes:
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ssl.create_default_context().wrap_bio(incoming, outgoing, server_hostname="127.0.0.1")
    with contextlib.suppress(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


async def tls_silence(pair: tuple[str, str]) -> Outcome:
    """ClientHello, then nothing: seconds until the server lets go (open_timeout is 10 s)."""
    with tempfile.TemporaryDirectory() as tmp:
        _, args = tls_files(Path(tmp))
        async with serve(pair, *args) as server:
            stream = await anyio.connect_tcp("127.0.0.1", server.port)
            await stream.send(client_hello())
            started = time.monotonic()
            with anyio.move_on_after(20), contextlib.suppress(Exception):
                while True:
                    await stream.receive()
            held = time.monotonic() - started
            await anyio.aclose_forcefully(stream)
    return Outcome(f"held {held:.1f} s", held < 12)


async def tls_plaintext(pair: tuple[str, str]) -> Outcome:
    """100 plaintext upgrades to the TLS port: tracebacks and log lines written."""
    with tempfile.TemporaryDirectory() as tmp:
        _, args = tls_files(Path(tmp))
        async with serve(pair, *args) as server:
            for _ in range(100):
                stream = await anyio.connect_tcp("127.0.0.1", server.port)
                with contextlib.suppress(Exception):
                    await stream.send(UPGRADE)
                    with anyio.move_on_after(2):
                        while True:
                            await stream.receive()
                await anyio.aclose_forcefully(stream)
            alive = server.alive
    log = server.log()
    tracebacks = log.count("Traceback")
    lines = len(log.splitlines())
    return Outcome(f"{tracebacks} tracebacks, {lines} log lines", alive and tracebacks == 0)


async def garbage_mib(pair: tuple[str, str]) -> Outcome:
    """1 MiB without a line end: the answer the peer gets (431 expected; a reset may eat it)."""
    async with serve(pair) as server:
        stream = await anyio.connect_tcp("127.0.0.1", server.port)
        answer = b""
        with contextlib.suppress(Exception):
            await stream.send(b"a" * (1 << 20))
        with anyio.move_on_after(5), contextlib.suppress(Exception):
            while True:
                answer += await stream.receive()
        await anyio.aclose_forcefully(stream)
        alive = server.alive
    status = answer.split(b"\r\n", 1)[0].decode(errors="replace") if answer else "reset, no answer"
    return Outcome(status, alive)


async def idle_memory(pair: tuple[str, str]) -> Outcome:
    """300 idle WebSocket sessions: server RSS per session (policy multi)."""
    count = 300
    async with serve(pair, "--policy", "multi") as server:
        await anyio.sleep(0.5)
        before = server.rss_kib()
        async with contextlib.AsyncExitStack() as stack:
            for _ in range(count):
                await stack.enter_async_context(session(server.port))
            await anyio.sleep(1)
            after = server.rss_kib()
    per = (after - before) / count
    return Outcome(f"{per:.1f} KiB per session", True)


SCENARIOS: dict[str, Callable[[tuple[str, str]], Awaitable[Outcome]]] = {
    "fd-exhaustion": fd_exhaustion,
    "departed-clients": departed_clients,
    "close-while-owed": close_while_owed,
    "bad-message-flood": bad_message_flood,
    "ping-flood": ping_flood,
    "tls-silence": tls_silence,
    "tls-plaintext": tls_plaintext,
    "garbage-1mib": garbage_mib,
    "idle-memory": idle_memory,
}


async def campaign(pairs: list[tuple[str, str]], names: list[str]) -> bool:
    rows: list[list[str]] = []
    clean = True
    for name in names:
        row = [name]
        for pair in pairs:
            try:
                with anyio.fail_after(60):
                    outcome = await SCENARIOS[name](pair)
            except Exception as exc:  # the campaign reports, it does not stop
                outcome = Outcome(f"ERROR {type(exc).__name__}: {exc}"[:80], False)
            clean = clean and outcome.ok
            row.append(("" if outcome.ok else "FAULT: ") + outcome.cell)
            print(f"{name} {pair[0]}-on-{pair[1]}: {row[-1]}", file=sys.stderr, flush=True)
        rows.append(row)
    header = ["scenario", *(f"{d} driver on {b}" for d, b in pairs)]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(row) + " |")
    return clean


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", default=",".join(f"{d}-{b}" for d, b in PAIRS))
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    args = parser.parse_args()
    pairs = [(p.split("-")[0], p.split("-")[1]) for p in args.pairs.split(",")]
    names = args.scenarios.split(",")
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenarios {unknown}; choose from {list(SCENARIOS)}")
    return 0 if anyio.run(campaign, pairs, names) else 1


if __name__ == "__main__":
    sys.exit(main())
