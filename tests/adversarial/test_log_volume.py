"""Log amplification (issue 8, point 5): a flood of bad messages makes a bounded amount of log,
however many bytes it takes on the wire. Each client's bad messages are logged once, then
counted (``LogLimiter``); it was one WARNING per message (8 log bytes per wire byte)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import anyio
import pytest

from tests.adapters.faults import masked, open_session
from tests.adapters.support import make_params
from wavewire import InputAudioRawFrame
from wavewire.cli import echo
from wavewire.core.frames import Frame
from wavewire.transports.server import DriverName

from .support import multi_server

pytestmark = pytest.mark.anyio

CLIENTS = 4
BAD_MESSAGES = 3000
#: Not protobuf: every one is dropped with a MessageDropped event.
BAD = masked(0x2, b"\xff\xff")
#: Log bytes allowed per wire byte received (it was 8).
RATIO = 0.01


async def test_a_flood_of_bad_messages_makes_bounded_log(
    driver: DriverName, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, "wavewire")
    flood = BAD * BAD_MESSAGES + masked(0x9, b"sync-ping")

    async def one_client(port: int) -> None:
        async with open_session(port) as (stream, seen):
            await stream.send(flood)
            while b"sync-ping" not in seen:  # the pong: the server has read it all
                seen += await stream.receive()

    params = make_params(client_policy="multi")
    with anyio.fail_after(20):
        async with (
            multi_server(params, driver=driver) as transport,
            anyio.create_task_group() as tg,
        ):
            for _ in range(CLIENTS):
                tg.start_soon(one_client, transport.port)
    wire = CLIENTS * len(flood)
    dropped = [r for r in caplog.records if "message dropped" in r.getMessage()]
    log = sum(len(r.getMessage()) for r in caplog.records)
    assert 1 <= len(dropped) <= 2 * CLIENTS  # the first per client, and its final count
    assert log <= RATIO * wire, f"{log} bytes of log for {wire} bytes received"


@pytest.mark.parametrize("pair", [("anyio", "asyncio")], ids=["no-server"])
async def test_echo_warns_once_per_client_about_audio_it_cannot_send(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """``wavewire serve``'s echo: audio at another rate is refused by the output; the warning
    comes once per client (issue 13: "once per client, then counted")."""
    caplog.set_level(logging.WARNING, "wavewire")

    class RefusingOutput:
        async def send(self, frame: Frame) -> None:
            raise ValueError("audio at 24000 Hz cannot be sent on a 16000 Hz output")

    async def frames(count: int) -> AsyncIterator[Frame]:
        for _ in range(count):
            yield InputAudioRawFrame(audio=b"\0\0", sample_rate=24000)

    for client in ("client 1", "client 2"):

        def peer(name: str = client) -> object:
            return name

        await echo(frames(500), RefusingOutput(), peer)  # type: ignore[arg-type]
    warned = [r.getMessage() for r in caplog.records if "not echoed" in r.getMessage()]
    assert [line.split(":")[0] for line in warned] == ["client 1", "client 2"]
