"""bf16 detection: flag parsing, the per-architecture rule, and the
trainer's warning when bf16 is asked for on a CPU without fast bf16."""

from __future__ import annotations

import json

import pytest

import psgan_fast
from psgan_fast import hardware
from psgan_fast.config import TrainConfig

ZEN3 = """processor\t: 0
vendor_id\t: AuthenticAMD
flags\t\t: fpu vme de pse tsc msr pae mce cx8 sse sse2 ssse3 fma avx avx2 bmi2
processor\t: 1
flags\t\t: fpu vme avx avx2
"""
SAPPHIRE = "flags\t\t: fpu sse2 avx avx2 avx512f avx512bw avx512vl avx512_bf16 amx_bf16 amx_tile\n"
GRAVITON3 = "Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics sve bf16 i8mm\n"
GRAVITON2 = "Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics\n"


def test_flags_are_parsed_from_every_processor_and_both_spellings():
    assert {"avx2", "fma", "bmi2"} <= hardware.parse_cpu_flags(ZEN3)
    assert "amx_bf16" in hardware.parse_cpu_flags(SAPPHIRE)
    assert "bf16" in hardware.parse_cpu_flags(GRAVITON3)
    assert hardware.parse_cpu_flags("model name : no flags here") == frozenset()


@pytest.mark.parametrize("text, machine, want", [
    (ZEN3, "x86_64", False),          # AVX2 only: reference-kernel bf16
    (SAPPHIRE, "x86_64", True),       # AMX / AVX512-BF16
    ("flags : avx2 avx512f avx512bw avx512vl", "x86_64", True),  # AVX-512 emulation runs at ~fp32 speed
    (GRAVITON3, "aarch64", True),
    (GRAVITON2, "aarch64", False),
    (ZEN3, "riscv64", None),          # unknown architecture: no claim
    ("", "x86_64", None),             # no flags: no claim
])
def test_bf16_rule_per_architecture(text, machine, want):
    assert hardware.bf16_from_flags(hardware.parse_cpu_flags(text), machine) is want


def test_warning_only_for_bf16_on_a_slow_cpu(monkeypatch):
    monkeypatch.setattr(hardware, "cpu_bf16_fast", lambda: False)
    assert "--precision fp32" in hardware.bf16_warning("cpu", "bf16")
    assert hardware.bf16_warning("cpu", "fp32") is None
    assert hardware.bf16_warning("cuda", "bf16") is None
    monkeypatch.setattr(hardware, "cpu_bf16_fast", lambda: True)
    assert hardware.bf16_warning("cpu", "bf16") is None
    monkeypatch.setattr(hardware, "cpu_bf16_fast", lambda: None)  # unknown: stay quiet
    assert hardware.bf16_warning("cpu", "bf16") is None


def test_trainer_logs_the_bf16_warning(tmp_path, mnist_train, monkeypatch, capsys):
    monkeypatch.setattr(hardware, "cpu_bf16_fast", lambda: False)
    cfg = TrainConfig(generators=1, epochs=1, stage_epochs=(0, 0, 1), limit_batches=1, precision="bf16",
                      out=str(tmp_path / "run"), progress=False)
    run = psgan_fast.train(cfg)
    assert "no fast bf16" in capsys.readouterr().err
    texts = [r["text"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
             if r["kind"] == "message"]
    assert any("--precision bf16" in t for t in texts), texts
