"""Soak: paced audio both ways and random transport messages through one server on 127.0.0.1,
with the client replaced every few seconds; counts what each session sent and received, and
samples the server process's RSS every 10 s.

    python3 -m pip install ".[bench]"    # once
    python bench/soak.py                 # 10 minutes
    python bench/soak.py --minutes 2 --driver asyncio

The server (a ``WebsocketServerTransport``, policy ``replace``) runs in a child process. Each
client is a ``WebsocketClientTransport`` in this process; a new one connects every 2-5 s
(random), which replaces the previous one (close 1000). Every audio chunk (40 ms of 16 kHz mono
PCM16, exactly one paced output chunk, so the pacing never splits it) starts with the client
index and a session-local sequence number; every transport message carries both too. Each side
checks, per session, that what it received is exactly 0, 1, 2, ... with nothing missing in the
middle and nothing repeated; only a tail may be missing (frames still in flight when the session
was replaced are dropped by design). Exit status 1 if a check failed or RSS grew by more than
``--max-growth`` MiB between the first and the last sample.

Not a test (it takes minutes): run it by hand before a release.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import struct
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio

SRC = Path(__file__).resolve().parents[1] / "src"
RATE = 16000
CHUNK = RATE * 2 * 40 // 1000  # bytes of one 40 ms chunk: the default output chunk
TAG = struct.Struct("<IQ")  # client index, sequence number


def tagged_audio(index: int, seq: int) -> bytes:
    return TAG.pack(index, seq) + bytes(CHUNK - TAG.size)


@dataclass
class Stream:
    """One direction of one session: what was sent, what arrived, and whether in order."""

    sent: int = 0
    received: int = 0
    errors: list[str] = field(default_factory=list)

    def arrive(self, seq: int, what: str) -> None:
        if seq != self.received:
            self.errors.append(f"{what}: expected {self.received}, got {seq}")
        self.received = max(self.received, seq + 1)

    def as_dict(self) -> dict[str, Any]:
        return {"sent": self.sent, "received": self.received, "errors": self.errors[:5]}


# --- the server (child process) ------------------------------------------------------------------


async def serve(driver: str) -> None:
    from wavewire import (
        InputAudioRawFrame,
        InputTransportMessageFrame,
        OutputAudioRawFrame,
        OutputTransportMessageFrame,
        WebsocketServerParams,
        WebsocketServerTransport,
    )
    from wavewire.adapters.errors import ConnectionClosed
    from wavewire.transports.server import ClientHandle

    params = WebsocketServerParams(
        audio_in_enabled=True,
        audio_out_enabled=True,
        audio_in_sample_rate=RATE,
        audio_out_sample_rate=RATE,
        audio_out_end_silence_secs=0,
        close_timeout=2.0,
    )
    transport = WebsocketServerTransport(params, "127.0.0.1", 0, driver=driver)  # type: ignore[arg-type]
    # Per client index (from the tags): inbound audio and messages, outbound counts.
    audio_in: dict[int, Stream] = {}
    messages_in: dict[int, Stream] = {}
    out: dict[int, tuple[Stream, Stream]] = {}
    index_of: dict[int, int] = {}  # connection id -> client index, once its hello arrived

    async def talk(handle: ClientHandle, index: int) -> None:
        """Paced audio to this client, with random transport messages in between."""
        audio, messages = out.setdefault(index, (Stream(), Stream()))
        start = time.monotonic()
        try:
            while handle.connected:
                frame = OutputAudioRawFrame(
                    audio=tagged_audio(index, audio.sent), sample_rate=RATE, num_channels=1
                )
                await handle.output().send(frame)
                audio.sent += 1
                if random.random() < 0.2:
                    message = {
                        "index": index,
                        "seq": messages.sent,
                        "pad": "x" * random.randrange(200),
                    }
                    await handle.output().send(OutputTransportMessageFrame(message=message))
                    messages.sent += 1
                # Real time: chunk k at start + 40 ms * k (the core paces too; this feeds it).
                await anyio.sleep(max(0.0, start + 0.04 * audio.sent - time.monotonic()))
        except ConnectionClosed:
            pass

    def report(index: int) -> None:
        audio, messages = out.get(index, (Stream(), Stream()))
        line = {
            "index": index,
            "client_to_server": {
                "audio": audio_in.get(index, Stream()).as_dict(),
                "messages": messages_in.get(index, Stream()).as_dict(),
            },
            "server_sent": {"audio": audio.sent, "messages": messages.sent},
        }
        print("SESSION " + json.dumps(line), flush=True)

    async with transport, anyio.create_task_group() as tg:

        @transport.event_handler("on_client_disconnected")
        def ended(transport: Any, handle: ClientHandle) -> None:
            index = index_of.pop(int(handle.id), None)
            if index is not None:
                # Frames of this session may still sit in input(): report a little later.
                tg.start_soon(report_later, index)

        async def report_later(index: int) -> None:
            await anyio.sleep(1.0)
            report(index)

        print(f"PORT {transport.port}", flush=True)
        async for frame in transport.input():
            if isinstance(frame, InputAudioRawFrame):
                index, seq = TAG.unpack_from(frame.audio)
                audio_in.setdefault(index, Stream()).arrive(seq, "audio")
            elif isinstance(frame, InputTransportMessageFrame):
                message = frame.message
                assert isinstance(message, dict)
                index = int(message["index"])
                if "hello" in message:
                    client = transport.client
                    if client is not None and client.id not in index_of:
                        index_of[int(client.id)] = index
                        tg.start_soon(talk, client, index)
                else:
                    messages_in.setdefault(index, Stream()).arrive(int(message["seq"]), "message")


# --- the clients and the driver of the soak (this process) ---------------------------------------


async def client(index: int, port: int, replaced: anyio.Event, results: dict[int, Any]) -> None:
    from wavewire import (
        InputAudioRawFrame,
        InputTransportMessageFrame,
        OutputAudioRawFrame,
        OutputTransportMessageFrame,
        WebsocketClientParams,
        WebsocketClientTransport,
    )
    from wavewire.adapters.errors import ConnectionClosed

    params = WebsocketClientParams(
        add_wav_header=False,
        audio_in_enabled=True,
        audio_out_enabled=True,
        audio_in_sample_rate=RATE,
        audio_out_sample_rate=RATE,
        audio_out_end_silence_secs=0,
        close_timeout=2.0,
    )
    audio_in, messages_in = Stream(), Stream()
    audio_out, messages_out = Stream(), Stream()
    transport = WebsocketClientTransport(f"ws://127.0.0.1:{port}/soak", params)
    async with transport, anyio.create_task_group() as tg:

        async def send() -> None:
            start = time.monotonic()
            output = transport.output()
            with anyio.CancelScope() as scope:
                try:
                    await output.send(
                        OutputTransportMessageFrame(message={"index": index, "hello": 1})
                    )
                    while True:
                        audio = tagged_audio(index, audio_out.sent)
                        await output.send(OutputAudioRawFrame(audio=audio, sample_rate=RATE))
                        audio_out.sent += 1
                        if random.random() < 0.2:
                            message = {"index": index, "seq": messages_out.sent}
                            await output.send(OutputTransportMessageFrame(message=message))
                            messages_out.sent += 1
                        await anyio.sleep(
                            max(0.0, start + 0.04 * audio_out.sent - time.monotonic())
                        )
                except ConnectionClosed:
                    scope.cancel()

        async def receive() -> None:
            async for frame in transport.input():
                if isinstance(frame, InputAudioRawFrame):
                    got, seq = TAG.unpack_from(frame.audio)
                    if got != index:
                        audio_in.errors.append(f"audio of client {got}")
                    audio_in.arrive(seq, "audio")
                elif isinstance(frame, InputTransportMessageFrame):
                    message = frame.message
                    assert isinstance(message, dict)
                    if message.get("index") != index:
                        messages_in.errors.append(f"message of client {message.get('index')}")
                    messages_in.arrive(int(message["seq"]), "message")

        tg.start_soon(send)
        tg.start_soon(receive)
        await replaced.wait()
        with anyio.move_on_after(5):
            while transport.connected:  # noqa: ASYNC110 - the server closes us (replaced)
                await anyio.sleep(0.05)
        tg.cancel_scope.cancel()
    results[index] = {
        "client_sent": {"audio": audio_out.sent, "messages": messages_out.sent},
        "server_to_client": {"audio": audio_in.as_dict(), "messages": messages_in.as_dict()},
    }


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


async def soak(args: argparse.Namespace) -> int:
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")])),
    )
    server = await anyio.open_process(
        [sys.executable, __file__, "--serve", "--driver", args.driver], env=env, stderr=None
    )
    assert server.stdout is not None
    lines: list[str] = []
    buffer = b""

    async def read_lines() -> None:
        nonlocal buffer
        assert server.stdout is not None
        async for chunk in server.stdout:
            buffer += chunk
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                lines.append(line.decode())

    results: dict[int, Any] = {}
    rss: list[tuple[float, int]] = []
    deadline = time.monotonic() + args.minutes * 60
    async with anyio.create_task_group() as tg:
        tg.start_soon(read_lines)
        while not any(line.startswith("PORT ") for line in lines):  # noqa: ASYNC110
            await anyio.sleep(0.05)
        port = int(next(line for line in lines if line.startswith("PORT ")).split()[1])
        started = time.monotonic()

        async def sample() -> None:
            while True:
                rss.append((time.monotonic() - started, rss_kib(server.pid)))
                print(f"t={rss[-1][0]:6.1f}s server RSS {rss[-1][1] / 1024:7.1f} MiB", flush=True)
                await anyio.sleep(10)

        tg.start_soon(sample)
        index = 0
        previous: anyio.Event | None = None
        async with anyio.create_task_group() as clients:
            while time.monotonic() < deadline:
                replaced = anyio.Event()
                clients.start_soon(client, index, port, replaced, results)
                await anyio.sleep(0.2)  # the newcomer's handshake first, then the old one ends
                if previous is not None:
                    previous.set()
                previous = replaced
                index += 1
                await anyio.sleep(random.uniform(2.0, 5.0))
            assert previous is not None
            previous.set()  # the last one ends with the soak
        rss.append((time.monotonic() - started, rss_kib(server.pid)))
        await anyio.sleep(2.5)  # the server reports the last sessions
        server.send_signal(signal.SIGINT)
        with anyio.move_on_after(10):
            await server.wait()
        if server.returncode is None:
            server.kill()
        tg.cancel_scope.cancel()
    return summarize(lines, results, rss, args.max_growth)


def summarize(
    lines: list[str], results: dict[int, Any], rss: list[tuple[float, int]], max_growth: float
) -> int:
    sessions = {}
    for line in lines:
        if line.startswith("SESSION "):
            data = json.loads(line[len("SESSION ") :])
            sessions[data["index"]] = data
    failed = False
    totals = {key: [0, 0] for key in ("c->s audio", "c->s msgs", "s->c audio", "s->c msgs")}
    header = ("client", "c->s audio sent/recv", "msgs", "s->c audio sent/recv", "msgs")
    print(f"{header[0]:>6} {header[1]:>21} {header[2]:>10} {header[3]:>21} {header[4]:>10}  errors")
    for index in sorted(results):
        mine, theirs = results[index], sessions.get(index)
        if theirs is None:
            print(f"{index:6d}  (no server report)")
            failed = True
            continue
        pairs: list[tuple[str, int, dict[str, Any]]] = [
            ("c->s audio", mine["client_sent"]["audio"], theirs["client_to_server"]["audio"]),
            ("c->s msgs", mine["client_sent"]["messages"], theirs["client_to_server"]["messages"]),
            ("s->c audio", theirs["server_sent"]["audio"], mine["server_to_client"]["audio"]),
            ("s->c msgs", theirs["server_sent"]["messages"], mine["server_to_client"]["messages"]),
        ]
        errors: list[str] = []
        cells = []
        for name, sent, got in pairs:
            totals[name][0] += sent
            totals[name][1] += got["received"]
            errors += got["errors"]
            if got["received"] > sent:
                errors.append(f"{name}: received {got['received']} > sent {sent}")
            cells.append(f"{sent:>10}/{got['received']:<10}")
        failed = failed or bool(errors)
        print(
            f"{index:6d} {cells[0]} {cells[1]} {cells[2]} {cells[3]}  {'; '.join(errors) or 'ok'}"
        )
    print("totals (sent/received, tail lost at replacement):")
    for name, (total_sent, total_got) in totals.items():
        lost = total_sent - total_got
        print(f"  {name}: {total_sent}/{total_got} ({lost} lost at session ends)")
    series = ", ".join(f"{t:.0f}s:{kib / 1024:.1f}" for t, kib in rss)
    print(f"server RSS MiB: {series}")
    if len(rss) >= 2:
        growth = (rss[-1][1] - rss[1 if len(rss) > 2 else 0][1]) / 1024
        print(f"RSS growth after warm-up: {growth:+.1f} MiB (limit {max_growth} MiB)")
        failed = failed or growth > max_growth
    print("FAILED" if failed else "OK")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--driver", choices=("anyio", "asyncio"), default="anyio")
    parser.add_argument("--max-growth", type=float, default=10.0, help="MiB of RSS growth allowed")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(serve(args.driver))
        return 0
    return anyio.run(soak, args)


if __name__ == "__main__":
    sys.exit(main())
