"""Drive wavewire's client through Autobahn|Testsuite's fuzzingserver.

    wstest -m fuzzingserver -s fuzzingserver.json      # listens on 127.0.0.1:9001, say
    python tests/conformance/autobahn_client.py --url ws://127.0.0.1:9001 --agent wavewire

Asks the fuzzing server for its case count (``/getCaseCount``), runs every case
(``/runCase?case=N&agent=NAME``) echoing each message verbatim (text as text, binary as binary:
``PassthroughSerializer``, as ``wavewire serve --echo-raw``), then has the server write its
report (``/updateReports?agent=NAME``). The verdicts are in the server's report;
``check_report.py`` reads them. ``--compression`` offers permessage-deflate (sections 12, 13).

What is under test is the core's ``ClientProtocol``: this script is its driver, a minimal one on
asyncio streams that follows docs/architecture.md's adapter rules (write each ``Transmit``, close
the socket when told, dispatch events, one timer at ``next_deadline()``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import time
import urllib.parse
from collections.abc import Sequence

from wavewire.cli import PassthroughSerializer, RawMessage
from wavewire.core.client import ClientProtocol
from wavewire.core.config import ClientConfig
from wavewire.core.events import FrameReceived
from wavewire.core.protocol.connection import State

#: Section 9 sends messages of up to 16 MiB.
MAX_MESSAGE_SIZE = 16 * 1024 * 1024
READ_SIZE = 256 * 1024


def client_config(compression: bool) -> ClientConfig:
    return ClientConfig(
        serializer=PassthroughSerializer(),
        max_message_size=MAX_MESSAGE_SIZE,
        compression=compression,
        # Unsolicited pings would show in the cases' traces; a case is short anyway.
        ping_interval=None,
        close_timeout=5.0,
    )


async def run_connection(url: str, config: ClientConfig, *, echo: bool) -> list[bytes | str]:
    """One connection, until it ends: every message received, each echoed if ``echo``."""
    loop = asyncio.get_running_loop()
    protocol = ClientProtocol(url, config, random_bytes=os.urandom, now=loop.time())
    reader, writer = await asyncio.open_connection(protocol.uri.host, protocol.uri.port)
    received: list[bytes | str] = []

    def flush() -> bool:
        """Write what the core has to send and dispatch its events; True: close the socket."""
        close = False
        while True:
            transmits = protocol.data_to_send()
            events = protocol.events_received()
            if not transmits and not events:
                return close
            for transmit in transmits:
                writer.write(transmit.data)
                close = close or transmit.close
            for event in events:
                if isinstance(event, FrameReceived) and isinstance(event.frame, RawMessage):
                    received.append(event.frame.data)
                    if echo and protocol.state is State.OPEN:
                        protocol.send_message(event.frame.data)

    try:
        while not flush():
            await writer.drain()
            deadline = protocol.next_deadline()
            timeout = None if deadline is None else max(0.0, deadline - loop.time())
            try:
                data = await asyncio.wait_for(reader.read(READ_SIZE), timeout)
            except asyncio.TimeoutError:
                protocol.handle_timer(loop.time())
                continue
            except OSError:
                protocol.connection_lost(loop.time())
                break
            if data:
                protocol.receive_data(data, loop.time())
            else:
                protocol.receive_eof(loop.time())
        with contextlib.suppress(OSError):
            await writer.drain()
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    return received


async def run(args: argparse.Namespace) -> None:
    base = args.url.rstrip("/")
    config = client_config(args.compression)
    agent = urllib.parse.quote(args.agent)
    count = int((await run_connection(f"{base}/getCaseCount", config, echo=False))[0])
    cases = range(1, count + 1) if not args.cases else args.cases
    print(f"running {len(cases)} of {count} cases as {args.agent!r}", flush=True)
    for case in cases:
        started = time.monotonic()
        url = f"{base}/runCase?case={case}&agent={agent}"
        try:
            await asyncio.wait_for(run_connection(url, config, echo=True), args.case_timeout)
        except (asyncio.TimeoutError, OSError) as exc:
            print(f"case {case}: {exc!r}", flush=True)
        elapsed = time.monotonic() - started
        if args.verbose or elapsed > 5:
            print(f"case {case}: {elapsed:.1f} s", flush=True)
    await run_connection(f"{base}/updateReports?agent={agent}", config, echo=False)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="the fuzzing server, ws://127.0.0.1:9001")
    parser.add_argument("--agent", required=True, help="name in the report")
    parser.add_argument("--compression", action="store_true", help="offer permessage-deflate")
    parser.add_argument(
        "--case", dest="cases", type=int, action="append", help="run only case N (repeatable)"
    )
    parser.add_argument(
        "--case-timeout", type=float, default=120.0, metavar="S", help="seconds per case (120)"
    )
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    asyncio.run(run(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
