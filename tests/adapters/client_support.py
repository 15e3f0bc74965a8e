"""Shared pieces of the client transport tests: parameters, an event recorder, odd servers."""

from __future__ import annotations

import dataclasses
import os
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import anyio.abc

from wavewire import (
    WebsocketClientParams,
    WebsocketClientTransport,
    WebsocketServerParams,
    WebsocketServerTransport,
)
from wavewire.cli import echo
from wavewire.core.protocol.handshake import Accept, HandshakeRequest, Reject
from wavewire.transports.client import CLIENT_EVENTS

from .support import Recorder, make_params

SRC = str(Path(__file__).resolve().parents[2] / "src")


def client_params(**overrides: Any) -> WebsocketClientParams:
    """Raw audio (no WAV header), audio input and output on at 16 kHz, short close timeout."""
    settings: dict[str, Any] = {
        "add_wav_header": False,
        "audio_in_enabled": True,
        "audio_out_enabled": True,
        "audio_out_sample_rate": 16000,
        "close_timeout": 2.0,
    }
    settings.update(overrides)
    return WebsocketClientParams(**settings)


def hooked_params(hook: Callable[[HandshakeRequest], Accept | Reject]) -> WebsocketServerParams:
    """The test server's parameters with ``hook`` deciding each upgrade request."""
    return dataclasses.replace(make_params(), handshake_hook=hook)


class ClientRecorder:
    """Records every client transport event as ``(name, args)``; lets tests wait for one."""

    def __init__(self, transport: WebsocketClientTransport) -> None:
        self.log: list[tuple[str, tuple[Any, ...]]] = []
        self._changed = anyio.Event()
        for name in CLIENT_EVENTS:
            transport.add_event_handler(name, self._recorder(name))

    def _recorder(self, name: str) -> Callable[..., None]:
        def record(transport: WebsocketClientTransport, *args: Any) -> None:
            self.log.append((name, args))
            self._changed.set()
            self._changed = anyio.Event()

        return record

    def names(self) -> list[str]:
        return [name for name, _ in self.log]

    def count(self, name: str) -> int:
        return self.names().count(name)

    def args(self, name: str) -> list[tuple[Any, ...]]:
        return [args for event, args in self.log if event == name]

    async def wait(self, name: str, count: int = 1) -> None:
        while self.count(name) < count:
            await self._changed.wait()


@asynccontextmanager
async def silent_server() -> AsyncIterator[int]:
    """A TCP server on 127.0.0.1 that accepts and never answers; yields its port."""

    async def hold(stream: anyio.abc.SocketStream) -> None:
        async with stream:
            await anyio.sleep_forever()

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, hold)
        yield listener.extra(anyio.abc.SocketAttribute.local_port)
        tg.cancel_scope.cancel()


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (just released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@asynccontextmanager
async def echo_server_on(
    port: int = 0, params: WebsocketServerParams | None = None
) -> AsyncIterator[tuple[WebsocketServerTransport, Recorder]]:
    """``support.echo_server`` on a chosen port (to restart a server where it was)."""
    transport = WebsocketServerTransport(params or make_params(), host="127.0.0.1", port=port)
    recorder = Recorder(transport)
    async with transport, anyio.create_task_group() as tg:
        tg.start_soon(echo, transport.input(), transport.output())
        yield transport, recorder
        tg.cancel_scope.cancel()


def environment() -> dict[str, str]:
    """The environment for a ``python -m wavewire`` subprocess, with ``src`` importable."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [SRC, env.get("PYTHONPATH")]))
    return env


async def read_until(stream: anyio.abc.ByteReceiveStream, marker: bytes) -> bytes:
    seen = b""
    while marker not in seen:
        seen += await stream.receive()
    return seen


class ServerInTask:
    """An echo server in a task of ``tg``, started and stopped at will (always on ``port``),
    so that client transports can outlive it without misnesting task groups."""

    def __init__(self, tg: anyio.abc.TaskGroup, port: int) -> None:
        self._tg = tg
        self.port = port
        self._stop = anyio.Event()
        self._stopped = anyio.Event()

    async def start(self, params: WebsocketServerParams | None = None) -> Recorder:
        self._stop, self._stopped = anyio.Event(), anyio.Event()
        recorder: Recorder = await self._tg.start(self._run, params)
        return recorder

    async def stop(self) -> None:
        self._stop.set()
        await self._stopped.wait()

    async def _run(
        self,
        params: WebsocketServerParams | None,
        *,
        task_status: anyio.abc.TaskStatus[Recorder],
    ) -> None:
        try:
            async with echo_server_on(self.port, params) as (_, recorder):
                task_status.started(recorder)
                await self._stop.wait()
        finally:
            self._stopped.set()
