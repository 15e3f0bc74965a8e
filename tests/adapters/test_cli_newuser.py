"""What a new user of ``wavewire serve``/``connect`` tripped on (issue 13, points 2, 3 and 7):
each failure is one line and an exit status, never a traceback or a silent success."""

from __future__ import annotations

import importlib.metadata
import math
import re
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import wave
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from wavewire.adapters.anyio_client import _reason
from wavewire.cli import build_parser

from .support import LIMIT
from .test_cli import command, environment, free_port

ROOT = Path(__file__).resolve().parents[2]


def write_wav(path: Path, *, rate: int = 16000, channels: int = 1, seconds: float = 0.2) -> str:
    frames = int(rate * seconds)
    samples = (int(8000 * math.sin(i / 8)) for i in range(frames))
    with wave.open(str(path), "wb") as out:
        out.setnchannels(channels)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(b"".join(struct.pack("<h", s) * channels for s in samples))
    return str(path)


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "wavewire", *args],
        env=env or environment(),
        capture_output=True,
        text=True,
        timeout=LIMIT * 4,
        check=False,
    )


@contextmanager
def echo_server(port: int | None = None, *options: str) -> Iterator[int]:
    """``wavewire serve`` in a child process; yields its port once it listens. Its log goes to
    a file (a pipe nobody reads could fill and stall it), polled for a bounded time."""
    port = free_port() if port is None else port
    with tempfile.TemporaryDirectory() as folder:
        log = Path(folder) / "serve.log"
        with log.open("wb") as stderr:
            process = subprocess.Popen(
                command("--port", str(port), *options), env=environment(), stderr=stderr
            )
        try:
            deadline = time.monotonic() + LIMIT * 4  # a bound on the wait, not an assertion
            while b"listening on" not in log.read_bytes():
                if process.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"wavewire serve did not start: {log.read_text()}")
                time.sleep(0.02)
            yield port
        finally:
            # SIGINT stops at once; SIGTERM would drain clients still connected (a browser tab)
            # for up to --drain-timeout.
            process.send_signal(signal.SIGINT)
            process.wait(timeout=LIMIT)


def connect(port: int, wav: str, *options: str) -> subprocess.CompletedProcess[str]:
    return run("connect", f"ws://127.0.0.1:{port}/", "--send", wav, "--linger", "0.3", *options)


def last_line(result: subprocess.CompletedProcess[str]) -> str:
    return result.stderr.strip().splitlines()[-1]


# --- point 2: nothing usable came back ---------------------------------------------------------


def test_connect_fails_with_one_line_when_no_audio_comes_back(tmp_path: Path) -> None:
    mono = write_wav(tmp_path / "mono.wav")
    stereo = write_wav(tmp_path / "stereo.wav", channels=2)
    record = tmp_path / "out.wav"
    with echo_server() as port:
        good = connect(port, mono, "--record", str(record))
        assert good.returncode == 0, good.stderr
        with wave.open(str(record)) as recorded:
            assert recorded.getnframes() > 0

        wrong_channels = connect(port, stereo)
        wrong_format = connect(port, mono, "--serializer", "raw")
    for result, detail in ((wrong_channels, "2 channel(s)"), (wrong_format, "--serializer raw")):
        assert result.returncode == 1
        assert "Traceback" not in result.stderr
        line = last_line(result)
        assert line.startswith("wavewire: no audio came back for the 0.2 s sent")
        assert detail in line


# --- point 3: one line, not a traceback --------------------------------------------------------


def test_port_out_of_range_is_a_usage_error() -> None:
    result = run("serve", "--port", "99999")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert (
        last_line(result)
        == "wavewire serve: error: argument --port: port must be 0-65535, got 99999"
    )


def test_trio_backend_without_trio_says_which_extra(tmp_path: Path) -> None:
    # A trio that cannot be imported, first on the path: as on a machine without it.
    (tmp_path / "trio").mkdir()
    (tmp_path / "trio" / "__init__.py").write_text('raise ImportError("No module named trio")\n')
    env = environment()
    env["PYTHONPATH"] = f"{tmp_path}:{env['PYTHONPATH']}"
    for args in (
        ("serve", "--port", "0", "--backend", "trio"),
        ("connect", "ws://127.0.0.1:1/", "--backend", "trio"),
    ):
        result = run(*args, env=env)
        assert result.returncode == 1
        assert result.stderr.strip().splitlines() == [
            "wavewire: --backend trio needs trio: python3 -m pip install 'wavewire[trio]'"
        ]


def test_record_into_a_missing_directory_fails_before_connecting(tmp_path: Path) -> None:
    wav = write_wav(tmp_path / "in.wav")
    missing = tmp_path / "no-such-dir" / "out.wav"
    # Nothing listens on this port: the path must be refused before any connect attempt.
    result = run(
        "connect", f"ws://127.0.0.1:{free_port()}/", "--send", wav, "--record", str(missing)
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"wavewire: cannot write {missing}: No such file or directory"
    ]


def test_unknown_host_says_the_name_did_not_resolve() -> None:
    # What getaddrinfo raises for a name that does not resolve (no DNS query made here).
    error = socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    assert _reason(error) == "the host name did not resolve (Name or service not known)"
    refused = ConnectionRefusedError(111, "Connect call failed ('127.0.0.1', 1)")
    assert _reason(refused) == "Connection refused"


# --- point 7: help, usage, metadata, README -----------------------------------------------------


def subparsers() -> dict[str, object]:
    parser = build_parser()
    [action] = [a for a in parser._actions if a.dest == "command"]
    assert isinstance(action.choices, dict)
    return action.choices


def test_help_has_no_rest_markup_and_every_option_has_help() -> None:
    parser = build_parser()
    texts = [parser.format_help()]
    for name, sub in subparsers().items():
        assert isinstance(sub, type(parser))
        texts.append(sub.format_help())
        for action in sub._actions:
            assert action.help, f"wavewire {name} {action.option_strings or action.dest}"
    for text in texts:
        assert "``" not in text


def test_unknown_option_shows_its_commands_usage() -> None:
    result = run("serve", "--bogus")
    assert result.returncode == 2
    assert result.stderr.startswith("usage: wavewire serve ")
    assert last_line(result) == "wavewire serve: error: unrecognized arguments: --bogus"


def test_license_metadata() -> None:
    metadata = importlib.metadata.metadata("wavewire")
    assert metadata["License-Expression"] == "BSD-3-Clause"
    assert metadata.get_all("License-File") == ["LICENSE"]
    assert "BSD 3-Clause License" in (ROOT / "LICENSE").read_text(encoding="utf-8")


def test_readme_flag_table_lists_every_serve_option() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    table = {
        flag
        for row in re.findall(r"^\| (`--.*?) \|", readme, re.M)
        for flag in re.findall(r"`(--[a-z-]+)", row)
    }
    serve = subparsers()["serve"]
    options = {
        option
        for action in serve._actions  # type: ignore[attr-defined]
        for option in action.option_strings
        if option.startswith("--") and option != "--help"
    }
    assert options == table


def test_every_bench_script_is_mentioned_in_the_readme_or_docs() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8") + "".join(
        p.read_text(encoding="utf-8") for p in (ROOT / "docs").glob("*.md")
    )
    scripts = sorted(p.name for p in (ROOT / "bench").glob("*.py"))
    assert scripts
    for name in scripts:
        assert f"bench/{name}" in text, name


# --- point 4: pacing on the synthetic clock, not the wall clock ---------------------------------


def test_connect_sends_on_a_real_time_schedule() -> None:
    """``wavewire connect --send`` streams in real time: chunk k leaves at k x chunk_ms, on
    trio's virtual clock (autojumping: no real waiting, exact times)."""
    import anyio
    import trio.testing

    from wavewire.cli import WavSource, send_audio
    from wavewire.core.frames import OutputAudioRawFrame, TTSStoppedFrame

    sent: list[tuple[float, object]] = []

    class Output:
        async def send(self, frame: object) -> None:
            sent.append((anyio.current_time(), frame))
            await anyio.sleep(0.003)  # a send that takes time must not shift the schedule

    source = WavSource(16000, 1, b"\x01\x00" * 1600)  # 0.1 s
    clock = trio.testing.MockClock(autojump_threshold=0)

    async def main() -> float:
        start = anyio.current_time()
        await send_audio(source, Output(), chunk_ms=20)  # type: ignore[arg-type]
        return start

    start = anyio.run(main, backend="trio", backend_options={"clock": clock})
    audio = [(t, f) for t, f in sent if isinstance(f, OutputAudioRawFrame)]
    assert [round(t - start, 9) for t, _ in audio] == [0.0, 0.02, 0.04, 0.06, 0.08]
    assert b"".join(f.audio for _, f in audio) == source.pcm
    assert isinstance(sent[-1][1], TTSStoppedFrame)
