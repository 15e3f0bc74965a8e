"""Run Autobahn|Testsuite against wavewire, both roles, all on 127.0.0.1, bounded in time.

    python tests/conformance/run_autobahn.py [--wstest PATH] [--drivers anyio,asyncio]
        [--roles server,client] [--cases 1.*,12.1.*] [--out DIR] [--timeout S]

* server role, per driver: ``wavewire serve --echo-raw --compression --max-message-size 16 MiB
  --driver D`` on a free port, and ``wstest -m fuzzingclient`` against it;
* client role: ``wstest -m fuzzingserver`` on a free port, and ``autobahn_client.py
  --compression`` against it.

Each report is checked with ``check_report.py`` (every case OK or INFORMATIONAL); the exit status
is 1 if any report fails or any step runs out of time. ``wstest`` is Autobahn|Testsuite 0.8.2,
a Python 2.7 program (``tox -e autobahn`` installs it); by default the one in pyenv's 2.7.18.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))  # the repository, for tests.conformance

from tests.conformance.check_report import failures, load, summary_table  # noqa: E402

MAX_MESSAGE_SIZE = 16 * 1024 * 1024
HOST = "127.0.0.1"


def default_wstest() -> str:
    found = shutil.which("wstest")
    if found:
        return found
    root = subprocess.run(["pyenv", "root"], capture_output=True, text=True, check=False)
    return str(Path(root.stdout.strip() or "~/.pyenv") / "versions/2.7.18/bin/wstest")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_port(port: int, process: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args!r} exited with {process.returncode}")
        with socket.socket() as sock:
            if sock.connect_ex((HOST, port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {HOST}:{port} after {timeout} s")


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def check(index: Path, agent: str, title: str, seconds: float) -> bool:
    try:
        results = load(json.loads(index.read_text(encoding="utf-8")), agent)
    except (OSError, ValueError) as exc:
        print(f"{title}: no report ({exc})")
        return False
    failed = failures(results)
    print(f"\n### {title}: {len(results) - len(failed)}/{len(results)} passed in {seconds:.0f} s\n")
    print(summary_table(results))
    for result in failed:
        print(f"  FAILED {result.case}: {result.behavior} / {result.behavior_close}")
    return bool(results) and not failed


def run_server_role(args: argparse.Namespace, driver: str, out: Path) -> bool:
    port = free_port()
    agent = f"wavewire-serve-{driver}"
    command = [
        sys.executable, "-m", "wavewire", "serve", "--echo-raw", "--compression",
        "--host", HOST, "--port", str(port), "--driver", driver,
        "--max-message-size", str(MAX_MESSAGE_SIZE),
    ]  # fmt: skip
    outdir = out / f"server-{driver}"
    spec = {
        "outdir": str(outdir),
        "servers": [{"agent": agent, "url": f"ws://{HOST}:{port}"}],
        "cases": args.cases,
        "exclude-cases": [],
        "exclude-agent-cases": {},
        "options": {"failByDrop": True},
    }
    spec_path = out / f"fuzzingclient-{driver}.json"
    spec_path.write_text(json.dumps(spec, indent=2))
    print(f"$ {' '.join(command)}\n$ {args.wstest} -m fuzzingclient -s {spec_path}", flush=True)
    log = (out / f"serve-{driver}.log").open("wb")
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    started = time.monotonic()
    try:
        wait_for_port(port, server)
        with (out / f"wstest-fuzzingclient-{driver}.log").open("wb") as wlog:
            subprocess.run(
                [args.wstest, "-m", "fuzzingclient", "-s", str(spec_path)],
                stdout=wlog, stderr=subprocess.STDOUT, timeout=args.timeout, check=False,
            )  # fmt: skip
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        print(f"server role ({driver}): {exc}")
        return False
    finally:
        stop(server)
        log.close()
    seconds = time.monotonic() - started
    return check(outdir / "index.json", agent, f"server role, driver {driver}", seconds)


def run_client_role(args: argparse.Namespace, out: Path) -> bool:
    port = free_port()
    agent = "wavewire-client"
    outdir = out / "client"
    spec = {
        "url": f"ws://{HOST}:{port}",
        "outdir": str(outdir),
        "cases": args.cases,
        "exclude-cases": [],
        "exclude-agent-cases": {},
        "options": {"failByDrop": True},
    }
    spec_path = out / "fuzzingserver.json"
    spec_path.write_text(json.dumps(spec, indent=2))
    client = [
        sys.executable, str(HERE / "autobahn_client.py"), "--url", f"ws://{HOST}:{port}",
        "--agent", agent, "--compression",
    ]  # fmt: skip
    print(f"$ {args.wstest} -m fuzzingserver -s {spec_path}\n$ {' '.join(client)}", flush=True)
    log = (out / "wstest-fuzzingserver.log").open("wb")
    server = subprocess.Popen(
        [args.wstest, "-m", "fuzzingserver", "-s", str(spec_path)],
        stdout=log, stderr=subprocess.STDOUT, cwd=out,
    )  # fmt: skip
    started = time.monotonic()
    try:
        wait_for_port(port, server)
        subprocess.run(client, timeout=args.timeout, check=True)
    except (RuntimeError, subprocess.TimeoutExpired, subprocess.CalledProcessError) as exc:
        print(f"client role: {exc}")
        return False
    finally:
        stop(server)
        log.close()
    seconds = time.monotonic() - started
    return check(outdir / "index.json", agent, "client role (core ClientProtocol)", seconds)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wstest", default=None, help="the wstest program (pyenv's 2.7.18)")
    parser.add_argument("--roles", default="server,client")
    parser.add_argument("--drivers", default="anyio,asyncio")
    parser.add_argument("--cases", default="*", help="comma-separated case patterns (*)")
    parser.add_argument("--out", default="build/autobahn", help="reports and logs go here")
    parser.add_argument(
        "--timeout", type=float, default=1200.0, metavar="S", help="seconds per run (1200)"
    )
    args = parser.parse_args(argv)
    args.wstest = args.wstest or default_wstest()
    args.cases = args.cases.split(",")
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    env_path = os.environ.get("PYTHONPATH")
    src = str(HERE.parent.parent / "src")
    os.environ["PYTHONPATH"] = src if not env_path else f"{src}{os.pathsep}{env_path}"
    ok = True
    roles = args.roles.split(",")
    if "server" in roles:
        for driver in args.drivers.split(","):
            ok = run_server_role(args, driver, out) and ok
    if "client" in roles:
        ok = run_client_role(args, out) and ok
    print("\nautobahn:", "every case passed" if ok else "FAILURES (see above)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
