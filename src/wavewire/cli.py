"""``wavewire serve``: an echo voice server, for trying clients against wavewire.

Audio in (16 kHz mono) is sent back out, text and transport messages are echoed, lifecycle
events are logged one line each. Ctrl-C or SIGTERM shut it down cleanly (clients get 1001).
``--echo-raw`` echoes every WebSocket message verbatim instead (text as text, binary as binary,
no serializer), to every client at once: the mode that conformance suites (Autobahn) test.

``wavewire connect URI``: a client. ``--send FILE.wav`` streams a 16-bit PCM WAV file to the
server in real time, ``--record OUT.wav`` saves the audio that comes back. It exits once the
file is sent and the server has been quiet for ``--linger`` seconds, or on Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import ssl
import sys
import wave
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.abc

from wavewire.adapters.anyio_client import ConnectError
from wavewire.adapters.errors import ConnectionClosed
from wavewire.adapters.ratelimit import LogLimiter
from wavewire.core.config import DEFAULT_MAX_MESSAGE_SIZE
from wavewire.core.errors import HandshakeError
from wavewire.core.frames import (
    Frame,
    InputAudioRawFrame,
    InputTransportMessageFrame,
    OutputAudioRawFrame,
    OutputTransportMessageFrame,
    TextFrame,
    TTSStoppedFrame,
)
from wavewire.core.serializers import ProtobufFrameSerializer, RawFrameSerializer
from wavewire.core.serializers.base import FrameSerializer
from wavewire.transports import (
    ClientHandle,
    FrameInput,
    FrameOutput,
    WebsocketServerParams,
    WebsocketServerTransport,
)
from wavewire.transports.client import ClientConnection, WebsocketClientTransport
from wavewire.transports.params import WebsocketClientParams

__all__ = ["PassthroughSerializer", "RawMessage", "echo_frame", "main"]

logger = logging.getLogger("wavewire.cli")

SAMPLE_RATE = 16000
#: The echo's per-client warnings: the first, then counts at a bounded rate.
_echo_log = LogLimiter(logger)


def echo_frame(frame: Frame) -> Frame | None:
    """The frame the echo server sends back for ``frame``, or None."""
    if isinstance(frame, InputAudioRawFrame):
        return OutputAudioRawFrame(
            audio=frame.audio, sample_rate=frame.sample_rate, num_channels=frame.num_channels
        )
    if type(frame) is TextFrame:
        return TextFrame(text=frame.text)
    if isinstance(frame, InputTransportMessageFrame):
        return OutputTransportMessageFrame(message=frame.message)
    return None


@dataclass(frozen=True, slots=True, kw_only=True)
class RawMessage(Frame):
    """One WebSocket message exactly as received (``str``: text, ``bytes``: binary).

    Only ``PassthroughSerializer`` makes or sends it; it is not one of wavewire's frames.
    """

    data: bytes | str = field(repr=False)


class PassthroughSerializer:
    """Every message in as a ``RawMessage`` and back out unchanged; nothing else is sent."""

    def serialize(self, frame: Frame) -> bytes | str | None:
        return frame.data if isinstance(frame, RawMessage) else None

    def deserialize(self, data: bytes | str) -> Frame | None:
        return RawMessage(data=data)


async def echo_raw(
    frames: FrameInput, output: FrameOutput, peer: Callable[[], object] | None = None
) -> None:
    """Send back every message of ``frames`` as it came, in order (``peer``: as for
    ``echo``; nothing here is ever refused)."""
    async for frame in frames:
        await output.send(frame)


async def echo(
    frames: FrameInput, output: FrameOutput, peer: Callable[[], object] | None = None
) -> None:
    """Send back every frame of ``frames`` that has an echo, in order.

    A frame the output cannot take (audio at another rate than the server's) is dropped and
    logged per client (``peer()`` names the client the frame came from; by default, the one
    of ``frames``): the first time, then counted (``LogLimiter``). A client's mistake must
    neither stop the server nor flood its log.
    """
    async for frame in frames:
        reply = echo_frame(frame)
        if reply is None:
            continue
        try:
            await output.send(reply)
        except ValueError as exc:
            who = peer() if peer is not None else f"input {id(frames):x}"
            _echo_log.log(logging.WARNING, ("not echoed", who), "%s: not echoed: %s", who, exc)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wavewire", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = commands.add_parser("serve", help="run an echo voice server")
    serve.add_argument("--host", default="localhost", help="address to bind (localhost)")
    serve.add_argument("--port", type=int, default=8765, help="port to listen on (8765)")
    serve.add_argument("--backend", choices=("asyncio", "trio"), default="asyncio")
    serve.add_argument(
        "--driver",
        choices=("anyio", "asyncio"),
        default="anyio",
        help="anyio: anyio streams, any backend (default); asyncio: asyncio's own protocols "
        "and transports, --backend asyncio only",
    )
    serve.add_argument("--serializer", choices=("protobuf", "raw"), default="protobuf")
    serve.add_argument(
        "--session-timeout", type=float, default=None, metavar="S", help="seconds (off)"
    )
    serve.add_argument("--policy", choices=("replace", "reject", "multi"), default="replace")
    serve.add_argument("--certfile", help="PEM certificate chain: serve wss:// (with --keyfile)")
    serve.add_argument("--keyfile", help="PEM private key for --certfile")
    serve.add_argument(
        "--echo-raw",
        action="store_true",
        help="echo every message verbatim to every client (no serializer, policy multi)",
    )
    serve.add_argument(
        "--max-message-size",
        type=int,
        default=DEFAULT_MAX_MESSAGE_SIZE,
        metavar="N",
        help=f"largest message accepted, in bytes ({DEFAULT_MAX_MESSAGE_SIZE})",
    )
    serve.add_argument("--compression", action="store_true", help="accept permessage-deflate (off)")
    connect = commands.add_parser("connect", help="stream a WAV file to a server, record replies")
    connect.add_argument("uri", help="ws:// or wss:// URI of the server")
    connect.add_argument("--send", metavar="FILE.wav", help="16-bit PCM WAV file to stream")
    connect.add_argument("--record", metavar="OUT.wav", help="write the audio received here")
    connect.add_argument(
        "--header",
        action="append",
        default=[],
        metavar="K:V",
        help="extra handshake header (repeatable)",
    )
    connect.add_argument("--serializer", choices=("protobuf", "raw"), default="protobuf")
    connect.add_argument("--backend", choices=("asyncio", "trio"), default="asyncio")
    connect.add_argument(
        "--chunk-ms",
        type=int,
        default=20,
        metavar="MS",
        help="audio per send (20); the wire carries 40 ms messages, paced",
    )
    connect.add_argument(
        "--linger",
        type=float,
        default=0.5,
        metavar="S",
        help="seconds of quiet after sending before exiting (0.5)",
    )
    return parser


def server_ssl_context(args: argparse.Namespace) -> ssl.SSLContext | None:
    """A TLS context from --certfile/--keyfile, or None for plain ws://."""
    if args.certfile is None and args.keyfile is None:
        return None
    if args.certfile is None:
        raise ValueError("--keyfile needs --certfile")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(args.certfile, args.keyfile)
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(f"cannot load the certificate {args.certfile}: {exc}") from None
    return context


def make_params(args: argparse.Namespace) -> WebsocketServerParams:
    common: dict[str, Any] = {
        "session_timeout": args.session_timeout,
        "max_message_size": args.max_message_size,
        "compression": args.compression,
        "ssl_context": server_ssl_context(args),
    }
    if args.echo_raw:
        return WebsocketServerParams(
            serializer=PassthroughSerializer(), client_policy="multi", **common
        )
    serializer: FrameSerializer
    if args.serializer == "raw":
        serializer = RawFrameSerializer(sample_rate=SAMPLE_RATE, num_channels=1)
    else:
        serializer = ProtobufFrameSerializer()
    return WebsocketServerParams(
        audio_in_enabled=True,
        audio_in_sample_rate=SAMPLE_RATE,
        audio_in_channels=1,
        audio_out_enabled=True,
        audio_out_sample_rate=SAMPLE_RATE,
        audio_out_channels=1,
        serializer=serializer,
        client_policy=args.policy,
        **common,
    )


def _describe(client: ClientHandle) -> str:
    remote = client.remote
    where = f"{remote[0]}:{remote[1]}" if isinstance(remote, tuple) else str(remote)
    return f"client {client.id} ({where} {client.path})"


async def serve(args: argparse.Namespace) -> None:
    if args.driver == "asyncio" and args.backend != "asyncio":
        raise ValueError("--driver asyncio runs only with --backend asyncio")
    params = make_params(args)
    policy = params.client_policy
    transport = WebsocketServerTransport(params, host=args.host, port=args.port, driver=args.driver)
    echoes: anyio.abc.TaskGroup | None = None

    @transport.event_handler("on_websocket_ready")
    def on_ready(transport: WebsocketServerTransport) -> None:
        mode = " echo-raw" if args.echo_raw else ""
        logger.info(
            "listening on %s://%s:%d (policy %s%s)",
            "ws" if args.certfile is None else "wss",
            args.host,
            transport.port,
            policy,
            mode,
        )

    @transport.event_handler("on_client_connected")
    def on_connected(transport: WebsocketServerTransport, client: ClientHandle) -> None:
        logger.info("%s connected", _describe(client))
        if echoes is not None and policy == "multi":
            echoes.start_soon(_echo_client, client, echo_raw if args.echo_raw else echo)

    @transport.event_handler("on_client_disconnected")
    def on_disconnected(transport: WebsocketServerTransport, client: ClientHandle) -> None:
        end = client.disconnect
        detail = "" if end is None else f": {end.code} {end.reason!r} ({end.cause.value})"
        logger.info("%s disconnected%s", _describe(client), detail)
        who = f"client {client.id}"
        _echo_log.forget(("not echoed", who), logging.WARNING, who)

    @transport.event_handler("on_session_timeout")
    def on_timeout(transport: WebsocketServerTransport, client: ClientHandle) -> None:
        logger.info("%s session timeout", _describe(client))

    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with transport, anyio.create_task_group() as tg:
            echoes = tg
            if policy != "multi":

                def peer() -> object:
                    current = transport.client  # whose frames transport.input() gives now
                    return f"client {current.id}" if current is not None else "client"

                tg.start_soon(echo, transport.input(), transport.output(), peer)
            async for signum in signals:
                logger.info("%s: shutting down", signal.Signals(signum).name)
                tg.cancel_scope.cancel()
                break
    logger.info("stopped")


async def _echo_client(
    client: ClientHandle,
    echoer: Callable[[FrameInput, FrameOutput, Callable[[], object]], Awaitable[None]],
) -> None:
    with contextlib.suppress(ConnectionClosed):
        await echoer(client.input(), client.output(), lambda: f"client {client.id}")


class CliError(Exception):
    """A problem to report as one line, exit status 1."""


@dataclass
class WavSource:
    """A 16-bit PCM WAV file, read whole."""

    sample_rate: int
    num_channels: int
    pcm: bytes

    @classmethod
    def read(cls, path: str) -> WavSource:
        try:
            with wave.open(path, "rb") as source:
                if source.getsampwidth() != 2 or source.getcomptype() != "NONE":
                    raise CliError(f"{path}: only 16-bit PCM WAV files can be sent")
                return cls(
                    source.getframerate(),
                    source.getnchannels(),
                    source.readframes(source.getnframes()),
                )
        except (OSError, EOFError, wave.Error) as exc:
            raise CliError(f"cannot read {path}: {exc}") from None


@dataclass
class Recording:
    """Audio received, kept in memory until written."""

    sample_rate: int | None = None
    num_channels: int = 1
    chunks: list[bytes] = field(default_factory=list)

    def write(self, path: str, default_rate: int) -> None:
        try:
            with wave.open(path, "wb") as out:
                out.setnchannels(self.num_channels)
                out.setsampwidth(2)
                out.setframerate(self.sample_rate or default_rate)
                out.writeframes(b"".join(self.chunks))
        except OSError as exc:
            raise CliError(f"cannot write {path}: {exc.strerror or exc}") from None


def parse_headers(values: Sequence[str]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for value in values:
        name, sep, content = value.partition(":")
        if not sep or not name.strip():
            raise CliError(f"--header {value!r}: expected NAME:VALUE")
        headers[name.strip()] = content.strip()
    return headers


def make_client_params(args: argparse.Namespace, source: WavSource | None) -> WebsocketClientParams:
    rate = source.sample_rate if source is not None else SAMPLE_RATE
    channels = source.num_channels if source is not None else 1
    serializer: FrameSerializer
    if args.serializer == "raw":
        serializer = RawFrameSerializer(sample_rate=rate, num_channels=channels)
    else:
        serializer = ProtobufFrameSerializer()
    return WebsocketClientParams(
        audio_in_enabled=True,
        audio_in_sample_rate=rate,
        audio_in_channels=channels,
        audio_out_enabled=True,
        audio_out_sample_rate=rate,
        audio_out_channels=channels,
        add_wav_header=False,  # raw samples: the echo comes back as the same audio
        serializer=serializer,
        additional_headers=parse_headers(args.header) or None,
    )


async def send_audio(source: WavSource, output: FrameOutput, chunk_ms: int) -> None:
    """Send ``source`` in ``chunk_ms`` chunks, each at its place on an absolute schedule (so
    that the stream plays in real time without drift, however long the sends take)."""
    frame_bytes = 2 * source.num_channels
    chunk_frames = max(1, source.sample_rate * chunk_ms // 1000)
    step = chunk_frames * frame_bytes
    start = anyio.current_time()
    for index, offset in enumerate(range(0, len(source.pcm), step)):
        due = start + index * chunk_frames / source.sample_rate
        await anyio.sleep(max(0.0, due - anyio.current_time()))
        chunk = source.pcm[offset : offset + step]
        await output.send(
            OutputAudioRawFrame(
                audio=chunk, sample_rate=source.sample_rate, num_channels=source.num_channels
            )
        )
    # The end of the utterance: the output pads and sends the last partial chunk.
    await output.send(TTSStoppedFrame())


async def receive(frames: FrameInput, recording: Recording, heard: list[float]) -> None:
    async for frame in frames:
        heard[0] = anyio.current_time()
        if isinstance(frame, InputAudioRawFrame):
            if recording.sample_rate is None:
                recording.sample_rate = frame.sample_rate
                recording.num_channels = frame.num_channels
            recording.chunks.append(frame.audio)
        elif isinstance(frame, TextFrame):
            logger.info("text: %s", frame.text)
        elif isinstance(frame, InputTransportMessageFrame):
            logger.info("message: %s", frame.message)


def _describe_end(connection: ClientConnection) -> str:
    end = connection.disconnect
    if end is None:
        return "disconnected"
    reason = f" {end.reason!r}" if end.reason else ""
    return f"disconnected: {end.code}{reason} ({end.cause.value})"


async def connect(args: argparse.Namespace) -> None:
    source = WavSource.read(args.send) if args.send else None
    if args.chunk_ms <= 0 or args.linger < 0:
        raise CliError("--chunk-ms must be positive and --linger not negative")
    transport = WebsocketClientTransport(args.uri, make_client_params(args, source))
    recording = Recording()
    heard = [0.0]
    ended: list[str] = []
    problem: list[str] = []

    @transport.event_handler("on_connected")
    def on_connected(transport: WebsocketClientTransport, connection: ClientConnection) -> None:
        logger.info("connected to %s", args.uri)

    @transport.event_handler("on_disconnected")
    def on_disconnected(transport: WebsocketClientTransport, connection: ClientConnection) -> None:
        ended.append(_describe_end(connection))
        logger.info("%s", ended[-1])

    async def session(tg: anyio.abc.TaskGroup) -> None:
        received = anyio.Event()

        async def run_receive() -> None:
            await receive(transport.input(), recording, heard)
            received.set()

        tg.start_soon(run_receive)
        if source is not None:
            try:
                await send_audio(source, transport.output(), args.chunk_ms)
            except ConnectionClosed:
                with anyio.move_on_after(1.0):  # let the handler say how it ended
                    await received.wait()
                how = ended[-1] if ended else "disconnected"
                problem.append(f"{how} before the file was sent")
                tg.cancel_scope.cancel()
                return
            heard[0] = anyio.current_time()
            while not received.is_set():
                quiet_until = heard[0] + args.linger
                if anyio.current_time() >= quiet_until:
                    break
                with anyio.move_on_at(quiet_until):
                    await received.wait()
        else:
            await received.wait()
        tg.cancel_scope.cancel()

    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with transport, anyio.create_task_group() as tg:
            tg.start_soon(session, tg)
            async for signum in signals:
                logger.info("%s: closing", signal.Signals(signum).name)
                tg.cancel_scope.cancel()
                break
    if args.record:
        rate = source.sample_rate if source is not None else SAMPLE_RATE
        recording.write(args.record, rate)
        logger.info("recorded %d bytes to %s", sum(map(len, recording.chunks)), args.record)
    if problem:
        raise CliError(problem[0])


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr
    )
    if args.command == "connect":
        return _run_client(args)
    try:
        anyio.run(serve, args, backend=args.backend)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        print(f"wavewire: cannot listen on {args.host}:{args.port}: {reason}", file=sys.stderr)
        return 1
    except ValueError as exc:  # a bad setting, e.g. a negative session timeout
        print(f"wavewire: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # a second Ctrl-C during shutdown
        return 130
    return 0


def _run_client(args: argparse.Namespace) -> int:
    try:
        anyio.run(connect, args, backend=args.backend)
    except (HandshakeError, ConnectError, CliError) as exc:
        print(f"wavewire: {exc}", file=sys.stderr)
        return 1
    except ValueError as exc:  # a bad URI or header
        print(f"wavewire: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
