"""``wavewire serve`` as a real subprocess: listen, echo, then SIGINT -> clean exit 0."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import anyio.abc
import pytest

from wavewire import InputAudioRawFrame, OutputAudioRawFrame, TextFrame
from wavewire.cli import build_parser, make_params
from wavewire.core.events import Disconnected

from .support import LIMIT
from .wsclient import connect

SRC = str(Path(__file__).resolve().parents[2] / "src")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def command(*args: str) -> list[str]:
    return [sys.executable, "-m", "wavewire", "serve", "--host", "127.0.0.1", *args]


def environment() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [SRC, env.get("PYTHONPATH")]))
    return env


async def read_until(stream: anyio.abc.ByteReceiveStream, marker: bytes) -> bytes:
    seen = b""
    while marker not in seen:
        seen += await stream.receive()
    return seen


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.parametrize(("backend", "policy"), [("asyncio", "replace"), ("trio", "multi")])
async def test_serve_echoes_then_exits_0_on_sigint(backend: str, policy: str) -> None:
    port = free_port()
    args = command("--port", str(port), "--backend", backend, "--policy", policy)
    with anyio.fail_after(LIMIT * 2):
        async with await anyio.open_process(args, env=environment()) as process:
            assert process.stderr is not None
            await read_until(process.stderr, b"listening on ws://127.0.0.1:%d" % port)
            async with connect(port) as client:
                await client.send(TextFrame(text="echo?"))
                reply = await client.next_frame()
                assert isinstance(reply, TextFrame) and reply.text == "echo?"
                # One whole 40 ms output chunk: a partial one would wait for more audio.
                await client.send(OutputAudioRawFrame(audio=b"\x00\x01" * 640, sample_rate=16000))
                audio = await client.next_frame()
                assert isinstance(audio, InputAudioRawFrame) and audio.audio == b"\x00\x01" * 640

                process.send_signal(signal.SIGINT)
                ended = await client.next(Disconnected)
                assert ended.code == 1001
            assert await process.wait() == 0
            log = await read_until(process.stderr, b"stopped")
            assert b"SIGINT: shutting down" in log
            assert b"Traceback" not in log
            # Logged at INFO (the CLI's level); built only when the logger is enabled.
            assert b"client 1 (127.0.0.1:" in log and b" /ws) connected" in log
            assert b" /ws) disconnected: 1001 " in log


def test_port_in_use_is_one_line_and_exit_1() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run(
            command("--port", str(port)),
            env=environment(),
            capture_output=True,
            text=True,
            timeout=LIMIT * 2,
            check=False,
        )
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert lines == [f"wavewire: cannot listen on 127.0.0.1:{port}: Address already in use"]


def test_cli_options_map_to_params() -> None:
    args = build_parser().parse_args(
        ["serve", "--serializer", "raw", "--session-timeout", "30", "--policy", "multi"]
    )
    params = make_params(args)
    assert (args.host, args.port, args.backend) == ("localhost", 8765, "asyncio")
    assert params.audio_in_enabled and params.audio_out_enabled
    assert params.audio_in_sample_rate == 16000 and params.audio_in_channels == 1
    assert params.session_timeout == 30.0
    assert params.client_policy == "multi"
    assert type(params.serializer).__name__ == "RawFrameSerializer"


def test_echo_survives_audio_it_cannot_send(caplog: pytest.LogCaptureFixture) -> None:
    from wavewire.cli import echo

    sent: list[object] = []

    class Output:
        async def send(self, frame: object) -> None:
            if isinstance(frame, OutputAudioRawFrame) and frame.sample_rate != 16000:
                raise ValueError("audio at 24000 Hz cannot be sent on a 16000 Hz output")
            sent.append(frame)

    async def frames() -> AsyncIterator[object]:
        for _ in range(3):
            yield InputAudioRawFrame(audio=b"\0\0", sample_rate=24000)
        yield TextFrame(text="still here")

    anyio.run(echo, frames(), Output())  # type: ignore[arg-type]
    assert [type(f).__name__ for f in sent] == ["TextFrame"]
    assert len([r for r in caplog.records if "not echoed" in r.message]) == 1


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_serve_wss_with_certfile_and_keyfile(tmp_path: Path) -> None:
    import ssl

    trustme = pytest.importorskip("trustme")
    from wavewire import WebsocketClientParams, WebsocketClientTransport

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    certfile, keyfile = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.private_key_pem.write_to_path(str(keyfile))
    cert.cert_chain_pems[0].write_to_path(str(certfile))
    for extra in cert.cert_chain_pems[1:]:
        certfile.write_bytes(certfile.read_bytes() + extra.bytes())
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    port = free_port()
    args = command("--port", str(port), "--certfile", str(certfile), "--keyfile", str(keyfile))
    with anyio.fail_after(LIMIT * 2):
        async with await anyio.open_process(args, env=environment()) as process:
            assert process.stderr is not None
            await read_until(process.stderr, b"listening on wss://127.0.0.1:%d" % port)
            params = WebsocketClientParams(ssl_context=client_context, add_wav_header=False)
            async with WebsocketClientTransport(f"wss://127.0.0.1:{port}/", params) as client:
                await client.output().send(TextFrame(text="over TLS"))
                async for frame in client.input():
                    assert isinstance(frame, TextFrame)
                    assert frame.text == "over TLS"
                    break
            process.send_signal(signal.SIGINT)
            assert await process.wait() == 0


def test_keyfile_without_certfile_is_one_line_and_exit_1() -> None:
    result = subprocess.run(
        [*command("--port", str(free_port()), "--keyfile", "key.pem")],
        env=environment(),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == ["wavewire: --keyfile needs --certfile"]


async def _http_get(port: int, path: str) -> tuple[int, bytes]:
    async with await anyio.connect_tcp("127.0.0.1", port) as stream:
        await stream.send(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        data = b""
        with contextlib.suppress(anyio.EndOfStream, anyio.BrokenResourceError):
            while b"}" not in data:
                data += await stream.receive()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.parametrize(
    ("backend", "extra"),
    [("asyncio", ()), ("trio", ("--driver", "anyio")), ("asyncio", ("--asgi",))],
    ids=["asyncio", "trio", "asgi"],
)
async def test_sigterm_drains_sessions_then_exits_0(backend: str, extra: tuple[str, ...]) -> None:
    port = free_port()
    args = command(
        "--port", str(port), "--backend", backend, "--session-key", "query:sid",
        "--drain-timeout", "1", *extra,
    )  # fmt: skip
    with anyio.fail_after(LIMIT * 3):
        async with await anyio.open_process(args, env=environment()) as process:
            assert process.stderr is not None
            # uvicorn binds after the lifespan started the transport: wait for its own line.
            ready = b"Uvicorn running" if "--asgi" in extra else b"listening on ws://"
            await read_until(process.stderr, ready)
            assert (await _http_get(port, "/readyz"))[0] == 200
            async with connect(port, "/ws?sid=a") as leaving, connect(port, "/ws?sid=b") as b:
                # Each key has its own session and its own echo.
                for client, text in ((leaving, "to a"), (b, "to b")):
                    await client.send(TextFrame(text=text))
                    reply = await client.next_frame()
                    assert isinstance(reply, TextFrame) and reply.text == text
                process.send_signal(signal.SIGTERM)
                await read_until(process.stderr, b"SIGTERM: draining")
                status, body = await _http_get(port, "/readyz")
                assert (status, json.loads(body)["status"]) == (503, "draining")
                assert (await leaving.close()).code == 1000
                # The other session still works until the drain deadline, then gets 1012.
                await b.send(TextFrame(text="still here"))
                reply = await b.next_frame()
                assert isinstance(reply, TextFrame) and reply.text == "still here"
                ended = await b.next(Disconnected)
                assert (ended.code, ended.reason) == (1012, "service restart")
            assert await process.wait() == 0
            log = await read_until(process.stderr, b"stopped")
            assert b"drained: shutting down" in log
            assert b"Traceback" not in log


def test_session_key_specs() -> None:
    from wavewire import SessionKey
    from wavewire.cli import session_key_spec

    assert session_key_spec("path") == SessionKey("path")
    assert session_key_spec("path:0") == SessionKey("path", segment=0)
    assert session_key_spec("query:sid") == SessionKey("query", "sid")
    assert session_key_spec("header:X-Id") == SessionKey("header", "x-id")
    for bad in ("cookie:x", "query", "path:x", "header:"):
        with pytest.raises(argparse.ArgumentTypeError, match="bad session key"):
            session_key_spec(bad)
