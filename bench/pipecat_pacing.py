"""Pipecat 1.14's own WebSocket server transport against the drop-in (``wavewire.pipecat``): the
same Pipecat pipeline behind each, in one run.

Per transport: a real Pipecat pipeline (``PipelineWorker`` + ``WorkerRunner``) of
``[transport.input(), transport.output(), probe]`` serves a plain ``websockets`` client on
127.0.0.1, in the same process and event loop (one clock). The pipeline is fed like a TTS
service feeds it: ``--seconds`` of 16 kHz mono audio in irregular bursts (300-1200 ms of audio
every 50-300 ms, seeded, the same for both transports) between ``TTSStartedFrame`` and
``TTSStoppedFrame``. Then ``--trials`` interruptions: 3 s of audio, ``InterruptionFrame`` at a
random point after the first chunks have arrived.

* ``|err|``: each chunk's arrival minus its ideal time (first chunk's arrival + k x 40 ms),
  less the median of those (a constant offset is not an error: Pipecat sends its first two
  chunks back to back, a one-chunk lead the client just buffers), absolute, p50/p99/max over
  the stream; ``offset`` is that median;
* ``drift``: the median error of the last second's chunks minus that of the first second's
  (a rate error or a rebasing clock accumulates here);
* ``stopped-last``: when ``BotStoppedSpeakingFrame`` came out of the output transport (the probe
  after it) minus the arrival of the stream's last audio byte (negative: the pipeline heard
  "stopped" before the client had the audio);
* ``interrupt``: from queueing ``InterruptionFrame`` to the last audio byte received after it
  (0 if none), p50/max over the trials, and how many audio chunks arrived after the client got
  the interruption message.

    python bench/pipecat_pacing.py                   # 10 s stream, 5 interruptions
    python bench/pipecat_pacing.py --seconds 30 --trials 10

Not a test: loopback timing depends on the machine and its load (printed before and after).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import socket
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import websockets
from loguru import logger as loguru_logger
from pipecat.frames.frames import (
    BotStoppedSpeakingFrame,
    EndFrame,
    Frame,
    InterruptionFrame,
    TTSAudioRawFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.serializers.protobuf import ProtobufFrameSerializer
from pipecat.transports.base_transport import BaseTransport
from pipecat.transports.websocket import server as pipecat_server
from pipecat.workers.runner import WorkerRunner

from wavewire import pipecat as dropin
from wavewire.core.frames import InputAudioRawFrame
from wavewire.core.frames import InterruptionFrame as CoreInterruption
from wavewire.core.serializers.protobuf import ProtobufFrameSerializer as CoreProtobuf

RATE = 16000
CHUNK_SECONDS = 0.04
CHUNK_BYTES = int(RATE * CHUNK_SECONDS) * 2
DECODE = CoreProtobuf()


class Probe(FrameProcessor):
    """After the output transport: when each downstream frame came out of it."""

    def __init__(self) -> None:
        super().__init__()
        self.stopped: list[float] = []
        self.changed = asyncio.Event()

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, BotStoppedSpeakingFrame) and direction is FrameDirection.DOWNSTREAM:
            self.stopped.append(asyncio.get_running_loop().time())
            self.changed.set()
        await self.push_frame(frame, direction)


@dataclass
class Client:
    """A plain ``websockets`` client stamping every message on arrival."""

    arrivals: list[tuple[float, str]] = field(default_factory=list)  # (time, "audio"|"interrupt")
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self, url: str, connected: asyncio.Event, done: asyncio.Event) -> None:
        async with websockets.connect(url, max_size=None) as ws:
            connected.set()
            reader = asyncio.ensure_future(self._read(ws))
            await done.wait()
            reader.cancel()

    async def _read(self, ws: websockets.ClientConnection) -> None:
        loop = asyncio.get_running_loop()
        async for message in ws:
            now = loop.time()
            frame = DECODE.deserialize(message)
            if isinstance(frame, InputAudioRawFrame):
                self.arrivals.append((now, "audio"))
            elif isinstance(frame, CoreInterruption):
                self.arrivals.append((now, "interrupt"))
            self.changed.set()

    def audio_count(self) -> int:
        return sum(1 for _, kind in self.arrivals if kind == "audio")

    async def wait_audio(self, count: int, timeout: float) -> None:
        async with asyncio.timeout(timeout):
            while self.audio_count() < count:
                self.changed.clear()
                await self.changed.wait()


@dataclass
class Result:
    name: str
    chunks: int
    offset: float
    errors: list[float]
    drift: float
    stopped_minus_last: float
    interrupt_latencies: list[float]
    chunks_after_interrupt_msg: int


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def make_transport(kind: str, port: int) -> BaseTransport:
    settings: dict[str, Any] = {
        "audio_out_enabled": True,
        "audio_out_sample_rate": RATE,
        "audio_out_end_silence_secs": 0,
        "serializer": ProtobufFrameSerializer(),
    }
    if kind == "pipecat":
        return pipecat_server.SingleClientWebsocketServerTransport(
            pipecat_server.SingleClientWebsocketServerParams(**settings),
            host="127.0.0.1",
            port=port,
        )
    return dropin.SingleClientWebsocketServerTransport(
        dropin.SingleClientWebsocketServerParams(**settings), host="127.0.0.1", port=port
    )


def bursts(seconds: float, seed: int) -> list[tuple[bytes, float]]:
    """(audio, pause after it): ``seconds`` of audio in irregular pieces, like a TTS service."""
    rng = random.Random(seed)
    out: list[tuple[bytes, float]] = []
    total = int(seconds * RATE)
    sample = 0
    while sample < total:
        count = min(total - sample, int(rng.uniform(0.3, 1.2) * RATE))
        audio = b"".join(((sample + i) % 20000 + 1).to_bytes(2, "little") for i in range(count))
        out.append((audio, rng.uniform(0.05, 0.3)))
        sample += count
    return out


async def speak(worker: PipelineWorker, pieces: list[tuple[bytes, float]]) -> None:
    await worker.queue_frame(TTSStartedFrame())
    for audio, pause in pieces:
        await worker.queue_frame(TTSAudioRawFrame(audio=audio, sample_rate=RATE, num_channels=1))
        await asyncio.sleep(pause)
    await worker.queue_frame(TTSStoppedFrame())


async def measure(kind: str, seconds: float, trials: int, seed: int) -> Result:
    port = free_port()
    transport = make_transport(kind, port)
    ready, connected_server = asyncio.Event(), asyncio.Event()

    async def on_ready(*args: object) -> None:
        ready.set()

    async def on_connected(*args: object) -> None:
        connected_server.set()

    transport.add_event_handler("on_websocket_ready", on_ready)
    transport.add_event_handler("on_client_connected", on_connected)
    probe = Probe()
    worker = PipelineWorker(
        Pipeline([transport.input(), transport.output(), probe]),
        params=PipelineParams(audio_in_sample_rate=RATE, audio_out_sample_rate=RATE),
        cancel_on_idle_timeout=False,
        idle_timeout_secs=None,
        enable_rtvi=False,
        check_dangling_tasks=False,
    )
    runner = WorkerRunner(handle_sigint=False, check_dangling_tasks=False)
    await runner.add_workers(worker)
    run = asyncio.ensure_future(runner.run())
    client, connected, done = Client(), asyncio.Event(), asyncio.Event()
    loop = asyncio.get_running_loop()
    try:
        await asyncio.wait_for(ready.wait(), 10)
        connection = asyncio.ensure_future(client.run(f"ws://127.0.0.1:{port}/ws", connected, done))
        await asyncio.wait_for(connected_server.wait(), 10)

        # The stream.
        pieces = bursts(seconds, seed)
        expected = -(-sum(len(a) for a, _ in pieces) // CHUNK_BYTES)
        await speak(worker, pieces)
        await client.wait_audio(expected, seconds * 3 + 10)
        async with asyncio.timeout(10):
            while not probe.stopped:
                probe.changed.clear()
                await probe.changed.wait()
        await asyncio.sleep(0.5)
        stream = [t for t, kind_ in client.arrivals if kind_ == "audio"][:expected]
        t0 = stream[0]
        raw = [t - (t0 + k * CHUNK_SECONDS) for k, t in enumerate(stream)]
        offset = statistics.median(raw)
        errors = [e - offset for e in raw]
        per_second = int(1 / CHUNK_SECONDS)
        drift = statistics.median(errors[-per_second:]) - statistics.median(errors[:per_second])
        stopped_minus_last = probe.stopped[0] - stream[-1]

        # The interruptions.
        rng = random.Random(seed + 1)
        latencies: list[float] = []
        after_message = 0
        for trial in range(trials):
            start = len(client.arrivals)
            before = client.audio_count()
            await worker.queue_frame(TTSStartedFrame())
            audio = bursts(3.0, seed + 10 + trial)
            for piece, _ in audio:
                await worker.queue_frame(
                    TTSAudioRawFrame(audio=piece, sample_rate=RATE, num_channels=1)
                )
            await client.wait_audio(before + 5, 10)
            await asyncio.sleep(rng.uniform(0.0, 1.0))
            interrupted_at = loop.time()
            await worker.queue_frame(InterruptionFrame())
            await asyncio.sleep(1.0)
            await worker.queue_frame(TTSStoppedFrame())
            await asyncio.sleep(0.2)
            trial_arrivals = client.arrivals[start:]
            audio_after = [t for t, k in trial_arrivals if k == "audio" and t >= interrupted_at]
            latencies.append(max(audio_after) - interrupted_at if audio_after else 0.0)
            seen_message = False
            for _, k in trial_arrivals:
                if k == "interrupt":
                    seen_message = True
                elif seen_message:
                    after_message += 1
        await worker.queue_frame(EndFrame())
        done.set()
        await asyncio.wait_for(connection, 15)
        await asyncio.wait_for(run, 15)
    finally:
        if not run.done():
            await worker.cancel()
            await asyncio.wait_for(run, 15)
    return Result(
        name={"pipecat": "Pipecat 1.14", "wavewire": "wavewire.pipecat"}[kind],
        chunks=len(stream),
        offset=offset,
        errors=errors,
        drift=drift,
        stopped_minus_last=stopped_minus_last,
        interrupt_latencies=latencies,
        chunks_after_interrupt_msg=after_message,
    )


async def timer_floor(ticks: int = 50) -> list[float]:
    """The event loop's own timer: lateness of sleeping until 40 ms ticks (no transport)."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    late: list[float] = []
    for k in range(1, ticks + 1):
        target = start + k * CHUNK_SECONDS
        await asyncio.sleep(max(0.0, target - loop.time()))
        late.append(loop.time() - target)
    return late


def loadavg() -> str:
    path = Path("/proc/loadavg")
    return path.read_text().strip() if path.exists() else ""


def ms(value: float) -> str:
    return f"{value * 1000:+.3f}"


def p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    loguru_logger.remove()
    loguru_logger.add(sys.stderr, level="ERROR")
    print(loadavg())
    floor = await timer_floor()
    print(
        "floor: asyncio sleep lateness at 40 ms ticks (50 ticks):"
        f" p50 {p(floor, 0.5) * 1000:.3f} ms, p99 {p(floor, 0.99) * 1000:.3f} ms,"
        f" max {max(floor) * 1000:.3f} ms"
    )
    results = [
        await measure(kind, args.seconds, args.trials, args.seed)
        for kind in ("pipecat", "wavewire")
    ]
    print(
        f"\n{args.seconds:g} s of audio in irregular bursts, then {args.trials} interruptions;"
        " 16 kHz mono, 40 ms chunks, times in ms:"
    )
    print(
        f"{'transport':<18}{'chunks':>7}{'offset':>9}"
        f"{'|err| p50':>11}{'|err| p99':>11}{'|err| max':>11}"
        f"{'drift':>10}{'stopped-last':>14}{'interrupt p50/max':>20}{'after msg':>11}"
    )
    for r in results:
        absolute = [abs(e) for e in r.errors]
        print(
            f"{r.name:<18}{r.chunks:>7}{ms(r.offset):>9}{p(absolute, 0.5) * 1000:>11.3f}"
            f"{p(absolute, 0.99) * 1000:>11.3f}{max(absolute) * 1000:>11.3f}{ms(r.drift):>10}"
            f"{ms(r.stopped_minus_last):>14}"
            f"{p(r.interrupt_latencies, 0.5) * 1000:>11.3f}"
            f"/{max(r.interrupt_latencies) * 1000:>8.3f}"
            f"{r.chunks_after_interrupt_msg:>11}"
        )
    print(loadavg())


if __name__ == "__main__":
    asyncio.run(main())
