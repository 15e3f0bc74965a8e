"""The Autobahn report checker: which outcomes pass, the table, the exit status."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conformance.check_report import CaseResult, failures, load, main, summary_table, verdict

REPORT = {
    "wavewire": {
        "1.1.1": {"behavior": "OK", "behaviorClose": "OK", "duration": 2},
        "1.1.2": {"behavior": "OK", "behaviorClose": "OK"},
        "10.1.1": {"behavior": "OK", "behaviorClose": "OK"},
        "2.10": {"behavior": "OK", "behaviorClose": "OK"},
        "2.9": {"behavior": "INFORMATIONAL", "behaviorClose": "INFORMATIONAL"},
    },
    "other": {"1.1.1": {"behavior": "FAILED", "behaviorClose": "OK"}},
}


@pytest.mark.parametrize(
    ("behavior", "behavior_close", "passed", "column"),
    [
        ("OK", "OK", True, "OK"),
        ("INFORMATIONAL", "OK", True, "INFORMATIONAL"),
        ("OK", "INFORMATIONAL", True, "INFORMATIONAL"),
        ("NON-STRICT", "OK", False, "NON-STRICT"),
        ("OK", "NON-STRICT", False, "NON-STRICT"),
        ("UNIMPLEMENTED", "OK", False, "UNIMPLEMENTED"),
        ("FAILED", "OK", False, "FAILED"),
        ("OK", "FAILED", False, "FAILED"),
        ("OK", "WRONG CODE", False, "FAILED"),
        ("MISSING", "MISSING", False, "FAILED"),
    ],
)
def test_outcomes(behavior: str, behavior_close: str, passed: bool, column: str) -> None:
    result = CaseResult("a", "1.1.1", behavior, behavior_close)
    assert result.passed is passed
    assert verdict(result) == column
    assert failures([result]) == ([] if passed else [result])


def test_load_orders_cases_numerically_and_filters_agents() -> None:
    results = load(REPORT, "wavewire")
    assert [r.case for r in results] == ["1.1.1", "1.1.2", "2.9", "2.10", "10.1.1"]
    assert [r.section for r in results] == ["1", "1", "2", "2", "10"]
    assert {r.agent for r in load(REPORT)} == {"wavewire", "other"}
    assert load({"a": {"1.1": {}}})[0].behavior == "MISSING"


def test_summary_table_counts_per_section() -> None:
    table = summary_table(load(REPORT))
    assert "| 1 | 2 | 2 | 0 | 0 | 0 | 0 |" in table
    assert "| 2 | 2 | 1 | 1 | 0 | 0 | 0 |" in table
    assert "| all | 5 | 4 | 1 | 0 | 0 | 0 |" in table
    assert "| all | 1 | 0 | 0 | 0 | 0 | 1 |" in table  # agent "other"


def test_main_exit_status(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    index = tmp_path / "index.json"
    index.write_text(json.dumps(REPORT))
    assert main([str(index), "--agent", "wavewire"]) == 0
    assert "5 of 5 cases passed" in capsys.readouterr().out
    assert main([str(index)]) == 1
    out = capsys.readouterr().out
    assert "FAILED other 1.1.1: behavior FAILED, behaviorClose OK" in out
    assert main([str(index), "--agent", "nobody"]) == 1  # no case: the run did not happen
    assert "no case" in capsys.readouterr().err
    assert main([str(tmp_path / "missing.json")]) == 1
    index.write_text("{not json")
    assert main([str(index)]) == 1
