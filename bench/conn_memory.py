"""What each idle connection holds in a wavewire server: Python heap per connection, by line.

    python bench/conn_memory.py                      # native asyncio driver, 300 connections
    python bench/conn_memory.py --driver anyio --backend trio --connections 500
    python bench/conn_memory.py --app serve-echo-raw # what bench/peers.py's idle row serves
    python bench/conn_memory.py --app serve-echo-raw --rss --connections 1000

The server runs in this process; the clients run in a child process (plain blocking sockets:
upgrade, read the 101, then stay idle), so every allocation counted is the server's. ``--app``:

* ``transport`` (default): a ``WebsocketServerTransport`` (policy ``multi``, the CLI's
  passthrough serializer) with no application: what the library holds per connection;
* ``serve-echo-raw``: ``wavewire serve --echo-raw`` (the CLI's ``serve``, in this process), as
  bench/peers.py's ``idle`` row runs it: the transport plus the CLI's echo task per client,
  waiting for its first message.

Snapshots (``tracemalloc``) are taken after some warm-up connections and after the others are
all upgraded; the difference divided by their number is the heap each one holds, grouped by
the line that allocated it. Kernel socket buffers and allocator overhead are not in it; with
``--rss`` tracemalloc stays off (its own bookkeeping would count) and the growth of the
process's VmRSS per connection is printed instead, comparable with bench/peers.py's ``idle``
row (which opens 1,000).
"""

from __future__ import annotations

import argparse
import gc
import socket
import subprocess
import sys
import tracemalloc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import sniffio

from wavewire import WebsocketServerTransport
from wavewire.cli import PassthroughSerializer, build_parser, serve
from wavewire.transports.params import WebsocketServerParams

#: Connections opened before the first snapshot.
WARM_UP = 20

CLIENT = """
import socket, sys
port, count = int(sys.argv[1]), int(sys.argv[2])
request = (b"GET / HTTP/1.1\\r\\nHost: 127.0.0.1\\r\\nUpgrade: websocket\\r\\n"
           b"Connection: Upgrade\\r\\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\\r\\n"
           b"Sec-WebSocket-Version: 13\\r\\n\\r\\n")
held = []
for _ in range(count):
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(request)
    reply = b""
    while b"\\r\\n\\r\\n" not in reply:
        chunk = sock.recv(4096)
        assert chunk, "closed during the handshake"
        reply += chunk
    assert reply.startswith(b"HTTP/1.1 101"), reply
    held.append(sock)
    print("up", flush=True)
sys.stdin.read()  # idle until the server is done measuring
"""


def _where(frame: tracemalloc.Frame) -> str:
    name = frame.filename
    for marker in ("site-packages/", "src/", "lib/python"):
        if marker in name:
            name = name.split(marker, 1)[1]
            break
    return f"{name}:{frame.lineno}"


def rss_kib() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


@asynccontextmanager
async def server(app: str, driver: str) -> AsyncIterator[int]:
    """The server of ``--app``, listening: yields its port."""
    if app == "transport":
        params = WebsocketServerParams(serializer=PassthroughSerializer(), client_policy="multi")
        transport = WebsocketServerTransport(params, "127.0.0.1", 0, driver=driver)  # type: ignore[arg-type]
        async with transport:
            yield transport.port
        return
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    argv = ["serve", "--host", "127.0.0.1", "--port", str(port), "--driver", driver]
    argv += ["--backend", sniffio.current_async_library(), "--echo-raw"]
    async with anyio.create_task_group() as tg:
        tg.start_soon(serve, build_parser().parse_args(argv))
        with anyio.fail_after(10):
            while True:  # until it listens
                try:
                    await (await anyio.connect_tcp("127.0.0.1", port)).aclose()
                    break
                except OSError:
                    await anyio.sleep(0.05)
        yield port
        tg.cancel_scope.cancel()


async def measure(app: str, driver: str, count: int, top: int, rss: bool) -> None:
    async with server(app, driver) as port:

        async def connect(n: int) -> subprocess.Popen[str]:
            child = subprocess.Popen(  # noqa: ASYNC220 - starts at once; its output is awaited
                [sys.executable, "-c", CLIENT, str(port), str(n)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            assert child.stdout is not None
            for _ in range(n):
                line = await anyio.to_thread.run_sync(child.stdout.readline)
                assert line == "up\n", line
            return child

        warm = await connect(WARM_UP)  # the server's own structures grown, its paths run
        await anyio.sleep(0.2)
        gc.collect()
        if rss:
            rss_before = rss_kib()
        else:
            tracemalloc.start(1)
            before = tracemalloc.take_snapshot()
        clients = await connect(count)
        await anyio.sleep(0.5)  # every connection's callbacks have run
        gc.collect()
        if rss:
            rss_after = rss_kib()
        else:
            after = tracemalloc.take_snapshot()
            tracemalloc.stop()
        for child in (warm, clients):
            assert child.stdin is not None
            child.stdin.close()
            child.wait(10)
    what = f"{app}, {driver} driver on {sniffio.current_async_library()}: {count} idle connections"
    if rss:
        print(f"{what}, VmRSS growth per connection: {(rss_after - rss_before) / count:.2f} KiB")
        return
    by_line: dict[str, int] = {}
    for stat in after.compare_to(before, "lineno"):
        if stat.traceback[0].filename == tracemalloc.__file__:
            continue  # tracemalloc's own bookkeeping
        key = _where(stat.traceback[0])
        by_line[key] = by_line.get(key, 0) + stat.size_diff
    total = sum(by_line.values())
    print(f"{what}, Python heap per connection: {total / count:,.0f} B")
    for key, size in sorted(by_line.items(), key=lambda item: -item[1])[:top]:
        print(f"{size / count:8,.0f} B  {key}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--app", default="transport", choices=("transport", "serve-echo-raw"))
    parser.add_argument("--driver", default="asyncio", choices=("asyncio", "anyio"))
    parser.add_argument("--backend", default="asyncio", choices=("asyncio", "trio"))
    parser.add_argument("--connections", type=int, default=300)
    parser.add_argument("--top", type=int, default=20, help="lines listed (20)")
    parser.add_argument("--rss", action="store_true", help="VmRSS growth, tracemalloc off")
    args = parser.parse_args()
    anyio.run(
        measure,
        args.app,
        args.driver,
        args.connections,
        args.top,
        args.rss,
        backend=args.backend,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
