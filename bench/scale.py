"""Sessions per process at a fixed CPU budget: one process direct, three behind HAProxy.

    python bench/scale.py                      # steps 10,25,50,75,100,150,200; under 2 minutes
    python bench/scale.py --quick              # smoke run, tiny counts (seconds)
    python bench/scale.py --steps 10,50,100 --max-sessions 100 --seconds 3 --cpu-budget 0.5

Method (issue 12). The servers are ``wavewire serve --driver asyncio --serializer protobuf
--session-key query:sid`` (one session per key: every client has its own key), started here
on 127.0.0.1, unpinned. The first setup is one such process that the clients reach directly;
the second is three of them behind a real HAProxy (``haproxy`` on PATH or /usr/sbin/haproxy)
configured with the HAProxy block of docs/deploy.md, loaded by tests/deploy/test_haproxy.py's
``haproxy_config`` (consistent hashing on ``sid``, health checks on ``/readyz``).

Each step is bench/peers.py's real-time audio row (``audio_sessions``): N sessions, each
sending 20 ms frames of 16 kHz PCM16 (protobuf) at real time and reading the echo the server
paces back in 40 ms chunks, for ``--seconds``. Per step: server CPU-seconds per session-second
(``/proc/PID/schedstat``, summed over the wavewire processes; HAProxy's own CPU is printed
apart), the share of the budget used, p99 of the arrival-gap error, audio lost, and the
client's own p99 send lag. A step passes when p99 < 5 ms, no audio is lost and the server CPU
is within ``--cpu-budget`` cores per process; the answer per setup is the largest passing step.
A setup's ramp stops at its first failing step, at ``--max-sessions`` or at ``--time-cap``.

One client process drives every session: on a small machine that shares its cores with the
servers, the client's own lateness counts against the servers, so the answer is a floor.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for entry in (ROOT, ROOT / "bench"):
    if str(entry) not in sys.path:  # run as a script from a checkout
        sys.path.insert(0, str(entry))

from peers import (  # noqa: E402
    AudioResult,
    Peer,
    audio_sessions,
    cpu_ns,
    free_port,
    loadavg,
    raise_fd_limit,
    wait_idle,
)
from tests.deploy.test_haproxy import haproxy_config  # noqa: E402

HAPROXY = shutil.which("haproxy") or (
    "/usr/sbin/haproxy" if Path("/usr/sbin/haproxy").exists() else None
)
#: The pacing target of the issue.
P99_LIMIT_MS = 5.0


@dataclass
class Step:
    setup: str
    processes: int
    sessions: int
    result: AudioResult
    proxy_cpu_percent: float
    budget_used_percent: float

    @property
    def passed(self) -> bool:
        return (
            self.result.gap_error_p99_ms < P99_LIMIT_MS
            and self.result.lost_percent == 0
            and self.budget_used_percent <= 100
        )


def wait_listening(port: int, process: subprocess.Popen[bytes], limit: float = 20.0) -> None:
    deadline = time.monotonic() + limit
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args!r} exited with {process.returncode} on start")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"nothing listens on {port} within {limit:g} s") from None
            time.sleep(0.05)


@contextlib.contextmanager
def started(command: list[str], port: int) -> Iterator[subprocess.Popen[bytes]]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), env.get("PYTHONPATH")]))
    process = subprocess.Popen(
        command,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_listening(port, process)
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def serve_command(port: int, driver: str) -> list[str]:
    return [
        sys.executable, "-m", "wavewire", "serve", "--host", "127.0.0.1", "--port", str(port),
        "--driver", driver, "--serializer", "protobuf", "--session-key", "query:sid",
        "--drain-timeout", "1",
    ]  # fmt: skip


@contextlib.contextmanager
def setup(processes: int, driver: str) -> Iterator[tuple[int, list[int], int | None]]:
    """(the port clients connect to, the wavewire pids, HAProxy's pid or None)."""
    with contextlib.ExitStack() as stack:
        ports = [free_port() for _ in range(processes)]
        pids = [stack.enter_context(started(serve_command(p, driver), p)).pid for p in ports]
        if processes == 1:
            wait_idle(pids)
            yield ports[0], pids, None
            return
        assert HAPROXY is not None and processes == 3  # the config names three servers
        directory = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        proxy_port = free_port()
        config = directory / "haproxy.cfg"
        fill = {f"port{i}": port for i, port in enumerate(ports, start=1)}
        config.write_text(haproxy_config(proxy_port=proxy_port, **fill))
        proxy = stack.enter_context(started([HAPROXY, "-f", str(config), "-db"], proxy_port))
        time.sleep(1.0)  # a first round of health checks (inter 500ms)
        wait_idle(pids)
        yield proxy_port, pids, proxy.pid


def ramp(
    name: str,
    processes: int,
    steps: Sequence[int],
    args: argparse.Namespace,
    deadline: float,
) -> list[Step]:
    done: list[Step] = []
    with setup(processes, args.driver) as (port, pids, proxy_pid):
        peer = Peer(port, raw=False, timeout=args.timeout)
        for sessions in steps:
            # A step takes about its seconds plus connecting; do not start one past the cap.
            if time.monotonic() + args.seconds + 5 > deadline:
                print(f"  {name}: time cap reached before {sessions} sessions", flush=True)
                break
            proxy0 = cpu_ns(proxy_pid) if proxy_pid else 0
            t0 = time.perf_counter()
            try:
                result = audio_sessions(peer, pids, sessions, args.seconds, "/ws?sid=k{i}")
            except (RuntimeError, OSError) as exc:  # e.g. a server stopped reading
                print(f"  {name} {sessions} sessions: FAILED: {exc!r}", flush=True)
                break
            window = time.perf_counter() - t0
            proxy = cpu_ns(proxy_pid) - proxy0 if proxy_pid else 0
            budget = args.cpu_budget * processes
            step = Step(
                setup=name,
                processes=processes,
                sessions=sessions,
                result=result,
                proxy_cpu_percent=100 * proxy / 1e9 / window,
                budget_used_percent=result.server_cpu_percent / budget,
            )
            done.append(step)
            print(
                f"  {name} {sessions} sessions: p99 {result.gap_error_p99_ms:.1f} ms, "
                f"lost {result.lost_percent:.2f}%, {'pass' if step.passed else 'FAIL'}",
                flush=True,
            )
            if not step.passed:
                break
    return done


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", default="10,25,50,75,100,150,200", help="sessions per step")
    parser.add_argument(
        "--max-sessions", type=int, default=200, help="no step above this many sessions (200)"
    )
    parser.add_argument("--seconds", type=float, default=3.0, help="audio per step (3 s)")
    parser.add_argument(
        "--cpu-budget",
        type=float,
        default=1.0,
        help="cores each wavewire process may use (1.0: one core per process)",
    )
    parser.add_argument(
        "--setups", default="1,3", help="1: one process direct; 3: three behind HAProxy"
    )
    parser.add_argument("--driver", default="asyncio", choices=("asyncio", "anyio"))
    parser.add_argument("--time-cap", type=float, default=150.0, help="whole run (150 s)")
    parser.add_argument("--timeout", type=float, default=30.0, help="socket timeout (30 s)")
    parser.add_argument("--quick", action="store_true", help="tiny counts: a smoke run")
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.seconds, args.time_cap = "2,4", 0.4, 60.0
    steps = [n for n in (int(s) for s in args.steps.split(",")) if 0 < n <= args.max_sessions]
    setups = [int(s) for s in args.setups.split(",")]
    if not steps or set(setups) - {1, 3}:
        parser.error("need at least one step within --max-sessions, and setups of 1 or 3")
    if 3 in setups and HAPROXY is None:
        parser.error("three processes need haproxy (Debian: apt-get install haproxy)")
    raise_fd_limit()
    deadline = time.monotonic() + args.time_cap

    print(f"load before: {loadavg()}")
    print(
        f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, client and servers unpinned; "
        f"driver {args.driver}; {args.seconds:g} s per step; budget {args.cpu_budget:g} "
        "core(s) per process",
        flush=True,
    )
    rows: list[Step] = []
    for processes in setups:
        name = "1 process, direct" if processes == 1 else "3 processes, HAProxy"
        rows += ramp(name, processes, steps, args, deadline)
    print(f"load after: {loadavg()}\n")

    print(
        "| setup | sessions | sessions per process | CPU-s per session-s | server CPU "
        "(% of budget) | HAProxy CPU (% of a core) | p99 arrival-gap error (ms) "
        "| audio lost (%) | client p99 send lag (ms) | pass |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        r = row.result
        proxy = f"{row.proxy_cpu_percent:.0f}" if row.processes > 1 else "-"
        print(
            f"| {row.setup} | {row.sessions} | {row.sessions / row.processes:.0f} "
            f"| {r.cpu_per_session_second:.4f} | {row.budget_used_percent:.0f} | {proxy} "
            f"| {r.gap_error_p99_ms:.1f} | {r.lost_percent:.2f} | {r.send_lag_p99_ms:.1f} "
            f"| {'yes' if row.passed else 'no'} |"
        )
    print()
    for processes in setups:
        passed = [row for row in rows if row.processes == processes and row.passed]
        best = max(passed, key=lambda row: row.sessions) if passed else None
        setup_name = "1 process, direct" if processes == 1 else "3 processes, HAProxy"
        if best is None:
            print(f"{setup_name}: no step passed")
        else:
            print(
                f"{setup_name}: {best.sessions} sessions "
                f"({best.sessions / processes:.0f} per process) pass "
                f"(p99 < {P99_LIMIT_MS:g} ms, no audio lost, within the CPU budget)"
            )
    failed = [r for r in rows if not all(math.isfinite(x) for x in vars(r.result).values())]
    return 1 if failed or not rows else 0


if __name__ == "__main__":
    sys.exit(main())
