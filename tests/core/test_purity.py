"""The core is sans-IO: no I/O, clock or random source of its own, so every behaviour is
testable with bytes and a synthetic clock. Checked statically, and by importing with them
blocked."""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

import wavewire.core

CORE = pathlib.Path(wavewire.core.__file__).parent
BANNED = {
    "asyncio", "anyio", "trio", "socket", "selectors", "threading", "ssl", "time", "random",
    "secrets", "multiprocessing", "subprocess",
}  # fmt: skip
BANNED_CALLS = {("os", "urandom"), ("os", "getrandom"), ("uuid", "uuid4"), ("uuid", "uuid1")}


def _core_sources() -> list[pathlib.Path]:
    files = [p for p in CORE.rglob("*.py") if "_pb" not in p.parts]
    assert len(files) > 5, "the core's sources were not found"
    return files


def test_core_imports_no_io_clock_or_randomness() -> None:
    offenders = []
    for path in _core_sources():
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            elif (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and (node.value.id, node.attr) in BANNED_CALLS
            ):
                offenders.append(f"{path.name}:{node.lineno} {node.value.id}.{node.attr}")
            offenders += [
                f"{path.name}:{getattr(node, 'lineno', 0)} imports {name}"
                for name in names
                if name.split(".")[0] in BANNED
            ]
    assert offenders == []


def test_purity_scan_catches_a_violation() -> None:
    # The scan above must be able to fail: the same walk flags a planted import.
    tree = ast.parse("import time\nfrom asyncio import sleep\nimport os\nos.urandom(4)\n")
    imports = [n for n in ast.walk(tree) if isinstance(n, ast.Import | ast.ImportFrom)]
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Attribute)]
    assert len(imports) == 3
    assert any((c.value.id, c.attr) in BANNED_CALLS for c in calls if isinstance(c.value, ast.Name))


def test_core_imports_with_io_modules_blocked() -> None:
    # A fresh interpreter where importing any banned module fails; the whole core must import.
    # Third-party libraries are loaded first: they may use threading (protobuf's descriptor pool
    # lock does); the rule binds the core's own code.
    script = f"""
import sys
import h11, wsproto.connection, wsproto.extensions, wsproto.utilities
import wavewire.core.serializers._pb.frames_pb2
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {sorted(BANNED)!r}:
            raise ImportError("blocked: " + name)
        return None
for name in list(sys.modules):
    if name.split(".")[0] in {sorted(BANNED)!r}:
        del sys.modules[name]
sys.meta_path.insert(0, Block())
import wavewire.core.server, wavewire.core.client, wavewire.core.serializers
import wavewire.core.session.sessions, wavewire.core.link, wavewire.core.admission
print("ok")
"""
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def _imports(source: str, package: str) -> set[str]:
    """Absolute module names ``source`` (a module of ``package``) imports, relative ones
    resolved."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            parts = package.split(".")
            base = parts[: len(parts) - node.level + 1] if node.level else []
            names.add(".".join([*base, *([node.module] if node.module else [])]))
    return names


def _core_imports(path: pathlib.Path) -> set[str]:
    package = ".".join(("wavewire", *path.relative_to(CORE.parent).parent.parts))
    return _imports(path.read_text(), package)


def _layer(name: str) -> list[pathlib.Path]:
    files = sorted((CORE / name).glob("*.py"))
    assert len(files) >= 4, f"the {name} layer's sources were not found"
    return files


def test_the_session_layer_never_sees_the_wire() -> None:
    # The session layer is scanned for purity above (it is under core/), and it imports neither
    # the protocol layer nor the libraries that parse the wire.
    offenders = [
        f"{path.name} imports {name}"
        for path in _layer("session")
        for name in _core_imports(path)
        if name.startswith(("wavewire.core.protocol", "wsproto", "h11"))
    ]
    assert offenders == []
    assert CORE / "session" / "sessions.py" in _core_sources()


def test_the_protocol_layer_knows_nothing_of_sessions() -> None:
    offenders = [
        f"{path.name} imports {name}"
        for path in _layer("protocol")
        for name in _core_imports(path)
        if name.startswith(("wavewire.core.session", "wavewire.core.server"))
    ]
    assert offenders == []


def test_layer_scan_catches_a_crossing() -> None:
    # The import walk must be able to see a crossing, relative or absolute.
    planted = "from ..protocol.connection import Connection\nimport wsproto\nfrom . import audio\n"
    names = _imports(planted, "wavewire.core.session")
    assert names == {"wavewire.core.protocol.connection", "wsproto", "wavewire.core.session"}
    assert "wavewire.core.session.outbound" in _core_imports(CORE / "session" / "sessions.py")
