"""Check an Autobahn|Testsuite JSON report (``index.json``): every case must be OK.

A case passes when both its ``behavior`` and its ``behaviorClose`` are ``OK`` or
``INFORMATIONAL``; ``NON-STRICT``, ``UNIMPLEMENTED``, ``FAILED``, ``WRONG CODE`` and anything else
fail it. A report with no case at all fails too (the run did not happen).

    python tests/conformance/check_report.py reports/servers/index.json [--agent NAME]

Prints one table per agent (cases per section and how they ended) and the failing cases; exits
1 if any case failed.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["PASSING", "CaseResult", "failures", "load", "main", "summary_table", "verdict"]

#: The only outcomes that pass.
PASSING = frozenset(("OK", "INFORMATIONAL"))
#: Columns of the summary table, best to worst; anything unknown is counted as FAILED.
COLUMNS = ("OK", "INFORMATIONAL", "NON-STRICT", "UNIMPLEMENTED", "FAILED")


@dataclass(frozen=True)
class CaseResult:
    agent: str
    case: str
    behavior: str
    behavior_close: str

    @property
    def section(self) -> str:
        return self.case.split(".", 1)[0]

    @property
    def passed(self) -> bool:
        return self.behavior in PASSING and self.behavior_close in PASSING


def _case_key(case: str) -> tuple[int | str, ...]:
    return tuple(int(part) if part.isdigit() else part for part in case.split("."))


def load(report: Mapping[str, Any], agent: str | None = None) -> list[CaseResult]:
    """Every case of ``report`` (the parsed ``index.json``), per agent, in case order."""
    results = []
    for name, cases in sorted(report.items()):
        if agent is not None and name != agent:
            continue
        for case in sorted(cases, key=_case_key):
            entry = cases[case]
            results.append(
                CaseResult(
                    name,
                    case,
                    str(entry.get("behavior", "MISSING")),
                    str(entry.get("behaviorClose", "MISSING")),
                )
            )
    return results


def verdict(result: CaseResult) -> str:
    """The worse of a case's two outcomes, as a column of the summary table."""
    ranks = []
    for outcome in (result.behavior, result.behavior_close):
        ranks.append(COLUMNS.index(outcome) if outcome in COLUMNS else len(COLUMNS) - 1)
    return COLUMNS[max(ranks)]


def failures(results: Sequence[CaseResult]) -> list[CaseResult]:
    return [result for result in results if not result.passed]


def summary_table(results: Sequence[CaseResult]) -> str:
    """A Markdown table per agent: cases per section and their verdicts."""
    lines: list[str] = []
    agents = sorted({result.agent for result in results})
    for agent in agents:
        mine = [result for result in results if result.agent == agent]
        sections: dict[str, Counter[str]] = {}
        for result in mine:
            sections.setdefault(result.section, Counter())[verdict(result)] += 1
        lines.append(f"agent `{agent}`")
        lines.append("")
        lines.append("| section | cases | " + " | ".join(COLUMNS) + " |")
        lines.append("| --- | --- |" + " --- |" * len(COLUMNS))
        total: Counter[str] = Counter()
        for section in sorted(sections, key=_case_key):
            counts = sections[section]
            total.update(counts)
            cells = " | ".join(str(counts[column]) for column in COLUMNS)
            lines.append(f"| {section} | {sum(counts.values())} | {cells} |")
        cells = " | ".join(str(total[column]) for column in COLUMNS)
        lines.append(f"| all | {sum(total.values())} | {cells} |")
        lines.append("")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("index", help="the report's index.json")
    parser.add_argument("--agent", help="check this agent only")
    args = parser.parse_args(argv)
    try:
        with open(args.index, encoding="utf-8") as file:
            report = json.load(file)
    except (OSError, ValueError) as exc:
        print(f"check_report: cannot read {args.index}: {exc}", file=sys.stderr)
        return 1
    results = load(report, args.agent)
    if not results:
        print(f"check_report: no case in {args.index}", file=sys.stderr)
        return 1
    print(summary_table(results))
    failed = failures(results)
    for result in failed:
        print(
            f"FAILED {result.agent} {result.case}: behavior {result.behavior},"
            f" behaviorClose {result.behavior_close}"
        )
    print(f"{len(results) - len(failed)} of {len(results)} cases passed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
