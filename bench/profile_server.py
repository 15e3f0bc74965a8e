"""Where a server's time goes: own time by layer and by function, under bench/peers.py's load.

    python bench/profile_server.py --server wavewire-native --workload rt
    python bench/profile_server.py --server wavewire-anyio --workload pipe640 --tool cprofile
    python bench/profile_server.py --workload handshake --count 3000
    python bench/profile_server.py --workload handshake --tool callgrind --count 300
    python bench/profile_server.py --server wavewire-native --workload audio --sessions 200

The server runs as in bench/peers.py (its own process, pinned to one core; wavewire is
``wavewire serve --echo-raw``), the same plain-socket client drives one workload (``rt``: 640 B
round trips one at a time; ``pipe640``: 640 B messages, 100 in flight; ``pipe64k``: 64 KiB
messages, 16 in flight; ``handshake``: connect,
upgrade, one 640 B echo, close handshake, the server's EOF, as bench/peers.py's handshake row;
``--count`` is then handshakes; ``audio``: peers' audio row, ``--sessions`` paced sessions of
``wavewire serve --policy multi`` with protobuf, where ``--count`` counts received 20 ms frames
and every second one is answered by one paced 40 ms chunk), and the server is profiled during it:

* ``--tool py-spy`` (default): ``py-spy record --format raw`` attached to the server for the
  workload only, sampling at ``--rate`` Hz; a sample's own time goes to its innermost Python
  frame. Sampling does not slow the server's Python code, so the shares are the truest here.
* ``--tool cprofile``: the server runs with ``cProfile`` enabled for the workload only (from
  ``SIGUSR1`` to ``SIGUSR2``, after a warm-up: no startup, no first-connection costs);
  ``tottime`` per function. Deterministic, with call counts (divided by ``--count`` they are
  per message or per handshake), but its per-call overhead inflates layers made of many
  small calls.

* ``--tool callgrind``: the server runs under valgrind's callgrind, instrumented for the
  workload only; prints the instructions it executed in user space per message or handshake.
  Deterministic to a fraction of a percent whatever the machine's load (bench/peers.py's CPU
  figures vary by 30% here): the A/B measure for a change. Needs ``valgrind`` (Debian's
  package); the server runs about 50 times slower, so keep ``--count`` small (500: a
  connection must not live past ``ping_interval``, 20 s, or a ping lands in the echoes).

Own time is summed by layer, from each function's file: wavewire core, adapters, transports,
the CLI's echo loop, wsproto, asyncio, anyio, trio, other Python, and (cProfile only) built-ins
(C functions: socket calls, bytes operations). Needs py-spy for the default tool
(in the ``bench`` extra; it attaches with ptrace, so root or ``kernel.yama.ptrace_scope=0``).
"""

from __future__ import annotations

import argparse
import os
import pstats
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import peers

LAYERS = (
    ("/wavewire/core/", "wavewire core"),
    ("/wavewire/adapters/", "wavewire adapters"),
    ("/wavewire/transports/", "wavewire transports"),
    ("/wavewire/cli.py", "wavewire cli (echo loop)"),
    ("/wsproto/", "wsproto"),
    ("/asyncio/", "asyncio"),
    ("/anyio/", "anyio"),
    ("/trio/", "trio"),
    ("/selectors.py", "selectors (polling)"),
    ("/websockets/", "websockets"),
)
#: Innermost frames that mean "waiting for I/O": py-spy may still count them when the wait
#: returns at once (a busy loop polls with a zero timeout).
IDLE = {"select", "get_events", "poll"}


def layer(path: str) -> str:
    if path == "~":  # cProfile: a C function (socket calls, bytes methods, isinstance)
        return "built-ins (C)"
    path = "/" + path.lstrip("/")  # py-spy prints paths relative to sys.path entries
    for marker, name in LAYERS:
        if marker in path:
            return name
    return "other Python"


def workload(args: argparse.Namespace, peer: peers.Peer, pid: int, count: int) -> peers.Sample:
    if args.workload == "rt":
        return peers.round_trips(peer, pid, count, warmup=200)
    if args.workload == "handshake":
        return peers.handshakes(peer, pid, count)
    if args.workload == "audio":
        seconds = count / args.sessions * peers.FRAME_SECONDS
        result = peers.audio_sessions(peer, pid, args.sessions, seconds)
        print(
            f"audio N={args.sessions}: {result.cpu_per_session_second:.5f} CPU-s per session-s,"
            f" server CPU {result.server_cpu_percent:.0f}%, p99 gap error"
            f" {result.gap_error_p99_ms:.1f} ms, {result.lost_percent:.2f}% lost (profiler on)"
        )
        cpu_ns = round(result.cpu_per_session_second * 1e9 * count * peers.FRAME_SECONDS)
        return peers.Sample(count, seconds, cpu_ns)
    if args.workload == "pipe64k":  # peers.py's 64 KiB row: 16 in flight
        return peers.pipelined(peer, pid, 65536, count, 16)
    return peers.pipelined(peer, pid, 640, count, 100)


def warm(args: argparse.Namespace, peer: peers.Peer, pid: int, count: int) -> None:
    """A short run of the workload before profiling (the audio row opens its own sessions)."""
    if args.workload != "audio":
        workload(args, peer, pid, count)


def report(own: Counter[tuple[str, str]], total: float, unit: str, top: int) -> None:
    by_layer: Counter[str] = Counter()
    for (path, _), value in own.items():
        by_layer[layer(path)] += value
    print("\nown time by layer:")
    for name, value in by_layer.most_common():
        print(f"  {name:28} {100 * value / total:5.1f}%")
    print(f"\ntop {top} functions by own time ({unit}):")
    for (path, function), value in own.most_common(top):
        where = path.split("/site-packages/")[-1].split("/src/")[-1]
        print(f"  {100 * value / total:5.1f}%  {function:40} {where}")


def with_py_spy(args: argparse.Namespace, server: peers.Server, cpu: int) -> None:
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    audio = args.workload == "audio"
    with tempfile.TemporaryDirectory() as tmp, peers.running(server, cpu, audio) as (pid, port):
        out = Path(tmp) / "spy.txt"
        peer = peers.Peer(port, raw=server.kind == "raw", timeout=args.timeout)
        warm(args, peer, pid, min(args.count, 500))
        record = [spy, "record", "--pid", str(pid), "--rate", str(args.rate)]
        recorder = subprocess.Popen(
            [*record, "--format", "raw", "--output", str(out), "--nonblocking"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        time.sleep(1.0)  # py-spy attaches
        sample = workload(args, peer, pid, args.count)
        recorder.send_signal(signal.SIGINT)
        _, errors = recorder.communicate(timeout=30)
        if not out.exists():
            raise SystemExit(f"py-spy wrote nothing: {errors}")
        own: Counter[tuple[str, str]] = Counter()
        idle = 0
        for line in out.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            leaf = stack.rsplit(";", 1)[-1]  # "function (path:line)"
            function, _, where = leaf.partition(" (")
            name = function.rsplit(".", 1)[-1]
            own[(where.rsplit(":", 1)[0], function)] += int(count)
            if name in IDLE:
                idle += int(count)
    print_header(args, sample)
    total = sum(own.values())
    print(f"{total} samples, {100 * idle / total:.1f}% of them waiting in the poll: left out")
    busy = Counter({key: n for key, n in own.items() if key[1].rsplit(".", 1)[-1] not in IDLE})
    report(busy, total - idle, "share of the busy samples", args.top)


#: Run as ``python -c PROFILED OUT peers.py --serve ...``: the server, with cProfile switched on
#: by SIGUSR1 and off (its stats written to OUT) by SIGUSR2.
PROFILED = """
import cProfile, runpy, signal, sys
out = sys.argv.pop(1)
profile = cProfile.Profile()
def stop(*_):
    profile.disable()
    profile.dump_stats(out)
signal.signal(signal.SIGUSR1, lambda *_: profile.enable())
signal.signal(signal.SIGUSR2, stop)
sys.argv.pop(0)
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def with_cprofile(args: argparse.Namespace, server: peers.Server, cpu: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "server.prof"
        options = ["-c", PROFILED, str(out)]
        audio = args.workload == "audio"
        with peers.running(server, cpu, audio, python_options=options) as (pid, port):
            peer = peers.Peer(port, raw=server.kind == "raw", timeout=args.timeout)
            warm(args, peer, pid, min(args.count, 500))
            os.kill(pid, signal.SIGUSR1)
            sample = workload(args, peer, pid, args.count)
            os.kill(pid, signal.SIGUSR2)
            deadline = time.monotonic() + 30
            while not (out.exists() and _complete(out)):
                if time.monotonic() > deadline:
                    raise SystemExit("the server wrote no profile")
                time.sleep(0.1)
        stats = pstats.Stats(str(out))
    own: Counter[tuple[str, str]] = Counter()
    calls: Counter[tuple[str, str]] = Counter()
    idle = 0.0
    for (path, _line, function), (_cc, ncalls, tottime, _ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        calls[(path, function)] += ncalls
        if "'select.epoll'" in function or "'select.poll'" in function:
            idle += tottime  # cProfile times the wall clock: the wait for I/O is in here
        else:
            own[(path, function)] += tottime
    print_header(args, sample)
    total = sum(own.values())
    print(f"{total:.1f} s profiled, and {idle:.1f} s in the poll (waiting; left out)")
    report(own, total, "tottime", args.top)
    print(f"\nmost called, per {unit(args)} ({args.count} {unit(args)}s):")
    for (path, function), ncalls in calls.most_common(args.top):
        where = path.split("/site-packages/")[-1].split("/src/")[-1]
        print(f"  {ncalls / args.count:6.2f}  {function:40} {where}")


#: Run as ``python -c UNDER_CALLGRIND OUT peers.py --serve ...``: the same process (same pid)
#: becomes valgrind running the server, instrumented only once ``callgrind_control -i on``.
UNDER_CALLGRIND = """
import os, sys
out = sys.argv[1]
os.execvp("valgrind", ["valgrind", "-q", "--tool=callgrind", "--instr-atstart=no",
    f"--callgrind-out-file={out}", sys.executable, *sys.argv[2:]])
"""


def with_callgrind(args: argparse.Namespace, server: peers.Server, cpu: int) -> None:
    control = shutil.which("callgrind_control")
    if shutil.which("valgrind") is None or control is None:
        raise SystemExit("--tool callgrind needs valgrind (Debian: apt-get install valgrind)")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "callgrind.out"
        options = ["-c", UNDER_CALLGRIND, str(out)]
        audio = args.workload == "audio"
        with peers.running(server, cpu, audio, python_options=options) as (pid, port):
            peer = peers.Peer(port, raw=server.kind == "raw", timeout=args.timeout)
            warm(args, peer, pid, min(args.count, 100))
            subprocess.run([control, "-i", "on", str(pid)], check=True, capture_output=True)
            sample = workload(args, peer, pid, args.count)
            subprocess.run([control, "-i", "off", str(pid)], check=True, capture_output=True)
            subprocess.run([control, "-d", str(pid)], check=True, capture_output=True)
        instructions = 0
        for dump in Path(tmp).glob("callgrind.out*"):
            for line in dump.read_text().splitlines():
                if line.startswith("totals:"):
                    instructions += int(line.split()[1])
    # What the workload functions run besides the units they time (their warm-ups).
    extra = {
        "handshake": 20,
        "rt": 200,
        "pipe640": 1 + min(args.count, 200),
        "pipe64k": 1 + min(args.count, 32),
        "audio": 0,
    }[args.workload]
    units = sample.units + extra
    print(
        f"{args.server}, {args.workload}, callgrind: {units} {unit(args)}s (warm-ups included), "
        f"{instructions / units:,.0f} instructions per {unit(args)} (user space)"
    )


def _complete(path: Path) -> bool:
    """Whether the profile at ``path`` is whole (the server may still be writing it)."""
    try:
        pstats.Stats(str(path))
    except Exception:
        return False
    return True


def unit(args: argparse.Namespace) -> str:
    """What the workload counts: handshakes, or messages."""
    return "handshake" if args.workload == "handshake" else "message"


def print_header(args: argparse.Namespace, sample: peers.Sample) -> None:
    print(
        f"{args.server}, {args.workload}, {args.tool}: {sample.units} {unit(args)}s, "
        f"{sample.rate:,.0f}/s, server CPU {sample.cpu_us:.1f} µs per {unit(args)} (profiler on)"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", default="wavewire-native", choices=sorted(peers.BY_NAME))
    parser.add_argument(
        "--workload", default="rt", choices=("rt", "pipe640", "pipe64k", "handshake", "audio")
    )
    parser.add_argument("--sessions", type=int, default=200, help="audio: paced sessions (200)")
    parser.add_argument("--tool", default="py-spy", choices=("py-spy", "cprofile", "callgrind"))
    parser.add_argument(
        "--count",
        type=int,
        default=20000,
        help="messages (20000; handshake: handshakes; audio: received frames)",
    )
    parser.add_argument("--rate", type=int, default=1000, help="py-spy samples per second")
    parser.add_argument("--top", type=int, default=25, help="functions listed (25)")
    parser.add_argument("--timeout", type=float, default=120.0)
    args = parser.parse_args()
    cpus = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpus[0]})
    server = peers.BY_NAME[args.server]
    if args.tool == "py-spy":
        with_py_spy(args, server, cpus[-1])
    elif args.tool == "callgrind":
        with_callgrind(args, server, cpus[-1])
    else:
        with_cprofile(args, server, cpus[-1])
    return 0


if __name__ == "__main__":
    sys.exit(main())
