"""mix_weights (Algorithm 1 over a whole model): Triton vs the reference
(psgan_fast.transfer), and the reference vs Algorithm 1 written out by hand.

Without a GPU the Triton kernel runs in Triton's CPU interpreter, which must be
switched on (TRITON_INTERPRET=1) before Triton is first imported. This module
sets it when it is imported first; otherwise the Triton tests are skipped here
and the whole file is re-run in a child process with the variable set
(test_triton_tests_in_subprocess). With a GPU they run on CUDA tensors.
"""

from __future__ import annotations

import copy
import importlib

import torch

from triton_support import DEVICE, TRITON_OK, TRITON_WHY, needs_triton, rerun_in_child  # noqa: E402,F401

import pytest  # noqa: E402
from torch import nn  # noqa: E402

from psgan_fast import transfer  # noqa: E402
from psgan_fast.kernels import mix_weights  # noqa: E402

MIX = importlib.import_module("psgan_fast.kernels.mix")


test_triton_tests_in_subprocess = rerun_in_child(__file__)


class _Net(nn.Module):
    """A small conv net with BatchNorm; `wide` changes one shape, `extra` adds a layer."""

    def __init__(self, wide: bool = False, extra: bool = False) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(6)
        self.conv2 = nn.Conv2d(6, 5, 3, stride=2, padding=1)
        self.bn2 = nn.BatchNorm2d(5)
        self.fc = nn.Linear(5 * 4 * 4, 7 if wide else 3)
        if extra:
            self.head = nn.Linear(7 if wide else 3, 1)

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.bn2(self.conv2(x)))
        return self.fc(x.flatten(1))


def _trained_old() -> _Net:
    torch.manual_seed(0)
    old = _Net()
    for _ in range(3):  # moves running stats and num_batches_tracked away from their init
        old(torch.randn(4, 1, 8, 8))
    return old.to(DEVICE)


def _assert_same_state(a: dict, b: dict) -> None:
    assert list(a) == list(b)
    for name in a:
        assert a[name].dtype == b[name].dtype, name
        torch.testing.assert_close(a[name], b[name], rtol=1e-6, atol=1e-7, msg=name)


@needs_triton
def test_triton_matches_reference_on_conv_net_with_batchnorm():
    old = _trained_old()
    torch.manual_seed(1)
    new_ref = _Net(wide=True, extra=True).to(DEVICE)
    new_tri = copy.deepcopy(new_ref)
    before = {k: v.clone() for k, v in new_ref.state_dict().items()}
    _, rep_ref = mix_weights(old, new_ref, 0.1, impl="ref")
    out, rep_tri = mix_weights(old, new_tri, 0.1, impl="triton")
    assert out is new_tri
    _assert_same_state(new_tri.state_dict(), new_ref.state_dict())
    assert rep_tri == rep_ref
    after = new_tri.state_dict()
    # The cases of the spec, checked on the Triton result directly:
    assert after["bn1.num_batches_tracked"].item() == 3  # integer buffer copied from old
    assert torch.equal(after["fc.weight"], before["fc.weight"])  # shape mismatch: kept
    assert torch.equal(after["head.weight"], before["head.weight"])  # missing in old: kept
    o = old.state_dict()["bn2.running_var"]
    torch.testing.assert_close(after["bn2.running_var"], 0.9 * o + 0.1 * before["bn2.running_var"])
    assert {n for n, _ in rep_tri.kept_new} == {"fc.weight", "fc.bias", "head.weight", "head.bias"}


def _algorithm_1_by_hand(old_sd, new_sd, alpha):
    out = {}
    for name, n in new_sd.items():
        o = old_sd.get(name)
        if o is None or o.shape != n.shape:
            out[name] = n.clone()
        elif o.is_floating_point() and n.is_floating_point():
            out[name] = (1 - alpha) * o + alpha * n
        else:
            out[name] = o.clone()
    return out


@pytest.mark.parametrize("alpha", [0.0, 0.1, 1.0])
def test_reference_is_algorithm_1_by_hand(alpha):
    old = _trained_old()
    torch.manual_seed(1)
    new = _Net(wide=True).to(DEVICE)
    expected = _algorithm_1_by_hand(old.state_dict(), copy.deepcopy(new.state_dict()), alpha)
    mix_weights(old, new, alpha, impl="ref")
    _assert_same_state(new.state_dict(), expected)


@needs_triton
def test_one_launch_per_dtype_group(monkeypatch):
    calls = []
    real = MIX._launch_group

    def counting(olds, news, alpha, copy):
        calls.append((news[0].dtype, len(news), copy))
        return real(olds, news, alpha, copy)

    monkeypatch.setattr(MIX, "_launch_group", counting)
    old = _trained_old()
    torch.manual_seed(1)
    new = _Net().to(DEVICE)
    new.bn2.half()  # a second float dtype group
    mix_weights(old, new, 0.1, impl="triton")
    groups = sorted((str(d), n, c) for d, n, c in calls)
    # fp32: conv1 w/b, bn1 w/b/mean/var, conv2 w/b, fc w/b; fp16: bn2 w/b/mean/var;
    # int64: both num_batches_tracked.
    assert groups == [("torch.float16", 4, False), ("torch.float32", 10, False),
                      ("torch.int64", 2, True)]


@needs_triton
def test_many_tensors_of_odd_sizes_state_dict_api():
    """37 tensors of sizes 1 .. 5000 (blocks of 1024): exercises the pointer table's
    binary search; state dicts in, the new dict's tensors written in place."""
    gen = torch.Generator().manual_seed(0)
    sizes = torch.randint(1, 5000, (37,), generator=gen).tolist() + [1, 1024, 1025]
    old = {f"t{i}": torch.randn(s, generator=gen).to(DEVICE) for i, s in enumerate(sizes)}
    new = {k: torch.randn(v.shape, generator=gen).to(DEVICE) for k, v in old.items()}
    ptrs = {k: v.data_ptr() for k, v in new.items()}
    expected = _algorithm_1_by_hand(old, new, 0.3)
    out, report = mix_weights(old, new, 0.3, impl="triton")
    assert out is new and {k: v.data_ptr() for k, v in new.items()} == ptrs
    _assert_same_state(new, expected)
    assert len(report.mixed) == len(sizes)


@needs_triton
def test_dtypes_layouts_and_tied_tensors_match_reference():
    gen = torch.Generator().manual_seed(1)

    def r(*shape, dtype=torch.float32):
        return torch.randn(*shape, generator=gen).to(DEVICE, dtype)

    shared = r(4, 4)
    old = {
        "f16_from_f32": r(33), "bf16": r(65, dtype=torch.bfloat16), "f64": r(9, dtype=torch.float64),
        "transposed": r(6, 5), "flag": torch.tensor([True, False, True], device=DEVICE),
        "count_i32": torch.tensor([7, 8], dtype=torch.int32, device=DEVICE),
        "count": torch.tensor(11, device=DEVICE), "tied_a": r(4, 4), "tied_b": r(4, 4),
        "int_vs_float": r(3), "complex": torch.randn(5, dtype=torch.complex64).to(DEVICE),
        "old_only": r(2),
    }
    new = {
        "f16_from_f32": r(33, dtype=torch.float16), "bf16": r(65, dtype=torch.bfloat16),
        "f64": r(9, dtype=torch.float64), "transposed": r(5, 6).t(),
        "flag": torch.tensor([False, True, True], device=DEVICE),
        "count_i32": torch.tensor([0, 0], dtype=torch.int64, device=DEVICE),
        "count": torch.tensor(0, device=DEVICE), "tied_a": shared, "tied_b": shared,
        "int_vs_float": torch.tensor([1, 2, 3], device=DEVICE),
        "complex": torch.randn(5, dtype=torch.complex64).to(DEVICE), "new_only": r(3),
    }
    new_ref = {k: v.clone() for k, v in new.items()}
    new_ref["transposed"] = new["transposed"].clone().t().contiguous().t()
    new_ref["tied_b"] = new_ref["tied_a"]
    _, rep_ref = mix_weights(old, new_ref, 0.25, impl="ref")
    _, rep_tri = mix_weights(old, new, 0.25, impl="triton")
    assert rep_tri == rep_ref
    for k in new:
        assert new[k].dtype == new_ref[k].dtype, k
        # bf16: 1 ulp, because Triton's CPU interpreter truncates float32 -> bf16
        # where the GPU (and PyTorch) round to nearest even.
        tol = {} if new[k].dtype == torch.bfloat16 else dict(rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(new[k], new_ref[k], msg=k, **tol)
    assert torch.equal(new["tied_a"], new_ref["tied_b"])  # tied names: the last one wins
    assert new["flag"].tolist() == [True, False, True]
    assert new["count_i32"].tolist() == [7, 8]


@needs_triton
def test_triton_really_runs_triton(monkeypatch):
    def boom(*a, **k):
        raise AssertionError("reference called")

    monkeypatch.setattr(transfer, "mix_weights", boom)
    monkeypatch.setattr(transfer, "mix_state_dicts", boom)
    old = _trained_old()
    new = _Net().to(DEVICE)
    mix_weights(old, new, 0.1, impl="triton")
    assert new.bn1.num_batches_tracked.item() == 3


def test_triton_without_cuda_or_interpreter_raises(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(RuntimeError):
        mix_weights(_Net(), _Net(), impl="triton")


def test_auto_on_cpu_uses_the_reference(monkeypatch):
    def boom(*a, **k):
        raise AssertionError("triton launched for CPU tensors")

    monkeypatch.setattr(MIX, "_launch_group", boom)
    old, new = _Net(), _Net()
    expected = _algorithm_1_by_hand(old.state_dict(), copy.deepcopy(new.state_dict()), 0.1)
    _, report = mix_weights(old, new)
    _assert_same_state(new.state_dict(), expected)
    assert isinstance(report, transfer.TransferReport)


def test_alpha_out_of_range_rejected():
    with pytest.raises(ValueError):
        mix_weights(_Net(), _Net(), 1.5)


@needs_triton
def test_psgan_stage_switch_matches_reference():
    stages = pytest.importorskip("psgan_fast.stages")
    torch.manual_seed(0)
    for build in (stages.build_generator, stages.build_discriminator):
        old = build(1).to(DEVICE)
        new_ref = build(2).to(DEVICE)
        new_tri = copy.deepcopy(new_ref)
        _, rep_ref = mix_weights(old, new_ref, 0.1, impl="ref")
        _, rep_tri = mix_weights(old, new_tri, 0.1, impl="triton")
        _assert_same_state(new_tri.state_dict(), new_ref.state_dict())
        assert rep_tri == rep_ref and rep_tri.mixed
