"""``wavewire serve`` as a subprocess for the adversarial tests: its stderr is drained into a
buffer by a task (a full pipe would block the server), and tests wait for lines in it."""

from __future__ import annotations

import os
import signal
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import anyio.abc

SRC = str(Path(__file__).resolve().parents[2] / "src")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def environment() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [SRC, env.get("PYTHONPATH")]))
    return env


#: Runs ``wavewire`` (argv[1:]) with RLIMIT_NOFILE lowered first (anyio's ``open_process`` has
#: no ``preexec_fn``; this is the same ``setrlimit``, in the child, before the server starts).
LIMITED = (
    "import resource, runpy, sys; "
    "limit = int(sys.argv.pop(1)); "
    "resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit)); "
    "sys.argv[0] = 'wavewire'; "
    "runpy.run_module('wavewire', run_name='__main__')"
)


class ServerProcess:
    def __init__(self, process: anyio.abc.Process, port: int) -> None:
        self.process = process
        self.port = port
        self.log = b""
        self._changed = anyio.Event()

    async def drain(self) -> None:
        assert self.process.stderr is not None
        async for data in self.process.stderr:
            self.log += data
            self._changed.set()
            self._changed = anyio.Event()
        self._changed.set()

    async def wait_for(self, marker: bytes, count: int = 1) -> None:
        while self.log.count(marker) < count:
            if self.process.returncode is not None:
                raise AssertionError(f"server exited {self.process.returncode}:\n{self.text()}")
            await self._changed.wait()

    def exit_status(self) -> int | None:
        """None while running."""
        return self.process.returncode

    def text(self) -> str:
        return self.log.decode(errors="replace")


@asynccontextmanager
async def serve(
    *args: str, driver: str, backend: str, descriptors: int | None = None
) -> AsyncIterator[ServerProcess]:
    """``wavewire serve`` on a free port of 127.0.0.1, listening (at most ``descriptors`` open
    files if given); SIGINT and reaped on exit."""
    port = free_port()
    launcher = ["-m", "wavewire"] if descriptors is None else ["-c", LIMITED, str(descriptors)]
    command = [
        sys.executable, *launcher, "serve", "--host", "127.0.0.1", "--port", str(port),
        "--driver", driver, "--backend", backend, *args,
    ]  # fmt: skip
    process = await anyio.open_process(command, env=environment(), stdout=None)
    server = ServerProcess(process, port)
    async with process, anyio.create_task_group() as tg:
        tg.start_soon(server.drain)
        try:
            await server.wait_for(b"listening on")
            yield server
        finally:
            if process.returncode is None:
                process.send_signal(signal.SIGINT)
                with anyio.move_on_after(10):
                    await process.wait()
                if process.returncode is None:
                    process.kill()
            await process.wait()
