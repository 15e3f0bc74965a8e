"""Echo round trips per second: wavewire's two server drivers against a plain ``websockets`` server.

Each server runs alone in its own process on 127.0.0.1 (asyncio, no uvloop); one client, the
``websockets`` asyncio client in this process, sends binary messages of ``--size`` bytes (640:
20 ms of 16 kHz mono PCM16) one at a time and awaits each echo, until ``--count`` messages or
``--seconds`` have passed, whichever comes first (after ``--warmup`` untimed ones). Every server
echoes the same bytes; compression is off on both ends.

wavewire serves ``WebsocketServerTransport`` with a bench-only serializer that turns a binary
message into a ``Blob`` frame and back, echoed by an ``input()``/``output()`` loop: the whole
receive and send path (driver, core, transport streams) without the audio semantics (real
audio output is paced at real time, which would measure the clock, not the code).

    python3 -m pip install ".[bench]"                   # websockets and trio, once
    python bench/echo_throughput.py                     # 20,000 messages, 60 s cap per server
    python bench/echo_throughput.py --count 5000 --rounds 3

Not a test: numbers depend on the machine; compare the ratios, within one run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from wavewire.transports.server import DriverName

SRC = Path(__file__).resolve().parents[1] / "src"
SERVERS = ("websockets", "wavewire-anyio", "wavewire-native")


# --- servers (run with --serve KIND in a child process) ----------------------------------------


async def serve_websockets() -> None:
    from websockets.asyncio.server import ServerConnection, serve

    async def echo(ws: ServerConnection) -> None:
        async for message in ws:
            await ws.send(message)

    async with serve(echo, "127.0.0.1", 0, compression=None) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        print(f"PORT {port}", flush=True)
        await asyncio.Future()  # until killed


async def serve_wavewire(driver: DriverName) -> None:
    from dataclasses import dataclass

    from wavewire import Frame, WebsocketServerParams, WebsocketServerTransport

    @dataclass(frozen=True, slots=True, kw_only=True)
    class Blob(Frame):
        data: bytes

    class BlobSerializer:
        def serialize(self, frame: Frame) -> bytes | str | None:
            return frame.data if isinstance(frame, Blob) else None

        def deserialize(self, data: bytes | str) -> Frame | None:
            return Blob(data=data) if isinstance(data, bytes) else None

    params = WebsocketServerParams(serializer=BlobSerializer())
    transport = WebsocketServerTransport(params, "127.0.0.1", 0, driver=driver)
    async with transport:
        print(f"PORT {transport.port}", flush=True)
        output = transport.output()
        async for frame in transport.input():
            await output.send(frame)


def run_server(kind: str) -> None:
    if kind == "websockets":
        asyncio.run(serve_websockets())
    else:
        asyncio.run(serve_wavewire("anyio" if kind == "wavewire-anyio" else "asyncio"))


# --- the client ---------------------------------------------------------------------------------


async def measure(port: int, args: argparse.Namespace) -> tuple[int, float]:
    """(messages echoed, seconds) for one server."""
    from websockets.asyncio.client import connect

    payload = bytes(range(256)) * (args.size // 256) + bytes(args.size % 256)
    async with connect(f"ws://127.0.0.1:{port}/", compression=None, max_size=None) as ws:
        for _ in range(args.warmup):
            await ws.send(payload)
            await ws.recv()
        count = 0
        started = time.perf_counter()
        stop_at = started + args.seconds
        while count < args.count:
            await ws.send(payload)
            reply = await ws.recv()
            if reply != payload:
                raise AssertionError(f"echo #{count} differs ({len(reply)} bytes)")
            count += 1
            if count % 256 == 0 and time.perf_counter() >= stop_at:
                break
        return count, time.perf_counter() - started


def bench_one(kind: str, args: argparse.Namespace) -> tuple[int, float]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SRC), env.get("PYTHONPATH")]))
    command = [sys.executable, __file__, "--serve", kind]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env) as server:
        try:
            assert server.stdout is not None
            line = server.stdout.readline()
            if not line.startswith("PORT "):
                raise RuntimeError(f"{kind} server did not start: {line!r}")
            return asyncio.run(measure(int(line.split()[1]), args))
        finally:
            server.terminate()
            server.wait(timeout=10)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=20_000, help="messages per server")
    parser.add_argument("--seconds", type=float, default=60.0, help="time cap per server")
    parser.add_argument("--warmup", type=int, default=500, help="untimed messages first")
    parser.add_argument("--size", type=int, default=640, help="bytes per message")
    parser.add_argument("--rounds", type=int, default=1, help="run every server this often")
    parser.add_argument("--serve", choices=SERVERS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        run_server(args.serve)
        return 0

    print(
        f"python {sys.version.split()[0]}; {args.count} x {args.size}-byte binary echoes "
        f"(cap {args.seconds:g} s), {args.rounds} round(s)"
    )
    best: dict[str, float] = {}
    for round_number in range(1, args.rounds + 1):
        for kind in SERVERS:
            count, seconds = bench_one(kind, args)
            rate = count / seconds
            best[kind] = max(best.get(kind, 0.0), rate)
            print(f"  round {round_number} {kind:16} {count:6d} msgs in {seconds:6.2f} s")
    baseline = best["websockets"]
    print(f"{'server':16} {'msgs/s':>9} {'vs websockets':>14}   (best round)")
    for kind in SERVERS:
        print(f"{kind:16} {best[kind]:9.0f} {best[kind] / baseline:13.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
