"""How exactly wavewire paces output audio: over real sockets, and in the core alone.

Network run (per driver): a ``WebsocketServerTransport`` on 127.0.0.1 (16 kHz mono, 40 ms
chunks, no lead, ``audio_out_max_queued_secs=2`` so that the producer is held back by
backpressure) streams ``--seconds`` of audio, sent through ``output().send()`` in 1 s frames as
fast as the transport accepts them. A client (the core's ``ClientProtocol`` over an anyio TCP
stream, in the same process and event loop, so one clock) timestamps every arriving chunk.
Chunk ``k`` should arrive at ``t0 + k * 40 ms``, ``t0`` being the time of the first send:

* error: arrival minus that ideal time, p50 / p99 / max of its absolute value;
* drift: the median error of the last second's chunks minus that of the first second's (a
  rate error accumulates here; the median keeps one chunk's jitter out);
* interruption: ``--trials`` times, stream 1 s, send ``InterruptionFrame`` at a random point,
  and measure from that send to the last audio byte received and to the interruption message,
  and whether any audio chunk arrived after the interruption message.

``--driver uvicorn``: the same, with ``AsgiServerTransport`` (``wavewire.asgi``) served by uvicorn
(wsproto implementation, permessage-deflate off) in the same process and event loop: the session
layer paces, uvicorn frames and writes.

Core run: an ``AudioOutput`` fed one hour of audio (synthetic clock, 1 s writes whenever it is
writable), its timer fired exactly at each deadline, then again with each firing late by a
random 0-5 ms: the due time of the last chunk against ``t0 + k * chunk_duration``.

    python bench/pacing.py                      # 60 s per driver, 20 interruption trials
    python bench/pacing.py --seconds 10 --driver asyncio
    python bench/pacing.py --seconds 10 --driver uvicorn   # the asgi extra

Not a test: loopback timing depends on the machine and its load.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import socket
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from collections.abc import AsyncIterator

import anyio
import anyio.abc

from wavewire import (
    InputAudioRawFrame,
    InterruptionFrame,
    OutputAudioRawFrame,
    WebsocketServerParams,
    WebsocketServerTransport,
)
from wavewire.asgi import AsgiDriver, AsgiServerTransport
from wavewire.core.client import ClientProtocol
from wavewire.core.config import ClientConfig
from wavewire.core.events import FrameReceived
from wavewire.core.session.audio import AudioChunk, AudioOutput
from wavewire.transports.server import ClientHandle, DriverName

RATE = 16000
CHUNK_SECONDS = 0.04
CHUNK_BYTES = int(RATE * CHUNK_SECONDS) * 2
#: (driver, backend) pairs measured by default; "uvicorn" is wavewire.asgi under uvicorn.
RUNS: list[tuple[str, str]] = [
    ("anyio", "asyncio"),
    ("anyio", "trio"),
    ("asyncio", "asyncio"),
    ("uvicorn", "asyncio"),
]


# --- the timestamping client ---------------------------------------------------------------------


@dataclass
class Client:
    """The core client over an anyio stream; every received frame stamped on arrival."""

    stream: anyio.abc.SocketStream
    protocol: ClientProtocol
    arrivals: list[tuple[float, object]] = field(default_factory=list)
    changed: anyio.Event = field(default_factory=anyio.Event)

    async def flush(self) -> None:
        for transmit in self.protocol.data_to_send():
            if transmit.data:
                await self.stream.send(transmit.data)
        now = anyio.current_time()
        for event in self.protocol.events_received():
            if isinstance(event, FrameReceived):
                self.arrivals.append((now, event.frame))
        self.changed.set()
        self.changed = anyio.Event()

    async def read_loop(self) -> None:
        while True:
            try:
                data = await self.stream.receive()
            except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError):
                return
            self.protocol.receive_data(data, anyio.current_time())
            await self.flush()

    async def wait_for(self, count: int) -> None:
        while len(self.arrivals) < count:
            await self.changed.wait()


async def open_client(port: int) -> Client:
    stream = await anyio.connect_tcp("127.0.0.1", port)
    config = ClientConfig(ping_interval=None)  # no client timers: this loop has none
    protocol = ClientProtocol(
        f"ws://127.0.0.1:{port}/", config, random_bytes=os.urandom, now=anyio.current_time()
    )
    client = Client(stream, protocol)
    await client.flush()
    while client.protocol.connection is None:
        client.protocol.receive_data(await stream.receive(), anyio.current_time())
        await client.flush()
    return client


# --- the network run ---------------------------------------------------------------------------


@dataclass
class NetworkResult:
    driver: str
    backend: str
    seconds: float
    chunks: int
    errors_ms: list[float]
    drift_ms: float
    last_audio_ms: list[float]
    interrupt_msg_ms: list[float]
    late_chunks: int
    #: The schedule's stalls during the steady stream (timer more than a chunk late: the
    #: stream re-anchors, which shows as drift) and the seconds they moved it.
    stalls: int = 0
    stalled_seconds: float = 0.0


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@contextlib.asynccontextmanager
async def serving(
    driver: str, params: WebsocketServerParams
) -> AsyncIterator[tuple[WebsocketServerTransport, int]]:
    """The server transport for ``driver``, running, and its port."""
    if driver != "uvicorn":
        server = WebsocketServerTransport(params, "127.0.0.1", 0, driver=cast(DriverName, driver))
        async with server:
            yield server, server.port
        return
    import uvicorn

    asgi = AsgiServerTransport(params)
    ready = anyio.Event()
    asgi.add_event_handler("on_websocket_ready", lambda transport: ready.set())
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(
        asgi, ws="wsproto", ws_per_message_deflate=False, lifespan="on", log_level="warning"
    )
    uvicorn_server = uvicorn.Server(config)
    async with anyio.create_task_group() as tg:
        tg.start_soon(uvicorn_server.serve, [sock])
        await ready.wait()
        while not uvicorn_server.started:  # noqa: ASYNC110 - uvicorn has no event for it
            await anyio.sleep(0.01)
        try:
            yield asgi, sock.getsockname()[1]
        finally:
            uvicorn_server.should_exit = True


async def network_run(
    driver: str, backend: str, seconds: int, trials: int, seed: int
) -> NetworkResult:
    params = WebsocketServerParams(
        audio_out_enabled=True,
        audio_out_sample_rate=RATE,
        audio_out_end_silence_secs=0,
        audio_out_max_queued_secs=2,
        ping_interval=None,
    )
    connected = anyio.Event()
    handles: list[ClientHandle] = []

    def on_connected(transport: WebsocketServerTransport, client: ClientHandle) -> None:
        handles.append(client)
        connected.set()

    rng = random.Random(seed)
    async with serving(driver, params) as (server, port), anyio.create_task_group() as tg:
        server.add_event_handler("on_client_connected", on_connected)
        client = await open_client(port)
        tg.start_soon(client.read_loop)
        await connected.wait()
        output = handles[0].output()
        second = b"\x01\x00" * RATE
        total = seconds * 25

        # Steady stream: ``seconds`` of audio in 1 s frames, as fast as send() lets us.
        t0 = anyio.current_time()
        for _ in range(seconds):
            await output.send(OutputAudioRawFrame(audio=second, sample_rate=RATE))
        await client.wait_for(total)
        arrivals = [t for t, f in client.arrivals if isinstance(f, InputAudioRawFrame)]
        assert len(arrivals) == total, len(arrivals)
        errors = [(t - (t0 + k * CHUNK_SECONDS)) * 1000 for k, t in enumerate(arrivals)]
        # Median error of the last second minus that of the first: a rate error, not the
        # jitter of two single chunks.
        drift = statistics.median(errors[-25:]) - statistics.median(errors[:25])
        stats = core_of(server).audio_stats(handles[0].id)
        assert stats is not None

        # Interruptions at random points of 1 s streams.
        last_audio: list[float] = []
        interrupt_msg: list[float] = []
        late = 0
        for _ in range(trials):
            client.arrivals.clear()
            await output.send(OutputAudioRawFrame(audio=second, sample_rate=RATE))
            await anyio.sleep(rng.uniform(0.1, 0.8))
            sent = anyio.current_time()
            await output.send(InterruptionFrame())
            while not any(isinstance(f, InterruptionFrame) for _, f in client.arrivals):
                await client.changed.wait()
            cut = next(
                i for i, (_, f) in enumerate(client.arrivals) if isinstance(f, InterruptionFrame)
            )
            await anyio.sleep(0.1)  # long enough for a chunk that should not come (2.5 chunks)
            late += sum(
                1 for _, f in client.arrivals[cut + 1 :] if isinstance(f, InputAudioRawFrame)
            )
            audio_times = [t for t, f in client.arrivals[:cut] if isinstance(f, InputAudioRawFrame)]
            last_audio.append(max(0.0, (audio_times[-1] - sent) * 1000) if audio_times else 0.0)
            interrupt_msg.append((client.arrivals[cut][0] - sent) * 1000)
        tg.cancel_scope.cancel()
        await client.stream.aclose()  # the server's shutdown need not wait for a close frame
    return NetworkResult(
        driver,
        backend,
        seconds,
        total,
        errors,
        drift,
        last_audio,
        interrupt_msg,
        late,
        stats.stalls,
        stats.late_seconds,
    )


def core_of(server: WebsocketServerTransport) -> Any:
    """What keeps the audio counters: the driver's ``ServerProtocol`` or (ASGI) ``Sessions``."""
    driver: Any = server._driver_or_raise()
    return driver.sessions if isinstance(driver, AsgiDriver) else driver.protocol


# --- the floor: the event loop's own timer ---------------------------------------------------


async def timer_floor(ticks: int) -> list[float]:
    """Lateness (ms) of ``anyio.sleep_until`` at 40 ms ticks: what no driver can beat."""
    t0 = anyio.current_time()
    late = []
    for k in range(1, ticks + 1):
        await anyio.sleep_until(t0 + k * CHUNK_SECONDS)
        late.append((anyio.current_time() - (t0 + k * CHUNK_SECONDS)) * 1000)
    return late


# --- the core run ------------------------------------------------------------------------------


def core_run(hours: float, max_late: float, seed: int) -> tuple[int, float, float, int]:
    """Chunks sent, drift of the last chunk's due time (ms), worst due error (ms), stalls."""
    rng = random.Random(seed)
    output: AudioOutput[object] = AudioOutput(
        sample_rate=RATE, chunks_10ms=4, end_silence_secs=0, max_queued_seconds=2
    )
    total = round(hours * 3600 / CHUNK_SECONDS)
    second = bytes(2 * RATE)
    written = sent = 0
    now = t0 = 1000.0
    worst = 0.0
    last_due = t0
    while sent < total:
        while written < total and output.writable:
            output.write_audio(second, now)
            written += 25
        deadline = output.next_deadline()
        assert deadline is not None
        now = max(now, deadline + rng.uniform(0, max_late))
        for item in output.take_due(now):
            assert isinstance(item, AudioChunk)
            worst = max(worst, abs(item.due - (t0 + sent * CHUNK_SECONDS)))
            last_due = item.due
            sent += 1
    drift = (last_due - (t0 + (total - 1) * CHUNK_SECONDS)) * 1000
    return sent, drift, worst * 1000, output.stats.stalls


# --- main --------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=60, help="audio streamed per run (60)")
    parser.add_argument("--trials", type=int, default=20, help="interruptions per run (20)")
    parser.add_argument("--driver", choices=("anyio", "asyncio", "uvicorn"), help="one driver only")
    parser.add_argument("--core-hours", type=float, default=1.0, help="synthetic hours (1)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    print(f"core, {args.core_hours:g} h of synthetic time, 40 ms chunks at 16 kHz:")
    for label, late in (("timer on time", 0.0), ("timer 0-5 ms late", 0.005)):
        sent, drift, worst, stalls = core_run(args.core_hours, late, args.seed)
        print(
            f"  {label:18} {sent} chunks, drift of the last chunk {drift:+.6f} ms, "
            f"worst due error {worst:.6f} ms, stalls {stalls}"
        )

    print("\nfloor: the event loop's own timer, lateness of sleep_until at 40 ms ticks (50 ticks):")
    for backend in ("asyncio", "trio"):
        floor = anyio.run(timer_floor, 50, backend=backend)
        print(
            f"  {backend:8} p50 {percentile(floor, 0.5):.3f} ms, p99 {percentile(floor, 0.99):.3f}"
            f" ms, max {max(floor):.3f} ms"
        )

    runs = [run for run in RUNS if args.driver is None or run[0] == args.driver]
    print(f"\nnetwork, {args.seconds} s of audio over 127.0.0.1, {args.trials} interruptions:")
    print(
        "  driver/backend     chunks  |err| p50 |err| p99 |err| max drift     "
        "last audio after interrupt (p50/max)  interrupt msg (p50/max)  chunks after it"
        "  stalls (s)"
    )
    for driver, backend in runs:
        result = anyio.run(
            network_run, driver, backend, args.seconds, args.trials, args.seed, backend=backend
        )
        abs_errors = [abs(e) for e in result.errors_ms]
        print(
            f"  {driver + '/' + backend:17} {result.chunks:7}  "
            f"{percentile(abs_errors, 0.5):6.3f}ms  {percentile(abs_errors, 0.99):6.3f}ms  "
            f"{max(abs_errors):6.3f}ms  {result.drift_ms:+7.3f}ms  "
            f"{statistics.median(result.last_audio_ms):6.3f}/{max(result.last_audio_ms):6.3f} ms"
            f"{'':22}{statistics.median(result.interrupt_msg_ms):6.3f}/"
            f"{max(result.interrupt_msg_ms):6.3f} ms     {result.late_chunks}"
            f"{'':16}{result.stalls} ({result.stalled_seconds:.3f})"
        )


if __name__ == "__main__":
    main()
