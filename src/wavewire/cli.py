"""``wavewire serve``: an echo voice server, for trying clients against wavewire.

Audio in (16 kHz mono) is sent back out, text and transport messages are echoed, lifecycle
events are logged one line each. Ctrl-C or SIGTERM shut it down cleanly (clients get 1001).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import sys
from collections.abc import Sequence

import anyio
import anyio.abc

from wavewire.adapters.errors import ConnectionClosed
from wavewire.core.frames import (
    Frame,
    InputAudioRawFrame,
    InputTransportMessageFrame,
    OutputAudioRawFrame,
    OutputTransportMessageFrame,
    TextFrame,
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

__all__ = ["echo_frame", "main"]

logger = logging.getLogger("wavewire.cli")

SAMPLE_RATE = 16000


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


async def echo(frames: FrameInput, output: FrameOutput) -> None:
    """Send back every frame of ``frames`` that has an echo, in order."""
    async for frame in frames:
        reply = echo_frame(frame)
        if reply is not None:
            await output.send(reply)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wavewire", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = commands.add_parser("serve", help="run an echo voice server")
    serve.add_argument("--host", default="localhost", help="address to bind (localhost)")
    serve.add_argument("--port", type=int, default=8765, help="port to listen on (8765)")
    serve.add_argument("--backend", choices=("asyncio", "trio"), default="asyncio")
    serve.add_argument("--serializer", choices=("protobuf", "raw"), default="protobuf")
    serve.add_argument(
        "--session-timeout", type=float, default=None, metavar="S", help="seconds (off)"
    )
    serve.add_argument("--policy", choices=("replace", "reject", "multi"), default="replace")
    return parser


def make_params(args: argparse.Namespace) -> WebsocketServerParams:
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
        session_timeout=args.session_timeout,
        client_policy=args.policy,
    )


def _describe(client: ClientHandle) -> str:
    remote = client.remote
    where = f"{remote[0]}:{remote[1]}" if isinstance(remote, tuple) else str(remote)
    return f"client {client.id} ({where} {client.path})"


async def serve(args: argparse.Namespace) -> None:
    transport = WebsocketServerTransport(make_params(args), host=args.host, port=args.port)
    echoes: anyio.abc.TaskGroup | None = None

    @transport.event_handler("on_websocket_ready")
    def on_ready(transport: WebsocketServerTransport) -> None:
        logger.info("listening on ws://%s:%d (policy %s)", args.host, transport.port, args.policy)

    @transport.event_handler("on_client_connected")
    def on_connected(transport: WebsocketServerTransport, client: ClientHandle) -> None:
        logger.info("%s connected", _describe(client))
        if echoes is not None and args.policy == "multi":
            echoes.start_soon(_echo_client, client)

    @transport.event_handler("on_client_disconnected")
    def on_disconnected(transport: WebsocketServerTransport, client: ClientHandle) -> None:
        end = client.disconnect
        detail = "" if end is None else f": {end.code} {end.reason!r} ({end.cause.value})"
        logger.info("%s disconnected%s", _describe(client), detail)

    @transport.event_handler("on_session_timeout")
    def on_timeout(transport: WebsocketServerTransport, client: ClientHandle) -> None:
        logger.info("%s session timeout", _describe(client))

    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with transport, anyio.create_task_group() as tg:
            echoes = tg
            if args.policy != "multi":
                tg.start_soon(echo, transport.input(), transport.output())
            async for signum in signals:
                logger.info("%s: shutting down", signal.Signals(signum).name)
                tg.cancel_scope.cancel()
                break
    logger.info("stopped")


async def _echo_client(client: ClientHandle) -> None:
    with contextlib.suppress(ConnectionClosed):
        await echo(client.input(), client.output())


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr
    )
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


if __name__ == "__main__":
    sys.exit(main())
