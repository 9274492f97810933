"""Shared benchmark helpers: a same-run ratio table printed at the end.

pytest-benchmark gives raw timings; users want ratios against a baseline
measured in the same run. Benchmarks call `report(group, name, value,
unit, baseline=...)` and the table is printed in the terminal summary.
"""

from __future__ import annotations

import pytest

_ROWS: list[tuple[str, str, float, str, bool]] = []


def report(group: str, name: str, value: float, unit: str, *, baseline: bool = False,
           higher_is_better: bool = True) -> None:
    _ROWS.append((group, name, value, unit, baseline, higher_is_better))


@pytest.fixture
def same_run_report():
    return report


def pytest_terminal_summary(terminalreporter):
    if not _ROWS:
        return
    tr = terminalreporter
    tr.section("psgan_fast: same-run comparisons")
    groups: dict[str, list] = {}
    for row in _ROWS:
        groups.setdefault(row[0], []).append(row)
    for group, rows in groups.items():
        base = next((r for r in rows if r[4]), None)
        tr.write_line(f"[{group}]")
        for _, name, value, unit, is_base, hib in rows:
            ratio = ""
            if base is not None and not is_base and base[2] > 0 and value > 0:
                x = value / base[2] if hib else base[2] / value
                ratio = f"  {x:8.2f}x vs {base[1]}"
            tr.write_line(f"  {name:40s} {value:14,.1f} {unit}{ratio}")
