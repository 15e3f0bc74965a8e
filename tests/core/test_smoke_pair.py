from __future__ import annotations

from wavewire.core.events import ClientConnected, Connected, FrameReceived
from wavewire.core.frames import TextFrame

from .pair import Network


def test_client_and_server_exchange_a_frame() -> None:
    net = Network()
    link = net.connect()
    assert [type(e) for e in net.server_events] == [ClientConnected]
    assert [type(e) for e in link.client_events] == [Connected]
    link.client.send_frame(TextFrame(text="hello"), net.clock.now)
    net.pump()
    received = [e for e in net.server_events if isinstance(e, FrameReceived)]
    assert len(received) == 1
    frame = received[0].frame
    assert isinstance(frame, TextFrame)
    assert frame.text == "hello"
