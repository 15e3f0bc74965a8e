"""docs/architecture.md's state table and diagram are generated from the code and kept in step.

The generator (scripts/gen_state_table.py) is not a package module, so it is loaded from its
path and its check runs in-process.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

from wavewire.core.protocol.connection import TRANSITIONS, State, Trigger

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "gen_state_table.py"
DOC = ROOT / "docs" / "architecture.md"


@pytest.fixture(scope="module")
def gen() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_state_table", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_architecture_doc_state_table_is_up_to_date(gen: ModuleType) -> None:
    assert gen.check(DOC), (
        "docs/architecture.md is stale: run python scripts/gen_state_table.py --write "
        "docs/architecture.md"
    )


def test_stale_table_is_reported_and_write_fixes_it(
    gen: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The doc as it would be if CLOSING -> CLOSED had been added to the code after generating.
    stale = {k: v for k, v in TRANSITIONS.items() if k != (State.CLOSING, Trigger.ENDED)}
    assert len(stale) == len(TRANSITIONS) - 1
    text = DOC.read_text(encoding="utf-8")
    doc = tmp_path / "architecture.md"
    doc.write_text(gen.replace_section(text, gen.render(stale)), encoding="utf-8")

    assert not gen.check(doc)
    assert gen.main(["--check", str(doc)]) == 1
    assert "stale" in capsys.readouterr().err

    assert gen.main(["--write", str(doc)]) == 0
    assert gen.check(doc)
    assert gen.main(["--check", str(doc)]) == 0
    # Only the generated section changed.
    assert doc.read_text(encoding="utf-8") == gen.replace_section(text, gen.render())


def test_every_transition_is_in_the_table_and_the_diagram(gen: ModuleType) -> None:
    table: str = gen.render_table()
    diagram: str = gen.render_diagram()
    rows = {line.split(" | ")[0].strip("| `"): line for line in table.splitlines()[2:]}
    assert set(rows) == {s.name for s in State}
    columns = [c.strip(" `") for c in table.splitlines()[0].strip("|").split("|")[1:]]
    assert columns == [t.name for t in Trigger]
    for state in State:
        cells = [c.strip(" `") for c in rows[state.name].strip("|").split("|")[1:]]
        for trigger, cell in zip(Trigger, cells, strict=True):
            target = TRANSITIONS.get((state, trigger))
            assert cell == ("—" if target is None else target.name)
            if target is not None:
                assert f"    {state.name} --> {target.name}: {trigger.name}\n" in diagram
    assert "[*] --> CONNECTING" in diagram
    assert "CLOSED --> [*]" in diagram


def test_doc_without_markers_is_an_error(gen: ModuleType, tmp_path: Path) -> None:
    doc = tmp_path / "architecture.md"
    doc.write_text("# no generated section here\n", encoding="utf-8")
    with pytest.raises(ValueError, match="marker"):
        gen.check(doc)
    assert gen.main(["--check", str(doc)]) == 2
    assert gen.main(["--write", str(doc)]) == 2
    assert doc.read_text(encoding="utf-8") == "# no generated section here\n"
