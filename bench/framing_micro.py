"""The core's frame layer alone (``core/framing.py`` on wsproto): µs per message, no I/O.

    python bench/framing_micro.py

A server-side ``WsConnection`` is fed masked binary frames (640 B and 64 KiB) one per
``receive_data`` call (a round trip) and 33 per call (a pipelined read), every event is taken,
and an unmasked echo is serialized for each message, as ``core/protocol/connection.py`` does:
whole frames through the shortcut (``received_events``, ``data_frame``, the replies of one read
joined once), or with ``--wsproto`` through wsproto's ``events()`` and ``send()`` only. Best of
``--repeat`` timings; a number for comparing two versions of ``framing.py`` on one machine, not
a figure of the whole server (see bench/peers.py for that).
"""

from __future__ import annotations

import argparse
import sys
import time
import timeit
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from wsproto.events import BytesMessage
from wsproto.frame_protocol import Opcode

from wavewire.core.protocol import framing
from wavewire.core.protocol.framing import WsConnection, encode_frame

MASK = b"\x37\xfa\x21\x3d"


def per_message_us(size: int, batch: int, messages: int, repeat: int, wsproto: bool) -> float:
    payload = (bytes(range(256)) * (size // 256 + 1))[:size]
    chunk = encode_frame(Opcode.BINARY, payload, mask_key=MASK) * batch
    calls = messages // batch

    def run_wsproto() -> None:
        ws = WsConnection(client=False, max_message_size=1 << 20, max_fragments=64)
        for _ in range(calls):
            ws.receive_data(chunk)
            out = bytearray()
            for event in ws.events():
                assert isinstance(event, BytesMessage)
                out += ws.send(BytesMessage(data=event.data))
            bytes(out)

    def run_shortcut() -> None:
        ws = WsConnection(client=False, max_message_size=1 << 20, max_fragments=64)
        for _ in range(calls):
            ws.receive_data(chunk)
            out: list[bytes] = []
            for event in ws.received_events():
                assert isinstance(event, bytes)
                out.extend(ws.data_frame(event))
            b"".join(out)

    run = run_wsproto if wsproto else run_shortcut

    # CPU time of this process: other work on the machine does not count.
    best = min(timeit.repeat(run, number=1, repeat=repeat, timer=time.process_time))
    return best / (calls * batch) * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument(
        "--pure", action="store_true", help="unmask in pure Python even if a C masker is installed"
    )
    parser.add_argument(
        "--no-vector",
        action="store_true",
        help="whole frames unmasked by wsaccel, not by websockets' apply_mask",
    )
    parser.add_argument(
        "--wsproto", action="store_true", help="wsproto's events() and send(), no shortcut"
    )
    args = parser.parse_args()
    if args.pure:
        framing._C_MASKER = None
    if args.pure or args.no_vector:
        framing._VECTOR_MASK = None
    print(
        "unmasking:",
        "wsaccel (C)" if framing._C_MASKER is not None else "pure Python",
        "| whole frames:",
        "websockets' apply_mask (C)" if framing._VECTOR_MASK is not None else "as above",
    )
    print("path:", "wsproto" if args.wsproto else "shortcut for whole frames")
    for size, label in ((640, "640 B"), (65536, "64 KiB")):
        messages = 6600 if size == 640 else 330
        for batch, how in ((1, "one per read"), (33, "33 per read")):
            us = per_message_us(size, batch, messages, args.repeat, args.wsproto)
            print(f"{label:7} {how:13} {us:8.2f} µs per message")
    return 0


if __name__ == "__main__":
    sys.exit(main())
