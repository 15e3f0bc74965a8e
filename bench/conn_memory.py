"""What each idle connection holds in a wavewire server: Python heap per connection, by line.

    python bench/conn_memory.py                      # native asyncio driver, 300 connections
    python bench/conn_memory.py --driver anyio --backend trio --connections 500

The server (``WebsocketServerTransport``, policy ``multi``, the CLI's passthrough serializer,
as ``wavewire serve --echo-raw``) runs in this process under ``tracemalloc``; the clients run
in a child process (plain blocking sockets: upgrade, read the 101, then stay idle), so every
allocation counted is the server's. Snapshots are taken after one warm-up connection and after
the others are all upgraded; the difference divided by their number is the heap each one holds,
grouped by the line that allocated it. Kernel socket buffers and allocator overhead are not in
it: bench/peers.py's ``idle`` row measures RSS.
"""

from __future__ import annotations

import argparse
import gc
import subprocess
import sys
import tracemalloc

import anyio

from wavewire import WebsocketServerTransport
from wavewire.cli import PassthroughSerializer
from wavewire.transports.params import WebsocketServerParams

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


async def measure(driver: str, count: int, top: int) -> None:
    params = WebsocketServerParams(serializer=PassthroughSerializer(), client_policy="multi")
    transport = WebsocketServerTransport(params, "127.0.0.1", 0, driver=driver)  # type: ignore[arg-type]
    async with transport:

        async def connect(n: int) -> subprocess.Popen[str]:
            child = subprocess.Popen(  # noqa: ASYNC220 - starts at once; its output is awaited
                [sys.executable, "-c", CLIENT, str(transport.port), str(n)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            assert child.stdout is not None
            for _ in range(n):
                line = await anyio.to_thread.run_sync(child.stdout.readline)
                assert line == "up\n", line
            return child

        warm = await connect(1)
        await anyio.sleep(0.2)
        gc.collect()
        tracemalloc.start(1)
        before = tracemalloc.take_snapshot()
        clients = await connect(count)
        await anyio.sleep(0.5)  # every connection's callbacks have run
        gc.collect()
        after = tracemalloc.take_snapshot()
        tracemalloc.stop()
        for child in (warm, clients):
            assert child.stdin is not None
            child.stdin.close()
            child.wait(10)
    by_line: dict[str, int] = {}
    for stat in after.compare_to(before, "lineno"):
        if stat.traceback[0].filename == tracemalloc.__file__:
            continue  # tracemalloc's own bookkeeping
        key = _where(stat.traceback[0])
        by_line[key] = by_line.get(key, 0) + stat.size_diff
    total = sum(by_line.values())
    print(f"{driver}: {count} idle connections, Python heap per connection: {total / count:,.0f} B")
    for key, size in sorted(by_line.items(), key=lambda item: -item[1])[:top]:
        print(f"{size / count:8,.0f} B  {key}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--driver", default="asyncio", choices=("asyncio", "anyio"))
    parser.add_argument("--backend", default="asyncio", choices=("asyncio", "trio"))
    parser.add_argument("--connections", type=int, default=300)
    parser.add_argument("--top", type=int, default=20, help="lines listed (20)")
    args = parser.parse_args()
    anyio.run(measure, args.driver, args.connections, args.top, backend=args.backend)
    return 0


if __name__ == "__main__":
    sys.exit(main())
