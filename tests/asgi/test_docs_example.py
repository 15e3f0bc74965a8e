"""docs/asgi.md's FastAPI example runs as written: the code block, saved as ``bot.py``, served by
``uvicorn`` in a subprocess with the flags the page gives, echoes text and audio."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import anyio
import pytest

from tests.adapters.client_support import environment, free_port, read_until
from tests.adapters.support import LIMIT
from tests.adapters.wsclient import connect
from wavewire import InputAudioRawFrame, OutputAudioRawFrame, TextFrame

DOC = Path(__file__).resolve().parents[2] / "docs" / "asgi.md"
BEGIN, END = "<!-- BEGIN FASTAPI EXAMPLE -->", "<!-- END FASTAPI EXAMPLE -->"


def example() -> str:
    section = DOC.read_text(encoding="utf-8").split(BEGIN, 1)[1].split(END, 1)[0]
    code = section.strip()
    assert code.startswith("```python\n") and code.endswith("```"), code[:40]
    return code.removeprefix("```python\n").removesuffix("```")


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_the_fastapi_example_runs_as_written(tmp_path: Path) -> None:
    (tmp_path / "bot.py").write_text(example(), encoding="utf-8")
    port = free_port()
    command = [sys.executable, "-m", "uvicorn", "bot:app", "--app-dir", str(tmp_path)]
    command += ["--host", "127.0.0.1", "--port", str(port), "--ws", "wsproto"]
    command += ["--ws-per-message-deflate", "false", "--ws-max-size", "1048576"]
    with anyio.fail_after(LIMIT * 2):
        async with await anyio.open_process(command, env=environment()) as process:
            assert process.stderr is not None
            await read_until(process.stderr, b"Uvicorn running on")
            async with connect(port, "/ws") as client:
                await client.send(TextFrame(text="hello"))
                assert await client.next_frame() == TextFrame(text="hello")
                pcm = b"\x00\x01" * 640  # one whole 40 ms chunk at 16 kHz
                await client.send(OutputAudioRawFrame(audio=pcm, sample_rate=16000))
                echoed = await client.next_frame()
                assert isinstance(echoed, InputAudioRawFrame) and echoed.audio == pcm
            process.send_signal(signal.SIGINT)
            await process.wait()
            assert process.stdout is not None
            printed = await read_until(process.stdout, b"connected: 1 /ws")
            assert b"connected: 1 /ws" in printed
