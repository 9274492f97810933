"""Running the Triton kernel tests without a GPU.

Triton's CPU interpreter must be switched on (TRITON_INTERPRET=1) before
Triton is first imported; tests/conftest.py does that for the whole suite on
a machine without CUDA. If Triton was imported earlier anyway (a module run
on its own after something imported Triton), the Triton tests of a module
skip in-process and `rerun_in_child` runs the module again in a child process
with the variable set. With a GPU they run on CUDA tensors.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
import torch

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
if DEVICE == "cpu" and "triton" not in sys.modules:
    os.environ["TRITON_INTERPRET"] = "1"  # harmless without a GPU: no compiled Triton can run
CHILD = os.environ.get("PSGAN_FAST_TRITON_CHILD") == "1"


def _triton_here() -> tuple[bool, str]:
    try:
        import triton.language.standard as std
        from triton.runtime.interpreter import InterpretedFunction
    except Exception as exc:  # pragma: no cover
        return False, f"triton is not importable: {exc}"
    if DEVICE == "cuda" or isinstance(std.zeros, InterpretedFunction):
        return True, ""
    return False, ("triton was imported before TRITON_INTERPRET=1 could be set; these tests "
                   "run in a child process instead (test_triton_tests_in_subprocess)")


TRITON_OK, TRITON_WHY = _triton_here()
needs_triton = pytest.mark.skipif(not TRITON_OK, reason=TRITON_WHY)


def rerun_in_child(path: str):
    """A test that re-runs the module at `path` with the interpreter on,
    when its Triton tests cannot run in this process."""

    @pytest.mark.skipif(TRITON_OK or CHILD or "not importable" in TRITON_WHY,
                        reason="the Triton tests run in this process")
    def test_triton_tests_in_subprocess():
        env = dict(os.environ, TRITON_INTERPRET="1", PSGAN_FAST_TRITON_CHILD="1")
        proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", path],
                              env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
        summary = proc.stdout.strip().splitlines()[-1]
        skipped = re.search(r"(\d+) skipped", summary)
        # only this very test skips in the child
        assert "passed" in summary and (skipped is None or skipped.group(1) == "1"), summary

    return test_triton_tests_in_subprocess
