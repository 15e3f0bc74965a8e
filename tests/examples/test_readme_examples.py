"""The README's server and client examples, run as written (port aside): they work together,
and Ctrl-C stops the server without a traceback (issue 13, points 3 and 6)."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
#: Bound of every wait in this test, in seconds.
LIMIT = 20.0


def readme_examples() -> tuple[str, str]:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", readme, re.S)
    [server] = [b for b in blocks if "WebsocketServerTransport(" in b]
    [client] = [b for b in blocks if "WebsocketClientTransport(" in b]
    return server, client


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_listening(port: int, process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + LIMIT  # a bound on the wait, not a timing assertion
    while time.monotonic() < deadline:
        assert process.poll() is None, "the server example exited"
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError("the server example never listened")


def test_readme_server_and_client_work_together(tmp_path: Path) -> None:
    server_code, client_code = readme_examples()
    assert "8765" in server_code and "8765" in client_code
    port = str(free_port())
    (tmp_path / "server.py").write_text(
        server_code.replace("8765", port).replace('"localhost"', '"127.0.0.1"'), encoding="utf-8"
    )
    (tmp_path / "client.py").write_text(
        client_code.replace("8765", port).replace("localhost", "127.0.0.1"), encoding="utf-8"
    )
    server = subprocess.Popen(
        [sys.executable, "-u", str(tmp_path / "server.py")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_listening(int(port), server)
        client = subprocess.run(
            [sys.executable, str(tmp_path / "client.py")],
            capture_output=True,
            text=True,
            timeout=LIMIT,
            check=False,
        )
        assert client.returncode == 0, client.stderr
        assert re.search(r"echo: TextFrame\(.*text='hello'", client.stdout), client.stdout
        server.send_signal(signal.SIGINT)  # what Ctrl-C sends
        out, err = server.communicate(timeout=LIMIT)
    finally:
        if server.poll() is None:
            server.kill()
            server.communicate()
    assert server.returncode == 0, err
    assert "Traceback" not in err, err
    assert "connected: " in out
