"""The documentation stays true to the code: the generated configuration reference is current,
the events page lists what the transports emit, the examples run, and no page cites a file
that is not in the repository. (``tox -e docs`` builds the site strictly: links and anchors.)"""

from __future__ import annotations

import ast
import importlib.util
import os
import re
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import wavewire
from wavewire.transports.client import CLIENT_EVENTS
from wavewire.transports.server import SERVER_EVENTS

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def load_script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def gen() -> ModuleType:
    return load_script("gen_config_reference")


def test_configuration_reference_is_generated_from_the_current_code(gen: ModuleType) -> None:
    assert gen.check(DOCS / "configuration.md"), (
        "docs/configuration.md is stale: run python scripts/gen_config_reference.py --write "
        "docs/configuration.md"
    )


def test_a_stale_reference_is_reported_and_rewritten(
    gen: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    page = tmp_path / "configuration.md"
    page.write_text(gen.render().replace("`1048576`", "`1000000`"), encoding="utf-8")
    assert gen.main(["--check", str(page)]) == 1
    assert "stale" in capsys.readouterr().err
    assert gen.main(["--write", str(page)]) == 0
    assert gen.main(["--check", str(page)]) == 0


def test_reference_covers_every_parameter_with_its_default_and_limits(gen: ModuleType) -> None:
    text = gen.render()
    for cls in (wavewire.WebsocketServerParams, wavewire.WebsocketClientParams):
        for name in cls.__dataclass_fields__:
            assert f"| `{name}` |" in text, name
    rows = {
        line.split(" | ")[0].strip("| `"): line.split(" | ")
        for line in text.split("## WebsocketServerParams")[1].split("## ")[0].splitlines()
        if line.startswith("| `")
    }
    # Limits found by probing the validation, defaults read from the fields.
    assert rows["session_timeout"][2:4] == ["`None`", "> 0, finite, or None"]
    assert rows["max_message_size"][2:4] == ["`1048576`", "integer >= 1"]
    assert rows["audio_out_sample_rate"][3] == "integer >= 100, or None"
    assert rows["client_policy"][3] == "one of `replace`, `reject`, `multi`"
    assert "not checked) |" not in text and "| not checked |" not in text


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        ({"audio_in_sample_rate": 0}, "audio_in_sample_rate"),
        ({"audio_in_channels": 0}, "audio_in_channels"),
        ({"write_timeout": -1}, "write_timeout"),
        ({"max_output_buffer": 0}, "max_output_buffer"),
        ({"max_input_queue": -1}, "max_input_queue"),
        ({"audio_in_enabled": "yes"}, "audio_in_enabled"),
    ],
)
def test_transport_settings_are_checked_on_creation(settings: dict[str, Any], field: str) -> None:
    for params in (wavewire.WebsocketServerParams, wavewire.WebsocketClientParams):
        with pytest.raises((ValueError, TypeError), match=field):
            params(**settings).check_transport_settings()
    with pytest.raises((ValueError, TypeError), match=field):
        wavewire.WebsocketServerTransport(wavewire.WebsocketServerParams(**settings))


def emitted(module: str) -> dict[str, int]:
    """Each event the transport queues, and how many arguments its handlers get (the
    transport first), read from the ``self._queue("on_...", ...)`` calls in its source."""
    tree = ast.parse((ROOT / "src" / "wavewire" / "transports" / module).read_text())
    found: dict[str, int] = {}
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "_queue"
            and node.args
            and isinstance(node.args[0], ast.Constant)
        ):
            name = node.args[0].value
            assert isinstance(name, str)
            found[name] = len(node.args)  # the name's place is the transport's
    return found


def documented(section: str) -> dict[str, int]:
    return {
        name: len(args.split(", "))
        for name, args in re.findall(r"^### `(on_\w+)\(([^)]*)\)`", section, re.M)
    }


def test_events_page_lists_every_event_with_its_signature() -> None:
    text = (DOCS / "events.md").read_text(encoding="utf-8")
    server, client = text.split("## WebsocketServerTransport")[1].split(
        "## WebsocketClientTransport"
    )
    assert documented(server) == emitted("server.py")
    assert documented(client) == emitted("client.py")
    assert set(documented(server)) == set(SERVER_EVENTS)
    assert set(documented(client)) == set(CLIENT_EVENTS)


def python_blocks(path: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(encoding="utf-8"), re.S)


def test_quickstart_shows_the_readme_examples_that_the_suite_runs() -> None:
    # tests/examples/test_readme_examples.py runs the README's pair (its first two blocks; the
    # third is the Pipecat drop-in's import line).
    assert python_blocks(DOCS / "quickstart.md") == python_blocks(ROOT / "README.md")[:2]


def test_deployment_examples_run(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WAVEWIRE_TOKEN", "s3cret")
    names: dict[str, Any] = {}
    for block in python_blocks(DOCS / "deployment.md"):
        if "load_cert_chain" in block:  # needs certificate files; compile it at least
            compile(block, "deployment.md", "exec")
            continue
        exec(block, names)
    health, authenticate = names["health"], names["authenticate"]
    ok = health(wavewire.HttpRequest(method="GET", path="/healthz", headers=()))
    assert ok.status_code == 200 and ok.body == b"ok\n"
    assert health(wavewire.HttpRequest(method="GET", path="/", headers=())) is None
    good = wavewire.HandshakeRequest(path="/ws?token=s3cret", headers=())
    bad = wavewire.HandshakeRequest(path="/ws?token=guess", headers=())
    assert isinstance(authenticate(good), wavewire.Accept)
    refused = authenticate(bad)
    assert isinstance(refused, wavewire.Reject) and refused.status_code == 401
    params = names["params"]
    assert params.handshake_hook is authenticate
    assert params.server_config().allowed_origins == ("https://app.example", None)
    assert os.environ["WAVEWIRE_TOKEN"] == "s3cret"


#: A path in the repository, as the docs cite them (``src/...``, ``docs/...``).
_CITED = re.compile(r"(?<![\w/.-])((?:src|tests|docs|bench|examples|scripts|\.ci)/[\w./-]*[\w/])")


def test_no_doc_cites_a_file_that_is_not_in_the_repository() -> None:
    pages = [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]
    missing = [
        f"{page.name}: {cited}"
        for page in pages
        for cited in _CITED.findall(page.read_text(encoding="utf-8"))
        if not (ROOT / cited).exists()
    ]
    assert missing == []


def test_every_page_is_in_the_site_navigation() -> None:
    config = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    nav = set(re.findall(r"^  - [^:]+: (\S+\.md)$", config, re.M))
    assert nav == {page.name for page in DOCS.glob("*.md")}
