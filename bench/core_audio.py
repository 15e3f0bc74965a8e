"""The audio row's server work without I/O: the core and the CLI's echo, on a synthetic clock.

    python bench/core_audio.py                         # N = 200 sessions, 5 s of audio
    python bench/core_audio.py --src /work/other/src   # the same load on another checkout
    python bench/core_audio.py --profile               # cProfile call counts per message

What ``wavewire serve --policy multi --serializer protobuf`` does for bench/peers.py's audio row,
minus sockets, event loop and tasks: N sessions open through the real upgrade request, each
sends a masked 20 ms frame of 16 kHz PCM16 (protobuf) every 20 ms, phases spread over the
20 ms, with a fixed pattern of jitter; each received frame is echoed with ``cli.echo_frame``
and ``send_frame``, the paced 40 ms chunks leave when ``handle_timer`` is called at
``next_deadline()`` rounded up to the millisecond, as asyncio's timer runs. After every core
call the driver's flush is replayed: ``data_to_send()``, ``events_received()``,
``next_deadline()``. Time is the simulation's, so the run is deterministic: CPU time per
received frame (``time.process_time``, best of ``--repeat``) compares two versions of the core
on one machine, and ``--profile`` counts calls per received frame. Checks that every byte of
echoed audio went out by the end (audio lost here is a bug, not load).
"""

from __future__ import annotations

import argparse
import base64
import cProfile
import math
import pstats
import sys
import time
from pathlib import Path
from typing import Any

FRAME_SECONDS = 0.02
RATE = 16000
PCM = b"\x01\x02" * (RATE * 20 // 1000)
MASK = b"\x37\xfa\x21\x3d"
KEY = base64.b64encode(b"wavewire-peers!!").decode()
REQUEST = (
    "GET / HTTP/1.1\r\nHost: 127.0.0.1:8765\r\nUpgrade: websocket\r\n"
    f"Connection: Upgrade\r\nSec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
).encode()


def masked_frame(payload: bytes) -> bytes:
    """One masked, final binary frame (the client's)."""
    length = len(payload)
    if length < 126:
        head = bytes([0x82, 0x80 | length])
    elif length < 1 << 16:
        head = bytes([0x82, 0x80 | 126]) + length.to_bytes(2, "big")
    else:
        head = bytes([0x82, 0x80 | 127]) + length.to_bytes(8, "big")
    masked = bytes(b ^ MASK[i % 4] for i, b in enumerate(payload))
    return head + MASK + masked


class Run:
    """One simulated run; ``counts`` what went out."""

    def __init__(self, sessions: int, seconds: float) -> None:
        from wavewire import cli
        from wavewire.core.events import FrameReceived
        from wavewire.core.serializers._pb import frames_pb2 as pb
        from wavewire.core.server import ServerProtocol

        self.echo_frame = cli.echo_frame
        self.frame_received = FrameReceived
        args = cli.parse_args(["serve", "--policy", "multi", "--serializer", "protobuf"])
        self.protocol = ServerProtocol(cli.make_params(args).server_config())
        message = pb.Frame(audio=pb.AudioRawFrame(audio=PCM, sample_rate=RATE, num_channels=1))
        self.frame = masked_frame(message.SerializeToString())
        self.sessions = sessions
        self.ticks = 2 * max(1, round(seconds / FRAME_SECONDS / 2))
        self.bytes_out = 0
        self.timer_calls = 0
        self.ids: list[Any] = []
        for i in range(sessions):
            connection_id = self.protocol.connection_made(0.0, ("127.0.0.1", 40000 + i))
            self.protocol.receive_data(connection_id, REQUEST, 0.0)
            self.ids.append(connection_id)
        self.flush(0.0)
        assert len(self.protocol.clients) == sessions, "not every session opened"
        self.bytes_out = 0

    def flush(self, now: float) -> None:
        """What a driver does after every core call."""
        protocol = self.protocol
        for transmit in protocol.data_to_send():
            self.bytes_out += len(transmit.data)
        for event in protocol.events_received():
            if isinstance(event, self.frame_received):
                reply = self.echo_frame(event.frame)
                if reply is not None:
                    protocol.send_frame(event.connection.id, reply, now)
                    self.flush(now)
        protocol.next_deadline()

    def run(self) -> None:
        protocol = self.protocol
        frame = self.frame
        # Session i sends frame k at 1 s + k * 20 ms + i * step, give or take a network jitter
        # of up to 2.5 ms (a fixed pattern): some chunks are complete before they are due and
        # leave on a timer, others are due when they are complete and leave at once.
        step = FRAME_SECONDS / self.sessions
        sends = sorted(
            (1.0 + k * FRAME_SECONDS + i * step + ((7 * k + 13 * i) % 11 - 5) * 0.0005, i)
            for k in range(self.ticks)
            for i in range(self.sessions)
        )
        j = 0
        while j < len(sends):
            at, session = sends[j]
            deadline = protocol.next_deadline()
            if deadline is not None and (fired := tick(deadline)) <= at:
                self.timer_calls += 1
                protocol.handle_timer(fired)
                self.flush(fired)
                continue
            protocol.receive_data(self.ids[session], frame, at)
            self.flush(at)
            j += 1
        # The last chunks leave on their timers.
        while (deadline := protocol.next_deadline()) is not None:
            self.timer_calls += 1
            protocol.handle_timer(tick(deadline))
            self.flush(tick(deadline))


def tick(deadline: float) -> float:
    """When an asyncio timer for ``deadline`` runs: at the next whole millisecond (epoll's
    timeout is in milliseconds, rounded up), so one firing sends every chunk due by then."""
    return max(deadline, math.ceil(deadline * 1000) / 1000)  # never before it (rounding)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=5.0, help="of audio per session (5)")
    parser.add_argument("--repeat", type=int, default=5, help="timed runs; the best counts (5)")
    parser.add_argument("--src", help="import wavewire from this src directory")
    parser.add_argument("--profile", action="store_true", help="cProfile call counts instead")
    parser.add_argument("--top", type=int, default=40)
    args = parser.parse_args()
    if args.src:
        sys.path.insert(0, str(Path(args.src).resolve()))
    import wavewire

    print(f"wavewire from {Path(wavewire.__file__).parent}")
    best = float("inf")
    run = Run(args.sessions, args.seconds)
    received = run.ticks * run.sessions
    if args.profile:
        profiler = cProfile.Profile()
        profiler.runcall(run.run)
        stats = pstats.Stats(profiler)
        rows = sorted(stats.stats.items(), key=lambda item: -item[1][1])  # type: ignore[attr-defined]
        print(f"calls per received frame ({received} frames, {run.timer_calls} timer calls):")
        for (path, _line, function), (_cc, ncalls, *_rest) in rows[: args.top]:
            where = path.split("/site-packages/")[-1].split("/src/")[-1]
            print(f"  {ncalls / received:6.2f}  {function:40} {where}")
    else:
        for _ in range(args.repeat):
            run = Run(args.sessions, args.seconds)
            start = time.process_time()
            run.run()
            best = min(best, time.process_time() - start)
        per_frame = best / received * 1e6
        per_session_second = best / (run.sessions * run.ticks * FRAME_SECONDS)
        print(
            f"N={args.sessions}, {received} frames received, {run.timer_calls} timer calls:"
            f" {per_frame:.1f} µs CPU per received frame,"
            f" {per_session_second:.5f} CPU-s per session-s (core and echo only, best of"
            f" {args.repeat})"
        )
    # Every byte of audio echoed (protobuf adds a few bytes per chunk): none lost or held.
    expected = received * len(PCM)
    if run.bytes_out < expected:
        raise SystemExit(f"only {run.bytes_out} bytes went out for {expected} of audio")
    return 0


if __name__ == "__main__":
    sys.exit(main())
