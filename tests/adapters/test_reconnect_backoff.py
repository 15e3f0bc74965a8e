"""Reconnect backoff against a server that accepts and closes at once (1013 from a ``reject``
server): the count goes on across such connections, and 1013 waits at least ``base``.

Without the fix every handshake reset the count: attempt 1, delay in [0, base], about four
reconnects a second forever. Only delays and attempt numbers (chosen by the policy with a fixed
random source) are checked, never how long anything took.
"""

from __future__ import annotations

import anyio
import pytest

from wavewire import ReconnectPolicy, WebsocketClientTransport, WebsocketServerTransport

from .client_support import ClientRecorder, client_params
from .support import LIMIT, make_params

pytestmark = pytest.mark.anyio


def test_1013_waits_at_least_base_and_only_a_stable_connection_resets_the_count() -> None:
    low = ReconnectPolicy(base=0.5, cap=30.0, random=lambda: 0.0)
    assert low.delay(1) == 0.0  # full jitter reaches zero...
    assert low.delay(1, after_code=1013) == 0.5  # ...but never after 1013
    assert low.delay(1, after_code=1006) == 0.0
    high = ReconnectPolicy(base=0.5, cap=4.0, random=lambda: 0.999)
    assert high.delay(4, after_code=1013) == pytest.approx(0.5 + 3.5 * 0.999)
    assert ReconnectPolicy(base=2.0, cap=1.0, random=lambda: 0.5).delay(1, after_code=1013) == 1.0
    policy = ReconnectPolicy(stable_after=10.0)
    assert policy.attempts_after(5, connected_for=9.9) == 5
    assert policy.attempts_after(5, connected_for=10.0) == 0
    with pytest.raises(ValueError, match="stable_after"):
        ReconnectPolicy(stable_after=0)


async def test_a_server_closing_with_1013_right_after_the_handshake_is_backed_off() -> None:
    server = WebsocketServerTransport(make_params(client_policy="reject"), "127.0.0.1", 0)
    policy = ReconnectPolicy(base=0.05, cap=0.4, max_attempts=None, random=lambda: 0.5)
    with anyio.fail_after(LIMIT):
        async with server:
            uri = f"ws://127.0.0.1:{server.port}/"
            async with WebsocketClientTransport(uri, client_params()):  # holds the one place
                rejected = WebsocketClientTransport(uri, client_params(reconnect=policy))
                events = ClientRecorder(rejected)
                async with rejected:
                    await events.wait("on_reconnecting", 4)
    attempts = events.args("on_reconnecting")[:4]
    # The count goes on across the accepted-then-closed connections: 1, 2, 3, 4, not 1, 1, 1.
    assert [n for n, _ in attempts] == [1, 2, 3, 4]
    # After 1013: base + (ceiling - base) x 0.5, ceilings 0.05, 0.1, 0.2, 0.4.
    assert [d for _, d in attempts] == pytest.approx([0.05, 0.075, 0.125, 0.225])
    closes = [c.disconnect.code for (c,) in events.args("on_disconnected")]
    assert closes[:4] == [1013] * 4
