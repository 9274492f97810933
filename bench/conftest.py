"""Shared benchmark helpers.

* CPU runtime (psgan_fast.bench.cpu_runtime): every benchmark runs with
  `psgan_fast.bench.timing.bench_threads()` torch threads ($PSGAN_BENCH_THREADS,
  default 1: on the shared 2-core machine two OpenMP threads made training
  steps 10-40x slower whenever other processes were busy) and with glibc's
  malloc told to keep freed memory ($PSGAN_BENCH_MALLOC=0 turns that off).
  The header of the run says both.
* A same-run ratio table printed at the end: pytest-benchmark gives raw
  timings; users want ratios against a baseline measured in the same run.
  Benchmarks call `report(group, name, value, unit, baseline=...)`.
* The paper's tables: time-cost and efficiency benchmarks call
  `record_table_row(info)`; the terminal summary prints Table 3 / Table 4 /
  the efficiency table in Markdown (as `python -m psgan_fast.bench.report
  BENCH_JSON` does from the saved JSON).
* bf16 on a CPU without fast bf16 (`psgan_fast.hardware.cpu_bf16_fast()`:
  no AVX-512 / AVX512-BF16 / AMX) runs ~10x slower than fp32 through
  reference kernels and would push the suite far past its time budget: every
  case parametrized with precision "bf16" is skipped there, with that reason,
  unless $PSGAN_BENCH_BF16=1.
"""

from __future__ import annotations

import os

import pytest

_ROWS: list[tuple[str, str, float, str, bool, bool]] = []
_TABLE_ROWS: list[dict] = []
_RUNTIME: dict = {}


def report(group: str, name: str, value: float, unit: str, *, baseline: bool = False,
           higher_is_better: bool = True) -> None:
    _ROWS.append((group, name, value, unit, baseline, higher_is_better))


def record_table_row(info: dict) -> None:
    _TABLE_ROWS.append(dict(info))


@pytest.fixture
def same_run_report():
    return report


def pytest_configure(config):
    import torch

    from psgan_fast.bench.cpu_runtime import configure_cpu
    from psgan_fast.bench.timing import bench_threads

    n = bench_threads()
    os.environ.setdefault("OMP_NUM_THREADS", str(n))  # for subprocesses
    _RUNTIME.update(configure_cpu(n, malloc=os.environ.get("PSGAN_BENCH_MALLOC", "1") != "0"))


def pytest_collection_modifyitems(config, items):
    import torch

    from psgan_fast.hardware import BF16_SLOW_REASON, cpu_bf16_fast

    if os.environ.get("PSGAN_BENCH_BF16") == "1" or torch.cuda.is_available() or cpu_bf16_fast() is not False:
        return
    skip = pytest.mark.skip(reason=f"bf16 on this CPU: {BF16_SLOW_REASON} (PSGAN_BENCH_BF16=1 runs it anyway)")
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        if params.get("precision") == "bf16":
            item.add_marker(skip)


def pytest_report_header(config):
    import torch

    from psgan_fast.machine import load_average

    return [f"psgan_fast benchmarks: torch {torch.__version__}, {torch.get_num_threads()} torch thread(s) "
            f"($PSGAN_BENCH_THREADS), malloc tuned {_RUNTIME.get('malloc_tuned')} ($PSGAN_BENCH_MALLOC), "
            f"{os.cpu_count()} CPUs, load average {load_average()}, "
            f"CUDA {'yes: ' + torch.cuda.get_device_name() if torch.cuda.is_available() else 'no'}"]


def pytest_terminal_summary(terminalreporter):
    tr = terminalreporter
    if _ROWS:
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
                    x = value / base[2]
                    ratio = f"  {x:8.3f} x {base[1]}" if hib else f"  {100 * x:7.1f}% of {base[1]}"
                tr.write_line(f"  {name:40s} {value:14,.2f} {unit}{ratio}")
    if _TABLE_ROWS:
        from psgan_fast.bench.report import render_records

        tr.section("psgan_fast: the paper's tables (python -m psgan_fast.bench.report BENCH_JSON)")
        for line in render_records(_TABLE_ROWS).splitlines():
            tr.write_line(line)
