"""Spectral norm: Triton vs the reference, and the reference vs torch's own
spectral norm.

Without a GPU the Triton kernels run in Triton's CPU interpreter, which must
be switched on (TRITON_INTERPRET=1) before Triton is first imported: Triton
jits its own standard library at import. This module sets it when it is
imported first; if another module imported Triton earlier in this process,
the Triton tests are skipped here and the whole file is re-run in a child
process with the variable set (test_triton_tests_in_subprocess), so they run
either way. With a GPU they run the compiled kernels on CUDA tensors.
"""

from __future__ import annotations

import copy
import importlib
import subprocess
import sys

import torch

from triton_support import DEVICE, TRITON_OK, TRITON_WHY, needs_triton, rerun_in_child  # noqa: E402,F401

import pytest  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from torch import nn  # noqa: E402

from psgan_fast.kernels import spectral_norm, spectral_normalize, spectral_sigma  # noqa: E402

# The submodule: its name is shadowed in the package by the function spectral_norm.
SN = importlib.import_module("psgan_fast.kernels.spectral_norm")


test_triton_tests_in_subprocess = rerun_in_child(__file__)


def _layers():
    """Linear and conv layers with odd shapes (matrix views 5x7, 37x300, 3x12, 1x50, 70x3)."""
    return {
        "linear_5x7": lambda: nn.Linear(7, 5),
        "linear_37x300": lambda: nn.Linear(300, 37),
        "conv_3x2x3x2": lambda: nn.Conv2d(2, 3, (3, 2)),
        "linear_1x50": lambda: nn.Linear(50, 1),
        "conv_70x3x1x1": lambda: nn.Conv2d(3, 70, 1),
    }


def _input(layer: nn.Module, gen: torch.Generator, device: str = "cpu") -> torch.Tensor:
    if isinstance(layer, nn.Linear):
        x = torch.randn(4, layer.in_features, generator=gen)
    else:
        x = torch.randn(2, layer.in_channels, 6, 5, generator=gen)
    return x.to(device)


def _twin(make, impl_a: str, impl_b: str, device: str = "cpu"):
    """Two copies of one spectrally normalised layer (same weights, same u, v)."""
    torch.manual_seed(0)
    a = spectral_norm(make(), impl=impl_a).to(device)
    b = copy.deepcopy(a)
    SN.parametrize_of(b).impl = impl_b
    return a, b


@needs_triton
@pytest.mark.parametrize("name", list(_layers()))
def test_triton_matches_reference_over_training_steps(name):
    ref, tri = _twin(_layers()[name], "ref", "triton", DEVICE)
    opt_r = torch.optim.SGD(ref.parameters(), lr=0.5)
    opt_t = torch.optim.SGD(tri.parameters(), lr=0.5)
    gen = torch.Generator().manual_seed(1)
    for _ in range(3):
        x = _input(ref, gen, DEVICE)
        y_r, y_t = ref(x), tri(x)
        torch.testing.assert_close(y_t, y_r, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(spectral_sigma(tri), spectral_sigma(ref), rtol=1e-5, atol=0)
        pr, pt = SN.parametrize_of(ref), SN.parametrize_of(tri)
        torch.testing.assert_close(pt._u, pr._u, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(pt._v, pr._v, rtol=1e-5, atol=1e-6)
        g = torch.randn(y_r.shape, generator=gen).to(DEVICE)
        opt_r.zero_grad()
        opt_t.zero_grad()
        (y_r * g).sum().backward()
        (y_t * g).sum().backward()
        w_r = ref.parametrizations.weight.original
        w_t = tri.parametrizations.weight.original
        torch.testing.assert_close(w_t.grad, w_r.grad, rtol=1e-4, atol=1e-6)
        opt_r.step()
        opt_t.step()
    # Eval: stored vectors, no update; both impls agree.
    ref.eval()
    tri.eval()
    u_before = SN.parametrize_of(tri)._u.clone()
    x = _input(ref, gen, DEVICE)
    torch.testing.assert_close(tri(x), ref(x), rtol=1e-5, atol=1e-6)
    assert torch.equal(SN.parametrize_of(tri)._u, u_before)


@needs_triton
def test_triton_functional_two_power_iterations_and_eval_gradient():
    gen = torch.Generator().manual_seed(3)
    w = torch.randn(9, 13, generator=gen).to(DEVICE).requires_grad_(True)
    u0 = F.normalize(torch.randn(9, generator=gen), dim=0).to(DEVICE)
    v0 = F.normalize(torch.randn(13, generator=gen), dim=0).to(DEVICE)
    for training, iters in ((True, 2), (False, 1)):
        u_r, v_r, u_t, v_t = u0.clone(), v0.clone(), u0.clone(), v0.clone()
        out_r, s_r = spectral_normalize(w, u_r, v_r, training=training, n_power_iterations=iters,
                                        impl="ref")
        out_t, s_t = spectral_normalize(w, u_t, v_t, training=training, n_power_iterations=iters,
                                        impl="triton")
        torch.testing.assert_close(out_t, out_r, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(s_t.to(s_r.dtype), s_r, rtol=1e-5, atol=0)
        torch.testing.assert_close(u_t, u_r, rtol=1e-5, atol=1e-6)
        assert torch.equal(u_r, u0) != training  # updated only when training
        g = torch.randn(out_r.shape, generator=gen).to(DEVICE)
        (gr,) = torch.autograd.grad(out_r, w, g)
        (gt,) = torch.autograd.grad(out_t, w, g)
        torch.testing.assert_close(gt, gr, rtol=1e-4, atol=1e-6)


@needs_triton
@settings(max_examples=8, deadline=None)
@given(h=st.integers(1, 40), k=st.integers(1, 70), seed=st.integers(0, 2**16))
def test_triton_matches_reference_any_shape(h, k, seed):
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(h, k, generator=gen).to(DEVICE).requires_grad_(True)
    u = F.normalize(torch.randn(h, generator=gen), dim=0).to(DEVICE)
    v = F.normalize(torch.randn(k, generator=gen), dim=0).to(DEVICE)
    u2, v2 = u.clone(), v.clone()
    out_r, _ = spectral_normalize(w, u, v, impl="ref")
    out_t, _ = spectral_normalize(w, u2, v2, impl="triton")
    torch.testing.assert_close(out_t, out_r, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(u2, u, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(v2, v, rtol=1e-5, atol=1e-6)
    g = torch.randn(h, k, generator=gen).to(DEVICE)
    torch.testing.assert_close(torch.autograd.grad(out_t, w, g)[0],
                               torch.autograd.grad(out_r, w, g)[0], rtol=1e-4, atol=1e-6)


@needs_triton
def test_gan_pattern_two_forwards_one_backward_matches():
    """D(real) and D(fake) before one backward: each forward iterates, and the
    first graph must keep the vectors it used (the clone semantics)."""
    ref, tri = _twin(lambda: nn.Conv2d(3, 4, 3), "ref", "triton", DEVICE)
    gen = torch.Generator().manual_seed(5)
    x1 = torch.randn(2, 3, 5, 5, generator=gen).to(DEVICE)
    x2 = torch.randn(2, 3, 5, 5, generator=gen).to(DEVICE)
    for m in (ref, tri):
        (m(x1).square().mean() - m(x2).mean()).backward()
    torch.testing.assert_close(tri.parametrizations.weight.original.grad,
                               ref.parametrizations.weight.original.grad, rtol=1e-4, atol=1e-6)


@needs_triton
def test_triton_really_runs_triton(monkeypatch):
    """impl='triton' must not quietly use the reference."""
    def boom(*a, **k):
        raise AssertionError("reference called")
    layer = spectral_norm(nn.Linear(6, 4), impl="triton").to(DEVICE)  # warm-up uses the ref
    monkeypatch.setattr(SN, "_spectral_normalize_ref", boom)
    layer(torch.randn(3, 6, device=DEVICE)).sum().backward()
    assert layer.parametrizations.weight.original.grad is not None


def test_triton_without_cuda_or_interpreter_raises(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    w = torch.randn(3, 4)
    with pytest.raises(RuntimeError):
        spectral_normalize(w, F.normalize(torch.randn(3), dim=0),
                           F.normalize(torch.randn(4), dim=0), impl="triton")


def test_auto_uses_reference_on_cpu(monkeypatch):
    def boom(*a, **k):
        raise AssertionError("triton called for a CPU tensor")
    monkeypatch.setattr(SN, "_spectral_normalize_triton", boom)
    layer = spectral_norm(nn.Linear(6, 4))  # impl="auto"
    layer(torch.randn(3, 6))


def test_bad_impl_rejected():
    with pytest.raises(ValueError):
        spectral_norm(nn.Linear(3, 3), impl="cuda")


def _legacy_pair(make, n_power_iterations=1):
    """Our reference and torch's legacy spectral_norm (the paper's iteration
    order), with identical weights and vectors."""
    torch.manual_seed(0)
    legacy = torch.nn.utils.spectral_norm(make(), n_power_iterations=n_power_iterations)
    ours = make()
    with torch.no_grad():
        ours.weight.copy_(legacy.weight_orig)
        if ours.bias is not None:
            ours.bias.copy_(legacy.bias)
    spectral_norm(ours, impl="ref", n_power_iterations=n_power_iterations)
    p = SN.parametrize_of(ours)
    p._u.copy_(legacy.weight_u)
    p._v.copy_(legacy.weight_v)
    return legacy, ours


@pytest.mark.parametrize("make", [lambda: nn.Linear(11, 6), lambda: nn.Conv2d(3, 5, (3, 2))],
                         ids=["linear", "conv"])
@pytest.mark.parametrize("iters", [1, 2])
def test_reference_matches_torch_legacy_spectral_norm_over_steps(make, iters):
    legacy, ours = _legacy_pair(make, iters)
    opt_l = torch.optim.Adam(legacy.parameters(), lr=0.05)
    opt_o = torch.optim.Adam(ours.parameters(), lr=0.05)
    gen = torch.Generator().manual_seed(2)
    for _ in range(4):
        x = _input(ours, gen)
        y_l, y_o = legacy(x), ours(x)
        torch.testing.assert_close(y_o, y_l, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(SN.parametrize_of(ours)._u, legacy.weight_u)
        torch.testing.assert_close(SN.parametrize_of(ours)._v, legacy.weight_v)
        for o in (opt_l, opt_o):
            o.zero_grad()
        y_l.square().sum().backward()
        y_o.square().sum().backward()
        torch.testing.assert_close(ours.parametrizations.weight.original.grad,
                                   legacy.weight_orig.grad, rtol=1e-5, atol=1e-7)
        opt_l.step()
        opt_o.step()
    legacy.eval()
    ours.eval()
    x = _input(ours, gen)
    torch.testing.assert_close(ours(x), legacy(x), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(ours.weight, legacy.weight, rtol=1e-6, atol=1e-7)


def test_sigma_converges_to_largest_singular_value_like_torch_parametrization():
    torch.manual_seed(0)
    ours = spectral_norm(nn.Conv2d(4, 6, 3), impl="ref")
    theirs = torch.nn.utils.parametrizations.spectral_norm(nn.Conv2d(4, 6, 3))
    with torch.no_grad():
        theirs.parametrizations.weight.original.copy_(ours.parametrizations.weight.original)
    for _ in range(50):
        w_ours, w_theirs = ours.weight, theirs.weight  # each access iterates (training)
    w = ours.parametrizations.weight.original.detach().flatten(1)
    top = torch.linalg.matrix_norm(w, 2)
    torch.testing.assert_close(spectral_sigma(ours), top, rtol=1e-4, atol=0)
    torch.testing.assert_close(w_ours, w_theirs, rtol=1e-4, atol=1e-6)
    assert torch.linalg.matrix_norm(w_ours.detach().flatten(1), 2).item() == pytest.approx(1, rel=1e-4)


def test_weight_is_normalised_and_state_dict_is_clean():
    torch.manual_seed(0)
    layer = spectral_norm(nn.Conv2d(3, 8, 3))
    keys = set(layer.state_dict())
    assert keys == {"bias", "parametrizations.weight.original", "parametrizations.weight.0._u",
                    "parametrizations.weight.0._v"}
    layer.eval()
    w = layer.parametrizations.weight.original
    torch.testing.assert_close(layer.weight, w / spectral_sigma(layer))
    # A fresh layer loads the checkpoint and reproduces eval outputs exactly.
    torch.manual_seed(1)
    other = spectral_norm(nn.Conv2d(3, 8, 3)).eval()
    other.load_state_dict(layer.state_dict())
    x = torch.randn(2, 3, 7, 7)
    assert torch.equal(other(x), layer(x))


def test_eval_mode_does_not_update_vectors_and_train_does():
    layer = spectral_norm(nn.Linear(8, 5))
    p = SN.parametrize_of(layer)
    with torch.no_grad():
        layer.parametrizations.weight.original.mul_(3).add_(1)  # u is no longer converged
    u0 = p._u.clone()
    layer.eval()
    layer(torch.randn(2, 8))
    assert torch.equal(p._u, u0)
    layer.train()
    layer(torch.randn(2, 8))
    assert not torch.equal(p._u, u0)


def test_power_iteration_stays_float32_under_bf16_autocast():
    torch.manual_seed(0)
    layer = spectral_norm(nn.Linear(16, 8), impl="ref")
    twin = copy.deepcopy(layer)
    x = torch.randn(4, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = layer(x)
    twin(x)
    assert y.dtype == torch.bfloat16
    assert SN.parametrize_of(layer)._u.dtype == torch.float32
    torch.testing.assert_close(SN.parametrize_of(layer)._u, SN.parametrize_of(twin)._u)


def test_conv_transpose_normalises_over_output_dim():
    torch.manual_seed(0)
    layer = spectral_norm(nn.ConvTranspose2d(4, 6, 3))  # weight [in=4, out=6, 3, 3]
    p = SN.parametrize_of(layer)
    assert p.dim == 1 and p._u.shape == (6,) and p._v.shape == (36,)
    for _ in range(30):
        w = layer.weight
    mat = w.detach().movedim(1, 0).flatten(1)
    assert torch.linalg.matrix_norm(mat, 2).item() == pytest.approx(1, rel=1e-3)


def test_without_triton_the_package_imports_and_falls_back():
    code = (
        "import sys; sys.modules['triton'] = None\n"
        "import torch; from torch import nn\n"
        "import psgan_fast.kernels as K\n"
        "ok, why = K.triton_status(); assert not ok and 'triton' in why, why\n"
        "layer = K.spectral_norm(nn.Linear(4, 3)); layer(torch.randn(2, 4)).sum().backward()\n"
        "K.mix_weights(nn.Linear(3, 3), nn.Linear(3, 3))\n"
        "try:\n"
        "    K.spectral_normalize(torch.randn(3, 4), torch.randn(3), torch.randn(4), impl='triton')\n"
        "except RuntimeError:\n"
        "    print('fallback ok')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "fallback ok" in proc.stdout, proc.stderr[-2000:]
