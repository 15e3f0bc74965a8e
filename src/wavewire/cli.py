"""``wavewire serve``: an echo voice server, for trying clients against wavewire.

Audio in (16 kHz mono) is sent back out, text and transport messages are echoed (a message
``{"type": "interrupt"}`` is answered with an ``InterruptionFrame`` instead, ``{"type": "ping"}``
ahead of queued audio), lifecycle events are logged one line each. Plain HTTP ``GET /`` gets
the browser demo page (``wavewire.demo``); browsers may connect only from its origins and those
given with ``--allow-origin``. SIGTERM drains (new clients get 503, sessions run until they end
or ``--drain-timeout``, then 1012 "service restart"), then exits 0; Ctrl-C (SIGINT), or a
second signal during a drain, shuts down at once (clients get 1001). ``GET /healthz`` and
``GET /readyz`` answer health checks; ``--session-key`` gives each key its own session.
``--echo-raw`` echoes every WebSocket message verbatim instead (text as text, binary as binary,
no serializer), to every client at once: the mode that conformance suites (Autobahn) test.

``wavewire connect URI``: a client. ``--send FILE.wav`` streams a 16-bit PCM WAV file to the
server in real time, ``--record OUT.wav`` saves the audio that comes back. It exits once the
file is sent and the server has been quiet for ``--linger`` seconds, or on Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import signal
import ssl
import sys
import wave
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import anyio
import anyio.abc

from wavewire.adapters.anyio_client import ConnectError
from wavewire.adapters.errors import ConnectionClosed
from wavewire.adapters.ratelimit import LogLimiter
from wavewire.core.admission import Accept, HandshakeRequest, Reject, SessionKey
from wavewire.core.config import DEFAULT_MAX_MESSAGE_SIZE
from wavewire.core.errors import HandshakeError
from wavewire.core.frames import (
    Frame,
    InputAudioRawFrame,
    InputTransportMessageFrame,
    InterruptionFrame,
    OutputAudioRawFrame,
    OutputTransportMessageFrame,
    OutputTransportMessageUrgentFrame,
    TextFrame,
    TTSStoppedFrame,
)
from wavewire.core.serializers import ProtobufFrameSerializer, RawFrameSerializer
from wavewire.core.serializers.base import FrameSerializer
from wavewire.demo import demo_http_handler, demo_origins, origin_check
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
        kind = frame.message.get("type") if isinstance(frame.message, dict) else None
        if kind == "interrupt":  # the demo's Interrupt button: stop the audio being echoed
            return InterruptionFrame()
        if kind == "ping":  # a round-trip probe: ahead of queued audio, not behind it
            return OutputTransportMessageUrgentFrame(message=frame.message)
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


def port_number(text: str) -> int:
    """An argparse type: a TCP port, 0-65535 (0: any free port)."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port must be 0-65535, got {port}")
    return port


BACKEND_HELP = "event loop: asyncio (default) or trio (needs wavewire[trio])"
SERIALIZER_HELP = (
    "wire format: protobuf (Pipecat's frames.proto, default) or raw (PCM16 audio as binary "
    "messages, other frames as JSON text); client and server must use the same"
)


def session_key_spec(text: str) -> SessionKey:
    """``--session-key``: ``path``, ``path:INDEX``, ``query:NAME`` or ``header:NAME``."""
    source, _, name = text.partition(":")
    try:
        if source == "path":
            return SessionKey("path", segment=int(name) if name else -1)
        if source == "query":
            return SessionKey("query", name)
        if source == "header":
            return SessionKey("header", name)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"bad session key {text!r}: {exc}") from None
    raise argparse.ArgumentTypeError(
        f"bad session key {text!r}: use path[:INDEX], query:NAME or header:NAME"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wavewire",
        description="Real-time audio over WebSockets: an echo voice server and a WAV client.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = commands.add_parser(
        "serve",
        help="run an echo voice server (and its browser demo page on GET /)",
        description="An echo voice server: 16 kHz mono audio, text and transport messages are "
        "sent back; http://HOST:PORT/ serves a browser demo page.",
    )
    serve.set_defaults(command_parser=serve)
    serve.add_argument("--host", default="localhost", help="address to bind (localhost)")
    serve.add_argument("--port", type=port_number, default=8765, help="port to listen on (8765)")
    serve.add_argument(
        "--backend", choices=("asyncio", "trio"), default="asyncio", help=BACKEND_HELP
    )
    serve.add_argument(
        "--driver",
        choices=("anyio", "asyncio"),
        default="anyio",
        help="anyio: anyio streams, any backend (default); asyncio: asyncio's own protocols "
        "and transports, --backend asyncio only",
    )
    serve.add_argument(
        "--serializer", choices=("protobuf", "raw"), default="protobuf", help=SERIALIZER_HELP
    )
    serve.add_argument(
        "--session-timeout", type=float, default=None, metavar="S", help="seconds (off)"
    )
    serve.add_argument(
        "--policy",
        choices=("replace", "reject", "multi"),
        default="replace",
        help="when a second client connects: replace the first (default, it gets 1000), "
        "reject the newcomer (1013), or multi (serve both)",
    )
    serve.add_argument(
        "--certfile", metavar="PEM", help="PEM certificate chain: serve wss:// (with --keyfile)"
    )
    serve.add_argument("--keyfile", metavar="PEM", help="PEM private key for --certfile")
    serve.add_argument(
        "--allow-origin",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="also accept browsers from this origin, e.g. https://app.example (repeatable; "
        "'*': any). Default: only the demo page's own origin, and clients sending no Origin",
    )
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
    serve.add_argument(
        "--drain-timeout",
        type=float,
        default=30.0,
        metavar="S",
        help="on SIGTERM, seconds sessions may run before they are closed with 1012 (30)",
    )
    serve.add_argument(
        "--max-sessions",
        type=int,
        default=None,
        metavar="N",
        help="most sessions at once: /readyz says 503 at N, newcomers get 1013 (no cap)",
    )
    serve.add_argument(
        "--session-key",
        type=session_key_spec,
        default=None,
        metavar="SPEC",
        help="read a session key from each request: path[:INDEX] (a path segment, default "
        "the last), query:NAME or header:NAME; --policy then applies per key (off)",
    )
    serve.add_argument(
        "--metrics",
        action="store_true",
        help="serve Prometheus metrics on GET /metrics (the metrics extra) (off)",
    )
    serve.add_argument(
        "--asgi",
        action="store_true",
        help="serve under uvicorn through wavewire.asgi (the asgi extra; --backend asyncio)",
    )
    connect = commands.add_parser(
        "connect",
        help="stream a WAV file to a server, record replies",
        description="A client: streams a 16-bit PCM WAV file in real time, records what comes "
        "back. Exits 1 with one line if the server sent no audio back for the audio sent.",
    )
    connect.set_defaults(command_parser=connect)
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
    connect.add_argument(
        "--serializer", choices=("protobuf", "raw"), default="protobuf", help=SERIALIZER_HELP
    )
    connect.add_argument(
        "--backend", choices=("asyncio", "trio"), default="asyncio", help=BACKEND_HELP
    )
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


def make_params(
    args: argparse.Namespace, listening_port: Callable[[], int] | None = None
) -> WebsocketServerParams:
    """The server's parameters; ``listening_port`` gives the bound port (for ``--port 0``)."""
    common: dict[str, Any] = {
        "session_timeout": args.session_timeout,
        "drain_timeout": args.drain_timeout,
        "max_sessions": args.max_sessions,
        "session_key": args.session_key,
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
        http_handler=demo_http_handler(serializer=args.serializer, sample_rate=SAMPLE_RATE),
        handshake_hook=_origin_hook(args, listening_port or (lambda: args.port)),
        **common,
    )


def _origin_hook(
    args: argparse.Namespace, listening_port: Callable[[], int]
) -> Callable[[HandshakeRequest], Accept | Reject]:
    """Browsers get in from the demo page's own origins and from ``--allow-origin``."""
    extra = {origin.lower().rstrip("/") for origin in args.allow_origin}
    tls = args.certfile is not None
    return origin_check(
        lambda: demo_origins(args.host, listening_port(), tls=tls) | extra,
        any_origin="*" in extra,
    )


def _describe(client: ClientHandle) -> str:
    remote = client.remote
    where = f"{remote[0]}:{remote[1]}" if isinstance(remote, tuple) else str(remote)
    return f"client {client.id} ({where} {client.path})"


async def serve(args: argparse.Namespace) -> None:
    if args.driver == "asyncio" and args.backend != "asyncio":
        raise ValueError("--driver asyncio runs only with --backend asyncio")
    bound_port = [args.port]
    params = make_params(args, listening_port=lambda: bound_port[0])
    metrics = None
    if args.metrics:
        try:
            from wavewire.metrics import ServerMetrics  # loaded only for --metrics
        except ImportError:
            raise ValueError(
                "--metrics needs prometheus-client: pip install 'wavewire[metrics]'"
            ) from None
        metrics = ServerMetrics()
        params = dataclasses.replace(
            params,
            event_observer=metrics.observe,
            http_handler=metrics.http_handler(fallback=params.http_handler),
        )
    policy = params.client_policy
    # One echo per client when several sessions run at once (multi, or one per session key).
    per_client = policy == "multi" or params.session_key is not None
    if args.asgi:
        if args.backend != "asyncio":
            raise ValueError("--asgi runs only with --backend asyncio (uvicorn)")
        from wavewire.asgi import AsgiServerTransport  # loaded only for --asgi

        transport: WebsocketServerTransport = AsgiServerTransport(params)
    else:
        transport = WebsocketServerTransport(
            params, host=args.host, port=args.port, driver=args.driver
        )
    if metrics is not None:
        metrics.bind(transport)
    echoes: anyio.abc.TaskGroup | None = None

    @transport.event_handler("on_websocket_ready")
    def on_ready(transport: WebsocketServerTransport) -> None:
        bound_port[0] = transport.port
        mode = " echo-raw" if args.echo_raw else ""
        port = args.port if args.asgi else transport.port  # under uvicorn, uvicorn binds
        logger.info(
            "listening on %s://%s:%d (policy %s%s)",
            "ws" if args.certfile is None else "wss",
            args.host,
            port,
            policy,
            mode,
        )
        if not args.echo_raw:
            scheme = "http" if args.certfile is None else "https"
            logger.info("browser demo: %s://%s:%d/", scheme, args.host, port)

    @transport.event_handler("on_client_connected")
    def on_connected(transport: WebsocketServerTransport, client: ClientHandle) -> None:
        if logger.isEnabledFor(logging.INFO):  # no description built for a silent logger
            logger.info("%s connected", _describe(client))
        if echoes is not None and per_client:
            echoes.start_soon(_echo_client, client, echo_raw if args.echo_raw else echo)

    @transport.event_handler("on_client_disconnected")
    def on_disconnected(transport: WebsocketServerTransport, client: ClientHandle) -> None:
        if logger.isEnabledFor(logging.INFO):
            end = client.disconnect
            detail = "" if end is None else f": {end.code} {end.reason!r} ({end.cause.value})"
            logger.info("%s disconnected%s", _describe(client), detail)
        who = f"client {client.id}"
        _echo_log.forget(("not echoed", who), logging.WARNING, who)

    @transport.event_handler("on_session_timeout")
    def on_timeout(transport: WebsocketServerTransport, client: ClientHandle) -> None:
        if logger.isEnabledFor(logging.INFO):
            logger.info("%s session timeout", _describe(client))

    if args.asgi:
        from wavewire.asgi import AsgiServerTransport, serve_with_uvicorn

        async def run_echo() -> None:
            nonlocal echoes
            async with anyio.create_task_group() as tg:
                echoes = tg
                if not per_client:
                    tg.start_soon(echo, transport.input(), transport.output())
                await anyio.sleep_forever()

        assert isinstance(transport, AsgiServerTransport)
        # uvicorn handles SIGINT/SIGTERM: it closes the connections, then the lifespan.
        await serve_with_uvicorn(
            transport,
            args.host,
            args.port,
            main=run_echo,
            ssl_certfile=args.certfile,
            ssl_keyfile=args.keyfile,
        )
        logger.info("stopped")
        return
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with transport, anyio.create_task_group() as tg:
            echoes = tg
            if not per_client:

                def peer() -> object:
                    current = transport.client  # whose frames transport.input() gives now
                    return f"client {current.id}" if current is not None else "client"

                tg.start_soon(echo, transport.input(), transport.output(), peer)
            draining = False
            async for signum in signals:
                if signum == signal.SIGTERM and not draining:
                    draining = True
                    logger.info("SIGTERM: draining (at most %s s)", args.drain_timeout)
                    tg.start_soon(_drain_then_stop, transport, tg.cancel_scope)
                    continue
                logger.info("%s: shutting down", signal.Signals(signum).name)
                tg.cancel_scope.cancel()
                break
    logger.info("stopped")


async def _drain_then_stop(transport: WebsocketServerTransport, scope: anyio.CancelScope) -> None:
    await transport.drain()
    logger.info("drained: shutting down")
    scope.cancel()


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

    @staticmethod
    def create(path: str) -> BinaryIO:
        """Open ``path`` for writing now, so that a bad path fails before anything is sent."""
        try:
            return open(path, "wb")  # closed by write()
        except OSError as exc:
            raise CliError(f"cannot write {path}: {exc.strerror or exc}") from None

    def write(self, file: BinaryIO, default_rate: int) -> None:
        path = file.name
        try:
            with file, wave.open(file, "wb") as out:
                out.setnchannels(self.num_channels)
                out.setsampwidth(2)
                out.setframerate(self.sample_rate or default_rate)
                out.writeframes(b"".join(self.chunks))
        except OSError as exc:
            raise CliError(f"cannot write {path}: {exc.strerror or exc}") from None

    @property
    def size(self) -> int:
        return sum(map(len, self.chunks))


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
    record_file = Recording.create(args.record) if args.record else None
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
    if record_file is not None:
        rate = source.sample_rate if source is not None else SAMPLE_RATE
        recording.write(record_file, rate)
        logger.info("recorded %d bytes to %s", recording.size, args.record)
    if problem:
        raise CliError(problem[0])
    if source is not None and source.pcm and recording.size == 0:
        raise CliError(nothing_came_back(source, args.serializer))


def nothing_came_back(source: WavSource, serializer: str) -> str:
    """The one line for a client that sent audio and got none back."""
    seconds = len(source.pcm) / (2 * source.num_channels * source.sample_rate)
    return (
        f"no audio came back for the {seconds:.1f} s sent ({source.sample_rate} Hz,"
        f" {source.num_channels} channel(s), --serializer {serializer}): the server ignored it;"
        " wavewire serve echoes mono audio in its own --serializer (see its log)"
    )


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line; an unknown option is reported with its command's usage."""
    args, unknown = build_parser().parse_known_args(argv)
    if unknown:
        args.command_parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    return args


def check_backend(backend: str) -> None:
    """Fail with one line, before starting, if the chosen event loop is not installed."""
    if backend == "trio":
        try:
            import trio  # noqa: F401
        except ImportError:
            raise CliError(
                "--backend trio needs trio: python3 -m pip install 'wavewire[trio]'"
            ) from None


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr
    )
    try:
        check_backend(args.backend)
    except CliError as exc:
        print(f"wavewire: {exc}", file=sys.stderr)
        return 1
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
