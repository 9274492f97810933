"""`make gpu-check`: everything that needs a CUDA GPU, in one command that
finishes in under 8 minutes, with a short Markdown summary.

Steps (each a pytest run in a child process, within a share of the budget):

1. the CUDA-only tests: the N generators run sequential vs fused vs CUDA
   streams, torch.compile against eager (G and D, forward and backward),
   nccl with one process
   (tests/test_gpu_check.py, tests/test_parallel.py), and the Triton kernels
   compiled for real against their PyTorch references
   (tests/test_kernels_*.py run on CUDA tensors when CUDA is present);
2. the GPU benchmark comparisons (bench/test_bench_gpu.py: parallel modes,
   torch.compile, Triton in a training step; bench/test_bench_kernels.py:
   the kernels alone), with their same-run ratio tables.

The summary (default runs/gpu-check.md) holds, per step: the outcome, counts,
time, each failure's first line, the skip reasons; then the benchmarks'
same-run comparisons. The exit status is 0 only if every step passed.
Without CUDA it says so in one line and exits 0.

    python -m psgan_fast.gpu_check [--out runs/gpu-check.md] [--budget-s 450]
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

REPO = Path(__file__).resolve().parents[1]
BUDGET_S = 450.0  # 7.5 minutes, under the 8 promised
COMPARISONS = "psgan_fast: same-run comparisons"


@dataclass(frozen=True)
class Step:
    title: str
    pytest_args: tuple[str, ...]
    share: float  # of the budget left when the step starts


STEPS = (
    Step("CUDA-only tests", ("tests/test_gpu_check.py", "tests/test_parallel.py", "tests/test_kernels_mix.py",
                             "tests/test_kernels_spectral_norm.py"), 0.4),
    Step("GPU benchmarks", ("bench/test_bench_gpu.py", "bench/test_bench_kernels.py", "--benchmark-only"), 1.0),
)


@dataclass
class Outcome:
    step: Step
    seconds: float
    returncode: Optional[int]  # None: timed out
    counts: Counter = field(default_factory=Counter)
    failures: list[tuple[str, str]] = field(default_factory=list)
    skips: Counter = field(default_factory=Counter)
    output: str = ""

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.failures


def _first_line(text: Optional[str]) -> str:
    return next((line.strip() for line in (text or "").splitlines() if line.strip()), "")


def parse_junit(path: Path) -> tuple[Counter, list[tuple[str, str]], Counter]:
    """(counts by outcome, [(test, first line of the failure)], skip reasons) from pytest's JUnit XML."""
    counts, failures, skips = Counter(), [], Counter()
    for case in ET.parse(path).iter("testcase"):
        name = f"{case.get('classname', '')}::{case.get('name', '')}"
        bad = case.find("failure") if case.find("failure") is not None else case.find("error")
        skipped = case.find("skipped")
        if bad is not None:
            counts["failed"] += 1
            failures.append((name, _first_line(bad.get("message")) or _first_line(bad.text)))
        elif skipped is not None:
            counts["skipped"] += 1
            skips[_first_line(skipped.get("message"))] += 1
        else:
            counts["passed"] += 1
    return counts, failures, skips


def run_step(step: Step, workdir: Path, seconds: float) -> Outcome:
    """Run one step's pytest in its own process group; kill the group when
    its time is up."""
    junit = workdir / f"{step.title.replace(' ', '-')}.xml"
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={junit}",
           *step.pytest_args]
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=max(seconds, 1.0))
        code: Optional[int] = proc.returncode
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        code = None
    out = Outcome(step, time.monotonic() - t0, code, output=output or "")
    if junit.is_file():
        out.counts, out.failures, out.skips = parse_junit(junit)
    return out


def comparisons(output: str) -> list[str]:
    """The lines of the benchmarks' same-run comparison section."""
    lines = output.splitlines()
    start = next((i for i, line in enumerate(lines) if COMPARISONS in line), None)
    if start is None:
        return []
    rest = lines[start + 1:]
    end = next((i for i, line in enumerate(rest) if line.startswith("=")), len(rest))
    return rest[:end]


def summary(outcomes: Sequence[Outcome], machine: str) -> str:
    md = [f"# gpu-check: {machine}", "", "| step | result | passed | failed | skipped | time |",
          "|---|---|---:|---:|---:|---:|"]
    for o in outcomes:
        if o.returncode is None:
            result = "TIMED OUT"
        else:
            result = "ok" if o.ok else f"FAILED (exit {o.returncode})"
        md.append(f"| {o.step.title} | {result} | {o.counts['passed']} | {o.counts['failed']} | "
                  f"{o.counts['skipped']} | {o.seconds:.0f} s |")
    for o in outcomes:
        if o.failures:
            md += ["", f"## Failures: {o.step.title}", ""]
            md += [f"- `{name}`: {msg}" for name, msg in o.failures]
        if o.skips:
            md += ["", f"## Skipped: {o.step.title}", ""]
            md += [f"- {n} x {reason}" for reason, n in o.skips.most_common()]
        if not o.ok and not o.failures:  # crashed, timed out or collected nothing: show the end
            md += ["", f"## Output tail: {o.step.title}", "", "```", *o.output.splitlines()[-25:], "```"]
        table = comparisons(o.output)
        if table:
            md += ["", f"## Same-run comparisons: {o.step.title}", "", "```", *table, "```"]
    return "\n".join(md) + "\n"


def machine_line() -> str:
    import torch

    return (f"{torch.cuda.get_device_name()}, torch {torch.__version__}, CUDA {torch.version.cuda}, "
            f"{time.strftime('%Y-%m-%d %H:%M')}")


def run(steps: Sequence[Step], out: Path, budget_s: float, machine: str) -> int:
    import tempfile

    deadline = time.monotonic() + budget_s
    outcomes = []
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        for step in steps:
            left = deadline - time.monotonic()
            print(f"gpu-check: {step.title} (at most {left * step.share:.0f} s)", flush=True)
            outcomes.append(run_step(step, Path(tmp), left * step.share))
    text = summary(outcomes, machine)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(text + f"\n(written to {out})")
    return 0 if all(o.ok for o in outcomes) else 1


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m psgan_fast.gpu_check", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("runs/gpu-check.md"), help="the Markdown summary")
    p.add_argument("--budget-s", type=float, default=BUDGET_S, help="wall-clock budget for all steps")
    args = p.parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        print("gpu-check: no CUDA device on this machine (torch.cuda.is_available() is False): nothing to check.")
        return 0
    return run(STEPS, args.out, args.budget_s, machine_line())


if __name__ == "__main__":
    raise SystemExit(main())
